"""Which CUDA kernels are *verified*: passed bench/gpu_check.sh on real hardware, per SM version.

The record is committed, one file per architecture: ``fastconv/verified/sm_<major><minor>.json``,
written by ``tools/mark_verified.py`` from a gpu_check result (the result itself is kept in
bench/results/ with the card and the date). Each kernel is recorded with the source digest of
its family (its folder under csrc/cuda/, with csrc/cuda/common/ and csrc/common/'s headers),
which the build compiles in: a kernel counts as verified only while its sources are the ones
that ran on the GPU. Any change to them makes it *emulated* again until the next GPU check,
without anyone editing a flag. Verified kernels run on a GPU of that SM version by default;
the others wait for the on-device self-test (fastconv.selftest).
"""

import glob
import json
import os

import torch

from . import _C  # noqa: F401  (the operators)

__all__ = ["family_of", "source_digests", "records", "verified_kernels", "stale_kernels", "load"]

RECORD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "verified")

_FAMILIES = {"direct": "direct", "depthwise": "depthwise"}


def family_of(kernel):
    """The source folder (csrc/cuda/<family>/) of a kernel the gate names."""
    if kernel.startswith("igemm_"):
        return "implicit_gemm"
    if kernel.startswith("hopper_"):
        return "hopper"
    if kernel.startswith("roi_"):
        return "roi"
    if kernel in _FAMILIES:
        return _FAMILIES[kernel]
    raise ValueError(f"fastconv._verified.family_of: no kernel family for {kernel!r}")


def source_digests():
    """{family: digest} of the sources this build was compiled from ({} without them)."""
    return dict(entry.split("=", 1) for entry in torch.ops.fastconv._kernel_source_digests())


def records(directory=None):
    """{compute capability: record} of every committed record (a record: arch, gpu, date,
    result, kernels {name: family digest})."""
    out = {}
    for path in sorted(glob.glob(os.path.join(directory or RECORD_DIR, "sm_*.json"))):
        with open(path) as f:
            record = json.load(f)
        cc = int(record["compute_capability"])
        if os.path.basename(path) != f"sm_{cc}.json":
            raise ValueError(f"fastconv: {path} records compute capability {cc}; it must be named sm_{cc}.json")
        out[cc] = record
    return out


def _split(record, digests):
    current, stale = [], []
    for kernel, digest in sorted(record.get("kernels", {}).items()):
        (current if digests.get(family_of(kernel)) == digest else stale).append(kernel)
    return current, stale


def verified_kernels(compute_capability, directory=None):
    """The kernels verified on this SM version at this build's sources."""
    record = records(directory).get(int(compute_capability))
    return _split(record, source_digests())[0] if record else []


def stale_kernels(compute_capability, directory=None):
    """The kernels the record lists for this SM version whose sources have changed since."""
    record = records(directory).get(int(compute_capability))
    return _split(record, source_digests())[1] if record else []


def load(directory=None):
    """Hands the gate every record's verified kernels; fastconv does this on import."""
    digests = source_digests()
    for cc, record in records(directory).items():
        torch.ops.fastconv._set_verified_kernels(cc, _split(record, digests)[0])
