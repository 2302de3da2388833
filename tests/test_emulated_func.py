"""torch.func, complex dtypes, zero sizes and the error classes on fastconv's CUDA kernels,
run on the CPU under the emulation layer with every checker on: each against the same call on
torch (or fastconv's CPU kernels). Needs the emulation build (FASTCONV_SIMT=1;
tools/simt_check.sh makes one); skipped in other builds."""

import pytest
import torch
import torch.nn.functional as TF
from torch.func import functional_call, grad, jacfwd, jacrev, vmap

import fastconv
import fastconv.functional as F
import fastconv.testing
from conftest import rel_err

pytestmark = pytest.mark.skipif(
    not fastconv.testing.emulation_available(),
    reason="needs the emulation build: FASTCONV_SIMT=1 pip install --no-build-isolation .",
)

D = torch.float64


def randn(*shape, seed, dtype=D):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def test_per_sample_gradients():
    torch.manual_seed(0)
    model = torch.nn.Sequential(fastconv.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                fastconv.Conv2d(4, 2, 2, stride=2, groups=2)).to(D)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = randn(3, 3, 6, 6, seed=1)

    def sample_loss(p, image):
        return functional_call(model, p, (image.unsqueeze(0),)).pow(2).sum()

    with fastconv.testing.emulated_cuda():
        per_sample = vmap(grad(sample_loss), in_dims=(None, 0))(params, x)
    for i in range(len(x)):
        one = grad(sample_loss)(params, x[i])  # on the CPU kernels
        for name in params:
            torch.testing.assert_close(per_sample[name][i], one[name])


def test_vmapped_weights_fold_into_the_groups():
    x = randn(2, 4, 5, 5, seed=0)
    w = randn(3, 6, 2, 3, 3, seed=1)  # an ensemble of three grouped filters
    b = randn(3, 6, seed=2)
    wt = randn(3, 4, 3, 2, 2, seed=3)  # and of three transposed ones
    with fastconv.testing.emulated_cuda():
        out = vmap(lambda w, b: F.conv2d(x, w, b, padding=1, groups=2))(w, b)
        out_t = vmap(lambda w: F.conv_transpose2d(x, w, stride=2, groups=2))(wt)
    for i in range(3):
        torch.testing.assert_close(out[i], TF.conv2d(x, w[i], b[i], padding=1, groups=2))
        torch.testing.assert_close(out_t[i], TF.conv_transpose2d(x, wt[i], stride=2, groups=2))


def test_jacobians():
    x, w = randn(1, 2, 4, 4, seed=0), randn(2, 1, 3, 3, seed=1)
    fast = lambda x: F.conv2d(x, w, padding=1, groups=2)  # noqa: E731
    with fastconv.testing.emulated_cuda():
        rev, fwd = jacrev(fast)(x), jacfwd(fast)(x)
    ref = jacrev(lambda x: TF.conv2d(x, w, padding=1, groups=2))(x)
    torch.testing.assert_close(rev, ref)
    torch.testing.assert_close(fwd, ref)


def test_batched_gradcheck():
    x = randn(1, 2, 4, 3, seed=0).requires_grad_()
    w = randn(2, 1, 2, 2, seed=1).requires_grad_()
    b = randn(2, seed=2).requires_grad_()
    options = dict(check_batched_grad=True, check_forward_ad=True, check_batched_forward_grad=True)
    with fastconv.testing.emulated_cuda():
        assert torch.autograd.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), groups=2), (x, w, b), **options)
        assert torch.autograd.gradcheck(lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, groups=2), (x, w, b),
                                        **options)


def test_roi_vmap_and_per_sample_gradients():
    features = randn(3, 2, 2, 8, 9, seed=0)  # three entries of a batch of two images
    boxes = torch.stack([torch.tensor([[0, 0.5, 1.0, 5.5, 6.0], [1, 2.0, 0.0, 4.0 + i, 3.5]], dtype=D)
                         for i in range(3)])
    for op in (lambda x, r: F.roi_align(x, r, (3, 2), 0.5, 2, True), lambda x, r: F.roi_pool(x, r, (3, 2), 0.5)):
        with fastconv.testing.emulated_cuda():
            out = vmap(op)(features, boxes)
            grads = vmap(grad(lambda x, r: op(x, r).pow(2).sum()))(features, boxes)
        for i in range(3):
            torch.testing.assert_close(out[i], op(features[i], boxes[i]))
            torch.testing.assert_close(grads[i], grad(lambda x: op(x, boxes[i]).pow(2).sum())(features[i]))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=["complex64", "complex128"])
def test_complex(dtype):
    x = randn(2, 2, 5, 4, seed=0, dtype=torch.complex128).to(dtype).requires_grad_()
    w = randn(4, 1, 3, 3, seed=1, dtype=torch.complex128).to(dtype).requires_grad_()
    with fastconv.testing.emulated_cuda():
        y = F.conv2d(x, w, padding="same", groups=2)
        gx, gw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
    x_ref, w_ref = (t.detach().to(torch.complex128).requires_grad_() for t in (x, w))
    y_ref = TF.conv2d(x_ref, w_ref, padding="same", groups=2)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x_ref, w_ref), torch.ones_like(y_ref))
    tolerance = 1e-5 if dtype == torch.complex64 else 1e-12
    for got, want in ((y, y_ref), (gx, gx_ref), (gw, gw_ref)):
        assert rel_err(torch.view_as_real(got), torch.view_as_real(want)) <= tolerance


def test_zero_channels_and_empty_batches():
    cases = [((2, 0, 5, 5), (3, 0, 3, 3), dict(padding=1)), ((0, 3, 5, 5), (2, 3, 3, 3), dict())]
    for x_shape, w_shape, kw in cases:
        x, w, b = (randn(*s, seed=i).requires_grad_() for i, s in enumerate((x_shape, w_shape, (w_shape[0],))))
        with fastconv.testing.emulated_cuda():
            y = F.conv2d(x, w, b, **kw)
            grads = torch.autograd.grad(y, (x, w, b), torch.ones_like(y))
        y_ref = TF.conv2d(x, w, b, **kw)
        assert y.shape == y_ref.shape
        for g, r in zip(grads, torch.autograd.grad(y_ref, (x, w, b), torch.ones_like(y_ref))):
            torch.testing.assert_close(g, r)


def test_operator_errors_are_catchable_both_ways():
    x, w = randn(1, 3, 5, 5, seed=0), randn(2, 4, 3, 3, seed=1)
    for caught in (ValueError, RuntimeError):
        with fastconv.testing.emulated_cuda(), pytest.raises(caught, match="channels"):
            torch.ops.fastconv.conv2d(x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], 1)


def test_a_vmapped_call_is_one_launch():
    # The batching rules fold the vmapped dimension into the problem: one kernel launch for
    # the whole batch, not one per entry.
    x = randn(2, 4, 5, 5, seed=0)
    w = randn(3, 6, 2, 3, 3, seed=1)
    features = randn(3, 2, 2, 8, 9, seed=2)
    boxes = torch.tensor([[0, 0.5, 1.0, 5.5, 6.0]], dtype=D).expand(3, 1, 5).contiguous()
    with fastconv.testing.emulated_cuda(metrics=True):
        fastconv.testing.emulated_launches()
        vmap(lambda w: F.conv2d(x, w, padding=1, groups=2))(w)
        assert len(fastconv.testing.emulated_launches()) == 1
        vmap(lambda x, r: F.roi_align(x, r, (3, 2), 0.5, 2, True))(features, boxes)
        assert len(fastconv.testing.emulated_launches()) == 1
