"""fastconv.fuse (issue 25): BatchNorm folded into the convolution before it, for inference.
BN statistics and affine parameters are randomised first, since a freshly built BN (mean 0,
var 1, gamma 1, beta 0) is nearly the identity and would hide a wrong fold."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import fastconv
import fastconv.fusion
import fastconv.models as models
from conftest import rel_err


def randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) * 2 - 1)
    return model


def count_bn(model):
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


def first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def randn(*shape):
    return lambda: torch.randn(shape)


# The small sizes of tests/test_fx.py; the deeper variants of each family (resnet34/101/152,
# densenet161..., vgg13..19) are the same blocks, left out to keep the suite short.
MODELS = [
    ("resnet18", {}, randn(2, 3, 64, 64)),
    ("resnet50", {}, randn(1, 3, 32, 32)),
    ("densenet121", {}, randn(1, 3, 32, 32)),
    ("googlenet", {"num_classes": 10}, randn(2, 3, 32, 32)),
    ("vgg11_bn", {"num_classes": 10, "init_weights": False}, randn(1, 3, 32, 32)),
    ("vgg11", {"num_classes": 10, "init_weights": False}, randn(1, 3, 32, 32)),
    ("unet", {"base_width": 8}, randn(1, 3, 64, 64)),
    ("lenet5", {}, randn(2, 1, 32, 32)),
    ("fcn8s", {"num_classes": 5, "width_mult": 0.125}, randn(1, 3, 48, 40)),
    ("conv_autoencoder", {"batch_norm": True}, randn(2, 1, 28, 28)),
    ("vae", {}, randn(2, 1, 28, 28)),
    ("text_cnn", {"vocab_size": 50, "embed_dim": 16, "num_filters": 8}, lambda: torch.randint(0, 50, (2, 12))),
    ("tdnn", {"num_classes": 5, "channels": (16, 16, 16, 16, 32), "embedding_dim": 8}, randn(2, 40, 30)),
]


@pytest.mark.parametrize("name,kwargs,make_input", MODELS, ids=[m[0] for m in MODELS])
def test_fused_model_gives_the_same_predictions(name, kwargs, make_input):
    torch.manual_seed(0)
    model = randomise_bn(models.get_model(name, **kwargs)).eval()
    fused, report = fastconv.fuse(model, report=True)
    x = make_input()
    with torch.no_grad():
        ref, out = first(model(x)), first(fused(x))
    assert rel_err(out, ref) < 1e-5
    if ref.dim() == 2:  # classifiers: the same class for every image
        assert torch.equal(out.argmax(1), ref.argmax(1))
    # Every BN is either folded (and gone) or reported with its reason.
    assert len(report.folded) + len(report.not_folded) == count_bn(model)
    assert count_bn(fused) == len(report.not_folded)


def test_which_batchnorms_each_model_family_folds():
    def fold(name, **kw):
        return fastconv.fuse(models.get_model(name, **kw).eval(), report=True)[1]

    r = fold("resnet18")
    assert len(r.folded) == 20 and not r.not_folded and not r.untraced
    assert ("layer2.0.downsample.0", "layer2.0.downsample.1") in {(p.conv, p.bn) for p in r.folded}
    # BasicBlock's second BN feeds the residual addition, then the block's ReLU: both fuse
    # into conv2; the downsample's BN feeds the same addition, already taken, so it stays.
    by_bn = {p.bn: p for p in r.folded}
    assert by_bn["layer1.0.bn2"].followed_by == ("add",)
    assert by_bn["layer1.0.bn1"].followed_by == ("layer1.0.relu (ReLU)",)
    by_conv = {f.conv: f.ops for f in r.fused}
    assert by_conv["layer1.0.conv1"] == ("relu",) and by_conv["layer1.0.conv2"] == ("add", "relu")
    # Where a downsample feeds the addition too, the first of the two in the graph takes it
    # (fastconv's block computes the downsample first); the other stays a convolution.
    assert by_conv["layer2.0.downsample.0"] == ("add", "relu") and "layer2.0.conv2" not in by_conv
    assert len(r.fused) == 17 and all(f.how == "fx graph" for f in r.fused)
    # DenseNet is pre-activation: norm1 and the transitions' norms follow a concatenation or
    # a pooling, never a convolution; each dense layer's conv1 -> norm2 folds.
    r = fold("densenet121")
    assert len(r.folded) == 1 + 58 and len(r.not_folded) == 58 + 3 + 1
    assert "no convolution module before it" in r.not_folded["features.denseblock1.denselayer1.norm1"]
    # GoogLeNet's auxiliary heads do not run in eval mode: their BNs are left, and said so.
    r = fold("googlenet", num_classes=10)
    assert set(r.not_folded) == {"aux1.conv.bn", "aux2.conv.bn"}
    assert "not called" in r.not_folded["aux1.conv.bn"]
    # The autoencoder's forward does not trace: its stages are traced one by one, transposed
    # convolutions with their BN included.
    r = fold("conv_autoencoder", batch_norm=True)
    assert "<the model itself>" in r.untraced
    assert {p.conv for p in r.folded} == {"encoder.0.0", "encoder.1.0", "decoder.0.conv", "decoder.1.conv"}
    assert r.separate == fastconv.fusion.SEPARATE_OPS_NOTE and "separate ops" in str(r)


def test_converted_torchvision_resnet18():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = randomise_bn(fastconv.convert(torchvision.models.resnet18(weights=None, num_classes=10))).eval()
    fused, report = fastconv.fuse(model, report=True)
    assert len(report.folded) == 20 and not report.not_folded
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    assert rel_err(out, ref) < 1e-5
    assert torch.equal(out.argmax(1), ref.argmax(1))
    # The folded layers are still fastconv's, the ReLU after each fused into it; torchvision's
    # block takes the downsample after conv2, so there conv2 takes the addition.
    assert type(fused.layer1[0].conv1) is fastconv.nn.FusedConv2d and fused.layer1[0].conv1.activation == "relu"
    by_conv = {f.conv: f.ops for f in report.fused}
    assert by_conv["layer2.0.conv2"] == ("add", "relu") and "layer2.0.downsample.0" not in by_conv
    assert type(fastconv.fuse(model, activations=False).layer1[0].conv1) is fastconv.Conv2d


class Tiny(nn.Module):
    """One foldable pair, one BN after an activation, one conv whose output is read twice."""

    def __init__(self):
        super().__init__()
        self.conv_a = fastconv.Conv2d(3, 4, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.bn_b = nn.BatchNorm2d(4)
        self.conv_c = nn.Conv2d(4, 4, 1, bias=False)
        self.bn_c = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn_b(self.relu(self.bn_a(self.conv_a(x))))
        c = self.conv_c(y)
        return self.bn_c(c) + c


def test_report_on_a_hand_built_model():
    model = randomise_bn(Tiny()).eval()
    fused, report = fastconv.fuse(model, report=True)
    assert report.folded == [fastconv.fusion.FoldedPair("conv_a", "bn_a", "fx graph", ("relu (ReLU)",))]
    assert set(report.not_folded) == {"bn_b", "bn_c"}
    assert report.not_folded["bn_b"] == "no convolution module before it: its input is relu (ReLU)"
    assert report.not_folded["bn_c"] == "the output of conv_c is also used by add"
    assert isinstance(fused.bn_a, nn.Identity)
    assert isinstance(fused.bn_b, nn.BatchNorm2d) and isinstance(fused.bn_c, nn.BatchNorm2d)
    text = str(report)
    assert "conv_a <- bn_a" in text and "bn_c: the output of conv_c is also used by add" in text
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
    # conv_a's BN folded, its ReLU then fused (bn_b reads the ReLU's output, which the fused
    # convolution now returns); the model traced, so it comes back as its rewritten graph.
    assert report.fused == [fastconv.fusion.FusedOps("conv_a", ("relu",), "fx graph")]
    assert isinstance(fused, torch.fx.GraphModule) and type(fused).__name__ == "Tiny"
    # report=False (the default) returns the module alone; activations=False folds only, and
    # leaves the model's own class.
    assert isinstance(fastconv.fuse(model), nn.Module)
    assert isinstance(fastconv.fuse(model, activations=False), Tiny)


def test_convs_without_bias_gain_one():
    model = randomise_bn(models.resnet18()).eval()
    fused = fastconv.fuse(model)
    assert model.conv1.bias is None and model.layer1[0].conv2.bias is None
    for conv in (fused.conv1, fused.layer1[0].conv2, fused.layer2[0].downsample[0]):
        assert isinstance(conv.bias, nn.Parameter) and conv.bias.shape == (conv.out_channels,)
    assert "conv1.bias" in fused.state_dict() and "bn1.running_mean" not in fused.state_dict()


def test_training_mode_is_refused_naming_the_module():
    model = models.resnet18()
    with pytest.raises(ValueError, match=r"the model \(ResNet\) is in training mode.*model\.eval\(\)"):
        fastconv.fuse(model)
    model.eval()
    model.layer1[0].bn1.train()
    with pytest.raises(ValueError, match=r"BatchNorm layer1\.0\.bn1 is in training mode"):
        fastconv.fuse(model)


def test_the_input_model_is_unchanged():
    model = randomise_bn(models.resnet18()).eval()
    before = copy.deepcopy(model.state_dict())
    kinds = [type(m) for m in model.modules()]
    fused = fastconv.fuse(model)
    assert fused is not model
    assert [type(m) for m in model.modules()] == kinds
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.conv1.weight is not fused.conv1.weight


def test_float64_folding_is_exact():
    model = randomise_bn(models.resnet18(num_classes=10)).double().eval()
    fused = fastconv.fuse(model)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(fused(x), model(x)) < 1e-12


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), nn.BatchNorm2d(6)),
    lambda: nn.Sequential(fastconv.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False),
                          nn.BatchNorm2d(6)),
    lambda: nn.Sequential(fastconv.ConvTranspose1d(4, 3, 3), nn.BatchNorm1d(3)),
    lambda: nn.Sequential(fastconv.Conv1d(4, 6, 3, groups=2, padding_mode="reflect", padding=1), nn.BatchNorm1d(6)),
    lambda: nn.Sequential(nn.Conv2d(4, 6, 3, groups=2, bias=False), nn.BatchNorm2d(6, affine=False)),
], ids=["torch-transposed-groups", "fastconv-transposed-groups", "transposed-1d", "conv1d-reflect",
        "bn-not-affine"])
def test_every_kind_of_convolution_folds_exactly_in_float64(make):
    torch.manual_seed(0)
    model = randomise_bn(make()).double().eval()
    fused, report = fastconv.fuse(model, report=True)
    assert [(p.conv, p.bn) for p in report.folded] == [("0", "1")]
    dims = model[0].weight.dim() - 2
    x = torch.randn((2, 4) + (7,) * dims, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(fused(x), model(x)) < 1e-12


class StdConv2d(nn.Conv2d):
    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def test_what_is_not_folded_and_why():
    model = nn.Sequential(StdConv2d(3, 4, 3), nn.BatchNorm2d(4),
                          nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False),
                          nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).eval()
    model[4].register_forward_hook(lambda m, i, o: None)
    _, report = fastconv.fuse(model, report=True)
    assert not report.folded
    assert "only the plain torch.nn / fastconv.nn convolution classes" in report.not_folded["1"]
    assert "track_running_stats=False" in report.not_folded["3"]
    assert "4 has forward hooks" in report.not_folded["5"]


class Untraceable(nn.Module):
    def forward(self, x):
        return x if x.sum() > -1e9 else -x  # branches on the data: torch.fx cannot trace it


def test_module_rules_where_nothing_traces(monkeypatch):
    """With tracing refused everywhere, the known blocks and nn.Sequential runs still fold;
    ResNet's stem BN (a child of ResNet itself, which has no rule) is left, with the reason."""
    def refuse(self, root, concrete_args=None):
        raise torch.fx.proxy.TraceError("tracing switched off by the test")

    monkeypatch.setattr(fastconv.fusion._Tracer, "trace", refuse)
    model = randomise_bn(models.resnet18(num_classes=10)).eval()
    fused, report = fastconv.fuse(model, report=True)
    assert len(report.folded) == 19 and list(report.not_folded) == ["bn1"]
    assert "ResNet) does not trace" in report.not_folded["bn1"]
    assert {p.how for p in report.folded} == {
        "module rule: BasicBlock.bn1(conv1(x))", "module rule: BasicBlock.bn2(conv2(x))",
        "module rule: consecutive in an nn.Sequential"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_err(fused(x), model(x)) < 1e-5


def test_an_untraceable_sequential_folds_by_adjacency():
    model = randomise_bn(nn.Sequential(fastconv.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                       nn.BatchNorm2d(4), Untraceable())).eval()
    fused, report = fastconv.fuse(model, report=True)
    assert "<the model itself>" in report.untraced
    assert [(p.conv, p.bn, p.how) for p in report.folded] == [("0", "1", "module rule: consecutive in an nn.Sequential")]
    assert "no convolution before it (2 is a ReLU)" in report.not_folded["3"]
    assert report.fused == [fastconv.fusion.FusedOps("0", ("relu",), "module rule: consecutive in an nn.Sequential")]
    assert type(fused[0]) is fastconv.nn.FusedConv2d and type(fused[2]) is nn.Identity
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert rel_err(fused(x), model(x)) < 1e-6


@pytest.mark.parametrize("name", ["fasterrcnn_heads", "maskrcnn_heads", "keypointrcnn_heads"])
def test_detection_heads_have_nothing_to_fold_and_say_what_did_not_trace(name):
    """No BatchNorm in them; their roots (per-image Python) and poolers do not trace, their
    heads do: the copy holds the same state, and the report names the untraced modules."""
    model = models.get_model(name, num_classes=3).eval()
    fused, report = fastconv.fuse(model, report=True)
    assert not report.folded and not report.not_folded
    assert "<the model itself>" in report.untraced and "box_roi_pool" in report.untraced
    a, b = model.state_dict(), fused.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Functional(nn.Module):
    """Activations and additions as function and method calls, and a convolution whose output
    two ops read, which must stay as it is."""

    def __init__(self):
        super().__init__()
        self.conv1 = fastconv.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv3 = nn.Conv2d(4, 4, 1)
        self.conv4 = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        a = torch.nn.functional.leaky_relu(self.conv1(x), 0.3)
        b = torch.add(a, self.bn2(self.conv2(a))).relu()
        c = self.conv3(b)
        d = torch.nn.functional.hardswish(self.conv4(b), inplace=True)
        return c + c.sigmoid() + d


def test_functional_activations_and_additions_fuse():
    model = randomise_bn(Functional()).eval()
    fused, report = fastconv.fuse(model, report=True)
    assert {f.conv: f.ops for f in report.fused} == {
        "conv1": ("leaky_relu",), "conv2": ("add", "relu"), "conv4": ("hardswish",)}
    assert fused.conv1.negative_slope == pytest.approx(0.3) and fused.conv2.activation == "relu"
    assert type(fused.conv3) is nn.Conv2d
    assert "conv2 + add + relu (fx graph)" in str(report)
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert rel_err(fused(x), model(x)) < 1e-5
    # Outside no_grad the fused layers take the differentiable ops: the copy still trains.
    out = fused(x)
    out.sum().backward()
    assert fused.conv2.weight.grad is not None
