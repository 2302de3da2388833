"""Frozen filters (fastconv.freeze_filters, common/filter_cache.h): what a kernel derives
from a frozen filter is kept between calls, and used only while the filter is unchanged."""

import gc

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import fastconv
import fastconv.functional as F


@pytest.fixture(autouse=True)
def thawed():
    fastconv.thaw_filters()
    yield
    fastconv.thaw_filters()


def state():
    return fastconv.frozen_filter_state()


def counts():
    s = state()
    return s["hits"], s["misses"]


# (algorithm, layout, conv kwargs, filter shape): each kernel that keeps something, in the
# layout where it does.
KEEPERS = [
    ("winograd_4x4", torch.contiguous_format, {"padding": 1}, (24, 16, 3, 3)),
    ("winograd_2x2", torch.channels_last, {"padding": 1}, (24, 16, 3, 3)),
    ("winograd_2x2", torch.contiguous_format, {"padding": 2, "dilation": 2, "groups": 2}, (24, 8, 3, 3)),
    ("im2col_gemm", torch.channels_last, {"padding": 2, "stride": 2}, (24, 16, 5, 5)),
    ("gemm_1x1", torch.channels_last, {"groups": 2}, (24, 8, 1, 1)),
]


@pytest.mark.parametrize("algorithm,layout,kw,shape", KEEPERS,
                         ids=[f"{a}-{'nhwc' if l is torch.channels_last else 'nchw'}-{i}"
                              for i, (a, l, _, _) in enumerate(KEEPERS)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_a_frozen_filter_gives_the_unfrozen_result_and_is_kept(algorithm, layout, kw, shape, dtype):
    x = torch.randn(2, 16, 13, 15, dtype=dtype).contiguous(memory_format=layout)
    w = torch.randn(shape, dtype=dtype)
    b = torch.randn(shape[0], dtype=dtype)
    with fastconv.algorithms.force(algorithm):
        plain = F.conv2d(x, w, b, **kw)
        fastconv.freeze_filters(w)
        hits, misses = counts()
        first = F.conv2d(x, w, b, **kw)
        assert counts() == (hits, misses + 1)
        assert state()["kept"] == 1 and state()["bytes"] > 0
        second = F.conv2d(x, w, b, **kw)
        assert counts() == (hits + 1, misses + 1)
    assert torch.equal(first, plain) and torch.equal(second, plain)


def test_the_transposed_convolution_keeps_its_flipped_transform():
    """conv_transpose2d's forward is Winograd's dgrad, whose transform (the flipped filter) is
    kept apart from fprop's on the same filter."""
    x = torch.randn(2, 16, 12, 12, dtype=torch.float64)
    w = torch.randn(16, 24, 3, 3, dtype=torch.float64)  # [in, out, r, s]
    with fastconv.algorithms.force("winograd_2x2"):
        fastconv.freeze_filters(w)
        for _ in range(2):
            y = F.conv_transpose2d(x, w, padding=1)
            torch.testing.assert_close(y, TF.conv_transpose2d(x, w, padding=1))
        z = F.conv2d(torch.randn(2, 24, 12, 12, dtype=torch.float64), w, padding=1)
    assert state()["kept"] == 2
    assert z.shape == (2, 16, 12, 12)


def test_an_in_place_write_is_seen():
    x = torch.randn(2, 16, 12, 12)
    w = torch.randn(24, 16, 3, 3)
    with fastconv.algorithms.force("winograd_4x4"):
        fastconv.freeze_filters(w)
        F.conv2d(x, w, padding=1)
        with torch.no_grad():
            w.mul_(-2.0)
        _, misses = counts()
        after = F.conv2d(x, w, padding=1)
        assert counts()[1] == misses + 1
        assert torch.equal(after, F.conv2d(x, w.clone(), padding=1))
        # A new storage (set_) is seen too, by its data pointer.
        with torch.no_grad():
            w.set_(torch.randn(24, 16, 3, 3))
        assert torch.equal(F.conv2d(x, w, padding=1), F.conv2d(x, w.clone(), padding=1))


def test_a_write_through_data_needs_a_thaw():
    """w.data has a version counter of its own, so the kept transform cannot see the write:
    thawing drops it."""
    x = torch.randn(2, 16, 12, 12)
    w = torch.randn(24, 16, 3, 3)
    with fastconv.algorithms.force("winograd_4x4"):
        fastconv.freeze_filters(w)
        F.conv2d(x, w, padding=1)
        w.data.mul_(3.0)
        fastconv.thaw_filters(w)
        assert state()["filters"] == 0
        assert torch.equal(F.conv2d(x, w, padding=1), F.conv2d(x, w.clone(), padding=1))


def test_an_infinite_entry_written_in_place_turns_winograd_away():
    """Whether the filter is finite is remembered while it is unchanged; a written inf is
    read again, and the automatic choice then leaves Winograd, as torch's result needs."""
    x = torch.randn(2, 64, 28, 28)
    w = torch.randn(64, 64, 3, 3)
    fastconv.freeze_filters(w)
    assert fastconv.algorithms.chosen("fprop", x, w, padding=(1, 1, 1, 1)).startswith("winograd")
    F.conv2d(x, w, padding=1)
    with torch.no_grad():
        w[3, 5, 1, 1] = float("inf")
    y = F.conv2d(x, w, padding=1)
    ref = TF.conv2d(x, w, padding=1)
    assert torch.equal(y.isnan(), ref.isnan()) and torch.equal(y.isinf(), ref.isinf())
    finite = ref.isfinite()
    torch.testing.assert_close(y[finite], ref[finite], rtol=1e-4, atol=1e-3)


def test_a_dead_filter_is_forgotten_and_its_address_not_mistaken():
    x = torch.randn(2, 16, 12, 12)
    with fastconv.algorithms.force("winograd_4x4"):
        w = torch.randn(24, 16, 3, 3)
        fastconv.freeze_filters(w)
        F.conv2d(x, w, padding=1)
        assert state()["filters"] == 1
        del w
        gc.collect()
        assert state() | {"hits": 0, "misses": 0} == {"filters": 0, "kept": 0, "bytes": 0, "hits": 0, "misses": 0}
        # New filters, maybe at the dead one's address, are not frozen.
        for _ in range(4):
            v = torch.randn(24, 16, 3, 3)
            hits, misses = counts()
            assert torch.equal(F.conv2d(x, v, padding=1), F.conv2d(x, v.clone(), padding=1))
            assert counts() == (hits, misses)


def test_inference_tensors_are_refused_naming_why():
    with torch.inference_mode():
        w = torch.randn(8, 4, 3, 3)
    with pytest.raises(ValueError, match="inference tensor"):
        fastconv.freeze_filters(w)
    with pytest.raises(TypeError, match="target"):
        fastconv.freeze_filters([w])


def test_freeze_filters_names_a_modules_convolutions():
    model = nn.Sequential(fastconv.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 1),
                          nn.Sequential(fastconv.ConvTranspose2d(8, 4, 3)), nn.Linear(4, 4))
    assert fastconv.freeze_filters(model) == ["0", "2", "3.0"]
    assert state()["filters"] == 3
    fastconv.thaw_filters(model[3])
    assert state()["filters"] == 2


def test_fuse_freezes_its_copys_filters_only():
    model = nn.Sequential(fastconv.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                          fastconv.Conv2d(64, 64, 3, padding=1)).eval()
    with torch.no_grad():
        model[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 64, 28, 28)  # Winograd's by the automatic choice
    plain = fastconv.fuse(model, freeze=False)
    assert state()["filters"] == 0
    fused, report = fastconv.fuse(model, report=True)
    assert report.frozen == ["0", "3"] and not report.not_frozen
    assert "froze the filters of 2" in str(report)
    with torch.no_grad():
        hits, _ = counts()
        for _ in range(2):
            assert torch.equal(fused(x), plain(x))
        assert counts()[0] > hits
    with torch.inference_mode():
        frozen_in_inference = fastconv.fuse(fastconv.Conv2d(4, 4, 3).eval(), report=True)[1]
    assert frozen_in_inference.not_frozen and "inference" in str(frozen_in_inference)
