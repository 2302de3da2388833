"""Zero sizes that torch accepts: inputs without channels, batches without images, planes of
zero size that the padding makes up for, RoI features without channels and calls without
boxes. Shapes, values and gradients against torch (torchvision for the RoI operators where
it is installed), and the operators' own answer (zeros plus the bias) beneath the functional
layer's torch-shaped one."""

import pytest
import torch
import torch.nn.functional as TF

import fastconv
import fastconv.functional as F

ops = torch.ops.fastconv

# kind, input shape, weight shape, bias?, keyword arguments
CASES = [
    ("conv2d", (2, 0, 5, 6), (3, 0, 3, 3), True, dict()),
    ("conv2d", (2, 0, 5, 6), (4, 0, 3, 2), True, dict(groups=2, stride=2, padding=1, dilation=(1, 2))),
    ("conv2d", (2, 0, 5, 6), (3, 0, 3, 3), False, dict(padding="same")),
    ("conv2d", (1, 0, 0, 5), (3, 0, 1, 1), True, dict(padding=1)),
    ("conv2d", (0, 3, 5, 6), (4, 3, 3, 3), True, dict(padding=1)),
    ("conv2d", (0, 3, 0, 5), (2, 3, 1, 1), True, dict(padding=1)),
    ("conv2d", (0, 0, 5, 5), (4, 0, 3, 3), True, dict()),
    ("conv2d", (0, 5, 5), (4, 0, 3, 3), True, dict()),  # unbatched, no channels
    ("conv1d", (2, 0, 15), (8, 0, 2), True, dict(stride=2)),
    ("conv1d", (0, 3, 9), (4, 3, 3), True, dict()),
    ("conv_transpose2d", (0, 3, 4, 4), (3, 2, 3, 3), True, dict(stride=2, output_padding=1)),
    ("conv_transpose1d", (0, 3, 5), (3, 2, 2), True, dict()),
]
IDS = [f"{c[0]}-{'x'.join(map(str, c[1]))}-{'_'.join(c[4]) or 'plain'}" for c in CASES]


def leaves(x_shape, w_shape, channels, has_bias):
    g = torch.Generator().manual_seed(0)
    make = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    return make(*x_shape), make(*w_shape), make(channels) if has_bias else None


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_shapes_values_and_gradients_match_torch(case, device):
    kind, x_shape, w_shape, has_bias, kw = case
    channels = w_shape[1] * kw.get("groups", 1) if kind.startswith("conv_transpose") else w_shape[0]
    x, w, b = leaves(x_shape, w_shape, channels, has_bias)
    ours = [t if t is None else t.detach().to(device).requires_grad_() for t in (x, w, b)]
    y = getattr(F, kind)(*ours, **kw)
    y_ref = getattr(TF, kind)(x, w, b, **kw)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y.cpu(), y_ref)
    grad_output = torch.rand_like(y_ref)
    present = [t for t in ours if t is not None]
    grads = torch.autograd.grad(y, present, grad_output.to(device), allow_unused=True)
    grads_ref = torch.autograd.grad(y_ref, [t for t in (x, w, b) if t is not None], grad_output)
    for g, r in zip(grads, grads_ref):
        assert g is not None
        assert g.shape == r.shape
        torch.testing.assert_close(g.cpu(), r)


def test_layers_without_input_channels_train_as_torch():
    # torch's own test of empty channels: forward, backward, and zero gradients everywhere.
    for ours, theirs, shape in (
        (fastconv.Conv1d(0, 8, 2, stride=2), torch.nn.Conv1d(0, 8, 2, stride=2), (2, 0, 15)),
        (fastconv.Conv2d(0, 33, 3, stride=2), torch.nn.Conv2d(0, 33, 3, stride=2), (2, 0, 50, 100)),
    ):
        x = torch.randn(shape, requires_grad=True)
        out = ours(x)
        assert out.shape == theirs(x).shape
        out.backward(torch.rand_like(out))
        assert torch.equal(x.grad, torch.zeros_like(x))
        for p in ours.parameters():
            assert torch.equal(p.grad, torch.zeros_like(p))


def test_operator_without_input_channels_gives_zeros_plus_bias():
    # Beneath the functional layer's torch-shaped result, the operator returns what the empty
    # sums give, and its backward the bias gradient of those outputs.
    x = torch.randn(2, 0, 5, 6, dtype=torch.float64)
    w = torch.randn(3, 0, 3, 3, dtype=torch.float64)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    y = ops.conv2d(x, w, b, [1, 1], [0, 0, 0, 0], [1, 1], 1)
    torch.testing.assert_close(y, b.view(1, 3, 1, 1).expand(2, 3, 3, 4))
    gy = torch.randn_like(y)
    gx, gw, gb = ops.conv2d_backward(gy, x, w, [1, 1], [0, 0, 0, 0], [1, 1], 1, [True, True, True])
    assert gx.shape == x.shape and gw.shape == w.shape
    torch.testing.assert_close(gb, gy.sum((0, 2, 3)))


def test_every_cpu_algorithm_forced_onto_an_empty_operand():
    x = torch.randn(2, 0, 6, 6, dtype=torch.float64)
    w = torch.randn(4, 0, 3, 3, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    for algorithm in fastconv.algorithms.names("cpu"):
        with fastconv.algorithms.force(algorithm):
            y = ops.conv2d(x, w, b, [1, 1], [1, 1, 1, 1], [1, 1], 1)
        torch.testing.assert_close(y, b.view(1, 4, 1, 1).expand(2, 4, 6, 6), msg=algorithm)


def test_vmap_and_grad_over_zero_channels():
    x = torch.randn(3, 2, 0, 5, 5, dtype=torch.float64)
    w = torch.randn(4, 0, 3, 3, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    out = torch.func.vmap(lambda x: F.conv2d(x, w, b))(x)
    assert out.shape == (3, 2, 0, 3, 3)
    gw, gb = torch.func.grad(lambda w, b: F.conv2d(x[0], w, b).sum(), argnums=(0, 1))(w, b)
    assert gw.shape == w.shape and torch.equal(gb, torch.zeros_like(b))


def roi_cases(device):
    boxes = torch.tensor([[0, 0.5, 1.0, 5.5, 6.0], [1, 2.0, 0.0, 4.0, 3.5]], dtype=torch.float64, device=device)
    return {
        "no channels": (torch.randn(2, 0, 8, 9, dtype=torch.float64, device=device), boxes),
        "no boxes": (torch.randn(2, 3, 8, 9, dtype=torch.float64, device=device), boxes[:0]),
        "no images, no boxes": (torch.randn(0, 3, 8, 9, dtype=torch.float64, device=device), boxes[:0]),
    }


@pytest.mark.parametrize("name", list(roi_cases("cpu")))
@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_roi_zero_sizes(op, name, device):
    x, boxes = roi_cases(device)[name]
    x.requires_grad_()
    args = (x, boxes, (3, 2), 0.5) + ((2, True) if op == "roi_align" else ())
    y = getattr(F, op)(*args)
    assert y.shape == (boxes.shape[0], x.shape[1], 3, 2)
    (g,) = torch.autograd.grad(y, x, torch.rand_like(y))
    assert torch.equal(g, torch.zeros_like(x))
    torchvision = pytest.importorskip("torchvision")
    ref = getattr(torchvision.ops, op)(x.detach().cpu(), boxes.cpu(), *args[2:])
    assert ref.shape == y.shape
