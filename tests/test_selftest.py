"""The on-device self-test's bookkeeping, on any machine: the kernel states the library
reports, the per-GPU results the dispatcher reads, the cache, and the clear refusal without
a GPU. (The case matrix itself runs under emulation in test_emulated_cuda.py, and on a GPU in
bench/gpu_check.sh.)"""

import pytest
import torch

import fastconv
import fastconv.selftest as selftest

ops = torch.ops.fastconv


def test_cpu_kernels_are_verified_and_cuda_ones_emulated():
    assert set(ops._algorithm_states("cpu")) == {"verified"}
    states = ops._algorithm_states("cuda")
    assert len(states) == len(fastconv.algorithms.names("cuda"))
    assert set(states) <= {"emulated"}  # none has passed bench/gpu_check.sh yet


def test_results_per_gpu_index():
    index = 97  # no such GPU: nothing else reads it
    assert ops._selftest_result(index) == -1
    ops._set_selftest_result(index, False)
    assert ops._selftest_result(index) == 0
    ops._set_selftest_result(index, True)
    assert ops._selftest_result(index) == 1


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "cache"))
    assert selftest.cache_path() == str(tmp_path / "cache" / "selftest.json")
    assert selftest._load_cache() == {}
    selftest._save_cache({"a GPU | sm_90": {"passed": True, "failures": []}})
    assert selftest._load_cache() == {"a GPU | sm_90": {"passed": True, "failures": []}}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_without_a_gpu_it_says_so():
    with pytest.raises(RuntimeError, match="needs a GPU"):
        selftest.run()
    assert selftest.main([]) == 2
    selftest.ensure(torch.device("cpu"))  # a no-op off the GPU
