"""fastconv-bench: argument parsing, tiny runs in every direction, the JSON and CSV files,
compare and the plot."""

import csv
import json
import subprocess
import sys

import pytest
import torch

from fastconv.bench import cli, measure, report, suites

TINY = "N=1,C=4,H=6,W=7,K=6,R=3,pad=1,groups=2"
FAST = ["--repeats", "2", "--warmup", "0", "--device", "cpu"]


def run(argv, capsys):
    code = cli.main(argv)
    return code, capsys.readouterr()


def test_parse_layer():
    case = suites.parse_layer("N=8,C=64,H=56,W=56,K=64,R=3,stride=2x1,pad=1,groups=1")
    assert (case.N, case.C, case.H, case.W, case.K, case.R, case.S) == (8, 64, 56, 56, 64, 3, 3)
    assert case.stride == (2, 1) and case.padding == (1, 1) and case.op == "conv2d"
    t = suites.parse_layer("C=8,H=5,K=4,R=2,stride=2,op=conv_transpose2d,output_padding=1")
    assert t.transposed and t.W == 5 and t.output_size() == (11, 11)
    line = suites.parse_layer("C=300,W=64,K=100,R=3,op=conv1d")
    assert line.one_d and line.op == "conv1d" and (line.R, line.S) == (1, 3)


@pytest.mark.parametrize("text,message", [
    ("C=4,H=6,K=6", "'R' is required"),
    ("C=4,H=6,K=6,R=3,Z=1", "unknown key 'Z'"),
    ("C=4,H=6,K=6,R=x", "not an integer"),
    ("C=4,H=6,K=6,R=3,op=conv3d", "op=conv3d"),
    ("C=4,H=6,K=0,R=3", "K must be positive"),
    ("C4", "KEY=VALUE"),
])
def test_bad_layer_is_a_clear_usage_error(text, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--layer", text] + FAST)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--direction", "sideways"], "invalid choice"),
    (["--batch", "0"], "--batch must be positive"),
    (["--repeats", "-1"], "--repeats must be positive"),
    (["--group", "nonesuch"], "no such group"),
    (["--algo", "winograd"], "--algo winograd"),
    (["--suite", "not_a_network"], "not_a_network"),
    (["--fused"], "--fused times whole networks"),
    (["--network", "resnet18", "--fused", "--direction", "all"], "--fused is inference"),
    (["--network", "resnet18,nonesuch"], "nonesuch"),
    (["--processes", "0"], "--processes must be positive"),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(FAST + argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("direction", suites.DIRECTIONS)
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d", "conv1d"])
def test_tiny_layer_every_direction(op, direction, capsys, tmp_path):
    layer = TINY + f",op={op}" if op != "conv1d" else "N=2,C=4,W=9,K=6,R=3,pad=1,op=conv1d"
    out = tmp_path / "r.json"
    code, io = run(["--layer", layer, "--direction", direction, "--json", str(out)] + FAST, capsys)
    assert code == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert not row.get("error"), row
    assert row["direction"] == direction and row["op"] == op
    assert row["rel_error"] < 1e-5
    assert row["time_ms"] > 0 and row["baseline_ms"] > 0 and row["tflops"] > 0
    if measure.PeakMemory("cpu").available:
        # tiny layers allocate below the measurement's 128 KiB resolution: zero is allowed
        assert row["peak_mib"] >= 0 and row["baseline_peak_mib"] >= 0
    assert "geometric-mean speed-up" in io.out


@pytest.mark.parametrize("tf32", ["on", "off"])
def test_tf32_flag_is_recorded_and_restored(tf32, capsys, tmp_path):
    """--tf32 sets torch.backends.cudnn.allow_tf32 for both sides of the comparison, records
    it in the settings, and leaves the caller's flag as it found it."""
    js = tmp_path / "r.json"
    before = torch.backends.cudnn.allow_tf32
    code, _ = run(["--layer", "N=1,C=4,H=6,W=6,K=4,R=3,pad=1", "--tf32", tf32, "--json", str(js)] + FAST, capsys)
    assert code == 0
    assert json.loads(js.read_text())["settings"]["allow_tf32"] is (tf32 == "on")
    assert torch.backends.cudnn.allow_tf32 is before


def test_json_and_csv_schema(capsys, tmp_path):
    js, cs = tmp_path / "r.json", tmp_path / "r.csv"
    code, io = run(["--group", "text1d", "--json", str(js), "--csv", str(cs)] + FAST, capsys)
    assert code == 0
    result = json.loads(js.read_text())
    assert result["schema"] == report.SCHEMA
    for key in ("cpu", "torch_threads"):
        assert key in result["machine"]
    for key in ("torch", "cuda", "cudnn", "onednn", "fastconv", "fastconv_git", "python"):
        assert key in result["versions"]
    assert result["peaks"]["matmul_tflops"] > 0 and result["peaks"]["copy_gbps"] > 0
    assert result["settings"]["device"] == "cpu" and result["settings"]["repeats"] == 2
    assert [r["name"] for r in result["rows"]] == ["kim_width3", "kim_width4", "kim_width5"]
    for row in result["rows"]:
        for col in ("time_ms", "baseline_ms", "ratio", "rel_error", "tflops", "floor_pct", "noise", "shape"):
            assert row[col] is not None, col
        assert row["ratio"] == pytest.approx(row["baseline_ms"] / row["time_ms"])
    assert set(result["summary"]) == {"text1d", "all"}
    lines = cs.read_text().splitlines()
    assert any(line.startswith("# machine.cpu:") for line in lines)
    assert any(line.startswith("# versions.torch:") for line in lines)
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert len(rows) == 3 and rows[0]["group"] == "text1d"


def test_roi_rows(capsys):
    pytest.importorskip("torchvision")  # the rows' baseline
    args = cli.settle_args(cli.run_parser(), cli.run_parser().parse_args(FAST))
    timer = cli.measure.Timer("cpu")
    peaks = {"matmul_tflops": 0.1, "copy_gbps": 10.0}
    for op in ("roi_align", "roi_pool"):
        case = suites.RoiCase("maskrcnn", op, op, 2, 8, 20, 24, 16, 3, 0.25)
        for direction in ("fprop", "dgrad", "all"):
            args.direction = direction
            row = cli.measure_case(case, args, timer, peaks, torch.float32)
            assert not row.get("error"), row
            assert row["rel_error"] < 1e-5 and row["gbps"] > 0
        args.direction = "wgrad"
        assert "no wgrad" in cli.measure_case(case, args, timer, peaks, torch.float32)["error"]


def test_fpn_pooler_and_deterministic_rows(capsys):
    """The seed suite's FPN pooler row (fastconv's RoIPooler against torchvision's
    MultiScaleRoIAlign) and deterministic RoIAlign row (both sides under
    torch.use_deterministic_algorithms(True), which the row leaves as it found it)."""
    pytest.importorskip("torchvision")
    names = {c.name: c for c in suites.seed_suite()}
    assert names["roi_align_7x7_det"].deterministic and names["fpn_pooler_7x7"].levels == 4
    args = cli.settle_args(cli.run_parser(), cli.run_parser().parse_args(FAST))
    timer = cli.measure.Timer("cpu")
    peaks = {"matmul_tflops": 0.1, "copy_gbps": 10.0}
    cases = [suites.FpnCase("maskrcnn", "fpn", 2, 8, 128, 192, 48, 7),
             suites.RoiCase("maskrcnn", "det", "roi_align", 2, 8, 20, 24, 16, 3, 0.25, deterministic=True)]
    before = torch.are_deterministic_algorithms_enabled()
    for case in cases:
        for direction in ("fprop", "dgrad", "all"):
            args.direction = direction
            row = cli.measure_case(case, args, timer, peaks, torch.float32)
            assert not row.get("error"), row
            assert row["rel_error"] < 1e-5 and row["gbps"] > 0
            assert torch.are_deterministic_algorithms_enabled() == before


def test_forced_algorithm_that_cannot_run_is_reported_not_fatal(capsys, tmp_path):
    out = tmp_path / "r.json"
    code, io = run(["--layer", TINY, "--algo", "depthwise", "--json", str(out)] + FAST, capsys)
    assert code == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert "cannot run" in row["error"]


def test_network_trace_and_whole_network(capsys):
    pytest.importorskip("torchvision")
    cases = suites.network_suite("resnet18")
    assert sum(c.count for c in cases) == 20  # resnet18 runs 20 convolutions
    assert cases[0].R == 7 and cases[0].stride == (2, 2)
    code, io = run(["--network", "squeezenet1_0", "--batch", "1", "--repeats", "1"] + FAST[2:], capsys)
    assert code == 0 and "whole" not in io.err
    assert "network" in io.out


@pytest.mark.parametrize("baseline", suites.FUSED_BASELINES)
def test_fused_network_rows_compare_the_fused_copy_with_each_baseline(baseline):
    """The --fused runners on a small image: fastconv.fuse() of the converted model against
    torch eager, and against torch.compile with freezing (compiled once, before timing)."""
    case = suites.NetworkCase("network", "resnet18", image=32, fused=True, baseline=baseline)
    assert (case.group, case.name, case.directions()) == ("resnet18", f"fused vs {baseline}", ("fprop",))
    fast, base = case.runners(1, "cpu", torch.float32, "nchw", "fprop", torch.Generator().manual_seed(0))
    (a,), (b,) = fast(), base()
    assert a.shape == (1, 1000) and measure.max_rel_error([a], [b]) < 1e-4


def test_network_baseline_runs_on_torch_layers():
    """fastconv.models build on fastconv's layers; the baseline of a network row is the same
    network on torch.nn's, or the row would time fastconv against itself."""
    model = suites._on_torch_layers(suites.network_model("resnet18")[0])
    kinds = {type(m) for m in model.modules() if isinstance(m, torch.nn.Conv2d)}
    assert kinds == {torch.nn.Conv2d}


def fake_result(times, noise=0.01):
    rows = [dict(group="g", name=f"l{i}", direction="fprop", dtype="float32", layout="nchw", device="cpu",
                 batch=1, time_ms=t, baseline_ms=1.0, ratio=1.0 / t, noise=noise) for i, t in enumerate(times)]
    return {"schema": report.SCHEMA, "machine": {"cpu": "x"}, "versions": {}, "peaks": {},
            "settings": {"suite": "seed", "dtype": "float32", "layout": "nchw", "direction": "fprop"},
            "rows": rows, "summary": report.summarize(rows)}


def test_compare_flags_regressions_beyond_noise(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(fake_result([1.0, 1.0, 1.0])))
    new.write_text(json.dumps(fake_result([1.02, 1.5, 0.5])))
    assert cli.main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "same" in lines[1] and "REGRESSION" in lines[2] and "faster" in lines[3]
    assert "3 rows compared, 1 regression" in out
    assert cli.main(["compare", str(old), str(new), "--strict"]) == 1
    # Noisy measurements widen the band: +50% is within twice the summed noise (0.3 + 0.01).
    noisy = tmp_path / "noisy.json"
    noisy.write_text(json.dumps(fake_result([1.0, 1.0, 1.0], noise=0.3)))
    assert cli.main(["compare", str(noisy), str(new), "--strict"]) == 0
    capsys.readouterr()


def test_compare_rejects_other_files(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(SystemExit):
        cli.main(["compare", str(bad), str(bad)])
    assert "not a fastconv-bench result" in capsys.readouterr().err


def test_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    result = tmp_path / "r.json"
    result.write_text(json.dumps(fake_result([1.0, 0.5, 2.0])))
    png = tmp_path / "r.png"
    assert cli.main(["plot", str(result), str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png2 = tmp_path / "run.png"
    code, io = run(["--layer", TINY, "--plot", str(png2)] + FAST, capsys)
    assert code == 0 and png2.stat().st_size > 1000


def test_plot_without_matplotlib_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    with pytest.raises(SystemExit) as e:
        cli.main(["--layer", TINY, "--plot", str(tmp_path / "x.png")] + FAST)
    assert e.value.code == 2
    assert "needs matplotlib" in capsys.readouterr().err


def test_console_script_and_module_entry_points():
    out = subprocess.run([sys.executable, "-m", "fastconv.bench", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--suite" in out.stdout


def test_peak_memory_follows_allocations():
    memory = measure.PeakMemory("cpu")
    if not memory.available:
        pytest.skip("needs Linux's /proc/self/clear_refs and glibc")

    # Every block above 32 MiB, glibc's largest dynamic mmap threshold: smaller blocks may
    # come from the heap once earlier tests have freed large ones (glibc then raises the
    # threshold), where freed pages stay resident and a later block can land on fresh ones
    # (CI on torch 2.13 once read 46 MiB for a 40 MiB peak of 10 + 30 MiB blocks).
    def two_blocks_then_a_smaller_one():
        a = torch.ones(40 * 2**20 // 4)
        b = torch.ones(60 * 2**20 // 4)  # both alive: 100 MiB at the peak
        del a, b
        return torch.ones(36 * 2**20 // 4)  # a sum over the call would read 136 MiB

    # The resident high-water mark moves in whole pages and picks up the interpreter's own
    # allocations beside the call's (CI once read 41 MiB for the 40): 2 MiB of slack, still
    # far from the 36 MiB that tells a peak from a sum.
    assert abs(memory.bytes(lambda: torch.ones(50 * 2**20 // 4)) - 50 * 2**20) < 2 * 2**20
    assert abs(memory.bytes(two_blocks_then_a_smaller_one) - 100 * 2**20) < 2 * 2**20


def test_oversubscribed_run_times_each_side_beside_its_own_kind(capsys, tmp_path):
    out = tmp_path / "o.json"
    code, cap = run(["--layer", TINY, "--processes", "2", "--json", str(out)] + FAST, capsys)
    assert code == 0, cap.err
    assert "oversubscribed: 2 processes" in cap.out
    result = json.loads(out.read_text())
    assert result["settings"]["processes"] == 2
    row = result["rows"][0]
    assert row["time_ms"] > 0 and row["baseline_ms"] > 0
    assert set(row["cpu_team"]) == {"regions", "contended", "serial_regions"}


def test_processes_needs_the_cpu(monkeypatch):
    parser = cli.run_parser()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(SystemExit):
        cli.settle_args(parser, parser.parse_args(["--device", "cuda", "--processes", "2"]))


def test_steady_timer_reports_the_mean_call_of_its_window():
    calls = []
    seconds = measure.SteadyTimer(window=0.02)(lambda: calls.append(1))
    assert len(calls) >= 2 and 0 < seconds < 0.02


def test_time_pair_calls_before_ahead_of_every_call_of_that_side():
    seen = []
    measure.time_pair(measure.Timer("cpu"), lambda: seen.append("f"), lambda: seen.append("b"), warmup=1,
                      repeats=3, before=lambda side, run: seen.append(side))
    pairs = list(zip(seen[::2], seen[1::2]))
    assert len(pairs) == 8 and all(side[0] == call for side, call in pairs)
