"""Hardening: no memory growth over many calls, the same results from 4 threads at once, and
tensors past 2^31 elements on the CPU.

FASTCONV_SLOW_TESTS=1 adds the slow variants (every algorithm on the 2^31 case: minutes)."""

import contextlib
import os
import threading

import pytest
import torch

import fastconv
import fastconv.functional as F

ops = torch.ops.fastconv
SLOW = os.environ.get("FASTCONV_SLOW_TESTS") == "1"


needs_gpu = pytest.mark.skipif(
    not fastconv.algorithms.usable("cuda"),
    reason="needs a GPU on which fastconv's CUDA kernels are switched on",
)


def _operator_calls(device="cpu"):
    """One small call of every operator, by name: small tensors, so that leaking even one
    output per call shows in the resident memory after 10,000 calls."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 10, 10, generator=g).to(device)
    w = torch.randn(6, 2, 3, 3, generator=g).to(device)
    b = torch.randn(6, generator=g).to(device)
    y = ops.conv2d(x, w, b, [1, 1], [1, 1, 1, 1], [1, 1], 2)
    wt = torch.randn(4, 3, 3, 3, generator=g).to(device)
    yt = ops.conv_transpose2d(x, wt, b, [2, 2], [1, 1, 1, 1], [0, 0], [1, 1], 2)
    rois = torch.tensor([[0, 1.0, 1.5, 7.0, 8.0], [1, 0.0, 0.0, 9.0, 9.0], [0, 2.5, 3.0, 4.0, 6.5]], device=device)
    ra = ops.roi_align(x, rois, 1.0, 3, 3, 2, True)
    rp, argmax = ops.roi_pool(x, rois, 1.0, 3, 3)
    mask = [True, True, True]
    return {
        "conv2d": lambda: ops.conv2d(x, w, b, [1, 1], [1, 1, 1, 1], [1, 1], 2),
        "conv2d_backward": lambda: ops.conv2d_backward(y, x, w, [1, 1], [1, 1, 1, 1], [1, 1], 2, mask),
        "conv_transpose2d": lambda: ops.conv_transpose2d(x, wt, b, [2, 2], [1, 1, 1, 1], [0, 0], [1, 1], 2),
        "conv_transpose2d_backward": lambda: ops.conv_transpose2d_backward(
            yt, x, wt, [2, 2], [1, 1, 1, 1], [0, 0], [1, 1], 2, mask),
        "roi_align": lambda: ops.roi_align(x, rois, 1.0, 3, 3, 2, True),
        "roi_align_backward": lambda: ops.roi_align_backward(ra, rois, 1.0, 3, 3, 2, 4, 10, 10, 2, True),
        "roi_pool": lambda: ops.roi_pool(x, rois, 1.0, 3, 3),
        "roi_pool_backward": lambda: ops.roi_pool_backward(rp, rois, argmax, 1.0, 3, 3, 2, 4, 10, 10),
    }


@pytest.fixture
def one_thread():
    """On tiny tensors, a loaded 2-core machine spends far longer waking a second worker than
    computing; one thread keeps 10,000 calls to seconds. Leaks do not depend on it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads /proc/self/statm (Linux)")
@pytest.mark.parametrize("name", list(_operator_calls()))
def test_ten_thousand_calls_leave_resident_memory_steady(name, one_thread):
    call = _operator_calls()[name]
    for _ in range(1000):  # let the allocator reach its steady state first
        call()
    before = _resident_bytes()
    for _ in range(10_000):
        call()
    after = _resident_bytes()
    print(f"{name}: resident {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB over 10,000 calls")
    # One leaked output per call would be >= 10,000 * 300 bytes = 3 MiB or more (most outputs
    # are far larger); 2 MiB leaves room for the allocator's own bookkeeping.
    assert after - before < 2 * 2**20, f"{name}: resident memory grew {(after - before) / 2**20:.2f} MiB"


@needs_gpu
@pytest.mark.parametrize("name", list(_operator_calls()))
def test_ten_thousand_calls_leave_cuda_memory_steady(name):
    call = _operator_calls("cuda")[name]
    for _ in range(100):
        call()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(10_000):
        call()
    torch.cuda.synchronize()
    after = torch.cuda.memory_allocated()
    print(f"{name}: cuda memory_allocated {before} -> {after} bytes over 10,000 calls")
    assert after == before, f"{name}: allocated CUDA memory grew by {after - before} bytes"


def test_kernel_loops_run_on_every_torch_thread():
    """The CPU kernels' own loops are at::parallel_for, compiled into fastconv's library: a
    build without the OpenMP flag torch was built with runs every one of them on one thread."""
    probe = torch.ops.fastconv._parallel_threads
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert probe() == 2
        torch.set_num_threads(1)
        assert probe() == 1
    finally:
        torch.set_num_threads(before)


def test_four_threads_give_the_results_of_one():
    g = torch.Generator().manual_seed(1)
    jobs = []
    for i in range(16):
        x = torch.randn(2, 8, 12 + i % 3, 12, generator=g, dtype=torch.float64)
        w = torch.randn(8, 4 if i % 2 else 1, 3, 3, generator=g, dtype=torch.float64)
        groups = 2 if i % 2 else 8
        rois = torch.tensor([[0, 1.0, 1.0, 9.0, 8.0], [1, 2.0, 0.5, 6.0, 11.0]], dtype=torch.float64)
        jobs.append((x, w, groups, rois))

    assert _same_from_four_threads(jobs, _work, lambda: None)


@needs_gpu
def test_four_threads_on_their_own_cuda_streams_give_the_results_of_one():
    g = torch.Generator().manual_seed(1)
    jobs = [
        (torch.randn(2, 8, 40, 40, generator=g, dtype=torch.float64).cuda(),
         torch.randn(8, 4, 3, 3, generator=g, dtype=torch.float64).cuda(), 2,
         torch.tensor([[0, 1.0, 1.0, 9.0, 8.0], [1, 2.0, 0.5, 6.0, 11.0]], dtype=torch.float64).cuda())
        for _ in range(8)
    ]
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # so that RoI backward is bitwise reproducible
    try:
        assert _same_from_four_threads(jobs, _work, lambda: torch.cuda.Stream())
    finally:
        torch.use_deterministic_algorithms(previous)


def _work(job):
    """Forward and backward through every operator kind."""
    x, w, groups, rois = job
    x = x.clone().requires_grad_()
    w = w.clone().requires_grad_()
    y = F.conv2d(x, w, stride=1, padding=1, groups=groups)
    t = F.conv_transpose2d(y, w, stride=2, padding=1, groups=groups)
    r = F.roi_align(t, rois, 4, 0.5, 2, True).sum() + F.roi_pool(y, rois, 3, 1.0).sum()
    gx, gw = torch.autograd.grad(r + y.square().sum(), [x, w])
    return [y.detach(), t.detach(), r.detach(), gx, gw]


def _same_from_four_threads(jobs, work, make_stream) -> bool:
    """Runs the jobs one by one, then from 4 threads at once (each on the stream
    make_stream() gives it, if any), and compares bitwise."""
    expected = [work(job) for job in jobs]
    results = [None] * len(jobs)
    errors = []

    def thread_main(k):
        try:
            stream = make_stream()
            context = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
            with context:
                for i in range(k, len(jobs), 4):
                    for _ in range(3):  # repeat so the threads really overlap
                        results[i] = work(jobs[i])
                if stream is not None:
                    stream.synchronize()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=thread_main, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, (got, want) in enumerate(zip(results, expected)):
        for a, b in zip(got, want):
            assert torch.equal(a, b), f"job {i} differs when run from 4 threads"
    return True


# 46341^2 = 2,147,488,281 > 2^31: every flat index past 2^31 lands in the last rows.
BIG_SIDE = 46341


@pytest.fixture(scope="module")
def big_image():
    """A bfloat16 image of 2^31 + 4633 elements (4.3 GB), zero except its first and last rows."""
    x = torch.zeros(1, 1, BIG_SIDE, BIG_SIDE, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(2)
    x[0, 0, :4] = torch.randn(4, BIG_SIDE, generator=g).bfloat16()
    x[0, 0, -4:] = torch.randn(4, BIG_SIDE, generator=g).bfloat16()
    assert x.numel() > 2**31
    return x


def _check_big_conv(x, w, y):
    top = torch.nn.functional.conv2d(x[:, :, :5].double(), w.double(), padding=1)[:, :, :4]
    bottom = torch.nn.functional.conv2d(x[:, :, -5:].double(), w.double(), padding=(0, 1))[:, :, -3:]
    # fastconv rounds a float accumulation to bf16 once: one bf16 rounding of the exact result
    torch.testing.assert_close(y[:, :, :4].double(), top.bfloat16().double(), rtol=0, atol=0.05)
    torch.testing.assert_close(y[:, :, -4:-1].double(), bottom.bfloat16().double(), rtol=0, atol=0.05)
    # last row: padding below the image
    last = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x[:, :, -2:].double(), (1, 1, 0, 1)), w.double())
    torch.testing.assert_close(y[:, :, -1:].double(), last.bfloat16().double(), rtol=0, atol=0.05)
    assert not y[:, :, 5:-5].any()  # the zero middle stays zero: nothing wrote there by wrap-around


@pytest.mark.parametrize("algorithm", ["depthwise", "direct", "im2col_gemm"])
def test_convolution_past_two_to_the_31_elements(big_image, algorithm):
    if algorithm != "depthwise" and not SLOW:
        pytest.skip("minutes on 2 cores: FASTCONV_SLOW_TESTS=1")
    w = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(3)).bfloat16()
    with fastconv.algorithms.force(algorithm):
        y = F.conv2d(big_image, w, padding=1)
    assert y.shape == big_image.shape
    _check_big_conv(big_image, w, y)


def test_roi_align_and_pool_past_two_to_the_31_elements(big_image):
    # Boxes in the last rows read elements whose flat index is past 2^31; the same boxes on a
    # float64 copy of those rows give the reference. Coordinates are exact in float32.
    rows = 6
    offset = BIG_SIDE - rows
    crop = big_image[:, :, offset:, :].double()
    boxes = torch.tensor([[0, 100.25, 0.5, 180.0, 4.75], [0, BIG_SIDE - 90.0, 1.0, BIG_SIDE - 1.0, 5.0]])
    shifted = boxes + torch.tensor([0.0, 0.0, offset, 0.0, offset])
    for aligned in (False, True):
        got = F.roi_align(big_image, shifted, (3, 5), 1.0, 2, aligned)
        want = F.roi_align(crop, boxes.double(), (3, 5), 1.0, 2, aligned)
        torch.testing.assert_close(got.double(), want.bfloat16().double(), rtol=0, atol=0.05)
        assert want.abs().sum() > 0  # the boxes do see the random rows
    pooled = F.roi_pool(big_image, shifted, (2, 3), 1.0)
    want = F.roi_pool(crop, boxes.double(), (2, 3), 1.0)
    torch.testing.assert_close(pooled.double(), want, rtol=0, atol=0)  # a max is exact
