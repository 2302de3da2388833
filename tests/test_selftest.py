"""The on-device self-test's bookkeeping and the committed record of verified kernels, on any
machine: the kernel states the library reports, the per-GPU, per-kernel verdicts the gate
reads, the cache and its build identity, the record's digests, and the clear refusal without
a GPU. (The case matrix itself, and the gate on an emulated GPU, run under emulation in
test_emulated_cuda.py and test_emulated_gate.py; on a GPU in bench/gpu_check.sh.)"""

import ast
import json
import pathlib

import pytest
import torch

import fastconv
import fastconv._verified as verified
import fastconv.selftest as selftest

ops = torch.ops.fastconv
CUDA_BUILD = bool(fastconv.algorithms.names("cuda"))
REPO = pathlib.Path(__file__).resolve().parent.parent


def test_cpu_kernels_are_verified_and_cuda_ones_emulated():
    assert set(ops._algorithm_states("cpu")) == {"verified"}
    assert ops._roi_kernel_state("cpu") == "verified"
    states = ops._algorithm_states("cuda")
    assert len(states) == len(fastconv.algorithms.names("cuda"))
    assert set(states) <= {"emulated"}  # verification comes from the record, not the build


def test_verdicts_per_gpu_and_kernel():
    index = 97  # no such GPU: nothing else reads it
    assert ops._selftest_result(index, "direct") == -1
    ops._set_selftest_result(index, "direct", False, "basic float32 nchw forward: rel_err 1")
    ops._set_selftest_result(index, "igemm_64x64", True)
    assert ops._selftest_result(index, "direct") == 0
    assert ops._selftest_result(index, "igemm_64x64") == 1
    assert ops._selftest_result(index + 1, "igemm_64x64") == -1
    ops._clear_selftest_results(index)
    assert ops._selftest_result(index, "igemm_64x64") == -1


@pytest.mark.skipif(not CUDA_BUILD, reason="a CUDA build")
def test_the_gate_says_why_per_kernel():
    index = 96
    assert ops._kernel_may_run("cpu", "direct", -1, 0)
    assert not ops._kernel_may_run("cuda", "direct", index, 90)
    assert "python -m fastconv.selftest" in ops._kernel_refusal("cuda", "direct", index, 90)
    selftest.apply(index, {"direct": ["direct: basic float32 nchw forward: rel_err 1"], "igemm_64x64": []})
    assert "direct: basic float32 nchw forward: rel_err 1" in ops._kernel_refusal("cuda", "direct", index, 90)
    assert ops._kernel_may_run("cuda", "igemm_64x64", index, 90)
    assert ops._kernel_refusal("cuda", "igemm_64x64", index, 90) == ""
    with pytest.raises(ValueError, match="no kernel 'nonsense'"):
        ops._kernel_may_run("cuda", "nonsense", index, 90)
    ops._clear_selftest_results(index)


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "cache"))
    assert selftest.cache_path() == str(tmp_path / "cache" / "selftest.json")
    assert selftest._load_cache() == {}
    entry = {"kernels": {"direct": [], "igemm_64x64": ["igemm_64x64: basic ..."]}}
    selftest._save_cache({"a GPU | sm_90": entry})
    assert selftest._load_cache() == {"a GPU | sm_90": entry}


def test_the_cache_key_follows_the_build():
    ident = selftest.build_identity()
    assert len(ident) == 16 and int(ident, 16) >= 0
    assert selftest.build_identity() == ident  # read once


@pytest.mark.skipif(not CUDA_BUILD, reason="a CUDA build")
def test_gated_kernels_are_the_emulated_ones_not_verified_there():
    every = selftest.gated_kernels(90)
    assert every == fastconv.algorithms.names("cuda") + list(ops._roi_kernel_names())
    # A kernel the record verifies for this SM version at these sources is not tried.
    digests = verified.source_digests()
    assert set(digests) >= {"direct", "implicit_gemm", "depthwise", "roi"}
    for kernel in every:
        assert verified.family_of(kernel) in digests, kernel


def write_record(directory, cc, kernels):
    path = directory / f"sm_{cc}.json"
    path.write_text(json.dumps({"arch": f"sm_{cc}", "compute_capability": cc, "gpu": "a GPU",
                                "date": "2026-12-02", "result": "bench/results/x.json", "kernels": kernels}))
    return path


@pytest.mark.skipif(not CUDA_BUILD, reason="a CUDA build")
def test_a_record_verifies_kernels_only_at_their_sources(tmp_path):
    digests = verified.source_digests()
    write_record(tmp_path, 90, {"direct": digests["direct"], "depthwise": "0" * 16})
    assert verified.verified_kernels(90, tmp_path) == ["direct"]
    assert verified.stale_kernels(90, tmp_path) == ["depthwise"]
    assert verified.verified_kernels(80, tmp_path) == []
    try:
        verified.load(tmp_path)
        assert ops._kernel_may_run("cuda", "direct", 95, 90)
        assert not ops._kernel_may_run("cuda", "depthwise", 95, 90)
        assert not ops._kernel_may_run("cuda", "direct", 95, 80)
    finally:
        ops._set_verified_kernels(90, [])
        verified.load()
    (tmp_path / "sm_90.json").rename(tmp_path / "sm_80.json")
    with pytest.raises(ValueError, match="must be named sm_90.json"):
        verified.records(tmp_path)


def test_every_gate_kernel_has_a_family():
    for kernel in fastconv.algorithms.names("cuda") + list(ops._roi_kernel_names()):
        assert verified.family_of(kernel)
    with pytest.raises(ValueError, match="no kernel family"):
        verified.family_of("winograd_4x4")


def test_the_committed_records_are_well_formed():
    for cc, record in verified.records().items():
        assert record["arch"] == f"sm_{cc}" and record["gpu"] and record["date"] and record["result"]
        assert (REPO / record["result"]).exists(), record["result"]
        for kernel in record["kernels"]:
            verified.family_of(kernel)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_without_a_gpu_it_says_so():
    with pytest.raises(RuntimeError, match="needs a GPU"):
        selftest.run()
    assert selftest.main([]) == 2
    selftest.ensure(torch.device("cpu"))  # a no-op off the GPU


def imports_of(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = (node.module or "").split(".")[0]
            names |= {base} if base else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("fastconv.")}
    return names


def test_the_gate_sits_below_functional_and_nn_below_the_models():
    """Python modules import downward only: the self-test (the gate) reaches the kernels through
    the operators, not fastconv.functional or fastconv.algorithms; fastconv.nn imports no model
    package."""
    # The package imported, not the checkout's: the torch-range check runs the suite against
    # an installed fastconv from a copy of the tests.
    pkg = pathlib.Path(fastconv.__file__).resolve().parent
    assert not imports_of(pkg / "selftest.py") & {"functional", "nn", "algorithms", "models"}
    assert not imports_of(pkg / "_verified.py") & {"functional", "nn", "algorithms", "models", "selftest"}
    assert "models" not in imports_of(pkg / "nn.py")
    # fastconv.nn imports routing, and fuse() matches the models' blocks by class name.
    assert not imports_of(pkg / "routing.py") & {"nn", "models", "fusion"}
    assert "models" not in imports_of(pkg / "fusion.py")
