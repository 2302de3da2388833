#!/usr/bin/env bash
# The emulation build and its tests (CI step): the CPU build plus the CUDA kernels compiled
# for the host against csrc/simt/ (FASTCONV_SIMT=1), then tests/test_emulated_*.py, which run
# every CUDA kernel on CPU tensors with the race, sync, memory and init checkers on, the GPU's
# gate and launch checks on the emulated GPU, the torch.func / complex / zero-size tests under
# the same emulation, and each kernel's own tests (tests/test_cuda_kernels.py).
# Builds into its own folder and tests a copy of the package holding that extension, so the
# main build (the README's) is left as it is. Usage: bash tools/simt_check.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(pwd)/${1:-build-simt}"
start=$(date +%s)
FASTCONV_SIMT=1 MAX_JOBS="${MAX_JOBS:-2}" python setup.py -q build_ext \
  --build-temp "$out/temp" --build-lib "$out/lib"
echo "== emulation build done after $(( $(date +%s) - start ))s"
pkg="$out/pkg"
rm -rf "$pkg" && mkdir -p "$pkg"
cp -r fastconv tests pyproject.toml "$pkg/"
rm -f "$pkg"/fastconv/_C*.so
cp "$out"/lib/fastconv/_C*.so "$pkg/fastconv/"
cd "$pkg"
PYTHONPATH="$pkg" python -m pytest -q -p no:cacheprovider tests/test_emulated_cuda.py tests/test_emulated_depthwise.py \
  tests/test_emulated_gate.py tests/test_emulated_func.py tests/test_cuda_kernels.py
echo "== emulation tests done after $(( $(date +%s) - start ))s"
