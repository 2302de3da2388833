"""Shared test machinery. Every test that takes `device` runs on the CPU, and on CUDA where a
GPU is present. Kernels run with their output buffers pre-filled with NaN, so an element a
kernel forgets to write cannot pass."""

import os

os.environ.setdefault("FASTCONV_FILL_OUTPUTS_WITH_NAN", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import fastconv  # noqa: E402
import fastconv.functional as F  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def pytest_collection_modifyitems(items):
    """Marks the CUDA variants, so that bench/gpu_check.sh selects its sanitizer subsets by
    marker (-m "sanitizer and cuda") rather than by test names."""
    for item in items:
        params = getattr(item, "callspec", None)
        if params is not None and params.params.get("device") == "cuda":
            item.add_marker(pytest.mark.cuda)


# float32 tests hold kernels to float32 accuracy: TF32 (which torch allows cuDNN by default,
# and fastconv's implicit GEMM follows) is off here, as in PyTorch's own tests, and switched
# on by the tests of the TF32 path.
torch.backends.cudnn.allow_tf32 = False


@pytest.fixture
def allow_tf32():
    """Call it to switch TF32 on for the rest of the test, through torch.backends.cudnn.flags
    (direct assignment raises once a torch.testing module has frozen cuDNN's flags)."""
    import contextlib

    from fastconv._flags import cudnn_flags

    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(cudnn_flags(allow_tf32=True))


@pytest.fixture(autouse=True)
def _no_forced_algorithm():
    """A failing test must not leave its forced algorithm to the next one."""
    yield
    fastconv.algorithms.set_forced(None)


def rel_err(out, ref):
    """||out - ref|| / ||ref||, computed in float64 on the CPU (0 when both are empty or zero).
    The CPU, because references are often computed there while the output is on the GPU."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    denom = ref.norm()
    diff = (out - ref).norm()
    if denom == 0:
        return diff.item()
    return (diff / denom).item()


# Relative error allowed against a float64 reference computed from the same (rounded) inputs.
TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 4e-3,
    torch.bfloat16: 2e-2,
}


def operator_call(kind, x, w, kw):
    """The fastconv operator call that fastconv.functional.<kind>(x, w, **kw) makes: (2-D
    input, 2-D weight, stride, per-side padding, dilation, groups, output_padding or None),
    from the functional layer's own argument handling."""
    fn = f"fastconv.functional.{kind}"
    dims = 1 if kind.endswith("1d") else 2
    transposed = kind.startswith("conv_transpose")
    if x.dim() == dims + 1:  # unbatched
        x = x.unsqueeze(0)
    stride = F._ints(fn, "stride", kw.get("stride", 1), dims)
    dilation = F._ints(fn, "dilation", kw.get("dilation", 1), dims)
    if transposed:
        padding = F._explicit_padding(fn, kw.get("padding", 0), dims)
        output_padding = F._ints(fn, "output_padding", kw.get("output_padding", 0), dims)
    else:
        padding = F._padding(fn, kw.get("padding", 0), tuple(w.shape[2:]), stride, dilation)
        output_padding = None
    if dims == 1:
        x, w = x.unsqueeze(2), w.unsqueeze(2)
        stride, dilation, padding = (1,) + stride, (1,) + dilation, (0, 0) + padding
        output_padding = None if output_padding is None else (0,) + output_padding
    return x, w, stride, padding, dilation, kw.get("groups", 1), output_padding


def claims(algorithm, kind, x, w, kw, grads=False, device=None, passes=None):
    """The library's own answer: whether `algorithm` implements every direction that
    fastconv.functional.<kind>(x, w, **kw) runs, the forward pass only or with its gradients
    (conv: fprop, then dgrad and wgrad; transposed: dgrad, then fprop and wgrad); or, with
    `passes`, those of the passes named ("forward", "input" grad, "weight" grad). x and w are
    tensors (their dtype, layout and alignment count) or shapes (float64, contiguous)."""
    as_tensor = lambda t: t if isinstance(t, torch.Tensor) else torch.empty(t, dtype=torch.float64, device="meta")  # noqa: E731
    x4, w4, stride, padding, dilation, groups, output_padding = operator_call(kind, as_tensor(x), as_tensor(w), kw)
    forward = "dgrad" if kind.startswith("conv_transpose") else "fprop"
    by_pass = {"forward": forward, "input": "fprop" if forward == "dgrad" else "dgrad", "weight": "wgrad"}
    directions = [by_pass[q] for q in passes] if passes else ["fprop", "dgrad", "wgrad"] if grads else [forward]
    return all(
        fastconv.algorithms.can_implement(algorithm, d, x4, w4, stride, padding, dilation, groups,
                                          output_padding, device=device or x4.device.type)
        for d in directions
    )


def algorithms(device):
    return fastconv.algorithms.names(device)
