"""The CUDA emulation layer (csrc/simt) on its own: compiles each tests/simt/*_test.cpp with the
host compiler (plain C++20, no torch) and runs it. Each program prints `ok <check>` or
`FAIL <check>` lines and exits non-zero when a check failed."""

import concurrent.futures
import os
import pathlib
import shutil
import subprocess

import pytest
import torch
import torch.utils.cpp_extension

REPO = pathlib.Path(__file__).resolve().parent.parent
SIMT_TESTS = REPO / "tests" / "simt"
CXX = os.environ.get("CXX", "g++")

# Lines each program must print: the checks that state the emulator's contract.
EXPECTED = {
    "kernels_test": [
        f"ok {name} [{order}]"
        for order in ("forward", "reverse", "shuffle")
        for name in (
            "block_reduce result",
            "block_reduce no reports",
            "warp_reduce result",
            "vector_add result",
            "transpose result",
            "transpose no reports",
        )
    ],
    "checkers_test": [
        "ok racecheck: missing syncthreads, schedule 0",
        "ok schedules: the race gives different results forward and reverse",
        "ok racecheck: syncwarp orders a warp's shared accesses",
        "ok synccheck: barrier in a divergent branch (both blocks), schedule 2",
        "ok synccheck: threads wait at a barrier others exited before",
        "ok memcheck: global read past the end (dropped, reads 0)",
        "ok memcheck: shared index past the declared size",
        "ok initcheck: shared elements never written",
        "ok collective: calling lane missing from the mask",
        "ok collective: full mask in a partial warp",
        "ok collective: half the warp at syncthreads (no hang)",
        "ok limits: 1025 threads refused",
        "ok limits: 228 KiB dynamic shared refused",
    ],
    "tensor_core_test": [
        "ok ISA lane maps agree with the figures' entries and cover each matrix once",
        "ok mma m16n8k16 bf16: D = A B + C through the ISA lane maps",
        "ok mma m16n8k16 f16: D = A B + C through the ISA lane maps",
        "ok mma m16n8k8 tf32: D = A B + C through the ISA lane maps",
        "ok ldmatrix .x1",
        "ok ldmatrix .x2.trans",
        "ok ldmatrix .x4",
        "ok ldmatrix .x4.trans",
        "ok ldmatrix.x4 + ldmatrix.x2.trans + mma.bf16 from shared memory",
        "ok mma in a partial warp is reported",
        "ok cp.async without wait_group: uninitialised reads and copies never waited for",
    ],
    "pipeline_test": [
        f"ok ring: {what} [{order}]"
        for what in ("the mainloop's order is clean", "the barrier removed is reported",
                     "a prefetch hoisted above the barrier is reported")
        for order in ("forward", "reverse", "shuffle")
    ] + [
        "ok cp.async: a read of its own destination before the wait is reported",
        "ok cp.async: two copies in flight into the same bytes are reported",
    ],
    "hopper_sync_test": [
        "ok mbarrier: phases, parities and the transaction count (PTX ISA rules)",
        "ok mbarrier: a wait that can never complete is reported, not hung",
        "ok mbarrier: a use not ordered after the init is reported",
        "ok named barrier: bar.arrive / bar.sync order a hand-off",
        "ok named barrier: the same hand-off without it is reported",
    ] + [
        f"ok mbarrier ring: {what} [{order}]"
        for what in ("full/empty hand-offs are clean",
                     "a refill before the empty barrier's phase flipped is reported",
                     "a read before waiting on the full barrier is reported")
        for order in ("forward", "reverse", "shuffle")
    ],
    "wgmma_test": [
        "ok descriptor: fields and bit positions (PTX ISA matrix descriptor format)",
        "ok layout: K-major 128-byte swizzle, by hand and for a k16 step inside the row",
        "ok layout: K-major 64- and 32-byte swizzles and interleaved core matrices",
        "ok fragment: m64nNk16 D, thread and register to row and column (the ISA's figure)",
        "ok wgmma m64n128k16 x 4 chained (k = 64), 128-byte swizzle, D fragment",
        "ok wgmma: the registers keep their values until wait_group, then hold D",
        "ok wgmma m64n256k16 x 4 chained, 128-byte swizzle",
        "ok fence.proxy.async: a generic-proxy write read by wgmma without it is reported",
        "ok wgmma ring: releasing a stage after wait_group is clean",
        "ok wgmma ring: a stage released before its wgmma completed is reported",
        "ok setmaxnreg: a count outside 24..256 or not a multiple of 8",
    ],
    "primitives_test": [
        "ok synccheck: a divergent barrier through sync_threads() names the kernel's lines",
        "ok synccheck: one barrier through sync_threads() is clean",
        "ok limits: a block over the kernel's launch bounds is refused",
        "ok tf32: round to nearest, ties away from zero (cvt.rna.tf32.f32), through mma",
        "ok tf32: the tensor core alone truncates (ignores the low 13 bits)",
        "ok tf32: infinity and NaN pass, the largest float rounds up to infinity",
        "ok tf32: tf32_round leaves Inf and every NaN (all-ones too) as they are",
    ],
    "hopper_pipeline_test": [
        f"ok hopper ring: {what} [{order}]"
        for order in ("forward", "reverse", "shuffle")
        for what in (
            "4 stages, 2 in flight, wgmma consumer, clean and right",
            "5 stages, 3 in flight, clean and right",
            "3 stages, none in flight, clean and right",
            "2 stages, none in flight, clean and right",
            "a refill before the empty barrier's phase flipped is reported",
            "a stage released before its wgmma completed is reported",
        )
    ],
    "metrics_test": [
        "ok coalesced float load of 32 elements: 4 sectors per request",
        "ok stride-32 float load: 32 sectors per request",
        "ok shared s[lane]: 0 bank conflicts",
        "ok shared s[lane * 32]: 31 extra wavefronts (32 accesses to one bank)",
    ],
}

PROGRAMS = sorted(p.stem for p in SIMT_TESTS.glob("*_test.cpp"))


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    """Compiles every program (two at a time: CI has two cores); maps name -> (path, error)."""
    if shutil.which(CXX) is None:
        pytest.skip(f"host C++ compiler {CXX!r} not found; the simt tests need g++ with C++20")
    out = tmp_path_factory.mktemp("simt")

    def build(name):
        exe = out / name
        # primitives.h (primitives_test) includes c10's error macros: torch's headers, no library.
        torch_includes = [f"-I{d}" for d in torch.utils.cpp_extension.include_paths()]
        cmd = [CXX, "-std=c++20", "-O1", "-pthread", "-DFASTCONV_SIMT=1", f"-I{REPO / 'csrc'}", f"-I{SIMT_TESTS}",
               *torch_includes, str(SIMT_TESTS / f"{name}.cpp"), "-o", str(exe)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        return name, (exe if res.returncode == 0 else None, res.stderr[-4000:])

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(build, PROGRAMS))


def test_programs_found():
    assert set(EXPECTED) <= set(PROGRAMS)


@pytest.mark.parametrize("name", PROGRAMS)
def test_simt_program(binaries, name):
    exe, err = binaries[name]
    assert exe is not None, f"{name} did not compile:\n{err}"
    res = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    lines = res.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    assert res.returncode == 0 and not failed, res.stdout[-6000:] + res.stderr[-2000:]
    missing = [line for line in EXPECTED.get(name, []) if line not in lines]
    assert not missing, f"expected lines not printed: {missing}"
    assert "all checks passed" in lines


def test_inline_ptx_that_touches_memory_declares_it():
    """Every asm statement of primitives.h that reads or writes memory (a [address] operand,
    cp.async's group operations, ldmatrix) declares a "memory" clobber, so that nvcc keeps
    ordinary loads and stores on their side of it; mma, which only reads registers, need not."""
    import re

    text = (REPO / "csrc" / "cuda" / "common" / "primitives.h").read_text()
    statements = re.findall(r"asm(?: volatile)?\((.*?)\);", text, flags=re.S)
    assert len(statements) >= 12, "the inline PTX moved out of primitives.h?"
    for statement in statements:
        template = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', statement.split(":")[0]))
        touches_memory = "[" in template or "cp.async" in template or "ldmatrix" in template
        if touches_memory:
            assert '"memory"' in statement, f"no memory clobber: {template.strip()}"
        elif "mma" in template:
            assert "[" not in template
