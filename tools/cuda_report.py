"""CI's CUDA check on a machine without a GPU: the extension was built with its CUDA kernels,
every fastconv operator has a CUDA kernel registered, and the compiler's resource report
(registers, stack, spills, shared memory) of each kernel. A kernel that spills is flagged;
with --fail-on-spill it fails the run.

Usage: python tools/cuda_report.py [--fail-on-spill]
"""

import glob
import os
import re
import shutil
import subprocess
import sys

import torch

import fastconv


def find_cuobjdump():
    candidates = [shutil.which("cuobjdump")]
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home:
            candidates.append(os.path.join(home, "bin", "cuobjdump"))
    try:  # triton's CUDA backend ships one when the toolkit lacks it
        import triton

        candidates += glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    except ImportError:
        pass
    return next((c for c in candidates if c and os.path.exists(c)), None)


def demangle(names):
    filt = shutil.which("c++filt")
    if not filt:
        return names
    out = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def short(mangled, name):
    """'void fastconv::cuda::direct::fprop_kernel<float, true>(...)' -> 'direct::fprop_kernel<float,
    true>': kernels live in a namespace per family (csrc/cuda/kernels.h); one in an anonymous
    namespace is named by its source file instead."""
    source = re.search(r"_GLOBAL__N__\w+?_\d+_(\w+?)_cu_", mangled)
    name = re.sub(r"\(.*$", "", name.replace("(anonymous namespace)::", ""))
    name = name.replace("fastconv::cuda::", "").replace("c10::", "").replace("void ", "")
    return f"{source.group(1)}: {name}" if source else name


def main():
    # The algorithm queries (fastconv::_can_implement, ...) have one kernel for every device.
    ops = sorted(n for n in torch._C._dispatch_get_all_op_names()
                 if n.startswith("fastconv::") and not n.startswith("fastconv::_"))
    built = bool(fastconv.algorithms.names("cuda"))
    print(f"fastconv built with CUDA kernels: {built}; CUDA algorithms: {fastconv.algorithms.names('cuda')}")
    if not built:
        if os.environ.get("FASTCONV_CUDA") == "1":
            sys.exit("FASTCONV_CUDA=1 but the extension has no CUDA kernels")
        print("no CUDA build: nothing more to report")
        return
    missing = [op for op in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")]
    for op in ops:
        print(f"  {op:40s} CUDA kernel: {'yes' if op not in missing else 'MISSING'}")
    if missing:
        sys.exit(f"operators without a CUDA kernel: {missing}")

    tool = find_cuobjdump()
    if tool is None:
        print("cuobjdump not found: no resource report")
        return
    text = subprocess.run([tool, "--dump-resource-usage", fastconv._C.__file__], capture_output=True, text=True, check=True).stdout
    rows, arch = [], None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"arch = (sm_\w+)", line.strip())
        if m:
            arch = m.group(1)
        m = re.match(r"\s*Function (\S+):", line)
        if m and i + 1 < len(lines):
            fields = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", lines[i + 1]))
            rows.append((arch, m.group(1), fields))
    names = demangle([r[1] for r in rows])
    spilled = []
    print(f"\n{'arch':7s} {'REG':>4s} {'STACK':>5s} {'LOCAL':>5s} {'SHARED':>6s}  kernel")
    labelled = sorted((short(mangled, name), arch, f) for (arch, mangled, f), name in zip(rows, names))
    for label, arch, f in labelled:
        reg, stack, local, shared = (int(f.get(k, 0)) for k in ("REG", "STACK", "LOCAL", "SHARED"))
        flag = "  <-- spills" if local or stack else ""
        if flag:
            spilled.append(label)
        print(f"{arch:7s} {reg:4d} {stack:5d} {local:5d} {shared:6d}  {label}{flag}")
    print("(SHARED includes the 1 KiB per block that sm_80 and newer reserve for the system)")
    print(f"\n{len(rows)} kernels; {len(spilled)} with stack or local memory (spills)")
    if spilled and "--fail-on-spill" in sys.argv:
        sys.exit(f"kernels that spill: {spilled}")


if __name__ == "__main__":
    main()
