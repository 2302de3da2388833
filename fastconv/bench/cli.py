"""fastconv-bench: times fastconv's kernels against the baselines a user would otherwise
pick (torch.nn.functional, i.e. oneDNN on the CPU and cuDNN with benchmark mode on the GPU;
torchvision.ops for RoIAlign and RoIPool; torch.nn layers for whole networks).

  fastconv-bench [options]              run a suite (the seed suite by default)
  fastconv-bench compare OLD.json NEW.json   per-row change, regressions beyond noise
  fastconv-bench plot RESULT.json FILE.png   the speed-up chart of a saved result
"""

import argparse
import contextlib
import datetime
import os
import statistics
import sys
import time

import torch

import fastconv
from fastconv._flags import cudnn_flags

from . import load, measure, report, suites

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
OPS = ("conv2d", "conv_transpose2d", "conv1d", "conv_transpose1d", "roi_align", "roi_pool", "fpn_roi_align",
       "network")


def run_parser():
    p = argparse.ArgumentParser(
        prog="fastconv-bench",
        description="Time fastconv against torch (oneDNN/cuDNN) and torchvision. "
        "Subcommands: 'compare OLD.json NEW.json', 'plot RESULT.json FILE.png'.",
    )
    p.add_argument("--suite", default="seed",
                   help="'seed' (DESIGN.md's table) or a network whose convolutions are traced (resnet50, vgg16, ...)")
    p.add_argument("--layer", help="a one-off convolution, e.g. N=8,C=64,H=56,W=56,K=64,R=3,stride=1,pad=1,groups=1")
    p.add_argument("--network", help="time whole networks, comma-separated (forward; with --direction all, a training step)")
    p.add_argument("--fused", action="store_true",
                   help="with --network: fastconv.fuse() of the eval-mode network against torch eager and "
                        "torch.compile(freezing=True), inference")
    p.add_argument("--group", help="only these groups of the suite (comma-separated)")
    p.add_argument("--op", choices=OPS, help="only rows of this operator")
    p.add_argument("--direction", choices=suites.DIRECTIONS, default="fprop")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--layout", choices=["nchw", "nhwc"], default="nchw")
    p.add_argument("--tf32", choices=["on", "off"],
                   help="float32 convolutions on TF32 tensor cores, for cuDNN and fastconv alike "
                        "(torch.backends.cudnn.allow_tf32; default: as torch has it, on)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when a GPU and fastconv's CUDA kernels are usable")
    p.add_argument("--batch", type=int, help="batch size (default: %s)" % suites.DEFAULT_BATCH)
    p.add_argument("--warmup", type=int, help="untimed runs first (default: 1 on cpu, 5 on cuda)")
    p.add_argument("--repeats", type=int, help="timed runs, median reported (default: 5 on cpu, 25 on cuda)")
    p.add_argument("--algo", help=f"force one fastconv algorithm (cpu: {', '.join(fastconv.algorithms.names('cpu'))})")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--csv", metavar="FILE", help="write the results as CSV")
    p.add_argument("--plot", metavar="FILE.png", help="draw the speed-up per layer (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no table, only the summary")
    p.add_argument("--processes", type=int, default=1,
                   help="cpu: time beside N-1 companion processes of the same threads, each running the "
                        "side being timed (an oversubscribed machine; default 1, alone)")
    return p


def positive(parser, name, value):
    if value is not None and value <= 0:
        parser.error(f"--{name} must be positive, got {value}")


def settle_args(parser, args):
    positive(parser, "batch", args.batch)
    positive(parser, "repeats", args.repeats)
    positive(parser, "processes", args.processes)
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup must not be negative, got {args.warmup}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is visible")
    if args.device is None:
        args.device = "cuda" if fastconv.algorithms.usable("cuda") else "cpu"
    if args.algo and args.algo not in fastconv.algorithms.names(args.device):
        parser.error(f"--algo {args.algo}: {args.device} has {fastconv.algorithms.names(args.device)}")
    if args.processes > 1 and args.device != "cpu":
        parser.error("--processes shares the CPU's cores between processes: it needs --device cpu")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install 'fastconv[plot]' (or pip install matplotlib)")
    args.warmup = args.warmup if args.warmup is not None else (5 if args.device == "cuda" else 1)
    args.repeats = args.repeats or (25 if args.device == "cuda" else 5)
    args.batch = args.batch or suites.DEFAULT_BATCH[args.device]
    return args


def select_cases(parser, args):
    try:
        if args.layer:
            cases = [suites.parse_layer(args.layer)]
        elif args.network:
            names = [n for n in args.network.split(",") if n]
            for name in names:
                suites.network_model(name)  # fail early on an unknown name
            if args.fused:
                cases = [suites.NetworkCase("network", name, fused=True, baseline=b)
                         for name in names for b in suites.FUSED_BASELINES]
            else:
                cases = [suites.NetworkCase("network", name) for name in names]
        else:
            cases = suites.suite(args.suite)
    except ValueError as e:
        parser.error(str(e))
    if args.fused and not args.network:
        parser.error("--fused times whole networks: give --network NAME[,NAME...]")
    if args.fused and args.direction != "fprop":
        parser.error("--fused is inference: --direction must be fprop")
    if args.group:
        wanted = set(args.group.split(","))
        unknown = wanted - {c.group for c in cases}
        if unknown:
            parser.error(f"--group: no such group(s) {sorted(unknown)} in suite {args.suite}; "
                         f"groups: {sorted({c.group for c in cases})}")
        cases = [c for c in cases if c.group in wanted]
    if args.op:
        cases = [c for c in cases if getattr(c, "op", "network") == args.op]
        if not cases:
            parser.error(f"--op {args.op}: no such rows in this selection")
    return cases


def case_runners(case, args, dtype, forced_per_call=False):
    """fastconv's and the baseline's zero-argument runners of one case, on seeded inputs. With
    forced_per_call, each call runs under --algo itself (for callers that do not hold it)."""
    generator = torch.Generator().manual_seed(0)
    fast, base = case.runners(case.batch(args.batch), args.device, dtype, args.layout, args.direction, generator)
    if forced_per_call and args.algo:
        algo, unforced = args.algo, fast

        def fast():
            with fastconv.algorithms.force(algo):
                return unforced()

    return fast, base


def settle_beside(companions):
    """time_pair's hook that puts the companions of an oversubscribed run on the side about to be
    timed, then calls that side once untimed, so that the timed call finds every process already
    on it rather than the last side's threads still spinning; None when there are no companions."""
    if not companions:
        return None

    def before(side, run):
        companions.switch(side)
        run()

    return before


def measure_case(case, args, timer, peaks, dtype, companions=None):
    n = case.batch(args.batch)
    row = {"group": case.group, "name": case.name, "op": getattr(case, "op", "network"),
           "shape": case.shape_text(n), "direction": args.direction, "dtype": args.dtype,
           "layout": args.layout, "device": args.device, "batch": n, "count": case.count,
           "algorithm": args.algo or "auto"}
    directions = case.directions() if hasattr(case, "directions") else suites.DIRECTIONS
    if args.direction not in directions:
        row["error"] = f"no {args.direction} for {row['op']}"
        return row
    force = fastconv.algorithms.force(args.algo) if args.algo else contextlib.nullcontext()
    try:
        with force:
            fast, base = case_runners(case, args, dtype)
            row["rel_error"] = measure.max_rel_error(fast(), base())
            team_before = measure.cpu_team_state() if args.device == "cpu" else None
            fast_times, base_times = measure.time_pair(timer, fast, base, args.warmup, args.repeats,
                                                       before=settle_beside(companions))
            if team_before is not None:
                row["cpu_team"] = measure.team_change(team_before, measure.cpu_team_state())
            memory = measure.PeakMemory(args.device)
            if memory.available:
                peak, base_peak = memory.bytes(fast), memory.bytes(base)
                row.update({"peak_mib": peak / 2**20, "baseline_peak_mib": base_peak / 2**20,
                            "memory_ratio": peak / base_peak if base_peak else None})
    except ImportError as e:
        row["error"] = f"baseline not installed: {e} (pip install -r requirements-bench.txt)"
        return row
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as e:
        row["error"] = str(e).splitlines()[0][:200]
        if args.device == "cuda":
            torch.cuda.empty_cache()
        return row
    t, tb = statistics.median(fast_times), statistics.median(base_times)
    flops = case.flops(n, args.direction)
    nbytes = case.min_bytes(n, args.direction, torch.empty(0, dtype=dtype).element_size())
    floor = max(flops / (peaks["matmul_tflops"] * 1e12), nbytes / (peaks["copy_gbps"] * 1e9))
    row.update({
        "time_ms": 1e3 * t, "baseline_ms": 1e3 * tb, "ratio": tb / t,
        "tflops": flops / t / 1e12 if flops else None,
        "gbps": nbytes / t / 1e9 if not flops and nbytes else None,
        "floor_pct": 100 * floor / t if floor else None,
        "noise": measure.spread(fast_times), "baseline_noise": measure.spread(base_times),
        "flops": flops, "min_bytes": nbytes,
    })
    return row


def run(argv):
    parser = run_parser()
    args = settle_args(parser, parser.parse_args(argv))
    args.argv = list(argv)
    # cuDNN's flags for the run, restored afterwards: benchmark mode on the GPU, and --tf32.
    changes = {"benchmark": True} if args.device == "cuda" else {}
    if args.tf32 is not None:
        changes["allow_tf32"] = args.tf32 == "on"
    with cudnn_flags(**changes):
        return _run(parser, args)


def _run(parser, args):
    cases = select_cases(parser, args)
    dtype = DTYPES[args.dtype]
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    machine = measure.machine_info(args.device)
    measure.PeakMemory(args.device).settle()
    peaks = measure.measure_peaks(args.device, dtype)
    where = machine.get("gpu") or f"{machine['cpu']}, {machine['torch_threads']} threads"
    say = (lambda *a: None) if args.quiet else print
    say(f"fastconv-bench: {len(cases)} layers, {args.direction}, {args.dtype}, {args.layout}, on {args.device} ({where})")
    say(f"peaks measured now: {peaks['matmul_tflops']:.3f} TFLOP/s {peaks['matmul_dtype']} matmul ({peaks.get('matmul_by', 'torch.mm')}), "
        f"{peaks['copy_gbps']:.1f} GB/s copy; median of {args.repeats} runs after {args.warmup} warm-up, interleaved")
    # Oversubscribed, one call is a draw of how the processes' threads met: time windows of calls.
    timer = measure.SteadyTimer() if args.processes > 1 else measure.Timer(args.device)
    if args.processes > 1:
        say(f"oversubscribed: {args.processes} processes of {machine['torch_threads']} threads each on "
            f"{os.cpu_count()} CPUs, every companion running the side being timed, fastconv or the baseline; "
            f"each sample the mean call of a {timer.window * 1e3:.0f} ms window")
    say(report.header_line())
    rows = []
    companions = load.Companions(args.processes - 1, args.argv) if args.processes > 1 else None
    try:
        for i, case in enumerate(cases, 1):
            if companions:
                companions.follow(i - 1)
            row = measure_case(case, args, timer, peaks, dtype, companions)
            rows.append(row)
            say(report.row_line(i, len(cases), row))
            sys.stdout.flush()
    finally:
        if companions:
            companions.close()
    summary = report.summarize(rows)
    result = {
        "schema": report.SCHEMA,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": machine,
        "versions": measure.versions(),
        "settings": {"suite": args.network or ("layer" if args.layer else args.suite), "device": args.device,
                     "fused": args.fused,
                     "dtype": args.dtype, "layout": args.layout, "direction": args.direction,
                     "batch": args.batch, "processes": args.processes, "cpus": os.cpu_count(),
                     "warmup": args.warmup, "repeats": args.repeats,
                     "algo": args.algo or "auto", "group": args.group, "op": args.op,
                     "allow_tf32": torch.backends.cudnn.allow_tf32,
                     "baseline": "torch.nn.functional (cuDNN, benchmark mode)" if args.device == "cuda"
                     else "torch.nn.functional (oneDNN)", "roi_baseline": "torchvision.ops"},
        "peaks": peaks,
        "rows": rows,
        "summary": summary,
    }
    if args.json:
        report.write_json(args.json, result)
    if args.csv:
        report.write_csv(args.csv, result)
    if args.plot:
        report.plot(result, args.plot)
    errors = sum(1 for r in rows if r.get("error"))
    print(report.summary_line(summary) + (f" ({errors} row(s) failed)" if errors else "") +
          f" [{result['seconds']:.0f} s]")
    return 0


def compare_main(argv):
    p = argparse.ArgumentParser(prog="fastconv-bench compare", description="Per-row change from OLD to NEW.")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--threshold", type=float, default=0.05, help="smallest slow-down that counts (default 0.05 = 5%%)")
    p.add_argument("--strict", action="store_true", help="exit 1 when there are regressions")
    args = p.parse_args(argv)
    try:
        old, new = report.load(args.old), report.load(args.new)
    except (OSError, ValueError) as e:
        p.error(str(e))
    regressions = report.compare(old, new, args.threshold)
    return 1 if regressions and args.strict else 0


def plot_main(argv):
    p = argparse.ArgumentParser(prog="fastconv-bench plot", description="Draw a saved result's speed-ups.")
    p.add_argument("result")
    p.add_argument("out", metavar="FILE.png")
    args = p.parse_args(argv)
    try:
        report.plot(report.load(args.result), args.out)
    except (OSError, ValueError, RuntimeError) as e:
        p.error(str(e))
    print(f"wrote {args.out}")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "compare":
        return compare_main(argv[1:])
    if argv and argv[0] == "plot":
        return plot_main(argv[1:])
    if argv and argv[0] == "traffic":
        from . import traffic

        return traffic.main(argv[1:])
    return run(argv)
