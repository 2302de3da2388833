"""The GPU check's probes (bench/gpu_check.sh, step "probes"), each in a process of its own so
that a fault cannot spoil the next one:

- the tensor-core probe: fastconv::_tensor_core_check, one mma.sync tile through cp.async and
  ldmatrix, against a float64 product;
- the launch probes: fastconv::_launch_probe run correctly ("none", "large_shared": 100 KiB of
  dynamic shared memory, past the 48 KiB default) must set out[0] = 1; run with a planted fault
  ("out_of_bounds", with FASTCONV_SYNC_LAUNCHES=1 so the fault is caught at its kernel;
  "block_over_bounds"; "shared_over_limit") it must raise an error naming
  selftest::launch_probe_kernel, and never hang or crash.

Usage: python tools/gpu_probes.py [--json OUT] [--device cuda|cpu]   (cpu: the emulated GPU of
an emulation build). Exit status 0 when every probe behaved.
"""

import argparse
import json
import os
import subprocess
import sys

FAULTS = {"none": "runs", "large_shared": "runs", "out_of_bounds": "error", "block_over_bounds": "error",
          "shared_over_limit": "error"}

CHILD = r"""
import json, sys, torch, fastconv
device, what = sys.argv[1], sys.argv[2]
result = {}
try:
    if what == "tensor_core":
        g = torch.Generator().manual_seed(7)
        a, bt = torch.randn(16, 16, generator=g).bfloat16(), torch.randn(8, 16, generator=g).bfloat16()
        d = torch.ops.fastconv._tensor_core_check(a.to(device), bt.to(device)).cpu()
        err = (d.double() - a.double() @ bt.double().T).abs().max().item()
        result = {"max_abs_err": err, "ok": err < 1e-4}
    else:
        out = torch.zeros(4, device=device)
        torch.ops.fastconv._launch_probe(out, what)
        if device == "cuda":
            torch.cuda.synchronize()
        result = {"outcome": "runs", "value": out[0].item()}
except Exception as e:
    result = {"outcome": "error", "type": type(e).__name__, "message": str(e)[:2000]}
print("PROBE " + json.dumps(result))
"""


def child(device, what, env):
    try:
        res = subprocess.run([sys.executable, "-c", CHILD, device, what], capture_output=True, text=True,
                             timeout=60, env=env)
    except subprocess.TimeoutExpired:
        return {"outcome": "hang", "message": "no answer in 60 s"}
    lines = [line for line in res.stdout.splitlines() if line.startswith("PROBE ")]
    if not lines:
        return {"outcome": "crash", "returncode": res.returncode, "stderr": res.stderr[-2000:]}
    return json.loads(lines[-1][len("PROBE "):])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write the results here")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = p.parse_args(argv)
    env = dict(os.environ, FASTCONV_SYNC_LAUNCHES="1")
    results = {"tensor_core": child(args.device, "tensor_core", env)}
    results["tensor_core"]["passed"] = bool(results["tensor_core"].get("ok"))
    for fault, expected in FAULTS.items():
        r = child(args.device, fault, env)
        if expected == "runs":
            r["passed"] = r.get("outcome") == "runs" and r.get("value") == 1.0
        else:
            r["passed"] = r.get("outcome") == "error" and "selftest::launch_probe_kernel" in r.get("message", "")
        r["expected"] = expected
        results[fault] = r
        print(f"{fault}: {'ok' if r['passed'] else 'FAILED'} ({r.get('outcome')}{': ' + r['message'][:200] if 'message' in r else ''})")
    print(f"tensor_core: {'ok' if results['tensor_core']['passed'] else 'FAILED'} {results['tensor_core']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if all(r["passed"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
