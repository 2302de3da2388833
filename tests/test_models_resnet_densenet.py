"""ResNet, ResNeXt and DenseNet on fastconv: every builder builds and runs, every convolution
is a fastconv one, and a torchvision state_dict loads strict and gives torchvision's outputs."""

import importlib.util
import pathlib
import re

import pytest
import torch
from torch import nn

import fastconv.models as models
import fastconv.models.densenet as densenet_module
import fastconv.models.resnet as resnet_module
from fastconv.models._registry import load_weights
from fastconv.models.densenet import DenseNet
from fastconv.models.resnet import BasicBlock, Bottleneck, ResNet
from model_checks import assert_all_convs_fastconv, assert_same_as_reference, forward_backward

RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
           "resnext101_32x8d"]
DENSENETS = ["densenet121", "densenet161", "densenet169", "densenet201"]
ALL = RESNETS + DENSENETS

# Convolutions per model: stem + blocks × convs per block + projection shortcuts for ResNet;
# stem + 2 per dense layer + 1 per transition for DenseNet.
CONV_COUNTS = {
    "resnet18": 1 + 8 * 2 + 3, "resnet34": 1 + 16 * 2 + 3, "resnet50": 1 + 16 * 3 + 4,
    "resnet101": 1 + 33 * 3 + 4, "resnet152": 1 + 50 * 3 + 4, "resnext50_32x4d": 1 + 16 * 3 + 4,
    "resnext101_32x8d": 1 + 33 * 3 + 4, "densenet121": 1 + 58 * 2 + 3,
    "densenet161": 1 + 78 * 2 + 3, "densenet169": 1 + 82 * 2 + 3, "densenet201": 1 + 98 * 2 + 3,
}
# The smaller model of each kind also trains a step here (resnet50's Bottleneck path trains in
# test_replace_stride_with_dilation); the large ones only run forward, to keep the file quick
# on a small CPU.
BACKWARD = {"resnet18", "resnext50_32x4d", "densenet121"}


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
def test_builds_runs_and_uses_fastconv(name):
    torch.manual_seed(0)
    model = models.get_model(name, num_classes=7)
    assert assert_all_convs_fastconv(model) == CONV_COUNTS[name]
    if name in BACKWARD:
        # Batch 2: BatchNorm in training mode needs more than one value per channel at 1×1.
        x = torch.randn(2, 3, 32, 32)
        out = forward_backward(model.train(), x)
        assert out.shape == (2, 7)
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"parameters without a gradient: {missing}"
    else:
        with torch.no_grad():
            out = model.eval()(torch.randn(1, 3, 32, 32))
        assert out.shape == (1, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_matches_torchvision(name):
    """Same parameter count, module names and state_dict keys and shapes as torchvision's
    model; its state_dict loads strict and gives the same float64 outputs."""
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ours = models.get_model(name)
    reference = getattr(tv.models, name)()
    assert _params(ours) == _params(reference)
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in reference.named_modules()]
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}

    # Non-trivial BatchNorm statistics, so that eval mode tests that they were loaded.
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    size = 64 if name in BACKWARD else 32
    assert_same_as_reference(ours, reference, torch.randn(1, 3, size, size), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d", "densenet121"])
def test_same_initialisation_as_torchvision(name):
    """Built in the same order with the same initialisation, the same seed gives the same
    weights, so a model trained from scratch starts where torchvision's would."""
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ours = models.get_model(name, num_classes=10).state_dict()
    torch.manual_seed(0)
    reference = getattr(tv.models, name)(num_classes=10).state_dict()
    assert list(ours) == list(reference)
    for key in reference:
        assert torch.equal(ours[key], reference[key]), key


def test_registry_and_exports():
    names = models.list_models()
    for name in ALL:
        assert name in names
        module = resnet_module if name in RESNETS else densenet_module
        assert getattr(models, name) is getattr(module, name)  # re-exported by the package
    for cls in (ResNet, BasicBlock, Bottleneck, DenseNet):
        assert getattr(models, cls.__name__) is cls
    assert isinstance(models.get_model("ResNet18", num_classes=3), ResNet)
    densenet = models.get_model("densenet121", num_classes=3)
    assert isinstance(densenet, DenseNet) and densenet.classifier.out_features == 3


@pytest.mark.parametrize(
    "build, kwargs, error, match",
    [
        (models.resnet18, dict(num_classes=0), ValueError, "num_classes"),
        (models.resnet18, dict(num_classes=2.5), TypeError, "num_classes"),
        (models.resnet18, dict(groups=2), ValueError, "groups"),
        (models.resnet34, dict(width_per_group=32), ValueError, "width_per_group"),
        (models.resnet18, dict(replace_stride_with_dilation=[False, True, True]), ValueError,
         "replace_stride_with_dilation"),
        (models.resnet50, dict(replace_stride_with_dilation=[True, True]), ValueError,
         "replace_stride_with_dilation"),
        (models.resnet50, dict(replace_stride_with_dilation=[False, 2, True]), ValueError,
         "replace_stride_with_dilation"),
        (models.resnet50, dict(replace_stride_with_dilation="ftt"), ValueError,
         "replace_stride_with_dilation"),
        (models.resnet50, dict(norm_layer="batchnorm"), TypeError, "norm_layer"),
        (models.resnet50, dict(groups=0), ValueError, "groups"),
        (models.resnet50, dict(zero_init_residual="yes"), TypeError, "zero_init_residual"),
        (models.resnext50_32x4d, dict(groups=8), ValueError, "groups"),
        (models.resnext101_32x8d, dict(width_per_group=4), ValueError, "width_per_group"),
        (models.resnet18, dict(pretrained=True), TypeError, "pretrained"),
        (models.resnet18, dict(weights=3), TypeError, "weights"),
        (ResNet, dict(block=Bottleneck, layers=[3, 4, 6]), ValueError, "layers"),
        (ResNet, dict(block=Bottleneck, layers=[3, 0, 6, 3]), ValueError, r"layers\[1\]"),
        (ResNet, dict(block=nn.Linear, layers=[1, 1, 1, 1]), TypeError, "block"),
        (models.densenet121, dict(num_classes=-1), ValueError, "num_classes"),
        (models.densenet121, dict(drop_rate=1.0), ValueError, "drop_rate"),
        (models.densenet121, dict(drop_rate="0.2"), TypeError, "drop_rate"),
        (models.densenet121, dict(bn_size=0), ValueError, "bn_size"),
        (models.densenet121, dict(memory_efficient="yes"), TypeError, "memory_efficient"),
        (models.densenet121, dict(growth_rate=16), TypeError, "growth_rate"),
        (DenseNet, dict(block_config=()), ValueError, "block_config"),
        (DenseNet, dict(block_config=(6, -1, 24, 16)), ValueError, r"block_config\[1\]"),
        (DenseNet, dict(growth_rate=0), ValueError, "growth_rate"),
        (DenseNet, dict(num_init_features=1.5), TypeError, "num_init_features"),
    ],
)
def test_bad_arguments_raise(build, kwargs, error, match):
    with pytest.raises(error, match=match):
        build(**kwargs)


def test_wrong_state_dict_is_rejected():
    state = models.resnet18(num_classes=5).state_dict()
    with pytest.raises(RuntimeError, match="size mismatch"):
        models.resnet18(weights=state)  # 1000 classes by default, the state has 5
    with pytest.raises(RuntimeError, match="Missing key"):
        models.resnet34(num_classes=5, weights=state)


def test_replace_stride_with_dilation():
    """Stages 3 and 4 dilated: output stride 8, dilated 3×3 convolutions on fastconv, the same
    outputs as torchvision's, and gradients through the dilated kernels."""
    torch.manual_seed(0)
    model = models.resnet50(num_classes=5, replace_stride_with_dilation=[False, True, True])
    assert_all_convs_fastconv(model)
    dilations = {name: m.dilation for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert dilations["layer2.0.conv2"] == (1, 1)
    # The first block of a dilated stage keeps the previous dilation; the others take the new.
    assert dilations["layer3.0.conv2"] == (1, 1) and dilations["layer3.1.conv2"] == (2, 2)
    assert dilations["layer4.0.conv2"] == (2, 2) and dilations["layer4.2.conv2"] == (4, 4)
    assert model.layer4[1].conv2.padding == (4, 4)
    assert model.layer3[0].downsample[0].stride == (1, 1)

    shapes = []
    model.layer4.register_forward_hook(lambda module, inputs, output: shapes.append(output.shape))
    x = torch.randn(2, 3, 32, 32)
    out = forward_backward(model, x)
    assert out.shape == (2, 5)
    assert shapes == [(2, 2048, 4, 4)]  # 32 / 8; without dilation it would be 1×1
    assert model.layer4[2].conv2.weight.grad.abs().sum() > 0

    tv = pytest.importorskip("torchvision")
    reference = tv.models.resnet50(num_classes=5, replace_stride_with_dilation=[False, True, True])
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
    assert_same_as_reference(model, reference, x[:1], rtol=1e-10, atol=1e-12)


def test_zero_init_residual_makes_blocks_identities():
    torch.manual_seed(0)
    resnet18 = models.resnet18(zero_init_residual=True)
    resnet50 = models.resnet50(zero_init_residual=True)
    assert all(block.bn2.weight.abs().sum() == 0 for stage in
               (resnet18.layer1, resnet18.layer4) for block in stage)
    assert all(block.bn3.weight.abs().sum() == 0 for block in resnet50.modules()
               if isinstance(block, Bottleneck))
    # A block without a projection adds zero to its (non-negative, post-ReLU) input.
    x = torch.rand(1, 256, 8, 8)
    with torch.no_grad():
        assert torch.equal(resnet50.layer1[1].eval()(x), x)
    assert models.resnet18().layer1[0].bn2.weight.abs().sum() > 0


def test_norm_layer_groupnorm():
    model = models.resnet50(num_classes=4, norm_layer=lambda channels: nn.GroupNorm(32, channels))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 1 + 16 * 3 + 4
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    out = forward_backward(model, torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 4)


def test_grouped_resnext_width():
    model = models.resnext50_32x4d()
    first = model.layer1[0].conv2
    assert (first.in_channels, first.groups) == (128, 32)  # 32 groups × width 4 × (64 / 64) × 1
    assert model.layer4[0].conv2.in_channels == 1024  # 32 × 4 × (512 / 64)


def test_densenet_memory_efficient_same_results():
    """Checkpointed bottlenecks give the same outputs, gradients and BatchNorm statistics (the
    recomputation does not count a batch twice)."""
    torch.manual_seed(0)
    plain = DenseNet(growth_rate=8, block_config=(2, 3, 2), num_init_features=16, num_classes=3)
    efficient = DenseNet(growth_rate=8, block_config=(2, 3, 2), num_init_features=16, num_classes=3,
                         memory_efficient=True)
    efficient.load_state_dict(plain.state_dict())
    assert assert_all_convs_fastconv(efficient) == 1 + 7 * 2 + 2
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    plain, efficient = plain.double(), efficient.double()
    out_plain = forward_backward(plain, x)
    out_efficient = forward_backward(efficient, x)
    torch.testing.assert_close(out_efficient, out_plain, rtol=0, atol=0)
    for (name, p), q in zip(plain.named_parameters(), efficient.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-14, msg=name)
    for (name, b), c in zip(plain.named_buffers(), efficient.buffers()):
        assert torch.equal(b, c), name
    with torch.no_grad():  # no checkpointing without autograd: the plain path runs
        torch.testing.assert_close(efficient.eval()(x), plain.eval()(x), rtol=0, atol=0)


def _small_densenet(**kwargs):
    return DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=3, **kwargs)


def test_densenet_dropout():
    torch.manual_seed(0)
    assert models.densenet121(drop_rate=0.2).features.denseblock4.denselayer16.drop_rate == 0.2
    model = _small_densenet(drop_rate=0.5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(model.train()(x), model(x))  # a fresh dropout mask each call
        assert torch.equal(model.eval()(x), model(x))


def test_densenet_loads_legacy_keys():
    """Older checkpoints (torchvision's download files) name the dense layer's modules
    "norm.1", "conv.2", ...; they load strict."""
    torch.manual_seed(0)
    state = _small_densenet().state_dict()
    legacy = {re.sub(r"(denselayer\d+\.)(norm|conv)([12])\.", r"\1\2.\3.", key): value.clone()
              for key, value in state.items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    assert "features.transition1.norm.weight" in legacy  # only dense layers were renamed
    torch.manual_seed(1)
    loaded = _small_densenet()
    load_weights(loaded, legacy)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_weights(_small_densenet(), {**legacy, "features.denseblock1.denselayer1.norm.3.weight": state[
            "features.denseblock1.denselayer1.norm1.weight"]})


def _example_module():
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "transfer_learning.py"
    spec = importlib.util.spec_from_file_location("transfer_learning_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_transfer_learning_example_loads_torchvision_weights(tmp_path, capsys):
    """The example's --weights path: a torchvision resnet18 state_dict file loads into the
    fastconv backbone, the head is replaced, and a tiny two-stage run completes."""
    tv = pytest.importorskip("torchvision")
    example = _example_module()
    torch.manual_seed(3)
    reference = tv.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)

    model = example.build_model("resnet18", str(path), num_classes=4)
    ref_state = reference.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, ref_state[key]), key
    assert (model.fc.in_features, model.fc.out_features) == (512, 4)

    figures = example.main(["--weights", str(path), "--head-epochs", "1", "--finetune-epochs", "1",
                            "--train-size", "16", "--test-size", "16", "--batch-size", "8",
                            "--out", str(tmp_path / "out"), "--no-plots"])
    printed = capsys.readouterr().out
    assert f"loaded weights from {path}" in printed
    assert 0.0 <= figures["final_accuracy"] <= 1.0
    assert len(figures["head"]) == 1 and len(figures["finetune"]) == 1
