"""Each translation unit's compile time, and the build's time on N cores predicted from them.

The build's critical path on many cores is its slowest file: with 16 cores and ~40 files, the
predicted time is the longest-processing-time-first schedule of the measured times over N
cores (never below the slowest file), plus the link. Measures from the build folder that
`python setup.py build_ext --inplace` (or pip) leaves, by recompiling each unit alone, one at a
time, with ninja's own command line, and counting the compiler's CPU seconds (user + system:
steadier than wall time on a shared machine).

Usage: python tools/build_times.py [--build-dir DIR] [--only cuda|cxx] [--match PATH] [--cores 16] [--json OUT]
"""

import argparse
import glob
import heapq
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time


def parse_ninja(path):
    """(variables, [(output, rule, input)]) of a build.ninja as torch's cpp_extension writes it."""
    variables, builds, rules, rule = {}, [], {}, None
    for raw in open(path):
        line = raw.rstrip("\n")
        if line.startswith("rule "):
            rule = line.split()[1]
            continue
        if rule and line.startswith("  command = "):
            rules[rule] = line[len("  command = "):]
            continue
        if not line.startswith(" "):
            rule = None
        m = re.match(r"^(\w+) = (.*)$", line)
        if m:
            variables[m.group(1)] = m.group(2)
            continue
        m = re.match(r"^build (\S+): (\w+) (\S+)", line)
        if m:
            builds.append((m.group(1), m.group(2), m.group(3)))
    return variables, rules, builds


def expand(command, env):
    return re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), command)


def measure(command):
    """(cpu seconds, wall seconds) of one compile."""
    before = os.times()
    t0 = time.perf_counter()
    res = subprocess.run(command, shell=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = os.times()
    if res.returncode != 0:
        raise RuntimeError(f"compile failed: {command[:200]}...\n{res.stderr[-2000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return cpu, wall


def schedule(times, cores):
    """Makespan of the longest-first list schedule of `times` over `cores`."""
    loads = [0.0] * cores
    heapq.heapify(loads)
    for t in sorted(times, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + t)
    return max(loads)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", help="the folder holding build.ninja (default: build/temp.*)")
    p.add_argument("--only", choices=["cuda", "cxx"], help="only the nvcc (cuda) or the c++ (cxx) units")
    p.add_argument("--match", help="only the units whose path holds this")
    p.add_argument("--cores", type=int, default=16, help="cores of the machine to predict for")
    p.add_argument("--link-seconds", type=float, default=5.0, help="the link, added to the prediction")
    p.add_argument("--json", help="write the measurements here")
    args = p.parse_args(argv)
    build_dir = args.build_dir or next(iter(sorted(glob.glob("build/temp.*"))), None)
    if not build_dir or not os.path.exists(os.path.join(build_dir, "build.ninja")):
        sys.exit("no build.ninja: build first (python setup.py build_ext --inplace)")
    variables, rules, builds = parse_ninja(os.path.join(build_dir, "build.ninja"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for out, rule, src in builds:
            if rule not in rules:
                continue
            kind = "cuda" if rule == "cuda_compile" else "cxx"
            if (args.only and kind != args.only) or (args.match and args.match not in src):
                continue
            target = os.path.join(tmp, os.path.basename(out))
            env = dict(variables, out=target, **{"in": src})
            cpu, wall = measure(expand(rules[rule], env))
            rows.append({"source": os.path.relpath(src), "kind": kind, "cpu_seconds": round(cpu, 1),
                         "wall_seconds": round(wall, 1)})
            print(f"{cpu:7.1f} s  {kind:4}  {os.path.relpath(src)}", flush=True)
    rows.sort(key=lambda r: -r["cpu_seconds"])
    times = [r["cpu_seconds"] for r in rows]
    predicted = schedule(times, args.cores) + args.link_seconds
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores here",
        "units": len(rows), "total_cpu_seconds": round(sum(times), 1),
        "slowest": rows[0] if rows else None,
        "predicted_seconds": {f"{args.cores}_cores": round(predicted, 1), "2_cores": round(schedule(times, 2) + args.link_seconds, 1)},
        "rows": rows,
    }
    print(f"\n{len(rows)} units, {sum(times):.0f} CPU seconds; slowest {rows[0]['source']} ({rows[0]['cpu_seconds']} s)"
          if rows else "no units")
    print(f"predicted build: {predicted:.0f} s on {args.cores} cores of this speed "
          f"({schedule(times, 2) + args.link_seconds:.0f} s on 2), link {args.link_seconds:.0f} s included")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
