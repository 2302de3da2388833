"""Reads a bench/gpu_check.sh output folder: each CUDA kernel's evidence, the summary, and the
record of verified kernels.

A kernel is verified on a GPU architecture when one gpu_check run there shows, for the
sources it was built from:
  - the self-test passed it (selftest.json),
  - its own tests passed (kernel_tests.xml: the tests of tests/test_cuda_kernels.py whose id
    names it), at least one of them having run,
  - compute-sanitizer's memcheck, racecheck, synccheck and initcheck ran over the kernels'
    small tests and found nothing in its family's kernels (a finding that names no kernel
    counts against every kernel).
Anything missing (a step cut by the budget, say) leaves the kernel emulated.

Usage:
  python tools/mark_verified.py OUT_DIR --summary
      writes OUT_DIR/gpu_check.json (bench/gpu_check.sh calls this after every step)
  python tools/mark_verified.py OUT_DIR --result bench/results/<date>_<card>_gpu_check.json
      writes fastconv/verified/sm_<NN>.json: the kernels with full evidence, each with its
      family's source digest from that build, kept beside those of the earlier record whose
      sources have not changed since; --result names the committed copy of gpu_check.json.
"""

import argparse
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANITIZERS = ("memcheck", "racecheck", "synccheck", "initcheck")
# Kernel namespaces and source folders, as compute-sanitizer names them, to kernel families.
NAMESPACE_FAMILY = {"igemm": "implicit_gemm", "hopper": "hopper", "direct": "direct", "depthwise": "depthwise",
                    "align": "roi", "pool": "roi", "selftest": "selftest"}


def family_of(kernel):
    """As fastconv._verified.family_of (kept here so that the summary needs no torch)."""
    if kernel.startswith("igemm_"):
        return "implicit_gemm"
    if kernel.startswith("hopper_"):
        return "hopper"
    if kernel.startswith("roi_"):
        return "roi"
    return {"direct": "direct", "depthwise": "depthwise"}[kernel]


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def steps(out):
    rows = []
    try:
        for line in open(os.path.join(out, "steps.jsonl")):
            if line.strip():
                rows.append(json.loads(line))
    except OSError:
        pass
    return {r["step"]: r for r in rows}, rows


def junit_cases(path):
    """[(name, outcome)] of a junit file; outcome passed, failed or skipped."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    cases = []
    for case in root.iter("testcase"):
        outcome = "passed"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        cases.append((f"{case.get('classname')}::{case.get('name')}", outcome))
    return cases


def sanitizer_findings(log_path):
    """(errors reported, the families named in them) of one compute-sanitizer log."""
    try:
        text = open(log_path, errors="replace").read()
    except OSError:
        return None, set()
    counts = [int(n) for n in re.findall(r"(?:ERROR|RACECHECK) SUMMARY: (\d+) (?:error|hazard)", text)]
    families = {NAMESPACE_FAMILY.get(ns, ns) for ns in re.findall(r"fastconv::cuda::(\w+)::\w+", text)}
    families |= set(re.findall(r"csrc/cuda/(\w+)/", text))
    return (sum(counts) if counts else None), families


def evidence(out, kernels):
    """{kernel: {selftest, tests, memcheck, ..., verified}} from an output folder."""
    by_step, _ = steps(out)
    selftest = (read_json(os.path.join(out, "selftest.json")) or {}).get("kernels", {})
    cases = junit_cases(os.path.join(out, "kernel_tests.xml"))
    sanitizer = {}
    for tool in SANITIZERS:
        row = by_step.get(tool)
        if row is None or row.get("rc") is None:
            sanitizer[tool] = ("not run", set())
            continue
        errors, families = sanitizer_findings(os.path.join(out, f"{tool}.log"))
        if row["rc"] == 0 and errors == 0:
            sanitizer[tool] = ("clean", set())
        elif errors:
            # A finding in no kernel of ours (torch's own, say) is still a finding: against all.
            sanitizer[tool] = ("found", families & set(NAMESPACE_FAMILY.values()) or {"*"})
        elif row["rc"] in (124, 137):
            sanitizer[tool] = ("not run", set())  # cut by its limit before the summary
        else:
            sanitizer[tool] = ("tests failed", {"*"})
    result = {}
    for kernel in kernels:
        e = {}
        lines = selftest.get(kernel)
        e["selftest"] = "not run" if lines is None else ("passed" if not lines else "failed")
        mine = [o for name, o in (cases or []) if f"kernel-{kernel}]" in name]
        e["tests"] = ("not run" if cases is None or not [o for o in mine if o != "skipped"]
                      else "failed" if "failed" in mine else "passed")
        for tool, (state, families) in sanitizer.items():
            e[tool] = "found" if state == "found" and (family_of(kernel) in families or "*" in families) else (
                "clean" if state in ("clean", "found") else state)
        e["verified"] = e["selftest"] == "passed" and e["tests"] == "passed" and all(
            e[t] == "clean" for t in SANITIZERS)
        result[kernel] = e
    return result


def summary(out):
    machine = read_json(os.path.join(out, "machine.json"), {})
    by_step, rows = steps(out)
    selftest = read_json(os.path.join(out, "selftest.json"))
    kernels = sorted((selftest or {}).get("all_kernels", (selftest or {}).get("kernels", {})))
    s = {"machine": machine, "steps": rows,
         "passed": bool(rows) and all(r.get("rc") == 0 for r in rows)}
    if selftest:
        s["selftest"] = selftest
        s["compute_capability"] = selftest.get("compute_capability")
        s["sources"] = selftest.get("sources")
    s["probes"] = read_json(os.path.join(out, "probes.json"))
    for name in ("kernel_tests", "pytest"):
        cases = junit_cases(os.path.join(out, f"{name}.xml"))
        if cases is not None:
            s[name] = {"tests": len(cases), **{o: sum(1 for _, x in cases if x == o) for o in ("passed", "failed", "skipped")},
                       "failed_tests": [n for n, o in cases if o == "failed"]}
    s["evidence"] = evidence(out, kernels)
    s["verified"] = sorted(k for k, e in s["evidence"].items() if e["verified"])
    s["bench"] = {name: read_json(os.path.join(out, f"{name}.json"))
                  for name in ("bench_bf16", "bench", "bench_fp32_exact") if os.path.exists(os.path.join(out, f"{name}.json"))}
    with open(os.path.join(out, "gpu_check.json"), "w") as f:
        json.dump(s, f, indent=1)
    return s


def write_record(out, result, record_dir):
    s = summary(out)
    cc, sources = s.get("compute_capability"), s.get("sources") or {}
    if not cc or not sources:
        sys.exit("mark_verified: the self-test's JSON (with the build's compute capability and source digests) is missing")
    if not os.path.exists(os.path.join(REPO, result)):
        sys.exit(f"mark_verified: --result {result} does not exist: commit the run's gpu_check.json there first")
    path = os.path.join(record_dir, f"sm_{cc}.json")
    old = read_json(path, {}) or {}
    kernels = {k: v for k, v in old.get("kernels", {}).items() if sources.get(family_of(k)) == v}
    kernels.update({k: sources[family_of(k)] for k in s["verified"]})
    record = {"arch": f"sm_{cc}", "compute_capability": cc, "gpu": s["machine"].get("gpu"),
              "date": s["machine"].get("date"), "result": result, "kernels": dict(sorted(kernels.items()))}
    os.makedirs(record_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    return path, record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="a bench/gpu_check.sh output folder")
    p.add_argument("--summary", action="store_true", help="write OUT/gpu_check.json only")
    p.add_argument("--result", help="the committed copy of this run's gpu_check.json, relative to the repository")
    p.add_argument("--record-dir", default=os.path.join(REPO, "fastconv", "verified"))
    args = p.parse_args(argv)
    if args.summary or not args.result:
        s = summary(args.out)
        for kernel, e in s["evidence"].items():
            print(f"{kernel:34} " + "  ".join(f"{k} {v}" for k, v in e.items()))
        return 0
    path, record = write_record(args.out, args.result, args.record_dir)
    print(f"{path}: {len(record['kernels'])} kernel(s) verified on {record['gpu']} ({record['arch']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
