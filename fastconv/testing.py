"""Running fastconv's CUDA kernels without a GPU.

A build made with ``FASTCONV_SIMT=1 pip install --no-build-isolation .`` holds, besides the CPU
kernels, the CUDA kernels compiled for the host against fastconv's emulation layer
(``csrc/simt/``): a block's threads run as fibers that meet at barriers, warps of 32 lanes
exchange values, and every launch runs with its checkers on (racecheck, synccheck,
memcheck, initcheck, warp-collective masks). Inside ``with emulated_cuda():`` every fastconv
operator on CPU tensors runs the CUDA algorithm list and the CUDA RoI kernels that way, and a
checker's finding raises ``RuntimeError`` naming the kernel::

    with fastconv.testing.emulated_cuda(schedule="reverse"):
        fastconv.algorithms.names("cuda")          # the CUDA list, e.g. ['direct']
        with fastconv.algorithms.force("direct"):
            y = fastconv.functional.conv2d(x, w)   # x, w on the CPU

Emulation proves a kernel's logic: indexing, bounds, barriers, warp exchanges, fragment
layouts. It proves nothing about timing, memory ordering between blocks, or the hardware's
real scheduling; only a GPU run does (bench/gpu_check.sh).
"""

import contextlib

import torch

from . import _C  # noqa: F401  (loads the library and its operators)

__all__ = ["emulation_available", "emulated_cuda", "emulated_launches", "SCHEDULES"]

# The orders a block's threads are run in: results that depend on the order show up as
# differences between them.
SCHEDULES = {"forward": 0, "reverse": 1, "shuffle": 2}

_active = []


def emulation_available():
    """Whether this build has the emulated CUDA kernels (FASTCONV_SIMT=1)."""
    return bool(torch.ops.fastconv._emulation_built())


@contextlib.contextmanager
def emulated_cuda(schedule="forward", seed=0, threads=1, metrics=False, gate=False):
    """Runs fastconv's operators on CPU tensors through the emulated CUDA kernels.

    schedule: "forward", "reverse" or "shuffle" (seeded by `seed`), the order in which a
    block's threads run between synchronisation points. threads: OS threads that run blocks
    (1, the default, is deterministic; 0 uses every core). Process-wide, like
    fastconv.algorithms.force, so that autograd's threads see it too; nests. metrics: trace
    every access and keep each launch's traffic (emulated_launches() takes them). gate: the
    emulated GPU (index -1, SM 9.0) keeps its emulated kernels off, as a real GPU does, until
    its self-test verdicts pass them (fastconv.selftest.apply(-1, ...)); off, every kernel runs.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"fastconv.testing.emulated_cuda: schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"fastconv.testing.emulated_cuda: seed must be a non-negative int, got {seed!r}")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise ValueError(f"fastconv.testing.emulated_cuda: threads must be a non-negative int, got {threads!r}")
    settings = (True, SCHEDULES[schedule], seed, threads, bool(metrics), bool(gate))
    torch.ops.fastconv._set_emulation(*settings)
    _active.append(settings)
    try:
        yield
    finally:
        _active.pop()
        torch.ops.fastconv._set_emulation(*(_active[-1] if _active else (False, 0, 0, 1, False, False)))


def emulated_launches():
    """The traffic of each emulated launch since the last call (inside emulated_cuda(metrics=True)),
    one dict per launch: kernel, grid, block; global load and store requests (warp-wide) and
    the 32-byte sectors they touched; bytes requested by all threads; distinct sectors over the
    launch; shared-memory requests, wavefronts and bank conflicts (extra wavefronts)."""
    import json

    return [json.loads(text) for text in torch.ops.fastconv._emulated_launches()]
