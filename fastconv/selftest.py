"""fastconv's on-device self-test: the gate between an *emulated* CUDA kernel (it passes the
emulation suite in CI) and a user's GPU, one kernel at a time.

A kernel that is not verified for the GPU's architecture (fastconv/verified/, from a
bench/gpu_check.sh run on real hardware) runs on a GPU only after this self-test has passed
it there: a small case matrix (convolutions forward and backward in float32, TF32 and
bfloat16, both layouts, strided, grouped, dilated, transposed and 1-D, each convolution
algorithm forced in turn; RoIAlign on both layouts, the FPN pooler and RoIPool, forward and
backward with and without atomics), every result held to a float64 reference computed on the
CPU. It takes a few seconds. Each kernel gets its own verdict: one that fails stays off on
that GPU, with a warning naming it and its failing cases, and the others run. The verdicts
are kept per GPU model, SM version, driver, CUDA, torch and fastconv build (a hash of the
built library, so a rebuild tests again) in ``$FASTCONV_CACHE_DIR/selftest.json`` (default
``~/.cache/fastconv``), so it runs once per setup.

``fastconv.functional`` runs it by itself on the first CUDA call on each GPU. By hand::

    python -m fastconv.selftest [--device cuda:1] [--again]

This module sits below ``fastconv.functional`` (which calls ensure()): it reaches the kernels
through the operators themselves.
"""

import argparse
import datetime
import hashlib
import json
import os
import sys
import time
import warnings

import torch

from . import _C, _ops  # noqa: F401  (the operators, and their autograd)
from . import _verified
from ._flags import cudnn_flags

__all__ = ["run", "ensure", "cache_path", "run_cases", "gated_kernels", "apply", "SelfTestResult"]

ops = torch.ops.fastconv

_ensured = set()  # GPU indices whose self-test has been run or read in this process

# TF32 keeps 10 of float32's 23 mantissa bits: about 2^-11 relative per product.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, "tf32": 2e-3, torch.bfloat16: 2e-2}

# (name, op, input shape, weight shape, keyword arguments as torch.nn.functional takes them):
# the shapes that break kernels (strides, per-side padding, groups, depthwise with a
# multiplier, dilation, a stride-2 transposed layer, 1-D), small enough for a second in total.
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
    """kernels: each tried kernel's failing cases (an empty list: it passed)."""

    def __init__(self, kernels, key, seconds, cached):
        self.kernels, self.key, self.seconds, self.cached = kernels, key, seconds, cached

    @property
    def passed(self):
        return not any(self.kernels.values())

    @property
    def failed(self):
        return sorted(k for k, lines in self.kernels.items() if lines)

    @property
    def failures(self):
        return [line for k in sorted(self.kernels) for line in self.kernels[k]]

    def __repr__(self):
        state = "passed" if self.passed else f"failed: {', '.join(self.failed)}"
        return (f"SelfTestResult({len(self.kernels)} kernel(s) {state}, {self.key!r}, "
                f"{self.seconds:.1f} s{', cached' if self.cached else ''})")


def _rel_err(out, ref):
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    denom = ref.norm().item()
    diff = (out - ref).norm().item()
    return diff / denom if denom else diff


def _pair(v, n=2):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _sides(padding):
    """torch.nn.functional's padding (an int, or one value per dimension), or fastconv's per-side
    (top, bottom, left, right), as the operators' per-side list."""
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        return list(padding)
    ph, pw = _pair(padding)
    return [ph, ph, pw, pw]


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


def _fastconv_conv(op, x, w, kw):
    """The case through fastconv's operators (autograd included), as fastconv.functional would
    call them."""
    stride, dilation, groups = kw.get("stride", 1), kw.get("dilation", 1), kw.get("groups", 1)
    if op == "conv1d":  # a 2-D convolution over rows of height 1
        p = kw.get("padding", 0)
        y = ops.conv2d(x.unsqueeze(2), w.unsqueeze(2), None, [1, stride], [0, 0, p, p], [1, dilation], groups)
        return y.squeeze(2)
    if op == "conv_transpose2d":
        return ops.conv_transpose2d(x, w, None, list(_pair(stride)), _sides(kw.get("padding", 0)),
                                    list(_pair(kw.get("output_padding", 0))), list(_pair(dilation)), groups)
    return ops.conv2d(x, w, None, list(_pair(stride)), _sides(kw.get("padding", 0)), list(_pair(dilation)), groups)


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


# How a forced algorithm's refusal of a pass begins (common/algorithms.cpp): not a failure.
_REFUSAL = "the forced algorithm '"


def _check_conv_with(name, op, x_shape, w_shape, kw, dtype, layout, device, gen, tol, label):
    """The case's failing lines, and how many of its three passes (forward, input grad, weight
    grad) ran. Each pass runs alone (only the operand it differentiates requires grad), so that
    an algorithm without one direction (the Hopper tiles have no wgrad) is held to the others;
    a forced algorithm's refusal of a pass is not a failure."""
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64).to(dtype)
    w = torch.randn(w_shape, generator=gen, dtype=torch.float64).to(dtype)
    xr, wr, ref = _conv_reference(op, x, w, kw)
    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref_grads = torch.autograd.grad(ref, (xr, wr), grad)
    xd, wd = x.to(device), w.to(device)
    if layout == "channels_last" and xd.dim() == 4:
        xd = xd.contiguous(memory_format=torch.channels_last)
    failures, ran = [], 0
    for what, x_grad, w_grad, want, t in (("forward", False, False, ref, tol),
                                          ("input grad", True, False, ref_grads[0], tol * 10),
                                          ("weight grad", False, True, ref_grads[1], tol * 10)):
        xi, wi = xd.detach().requires_grad_(x_grad), wd.detach().requires_grad_(w_grad)
        try:
            out = _fastconv_conv(op, xi, wi, kw)
            got = out if what == "forward" else torch.autograd.grad(out, xi if x_grad else wi, grad.to(device, dtype))[0]
        except NotImplementedError as e:
            if _REFUSAL not in str(e):
                raise
            continue
        ran += 1
        e = _rel_err(got, want)
        if not e <= t:
            failures.append(f"{name} {label} {layout} {what}: rel_err {e:.2e} > {t:.0e}")
    return failures, ran


class _Forced:
    """fastconv.algorithms.force, without importing it (fastconv.algorithms sits above this)."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.previous = ops._forced_algorithm()
        ops._set_forced_algorithm(self.name)

    def __exit__(self, *exc):
        ops._set_forced_algorithm(self.previous)


def _conv_verdict(algorithm, device, gen):
    """The failing cases of one convolution algorithm, forced over the case matrix."""
    # A pass the algorithm does not implement (its direction, dtype, layout or alignment) is
    # the library's own refusal, not a failure; but each algorithm must run some pass.
    ran, failures = 0, []
    with _Forced(algorithm):
        for name, op, xs, ws, kw in CONV_CASES:
            for dtype in (torch.float32, "tf32", torch.bfloat16):
                for layout in ("nchw", "channels_last"):
                    try:
                        lines, passes = _check_conv(name, op, xs, ws, kw, dtype, layout, device, gen)
                        failures += lines
                        ran += passes
                    except Exception as e:  # a kernel that cannot run is a failure too
                        failures.append(f"{name} {_label(dtype)} {layout}: {type(e).__name__}: {e}")
    if not ran and not failures:
        failures.append("implements none of the self-test's cases")
    return failures


def _roi_verdicts(device, gen, kernels):
    """Each RoI kernel's failing cases (only those in `kernels` are reported). The reference is
    fastconv's CPU kernels (verified), on the same inputs in the same dtype."""
    feat = torch.randn(2, 5, 12, 14, generator=gen, dtype=torch.float64)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 7.0], [1, 0.0, 2.0, 11.0, 9.5], [0, -40.0, -30.0, 500.0, 400.0],
                         [1, 5.0, 4.0, 2.0, 1.0], [0, 2.5, 0.5, 13.5, 11.0]], dtype=torch.float64)
    levels = torch.tensor([0, 1, 1, 0, 1])
    coarse = torch.randn(2, 5, 6, 7, generator=gen, dtype=torch.float64)
    # (forward kernel, backward kernel family, call): the backward of every call is the
    # roi_align or roi_pool backward operator.
    calls = (
        ("roi_align", "roi_align_backward", lambda f, r: ops.roi_align(f, r, 0.5, 3, 4, 2, True)),
        ("roi_align_nhwc", "roi_align_backward",
         lambda f, r: ops.roi_align(f.contiguous(memory_format=torch.channels_last), r, 0.5, 3, 4, 2, True)),
        ("roi_pool", "roi_pool_backward", lambda f, r: ops.roi_pool(f, r, 0.5, 3, 3)[0]),
        ("roi_align_multilevel", "roi_align_backward",
         lambda f, r: ops.roi_align_multilevel([f, coarse.to(f.device, f.dtype)], r, levels.to(f.device), [0.5, 0.25],
                                               3, 4, 2, True)),
    )
    verdicts = {k: [] for k in kernels}
    before = torch.are_deterministic_algorithms_enabled()
    for deterministic in (False, True):
        for forward, backward, call in calls:
            backward = backward + ("_deterministic" if deterministic else "")
            for dtype in (torch.float32, torch.float64):
                what = f"{'deterministic' if deterministic else 'atomic'} {str(dtype)[6:]}"
                try:
                    ref_in = feat.to(dtype).requires_grad_()
                    ref = call(ref_in, rois.to(dtype))
                    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64).to(dtype)
                    ref_grad = torch.autograd.grad(ref, ref_in, grad)[0]
                    f = feat.to(device, dtype).requires_grad_()
                    torch.use_deterministic_algorithms(deterministic)
                    try:
                        out = call(f, rois.to(device, dtype))
                        g = torch.autograd.grad(out, f, grad.to(device))[0]
                    finally:
                        torch.use_deterministic_algorithms(before)
                except Exception as e:
                    # Which kernel raised is not known: both are charged, as both did not pass.
                    for k in (forward, backward):
                        if k in verdicts:
                            verdicts[k].append(f"{forward} {what}: {type(e).__name__}: {e}")
                    continue
                for kernel, got, want in ((forward, out, ref), (backward, g, ref_grad)):
                    e = _rel_err(got, want)
                    if kernel in verdicts and not e <= TOLERANCE[dtype]:
                        verdicts[kernel].append(f"{forward} {what} {'forward' if kernel == forward else 'backward'}: "
                                                f"rel_err {e:.2e}")
    return verdicts


def run_cases(device, kernels):
    """Runs the case matrix on `device` for each kernel named (convolution algorithms of the
    CUDA list and RoI kernels, as the gate names them); returns {kernel: its failing cases},
    an empty list where it passed. An unknown name fails with the reason."""
    # fastconv.functional starts the self-test from wherever its first CUDA call is made: the
    # cases need gradients and their own dtypes, not the caller's no_grad, inference_mode or
    # autocast, under which they would fail and switch the kernels off on that GPU.
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast("cuda", enabled=False), \
            torch.autocast("cpu", enabled=False):
        return _run_cases(device, kernels)


def _run_cases(device, kernels):
    gen = torch.Generator().manual_seed(20261129)
    algorithms = set(ops._algorithm_names("cuda"))
    roi = set(ops._roi_kernel_names())
    verdicts = {}
    for kernel in kernels:
        if kernel in algorithms:
            verdicts[kernel] = _conv_verdict(kernel, device, gen)
        elif kernel not in roi:
            verdicts[kernel] = [f"no CUDA kernel of that name in this build"]
    wanted = [k for k in kernels if k in roi]
    if wanted:
        verdicts.update(_roi_verdicts(device, gen, wanted))
    return {k: [f"{k}: {line}" for line in verdicts[k]] for k in kernels}


def gated_kernels(compute_capability):
    """The CUDA kernels that the self-test decides on for a GPU of this SM version: the emulated
    ones that the committed record does not list as verified there."""
    names = list(ops._algorithm_names("cuda"))
    if not names:
        return []
    verified = set(_verified.verified_kernels(compute_capability))
    states = dict(zip(names, ops._algorithm_states("cuda")))
    kernels = [n for n in names if states[n] == "emulated" and n not in verified]
    if ops._roi_kernel_state("cuda") == "emulated":
        kernels += [k for k in ops._roi_kernel_names() if k not in verified]
    return kernels


def apply(index, kernels):
    """Hands a GPU's verdicts ({kernel: failing cases}) to the gate, replacing any before."""
    ops._clear_selftest_results(index)
    ops._set_selftest_record(cache_path())
    for kernel, lines in kernels.items():
        summary = "; ".join(lines[:3]) + (f"; and {len(lines) - 3} more" if len(lines) > 3 else "")
        ops._set_selftest_result(index, kernel, not lines, summary)


def cache_path():
    base = os.environ.get("FASTCONV_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fastconv")
    return os.path.join(base, "selftest.json")


_build = []


def build_identity():
    """A hash of the built library: it changes with any rebuild of different code, also where
    an editable install keeps fastconv's version while the sources move."""
    if not _build:
        h = hashlib.blake2b(digest_size=8)
        with open(_C.__file__, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _build.append(h.hexdigest())
    return _build[0]


def _key(index):
    p = torch.cuda.get_device_properties(index)
    driver = getattr(torch._C, "_cuda_getDriverVersion", lambda: "?")()
    return (f"{p.name} | sm_{p.major}{p.minor} | driver {driver} | CUDA {torch.version.cuda} | "
            f"torch {torch.__version__} | fastconv build {build_identity()}")


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
    """Runs the self-test on a GPU (default: the current one), or takes its cached verdicts;
    hands them to the gate and returns a SelfTestResult."""
    if not torch.cuda.is_available() or not ops._algorithm_names("cuda"):
        raise RuntimeError("fastconv.selftest: needs a GPU and a build with fastconv's CUDA kernels")
    device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"fastconv.selftest.run: device must be a CUDA device, got {device}")
    index = device.index if device.index is not None else torch.cuda.current_device()
    _ensured.add(index)  # the cases below call the operators, which must not start another run
    key = _key(index)
    p = torch.cuda.get_device_properties(index)
    kernels = gated_kernels(p.major * 10 + p.minor)
    cache = _load_cache()
    entry = cache.get(key)
    if not again and entry and set(entry.get("kernels", {})) == set(kernels):
        verdicts = {k: list(v) for k, v in entry["kernels"].items()}
        apply(index, verdicts)
        return SelfTestResult(verdicts, key, 0.0, True)
    start = time.perf_counter()
    ops._set_selftest_trial(True)
    try:
        with torch.cuda.device(index):
            verdicts = run_cases(torch.device("cuda", index), kernels)
            torch.cuda.synchronize()
    finally:
        ops._set_selftest_trial(False)
    seconds = time.perf_counter() - start
    apply(index, verdicts)
    cache[key] = {"kernels": verdicts, "date": datetime.datetime.now().isoformat(timespec="seconds"),
                  "seconds": round(seconds, 2)}
    _save_cache(cache)
    result = SelfTestResult(verdicts, key, seconds, False)
    if not result.passed:
        lines = [line for k in result.failed for line in verdicts[k][:3]]
        warnings.warn(f"fastconv: the self-test failed {', '.join(result.failed)} on {key}; those kernels stay off "
                      f"there and the others run (record: {cache_path()}):\n  " + "\n  ".join(lines))
    return result


def ensure(device):
    """Runs (or reads) the self-test the first time a CUDA device is used; a no-op after,
    and for every other device. fastconv.functional calls it."""
    if device.type != "cuda":
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index in _ensured:
        return
    _ensured.add(index)
    if os.environ.get("FASTCONV_ALLOW_UNVERIFIED_KERNELS") != "1":
        run(torch.device("cuda", index))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastconv.selftest", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", help="the CUDA device (default: the current one)")
    p.add_argument("--again", action="store_true", help="run even when a result is cached")
    p.add_argument("--json", help="also write the verdicts to this file")
    args = p.parse_args(argv)
    try:
        result = run(args.device, again=args.again)
    except (RuntimeError, ValueError) as e:
        print(e, file=sys.stderr)
        return 2
    print(result)
    for kernel in sorted(result.kernels):
        lines = result.kernels[kernel]
        print(f"  {kernel}: {'passed' if not lines else f'FAILED ({len(lines)} case(s))'}")
        for line in lines[:10]:
            print("    " + line)
    if args.json:
        # With what the GPU check's record needs: the SM version, and the sources this build is of.
        index = torch.device(args.device).index if args.device else torch.cuda.current_device()
        p = torch.cuda.get_device_properties(index if index is not None else torch.cuda.current_device())
        every = list(ops._algorithm_names("cuda")) + list(ops._roi_kernel_names())
        with open(args.json, "w") as f:
            json.dump({"key": result.key, "seconds": round(result.seconds, 2), "compute_capability": p.major * 10 + p.minor,
                       "sources": _verified.source_digests(), "all_kernels": every, "kernels": result.kernels}, f, indent=1)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
