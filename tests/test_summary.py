"""fastconv.summary: per-layer shapes, parameters, activation memory and FLOPs."""

import pytest
import torch

import fastconv
import fastconv.models as models
from fastconv.summary import summary

# The lecture's VGG-16 table at 224x224: (layer, output channels, output side) in order.
VGG16_LECTURE = [
    ("conv", 64, 224), ("conv", 64, 224), ("pool", 64, 112),
    ("conv", 128, 112), ("conv", 128, 112), ("pool", 128, 56),
    ("conv", 256, 56), ("conv", 256, 56), ("conv", 256, 56), ("pool", 256, 28),
    ("conv", 512, 28), ("conv", 512, 28), ("conv", 512, 28), ("pool", 512, 14),
    ("conv", 512, 14), ("conv", 512, 14), ("conv", 512, 14), ("pool", 512, 7),
]


@pytest.fixture(scope="module")
def vgg16_summary():
    torch.manual_seed(0)
    return summary(models.vgg16(), (1, 3, 224, 224), verbose=False)


def test_vgg16_reproduces_the_lecture_rows(vgg16_summary):
    s = vgg16_summary
    assert s.total_params == 138_357_544 == s.trainable_params
    rows = {r.name: r for r in s.rows}
    assert rows["input"].activation_elements == 224 * 224 * 3  # "150K"

    feature_rows = [r for r in s.rows if r.name.startswith("features.") and r.kind in ("Conv2d", "MaxPool2d")]
    assert len(feature_rows) == len(VGG16_LECTURE)
    in_channels = 3
    flops = 0
    for row, (kind, channels, side) in zip(feature_rows, VGG16_LECTURE):
        assert row.kind == ("Conv2d" if kind == "conv" else "MaxPool2d")
        assert row.output_shape == [[1, channels, side, side]]
        assert row.activation_elements == channels * side * side  # the lecture's "memory" column
        assert row.activation_bytes == 4 * channels * side * side
        if kind == "conv":
            # the lecture's params column, (3*3*C_in)*C_out, plus the biases it leaves out
            assert row.params == 9 * in_channels * channels + channels
            assert row.flops == 2 * side * side * channels * in_channels * 9
            flops += row.flops
            in_channels = channels
    for name, fan_in, fan_out in [("classifier.0", 7 * 7 * 512, 4096), ("classifier.3", 4096, 4096), ("classifier.6", 4096, 1000)]:
        assert rows[name].params == fan_in * fan_out + fan_out  # 102,760,448 + bias, ...
        assert rows[name].activation_elements == fan_out
        assert rows[name].flops == 2 * fan_in * fan_out
        flops += rows[name].flops
    # In-place ReLUs and eval-mode Dropout allocate nothing.
    assert all(r.activation_elements == 0 for r in s.rows if r.kind in ("ReLU", "Dropout"))

    lecture_sum = 224 * 224 * 3 + sum(c * h * h for _, c, h in VGG16_LECTURE) + 4096 + 4096 + 1000
    adaptive_avgpool = 512 * 7 * 7  # torchvision's VGG has it; the lecture's drawing does not
    assert s.activation_elements_per_image == lecture_sum + adaptive_avgpool
    assert 15.2e6 < s.activation_elements_per_image < 15.3e6
    assert s.forward_bytes_per_image == 4 * s.activation_elements_per_image  # ~58 MiB
    assert s.flops == flops  # 30.9 GFLOPs (15.5 G multiply-adds)
    # Autograd keeps at least every conv input, and the max-pool indices besides.
    assert s.saved_for_backward_bytes > s.input_bytes + s.activation_bytes - 4 * (4096 * 2 + 1000)


def test_vgg16_printed_table(capsys):
    torch.manual_seed(0)
    model = fastconv.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(inplace=True)))
    summary(model, (2, 3, 16, 16))
    text = capsys.readouterr().out
    assert "0 (Conv2d)" in text and "[2, 8, 16, 16]" in text
    assert "Total params: 224 " in text
    assert "FLOPs:" in text and "Activations:" in text


class _Functional(torch.nn.Module):
    """Work done by functional ops in a forward, not by any submodule."""

    def __init__(self):
        super().__init__()
        self.a = fastconv.Conv2d(4, 6, 1)
        self.b = fastconv.Conv2d(4, 6, 3, padding=1)

    def forward(self, x):
        y = self.a(x) + self.b(x)  # a new tensor: charged to this module
        return torch.cat([y, x], dim=1)  # another


def test_functional_activations_are_charged_to_the_parent():
    s = summary(torch.nn.Sequential(_Functional()), (2, 4, 5, 5), verbose=False)
    rows = {r.name: r for r in s.rows}
    assert rows["0.a"].activation_elements == rows["0.b"].activation_elements == 2 * 6 * 25
    assert rows["0"].activation_elements == 2 * 6 * 25 + 2 * 10 * 25  # the sum and the concat
    assert rows["0"].output_shape == [[2, 10, 5, 5]]
    assert rows["0.a"].flops == 2 * 2 * 6 * 25 * 4
    assert rows["0.b"].flops == 2 * 2 * 6 * 25 * 4 * 9
    assert s.activation_elements == sum(r.activation_elements for r in s.rows if r.name != "input")
    assert s.batch_size == 2 and s.activation_elements_per_image == (2 * 4 * 25 + s.activation_elements) / 2


def test_transposed_conv_flops_and_shared_module_rows():
    up = fastconv.nn.ConvTranspose2d(3, 5, 4, stride=2, padding=1)
    relu = torch.nn.ReLU()
    model = torch.nn.Sequential(up, relu, relu)  # one module, two calls: two rows, params once
    s = summary(model, (1, 3, 6, 6), verbose=False)
    names = [r.name for r in s.rows]
    assert names == ["input", "0", "1", "1"]  # named_modules() names a shared module once
    assert s.rows[1].params == 3 * 5 * 16 + 5 == s.total_params
    assert s.rows[1].output_shape == [[1, 5, 12, 12]]
    assert s.rows[1].flops == 2 * (3 * 36) * 5 * 16  # every input element meets K*R*S weights
    assert s.rows[2].activation_elements == s.rows[3].activation_elements == 5 * 144


def test_input_data_and_state_left_alone():
    model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.BatchNorm1d(7), torch.nn.Dropout(0.5))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = torch.randint(0, 50, (3, 7))
    s = summary(model, input_data=tokens, verbose=False)
    assert s.batch_size == 3 and s.rows[1].output_shape == [[3, 7, 8]]
    assert model.training  # restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # batch-norm statistics untouched
    s2 = summary(torch.nn.Bilinear(4, 5, 6), [(2, 4), (2, 5)], verbose=False)
    assert s2.rows[0].output_shape == [[2, 4], [2, 5]]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(input_size=None), ValueError, "input_size"),
        (dict(input_size="1,3,8,8"), TypeError, "input_size"),
        (dict(input_size=(1, 3, 0, 8)), ValueError, "non-positive"),
        (dict(input_size=(1.0, 3, 8, 8)), TypeError, "input_size"),
        (dict(input_data=[1, 2]), TypeError, "input_data"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        summary(fastconv.Conv2d(3, 4, 3), **kwargs, verbose=False)
    with pytest.raises(TypeError, match="model"):
        summary(lambda x: x, (1, 3, 8, 8))


def test_models_summary_is_a_compatibility_alias():
    assert models.summary is summary
    assert models.ModelSummary is fastconv.summary.ModelSummary


def test_receptive_fields_in_the_table(vgg16_summary, capsys):
    # The figures of fastconv.receptive_field, from the same forward pass.
    rows = {r.name: r for r in vgg16_summary.rows}
    assert rows["input"].receptive_field.size == (1, 1)
    for name, size, jump, start in [("features.0", 3, 1, -1), ("features.16", 44, 8, -18),
                                    ("features.30", 212, 32, -90)]:
        rf = rows[name].receptive_field
        assert (rf.size, rf.jump, rf.start) == ((size, size), (jump, jump), (start, start)), name
    assert rows["classifier.6"].receptive_field.is_global
    assert fastconv.summary.receptive_fields is fastconv.receptive_field.receptive_fields

    # A residual block: the addition merges the shortcut's field (3) with the branch's (5).
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = fastconv.Conv2d(2, 2, 3, padding=1)
            self.conv2 = fastconv.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            return x + self.conv2(torch.relu(self.conv1(x)))

    model = torch.nn.Sequential(fastconv.Conv2d(1, 2, 3, padding=1), Block())
    s = summary(model, (1, 1, 12, 12))
    text = capsys.readouterr().out
    block = next(r for r in s.rows if r.name == "1")
    assert block.receptive_field.size == (7, 7) and block.receptive_field.merged
    assert not next(r for r in s.rows if r.name == "1.conv2").receptive_field.merged
    header = next(line for line in text.splitlines() if line.startswith("Layer (type)"))
    assert header.split()[-3:] == ["Field", "Jump", "Start"]
    assert any(line.startswith("1 (Block)") and "7*" in line for line in text.splitlines())
    assert "* branches of different fields merge" in text


def test_no_receptive_field_columns_without_an_image_input(capsys):
    summary(torch.nn.Sequential(torch.nn.Embedding(50, 8)), input_data=torch.randint(0, 50, (2, 7)))
    text = capsys.readouterr().out
    assert "Field" not in text and "Jump" not in text
