"""torch.func over fastconv: every operator's batching rule against a loop over the vmapped
entries, for every combination of vmapped arguments the rules take (at varied positions of
the vmapped dimension); gradcheck with batched gradients and forward-mode AD on every
operator; grad, vjp, jacrev, jacfwd, jvp and hessian against torch's own convolution;
per-sample gradients of a ResNet and a vmapped ensemble against loops."""

import itertools

import pytest
import torch
import torch.nn.functional as TF
from torch.autograd import gradcheck
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, stack_module_state, vjp, vmap

import fastconv
import fastconv.functional as F
import fastconv.models

ops = torch.ops.fastconv
B = 3  # entries of the vmapped dimension
D = torch.float64


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


def batched(t, dim, seed):
    """B entries of t's shape, stacked at dim: distinct values per entry."""
    return torch.stack([randn(*t.shape, seed=seed + i) for i in range(B)], dim=dim)


def entry(a, dim, i):
    if isinstance(a, (list, tuple)) and isinstance(dim, (list, tuple)):
        return [entry(t, d, i) for t, d in zip(a, dim)]
    return a if dim is None else a.select(dim, i)


def looped(op, args, in_dims):
    """The reference: op on each entry in turn, results stacked at 0."""
    results = [op(*[entry(a, d, i) for a, d in zip(args, in_dims)]) for i in range(B)]
    if isinstance(results[0], (tuple, list)):
        return tuple(torch.stack(list(r)) for r in zip(*results))
    return torch.stack(results)


def present(op):
    """op with the None results of a masked backward left out (vmap returns only tensors)."""
    def run(*args):
        out = op(*args)
        return tuple(o for o in out if o is not None) if isinstance(out, (tuple, list)) else out
    return run


def assert_vmap_matches_loop(op, args, in_dims):
    op = present(op)
    out = vmap(op, in_dims=tuple(in_dims))(*args)
    ref = looped(op, args, in_dims)
    if isinstance(ref, tuple):
        assert len(out) == len(ref)
        for o, r in zip(out, ref):
            torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-12)
    else:
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def subsets(names):
    return [c for n in range(1, len(names) + 1) for c in itertools.combinations(names, n)]


# ---------------------------------------------------------------- convolution batching rules

# (stride, padding (t, b, l, r), dilation, groups); shapes chosen per op below.
CONV_PARAMS = {
    "plain": ([1, 1], [0, 0, 0, 0], [1, 1], 1),
    "grouped": ([2, 1], [1, 0, 2, 1], [1, 2], 2),
}
# the position of the vmapped dimension of each argument, where it is vmapped
POSITION = {"input": 1, "weight": 0, "bias": 1, "grad_output": 2}


def conv_setup(params):
    stride, padding, dilation, groups = params
    x = randn(2, 4, 7, 6, seed=0)
    w = randn(6, 4 // groups, 3, 2, seed=1)
    b = randn(6, seed=2)
    gy = torch.randn_like(ops.conv2d(x, w, b, stride, padding, dilation, groups))
    return x, w, b, gy


def transposed_setup(params):
    stride, padding, dilation, groups = params
    output_padding = [s - 1 for s in stride]
    x = randn(2, 4, 4, 5, seed=3)
    w = randn(4, 3, 3, 2, seed=4)
    b = randn(3 * groups, seed=5)
    gy = torch.randn_like(ops.conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups))
    return x, w, b, gy, output_padding


def vmapped(args, names, chosen, seed=10):
    """args with those in `chosen` given B entries at their POSITION; and the in_dims."""
    out, dims = [], []
    for k, (name, a) in enumerate(zip(names, args)):
        if name in chosen:
            out.append(batched(a, POSITION[name], seed + k))
            dims.append(POSITION[name])
        else:
            out.append(a)
            dims.append(None)
    return out, dims


@pytest.mark.parametrize("config", list(CONV_PARAMS))
@pytest.mark.parametrize("chosen", subsets(["input", "weight", "bias"]), ids="+".join)
def test_conv2d_vmap(config, chosen):
    params = CONV_PARAMS[config]
    x, w, b, _ = conv_setup(params)
    args, dims = vmapped([x, w, b], ["input", "weight", "bias"], chosen)
    assert_vmap_matches_loop(lambda x, w, b: ops.conv2d(x, w, b, *params), args, dims)


@pytest.mark.parametrize("config", list(CONV_PARAMS))
@pytest.mark.parametrize("chosen", subsets(["input", "weight", "bias"]), ids="+".join)
def test_conv_transpose2d_vmap(config, chosen):
    stride, padding, dilation, groups = CONV_PARAMS[config]
    x, w, b, _, output_padding = transposed_setup(CONV_PARAMS[config])
    args, dims = vmapped([x, w, b], ["input", "weight", "bias"], chosen)
    op = lambda x, w, b: ops.conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups)  # noqa: E731
    assert_vmap_matches_loop(op, args, dims)


MASKS = [[True, True, True], [True, False, False], [False, True, True]]


@pytest.mark.parametrize("config", list(CONV_PARAMS))
@pytest.mark.parametrize("chosen", subsets(["grad_output", "input", "weight"]), ids="+".join)
def test_conv2d_backward_vmap(config, chosen):
    params = CONV_PARAMS[config]
    x, w, _, gy = conv_setup(params)
    args, dims = vmapped([gy, x, w], ["grad_output", "input", "weight"], chosen)
    for mask in MASKS:
        assert_vmap_matches_loop(lambda g, x, w: ops.conv2d_backward(g, x, w, *params, mask), args, dims)


@pytest.mark.parametrize("config", list(CONV_PARAMS))
@pytest.mark.parametrize("chosen", subsets(["grad_output", "input", "weight"]), ids="+".join)
def test_conv_transpose2d_backward_vmap(config, chosen):
    stride, padding, dilation, groups = CONV_PARAMS[config]
    x, w, _, gy, output_padding = transposed_setup(CONV_PARAMS[config])
    args, dims = vmapped([gy, x, w], ["grad_output", "input", "weight"], chosen)
    for mask in MASKS:
        op = lambda g, x, w: ops.conv_transpose2d_backward(  # noqa: E731
            g, x, w, stride, padding, output_padding, dilation, groups, mask)
        assert_vmap_matches_loop(op, args, dims)


def test_conv2d_vmap_over_vmap():
    # Two vmapped dimensions: the rule folds the inner one, then the outer one.
    params = CONV_PARAMS["grouped"]
    x, w, b, _ = conv_setup(params)
    xs = torch.stack([batched(x, 0, 20 + i) for i in range(2)])  # [2, B, ...]
    ws = batched(w, 0, 30)
    out = vmap(vmap(lambda x, w: ops.conv2d(x, w, b, *params), in_dims=(0, 0)), in_dims=(0, None))(xs, ws)
    for i in range(2):
        for j in range(B):
            torch.testing.assert_close(out[i, j], ops.conv2d(xs[i, j], ws[j], b, *params))


# ---------------------------------------------------------------- RoI batching rules


def boxes(k, n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g, dtype=D) * 5
    wh = torch.rand(k, 2, generator=g, dtype=D) * 4 + 0.5
    index = torch.randint(0, n, (k, 1), generator=g).to(D)
    return torch.cat([index, xy, xy + wh], dim=1)


def batched_boxes(k, n, dim, seed):
    return torch.stack([boxes(k, n, seed + i) for i in range(B)], dim=dim)


ROI_POSITION = {"input": 0, "rois": 1, "grad": 2}


@pytest.mark.parametrize("chosen", subsets(["input", "rois"]), ids="+".join)
@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_roi_forward_vmap(op, chosen):
    x = randn(2, 3, 8, 9, seed=40)
    r = boxes(4, 2, seed=41)
    args = [batched(x, 0, 42) if "input" in chosen else x,
            batched_boxes(4, 2, 1, 43) if "rois" in chosen else r]
    dims = [0 if "input" in chosen else None, 1 if "rois" in chosen else None]
    if op == "roi_align":
        call = lambda x, r: ops.roi_align(x, r, 0.5, 3, 2, 2, True)  # noqa: E731
    else:
        call = lambda x, r: ops.roi_pool(x, r, 0.5, 3, 2)  # noqa: E731
    assert_vmap_matches_loop(call, args, dims)


@pytest.mark.parametrize("chosen", subsets(["grad", "rois"]), ids="+".join)
def test_roi_align_backward_vmap(chosen):
    g = randn(4, 3, 3, 2, seed=50)
    r = boxes(4, 2, seed=51)
    args = [batched(g, 2, 52) if "grad" in chosen else g, batched_boxes(4, 2, 1, 53) if "rois" in chosen else r]
    dims = [2 if "grad" in chosen else None, 1 if "rois" in chosen else None]
    call = lambda g, r: ops.roi_align_backward(g, r, 0.5, 3, 2, 2, 3, 8, 9, -1, False)  # noqa: E731
    assert_vmap_matches_loop(call, args, dims)


@pytest.mark.parametrize("chosen", subsets(["grad", "rois", "argmax"]), ids="+".join)
def test_roi_pool_backward_vmap(chosen):
    x = randn(2, 3, 8, 9, seed=60)
    r = boxes(4, 2, seed=61)
    _, argmax = ops.roi_pool(x, r, 0.5, 3, 2)
    g = randn(4, 3, 3, 2, seed=62)
    # Each entry's argmax from pooling its own features: valid plane offsets, -1 for empty bins.
    entry_argmax = torch.stack([ops.roi_pool(randn(2, 3, 8, 9, seed=63 + i), r, 0.5, 3, 2)[1] for i in range(B)], 1)
    args = [batched(g, 0, 66) if "grad" in chosen else g,
            batched_boxes(4, 2, 0, 67) if "rois" in chosen else r,
            entry_argmax if "argmax" in chosen else argmax]
    dims = [0 if "grad" in chosen else None, 0 if "rois" in chosen else None, 1 if "argmax" in chosen else None]
    call = lambda g, r, a: ops.roi_pool_backward(g, r, a, 0.5, 3, 2, 2, 3, 8, 9)  # noqa: E731
    assert_vmap_matches_loop(call, args, dims)


MULTILEVEL_CHOICES = subsets(["features", "rois", "levels"]) + [("features[1]",)]


@pytest.mark.parametrize("chosen", MULTILEVEL_CHOICES, ids="+".join)
def test_roi_align_multilevel_vmap(chosen):
    features = [randn(2, 3, 8, 9, seed=70), randn(2, 3, 4, 5, seed=71)]
    r = boxes(5, 2, seed=72)
    levels = torch.tensor([1, 0, 0, 1, 1])
    feature_dims = [0 if "features" in chosen else None, 0 if {"features", "features[1]"} & set(chosen) else None]
    fs = [batched(f, 0, 73 + i) if d is not None else f for i, (f, d) in enumerate(zip(features, feature_dims))]
    entry_levels = torch.stack([torch.randint(0, 2, (5,), generator=torch.Generator().manual_seed(80 + i))
                                for i in range(B)], 1)
    args = [fs, batched_boxes(5, 2, 0, 76) if "rois" in chosen else r, entry_levels if "levels" in chosen else levels]
    dims = [feature_dims, 0 if "rois" in chosen else None, 1 if "levels" in chosen else None]
    call = lambda f, r, lv: ops.roi_align_multilevel(f, r, lv, [0.5, 0.25], 3, 2, 2, False)  # noqa: E731
    assert_vmap_matches_loop(call, args, dims)


def test_vmapped_boxes_are_checked_against_their_own_batch():
    # Folded into one batch of B*N images, a bad index would name another entry's image:
    # the rule checks each entry's boxes against its own N first.
    x = batched(randn(2, 3, 8, 9, seed=0), 0, 1)
    r = batched_boxes(4, 2, 0, 2)
    r[1, 2, 0] = 2.0
    for error in (ValueError, RuntimeError):
        with pytest.raises(error, match=r"rois\[2, 0\] = 2.0 is not a batch index.*batch size 2.*entry 1"):
            vmap(lambda x, r: ops.roi_align(x, r, 1.0, 2, 2, 2, False))(x, r)


# ---------------------------------------------------------------- gradcheck, every operator

GRADCHECK = dict(check_batched_grad=True, check_forward_ad=True, check_batched_forward_grad=True)


def leaf(*shape, seed):
    return randn(*shape, seed=seed).requires_grad_()


def conv_gradcheck_cases():
    stride, padding, dilation, groups = [2, 1], [1, 0, 0, 1], [1, 2], 2
    x, w, b = leaf(1, 2, 4, 4, seed=0), leaf(2, 1, 2, 2, seed=1), leaf(2, seed=2)
    gy = leaf(*ops.conv2d(x, w, b, stride, padding, dilation, groups).shape, seed=3)
    op_t = [1, 0]
    xt, wt, bt = leaf(1, 2, 2, 3, seed=4), leaf(2, 1, 2, 2, seed=5), leaf(2, seed=6)
    gyt = leaf(*ops.conv_transpose2d(xt, wt, bt, stride, padding, op_t, dilation, groups).shape, seed=7)
    return {
        "conv2d": (lambda x, w, b: ops.conv2d(x, w, b, stride, padding, dilation, groups), (x, w, b)),
        "conv2d_backward": (
            lambda g, x, w: ops.conv2d_backward(g, x, w, stride, padding, dilation, groups, [True] * 3),
            (gy, x, w)),
        "conv_transpose2d": (
            lambda x, w, b: ops.conv_transpose2d(x, w, b, stride, padding, op_t, dilation, groups), (xt, wt, bt)),
        "conv_transpose2d_backward": (
            lambda g, x, w: ops.conv_transpose2d_backward(g, x, w, stride, padding, op_t, dilation, groups,
                                                          [True] * 3),
            (gyt, xt, wt)),
    }


GRADCHECK_ROIS = torch.tensor([[0, 0.3, 0.7, 3.6, 2.9], [1, 1.2, 0.1, 3.3, 3.8]], dtype=D)


def roi_gradcheck_cases():
    rois = GRADCHECK_ROIS
    x = leaf(2, 1, 4, 5, seed=8)
    # Distinct values keep each maximum away from its neighbours, where max has no derivative.
    xp = torch.randperm(2 * 1 * 4 * 5, generator=torch.Generator().manual_seed(9)).reshape(2, 1, 4, 5).to(D)
    xp.requires_grad_()
    _, argmax = ops.roi_pool(xp, rois, 1.0, 2, 2)
    return {
        "roi_align": (lambda x: ops.roi_align(x, rois, 1.0, 2, 2, 2, True), (x,)),
        "roi_align_backward": (lambda g: ops.roi_align_backward(g, rois, 1.0, 2, 2, 2, 1, 4, 5, 2, True),
                               (leaf(2, 1, 2, 2, seed=10),)),
        "roi_pool": (lambda x: ops.roi_pool(x, rois, 1.0, 2, 2)[0], (xp,)),
        "roi_pool_backward": (lambda g: ops.roi_pool_backward(g, rois, argmax, 1.0, 2, 2, 2, 1, 4, 5),
                              (leaf(2, 1, 2, 2, seed=11),)),
        "roi_align_multilevel": (
            lambda a, b: ops.roi_align_multilevel([a, b], rois, torch.tensor([1, 0]), [1.0, 0.5], 2, 2, 2, True),
            (x, leaf(2, 1, 2, 3, seed=12))),
    }


def gradcheck_cases():
    return {**conv_gradcheck_cases(), **roi_gradcheck_cases()}


@pytest.mark.parametrize("name", list(gradcheck_cases()))
def test_gradcheck_batched_and_forward_mode(name):
    fn, inputs = gradcheck_cases()[name]
    eps = 1e-3 if name == "roi_pool" else 1e-6
    options = dict(GRADCHECK)
    if name == "roi_align_multilevel":
        # gradcheck batches forward-mode tangents with torch's older vmap, whose fallback takes
        # no Tensor[] argument; its batched tangents are checked with jacfwd below instead.
        options["check_batched_forward_grad"] = False
    assert gradcheck(fn, inputs, eps=eps, **options)


# Operators without a derivative, by design: each refuses to be differentiated, and a test
# of its own says so (conv2d_fused: tests/test_fused_conv.py, test_refuses_to_differentiate).
NOT_DIFFERENTIABLE = {"fastconv::conv2d_fused"}


def test_every_operator_is_gradchecked():
    from test_opcheck import tensor_operators

    assert {f"fastconv::{name}" for name in gradcheck_cases()} | NOT_DIFFERENTIABLE == tensor_operators()


def test_roi_align_multilevel_jacobians():
    _, (x, y) = roi_gradcheck_cases()["roi_align_multilevel"]
    levels = torch.tensor([1, 0])
    fn = lambda a, b: F.multi_level_roi_align([a, b], GRADCHECK_ROIS, levels, 2, [1.0, 0.5], 2, True)  # noqa: E731
    x, y = x.detach(), y.detach()
    ref = torch.autograd.functional.jacobian(fn, (x, y))
    for transform in (jacrev, jacfwd):
        for got, want in zip(transform(fn, argnums=(0, 1))(x, y), ref):
            torch.testing.assert_close(got, want)


# ---------------------------------------------------------------- transforms against torch


CONV_KW = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)


def conv_inputs():
    return randn(2, 4, 6, 5, seed=0), randn(6, 2, 3, 3, seed=1), randn(6, seed=2)


def loss(module):
    return lambda x, w, b: (module.conv2d(x, w, b, **CONV_KW) ** 2).sum()


def outputs(module):
    return lambda x, w, b: module.conv2d(x, w, b, **CONV_KW)


TRANSFORMS = {
    "grad": lambda f, g: grad(f, argnums=(0, 1, 2)),
    "vjp": lambda f, g: lambda *a: vjp(g, *a)[1](torch.ones_like(g(*a))),
    "jacrev": lambda f, g: jacrev(g, argnums=(0, 1, 2)),
    "jacfwd": lambda f, g: jacfwd(g, argnums=(0, 1, 2)),
    "jvp": lambda f, g: lambda *a: jvp(g, a, tuple(randn(*t.shape, seed=5) for t in a))[1],
    "hessian": lambda f, g: hessian(f, argnums=1),
    "grad of grad": lambda f, g: grad(lambda x, w, b: grad(f)(x, w, b).pow(2).sum(), argnums=1),
    "jacfwd of grad": lambda f, g: jacfwd(grad(f, argnums=1), argnums=0),
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_transform_matches_torch(transform):
    make = TRANSFORMS[transform]
    got = make(loss(F), outputs(F))(*conv_inputs())
    want = make(loss(TF), outputs(TF))(*conv_inputs())
    torch.testing.assert_close(got, want)


OTHER_CONVOLUTIONS = {
    "conv1d": ((2, 4, 7), (4, 2, 3), 4, dict(stride=2, padding=1, groups=2)),
    "conv_transpose1d": ((2, 4, 7), (4, 2, 3), 4, dict(stride=2, output_padding=1, groups=2)),
    "conv_transpose2d": ((1, 4, 3, 3), (4, 3, 2, 3), 6, dict(stride=2, output_padding=1, groups=2)),
}


@pytest.mark.parametrize("kind", list(OTHER_CONVOLUTIONS))
def test_jacobians_of_the_other_convolutions(kind):
    x_shape, w_shape, channels, kw = OTHER_CONVOLUTIONS[kind]
    args = (randn(*x_shape, seed=0), randn(*w_shape, seed=1), randn(channels, seed=2))
    fast = lambda *a: getattr(F, kind)(*a, **kw)  # noqa: E731
    ref = lambda *a: getattr(TF, kind)(*a, **kw)  # noqa: E731
    for transform in (jacrev, jacfwd):
        for got, want in zip(transform(fast, argnums=(0, 1, 2))(*args), transform(ref, argnums=(0, 1, 2))(*args)):
            torch.testing.assert_close(got, want)


def test_forward_mode_ad_outside_torch_func():
    import torch.autograd.forward_ad as fwAD

    x, w, b = conv_inputs()
    tx, tw = randn(*x.shape, seed=7), randn(*w.shape, seed=8)
    tangents = []
    for module in (F, TF):
        with fwAD.dual_level():
            y = module.conv2d(fwAD.make_dual(x, tx), fwAD.make_dual(w, tw), b, **CONV_KW)
            tangents.append(fwAD.unpack_dual(y).tangent)
    torch.testing.assert_close(*tangents)


def test_roi_align_transforms_match_autograd():
    x = randn(2, 3, 6, 7, seed=0)
    rois = torch.tensor([[0, 0.3, 0.7, 4.6, 3.9], [1, 1.2, 0.1, 3.3, 5.8]], dtype=D)
    for fn in (lambda x: F.roi_align(x, rois, (3, 2), 1.0, 2, True), lambda x: F.roi_pool(x, rois, (3, 2), 1.0)):
        ref = torch.autograd.functional.jacobian(fn, x)
        torch.testing.assert_close(jacrev(fn)(x), ref)
        torch.testing.assert_close(jacfwd(fn)(x), ref)


def test_raw_operators_refuse_torch_func_differentiation_by_name():
    x, w, b = conv_inputs()
    with pytest.raises(NotImplementedError, match="fastconv.functional"):
        grad(lambda x: ops.conv2d(x, w, b, [1, 1], [0, 0, 0, 0], [1, 1], 2).sum())(x)
    # fastconv._ops.differentiable is the operator-level way in.
    from fastconv._ops import differentiable

    g = grad(lambda x: differentiable.conv2d(x, w, b, [1, 1], [0, 0, 0, 0], [1, 1], 2).sum())(x)
    torch.testing.assert_close(g, grad(lambda x: TF.conv2d(x, w, b, groups=2).sum())(x))


# ---------------------------------------------------------------- models


def test_per_sample_gradients_of_a_resnet_equal_a_loop():
    # Opacus-style: vmap(grad) over the batch, each sample its own batch of one. Eval mode:
    # batch norm's batch statistics would couple the samples.
    model = fastconv.models.resnet18(num_classes=5).to(D).eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    images = randn(3, 3, 32, 32, seed=0)
    labels = torch.tensor([0, 3, 4])

    def sample_loss(params, image, label):
        logits = functional_call(model, (params, buffers), (image.unsqueeze(0),))
        return TF.cross_entropy(logits, label.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, images, labels)
    for i in range(len(images)):
        one = grad(sample_loss)(params, images[i], labels[i])
        for name in ("conv1.weight", "layer1.0.conv2.weight", "layer3.0.downsample.0.weight", "fc.weight"):
            torch.testing.assert_close(per_sample[name][i], one[name], rtol=1e-9, atol=1e-12)


def test_per_sample_gradients_use_the_batching_rules_not_the_fallback():
    import warnings

    model = fastconv.Conv2d(3, 4, 3, padding=1).to(D)
    params = dict(model.named_parameters())
    x = randn(4, 3, 6, 6, seed=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*performance drop.*")
        vmap(grad(lambda p, x: functional_call(model, p, (x.unsqueeze(0),)).sum()), in_dims=(None, 0))(params, x)


def test_vmapped_ensemble_equals_a_loop():
    # Model ensembles: the weights vmapped, one input shared, folded into the groups.
    torch.manual_seed(0)
    models = [torch.nn.Sequential(fastconv.Conv2d(4, 6, 3, groups=2, padding=1), torch.nn.ReLU(),
                                  fastconv.ConvTranspose2d(6, 2, 2, stride=2)).to(D) for _ in range(B)]
    params, buffers = stack_module_state(models)
    base = models[0]
    x = randn(2, 4, 5, 5, seed=1)

    def run(p, b, x):
        return functional_call(base, (p, b), (x,))

    out = vmap(run, in_dims=(0, 0, None))(params, buffers, x)
    grads = vmap(grad(lambda p, b, x: run(p, b, x).pow(2).sum()), in_dims=(0, 0, None))(params, buffers, x)
    for i, m in enumerate(models):
        torch.testing.assert_close(out[i], m(x))
        m.zero_grad()
        m(x).pow(2).sum().backward()
        for name, p in m.named_parameters():
            torch.testing.assert_close(grads[name][i], p.grad)


def test_jit_trace_records_the_operator_not_the_function():
    import warnings

    model = fastconv.Conv2d(3, 4, 3).to(D)  # its parameters require grad: the Function's case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated
        traced = torch.jit.trace(model, randn(1, 3, 6, 6, seed=0))
    kinds = [node.kind() for node in traced.graph.nodes()]
    assert "fastconv::conv2d" in kinds and "prim::PythonOp" not in kinds


def test_per_sample_gradients_of_the_fpn_pooler_with_levels_per_entry():
    # Levels that differ from entry to entry take the masked backward (every level over every
    # box, the others' gradients zeroed); levels shared take the per-level gather.
    features = [batched(randn(2, 3, 8, 9, seed=0), 0, 1), batched(randn(2, 3, 4, 5, seed=2), 0, 3)]
    rois = batched_boxes(5, 2, 0, 4)
    entry_levels = torch.stack([torch.randint(0, 2, (5,), generator=torch.Generator().manual_seed(10 + i))
                                for i in range(B)])

    def loss(a, b, r, levels):
        return F.multi_level_roi_align([a, b], r, levels, (3, 2), [0.5, 0.25], 2, False).pow(2).sum()

    for levels, dims in ((entry_levels, (0, 0, 0, 0)), (entry_levels[0], (0, 0, 0, None))):
        got = vmap(grad(loss, argnums=(0, 1)), in_dims=dims)(*features, rois, levels)
        for i in range(B):
            want = grad(loss, argnums=(0, 1))(features[0][i], features[1][i], rois[i],
                                              levels[i] if dims[3] is not None else levels)
            for g, w in zip(got, want):
                torch.testing.assert_close(g[i], w)
