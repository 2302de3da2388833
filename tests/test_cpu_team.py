"""The CPU kernels' thread team (csrc/cpu/parallel.h): the same results whether an operator
runs on the team or serially, the two rules that send it serial, and the ATen-loop switch."""

import os
import subprocess
import sys

import pytest
import torch

import fastconv
import fastconv.functional as F

ops = torch.ops.fastconv

CASES = [  # (input, weight, padding, groups): one per CPU algorithm family
    ((2, 16, 12, 12), (16, 16, 3, 3), 1, 1),    # Winograd
    ((2, 32, 9, 9), (24, 32, 1, 1), 0, 1),      # 1x1 GEMM
    ((2, 8, 11, 11), (8, 1, 3, 3), 1, 8),       # depthwise
    ((2, 12, 10, 10), (12, 3, 3, 3), 1, 4),     # grouped
    ((2, 3, 21, 21), (16, 3, 5, 5), 2, 1),      # few input channels (blocked direct / im2col)
]


@pytest.fixture(autouse=True)
def team_back_after():
    yield
    ops._cpu_team_hold_serial(0)
    ops._cpu_team_use_aten(False)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}g{c[3]}")
@pytest.mark.parametrize("algo", [None, "im2col_gemm", "direct"])
def test_serial_and_team_give_the_same_results(case, algo):
    xs, ws, pad, groups = case
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(xs, generator=gen, requires_grad=True)
    w = torch.randn(ws, generator=gen, requires_grad=True)

    def run():
        if algo:
            with fastconv.algorithms.force(algo):
                y = F.conv2d(x, w, padding=pad, groups=groups)
                gx, gw = torch.autograd.grad(y.square().sum(), (x, w))
        else:
            y = F.conv2d(x, w, padding=pad, groups=groups)
            gx, gw = torch.autograd.grad(y.square().sum(), (x, w))
        return y.detach(), gx, gw

    ops._cpu_team_hold_serial(0)
    start = list(ops._cpu_team_state())
    team = run()
    before = list(ops._cpu_team_state())
    used_loop = before[0] + before[2] > start[0] + start[2]  # ATen's GEMM alone has none of our regions
    ops._cpu_team_hold_serial(60_000)
    serial = run()
    after = list(ops._cpu_team_state())
    ops._cpu_team_hold_serial(0)
    for a, b in zip(team, serial):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if torch.get_num_threads() > 1 and used_loop:
        assert after[2] > before[2], "held serial, the kernels' regions ran on the calling thread"


def test_contention_rule():
    ms = 1_000_000
    assert not ops._cpu_team_region_was_contended(2 * ms, 0)
    assert not ops._cpu_team_region_was_contended(10 * ms, ms)       # a quarter or less of the region
    assert not ops._cpu_team_region_was_contended(ms, ms // 4)       # a woken thread's delay
    assert not ops._cpu_team_region_was_contended(3 * ms, 3 * ms // 2)  # a VM host's preemption
    assert ops._cpu_team_region_was_contended(6 * ms, 5 * ms)


def test_oversubscription_rule():
    over = ops._cpu_machine_oversubscribed
    # a team of 2 on 2 CPUs: alone it reads 2, and 3 when a kernel thread passes
    assert not over(2, 2, 2, False) and not over(3, 2, 2, False)
    assert over(4, 2, 2, False)
    # serial already: it stays so while the others leave no room for its second thread
    assert over(2, 2, 2, True) and not over(1, 2, 2, True)
    # 64 CPUs: eight passing threads are not yet oversubscription
    assert not over(72, 64, 64, False) and over(73, 64, 64, False)
    assert not over(-1, 2, 2, False) and not over(-1, 2, 2, True)  # no /proc/loadavg


def test_machine_load_reads_the_runnable_threads():
    runnable, cpus = ops._cpu_machine_load()
    assert cpus == os.cpu_count() or cpus >= 1
    if os.path.exists("/proc/loadavg"):
        assert runnable >= 1  # the reader itself


def test_state_counts_team_regions():
    x, w = torch.randn(2, 32, 28, 28), torch.randn(32, 32, 3, 3)
    before = list(ops._cpu_team_state())
    F.conv2d(x, w, padding=1)
    after = list(ops._cpu_team_state())
    assert len(after) == 5 and all(a >= b for a, b in zip(after, before))
    ops._cpu_team_hold_serial(1000)
    assert ops._cpu_team_state()[3] > 0  # milliseconds of serial running left
    ops._cpu_team_hold_serial(0)
    assert ops._cpu_team_state()[3] == 0


def test_aten_team_from_the_environment_gives_the_same_results():
    code = ("import torch, fastconv, fastconv.functional as F;"
            "g = torch.Generator().manual_seed(0);"
            "x = torch.randn(2, 16, 12, 12, generator=g); w = torch.randn(16, 16, 3, 3, generator=g);"
            "before = list(torch.ops.fastconv._cpu_team_state()); y = F.conv2d(x, w, padding=1);"
            "after = list(torch.ops.fastconv._cpu_team_state());"
            "assert after[:3] == before[:3], (before, after);"
            "print(float(y.double().sum()))")
    env = dict(os.environ, FASTCONV_CPU_TEAM="aten")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 16, 12, 12, generator=g), torch.randn(16, 16, 3, 3, generator=g)
    assert float(out.stdout.strip()) == pytest.approx(float(F.conv2d(x, w, padding=1).double().sum()), rel=1e-5)
