"""FCN-32s/16s/8s and U-Net: shapes at any input size, fastconv everywhere, bilinear
upsampling, the fully connected -> convolution conversion, zero-initialised skips, size checks.

The full-width FCN (about 135 M parameters, and conv1_1's padding of 100 turns a 32x32 input into
230x230 maps) is built once; the other FCN tests use width_mult=1/16, which has the same
wiring, crops and upsampling layers."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastconv.nn as fnn
from fastconv.models import fcn16s, fcn32s, fcn8s, get_model, unet, vgg16
from fastconv.models.fcn import FCN, bilinear_upsampling_weight
from fastconv.models.unet import UNet

from model_checks import assert_all_convs_fastconv, forward_backward

NARROW = 1 / 16
BUILDERS = {32: fcn32s, 16: fcn16s, 8: fcn8s}
# Final and (for 16s/8s) 2x upsampling layers of each variant, with their strides.
UPSAMPLERS = {
    32: {"upscore": 32},
    16: {"upscore2": 2, "upscore16": 16},
    8: {"upscore2": 2, "upscore_pool4": 2, "upscore8": 8},
}


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    model = vgg16().eval()
    # torchvision's VGG starts its biases at zero; random ones check that biases are copied too.
    with torch.no_grad():
        for layer in (model.classifier[0], model.classifier[3]):
            layer.bias.normal_()
    return model


@pytest.fixture(scope="module")
def fcn_full(vgg):
    return fcn32s(backbone_weights=vgg.state_dict()).eval()


def narrow(stride, **kwargs):
    return BUILDERS[stride](width_mult=NARROW, **kwargs)


# ---------------------------------------------------------------------------------- FCN


def test_registered_names():
    for name, stride in (("fcn32s", 32), ("fcn16s", 16), ("fcn8s", 8)):
        model = get_model(name, width_mult=NARROW, num_classes=3)
        assert isinstance(model, FCN) and model.output_stride == stride
    assert isinstance(get_model("unet", base_width=4), UNet)


def test_full_width_fcn(vgg, fcn_full):
    # 13 VGG convolutions, fc6, fc7, score_fr, and the transposed upscore.
    assert assert_all_convs_fastconv(fcn_full) == 17
    assert fcn_full.fc6.kernel_size == (7, 7) and fcn_full.fc6.out_channels == 4096
    assert fcn_full.fc7.kernel_size == (1, 1) and fcn_full.fc7.out_channels == 4096
    assert fcn_full.features[0].padding == (100, 100)
    assert all(m.ceil_mode for m in fcn_full.features if isinstance(m, nn.MaxPool2d))
    # VGG-16 without its ImageNet layer, plus score_fr and the 21x21x64x64 upsampling filter.
    vgg_params = sum(p.numel() for p in vgg.parameters())
    imagenet = sum(p.numel() for p in vgg.classifier[6].parameters())
    assert sum(p.numel() for p in fcn_full.parameters()) == (
        vgg_params - imagenet + (4096 * 21 + 21) + 21 * 21 * 64 * 64
    )
    with torch.no_grad():
        out = fcn_full(torch.randn(1, 3, 21, 34))
    assert out.shape == (1, 21, 21, 34) and torch.isfinite(out).all()


def test_backbone_weights_are_vgg_features(vgg, fcn_full):
    ours = fcn_full.features.state_dict()
    for key, value in vgg.features.state_dict().items():
        assert torch.equal(ours[key], value), key


def test_fc6_fc7_are_the_vgg_classifier_as_convolutions(vgg, fcn_full):
    """On a 7x7 pool5 map the converted fc6 -> ReLU -> fc7 -> ReLU gives VGG's classifier
    numbers; on a larger map each output position is that classifier on its 7x7 window."""
    torch.manual_seed(1)
    convs = nn.Sequential(copy.deepcopy(fcn_full.fc6), nn.ReLU(), copy.deepcopy(fcn_full.fc7), nn.ReLU())
    convs = convs.double().eval()
    head = copy.deepcopy(vgg.classifier[:5]).double().eval()  # Linear, ReLU, Dropout, Linear, ReLU
    pool5 = torch.randn(2, 512, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        ours = convs(pool5)
        # VGG's adaptive average pool is the identity on a 7x7 map, as in a 224x224 image.
        reference = head(torch.flatten(vgg.avgpool.double()(pool5), 1))
        assert ours.shape == (2, 4096, 1, 1)
        torch.testing.assert_close(ours.flatten(1), reference, rtol=1e-10, atol=1e-12)
        # fc6 alone, before its ReLU, matches classifier.0.
        torch.testing.assert_close(convs[0](pool5).flatten(1), head[0](pool5.flatten(1)),
                                   rtol=1e-10, atol=1e-12)

        wide = torch.randn(1, 512, 9, 8, dtype=torch.float64)
        dense = convs(wide)
        assert dense.shape == (1, 4096, 3, 2)
        for r, c in ((0, 0), (2, 1), (1, 0)):
            window = wide[:, :, r:r + 7, c:c + 7]
            torch.testing.assert_close(dense[:, :, r, c], head(window.flatten(1)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("padding", ["paper", "same"])
@pytest.mark.parametrize("stride", [32, 16, 8])
def test_fcn_output_has_input_size(stride, padding, device):
    torch.manual_seed(0)
    model = narrow(stride, num_classes=5, padding=padding).to(device).eval()
    # Tiny (the coarse map is 1x1), odd and non-square; with padding 100, 17 and 21 are sizes
    # whose last pooling window is incomplete (H + 198 is 23 and 27 past a multiple of 32),
    # where rounding down would leave the bottom rows uncovered.
    for size in [(1, 1), (17, 29), (45, 21), (2, 70)]:
        with torch.no_grad():
            out = model(torch.randn(1, 3, *size, device=device))
        assert out.shape == (1, 5, *size), (size, out.shape)


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_fcn_forward_backward(stride, device):
    torch.manual_seed(0)
    model = narrow(stride, num_classes=4).to(device).train()
    # 13 + fc6, fc7, score_fr + the transposed upsamplers + the skip score layers.
    skips = {32: 0, 16: 1, 8: 2}[stride]
    assert assert_all_convs_fastconv(model) == 16 + len(UPSAMPLERS[stride]) + skips
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d):
            assert type(m) is fnn.ConvTranspose2d
    out = forward_backward(model, torch.randn(2, 3, 23, 40, device=device))
    assert out.shape == (2, 4, 23, 40)
    # The scoring layers start at zero, but gradients reach them (and through them, later,
    # the backbone); a skip layer without gradient would mean it is not wired in.
    score_layers = ["score_fr", "score_pool4", "score_pool3"][: skips + 1]
    for name in score_layers:
        grad = getattr(model, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("padding", ["paper", "same"])
@pytest.mark.parametrize("stride", [32, 16, 8])
def test_upsampling_is_bilinear_interpolation(stride, padding):
    """Each transposed convolution, padded by s/2 ("same") or cropped by s/2 ("paper", whose
    crops happen later), equals F.interpolate(bilinear, align_corners=False) wherever
    interpolation has both neighbours."""
    torch.manual_seed(0)
    model = narrow(stride, num_classes=3, padding=padding)
    for name, s in UPSAMPLERS[stride].items():
        layer = getattr(model, name)
        assert type(layer) is fnn.ConvTranspose2d
        assert layer.kernel_size == (2 * s, 2 * s) and layer.stride == (s, s) and layer.bias is None
        assert layer.padding == ((s // 2, s // 2) if padding == "same" else (0, 0))
        layer = copy.deepcopy(layer).double()
        h, w = 5, 4
        x = torch.randn(2, 3, h, w, dtype=torch.float64)
        with torch.no_grad():
            out = layer(x)
        if padding == "paper":
            out = out[..., s // 2:, s // 2:]
        out = out[..., : h * s, : w * s]
        reference = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        inner = (slice(None), slice(None), slice(s // 2, h * s - s // 2), slice(s // 2, w * s - s // 2))
        torch.testing.assert_close(out[inner], reference[inner], rtol=1e-12, atol=1e-12)
        # Near the border interpolation repeats the edge sample while the filter fades to
        # zero: the two must differ there, or the interior comparison would prove nothing.
        assert not torch.allclose(out[..., 0, :], reference[..., 0, :])


def test_bilinear_weight_does_not_mix_channels():
    weight = bilinear_upsampling_weight(3, 4)
    tent = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            expected = torch.outer(tent, tent) if i == j else torch.zeros(4, 4, dtype=torch.float64)
            torch.testing.assert_close(weight[i, j], expected, rtol=0, atol=0)


def test_learned_and_fixed_upsampling():
    # The paper learns the 2x steps from their bilinear start and keeps the last one fixed.
    model = narrow(8)
    assert model.upscore2.weight.requires_grad and model.upscore_pool4.weight.requires_grad
    assert not model.upscore8.weight.requires_grad
    assert not narrow(32).upscore.weight.requires_grad


def test_skip_score_layers_start_at_zero():
    for model in (narrow(16), narrow(8)):
        layers = [model.score_fr, model.score_pool4]
        if model.output_stride == 8:
            layers.append(model.score_pool3)
        for layer in layers:
            assert layer.weight.abs().sum() == 0 and layer.bias.abs().sum() == 0


@pytest.mark.parametrize("padding", ["paper", "same"])
def test_untrained_skips_keep_the_32s_prediction(padding):
    """FCN-16s/8s initialised from an FCN-32s (the paper's staged training) start by making
    the FCN-32s prediction: the zero skip layers add nothing and every crop aligns the output
    with the image. For the check the coarse score map is replaced by a bilinear function of
    map position, which bilinear upsampling reproduces exactly, once (32x) or in steps
    (2x, 16x; 2x, 2x, 8x). (For other maps the stepwise grids, offset by a quarter of a
    coarse cell, give a slightly different interpolant, so FCN-16s/8s equal FCN-32s exactly
    only on such maps.) Every variant must return f((y - b) / 32, (x - b) / 32) at pixel
    (y, x), score_fr's map position i being at image coordinate 32 i + b: b = 12.5 with the
    paper's padding, 15.5 (the centre of the first 32x32 cell) with "same"."""
    torch.manual_seed(0)
    num_classes = 3
    fcn32 = narrow(32, num_classes=num_classes, padding=padding).double().eval()
    models = {32: fcn32}
    for stride in (16, 8):
        model = narrow(stride, num_classes=num_classes, padding=padding).double().eval()
        missing, unexpected = model.load_state_dict(fcn32.state_dict(), strict=False)
        new = {"upscore2.weight", "score_pool4.weight", "score_pool4.bias"} | (
            {"upscore16.weight"} if stride == 16 else
            {"upscore_pool4.weight", "score_pool3.weight", "score_pool3.bias", "upscore8.weight"}
        )
        assert set(missing) == new and set(unexpected) == {"upscore.weight"}
        models[stride] = model

    coeffs = torch.randn(4, num_classes, dtype=torch.float64)

    def bilinear_function(i, j):
        a, b, c, d = (k.view(1, -1, 1, 1) for k in coeffs)
        return a + b * i + c * j + d * i * j

    coarse_size = []

    def coarse_scores(module, inputs, output):
        coarse_size.append(tuple(output.shape[-2:]))
        rows = torch.arange(output.shape[-2], dtype=torch.float64).view(-1, 1)
        cols = torch.arange(output.shape[-1], dtype=torch.float64).view(1, -1)
        return bilinear_function(rows, cols).expand_as(output).clone()

    # Sizes with a few coarse positions: ceil((64 + 198) / 32) - 6 = 3 by 4, or 128 / 32 by 5.
    (height, width), origin = ((64, 96), 12.5) if padding == "paper" else ((128, 160), 15.5)
    image = torch.randn(1, 3, height, width, dtype=torch.float64)
    rows = (torch.arange(height, dtype=torch.float64).view(-1, 1) - origin) / 32
    cols = (torch.arange(width, dtype=torch.float64).view(1, -1) - origin) / 32
    expected = bilinear_function(rows, cols)
    outputs = {}
    for stride, model in models.items():
        handle = model.score_fr.register_forward_hook(coarse_scores)
        try:
            with torch.no_grad():
                outputs[stride] = model(image)
        finally:
            handle.remove()
    assert set(coarse_size) == {(3, 4) if padding == "paper" else (4, 5)}
    coarse_h, coarse_w = coarse_size[0]
    # Half a coarse cell in from the outermost samples, all three schemes have both
    # neighbours at every stage.
    inner_rows = ((rows >= 0.5) & (rows <= coarse_h - 1.5)).flatten()
    inner_cols = ((cols >= 0.5) & (cols <= coarse_w - 1.5)).flatten()
    assert inner_rows.sum() >= 30 and inner_cols.sum() >= 60
    for stride, out in outputs.items():
        torch.testing.assert_close(out[..., inner_rows, :][..., inner_cols],
                                   expected[..., inner_rows, :][..., inner_cols], rtol=1e-10, atol=1e-10)


def test_fcn_batch_norm_backbone():
    """batch_norm=True takes VGG-16-BN's features (other indices, same five pools), and
    load_backbone fills them, running statistics included."""
    torch.manual_seed(0)
    model = narrow(8, num_classes=3, batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 13
    assert [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)] == [6, 13, 23, 33, 43]
    assert assert_all_convs_fastconv(model) == 21
    out = forward_backward(model, torch.randn(2, 3, 18, 27))
    assert out.shape == (2, 3, 18, 27)

    source = narrow(8, num_classes=3, batch_norm=True)
    with torch.no_grad():
        for name, t in source.features.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5)  # positive, so running_var stays valid
    fc = source.fc6.out_channels
    pool5 = source.fc6.in_channels
    state = {f"features.{k}": v for k, v in source.features.state_dict().items()}
    state.update({
        "classifier.0.weight": torch.randn(fc, pool5 * 49), "classifier.0.bias": torch.randn(fc),
        "classifier.3.weight": torch.randn(fc, fc), "classifier.3.bias": torch.randn(fc),
        "classifier.6.weight": torch.randn(10, fc), "classifier.6.bias": torch.randn(10),
    })
    model.load_backbone(state)
    for key, value in source.features.state_dict().items():
        assert torch.equal(model.features.state_dict()[key], value), key
    assert torch.equal(model.fc6.weight, state["classifier.0.weight"].view(fc, pool5, 7, 7))
    assert torch.equal(model.fc7.weight[:, :, 0, 0], state["classifier.3.weight"])


def test_fcn_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    source = narrow(8, num_classes=2)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    path = tmp_path / "fcn8s.pt"
    torch.save(source.state_dict(), path)
    loaded = narrow(8, num_classes=2, weights=str(path)).eval()
    x = torch.randn(1, 3, 19, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source.eval()(x), rtol=0, atol=0)


def test_fcn_bad_arguments(vgg):
    with pytest.raises(ValueError, match="num_classes"):
        fcn32s(num_classes=0, width_mult=NARROW)
    with pytest.raises(TypeError, match="num_classes"):
        fcn8s(num_classes=2.0, width_mult=NARROW)
    with pytest.raises(ValueError, match="dropout"):
        fcn16s(dropout=1.5, width_mult=NARROW)
    with pytest.raises(ValueError, match="width_mult"):
        fcn16s(width_mult=0)
    with pytest.raises(ValueError, match="output_stride"):
        FCN(narrow(32).features, output_stride=4)
    with pytest.raises(ValueError, match="padding"):
        fcn8s(padding="valid")
    with pytest.raises(TypeError, match="batch_norm"):
        fcn8s(batch_norm="yes", width_mult=NARROW)
    with pytest.raises(ValueError, match="not both"):
        fcn32s(weights={}, backbone_weights={})
    with pytest.raises(ValueError, match="width_mult"):
        fcn32s(backbone_weights={}, width_mult=0.5)
    with pytest.raises(TypeError, match="backbone_weights"):
        narrow(32).load_backbone(42)
    with pytest.raises(ValueError, match="VGG-16 state_dict"):
        narrow(32).load_backbone({"features.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="classifier.0.weight"):
        narrow(32).load_backbone(vgg.state_dict())  # full-width weights, narrow model
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        narrow(32)(torch.randn(3, 8, 8))


# ---------------------------------------------------------------------------------- U-Net


def test_unet_paper_width():
    model = unet()
    # 2x(3x3 conv) at 64..1024, four 2x2 up-convolutions, the 1x1 output convolution.
    assert assert_all_convs_fastconv(model) == 9 * 2 + 4 + 1
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert all(type(m) is fnn.ConvTranspose2d and m.kernel_size == (2, 2) and m.stride == (2, 2) for m in ups)
    assert [m.out_channels for m in ups] == [512, 256, 128, 64]
    # The padded U-Net of the paper (no BatchNorm) has 31,031,810 parameters for 2 classes.
    paper = unet(batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper.modules())
    assert sum(p.numel() for p in paper.parameters()) == 31_031_810
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 16, 32)).shape == (1, 2, 16, 32)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_unet_forward_backward(batch_norm, device):
    torch.manual_seed(0)
    model = unet(base_width=8, num_classes=3, in_channels=1, batch_norm=batch_norm).to(device)
    for size in [(16, 16), (48, 32)]:
        model.zero_grad()
        out = forward_backward(model, torch.randn(2, 1, *size, device=device))
        assert out.shape == (2, 3, *size)
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_unet_depth():
    model = unet(base_width=4, depth=2)
    assert assert_all_convs_fastconv(model) == 3 * 2 + 2 * 2 + 2 + 1
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 12, 20)).shape == (1, 2, 12, 20)



def test_unet_bad_sizes_and_arguments():
    model = unet(base_width=4)
    for size in [(30, 32), (32, 40), (17, 17), (8, 8)]:
        with pytest.raises(ValueError, match=f"{size[0]}x{size[1]}"):
            model(torch.randn(1, 3, *size))
    with pytest.raises(ValueError, match="divisible by 8"):
        unet(base_width=4, depth=3)(torch.randn(1, 3, 12, 16))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        model(torch.randn(3, 32, 32))
    for name, value, error in [("num_classes", 0, ValueError), ("in_channels", -1, ValueError),
                               ("base_width", 0, ValueError), ("depth", 0, ValueError),
                               ("depth", 2.0, TypeError), ("num_classes", True, TypeError)]:
        with pytest.raises(error, match=name):
            unet(**{name: value})
    with pytest.raises(TypeError, match="batch_norm"):
        unet(batch_norm=1)
