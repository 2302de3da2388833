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
    # Enum template arguments demangle as casts, "(ns::Math)1": named before the argument list goes.
    name = re.sub(r"\([\w:]*Math\)(\d)", lambda m: "Math::" + ("mma", "ffma")[int(m.group(1))], name)
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
    print(f"\n{'arch':7s} {'REG':>4s} {'STACK':>5s} {'LOCAL':>5s} {'SHARED':>6s} {'CTAs/SM':>7s}  kernel")
    labelled = sorted((short(mangled, name), arch, f) for (arch, mangled, f), name in zip(rows, names))
    for label, arch, f in labelled:
        reg, stack, local, shared = (int(f.get(k, 0)) for k in ("REG", "STACK", "LOCAL", "SHARED"))
        flag = "  <-- spills" if local or stack else ""
        if flag:
            spilled.append(label)
        ctas = ctas_per_sm_sm90(block_threads(label), reg, shared) if arch in ("sm_90", "sm_90a") else 0
        print(f"{arch:7s} {reg:4d} {stack:5d} {local:5d} {shared:6d} {ctas:7d}  {label}{flag}")
    print("(SHARED includes the 1 KiB per block that sm_80 and newer reserve for the system; CTAs/SM:"
          " resident blocks on an H100/H200 at the block size the launcher uses)")
    print(f"\n{len(rows)} kernels; {len(spilled)} with stack or local memory (spills)")
    if spilled and "--fail-on-spill" in sys.argv:
        sys.exit(f"kernels that spill: {spilled}")
    sass = sass_by_function(tool)
    tensor_core_report(sass, labelled)
    hopper_report(sass, labelled)


# The implicit-GEMM kernels, with their block size: (label prefix, threads).
TENSOR_CORE_KERNELS = [("igemm::gather_gemm_kernel", 128), ("igemm::wgrad_kernel", 128)]
# In the SASS of a tensor-core instance: mma.sync (HMMA), ldmatrix (LDSM), cp.async (LDGSTS)
# (float wgrad excepted from LDSM; see tensor_core_report). In an FFMA instance (Math::ffma):
# FFMA, 16-byte shared loads (LDS.128) and LDGSTS, and no HMMA. Never local memory.
REQUIRED, FORBIDDEN = ("HMMA", "LDSM", "LDGSTS"), ("LDL", "STL")
FFMA_REQUIRED = ("FFMA", "LDS.128", "LDGSTS")


# Other kernels launched with a block other than the default 256 threads.
OTHER_BLOCKS = [("selftest::launch_probe_kernel", 128), ("selftest::tensor_core_check_kernel", 32),
                ("hopper::gather_gemm_kernel", 384)]


def block_threads(label):
    """The block size each kernel is launched with: the implicit GEMM's 4 warps, the selftest
    kernels' own, and 256 threads (cuda/common/launch_shape.h kThreads, and each family's
    config) for every other."""
    return next((t for prefix, t in TENSOR_CORE_KERNELS + OTHER_BLOCKS if label.startswith(prefix)), 256)


def ctas_per_sm_sm90(threads, regs, shared):
    """Resident CTAs per SM on an H100/H200 (sm_90), as the occupancy calculator counts them:
    registers allocated per warp in 256s out of 64K, 228 KiB of shared memory (SHARED above
    already holds the 1 KiB reserve), 2048 threads, 32 CTAs."""
    warps = (threads + 31) // 32
    per_warp = -(-max(regs, 1) * 32 // 256) * 256
    by_regs = (65536 // per_warp) // warps
    by_shared = 233472 // shared if shared else 32
    return min(32, 2048 // threads, by_regs, by_shared)


def sass_by_function(tool):
    """{label: SASS text} of every kernel in the extension, every architecture's cubin."""
    text = subprocess.run([tool, "-sass", fastconv._C.__file__], capture_output=True, text=True, check=True).stdout
    functions, current = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            current = m.group(1)
            functions[current] = []
        elif current is not None:
            functions[current].append(line)
    mangled = list(functions)
    return {short(m, n): "\n".join(functions[m]) for m, n in zip(mangled, demangle(mangled))}


def tensor_core_report(functions, labelled):
    """Each tensor-core kernel instance: its SASS has HMMA, LDSM and LDGSTS and no local
    memory, and the CTAs per SM that its registers and shared memory allow on sm_90."""
    resources = {label: f for label, _arch, f in labelled}
    failures, count, ffma_count = [], 0, 0
    print(f"\n{'CTAs/SM':>7s} {'HMMA':>5s} {'LDSM':>5s} {'FFMA':>5s} {'LDS.128':>7s} {'LDGSTS':>6s} {'LDL/STL':>7s}"
          "  implicit-GEMM kernel (sm_90)")
    for label, sass in sorted(functions.items()):
        threads = next((t for prefix, t in TENSOR_CORE_KERNELS if label.startswith(prefix)), None)
        if threads is None:
            continue
        count += 1
        counts = {op: len(re.findall(rf"\b{re.escape(op)}\b", sass)) for op in REQUIRED + FORBIDDEN + FFMA_REQUIRED}
        # TF32 operands rounded before the tensor cores (tf32_round: a test against +INF, then
        # a predicated add, per fragment register).
        tf32_rounding = len(re.findall(r"FSETP\.\w+\.AND .*\+INF", sass))
        f = resources.get(label, {})
        ctas = ctas_per_sm_sm90(threads, int(f.get("REG", 0)), int(f.get("SHARED", 0)))
        local = counts["LDL"] + counts["STL"]
        print(f"{ctas:7d} {counts['HMMA']:5d} {counts['LDSM']:5d} {counts['FFMA']:5d} {counts['LDS.128']:7d}"
              f" {counts['LDGSTS']:6d} {local:7d}  {label}")
        if "Math::ffma" in label:
            ffma_count += 1
            if any(counts[op] == 0 for op in FFMA_REQUIRED) or counts["HMMA"] or local:
                failures.append(label)
            continue
        # float wgrad reads its k-major TF32 fragments with 4-byte loads: ldmatrix.trans
        # would split them, so it alone has no LDSM.
        required = [op for op in REQUIRED if not (op == "LDSM" and "wgrad_kernel" in label and ", float," in label)]
        if any(counts[op] == 0 for op in required) or local:
            failures.append(label)
        if ", float," in label and tf32_rounding < counts["HMMA"]:
            failures.append(label + " (TF32 operands not rounded)")
    expected = sum(1 for _ in TENSOR_CORE_KERNELS)
    if count - ffma_count < expected or ffma_count < expected:
        sys.exit(f"{count - ffma_count} tensor-core and {ffma_count} FFMA kernel instances in the SASS;"
                 f" expected at least {expected} of each")
    if failures:
        sys.exit(f"implicit-GEMM kernels without their instructions, or with local memory: {failures}")
    print(f"{count - ffma_count} tensor-core kernel instances: HMMA, LDGSTS and (but float wgrad) LDSM in each,"
          " TF32 operands rounded in the float ones;"
          f" {ffma_count} FFMA instances: FFMA, LDS.128 and LDGSTS, no HMMA; no local memory in any")


# The Hopper family (sm_90a): wgmma (HGMMA) fed from shared memory that cp.async (LDGSTS) fills,
# mbarrier waits (SYNCS), register reallocation (USETMAXREG); no mma.sync (HMMA), no local memory.
HOPPER_REQUIRED, HOPPER_FORBIDDEN = ("HGMMA", "LDGSTS", "SYNCS", "USETMAXREG", "STG.E.128"), ("HMMA", "LDL", "STL")


def hopper_dynamic_shared(label):
    """config.h's kSharedBytes for 'hopper::gather_gemm_kernel<hopper::TileConfig<BN, Stages>, T>':
    the alignment slack, the ring, the row tables and the barriers."""
    m = re.search(r"TileConfig<(\d+), (\d+)>", label)
    if not m:
        sys.exit(f"cannot read the tile configuration of {label}")
    bn, stages = int(m.group(1)), int(m.group(2))
    return 1024 + stages * (128 * 64 * 2 + bn * 64 * 2) + 128 * 16 + bn * 4 + 2 * stages * 8


def hopper_report(functions, labelled):
    """Each Hopper kernel instance: its instructions, its registers at launch and per warpgroup
    role after setmaxnreg (the USETMAXREG operands: the producer's release, the consumers'
    allocation), shared memory and CTAs per SM. Absent from a build without sm 9.0."""
    resources = {label: f for label, _arch, f in labelled}
    hopper = {label: sass for label, sass in functions.items() if label.startswith("hopper::gather_gemm_kernel")}
    if not hopper:
        print("\nno Hopper (sm_90a) kernels in this build")
        return
    print(f"\n{'CTAs/SM':>7s} {'REG':>4s} {'prod':>4s} {'cons':>4s} {'SHARED':>6s} {'HGMMA':>5s} {'HMMA':>4s}"
          f" {'LDGSTS':>6s} {'SYNCS':>5s} {'STG.128':>7s} {'LDL/STL':>7s}  Hopper kernel (sm_90a)")
    failures = []
    for label, sass in sorted(hopper.items()):
        counts = {op: len(re.findall(rf"\b{re.escape(op)}\b", sass)) for op in HOPPER_REQUIRED + HOPPER_FORBIDDEN}
        counts["SYNCS"] = len(re.findall(r"\bSYNCS\.", sass))
        counts["STG.E.128"] = len(re.findall(r"\bSTG\.E\.128\b", sass))
        dealloc = re.findall(r"USETMAXREG\.DEALLOC\S*\s+(0x[0-9a-f]+)", sass)
        alloc = re.findall(r"USETMAXREG\.TRY_ALLOC\S*\s+\w+,\s*(0x[0-9a-f]+)", sass) or \
            re.findall(r"USETMAXREG\.TRY_ALLOC\S*\s+(0x[0-9a-f]+)", sass)
        producer = int(dealloc[0], 16) if dealloc else 0
        consumer = int(alloc[0], 16) if alloc else 0
        f = resources.get(label, {})
        reg, shared = int(f.get("REG", 0)), int(f.get("SHARED", 0))
        # The ring is dynamic shared memory, which SHARED leaves out: counted from the
        # configuration in the name, as config.h lays it out.
        shared += hopper_dynamic_shared(label)
        ctas = ctas_per_sm_sm90(384, reg, shared)
        local = counts["LDL"] + counts["STL"]
        print(f"{ctas:7d} {reg:4d} {producer:4d} {consumer:4d} {shared:6d} {counts['HGMMA']:5d} {counts['HMMA']:4d}"
              f" {counts['LDGSTS']:6d} {counts['SYNCS']:5d} {counts['STG.E.128']:7d} {local:7d}  {label}")
        if any(counts[op] == 0 for op in HOPPER_REQUIRED) or counts["HMMA"] or local or not producer or not consumer:
            failures.append(label)
        if producer * 128 + consumer * 256 > 65536:
            failures.append(label + " (registers after setmaxnreg exceed the SM's)")
    if failures:
        sys.exit(f"Hopper kernels without their instructions, with local memory, or without setmaxnreg: {failures}")
    print(f"{len(hopper)} Hopper kernel instances: HGMMA, LDGSTS, mbarrier waits, setmaxnreg and 16-byte"
          " stores in each; no HMMA, no local memory")


if __name__ == "__main__":
    main()
