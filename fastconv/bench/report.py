"""Output of the benchmark: the table as it runs, JSON and CSV files, the summary line, the
plot, and the comparison of two result files."""

import csv
import io
import json
import math
import sys
from typing import Dict, List

from .suites import geometric_mean

SCHEMA = "fastconv-bench/1"
COLUMNS = ["group", "name", "op", "shape", "direction", "dtype", "layout", "device", "batch",
           "time_ms", "tflops", "gbps", "floor_pct", "baseline_ms", "ratio", "rel_error",
           "peak_mib", "baseline_peak_mib", "memory_ratio", "noise", "baseline_noise", "algorithm", "error"]


def _fmt(value, spec, width):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    return format(value, spec).rjust(width)


def header_line():
    return (f"{'progress':20s} {'group':11s} {'layer':20s} {'dir':5s} {'fastconv ms':>11s} {'rate':>12s} "
            f"{'floor%':>6s} {'baseline ms':>11s} {'ratio':>6s} {'rel err':>8s} {'peak MiB':>9s} {'mem':>5s}")


def row_line(index, total, row):
    done = int(10 * index / total)
    progress = f"[{'#' * done}{'.' * (10 - done)}] {index:>3d}/{total:<3d}"
    if row.get("error"):
        return f"{progress} {row['group']:11s} {row['name'][:20]:20s} {row['direction']:5s} error: {row['error']}"
    rate = (f"{row['tflops']:.3f} TFLOP/s" if row.get("tflops") else
            f"{row['gbps']:.1f} GB/s" if row.get("gbps") else "")
    return (f"{progress} {row['group']:11s} {row['name'][:20]:20s} {row['direction']:5s} "
            f"{_fmt(row['time_ms'], '.3f', 11)} {rate:>12s} {_fmt(row.get('floor_pct'), '.1f', 6)} "
            f"{_fmt(row['baseline_ms'], '.3f', 11)} {_fmt(row['ratio'], '.2f', 6)} {_fmt(row['rel_error'], '.1e', 8)} "
            f"{_fmt(row.get('peak_mib'), '.1f', 9)} {_fmt(row.get('memory_ratio'), '.2f', 5)}{_team_note(row)}")


def _team_note(row):
    """Shown when fastconv's CPU team found its threads kept off their cores (csrc/cpu/parallel.h)."""
    team = row.get("cpu_team") or {}
    if not team.get("contended") and not team.get("serial_regions"):
        return ""
    return f"  serial {team['serial_regions']}/{team['serial_regions'] + team['regions']} regions"


def summarize(rows: List[Dict]) -> Dict:
    groups: Dict[str, List[float]] = {}
    for row in rows:
        if row.get("ratio"):
            groups.setdefault(row["group"], []).append(row["ratio"])
    summary = {group: geometric_mean(ratios) for group, ratios in groups.items()}
    summary["all"] = geometric_mean([r for ratios in groups.values() for r in ratios])
    return summary


def summary_line(summary: Dict) -> str:
    parts = [f"{group} {ratio:.2f}x" for group, ratio in summary.items() if group != "all"]
    return (f"geometric-mean speed-up over the baseline (>1: fastconv faster): "
            f"{', '.join(parts)}; all {summary.get('all', float('nan')):.2f}x")


def write_json(path, result):
    with open(path, "w") as f:
        json.dump(result, f, indent=1, default=str)


def write_csv(path, result):
    with open(path, "w", newline="") as f:
        for section in ("machine", "versions", "settings", "peaks"):
            for key, value in result[section].items():
                f.write(f"# {section}.{key}: {value}\n")
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in result["rows"]:
            writer.writerow(row)


def load(path) -> Dict:
    with open(path) as f:
        result = json.load(f)
    if result.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a fastconv-bench result (schema {result.get('schema')!r}, expected {SCHEMA!r})")
    return result


def row_key(row):
    return (row["group"], row["name"], row["direction"], row["dtype"], row["layout"], row["device"], row["batch"])


def compare(old: Dict, new: Dict, threshold: float = 0.05, out=None) -> List[Dict]:
    """Prints each row's change and returns the regressions: rows where fastconv got slower by
    more than the threshold and more than twice the two runs' measured noise together."""
    out = out or sys.stdout
    old_rows = {row_key(r): r for r in old["rows"] if r.get("time_ms")}
    regressions = []
    out.write(f"{'group':11s} {'layer':20s} {'dir':5s} {'old ms':>10s} {'new ms':>10s} {'change':>8s}  verdict\n")
    matched = 0
    for row in new["rows"]:
        before = old_rows.get(row_key(row))
        if not before or not row.get("time_ms"):
            continue
        matched += 1
        change = row["time_ms"] / before["time_ms"] - 1
        noise = 2 * ((before.get("noise") or 0) + (row.get("noise") or 0))
        limit = max(threshold, noise)
        verdict = "REGRESSION" if change > limit else ("faster" if change < -limit else "same")
        if verdict == "REGRESSION":
            regressions.append({**row, "old_time_ms": before["time_ms"], "change": change})
        out.write(f"{row['group']:11s} {row['name'][:20]:20s} {row['direction']:5s} {before['time_ms']:10.3f} "
                  f"{row['time_ms']:10.3f} {100 * change:+7.1f}%  {verdict}\n")
    if old.get("machine", {}).get("cpu") != new.get("machine", {}).get("cpu") or \
            old.get("machine", {}).get("gpu") != new.get("machine", {}).get("gpu"):
        out.write("note: the two results come from different machines\n")
    out.write(f"{matched} rows compared, {len(regressions)} regression(s) beyond noise\n")
    return regressions


def plot(result: Dict, path: str):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'fastconv[plot]' (or pip install matplotlib)") from None
    rows = [r for r in result["rows"] if r.get("ratio")]
    if not rows:
        raise RuntimeError("no measured rows to plot")
    groups = list(dict.fromkeys(r["group"] for r in rows))
    colors = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(max(8, 0.32 * len(rows) + 2), 5))
    labels = []
    for i, r in enumerate(rows):
        ax.bar(i, r["ratio"], color=colors(groups.index(r["group"]) % colors.N))
        labels.append(f"{r['name']} {r['direction']}" if len({x['direction'] for x in rows}) > 1 else r["name"])
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("speed-up over baseline (log; >1: fastconv faster)")
    machine = result["machine"].get("gpu") or result["machine"].get("cpu")
    s = result["settings"]
    ax.set_title(f"fastconv vs baseline: {s['suite']} {s['dtype']} {s['layout']} {s['direction']} on {machine}", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors(i % colors.N)) for i in range(len(groups))]
    ax.legend(handles, groups, fontsize=7, ncol=min(len(groups), 6), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
