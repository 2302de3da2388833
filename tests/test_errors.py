"""Bad input gets a clear Python exception naming the argument: never a crash, never a silent
wrong answer. Each case is tried on the functional API and, where the functional API would
catch it first, on the raw operator too. Every one is caught both by Python's conventional
class (ValueError or TypeError) and by RuntimeError, which torch raises for bad arguments and
torch's callers catch; torchvision's AssertionError catches bad boxes."""

import pytest
import torch

import fastconv.errors
import fastconv.functional as F

ops = torch.ops.fastconv


def x4(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device)


CONV2D_BAD = [
    ("input rank", lambda d: F.conv2d(x4(2, 3, 5, device=d)[0, 0], x4(1, 3, 3, 3, device=d)), ValueError, "input"),
    ("5-D input", lambda d: F.conv2d(x4(1, 1, 3, 5, 5, device=d), x4(1, 3, 3, 3, device=d)), ValueError, "input"),
    ("weight rank", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(1, 3, 3, device=d)), ValueError, "weight"),
    ("channel mismatch", lambda d: F.conv2d(x4(1, 4, 5, 5, device=d), x4(2, 3, 3, 3, device=d)), ValueError, "channels"),
    ("groups mismatch", lambda d: F.conv2d(x4(1, 4, 5, 5, device=d), x4(3, 2, 3, 3, device=d), groups=2), ValueError, "groups"),
    ("groups not dividing", lambda d: F.conv2d(x4(1, 6, 5, 5, device=d), x4(4, 2, 3, 3, device=d), groups=4), ValueError, "groups"),
    ("zero stride", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, device=d), stride=0), ValueError, "stride"),
    ("negative stride", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, device=d), stride=(1, -1)), ValueError, "stride"),
    ("zero dilation", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, device=d), dilation=0), ValueError, "dilation"),
    ("zero groups", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, device=d), groups=0), ValueError, "groups"),
    ("negative padding", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, device=d), padding=-1), ValueError, "padding"),
    ("kernel too large", lambda d: F.conv2d(x4(1, 3, 2, 2, device=d), x4(2, 3, 3, 3, device=d)), ValueError, "kernel"),
    ("dilated kernel too large", lambda d: F.conv2d(x4(1, 3, 4, 4, device=d), x4(2, 3, 2, 2, device=d), dilation=4), ValueError, "kernel"),
    ("dtype mismatch", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, dtype=torch.float64, device=d)), TypeError, "weight"),
    ("integer tensors", lambda d: F.conv2d(torch.ones(1, 3, 5, 5, dtype=torch.int64, device=d), torch.ones(2, 3, 3, 3, dtype=torch.int64, device=d)), TypeError, "input"),
    ("bias shape", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, device=d), x4(3, device=d)), ValueError, "bias"),
    ("bias 2-D", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, device=d), x4(2, 1, device=d)), ValueError, "bias"),
    ("bias dtype", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, device=d), x4(2, dtype=torch.float64, device=d)), TypeError, "bias"),
    ("unknown padding string", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, device=d), padding="full"), ValueError, "padding"),
    ("same with stride", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, device=d), stride=2, padding="same"), ValueError, "same"),
    ("stride tuple length", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, device=d), stride=(1, 1, 1)), ValueError, "stride"),
    ("stride type", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, device=d), stride=1.5), TypeError, "stride"),
    ("input not a tensor", lambda d: F.conv2d([[1.0]], x4(2, 3, 3, 3, device=d)), TypeError, "input"),
    ("zero input channels, weight expecting some", lambda d: F.conv2d(x4(1, 0, 5, 5, device=d), x4(2, 1, 3, 3, device=d)), ValueError, "channels"),
    ("zero kernel", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 0, 3, device=d)), ValueError, "kernel"),
    ("zero output channels", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(0, 3, 3, 3, device=d)), ValueError, "output channel"),
]

TRANSPOSED_BAD = [
    ("output_padding not smaller", lambda d: F.conv_transpose2d(x4(1, 3, 4, 4, device=d), x4(3, 2, 3, 3, device=d), stride=2, output_padding=2), ValueError, "output_padding"),
    ("output_padding with stride 1", lambda d: F.conv_transpose2d(x4(1, 3, 4, 4, device=d), x4(3, 2, 3, 3, device=d), output_padding=1), ValueError, "output_padding"),
    ("channel mismatch", lambda d: F.conv_transpose2d(x4(1, 4, 4, 4, device=d), x4(3, 2, 3, 3, device=d)), ValueError, "channels"),
    ("groups not dividing", lambda d: F.conv_transpose2d(x4(1, 3, 4, 4, device=d), x4(3, 2, 3, 3, device=d), groups=2), ValueError, "groups"),
    ("padding too large", lambda d: F.conv_transpose2d(x4(1, 3, 2, 2, device=d), x4(3, 2, 3, 3, device=d), padding=3), ValueError, "output size"),
    ("padding string", lambda d: F.conv_transpose2d(x4(1, 3, 2, 2, device=d), x4(3, 2, 3, 3, device=d), padding="same"), ValueError, "padding"),
    ("bias shape", lambda d: F.conv_transpose2d(x4(1, 3, 4, 4, device=d), x4(3, 2, 3, 3, device=d), x4(3, device=d)), ValueError, "bias"),
    ("conv1d weight rank", lambda d: F.conv1d(x4(1, 3, 5, device=d), x4(2, 3, 3, 3, device=d)), ValueError, "weight"),
    ("conv_transpose1d input rank", lambda d: F.conv_transpose1d(x4(1, 1, 3, 5, device=d), x4(3, 2, 3, device=d)), ValueError, "input"),
    # torch refuses both: a transposed convolution's groups need input channels, and it has no
    # filter without output channels
    ("transposed zero input channels", lambda d: F.conv_transpose2d(x4(1, 0, 4, 4, device=d), x4(0, 2, 3, 3, device=d)), ValueError, "channel"),
    ("transposed zero output channels", lambda d: F.conv_transpose2d(x4(1, 3, 4, 4, device=d), x4(3, 0, 3, 3, device=d)), ValueError, "output channel"),
]

COMPLEX_BAD = [
    ("complex input, real weight", lambda d: F.conv2d(x4(1, 3, 5, 5, dtype=torch.complex64, device=d), x4(2, 3, 3, 3, device=d)), TypeError, "weight"),
    ("real input, complex weight", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d), x4(2, 3, 3, 3, dtype=torch.complex64, device=d)), TypeError, "weight"),
    ("complex precisions mixed", lambda d: F.conv_transpose2d(x4(1, 3, 5, 5, dtype=torch.complex128, device=d), x4(3, 2, 3, 3, dtype=torch.complex64, device=d)), TypeError, "weight"),
    ("real bias of complex operands", lambda d: F.conv1d(x4(1, 3, 5, dtype=torch.complex64, device=d), x4(2, 3, 3, dtype=torch.complex64, device=d), x4(2, device=d)), TypeError, "bias"),
    ("complex32", lambda d: F.conv2d(x4(1, 3, 5, 5, device=d).to(torch.complex32), x4(2, 3, 3, 3, device=d).to(torch.complex32)), TypeError, "complex32"),
    ("complex RoI features", lambda d: F.roi_align(x4(1, 3, 8, 8, dtype=torch.complex64, device=d), torch.zeros(1, 5, device=d), 2), TypeError, "input"),
]

ROI_BAD = [
    ("boxes shape", lambda d: F.roi_align(x4(1, 3, 8, 8, device=d), x4(2, 4, device=d), 2), ValueError, "boxes"),
    ("box list shape", lambda d: F.roi_align(x4(1, 3, 8, 8, device=d), [x4(2, 5, device=d)], 2), ValueError, "boxes"),
    ("boxes type", lambda d: F.roi_align(x4(1, 3, 8, 8, device=d), "boxes", 2), TypeError, "boxes"),
    ("batch index too large", lambda d: F.roi_align(x4(2, 3, 8, 8, device=d), torch.tensor([[2.0, 0, 0, 4, 4]], device=d), 2), ValueError, "batch index"),
    ("batch index negative", lambda d: F.roi_pool(x4(2, 3, 8, 8, device=d), torch.tensor([[-1.0, 0, 0, 4, 4]], device=d), 2), ValueError, "batch index"),
    ("batch index nan", lambda d: F.roi_align(x4(2, 3, 8, 8, device=d), torch.tensor([[float("nan"), 0, 0, 4, 4]], device=d), 2), ValueError, "batch index"),
    ("output_size zero", lambda d: F.roi_align(x4(1, 3, 8, 8, device=d), x4(2, 5, device=d), 0), ValueError, "output_size"),
    ("output_size negative", lambda d: F.roi_pool(x4(1, 3, 8, 8, device=d), x4(2, 5, device=d), (2, -1)), ValueError, "output_size"),
    ("input rank", lambda d: F.roi_align(x4(3, 8, 8, device=d), torch.zeros(1, 5, device=d), 2), ValueError, "input"),
    ("integer input", lambda d: F.roi_align(torch.ones(1, 3, 8, 8, dtype=torch.int32, device=d), torch.zeros(1, 5, device=d), 2), TypeError, "input"),
    ("scale zero", lambda d: F.roi_align(x4(1, 3, 8, 8, device=d), torch.zeros(1, 5, device=d), 2, spatial_scale=0.0), ValueError, "spatial_scale"),
    ("scale nan", lambda d: F.roi_pool(x4(1, 3, 8, 8, device=d), torch.zeros(1, 5, device=d), 2, spatial_scale=float("nan")), ValueError, "spatial_scale"),
    ("empty image", lambda d: F.roi_align(x4(1, 3, 0, 8, device=d), torch.zeros(1, 5, device=d), 2), ValueError, "height"),
]

ALL_BAD = ([("conv2d", *c) for c in CONV2D_BAD] + [("transposed", *c) for c in TRANSPOSED_BAD]
           + [("roi", *c) for c in ROI_BAD] + [("complex", *c) for c in COMPLEX_BAD])


def raises_catchable_both_ways(call, error, word):
    """call() raises an error naming `word` that `except error` and `except RuntimeError`
    both catch (two calls: each clause on its own)."""
    for caught in (error, RuntimeError):
        with pytest.raises(caught, match=f"(?i){word}"):
            call()


@pytest.mark.parametrize("family,name,call,error,word", ALL_BAD, ids=[f"{c[0]}-{c[1]}" for c in ALL_BAD])
def test_bad_input_raises_clearly(family, name, call, error, word, device):
    raises_catchable_both_ways(lambda: call(device), error, word)


BOX_FORMAT_BAD = [c for c in ROI_BAD if c[0] in ("boxes shape", "box list shape", "boxes type")] + [
    ("empty box list", lambda d: F.roi_pool(x4(1, 3, 8, 8, device=d), [], 2), ValueError, "boxes"),
    ("multi-level boxes shape", lambda d: F.multi_level_roi_align([x4(1, 3, 8, 8, device=d)], x4(2, 6, device=d), torch.zeros(2, dtype=torch.long), 2, [1.0]), ValueError, "boxes"),
]


@pytest.mark.parametrize("name,call,error,word", BOX_FORMAT_BAD, ids=[c[0] for c in BOX_FORMAT_BAD])
def test_box_format_errors_are_assertion_errors_too(name, call, error, word, device):
    # torchvision asserts on the boxes' format; code written for it catches AssertionError.
    with pytest.raises(AssertionError, match=f"(?i){word}"):
        call(device)


OP_BAD = [
    ("stride length", lambda: ops.conv2d(x4(1, 3, 5, 5), x4(2, 3, 3, 3), None, [1], [0, 0, 0, 0], [1, 1], 1), "stride"),
    ("padding length", lambda: ops.conv2d(x4(1, 3, 5, 5), x4(2, 3, 3, 3), None, [1, 1], [0, 0], [1, 1], 1), "padding"),
    ("input rank", lambda: ops.conv2d(x4(3, 5, 5), x4(2, 3, 3, 3), None, [1, 1], [0, 0, 0, 0], [1, 1], 1), "input"),
    ("grad_output shape", lambda: ops.conv2d_backward(x4(1, 2, 4, 4), x4(1, 3, 5, 5), x4(2, 3, 3, 3), [1, 1], [0, 0, 0, 0], [1, 1], 1, [True, True, True]), "grad_output"),
    ("grad_output dtype", lambda: ops.conv2d_backward(x4(1, 2, 3, 3, dtype=torch.float64), x4(1, 3, 5, 5), x4(2, 3, 3, 3), [1, 1], [0, 0, 0, 0], [1, 1], 1, [True, True, True]), "grad_output"),
    ("transposed grad_output shape", lambda: ops.conv_transpose2d_backward(x4(1, 2, 5, 5), x4(1, 3, 4, 4), x4(3, 2, 3, 3), [1, 1], [0, 0, 0, 0], [0, 0], [1, 1], 1, [True, True, True]), "grad_output"),
    ("rois shape", lambda: ops.roi_align(x4(1, 3, 8, 8), x4(2, 4), 1.0, 2, 2, -1, False), "rois"),
    ("roi grad shape", lambda: ops.roi_align_backward(x4(2, 3, 2, 2), torch.zeros(1, 5), 1.0, 2, 2, 1, 3, 8, 8, -1, False), "grad"),
    ("argmax dtype", lambda: ops.roi_pool_backward(x4(1, 3, 2, 2), torch.zeros(1, 5), torch.zeros(1, 3, 2, 2), 1.0, 2, 2, 1, 3, 8, 8), "argmax"),
]


@pytest.mark.parametrize("name,call,word", OP_BAD, ids=[c[0] for c in OP_BAD])
def test_bad_input_to_raw_operators(name, call, word):
    # The operators' C++ checks raise fastconv.errors' classes too.
    with pytest.raises((ValueError, TypeError), match=f"(?i){word}") as caught:
        call()
    assert isinstance(caught.value, RuntimeError)
    assert isinstance(caught.value, (fastconv.errors.ArgumentError, fastconv.errors.ArgumentTypeError))


def test_error_classes():
    from fastconv.errors import ArgumentError, ArgumentTypeError, BoxesError, BoxesTypeError

    assert issubclass(ArgumentError, ValueError) and issubclass(ArgumentError, RuntimeError)
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, RuntimeError)
    assert issubclass(BoxesError, ArgumentError) and issubclass(BoxesError, AssertionError)
    assert issubclass(BoxesTypeError, ArgumentTypeError) and issubclass(BoxesTypeError, AssertionError)


def test_errors_raised_inside_backward_keep_their_class():
    # A check failing in a backward operator, run by autograd's engine, reaches Python as it is.
    x = x4(1, 3, 5, 5).requires_grad_()
    rois = torch.tensor([[0.0, 0, 0, 4, 4]])
    y = ops.roi_align(x, rois, 1.0, 2, 2, -1, False)
    rois.data[0, 0] = 7.0  # the saved boxes, behind autograd's back, name an image the batch lacks
    with pytest.raises(RuntimeError, match="batch index") as caught:
        y.sum().backward()
    assert isinstance(caught.value, ValueError)


def test_inputs_on_different_devices():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    raises_catchable_both_ways(lambda: F.conv2d(x4(1, 3, 5, 5), x4(2, 3, 3, 3, device="cuda")), ValueError, "same device")
    raises_catchable_both_ways(lambda: F.roi_align(x4(1, 3, 5, 5, device="cuda"), torch.zeros(1, 5), 2), ValueError, "same device")
