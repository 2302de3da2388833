"""fastconv.functional against torch.nn.functional on PyTorch's own OpInfo sample inputs for
conv1d, conv2d, conv_transpose1d and conv_transpose2d: float64 to 1e-7 relative, gradients
included, on every algorithm that claims each sample."""

import pytest
import torch

import fastconv
import fastconv.functional as F
from conftest import algorithms, claims, rel_err

common = pytest.importorskip("torch.testing._internal.common_methods_invocations")

OPS = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"]
OPINFOS = {op.name: op for op in common.op_db if op.name in {f"nn.functional.{n}" for n in OPS}}


def samples(name, device):
    return list(OPINFOS[f"nn.functional.{name}"].sample_inputs(device, torch.float64, requires_grad=True))


@pytest.mark.parametrize("name", OPS)
def test_matches_torch_on_opinfo_samples(name, device):
    checked = 0
    for sample in samples(name, device):
        x = sample.input
        w, *rest = sample.args
        b = rest[0] if rest else sample.kwargs.get("bias")
        kwargs = {k: v for k, v in sample.kwargs.items() if k != "bias"}
        ref = getattr(torch.nn.functional, name)(x, w, b, **kwargs)
        leaves = [t for t in (x, w, b) if t is not None]
        grad = torch.randn_like(ref)
        ref_grads = torch.autograd.grad(ref, leaves, grad)
        transposed = name.startswith("conv_transpose")
        for algorithm in [None] + algorithms(device):
            if algorithm is not None and not claims(algorithm, name, x, w, kwargs, grads=True):
                continue
            with fastconv.algorithms.force(algorithm):
                out = getattr(F, name)(x, w, b, **kwargs)
                grads = torch.autograd.grad(out, leaves, grad)
            assert out.shape == ref.shape, (sample, transposed)
            assert rel_err(out, ref) <= 1e-7, (algorithm, sample)
            for got, want in zip(grads, ref_grads):
                assert rel_err(got, want) <= 1e-7, (algorithm, sample)
            checked += 1
    assert checked >= len(samples(name, device))
