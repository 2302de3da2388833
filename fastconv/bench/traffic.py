"""fastconv-bench traffic: each CUDA kernel's memory traffic, read off the emulator's address
traces (needs the emulation build, FASTCONV_SIMT=1), per launch:

- sectors per request: the 32-byte sectors a warp-wide global load (store) touches; 4 is a
  fully coalesced warp of floats, 32 a warp whose lanes each touch a sector of their own;
- distinct bytes: 32 x the distinct sectors the launch touched, against the problem's minimum
  bytes (every operand read or written once, ConvProblem::min_bytes): what the caches would
  have to hold for the kernel to reach its floor;
- shared-memory bank conflicts per request (extra wavefronts).

These are the GPU-free performance checks of a kernel. The emulator runs every thread, so a
seed-suite layer is emulated at a reduced size (batch 1, fewer channels, a smaller image:
`scaled`); the access pattern across a warp, which these figures measure, does not depend on
those sizes. A --layer given by hand runs at its own size.

    fastconv-bench traffic                      # the seed suite's convolutions, fprop
    fastconv-bench traffic --group depthwise --direction all --layout nhwc --json t.json
    fastconv-bench traffic --layer N=1,C=16,H=12,W=12,K=32,R=3,pad=1
"""

import argparse
import dataclasses
import datetime
import json
import math
import sys

import torch

import fastconv
import fastconv.testing
from fastconv import functional as F

from . import suites

DIRECTIONS = ("fprop", "dgrad", "wgrad", "all")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def _macs(case):
    return case.flops(case.batch(1), "fprop") / 2


def scaled(case, budget):
    """The case at a size the emulator runs in about a second: batch 1; at most 64 output
    channels (so a channels-last warp still spans 32 of them) and 16 input channels per group,
    groups kept; then the rows halved, and only then the columns (so an NCHW warp still spans
    a row), until the direct kernel's multiply-adds are within budget or the kernel no longer
    fits."""
    g = case.groups
    c = dataclasses.replace(case, N=1, K=g * min(case.K // g, max(1, 64 // g)), C=g * min(case.C // g, 16))
    for axis in (0, 1):
        while _macs(c) > budget and not (axis == 0 and c.one_d):
            size = (c.H, c.W)[axis]
            smaller = max(size // 2, _extent(c, axis))
            if smaller == size:
                break
            c = dataclasses.replace(c, **{("H", "W")[axis]: smaller})
    return c


def _extent(case, axis):
    """The smallest input size along an axis that still gives an output."""
    kernel = (case.R, case.S)[axis]
    dilation, stride, padding = case.dilation[axis], case.stride[axis], case.padding[axis]
    if case.transposed:
        return 1
    return max(1, dilation * (kernel - 1) + 1 - 2 * padding, stride)


def _run_direction(case, direction, x, w):
    """Runs one pass of the case's operator (as fastconv-bench names them: fprop is the
    operator's forward, dgrad its input gradient, wgrad its weight gradient) or all three;
    returns the launches of the passes asked for."""
    op = getattr(F, case.op)
    kw = case._kwargs()
    if direction == "fprop":
        op(x, w, **kw)
        return fastconv.testing.emulated_launches()
    need_x, need_w = {"dgrad": (True, False), "wgrad": (False, True), "all": (True, True)}[direction]
    xg, wg = x.clone().requires_grad_(need_x), w.clone().requires_grad_(need_w)
    out = op(xg, wg, **kw)
    forward = fastconv.testing.emulated_launches()
    torch.autograd.grad(out, [t for t in (xg, wg) if t.requires_grad], torch.ones_like(out))
    backward = fastconv.testing.emulated_launches()
    return forward + backward if direction == "all" else backward


def measure(case, direction, dtype, layout, algorithm, generator):
    x, w, _ = case.make(case.batch(1), "cpu", dtype, layout, generator)
    with fastconv.testing.emulated_cuda(metrics=True), fastconv.algorithms.force(algorithm):
        fastconv.testing.emulated_launches()  # start clean
        launches = _run_direction(case, direction, x, w)
    element = torch.empty((), dtype=dtype).element_size()
    min_bytes = case.min_bytes(case.batch(1), direction, element)
    distinct = sum(launch["distinct_sectors"] for launch in launches) * 32
    rows = []
    for launch in launches:
        rows.append(dict(
            launch,
            sectors_per_load=launch["load_sectors"] / max(1, launch["load_requests"]),
            sectors_per_store=launch["store_sectors"] / max(1, launch["store_requests"]),
            conflicts_per_shared_request=launch["bank_conflicts"] / max(1, launch["shared_requests"]),
        ))
    return {
        "group": case.group, "name": case.name, "op": case.op, "direction": direction,
        "dtype": str(dtype).replace("torch.", ""), "layout": layout, "algorithm": algorithm,
        "shape": case.shape_text(case.batch(1)), "distinct_bytes": distinct, "min_bytes": min_bytes,
        "distinct_over_min": distinct / min_bytes if min_bytes else math.nan, "launches": rows,
    }


def _print_row(r):
    first = True
    for launch in r["launches"]:
        label = f"{r['group']:11s} {r['name']:20s} {r['direction']:5s}" if first else " " * 38
        ratio = f"{r['distinct_over_min']:6.2f}x" if first else " " * 7
        print(f"{label} {launch['kernel']:38s} {launch['sectors_per_load']:6.2f} {launch['sectors_per_store']:6.2f} "
              f"{launch['conflicts_per_shared_request']:6.2f} {ratio}")
        first = False


def main(argv):
    p = argparse.ArgumentParser(prog="fastconv-bench traffic", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group", help="only these groups of the seed suite (comma-separated)")
    p.add_argument("--layer", help="one convolution at its own size, as fastconv-bench --layer takes it")
    p.add_argument("--direction", choices=DIRECTIONS, default="fprop")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--layout", choices=["nchw", "nhwc"], default="nchw")
    p.add_argument("--algo", default="direct", help="the CUDA algorithm (default: direct)")
    p.add_argument("--budget", type=float, default=6e5, help="multiply-adds per seed layer after scaling (default 6e5)")
    p.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    args = p.parse_args(argv)
    if not fastconv.testing.emulation_available():
        p.error("needs the emulation build: FASTCONV_SIMT=1 pip install --no-build-isolation .")
    if args.layer:
        try:
            cases = [suites.parse_layer(args.layer)]
        except ValueError as e:
            p.error(str(e))
    else:
        groups = set(args.group.split(",")) if args.group else None
        cases = [scaled(c, args.budget) for c in suites.seed_suite()
                 if isinstance(c, suites.ConvCase) and (groups is None or c.group in groups)]
    gen = torch.Generator().manual_seed(0)
    print(f"{'group':11s} {'layer':20s} {'dir':5s} {'kernel':38s} {'ld sec':>6s} {'st sec':>6s} {'bank':>6s} {'bytes/min':>8s}")
    rows = []
    for case in cases:
        try:
            row = measure(case, args.direction, DTYPES[args.dtype], args.layout, args.algo, gen)
        except NotImplementedError as e:
            if "cannot run" not in str(e):
                raise
            # The algorithm's own refusal (dtype, layout, alignment): a row that says so.
            print(f"{case.group:11s} {case.name:20s} {args.direction:5s} {args.algo} does not implement this layer")
            rows.append({"group": case.group, "layer": case.name, "direction": args.direction, "refused": str(e)})
            continue
        _print_row(row)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tool": "fastconv-bench traffic", "machine": "the emulator (csrc/simt), no GPU",
                       "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                       "scaling": None if args.layer else scaled.__doc__.strip(), "budget": args.budget,
                       "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # python -m fastconv.bench.traffic
    sys.exit(main(sys.argv[1:]))
