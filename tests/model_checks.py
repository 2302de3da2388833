"""Checks shared by the model tests."""

import torch
import torch.nn.modules.conv as torch_conv

import fastconv.nn


def assert_all_convs_fastconv(model: torch.nn.Module) -> int:
    """Every convolution module in `model` is a fastconv layer; returns how many there are."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, torch_conv._ConvNd)]
    foreign = [name for name, m in convs if type(m).__module__ != fastconv.nn.__name__]
    assert not foreign, f"convolutions not on fastconv: {foreign}"
    return len(convs)


def forward_backward(model: torch.nn.Module, *inputs):
    """One forward and backward pass; every parameter that took part gets a finite gradient."""
    out = model(*inputs)
    tensors = [t for t in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(t, torch.Tensor)]
    sum(t.float().sum() for t in tensors).backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
    return out


def assert_same_as_reference(ours: torch.nn.Module, reference: torch.nn.Module, *inputs, rtol=1e-9, atol=1e-9):
    """Load the reference's state_dict into ours with strict=True; both give the same outputs
    in float64 and eval mode."""
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours = ours.double().eval()
    reference = reference.double().eval()
    inputs = [x.double() for x in inputs]
    with torch.no_grad():
        a, b = ours(*inputs), reference(*inputs)
    a_list = list(a) if isinstance(a, (tuple, list)) else [a]
    b_list = list(b) if isinstance(b, (tuple, list)) else [b]
    assert len(a_list) == len(b_list)
    for x, y in zip(a_list, b_list):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)
