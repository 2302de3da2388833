"""fastconv.receptive_field: theoretical fields by hand (VGG-16, ResNet-50, dilated stacks) and
by brute force (the input pixels whose gradient is nonzero for one unit of a copy of the model
whose weights are all ones), and the effective receptive field."""

import copy
import math
import sys

import pytest
import torch
import torch.nn.functional as tF
from torch import nn

import fastconv
import fastconv.models as models
from fastconv.receptive_field import (
    effective_receptive_field,
    receptive_fields,
    run_to,
)


def meta(builder, **kwargs):
    """A model built on the meta device: its shapes without the cost of its weights."""
    with torch.device("meta"):
        return builder(**kwargs)


# ------------------------------------------------------------------------------------------
# By hand

# VGG-16's features at 224x224: (index, size, jump, start), worked out layer by layer: a 3x3
# convolution (pad 1) adds 2 jumps to the size and moves the start back one jump; a 2x2
# stride-2 pooling adds 1 jump and doubles the jump.
VGG16_BY_HAND = [
    (0, 3, 1, -1), (2, 5, 1, -2), (4, 6, 2, -2),
    (5, 10, 2, -4), (7, 14, 2, -6), (9, 16, 4, -6),
    (10, 24, 4, -10), (12, 32, 4, -14), (14, 40, 4, -18), (16, 44, 8, -18),
    (17, 60, 8, -26), (19, 76, 8, -34), (21, 92, 8, -42), (23, 100, 16, -42),
    (24, 132, 16, -58), (26, 164, 16, -74), (28, 196, 16, -90), (30, 212, 32, -90),
]


def test_vgg16_by_hand():
    fields = receptive_fields(meta(models.vgg16), (1, 3, 224, 224))
    for index, size, jump, start in VGG16_BY_HAND:
        rf = fields.layer(f"features.{index}")
        assert (rf.size, rf.jump, rf.start) == ((size, size), (jump, jump), (start, start)), index
        assert rf.uniform and not rf.merged
        if index < 30:
            after = fields.layer(f"features.{index + 1}")
            assert after.kind != "ReLU" or after.size == (size, size)  # a ReLU keeps the field
    # The fully connected layers see everything the 7x7 map saw: from the first unit's start
    # to the last unit's end, -90 .. -90 + 6 * 32 + 211 = 313.
    head = fields.layer("classifier.6")
    assert head.is_global and head.size == (404, 404) and head.start == (-90, -90)
    assert fields.output.size == (404, 404)
    assert not fields.unsupported


# ResNet-50 (torchvision's v1.5: stride on the 3x3) at 224x224. Stem: 7x7 s2 p3 -> 7, jump 2,
# start -3; 3x3 s2 p1 max-pool -> 7 + 2*2 = 11, jump 4, start -5. Each bottleneck's 3x3 (pad
# 1, dilation 1) adds 2 jumps and moves the start one jump back; the first block of stages
# 2-4 does so at the old jump, then doubles it. The 1x1 shortcut sees less: the union is the
# residual branch's field.
RESNET50_BY_HAND = {
    "conv1": (7, 2, -3),
    "maxpool": (11, 4, -5),
    "layer1.0": (19, 4, -9),
    "layer1": (35, 4, -17),  # 11 + 3 blocks * 2 * 4
    "layer2.0.downsample": (35, 8, -17),
    "layer2.0": (43, 8, -21),  # 35 + 2 * 4
    "layer2": (91, 8, -45),  # 43 + 3 * 2 * 8
    "layer3.0": (107, 16, -53),
    "layer3": (267, 16, -133),  # 107 + 5 * 2 * 16
    "layer4.0": (299, 32, -149),
    "layer4": (427, 32, -213),  # 299 + 2 * 2 * 32
}


def test_resnet50_by_hand():
    fields = receptive_fields(meta(models.resnet50), (1, 3, 224, 224))
    for name, (size, jump, start) in RESNET50_BY_HAND.items():
        rf = fields.layer(name)
        assert (rf.size, rf.jump, rf.start) == ((size, size), (jump, jump), (start, start)), name
    # Merges happen in the blocks (and so in the stages), never in a convolution.
    assert fields.layer("layer1.0").merged and fields.layer("layer3").merged
    assert not fields.layer("layer1.0.conv2").merged and not fields.layer("conv1").merged
    # Global pooling over the 7x7 map: -213 .. -213 + 6 * 32 + 426 = 405.
    assert fields.layer("avgpool").size == (619, 619) and fields.layer("fc").is_global


def test_dilated_stacks_by_hand():
    # Guideline 6: 3x3 convolutions dilated 1, 2, 4, 8 (padded to keep the size) grow the
    # field exponentially, 3, 7, 15, 31, where plain ones grow linearly, 3, 5, 7, 9.
    dilated = nn.Sequential(*[fastconv.Conv2d(2, 2, 3, padding=d, dilation=d) for d in (1, 2, 4, 8)])
    plain = nn.Sequential(*[fastconv.Conv2d(2, 2, 3, padding=1) for _ in range(4)])
    d = receptive_fields(dilated, (1, 2, 40, 40))
    p = receptive_fields(plain, (1, 2, 40, 40))
    assert [d.layer(str(i)).size[0] for i in range(4)] == [3, 7, 15, 31]
    assert [d.layer(str(i)).start[0] for i in range(4)] == [-1, -3, -7, -15]
    assert [p.layer(str(i)).size[0] for i in range(4)] == [3, 5, 7, 9]
    assert all(d.layer(str(i)).jump == (1, 1) for i in range(4))

    # DeepLab's ResNet-50, stages 3 and 4 dilated instead of strided: the same fields as
    # ResNet-50's (each stage's first block keeps the old dilation, then dilation 2 and 4 at
    # jump 8 add what jumps 16 and 32 did), at jump 8: "without loss of resolution".
    fields = receptive_fields(meta(models.resnet50, replace_stride_with_dilation=[False, True, True]),
                              (1, 3, 224, 224))
    for name, size, start in [("layer2", 91, -45), ("layer3.0", 107, -53), ("layer3", 267, -133),
                              ("layer4.0", 299, -149), ("layer4", 427, -213)]:
        rf = fields.layer(name)
        assert (rf.size, rf.jump, rf.start) == ((size, size), (8, 8), (start, start)), name
    assert fields.layer("layer4").output_shape == (1, 2048, 28, 28)


def test_transposed_and_rectangular_by_hand():
    # A 4x4 stride-2 pad-1 transposed convolution: output unit o reads input units
    # (o + 1 - t) / 2 for taps t = 0..3 where that is whole: o = 0 reads -1 and 0, o = 1 reads
    # 0 and 1. Every unit sees 2 input pixels, 1/2 pixel apart on average.
    up = receptive_fields(fastconv.ConvTranspose2d(1, 1, 4, stride=2, padding=1), (1, 1, 6, 6)).output
    assert up.size == (2, 2) and up.jump == (0.5, 0.5) and up.start == (-1, -1) and up.uniform
    assert up.region(0, 1) == ((-1, 0), (0, 1)) and up.region(3, 2) == ((1, 2), (0, 1))
    # Kernel 3, stride 2: even units read one input unit, odd ones two.
    up3 = receptive_fields(fastconv.ConvTranspose2d(1, 1, 3, stride=2, padding=1), (1, 1, 6, 6)).output
    assert up3.size == (2, 2) and not up3.uniform
    assert up3.region(0, 0) == ((0, 0), (0, 0)) and up3.region(1, 1) == ((0, 1), (0, 1))
    # A rectangular, strided, dilated kernel: height 3 dilated 2 (span 5), width 1, stride (2, 3).
    rect = receptive_fields(fastconv.Conv2d(1, 1, (3, 1), stride=(2, 3), padding=(2, 0), dilation=(2, 1)),
                            (1, 1, 9, 9)).output
    assert rect.size == (5, 1) and rect.jump == (2, 3) and rect.start == (-2, 0)


# ------------------------------------------------------------------------------------------
# By brute force


def all_ones(model: nn.Module) -> nn.Module:
    """A float64 copy of model whose every weight is 1, biases zero, batch norms the identity
    and max-pools average pools: no gradient can cancel, and each input pixel that a unit sees
    gets a nonzero gradient (a max-pool would send it to one pixel only)."""
    model = copy.deepcopy(model).double().eval()
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
            elif isinstance(child, nn.AdaptiveMaxPool2d):
                setattr(module, name, nn.AdaptiveAvgPool2d(child.output_size))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_parameters()
            elif getattr(module, "weight", None) is not None:
                module.weight.fill_(1.0)
            if getattr(module, "bias", None) is not None and not isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.bias.zero_()
    return model


def probe(model, shape, layer, units):
    """For each unit, the bounding box of the input pixels with a nonzero gradient (None
    where there is none)."""
    model = all_ones(model)
    module = dict(model.named_modules())[layer]
    x = torch.ones(shape, dtype=torch.float64, requires_grad=True)
    y = run_to(model, module, x)
    boxes = []
    for row, col in units:
        (grad,) = torch.autograd.grad(y[0, :, row, col].sum(), x, retain_graph=True)
        seen = grad[0].abs().sum(0) > 0
        if not seen.any():
            boxes.append(None)
            continue
        rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
        boxes.append(((int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max()))))
    return boxes


def clipped(rf, unit, height, width):
    """The unit's theoretical field clipped to the image, or None where it holds no pixel."""
    try:
        (top, bottom), (left, right) = rf.region(*unit)
    except ValueError as error:
        assert "sees no input pixel" in str(error)
        return None
    box = (max(top, 0), min(bottom, height - 1)), (max(left, 0), min(right, width - 1))
    return None if box[0][0] > box[0][1] or box[1][0] > box[1][1] else box


def inside(inner, outer):
    return inner is None or outer is not None and all(
        o[0] <= i[0] and i[1] <= o[1] for i, o in zip(inner, outer))


def check_against_probe(model, shape, layer, units=None, theoretical_exact=True):
    """The pixels each unit reads are the probe's; they lie inside the theoretical field
    clipped to the image, and equal it (theoretical_exact) where no window reads only padding."""
    rf = receptive_fields(model, shape).layer(layer)
    p, q = rf.output_shape[2:]
    units = units or [(p // 2, q // 2), (0, 0), (p - 1, q - 1), (p // 3, q - 1)]
    for unit, box in zip(units, probe(model, shape, layer, units)):
        assert rf.pixels(*unit) == box, (layer, unit)
        theory = clipped(rf, unit, *shape[2:])
        assert inside(box, theory), (layer, unit)
        if theoretical_exact:
            assert theory == box, (layer, unit)
    return rf


class VGG16Layout(nn.Sequential):
    """VGG-16's features, 2 channels wide: its fields, at a fraction of the cost."""

    def __init__(self):
        layers, channels = [], 3
        for item in [2, 2, "M", 2, 2, "M", 2, 2, 2, "M", 2, 2, 2, "M", 2, 2, 2, "M"]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [fastconv.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
                channels = item
        super().__init__(*layers)


@pytest.mark.parametrize("layer, size", [("2", 5), ("9", 16), ("16", 44), ("21", 92)])
def test_vgg16_layout_by_probe(layer, size):
    rf = check_against_probe(VGG16Layout(), (1, 3, 100, 100), layer)
    assert rf.size == (size, size)  # the figures of test_vgg16_by_hand


def test_resnet50_by_probe():
    # fastconv's own ResNet-50, up to the first block of stage 2 (field 43, where the strided
    # shortcut merges) on a 64x64 image: the pass stops there.
    torch.manual_seed(0)
    model = models.resnet50()
    rf = check_against_probe(model, (1, 3, 64, 64), "layer2.0", [(4, 4), (0, 0), (7, 2)])
    assert rf.size[0] == RESNET50_BY_HAND["layer2.0"][0] and rf.merged


def test_googlenet_inception_by_probe():
    # Four branches, of fields 1x1, 3x3, "5x5" (3x3 in torchvision's GoogLeNet) and a 3x3
    # max-pool then 1x1, concatenated: the union is the widest branch's.
    torch.manual_seed(0)
    model = models.googlenet(aux_logits=False, init_weights=False)
    rf = check_against_probe(model, (1, 3, 64, 64), "inception3a")
    assert rf.merged and rf.size == (43, 43)


class Mixed(nn.Module):
    """Transposed convolutions (one whose kernel is smaller than its stride, so that some units
    see nothing), slicing, padding, upsampling and adaptive pooling, through torch's own
    operators as well as fastconv's."""

    def __init__(self):
        super().__init__()
        self.down = fastconv.Conv2d(1, 2, 3, stride=2, padding=1)
        self.up = fastconv.ConvTranspose2d(2, 2, 4, stride=2, padding=1)
        self.up3 = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1)  # torch's own
        self.sparse = fastconv.ConvTranspose2d(2, 2, 1, stride=2)
        self.dilated = nn.Conv2d(2, 2, 3, padding=2, dilation=2)  # torch's own
        self.pool = nn.AdaptiveAvgPool2d((5, 7))

    def forward(self, x):
        x = self.up(self.down(x))
        x = tF.pad(x[:, :, 1:, ::2], (2, 0, 1, 3))  # a crop, a stride-2 slice, asymmetric padding
        x = self.up3(x)
        x = tF.interpolate(x, scale_factor=2, mode="nearest")
        x = tF.interpolate(x, scale_factor=(2, 3), mode="bilinear", align_corners=False)
        x = self.dilated(tF.pad(x, (1, 1, 2, 2), mode="reflect"))
        return self.sparse(x)


@pytest.mark.parametrize("layer", ["up", "up3", "dilated", "sparse"])
def test_transposed_slicing_padding_upsampling_by_probe(layer):
    torch.manual_seed(0)
    model = Mixed()
    shape = (1, 1, 10, 12)
    rf = receptive_fields(model, shape).layer(layer)
    p, q = rf.output_shape[2:]
    units = [(r, c) for r in (0, p // 2, p - 2, p - 1) for c in (0, q // 2, q - 1)]
    # The padding after the crop, and up3's output_padding, give units that read only
    # padding: there the theoretical field holds more pixels than the unit reads.
    check_against_probe(model, shape, layer, units, theoretical_exact=False)
    if layer != "up":  # before the hand-made padding every unit reads what its field says
        assert any(rf.pixels(*u) != clipped(rf, u, *shape[2:]) for u in units)


def test_units_that_read_only_padding():
    # A 3x3 stride-3 transposed convolution with output_padding 2 after an 8-unit map: units
    # 24 and 25 read only unit 8, beyond the map. Theoretically that is the field unit 8 would
    # have (image rows 7-9); in fact they read no pixel, as the probe finds.
    model = nn.Sequential(fastconv.Conv2d(1, 1, 3, padding=1), fastconv.ConvTranspose2d(1, 1, 3, stride=3,
                                                                                        output_padding=2))
    rf = check_against_probe(model, (1, 1, 8, 8), "1", [(24, 0), (25, 12), (23, 23), (0, 0)],
                             theoretical_exact=False)
    assert rf.output_shape == (1, 1, 26, 26)
    assert rf.region(24, 0) == ((7, 9), (-1, 1)) and rf.pixels(24, 0) is None
    assert rf.region(23, 23) == ((6, 8), (6, 8)) and rf.pixels(23, 23) == ((6, 7), (6, 7))


def test_adaptive_pool_and_align_corners_by_probe():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = fastconv.Conv2d(1, 2, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d((5, 7))
            self.head = nn.Identity()

        def forward(self, x):
            x = self.pool(self.conv(x))
            return self.head(tF.interpolate(x, size=(9, 12), mode="bilinear", align_corners=True))

    model = Net()
    for layer in ["pool", "head"]:
        check_against_probe(model, (1, 1, 13, 17), layer, [(r, c) for r in range(5) for c in (0, 3, 6)])


def test_flatten_and_linear_are_global():
    model = models.lenet5()
    fields = receptive_fields(model, (1, 1, 32, 32))
    conv2 = fields.layer("features.3")
    assert (conv2.size, conv2.jump, conv2.start) == ((14, 14), (2, 2), (0, 0))  # 5 + 1 + 4 * 2
    for name in ["classifier.0", "classifier.4", "(model)"]:
        rf = fields.layer(name)
        assert rf.is_global and rf.size == (32, 32) and rf.region() == ((0, 31), (0, 31))


def test_unsupported_operator_leaves_the_field_unknown():
    class Shuffle(nn.Module):
        def forward(self, x):
            return tF.pixel_shuffle(x, 2)

    class SpatialSoftmax(nn.Module):
        def forward(self, x):
            return torch.softmax(x, dim=3)

    softmax = receptive_fields(nn.Sequential(fastconv.Conv2d(1, 2, 3), nn.Softmax(dim=1), SpatialSoftmax()),
                               (1, 1, 8, 8))
    assert softmax.layer("1").size == (3, 3) and not softmax.layer("2").known  # channels, then a spatial axis

    model = nn.Sequential(fastconv.Conv2d(1, 4, 3), Shuffle(), fastconv.Conv2d(1, 1, 3))
    fields = receptive_fields(model, (1, 1, 8, 8))
    assert fields.layer("0").size == (3, 3)
    assert not fields.layer("1").known and not fields.layer("2").known
    assert any("pixel_shuffle" in name for name in fields.unsupported)
    assert "?" in str(fields) and "pixel_shuffle" in str(fields)
    with pytest.raises(ValueError, match="not known"):
        fields.layer("2").region(0, 0)


def test_until_stops_the_pass():
    # A 14x14 image is too small for VGG-16's fifth pooling; the first blocks still have fields.
    model = meta(models.vgg16)
    with pytest.raises(RuntimeError):
        receptive_fields(model, (1, 3, 14, 14))
    fields = receptive_fields(model, (1, 3, 14, 14), until="features.7")
    assert fields.rows[-1].name == "features.7" and fields.layer("features.7").size == (14, 14)


def test_printed_table_and_lookup():
    fields = receptive_fields(meta(models.resnet18), (1, 3, 224, 224), verbose=False)
    text = str(fields)
    assert "layer1.0 (BasicBlock)" in text and "*" in text and "global" in text
    with pytest.raises(ValueError, match="did not run"):
        fields.layer("nope")
    with pytest.raises(ValueError, match="until 'nope'"):
        receptive_fields(meta(models.resnet18), (1, 3, 224, 224), until="nope")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(input_size=(1, 3, 8)), ValueError, r"\[N, C, H, W\]"),
        (dict(input_size="1,3,8,8"), TypeError, "input_size"),
        (dict(input_size=(1, 3, 0, 8)), ValueError, "non-positive"),
        (dict(), ValueError, "input_size"),
        (dict(input_data=[1, 2]), TypeError, "input_data"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        receptive_fields(fastconv.Conv2d(3, 4, 3), **kwargs)
    with pytest.raises(TypeError, match="model"):
        receptive_fields(lambda x: x, (1, 3, 8, 8))


# ------------------------------------------------------------------------------------------
# The effective receptive field


def test_effective_field_of_one_convolution_is_its_filter():
    # The gradient of a convolution's output unit with respect to its input is the filter,
    # whatever the input: the map is |w| summed over input channels and output channels.
    torch.manual_seed(0)
    conv = fastconv.Conv2d(3, 4, 5, padding=2).double()
    erf = effective_receptive_field(conv, (3, 3, 11, 11), dtype=torch.float64)
    expected = torch.zeros(11, 11, dtype=torch.float64)
    expected[3:8, 3:8] = conv.weight.detach().sum(0).abs().sum(0)
    torch.testing.assert_close(erf.map, expected / expected.sum())
    assert erf.unit == (5, 5) and erf.center == (5.0, 5.0) and erf.samples == 3
    # Uniform weights: the mass is uniform over the 5x5 square, all of it within the corner's
    # distance, 2 * sqrt(2), and 9/25 of it within distance 1.5 (the 3x3 square).
    with torch.no_grad():
        conv.weight.fill_(1.0)
    flat = effective_receptive_field(conv, (1, 3, 11, 11), dtype=torch.float64)
    assert flat.radius(1.0) == pytest.approx(2 * math.sqrt(2))
    assert flat.radius(9 / 25) == pytest.approx(math.sqrt(2))
    assert flat.std() == pytest.approx((math.sqrt(2), math.sqrt(2)))


def test_effective_field_at_initialisation_is_inside_and_smaller():
    def build():
        return nn.Sequential(*[m for _ in range(6) for m in (fastconv.Conv2d(4, 4, 3, padding=1), nn.ReLU())])

    erf = effective_receptive_field(build, (4, 4, 21, 21), layer="10", draws=3, seed=1)
    assert erf.samples == 12 and erf.theoretical.size == (13, 13)
    assert erf.share_inside_theoretical() == pytest.approx(1.0, abs=1e-12)
    assert erf.map.sum().item() == pytest.approx(1.0)
    # Concentrated in the middle: half the mass within a fraction of the 6-pixel half-width.
    assert erf.radius(0.5) < erf.radius(0.95) <= 6 * math.sqrt(2)
    assert erf.radius(0.5) < 3.5
    # Reproducible from the seed; other seeds draw other weights.
    again = effective_receptive_field(build, (4, 4, 21, 21), layer="10", draws=3, seed=1)
    other = effective_receptive_field(build, (4, 4, 21, 21), layer="10", draws=3, seed=2)
    assert torch.equal(erf.map, again.map) and not torch.equal(erf.map, other.map)


def test_effective_field_png(tmp_path):
    matplotlib_image = pytest.importorskip("matplotlib.image")  # not in the low-end torch CI venv
    conv = nn.Sequential(fastconv.Conv2d(1, 2, 3, padding=1), nn.ReLU(), fastconv.Conv2d(2, 2, 3, padding=1))
    erf = effective_receptive_field(conv, (2, 1, 9, 9))
    path = erf.save_png(tmp_path / "erf.png")
    image = matplotlib_image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300


def test_effective_field_without_matplotlib(monkeypatch, tmp_path):
    erf = effective_receptive_field(fastconv.Conv2d(1, 1, 3), (1, 1, 5, 5))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        erf.save_png(tmp_path / "erf.png")
    assert erf.radius(0.5) > 0  # the figures need no matplotlib


def test_effective_field_bad_arguments():
    conv = fastconv.Conv2d(1, 1, 3)
    with pytest.raises(ValueError, match="draws"):
        effective_receptive_field(conv, (1, 1, 5, 5), draws=2)
    with pytest.raises(ValueError, match="unit"):
        effective_receptive_field(conv, (1, 1, 5, 5), unit=(3, 0))
    with pytest.raises(ValueError, match="layer 'x'"):
        effective_receptive_field(conv, (1, 1, 5, 5), layer="x")
    with pytest.raises(ValueError, match="feature map"):
        effective_receptive_field(nn.Sequential(conv, nn.Flatten()), (1, 1, 5, 5))
    with pytest.raises(ValueError, match="share"):
        effective_receptive_field(conv, (1, 1, 5, 5)).radius(0)
    with pytest.raises(TypeError, match="model"):
        effective_receptive_field(3, (1, 1, 5, 5))
    with pytest.raises(TypeError, match="seed"):
        effective_receptive_field(conv, (1, 1, 5, 5), seed=0.5)
    zero = fastconv.Conv2d(1, 1, 3)
    with torch.no_grad():
        zero.weight.zero_()
    with pytest.raises(ValueError, match="zero"):
        effective_receptive_field(zero, (1, 1, 5, 5))
