#!/usr/bin/env bash
# Builds the CMake project (libfastconv + the C++ test) against the active Python's libtorch
# and runs ctest. A CUDA build of torch makes find_package(Torch) look for the CUDA toolkit
# and NVRTC; the hints below point it at this machine's toolkit and torch's nvidia packages.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cmake}
prefix=$(python -c 'import torch; print(torch.utils.cmake_prefix_path)')
args=(-DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release -DTORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}")
if python -c 'import sys, torch; sys.exit(torch.version.cuda is None)'; then
  cuda_home=${CUDA_HOME:-/usr/local/cuda}
  nvrtc=$(python - <<'PY'
import glob, os
try:
    import nvidia
    paths = [p for base in nvidia.__path__ for p in glob.glob(os.path.join(base, "*", "lib", "libnvrtc.so*"))]
except ImportError:
    paths = []
print(sorted(p for p in paths if "builtins" not in p and ".alt." not in p)[0] if paths else "")
PY
)
  args+=(-DCUDA_TOOLKIT_ROOT_DIR="$cuda_home")
  [ -n "$nvrtc" ] && args+=(-DCUDA_nvrtc_LIBRARY="$nvrtc")
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" "${args[@]}"
cmake --build "$build" -j "${MAX_JOBS:-2}"
ctest --test-dir "$build" --output-on-failure
