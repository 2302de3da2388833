"""The gate on a GPU, played on the emulated one (index -1, SM 9.0, emulated_cuda(gate=True)):
one kernel that fails its self-test stays off and the others run; the error where nothing is
left names each kernel and why; a kernel verified for the SM version runs without a
self-test. And launch failures and faults reach Python as errors naming the kernel. Needs the
emulation build (FASTCONV_SIMT=1; tools/simt_check.sh runs this file)."""

import pytest
import torch

import fastconv
import fastconv.functional as F
import fastconv.selftest as selftest
import fastconv.testing
from conftest import rel_err

ops = torch.ops.fastconv

pytestmark = pytest.mark.skipif(
    not fastconv.testing.emulation_available(),
    reason="needs the emulation build: FASTCONV_SIMT=1 pip install --no-build-isolation .",
)

EMULATED_GPU = -1


@pytest.fixture(autouse=True)
def _fresh_gate():
    """Each test starts from a GPU that nothing has been decided on, and leaves it so."""
    ops._clear_selftest_results(EMULATED_GPU)
    ops._set_verified_kernels(90, [])
    yield
    ops._clear_selftest_results(EMULATED_GPU)
    ops._set_verified_kernels(90, [])
    fastconv._verified.load()


def launched_kernels(call):
    """The kernels `call` launched on the gated emulated GPU, and its result."""
    with fastconv.testing.emulated_cuda(metrics=True, gate=True):
        fastconv.testing.emulated_launches()
        out = call()
        return [launch["kernel"] for launch in fastconv.testing.emulated_launches()], out


def failing(kernel):
    """A self-test in which `kernel` computes wrong answers: every comparison made while it is
    the forced algorithm (or, for a RoI kernel, every comparison of its variant) fails."""
    real = selftest._rel_err

    def rel_err_with_a_broken_kernel(out, ref):
        return float("inf") if ops._forced_algorithm() == kernel else real(out, ref)

    return rel_err_with_a_broken_kernel


def test_the_emulated_gpu_is_gated_like_a_real_one():
    x, w = torch.randn(1, 8, 6, 6), torch.randn(8, 8, 3, 3)
    with fastconv.testing.emulated_cuda(gate=True):
        with pytest.raises(NotImplementedError, match="python -m fastconv.selftest") as e:
            F.conv2d(x, w, padding=1)
    assert "the direct kernel passes fastconv's emulation suite but is not verified" in str(e.value)
    with fastconv.testing.emulated_cuda():  # gate off: every kernel runs
        F.conv2d(x, w, padding=1)


def test_one_failing_kernel_leaves_the_others_on(monkeypatch):
    kernels = selftest.gated_kernels(90)
    monkeypatch.setattr(selftest, "_rel_err", failing("igemm_64x64"))
    # The broken kernel's case matrix (every kernel's, unbroken, passes in
    # test_emulated_cuda.py); the other kernels' verdicts are passes.
    with fastconv.testing.emulated_cuda():
        tried = selftest.run_cases(torch.device("cpu"), ["igemm_64x64"])
    assert tried["igemm_64x64"], "the injected failure was not seen"
    verdicts = {k: [] for k in kernels}
    verdicts.update(tried)
    selftest.apply(EMULATED_GPU, verdicts)
    assert ops._selftest_result(EMULATED_GPU, "igemm_64x64") == 0
    assert ops._selftest_result(EMULATED_GPU, "direct") == 1
    # 8-byte channel runs: the 128 x 128 tile takes 16-byte ones only, so the 64 x 64 tile
    # runs this layer where it passed; it is off, and the next algorithm that takes it runs.
    x = torch.randn(2, 4, 9, 9).bfloat16().contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 4, 3, 3).bfloat16()
    args = ("fprop", x, w, (1, 1), (1, 1, 1, 1))
    with fastconv.testing.emulated_cuda(gate=True):
        after = fastconv.algorithms.chosen(*args, device="cuda")
        selftest.apply(EMULATED_GPU, {k: [] for k in kernels})
        before = fastconv.algorithms.chosen(*args, device="cuda")
        selftest.apply(EMULATED_GPU, verdicts)
    assert before == "igemm_64x64" and after not in ("igemm_64x64", "igemm_128x128"), (before, after)
    names, y = launched_kernels(lambda: F.conv2d(x, w, padding=1))
    assert names and "igemm::gather_gemm_kernel" not in names or after == "igemm_ffma_64x64", names
    assert rel_err(y, torch.nn.functional.conv2d(x.double(), w.double(), padding=1)) <= 2e-2
    # Forced, the failed kernel refuses, naming its failing case and where the record is.
    with fastconv.testing.emulated_cuda(gate=True), fastconv.algorithms.force("igemm_64x64"):
        with pytest.raises(NotImplementedError, match="failed fastconv's self-test") as e:
            F.conv2d(x, w, padding=1)
    assert "igemm_64x64: basic" in str(e.value) and selftest.cache_path() in str(e.value)
    assert "--again" in str(e.value)


def test_with_nothing_left_the_error_names_every_kernel():
    verdicts = {k: [f"{k}: basic float32 nchw forward: rel_err inf > 1e-05"] for k in selftest.gated_kernels(90)}
    selftest.apply(EMULATED_GPU, verdicts)
    x, w = torch.randn(1, 8, 6, 6), torch.randn(8, 8, 3, 3)
    with fastconv.testing.emulated_cuda(gate=True):
        with pytest.raises(NotImplementedError) as e:
            F.conv2d(x, w, padding=1)
        message = str(e.value)
        claimants = [a for a in fastconv.algorithms.names("cuda")
                     if fastconv.algorithms.can_implement(a, "fprop", x, w, (1, 1), (1, 1, 1, 1), device="cuda")]
    assert "direct" in claimants
    # Every algorithm that implements the layer, by its speed rule or not, and none other.
    for kernel in fastconv.algorithms.names("cuda"):
        named = f"the {kernel} kernel failed fastconv's self-test" in message
        assert named == (kernel in claimants), kernel
    assert selftest.cache_path() in message and "python -m fastconv.selftest --again" in message


def test_roi_variants_fall_back_to_their_plain_kernels(monkeypatch):
    verdicts = {k: [] for k in selftest.gated_kernels(90)}
    verdicts["roi_align_nhwc"] = ["roi_align_nhwc: atomic float32 forward: rel_err inf"]
    verdicts["roi_align_multilevel"] = ["roi_align_multilevel: atomic float32 forward: rel_err inf"]
    selftest.apply(EMULATED_GPU, verdicts)
    feat = torch.randn(2, 6, 10, 12)
    rois = torch.tensor([[0, 1.0, 1.0, 7.0, 8.0], [1, 2.0, 0.5, 9.0, 6.0]])
    want = ops.roi_align(feat, rois, 0.5, 3, 3, 2, True)  # the CPU kernels
    names, got = launched_kernels(
        lambda: ops.roi_align(feat.contiguous(memory_format=torch.channels_last), rois, 0.5, 3, 3, 2, True))
    assert names == ["align::forward_kernel"] and torch.allclose(got, want, atol=1e-6)
    coarse = torch.randn(2, 6, 5, 6)
    levels = torch.tensor([1, 0])
    names, _ = launched_kernels(lambda: ops.roi_align_multilevel([feat, coarse], rois, levels, [0.5, 0.25], 3, 3, 2, True))
    assert "align::forward_multilevel_kernel" not in names and names.count("align::forward_kernel") == 2
    # A failed backward has no stand-in: it refuses.
    verdicts["roi_align_backward"] = ["roi_align_backward: atomic float32 backward: rel_err inf"]
    selftest.apply(EMULATED_GPU, verdicts)
    with fastconv.testing.emulated_cuda(gate=True):
        with pytest.raises(NotImplementedError, match="roi_align_backward kernel failed"):
            ops.roi_align_backward(torch.randn(2, 6, 3, 3), rois, 0.5, 3, 3, 2, 6, 10, 12, 2, True)


def test_a_kernel_verified_for_the_sm_version_needs_no_self_test():
    ops._set_verified_kernels(90, ["direct"])
    x, w = torch.randn(1, 3, 6, 6), torch.randn(4, 3, 3, 3)
    names, _ = launched_kernels(lambda: F.conv2d(x, w, padding=1))
    assert names == ["direct::fprop_kernel"]
    assert ops._kernel_may_run("cuda", "direct", EMULATED_GPU, 90)
    assert not ops._kernel_may_run("cuda", "direct", EMULATED_GPU, 80)
    assert "sm_80" in ops._kernel_refusal("cuda", "direct", EMULATED_GPU, 80)


# ------------------------------------------------------------------ launch failures and faults


def test_probe_runs_where_the_launch_is_right():
    for fault in ("none", "large_shared"):  # large_shared: 100 KiB, opted into past 48 KiB
        out = torch.zeros(4)
        ops._launch_probe(out, fault)
        assert out[0].item() == 1.0, fault


@pytest.mark.parametrize("fault,words", [
    ("out_of_bounds", "memcheck"),
    ("block_over_bounds", "launch bounds (128)"),
    ("shared_over_limit", "227 KiB"),
])
def test_faults_reach_python_naming_the_kernel(fault, words):
    with pytest.raises(RuntimeError, match="selftest::launch_probe_kernel") as e:
        ops._launch_probe(torch.zeros(4), fault)
    assert words in str(e.value)
    out = torch.zeros(4)
    ops._launch_probe(out, "none")  # and nothing is left broken for the next launch
    assert out[0].item() == 1.0


def test_probe_refuses_an_unknown_fault():
    with pytest.raises(ValueError, match="fault must be"):
        ops._launch_probe(torch.zeros(4), "sideways")
