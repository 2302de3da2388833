#!/usr/bin/env bash
# The low end of the supported torch range: builds fastconv (CPU kernels) against another torch
# in a venv of its own and runs the test suite there. torchvision is pinned to the newest torch
# only, so its comparisons skip here; everything else runs.
#   bash tools/compat_check.sh [torch version, default 2.13.0] [venv dir]
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-2.13.0}
venv=${2:-.venv-torch-$version}
python3 -m venv "$venv"
. "$venv/bin/activate"
pip install -q "torch==$version" pytest hypothesis expecttest ninja numpy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A copy of the tracked tree, so that the in-place build does not touch this checkout's.
git ls-files -z | xargs -0 -I{} cp --parents {} "$work"
cd "$work"
FASTCONV_CUDA=0 pip install -q --no-build-isolation .
# The installed package, not the copy's sources (which have no built extension).
rm -rf fastconv
python -c "import torch, fastconv, sys; print(f'== fastconv on torch {torch.__version__}, Python {sys.version.split()[0]}')"
# CI exports FASTCONV_CUDA=1 to demand the CUDA build of the main run; this build is CPU-only
# by design, so that demand must not reach the tests here.
FASTCONV_CUDA=0 python -m pytest -q -p no:cacheprovider
