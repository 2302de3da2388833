"""How the benchmark measures: the machine and versions, peak rates measured at start-up
(the roofline is this machine's own), and paired timing of baseline and fastconv."""

import os
import platform
import re
import statistics
import subprocess
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

import fastconv


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def onednn_version() -> str:
    m = re.search(r"(?:oneDNN|MKL-DNN) v([\d.]+)", torch.__config__.show())
    return m.group(1) if m else "none"


def machine_info(device: str) -> Dict:
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["gpu_capability"] = f"{props.major}.{props.minor}"
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            info["driver"] = "unknown"
    return info


def versions() -> Dict:
    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "onednn": onednn_version(),
        "fastconv": fastconv.__version__,
        "fastconv_git": git_revision(),
    }
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:
        out["torchvision"] = None
    return out


class Timer:
    """Times a zero-argument callable on one device: CUDA events after an L2 flush on the GPU
    (so small layers do not run from a warm cache), the wall clock on the CPU."""

    def __init__(self, device: str):
        self.device = device
        self.flush_buffer = None
        if device == "cuda":
            l2 = torch.cuda.get_device_properties(0).L2_cache_size or (50 << 20)
            self.flush_buffer = torch.empty(2 * l2 // 4, dtype=torch.float32, device="cuda")

    def __call__(self, fn: Callable) -> float:
        """Seconds one call of fn takes."""
        if self.device == "cuda":
            self.flush_buffer.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start


class SteadyTimer:
    """Times the steady state of a callable on a shared machine: calls it over and over for at
    least `window` seconds (and twice at least) and returns the mean seconds a call took. One
    call on an oversubscribed machine is a draw of how the processes' threads happened to meet
    (measured on 2 cores: 1.3 ms or 20-32 ms for the same torch layer); a window of many calls is
    what jobs sharing the machine get."""

    device = "cpu"

    def __init__(self, window: float = 0.1):
        self.window = window

    def __call__(self, fn: Callable) -> float:
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if calls >= 2 and elapsed >= self.window:
                return elapsed / calls


def time_pair(timer: Timer, fast: Callable, base: Callable, warmup: int, repeats: int,
              before: Optional[Callable[[str, Callable], None]] = None) -> Tuple[List[float], List[float]]:
    """Times both, interleaved (alternating which goes first) so that drift, turbo and the
    other core's noise hit both alike. Returns the samples of each. `before`, where given, is
    called untimed with "fast" or "base" and that side's callable ahead of each call of it (the
    companion processes of an oversubscribed run switch to it)."""
    sides = {"fast": fast, "base": base}

    def call(side, timed):
        if before is not None:
            before(side, sides[side])
        return timer(sides[side]) if timed else sides[side]()

    for _ in range(warmup):
        call("base", False)
        call("fast", False)
    if timer.device == "cuda":
        torch.cuda.synchronize()
    fast_times, base_times = [], []
    for i in range(repeats):
        for side in (("base", "fast") if i % 2 == 0 else ("fast", "base")):
            (fast_times if side == "fast" else base_times).append(call(side, True))
    return fast_times, base_times


def cpu_team_state() -> List[int]:
    """fastconv's CPU team counters (csrc/cpu/parallel.h): team regions, contended ones, regions
    run serially (for either rule), milliseconds of serial running left, load readings that found
    the machine oversubscribed."""
    return list(torch.ops.fastconv._cpu_team_state())


def team_change(before: List[int], after: List[int]) -> Dict:
    """What the CPU team did between two cpu_team_state() readings."""
    return {"regions": after[0] - before[0], "contended": after[1] - before[1],
            "serial_regions": after[2] - before[2]}


def spread(samples: List[float]) -> float:
    """Relative noise of a set of timings: (75th - 25th percentile) / median."""
    if len(samples) < 4:
        return (max(samples) - min(samples)) / statistics.median(samples) if samples else 0.0
    q = statistics.quantiles(samples, n=4)
    return (q[2] - q[0]) / q[1] if q[1] > 0 else 0.0


def measure_peaks(device: str, dtype: torch.dtype) -> Dict:
    """The machine's own ceilings: a large matmul in the run's dtype, and a large copy."""
    timer = Timer(device)
    # Large enough to reach the machine's GEMM rate, small enough to measure in a second.
    n = 8192 if device == "cuda" else 2048
    if dtype == torch.float64 and device == "cpu":
        n = 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        torch.mm(a, b)
    matmul = min(timer(lambda: torch.mm(a, b)) for _ in range(5 if device == "cpu" else 20))
    by = "torch.mm"
    # Where fastconv runs its own float32 GEMM, MKL's torch.mm is not the machine's ceiling
    # (on AMD's AVX-512 CPUs it runs its AVX2 code): the faster of the two is.
    ops = torch.ops.fastconv
    if device == "cpu" and dtype == torch.float32 and hasattr(ops, "_cpu_sgemm_supported") \
            and ops._cpu_sgemm_supported():
        c = torch.empty(n, n)
        ops._cpu_sgemm(a, b, c, False)
        own = min(timer(lambda: ops._cpu_sgemm(a, b, c, False)) for _ in range(5))
        if own < matmul:
            matmul, by = own, "fastconv sgemm"
    elements = (256 << 20) // 4 if device == "cuda" else (64 << 20) // 4
    src = torch.randn(elements, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy = min(timer(lambda: dst.copy_(src)) for _ in range(5 if device == "cpu" else 20))
    return {
        "matmul_dtype": str(dtype).replace("torch.", ""),
        "matmul_size": n,
        "matmul_by": by,
        "matmul_tflops": 2 * n**3 / matmul / 1e12,
        "copy_gbps": 2 * src.numel() * 4 / copy / 1e9,
    }


def max_rel_error(outputs: List[torch.Tensor], references: List[torch.Tensor]) -> float:
    worst = 0.0
    for out, ref in zip(outputs, references):
        ref64 = ref.detach().double()
        denom = ref64.norm().item()
        diff = (out.detach().double() - ref64).norm().item()
        worst = max(worst, diff / denom if denom > 0 else diff)
    return worst


class PeakMemory:
    """Peak memory one call allocates beyond what exists when it starts.

    CUDA: the caching allocator's own peak counter. CPU: torch has no allocator statistics,
    so the process's resident high-water mark (VmHWM, reset through /proc/self/clear_refs)
    is read around the call. For that to follow allocations, glibc must hand every large
    block back to the kernel on free: during the measurement the mmap threshold is pinned
    at 128 KiB and free heap memory is trimmed before the call, then the threshold is set to 32 MiB and the trim threshold to 64 MiB (where glibc's own adaptive thresholds end up once
    large tensors have come and gone, so timings run under their usual conditions).
    Blocks under 128 KiB come from memory already resident and do not show, so on the CPU the
    figure is for layers with larger buffers (the ones where memory matters). Unavailable
    (None) where neither works, e.g. on a CPU other than Linux's.
    """

    _M_TRIM_THRESHOLD = -1
    _M_MMAP_THRESHOLD = -3

    def __init__(self, device: str):
        self.device = device
        self._libc = None
        if device == "cpu" and os.path.exists("/proc/self/clear_refs"):
            try:
                import ctypes

                self._libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self._libc = None

    @property
    def available(self) -> bool:
        return self.device == "cuda" or self._libc is not None

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(f"/proc/self/status has no {key}")

    def bytes(self, fn: Callable) -> "int | None":
        if self.device == "cuda":
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            out = fn()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - before
            del out
            return peak
        if self._libc is None:
            return None
        self._libc.mallopt(self._M_MMAP_THRESHOLD, 128 * 1024)
        try:
            fn()  # once, so that this threshold's steady state is what the peak is read from
            # Free heap memory stays resident, and a new block carved from it would not show:
            # hand it back first.
            self._libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident size
            before = self._status("VmRSS")
            out = fn()
            peak = self._status("VmHWM") - before
            del out
            return max(peak, 0)
        finally:
            self.settle()

    def settle(self) -> None:
        """The heap thresholds timings run under (also set before a run's first row): mmap at
        32 MiB and trim at 64 MiB. glibc's adaptive rule raises the trim threshold with the mmap
        threshold (to twice it); a threshold set by hand stops that, and the trim threshold
        stayed at 128 KiB: every freed output went back to the kernel and the next call faulted
        its pages in again (about 850 faults a call on a 6.4 MB output, 0.2 ms becoming 1-1.4 ms,
        on either side at random). These are where the adaptive rule would have them."""
        if self._libc is not None:
            self._libc.mallopt(self._M_MMAP_THRESHOLD, 32 * 1024 * 1024)
            self._libc.mallopt(self._M_TRIM_THRESHOLD, 64 * 1024 * 1024)
