"""fastconv.lowrank: spatial (SVD) and channel (Tucker-2) decompositions are exact at full
rank, converge as the rank grows, cost what they say, and fit a model into a FLOPs budget."""

import math

import pytest
import torch
import torch.nn.functional as tF
from torch import nn

import fastconv
import fastconv.models as models
from fastconv.lowrank import LowRankConv2d, decompose, decompose_model
from fastconv.summary import summary

CONVS = [
    dict(kernel_size=(3, 4), padding=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=(2, 1), padding=(2, 1), dilation=(2, 1), bias=False),
    dict(kernel_size=4, padding="same"),  # the odd pixel of padding at the end
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
    dict(kernel_size=(5, 3), padding=(2, 0), padding_mode="circular"),
]


def conv_and_input(seed=0, **kwargs):
    torch.manual_seed(seed)
    conv = fastconv.Conv2d(5, 7, **kwargs).double()
    return conv, torch.randn(2, 5, 11, 13, dtype=torch.float64)


@pytest.mark.parametrize("method", ["spatial", "channel"])
@pytest.mark.parametrize("kwargs", CONVS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_exact_at_full_rank(method, kwargs):
    conv, x = conv_and_input(**kwargs)
    full = decompose(conv, method=method, energy=1.0, inputs=x)
    report = full.report
    r, s = conv.kernel_size
    assert report.rank == report.full_rank == (min(5 * r, 7 * s) if method == "spatial" else (5, 7))
    assert report.output_error < 1e-12 and report.weight_error < 1e-12
    with torch.no_grad():
        torch.testing.assert_close(full(x), conv(x), rtol=1e-12, atol=1e-12)
    assert isinstance(full, LowRankConv2d) and all(type(m) is fastconv.Conv2d for m in full)
    assert all(m.padding_mode == conv.padding_mode for m in full if m.kernel_size != (1, 1))


def test_spatial_converges_as_eckart_young_says():
    # The best rank-D approximation of the (C*R) x (K*S) matrix leaves exactly the discarded
    # singular values: relative weight error sqrt(1 - energy kept), falling with D to 0.
    conv, x = conv_and_input(kernel_size=3, padding=1)
    errors = []
    for rank in range(1, 16):
        module = decompose(conv, rank=rank, inputs=x)
        r = module.report
        assert r.weight_error == pytest.approx(math.sqrt(max(1 - r.energy, 0)), abs=1e-9)
        # The replacement computes its equivalent filter bank, as a single convolution would.
        reference = tF.conv2d(x, module.equivalent_weight(), conv.bias, padding=1)
        with torch.no_grad():
            torch.testing.assert_close(module(x), reference, rtol=1e-12, atol=1e-12)
        errors.append((r.weight_error, r.output_error))
    weights = [w for w, _ in errors]
    assert all(a >= b for a, b in zip(weights, weights[1:])) and weights[-1] < 1e-12
    outputs = [o for _, o in errors]
    assert outputs[0] > 0.3 and outputs[7] < outputs[0] and outputs[-1] < 1e-12


def test_channel_converges_in_both_ranks():
    # Projections onto nested subspaces: the error cannot grow with either rank, and the
    # truncated HOSVD's is at most the discarded energy of both modes.
    conv, x = conv_and_input(kernel_size=3, padding=1)
    grid = {(a, b): decompose(conv, method="channel", rank=(a, b), inputs=x).report
            for a in range(1, 6) for b in range(1, 8)}
    for (a, b), r in grid.items():
        assert r.weight_error ** 2 <= (1 - r.energy[0]) + (1 - r.energy[1]) + 1e-12
        if a < 5:
            assert grid[a + 1, b].weight_error <= r.weight_error + 1e-12
        if b < 7:
            assert grid[a, b + 1].weight_error <= r.weight_error + 1e-12
    assert grid[5, 7].weight_error < 1e-12 and grid[1, 1].weight_error > 0.5
    assert grid[5, 7].output_error < 1e-12 < grid[3, 4].output_error < grid[1, 1].output_error


def test_energy_picks_the_smallest_rank_that_holds_it():
    conv, _ = conv_and_input(kernel_size=3, padding=1)
    kept = [decompose(conv, rank=d).report.energy for d in range(1, 16)]
    for d in (1, 4, 9):
        assert decompose(conv, energy=kept[d - 1]).report.rank == d
        assert decompose(conv, energy=(kept[d - 1] + kept[d]) / 2).report.rank == d + 1
    channel = decompose(conv, method="channel", energy=0.9).report
    assert min(channel.energy) >= 0.9
    assert decompose(conv, method="channel", rank=(channel.rank[0] - 1, channel.rank[1])).report.energy[0] < 0.9


def test_parameters_and_flops_by_hand():
    conv, x = conv_and_input(kernel_size=(3, 4), padding=1)  # output 11 x 12
    spatial = decompose(conv, rank=4, inputs=x).report
    assert spatial.params_before == 7 * 5 * 12 + 7
    assert spatial.params_after == 4 * 5 * 3 + 7 * 4 * 4 + 7
    assert spatial.flops_before == 2 * 7 * 11 * 12 * 5 * 12
    # The 3x1 factor makes an 11 x 13 map (every input column), the 1x4 one the 11 x 12 output.
    assert spatial.flops_after == 2 * 4 * 11 * 13 * 5 * 3 + 2 * 7 * 11 * 12 * 4 * 4
    channel = decompose(conv, method="channel", rank=(2, 3), inputs=x).report
    assert channel.params_after == 2 * 5 + 3 * 2 * 12 + 7 * 3 + 7
    assert channel.flops_after == 2 * 2 * 11 * 13 * 5 + 2 * 3 * 11 * 12 * 2 * 12 + 2 * 7 * 11 * 12 * 3
    assert "params 427 -> " in str(spatial) and "FLOPs" in str(spatial)


def test_float32_trainable_and_without_inputs():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)  # torch's own: the replacement is fastconv's
    module = decompose(conv, method="channel", rank=3)
    assert module.report.flops_before is None and module.report.output_error is None
    assert all(m.weight.dtype == torch.float32 and type(m) is fastconv.Conv2d for m in module)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    module(x).square().sum().backward()
    assert all(m.weight.grad is not None for m in module) and x.grad is not None


@pytest.mark.parametrize(
    "conv, kwargs, error, match",
    [
        (nn.Linear(3, 3), dict(rank=1), TypeError, "conv"),
        (nn.Conv2d(4, 4, 3, groups=2), dict(rank=1), ValueError, "groups"),
        (nn.Conv2d(4, 4, 3), dict(rank=1, method="cp"), ValueError, "method"),
        (nn.Conv2d(4, 4, 3), dict(), ValueError, "exactly one"),
        (nn.Conv2d(4, 4, 3), dict(rank=1, energy=0.5), ValueError, "exactly one"),
        (nn.Conv2d(4, 4, 3), dict(rank=13), ValueError, r"rank 13 is outside 1..12"),
        (nn.Conv2d(4, 4, 3), dict(rank=0), ValueError, "rank"),
        (nn.Conv2d(4, 4, 3), dict(rank=2.0), TypeError, "rank"),
        (nn.Conv2d(4, 4, 3), dict(rank=(2, 5), method="channel"), ValueError, "r_out=5"),
        (nn.Conv2d(4, 4, 3), dict(energy=0.0), ValueError, "energy"),
        (nn.Conv2d(4, 4, 3), dict(energy=1.5), ValueError, "energy"),
        (nn.Conv2d(4, 4, 3), dict(rank=1, inputs=torch.zeros(1, 3, 5, 5)), ValueError, "inputs"),
    ],
)
def test_bad_arguments(conv, kwargs, error, match):
    with pytest.raises(error, match=match):
        decompose(conv, **kwargs)


def test_model_under_a_flops_budget():
    torch.manual_seed(0)
    model = models.lenet5()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(16, 1, 32, 32)
    result = decompose_model(model, x, 0.5)
    assert result.flops_before == summary(model, (1, 1, 32, 32), verbose=False).flops == 833_040
    assert result.flops_after <= 0.5 * result.flops_before
    # The planned FLOPs are the measured ones: the model's, less what each layer saves.
    saved = sum(r.flops_before - r.flops_after for r in result.layers.values())
    assert result.flops_after == result.flops_before - saved
    assert set(result.layers) <= {"features.0", "features.3"} and result.layers
    for name, report in result.layers.items():
        assert isinstance(result.model.get_submodule(name), LowRankConv2d)
        assert min(report.energy if isinstance(report.energy, tuple) else (report.energy,)) >= result.energy - 1e-12
    # The original is untouched.
    assert not any(isinstance(m, LowRankConv2d) for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert result.model(x).shape == (16, 10) and "model: FLOPs 833,040" in str(result)

    # The whole budget: nothing is worth decomposing at full energy.
    assert decompose_model(model, x, 1.0).layers == {}
    channel = decompose_model(model, x, 600_000, method="channel", layers=["features.3"])
    assert list(channel.layers) == ["features.3"] and channel.flops_after <= 600_000


def test_model_budget_errors():
    model = models.lenet5()
    x = torch.randn(2, 1, 32, 32)
    with pytest.raises(ValueError, match="out of reach"):
        decompose_model(model, x, 1000)
    with pytest.raises(ValueError, match="budget"):
        decompose_model(model, x, 1.5)
    with pytest.raises(TypeError, match="budget"):
        decompose_model(model, x, "half")
    with pytest.raises(ValueError, match="layers"):
        decompose_model(model, x, 0.5, layers=["nope"])
    with pytest.raises(ValueError, match="no convolution"):
        decompose_model(nn.Sequential(nn.Conv2d(1, 2, 1)), x, 0.5)
    with pytest.raises(TypeError, match="example_input"):
        decompose_model(model, x[0], 0.5)
