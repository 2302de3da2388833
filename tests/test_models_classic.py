"""LeNet-5, AlexNet, VGG and GoogLeNet on fastconv: they build, train, count the parameters
torchvision's do, load torchvision's state_dicts strictly and then give the same outputs.

The VGGs hold about 130M parameters each, almost all in the classifier, whatever num_classes:
each is built for real once, in float64, and torchvision's counterpart is built on the meta
device and given the same tensors, so the file stays fast.
"""

import contextlib

import pytest
import torch

import fastconv.models as models
from model_checks import assert_all_convs_fastconv, assert_same_as_reference, forward_backward

VGG_CONVS = {"vgg11": 8, "vgg13": 10, "vgg16": 13, "vgg19": 16}
VGG_NAMES = [name + bn for name in VGG_CONVS for bn in ("", "_bn")]
TORCHVISION_NAMES = ["alexnet", *VGG_NAMES, "googlenet"]
ALL_NAMES = ["lenet5", *TORCHVISION_NAMES]

# Parameter counts for the default 1000 classes (10 for LeNet-5): LeNet-5's classic figure with
# C3 fully connected, VGG-16's the lecture's "138M", the others torchvision's documented ones.
KNOWN_PARAMETER_COUNTS = {
    "lenet5": 61_706,
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
}


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def torchvision_builder(name):
    torchvision = pytest.importorskip("torchvision")
    return getattr(torchvision.models, name)


def torchvision_kwargs(name, **kwargs):
    # torchvision's GoogLeNet warns unless init_weights is given explicitly.
    if name == "googlenet":
        kwargs.setdefault("init_weights", True)
    return kwargs


@contextlib.contextmanager
def default_dtype(dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def randomize_batchnorm(model, seed=0):
    """Fresh BatchNorm statistics and affine parameters: at their initial values (mean 0,
    variance 1, weight 1, bias 0) eval-mode BatchNorm is nearly the identity, and a comparison
    would not notice a misplaced or missing one."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t, low, high in ((m.weight, 0.5, 1.5), (m.bias, -0.2, 0.2),
                                     (m.running_mean, -0.2, 0.2), (m.running_var, 0.5, 1.5)):
                    t.copy_(torch.empty(t.shape, dtype=t.dtype).uniform_(low, high, generator=generator))


def images(size, batch=2, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator, dtype=dtype)


# ---------------------------------------------------------------- registry and construction


def test_every_builder_is_registered_and_exported():
    known = models.list_models()
    for name in ALL_NAMES:
        assert name in known
        assert name in models.__all__
        assert callable(getattr(models, name))
    for cls in ("LeNet5", "AlexNet", "VGG", "GoogLeNet", "GoogLeNetOutputs"):
        assert cls in models.__all__
    model = models.get_model("LeNet5", num_classes=3)
    assert isinstance(model, models.LeNet5)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_structure_on_meta_device(name):
    """Every convolution is fastconv's; parameter counts, state_dict keys and shapes are
    torchvision's. Built on the meta device, so the 1000-class VGGs cost nothing."""
    with torch.device("meta"):
        ours = models.get_model(name)
    convs = assert_all_convs_fastconv(ours)
    if name in KNOWN_PARAMETER_COUNTS:
        assert num_params(ours) == KNOWN_PARAMETER_COUNTS[name]
    if name == "lenet5":
        assert convs == 2
        return
    with torch.device("meta"):
        reference = torchvision_builder(name)(**torchvision_kwargs(name))
    assert num_params(ours) == num_params(reference)
    assert convs == sum(isinstance(m, torch.nn.Conv2d) for m in reference.modules())
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    reference_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert ours_shapes == reference_shapes


def test_googlenet_parameter_counts_with_and_without_auxiliary_heads():
    torchvision_builder("googlenet")
    with torch.device("meta"):
        with_aux = models.googlenet()
        without_aux = models.googlenet(aux_logits=False)
    assert num_params(with_aux) == 13_004_888
    assert num_params(without_aux) == 6_624_904  # the "only 5 million" network, with BatchNorm
    assert without_aux.aux1 is None and without_aux.aux2 is None


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_num_classes_raises(name, bad):
    with pytest.raises(ValueError, match="num_classes"):
        models.get_model(name, num_classes=bad)


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("bad", ["10", 2.5, True])
def test_non_integer_num_classes_raises(name, bad):
    with pytest.raises(TypeError, match="num_classes"):
        models.get_model(name, num_classes=bad)


@pytest.mark.parametrize(
    "name, kwargs, error, match",
    [
        ("vgg16", {"dropout": 1.5}, ValueError, "dropout"),
        ("alexnet", {"dropout": -0.1}, ValueError, "dropout"),
        ("googlenet", {"dropout_aux": 2.0}, ValueError, "dropout_aux"),
        ("googlenet", {"dropout": "0.2"}, TypeError, "dropout"),
        ("vgg11_bn", {"batch_norm": True}, TypeError, "batch_norm"),
        ("lenet5", {"in_channels": 3}, TypeError, "in_channels"),
        ("lenet5", {"weights": 5}, TypeError, "weights"),
    ],
)
def test_bad_arguments_raise(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        models.get_model(name, **kwargs)


# ---------------------------------------------------------------- LeNet-5


def test_lenet5_trains(device):
    torch.manual_seed(0)
    model = models.lenet5().to(device)
    assert assert_all_convs_fastconv(model) == 2
    out = forward_backward(model, torch.randn(4, 1, 32, 32, device=device))
    assert out.shape == (4, 10)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 32, 32), (1, 32, 32)])
def test_lenet5_rejects_other_input_shapes(shape):
    with pytest.raises(ValueError, match=r"\[N, 1, 32, 32\]"):
        models.lenet5()(torch.randn(shape))


def test_lenet5_weights_from_state_dict_and_file(tmp_path):
    torch.manual_seed(0)
    trained = models.lenet5(num_classes=4)
    path = tmp_path / "lenet5.pt"
    torch.save(trained.state_dict(), path)
    x = torch.randn(3, 1, 32, 32)
    expected = trained.eval()(x)
    for weights in (trained.state_dict(), path, str(path)):
        loaded = models.lenet5(num_classes=4, weights=weights).eval()
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="size mismatch"):
        models.lenet5(num_classes=10, weights=path)


# ---------------------------------------------------------------- AlexNet


def test_alexnet_matches_torchvision_and_trains(device):
    torch.manual_seed(0)
    with default_dtype(torch.float64):
        ours = models.alexnet(num_classes=10)
    assert assert_all_convs_fastconv(ours) == 5
    # As for VGG below: torchvision's model shares our tensors instead of allocating its own.
    with torch.device("meta"):
        reference = torchvision_builder("alexnet")(num_classes=10)
    reference.load_state_dict(ours.state_dict(), strict=True, assign=True)
    ours, reference = ours.to(device), reference.to(device)
    # 64 px is just above the 63 px the three stride-2 pools need to leave a 1×1 map.
    x = images(64).to(device)
    assert_same_as_reference(ours, reference, x, rtol=1e-10, atol=1e-12)
    out = forward_backward(ours.train(), x)
    assert out.shape == (2, 10)


# ---------------------------------------------------------------- VGG


@pytest.mark.parametrize("name", VGG_NAMES)
def test_vgg_matches_torchvision_and_trains(name, device):
    torch.manual_seed(0)
    # init_weights=False keeps torch's default initialisation and skips a second pass over the
    # 120M classifier weights; test_vgg_init_and_weights_argument covers VGG's own scheme.
    with default_dtype(torch.float64):
        ours = models.get_model(name, num_classes=10, init_weights=False)
    assert assert_all_convs_fastconv(ours) == VGG_CONVS[name.removesuffix("_bn")]
    assert isinstance(ours.features, torch.nn.Sequential)
    assert [type(m) for m in ours.classifier] == [
        torch.nn.Linear, torch.nn.ReLU, torch.nn.Dropout,
        torch.nn.Linear, torch.nn.ReLU, torch.nn.Dropout, torch.nn.Linear,
    ]
    assert ours.classifier[0].in_features == 512 * 7 * 7
    randomize_batchnorm(ours)
    with torch.device("meta"):
        reference = torchvision_builder(name)(num_classes=10)
    # Building torchvision's VGG for real would double this test's cost; sharing our tensors
    # gives it the same values for free, and the comparison below still loads its state_dict
    # into ours with strict=True.
    reference.load_state_dict(ours.state_dict(), strict=True, assign=True)
    ours, reference = ours.to(device), reference.to(device)
    # 32 px: the fifth pool leaves 1×1, which the adaptive average pool spreads to 7×7.
    x = images(32).to(device)
    assert_same_as_reference(ours, reference, x, rtol=1e-10, atol=1e-12)
    out = forward_backward(ours.train(), x)
    assert out.shape == (2, 10)
    assert ours.features[0].weight.grad is not None


def test_vgg_init_and_weights_argument():
    torch.manual_seed(0)
    source = models.vgg11(num_classes=5)
    # He initialisation (fan-out) for the convolutions, N(0, 0.01) for the classifier, zero biases.
    conv = source.features[0]
    assert conv.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)
    assert source.classifier[0].weight.std().item() == pytest.approx(0.01, rel=0.01)
    layers = [m for m in source.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert all(not m.bias.any() for m in layers)
    with torch.device("meta"):
        reference = torchvision_builder("vgg11")(num_classes=5)
    reference.load_state_dict(source.state_dict(), assign=True)
    loaded = models.vgg11(num_classes=5, weights=reference.state_dict())
    for (key, a), b in zip(loaded.state_dict().items(), source.state_dict().values()):
        assert torch.equal(a, b), key


# ---------------------------------------------------------------- GoogLeNet


def googlenet_pair(**kwargs):
    """torchvision's GoogLeNet with fresh BatchNorm statistics, and ours loaded from it
    through the weights= argument."""
    torch.manual_seed(0)
    reference = torchvision_builder("googlenet")(init_weights=True, **kwargs)
    randomize_batchnorm(reference)
    ours = models.googlenet(weights=reference.state_dict(), **kwargs)
    return ours, reference


def test_googlenet_matches_torchvision():
    # Without dropout, training mode is deterministic (BatchNorm uses the batch's statistics),
    # so the auxiliary heads can be compared too; eval mode does not use dropout anyway.
    ours, reference = googlenet_pair(num_classes=10, dropout=0.0, dropout_aux=0.0)
    assert assert_all_convs_fastconv(ours) == 59
    x = images(64)
    for transform_input in (False, True):
        ours.transform_input = reference.transform_input = transform_input
        assert_same_as_reference(ours, reference, x, rtol=1e-10, atol=1e-12)

    ours, reference = ours.train(), reference.train()
    with torch.no_grad():
        a, b = ours(x), reference(x)
    assert isinstance(a, models.GoogLeNetOutputs)
    # torchvision's output is the same kind of named tuple, so code written for it works.
    assert type(a).__name__ == type(b).__name__
    assert a._fields == b._fields == ("logits", "aux_logits2", "aux_logits1")
    for field in a._fields:
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=1e-10, atol=1e-12)


def test_googlenet_outputs_and_training(device):
    torch.manual_seed(0)
    model = models.googlenet(num_classes=7).to(device)
    x = torch.randn(2, 3, 64, 64, device=device)
    out = forward_backward(model.train(), x)
    assert isinstance(out, models.GoogLeNetOutputs)
    assert all(t.shape == (2, 7) for t in out)
    # Both auxiliary heads take part in the backward pass.
    assert model.aux1.fc2.weight.grad is not None and model.aux2.conv.conv.weight.grad is not None
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 7)
        without_aux = models.googlenet(num_classes=7, aux_logits=False, init_weights=False)
        without_aux = without_aux.to(device).train()
        assert without_aux(x).shape == (2, 7)


def test_googlenet_weights_drop_auxiliary_heads_when_not_asked_for(tmp_path):
    torch.manual_seed(0)
    # With auxiliary heads, like torchvision's pretrained file.
    source = models.googlenet(num_classes=3, init_weights=False)
    path = tmp_path / "googlenet.pt"
    torch.save(source.state_dict(), path)
    x = torch.randn(2, 3, 64, 64)
    expected = source.eval()(x)
    for weights in (source.state_dict(), path):
        loaded = models.googlenet(num_classes=3, aux_logits=False, weights=weights).eval()
        assert loaded.aux1 is None
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
    # Everything else stays strict.
    incomplete = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    with pytest.raises(RuntimeError, match="Missing key"):
        models.googlenet(num_classes=3, aux_logits=False, weights=incomplete)
