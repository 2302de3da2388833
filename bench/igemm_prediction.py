"""The implicit-GEMM kernels' predicted H200 time per seed-suite layer (bf16, channels_last,
fprop), written before any GPU ran them. A model, not a measurement: see bench/NOTES.md for
its inputs. Usage: python bench/igemm_prediction.py [--batch 32] [--baseline RESULT.json]
[--family mma_sync|hopper] (--baseline adds the cuDNN float32/TF32 times measured on the H200
for comparison; --family hopper models the sm_90a wgmma family, falling back to the mma.sync
model where it does not claim a layer)."""

import argparse
import json
import math

from fastconv.bench import suites

SMS = 132
PEAK_MMA_SYNC = 0.5 * 989e12  # mma.sync reaches about half of wgmma's dense bf16 rate on Hopper
BANDWIDTH = 4.19e12  # device-to-device copy measured on the H200 (bytes read + written)
LAUNCH = 4e-6
# The fraction of the mma.sync rate each tile sustains in its mainloop when the SMs are full:
# 128x128 (8 KiB A + 8 KiB B per 32-deep slice for 1 MFLOP, 2 CTAs/SM) and 64x64 (half the
# reuse; 4 stages, up to 4 CTAs/SM by shared memory).
TILES = {"igemm_128x128": (128, 128, 0.45, 2), "igemm_64x64": (64, 64, 0.30, 4)}


# The Hopper family (csrc/cuda/hopper/): one CTA per SM (160-197 KiB of ring), wgmma from
# 128-byte-swizzled shared memory that a cp.async producer warpgroup fills from L2.
# - Issue cap: the bf16 GEMM rate measured on this card (788 TFLOP/s, device KINDS.md) times
#   what two consumer warpgroups keep of it with one wgmma group in flight: 0.80 at N = 256,
#   0.70 at N = 128, 0.60 at N = 64 (the B operand's reuse halves each time, and each wgmma
#   does less work per issue; CUTLASS's pingpong and cooperative kernels are the anchors, no
#   figure of ours).
# - L2 cap: every stage is copied from L2 by the CTA alone (no cluster multicast), so the tile's
#   FLOPs per byte of fill times L2's bandwidth bounds the rate. L2 bandwidth is an assumption,
#   not a measurement here: ~5.5 TB/s, public microbenchmarks of an H100.
# - Per tile, the ring fills (2 stages) and the epilogue (~2 stage-times: staging, 16-byte
#   stores) are not overlapped with another tile's mainloop: no persistent scheduler yet.
WGMMA_GEMM = 788e12
L2_BANDWIDTH = 5.5e12
HOPPER_TILES = {"hopper_128x256": (128, 256, 0.80), "hopper_128x128": (128, 128, 0.70), "hopper_128x64": (128, 64, 0.60)}


def predict_hopper(case, batch):
    """The Hopper family's time, or None where it does not claim the layer (then mma.sync's)."""
    if case.one_d or case.transposed:
        return None
    g = case.groups
    if (case.C // g) % 8 or (case.K // g) % 8:  # 16-byte channel runs
        return None
    n = case.batch(batch)
    P, Q = case.output_size()
    M, N, K = n * P * Q, case.K // g, (case.C // g) * case.R * case.S
    wide = N > 128 and math.ceil(M / 128) * math.ceil(N / 256) * g >= SMS
    name = "hopper_128x256" if wide else "hopper_128x128" if N > 64 else "hopper_128x64"
    bm, bn, issue = HOPPER_TILES[name]
    tiles = math.ceil(M / bm) * math.ceil(N / bn) * g
    tile_eff = (M * N * g) / (tiles * bm * bn)
    waves = tiles / SMS
    wave_eff = waves / math.ceil(waves)
    k_tiles = math.ceil(K / 64)
    fill_eff = k_tiles / (k_tiles + 4)
    intensity = 2 * bm * bn * 64 / ((bm + bn) * 64 * 2)  # FLOPs per byte of a stage
    rate = min(WGMMA_GEMM * issue, intensity * L2_BANDWIDTH)
    flops = 2 * M * N * K * g
    bytes_ = 2 * (n * case.C * case.H * case.W + case.K * (case.C // g) * case.R * case.S + n * case.K * P * Q)
    t_math = flops / (rate * tile_eff * wave_eff * fill_eff)
    t_mem = bytes_ / BANDWIDTH
    t = max(t_math, t_mem) + LAUNCH
    return {"algorithm": name, "ms": t * 1e3, "tflops": flops / t / 1e12, "bound": "math" if t_math > t_mem else "memory",
            "tile_eff": tile_eff, "wave_eff": wave_eff, "flops": flops, "rate_cap": rate / 1e12}


def predict(case, batch):
    if case.one_d or case.transposed:
        return None
    n = case.batch(batch)
    P, Q = case.output_size()
    g = case.groups
    M, N, K = n * P * Q, case.K // g, (case.C // g) * case.R * case.S
    if (case.C // g) * 2 % 8 or (case.K // g) * 2 % 8:
        return {"algorithm": "direct (channels not 8-byte aligned)"}
    tiles128 = math.ceil(M / 128) * math.ceil(N / 128) * g
    name = "igemm_128x128" if tiles128 >= SMS and N > 64 else "igemm_64x64"
    bm, bn, frac, per_sm = TILES[name]
    tiles = math.ceil(M / bm) * math.ceil(N / bn) * g
    tile_eff = (M * N * g) / (tiles * bm * bn)
    waves = tiles / (SMS * per_sm)
    wave_eff = waves / math.ceil(waves)
    # A short reduction spends its time filling the pipeline: 2 slices of fill per tile.
    k_slices = math.ceil(K / 32)
    fill_eff = k_slices / (k_slices + 2)
    flops = 2 * M * N * K * g
    bytes_ = 2 * (n * case.C * case.H * case.W + case.K * (case.C // g) * case.R * case.S + n * case.K * P * Q)
    t_math = flops / (PEAK_MMA_SYNC * frac * tile_eff * wave_eff * fill_eff)
    t_mem = bytes_ / BANDWIDTH
    t = max(t_math, t_mem) + LAUNCH
    return {"algorithm": name, "ms": t * 1e3, "tflops": flops / t / 1e12, "bound": "math" if t_math > t_mem else "memory",
            "tile_eff": tile_eff, "wave_eff": wave_eff, "flops": flops}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--baseline")
    ap.add_argument("--family", choices=("mma_sync", "hopper"), default="mma_sync")
    args = ap.parse_args(argv)
    base = {}
    if args.baseline:
        data = json.load(open(args.baseline))
        for row in data.get("bench", data)["rows"]:
            base[(row["group"], row["name"])] = row["baseline_ms"]
    print(f"{'layer':28} {'algorithm':14} {'pred ms':>8} {'TFLOP/s':>8} {'bound':>7} {'tile':>5} {'wave':>5}"
          + ("  cuDNN tf32 ms" if base else ""))
    for case in suites.seed_suite():
        if not isinstance(case, suites.ConvCase):
            continue
        p = (predict_hopper(case, args.batch) if args.family == "hopper" else None) or predict(case, args.batch)
        label = f"{case.group}/{case.name}"
        if p is None:
            print(f"{label:28} transposed or 1-D: dgrad phases / not in this model")
            continue
        if "ms" not in p:
            print(f"{label:28} {p['algorithm']}")
            continue
        extra = f"  {base[(case.group, case.name)]:.3f}" if (case.group, case.name) in base else ""
        print(f"{label:28} {p['algorithm']:14} {p['ms']:8.3f} {p['tflops']:8.1f} {p['bound']:>7} "
              f"{p['tile_eff']:5.2f} {p['wave_eff']:5.2f}{extra}")


if __name__ == "__main__":
    main()
