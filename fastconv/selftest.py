"""fastconv's on-device self-test: the gate between an *emulated* CUDA kernel (it passes the
emulation suite in CI) and a user's GPU.

A kernel that has not yet passed bench/gpu_check.sh on real hardware runs on a GPU only
after this self-test has passed on that GPU: a small case matrix (convolutions forward and
backward in float32 and bfloat16, both layouts, strided, grouped, dilated and transposed;
RoIAlign and RoIPool forward, and backward with and without atomics), each emulated CUDA
algorithm forced in turn, every result held to a float64 reference computed on the CPU. It
takes a few seconds. The result is kept per GPU model, SM version, driver, CUDA, torch and
fastconv version in ``$FASTCONV_CACHE_DIR/selftest.json`` (default ``~/.cache/fastconv``),
so it runs once per setup; a kernel that fails stays off on that GPU, with a warning naming it.

``fastconv.functional`` runs it by itself on the first CUDA call on each GPU. By hand::

    python -m fastconv.selftest [--device cuda:1] [--again]
"""

import argparse
import datetime
import json
import os
import sys
import time
import warnings

import torch

import fastconv
from . import functional as F
from ._flags import cudnn_flags

__all__ = ["run", "ensure", "cache_path", "run_cases", "SelfTestResult"]

_ensured = set()  # GPU indices whose self-test has been run or read in this process

# TF32 keeps 10 of float32's 23 mantissa bits: about 2^-11 relative per product.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, "tf32": 2e-3, torch.bfloat16: 2e-2}

# (name, op, input shape, weight shape, keyword arguments): the shapes that break kernels
# (strides, per-side padding, groups, depthwise with a multiplier, dilation, a stride-2
# transposed layer, 1-D), small enough for a second in total.
CONV_CASES = [
    ("basic", "conv2d", (2, 8, 9, 10), (16, 8, 3, 3), dict(padding=1)),
    ("strided_padded", "conv2d", (2, 6, 11, 9), (8, 6, 5, 3), dict(stride=(2, 1), padding=(2, 0, 1, 2))),
    ("grouped_dilated", "conv2d", (1, 8, 12, 12), (12, 4, 3, 3), dict(groups=2, dilation=2, padding=2)),
    ("depthwise_multiplier", "conv2d", (2, 4, 9, 9), (8, 1, 3, 3), dict(groups=4, padding=1)),
    ("pointwise", "conv2d", (2, 32, 7, 7), (16, 32, 1, 1), {}),
    ("transposed_s2", "conv_transpose2d", (2, 8, 5, 6), (8, 4, 4, 4), dict(stride=2, padding=1)),
    ("conv1d", "conv1d", (2, 6, 17), (5, 6, 3), dict(padding=1)),
]


class SelfTestResult:
    def __init__(self, passed, failures, key, seconds, cached):
        self.passed, self.failures, self.key, self.seconds, self.cached = passed, failures, key, seconds, cached

    def __repr__(self):
        state = "passed" if self.passed else f"failed ({len(self.failures)} case(s))"
        return f"SelfTestResult({state}, {self.key!r}, {self.seconds:.1f} s{', cached' if self.cached else ''})"


def _rel_err(out, ref):
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    denom = ref.norm().item()
    diff = (out - ref).norm().item()
    return diff / denom if denom else diff


def _conv_reference(op, x, w, kw):
    """torch.nn.functional in float64 on the CPU, with per-side padding done by hand."""
    kw = dict(kw)
    pad = kw.get("padding", 0)
    x, w = x.detach().double().cpu().requires_grad_(), w.detach().double().cpu().requires_grad_()
    if isinstance(pad, tuple) and len(pad) == 4:
        kw["padding"] = 0
        y = getattr(torch.nn.functional, op)(torch.nn.functional.pad(x, (pad[2], pad[3], pad[0], pad[1])), w, **kw)
    else:
        y = getattr(torch.nn.functional, op)(x, w, **kw)
    return x, w, y


def _label(dtype):
    return dtype if isinstance(dtype, str) else str(dtype)[6:]


def _check_conv(name, op, x_shape, w_shape, kw, dtype, layout, device, gen):
    """dtype "tf32": float32 with TF32 allowed (torch.backends.cudnn.allow_tf32), held to
    TF32's accuracy; plain float32 runs with it off, held to float32's."""
    tf32 = dtype == "tf32"
    dtype = torch.float32 if tf32 else dtype
    with cudnn_flags(allow_tf32=tf32):
        return _check_conv_with(name, op, x_shape, w_shape, kw, dtype, layout, device, gen,
                                TOLERANCE["tf32"] if tf32 else TOLERANCE[dtype], _label(dtype if not tf32 else "tf32"))


def _check_conv_with(name, op, x_shape, w_shape, kw, dtype, layout, device, gen, tol, label):
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64).to(dtype)
    w = torch.randn(w_shape, generator=gen, dtype=torch.float64).to(dtype)
    xr, wr, ref = _conv_reference(op, x, w, kw)
    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref_grads = torch.autograd.grad(ref, (xr, wr), grad)
    xd, wd = x.to(device), w.to(device)
    if layout == "channels_last" and xd.dim() == 4:
        xd = xd.contiguous(memory_format=torch.channels_last)
    xd.requires_grad_()
    wd.requires_grad_()
    out = getattr(F, op)(xd, wd, **kw)
    grads = torch.autograd.grad(out, (xd, wd), grad.to(device, dtype))
    errors = [("forward", _rel_err(out, ref), tol)]
    errors += [(what, _rel_err(g, r), tol * 10) for what, g, r in zip(("input grad", "weight grad"), grads, ref_grads)]
    return [f"{name} {label} {layout} {what}: rel_err {e:.2e} > {t:.0e}" for what, e, t in errors if not e <= t]


def _check_roi(device, gen, deterministic):
    feat = torch.randn(2, 5, 12, 14, generator=gen, dtype=torch.float64)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 7.0], [1, 0.0, 2.0, 11.0, 9.5], [0, -40.0, -30.0, 500.0, 400.0],
                         [1, 5.0, 4.0, 2.0, 1.0], [0, 2.5, 0.5, 13.5, 11.0]], dtype=torch.float64)
    levels = torch.tensor([0, 1, 1, 0, 1])
    coarse = torch.randn(2, 5, 6, 7, generator=gen, dtype=torch.float64)
    failures = []
    before = torch.are_deterministic_algorithms_enabled()
    calls = (
        ("roi_align", "nchw", lambda f, r: F.roi_align(f, r, (3, 4), 0.5, 2, True)),
        # The channels_last forward kernel (threads over channels).
        ("roi_align", "channels_last",
         lambda f, r: F.roi_align(f.contiguous(memory_format=torch.channels_last), r, (3, 4), 0.5, 2, True)),
        ("roi_pool", "nchw", lambda f, r: F.roi_pool(f, r, 3, 0.5)),
        # The FPN pooler's one-launch kernel, against the CPU's level-by-level pooling.
        ("multi_level_roi_align", "nchw",
         lambda f, r: F.multi_level_roi_align([f, coarse.to(f.device, f.dtype)], r, levels.to(f.device), (3, 4),
                                              [0.5, 0.25], 2, True)),
    )
    for name, layout, call in calls:
        for dtype in (torch.float32, torch.float64):
            ref_in = feat.to(dtype).requires_grad_()
            ref = call(ref_in, rois.to(dtype))  # fastconv's verified CPU kernels
            grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64).to(dtype)
            ref_grad = torch.autograd.grad(ref, ref_in, grad)[0]
            f = feat.to(device, dtype).requires_grad_()
            torch.use_deterministic_algorithms(deterministic)
            try:
                out = call(f, rois.to(device, dtype))
                g = torch.autograd.grad(out, f, grad.to(device))[0]
            finally:
                torch.use_deterministic_algorithms(before)
            mode = "deterministic" if deterministic else "atomic"
            for what, got, want in (("forward", out, ref), (f"{mode} backward", g, ref_grad)):
                e = _rel_err(got, want)
                if not e <= TOLERANCE[dtype]:
                    failures.append(f"{name} {layout} {str(dtype)[6:]} {what}: rel_err {e:.2e}")
    return failures


def run_cases(device, algorithms):
    """Runs the case matrix on `device` with each algorithm forced in turn; returns the
    failures as lines naming the algorithm and the case (empty when everything passed)."""
    # fastconv.functional starts the self-test from wherever its first CUDA call is made: the
    # cases need gradients and their own dtypes, not the caller's no_grad, inference_mode or
    # autocast, under which they would fail and switch the kernels off on that GPU.
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast("cuda", enabled=False), \
            torch.autocast("cpu", enabled=False):
        return _run_cases(device, algorithms)


def _run_cases(device, algorithms):
    gen = torch.Generator().manual_seed(20261129)
    failures = []
    for algorithm in algorithms:
        # A case the algorithm does not implement (its dtype, layout or alignment) is the
        # library's own refusal, not a failure; but each algorithm must run some case.
        refusal, ran = f"the forced algorithm '{algorithm}' cannot run", 0
        with fastconv.algorithms.force(algorithm):
            for name, op, xs, ws, kw in CONV_CASES:
                for dtype in (torch.float32, "tf32", torch.bfloat16):
                    for layout in ("nchw", "channels_last"):
                        try:
                            found = _check_conv(name, op, xs, ws, kw, dtype, layout, device, gen)
                            ran += 1
                        except NotImplementedError as e:
                            found = [] if refusal in str(e) else [f"{name} {_label(dtype)} {layout}: NotImplementedError: {e}"]
                        except Exception as e:  # a kernel that cannot run is a failure too
                            found = [f"{name} {_label(dtype)} {layout}: {type(e).__name__}: {e}"]
                        failures += [f"{algorithm}: {line}" for line in found]
        if not ran and not any(line.startswith(f"{algorithm}:") for line in failures):
            failures.append(f"{algorithm}: implements none of the self-test's cases")
    for deterministic in (False, True):
        try:
            failures += [f"RoI kernels: {line}" for line in _check_roi(device, gen, deterministic)]
        except Exception as e:
            failures.append(f"RoI kernels: {type(e).__name__}: {e}")
    return failures


def cache_path():
    base = os.environ.get("FASTCONV_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fastconv")
    return os.path.join(base, "selftest.json")


def _key(index):
    p = torch.cuda.get_device_properties(index)
    driver = getattr(torch._C, "_cuda_getDriverVersion", lambda: "?")()
    return (f"{p.name} | sm_{p.major}{p.minor} | driver {driver} | CUDA {torch.version.cuda} | "
            f"torch {torch.__version__} | fastconv {fastconv.__version__}")


def _load_cache():
    try:
        with open(cache_path()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _save_cache(cache):
    path = cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + f".{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(cache, f, indent=1)
        os.replace(tmp, path)
    except OSError as e:  # a read-only home still gets the result for this process
        warnings.warn(f"fastconv.selftest: could not write {path}: {e}")


def run(device=None, again=False):
    """Runs the self-test on a GPU (default: the current one), or takes its cached result;
    records the outcome for the dispatcher and returns a SelfTestResult."""
    if not torch.cuda.is_available() or not fastconv.algorithms.names("cuda"):
        raise RuntimeError("fastconv.selftest: needs a GPU and a build with fastconv's CUDA kernels")
    device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"fastconv.selftest.run: device must be a CUDA device, got {device}")
    index = device.index if device.index is not None else torch.cuda.current_device()
    _ensured.add(index)  # the cases below call fastconv.functional, which must not start another run
    key = _key(index)
    cache = _load_cache()
    if not again and key in cache:
        entry = cache[key]
        torch.ops.fastconv._set_selftest_result(index, bool(entry["passed"]))
        return SelfTestResult(bool(entry["passed"]), entry.get("failures", []), key, 0.0, True)
    names = fastconv.algorithms.names("cuda")
    states = torch.ops.fastconv._algorithm_states("cuda")
    emulated = [n for n, s in zip(names, states) if s == "emulated"]
    start = time.perf_counter()
    torch.ops.fastconv._set_selftest_trial(True)
    try:
        with torch.cuda.device(index):
            failures = run_cases(torch.device("cuda", index), emulated)
            torch.cuda.synchronize()
    finally:
        torch.ops.fastconv._set_selftest_trial(False)
    seconds = time.perf_counter() - start
    passed = not failures
    torch.ops.fastconv._set_selftest_result(index, passed)
    cache[key] = {"passed": passed, "failures": failures, "date": datetime.datetime.now().isoformat(timespec="seconds"),
                  "seconds": round(seconds, 2), "algorithms": emulated}
    _save_cache(cache)
    if not passed:
        warnings.warn("fastconv: the self-test failed on " + key + "; its emulated kernels stay off there:\n  "
                      + "\n  ".join(failures[:20]))
    return SelfTestResult(passed, failures, key, seconds, False)


def ensure(device):
    """Runs (or reads) the self-test the first time a CUDA device is used; a no-op after,
    and for every other device. fastconv.functional calls it."""
    if device.type != "cuda":
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index in _ensured:
        return
    _ensured.add(index)
    if torch.ops.fastconv._selftest_result(index) == -1 and os.environ.get("FASTCONV_ALLOW_UNVERIFIED_KERNELS") != "1":
        run(torch.device("cuda", index))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastconv.selftest", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", help="the CUDA device (default: the current one)")
    p.add_argument("--again", action="store_true", help="run even when a result is cached")
    args = p.parse_args(argv)
    try:
        result = run(args.device, again=args.again)
    except (RuntimeError, ValueError) as e:
        print(e, file=sys.stderr)
        return 2
    print(result)
    for line in result.failures:
        print("  " + line)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
