"""bench/gpu_check.sh's logic without a GPU (its dry run): the steps in their order, the budget
that cuts the later ones, the summary after every step; and tools/mark_verified.py's reading
of a run: each kernel's evidence, and the record that makes the fully evidenced ones verified."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import mark_verified  # noqa: E402

ORDER = ["build", "selftest", "probes", "raise_probe", "bench_bf16", "bench", "bench_fp32_exact", "kernel_tests",
         "memcheck", "racecheck", "synccheck", "initcheck", "tests"]


def dry_run(out, **env):
    full = dict(os.environ, FASTCONV_GPU_CHECK_DRY_RUN="1", **{k: str(v) for k, v in env.items()})
    return subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), str(out)], capture_output=True, text=True,
                          env=full, timeout=300)


def steps_of(out):
    return [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]


def test_dry_run_runs_every_step_in_order(tmp_path):
    res = dry_run(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = steps_of(tmp_path)
    assert [r["step"] for r in rows] == ORDER
    assert all(r["rc"] == 0 for r in rows)
    assert "pip install --no-build-isolation" in (tmp_path / "build.log").read_text()
    assert "fastconv.selftest --again --json" in (tmp_path / "selftest.log").read_text()
    assert "--dtype bfloat16 --layout nhwc" in (tmp_path / "bench_bf16.log").read_text()
    assert "--tool racecheck" in (tmp_path / "racecheck.log").read_text()
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["passed"] and [r["step"] for r in summary["steps"]] == ORDER
    assert json.loads((tmp_path / "machine.json").read_text())["dry_run"]


def test_the_budget_cuts_the_last_steps_first(tmp_path):
    # 40 virtual seconds a step, 200 s of budget less the 10 s reserve: four steps fit.
    res = dry_run(tmp_path, FASTCONV_GPU_CHECK_BUDGET=200, FASTCONV_GPU_CHECK_DRY_SECONDS=40)
    assert res.returncode == 1
    rows = steps_of(tmp_path)
    ran = [r["step"] for r in rows if r.get("rc") == 0]
    skipped = [r["step"] for r in rows if "skipped" in r]
    assert ran == ORDER[:len(ran)] and skipped == ORDER[len(ran):] and 3 <= len(ran) <= 5, rows
    # Each step's limit was cut to what was left of the budget.
    assert all(r["limit"] <= 200 - 10 - 40 * i for i, r in enumerate(rows[:len(ran)]))


def write_run(out, selftest, kernel_cases, sanitizer_logs, sanitizer_rcs=None):
    out.mkdir(parents=True, exist_ok=True)
    (out / "machine.json").write_text(json.dumps({"gpu": "NVIDIA H200", "date": "2026-12-02T00:00:00+00:00"}))
    rows = [{"step": "selftest", "rc": 0}, {"step": "kernel_tests", "rc": 0}]
    for tool, text in sanitizer_logs.items():
        (out / f"{tool}.log").write_text(text)
        rows.append({"step": tool, "rc": (sanitizer_rcs or {}).get(tool, 0 if "0 errors" in text or "0 hazards" in text else 1)})
    (out / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kernels = sorted(selftest)
    (out / "selftest.json").write_text(json.dumps({
        "compute_capability": 90, "kernels": selftest, "all_kernels": kernels,
        "sources": {"direct": "d1", "implicit_gemm": "i1", "depthwise": "w1", "roi": "r1"}}))
    xml = "".join(f'<testcase classname="tests.test_cuda_kernels" name="{name}">{body}</testcase>'
                  for name, body in kernel_cases)
    (out / "kernel_tests.xml").write_text(f'<testsuites><testsuite name="pytest">{xml}</testsuite></testsuites>')


CLEAN = "========= ERROR SUMMARY: 0 errors\n"


def test_evidence_and_the_record(tmp_path):
    out = tmp_path / "run"
    selftest = {"direct": [], "igemm_64x64": [], "depthwise": ["depthwise: basic ...: rel_err inf"], "roi_align": []}
    cases = [("test_conv_kernel[kernel-direct]", ""), ("test_conv_kernel[kernel-igemm_64x64]", ""),
             ("test_conv_kernel[kernel-depthwise]", ""), ("test_roi_kernel[kernel-roi_align]", '<failure message="x"/>')]
    racecheck = ("========= Error: Race reported between Write access at fastconv::cuda::igemm::gather_gemm_kernel"
                 "<...>+0x1a0 in csrc/cuda/implicit_gemm/igemm_kernels.cuh:250\n"
                 "========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)\n")
    write_run(out, selftest, cases, {"memcheck": CLEAN, "racecheck": racecheck, "synccheck": CLEAN,
                                     "initcheck": CLEAN})
    e = mark_verified.evidence(str(out), sorted(selftest))
    assert e["direct"] == {"selftest": "passed", "tests": "passed", "memcheck": "clean", "racecheck": "clean",
                           "synccheck": "clean", "initcheck": "clean", "verified": True}
    assert e["igemm_64x64"]["racecheck"] == "found" and not e["igemm_64x64"]["verified"]
    assert e["depthwise"]["selftest"] == "failed" and not e["depthwise"]["verified"]
    assert e["roi_align"]["tests"] == "failed" and not e["roi_align"]["verified"]
    # The record: only what has full evidence, with its family's digest from that build, and
    # what an earlier record verified at sources that have not changed since.
    result = tmp_path / "bench_result.json"
    result.write_text("{}")
    records = tmp_path / "verified"
    records.mkdir()
    (records / "sm_90.json").write_text(json.dumps({"kernels": {"igemm_128x128": "i1", "depthwise": "old"}}))
    path, record = mark_verified.write_record(str(out), str(result), str(records))
    assert path.endswith("sm_90.json") and record["arch"] == "sm_90" and record["gpu"] == "NVIDIA H200"
    assert record["kernels"] == {"direct": "d1", "igemm_128x128": "i1"}


def test_missing_evidence_verifies_nothing(tmp_path):
    out = tmp_path / "run"
    write_run(out, {"direct": []}, [("test_conv_kernel[kernel-direct]", "")], {"memcheck": CLEAN})
    e = mark_verified.evidence(str(out), ["direct"])["direct"]
    assert e["racecheck"] == "not run" and not e["verified"]
    # A finding that names none of fastconv's kernels counts against every kernel.
    write_run(out, {"direct": []}, [("test_conv_kernel[kernel-direct]", "")],
              {t: ("========= Invalid __global__ read\n========= ERROR SUMMARY: 1 error\n" if t == "memcheck" else CLEAN)
               for t in mark_verified.SANITIZERS})
    assert mark_verified.evidence(str(out), ["direct"])["direct"]["memcheck"] == "found"


@pytest.mark.parametrize("rc", [124, 137])
def test_a_sanitizer_cut_by_its_limit_is_not_run(tmp_path, rc):
    out = tmp_path / "run"
    write_run(out, {"direct": []}, [("test_conv_kernel[kernel-direct]", "")],
              {t: CLEAN if t != "initcheck" else "" for t in mark_verified.SANITIZERS}, {"initcheck": rc})
    assert mark_verified.evidence(str(out), ["direct"])["direct"]["initcheck"] == "not run"
