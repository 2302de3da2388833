"""fastconv.route_functional() and convert(model, functional=True) (issue 25): the
torch.nn.functional convolutions that custom layers call themselves run on fastconv. That a
call reached fastconv is observed below the Python layer, by the operators dispatched
(fastconv::conv2d rather than aten::convolution)."""

import collections
import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as TF
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import fastconv
import fastconv.routing
from fastconv.routing import RoutingFallbackWarning


class Dispatched(TorchDispatchMode):
    """Counts the operators dispatched, by namespace::name."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func._schema.name] += 1
        return func(*args, **(kwargs or {}))

    def convolutions(self):
        return {k: v for k, v in self.ops.items() if "conv" in k or "roi" in k}


@pytest.fixture(autouse=True)
def _fresh_warnings():
    fastconv.routing._warned.clear()
    yield
    fastconv.routing._warned.clear()


class StdConv2d(nn.Conv2d):
    """timm's weight-standardised convolution, in small: forward standardises the filter."""

    def forward(self, x):
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        w = (w - mean) / torch.sqrt(var + 1e-6)
        return TF.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2dSame(nn.Conv2d):
    """TensorFlow's "SAME" padding: computed from the input size, the odd pixel at the end."""

    def forward(self, x):
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        x = TF.pad(x, [left, right, top, bottom])
        return TF.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class FunctionalCalls(nn.Module):
    """A module that calls every routed convolution itself."""

    def __init__(self):
        super().__init__()
        self.w2 = nn.Parameter(torch.randn(6, 4, 3, 3))
        self.w1 = nn.Parameter(torch.randn(6, 6, 2))
        self.wt2 = nn.Parameter(torch.randn(6, 2, 3, 3))
        self.wt1 = nn.Parameter(torch.randn(4, 3, 3))
        self.b = nn.Parameter(torch.randn(6))

    def forward(self, x):
        y = TF.conv2d(x, self.w2, self.b, stride=(2, 1), padding=1)
        y = TF.conv_transpose2d(y, self.wt2, None, 2, 1, 1, groups=3)
        z = TF.conv1d(y.flatten(2), self.w1, self.b, padding="same", dilation=3)
        return y.sum(), TF.conv_transpose1d(z[:, :4], self.wt1, stride=2)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.std = StdConv2d(3, 4, 3, padding=1, bias=False)
        self.same = Conv2dSame(4, 4, 3, stride=2)
        self.calls = FunctionalCalls()

    def forward(self, x):
        return self.calls(torch.relu(self.same(self.std(x))))


def outputs_and_grads(model, x):
    outs = model(x)
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    grads = torch.autograd.grad(sum((o * torch.randn_like(o)).sum() for o in outs),
                                [x] + list(model.parameters()))
    return outs, grads


def test_convert_functional_routes_custom_layers_forward_and_backward():
    torch.manual_seed(0)
    model = Net().double()
    x = torch.randn(2, 3, 11, 9, dtype=torch.float64, requires_grad=True)
    reference = copy.deepcopy(model)
    assert fastconv.convert(model, functional=True) is model
    # convert leaves the subclasses' classes alone; only routing reaches their F.conv2d.
    assert type(model.std) is StdConv2d and type(model.same) is Conv2dSame
    torch.manual_seed(1)
    ref_outs, ref_grads = outputs_and_grads(reference, x)
    torch.manual_seed(1)
    with Dispatched() as seen:
        outs, grads = outputs_and_grads(model, x)
    for a, b in zip(list(outs) + list(grads), list(ref_outs) + list(ref_grads)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    ops = seen.convolutions()
    assert not any(k.startswith("aten::") for k in ops), ops
    # Forward: std, same, conv2d, conv1d as fastconv::conv2d, the two transposed as
    # fastconv::conv_transpose2d; the backward passes are fastconv's too.
    assert ops["fastconv::conv2d"] >= 4 and ops["fastconv::conv_transpose2d"] >= 2
    assert any(k.startswith("fastconv::") and "backward" in k for k in ops), ops
    # Outside the model's forward, nothing is routed.
    with Dispatched() as seen:
        TF.conv2d(x, model.std.weight)
    assert "aten::convolution" in seen.ops and "fastconv::conv2d" not in seen.ops


def test_route_functional_context_manager():
    torch.manual_seed(0)
    model = FunctionalCalls().double()
    x = torch.randn(2, 4, 8, 6, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(1)
    ref_outs, ref_grads = outputs_and_grads(model, x)
    torch.manual_seed(1)
    with Dispatched() as seen, fastconv.route_functional():
        outs, grads = outputs_and_grads(model, x)
    for a, b in zip(list(outs) + list(grads), list(ref_outs) + list(ref_grads)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert "aten::convolution" not in seen.ops and seen.ops["fastconv::conv2d"] >= 2


def test_calls_go_through_fastconv_functional(monkeypatch):
    calls = []
    real = fastconv.functional.conv2d

    def spy(*args, **kwargs):
        calls.append(kwargs.get("padding", args[4] if len(args) > 4 else 0))
        return real(*args, **kwargs)

    monkeypatch.setattr(fastconv.functional, "conv2d", spy)
    x, w = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 4, 4)
    with fastconv.route_functional():
        y = TF.conv2d(x, w, padding="same")  # even kernel: torch's rule, odd pixel at the end
        nn.Conv2d(2, 3, 3, padding=1)(x)
    assert calls == ["same", (1, 1)]
    torch.testing.assert_close(y, TF.conv2d(x, w, padding="same"), rtol=1e-5, atol=1e-5)


def test_refused_calls_run_on_torch_with_one_warning():
    x, w = torch.randint(-3, 4, (1, 2, 6, 6)), torch.randint(-3, 4, (3, 2, 3, 3))
    with fastconv.route_functional():
        with pytest.warns(RoutingFallbackWarning, match="must be float32.*ran on torch instead") as record:
            y = TF.conv2d(x, w)
            TF.conv2d(x, w)
    assert len([r for r in record if r.category is RoutingFallbackWarning]) == 1
    assert torch.equal(y, TF.conv2d(x, w))
    # A second reason warns again, once.
    xf, wf = torch.randn(1, 2, 9, 9), torch.randn(3, 2, 3, 3)
    with fastconv.route_functional():
        with pytest.warns(RoutingFallbackWarning, match="'stride' must have 2 values") as record:
            y = TF.conv2d(xf, wf, stride=[2])  # torch takes one value for both dims
            TF.conv2d(xf, wf, stride=[2])
    assert len([r for r in record if r.category is RoutingFallbackWarning]) == 1
    assert torch.equal(y, TF.conv2d(xf, wf, stride=[2]))


def test_calls_torch_refuses_raise_torchs_error_without_warning():
    x, w = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RoutingFallbackWarning)
        with fastconv.route_functional():
            with pytest.raises(RuntimeError, match="expected scalar type Float but found Double"):
                TF.conv2d(x, w.double())
            # fastconv's per-side padding extension is not torch's: torch refuses it, as it
            # would without the mode.
            with pytest.raises(RuntimeError, match="padding"):
                TF.conv2d(x, w, padding=(1, 1, 0, 0))


def test_empty_operands_get_torchs_answer():
    x, w = torch.randn(0, 2, 6, 6), torch.randn(3, 2, 3, 3)
    with Dispatched() as seen, fastconv.route_functional():
        y = TF.conv2d(x, w, padding=1)
    assert y.shape == (0, 3, 6, 6) and "fastconv::conv2d" not in seen.ops


def test_mode_is_left_even_when_forward_raises():
    model = fastconv.convert(nn.Sequential(nn.Conv2d(2, 3, 3)), functional=True)
    depth = torch._C._len_torch_function_stack()
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 5, 6, 6))  # wrong channel count
    assert torch._C._len_torch_function_stack() == depth
    model(torch.randn(1, 2, 6, 6))
    assert torch._C._len_torch_function_stack() == depth


def test_installed_once_and_kept_by_deepcopy():
    model = nn.Sequential(StdConv2d(2, 3, 3))
    fastconv.convert(model, functional=True)
    fastconv.convert(model, functional=True)
    assert len(model._forward_pre_hooks) == 1 and len(model._forward_hooks) == 1
    clone = copy.deepcopy(model)
    with Dispatched() as seen:
        clone(torch.randn(1, 2, 5, 5))
    assert "fastconv::conv2d" in seen.ops and "aten::convolution" not in seen.ops
    with pytest.raises(TypeError, match="functional must be a bool"):
        fastconv.convert(model, functional="yes")


def test_fused_and_routed_compose():
    """fuse() of a routed model keeps the routing (the hooks are deep-copied with it)."""
    model = nn.Sequential(StdConv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).eval()
    fastconv.convert(model, functional=True)
    fused, report = fastconv.fuse(model, report=True)
    assert [(p.conv, p.bn) for p in report.folded] == [("2", "3")]
    x = torch.randn(1, 2, 6, 6)
    with Dispatched() as seen, torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
    assert "aten::convolution" not in seen.ops


def test_torchvision_roi_ops_are_routed():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    features = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[0, 1.0, 2.0, 9.5, 12.0], [1, 0.0, 0.0, 15.0, 15.0], [1, 4.2, 3.1, 8.8, 6.6]],
                         dtype=torch.float64)
    ref_a = torchvision.ops.roi_align(features, boxes, 3, 0.5, 2, True)
    ref_p = torchvision.ops.roi_pool(features, boxes, (2, 3), 0.5)
    ref_g = torch.autograd.grad((ref_a.sum() + ref_p.sum()), features)[0]
    ref_raw = torch.ops.torchvision.roi_pool(features, boxes, 0.5, 2, 3)
    with Dispatched() as seen, fastconv.route_functional():
        a = torchvision.ops.roi_align(features, boxes, 3, 0.5, 2, True)
        p = torchvision.ops.roi_pool(features, boxes, (2, 3), 0.5)
        g = torch.autograd.grad((a.sum() + p.sum()), features)[0]
        raw = torch.ops.torchvision.roi_pool(features, boxes, 0.5, 2, 3)
    ops = seen.convolutions()
    assert not any(k.startswith("torchvision::") for k in ops), ops
    assert ops["fastconv::roi_align"] == 1 and ops["fastconv::roi_pool"] == 2
    torch.testing.assert_close(a, ref_a, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(p, ref_p, rtol=0, atol=0)
    torch.testing.assert_close(g, ref_g, rtol=1e-10, atol=1e-10)
    # The operator's own two results, the maxima and their positions, as torchvision's.
    assert torch.equal(raw[0], ref_raw[0]) and torch.equal(raw[1], ref_raw[1])


@pytest.mark.parametrize("how", ["convert", "context"])
def test_torch_compile_traces_the_routing_into_fastconv_operators(how):
    """Dynamo traces through the hooks and the mode, in one graph: the compiled graph calls
    fastconv's operator, and gives the eager result."""
    torch.manual_seed(0)
    model = nn.Sequential(StdConv2d(2, 3, 3), nn.ReLU())
    if how == "convert":
        fastconv.convert(model, functional=True)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    x = torch.randn(1, 2, 7, 7)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    with torch.no_grad():
        if how == "convert":
            out, ref = compiled(x), model(x)
        else:
            with fastconv.route_functional():
                out, ref = compiled(x), model(x)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    assert len(graphs) == 1
    targets = {n.target for n in graphs[0].graph.nodes if n.op == "call_function"}
    assert torch.ops.fastconv.conv2d.default in targets
    assert not any("conv2d" in str(t) and t is not torch.ops.fastconv.conv2d.default for t in targets), targets


def test_per_sample_gradients_under_the_mode():
    """torch.func's vmap(grad(...)) over a routed custom layer: fastconv's batching rules and
    autograd Functions, the same gradients as torch's."""
    torch.manual_seed(0)
    model = StdConv2d(2, 3, 3).double()
    params = dict(model.named_parameters())
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)

    def loss(p, sample):
        return torch.func.functional_call(model, p, (sample[None],)).square().sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))
    ref = per_sample(params, x)
    with Dispatched() as seen, fastconv.route_functional():
        out = per_sample(params, x)
    assert "fastconv::conv2d" in seen.ops and "aten::convolution" not in seen.ops
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=1e-10, atol=1e-10)
