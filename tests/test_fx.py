"""torch.fx on fastconv (issue 17): symbolic tracing and torchvision's feature extraction see
each fastconv convolution, RoIAlign and RoIPool as one call_function node (fastconv.functional's
functions are fx leaves), never the Python argument checks inside them; the traced module gives
bitwise the eager result on the CPU, and eager mode keeps its error messages."""

import collections
import operator
import warnings

import pytest
import torch
from torch import nn

import fastconv
import fastconv.functional as F
import fastconv.models as models

torchvision = pytest.importorskip("torchvision")
from torchvision.models.feature_extraction import (  # noqa: E402
    create_feature_extractor,
    get_graph_node_names,
)

PUBLIC_OPS = {getattr(F, name) for name in F.__all__}


def fastconv_calls(graph_module):
    """How many call_function nodes call each fastconv.functional function, by name. Any
    other fastconv.functional target (a private check traced through) fails the test."""
    counts = collections.Counter()
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and getattr(node.target, "__module__", None) == F.__name__:
            assert node.target in PUBLIC_OPS, f"traced into fastconv.functional: {node.target}"
            counts[node.target.__name__] += 1
    return counts


def eager_with_conv_calls(model, *inputs):
    """The eager output, and how many times each kind of fastconv convolution module ran, by
    its functional's name (modules that do not run, such as GoogLeNet's auxiliary heads in
    eval mode, do not count)."""
    names = {
        fastconv.Conv1d: "conv1d",
        fastconv.Conv2d: "conv2d",
        fastconv.ConvTranspose1d: "conv_transpose1d",
        fastconv.ConvTranspose2d: "conv_transpose2d",
    }
    counts = collections.Counter()
    hooks = []
    for m in model.modules():
        assert not (isinstance(m, nn.modules.conv._ConvNd) and type(m) not in names), type(m)
        if type(m) in names:
            hooks.append(m.register_forward_hook(lambda m, i, o: counts.update([names[type(m)]])))
    try:
        with torch.no_grad():
            out = model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return out, counts


def traced_with_stack_traces(model, concrete_args=None):
    """symbolic_trace, with each node's Python stack recorded."""
    tracer = torch.fx.Tracer()
    tracer.record_stack_traces = True
    graph = tracer.trace(model, concrete_args)
    return torch.fx.GraphModule(tracer.root, graph)


def assert_no_argument_checks(graph_module):
    """Nothing of fastconv.functional's own code (its argument checks, its reshapes) was
    traced: no node was made while that file ran."""
    for node in graph_module.graph.nodes:
        assert "fastconv/functional.py" not in (node.stack_trace or ""), (node, node.stack_trace)


def trace_and_compare(model, *inputs, concrete_args=None):
    """Trace `model` (eval mode), check one node per fastconv op and no argument checks, and
    return (graph module, eager output, traced output)."""
    model.eval()
    gm = traced_with_stack_traces(model, concrete_args)
    calls = fastconv_calls(gm)
    convs = collections.Counter({k: v for k, v in calls.items() if k not in ("roi_align", "roi_pool")})
    eager, ran = eager_with_conv_calls(model, *inputs)
    assert convs == ran
    assert_no_argument_checks(gm)
    with torch.no_grad():
        traced = gm(*inputs)
    return gm, eager, traced


def assert_bitwise(a, b):
    a_list = list(a) if isinstance(a, (tuple, list)) else [a]
    b_list = list(b) if isinstance(b, (tuple, list)) else [b]
    assert len(a_list) == len(b_list)
    for x, y in zip(a_list, b_list):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(x, y)


# --------------------------------------------------------------------------- converted torchvision models

@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_converted_torchvision_model_traces(name):
    torch.manual_seed(0)
    model = fastconv.convert(getattr(torchvision.models, name)(weights=None))
    x = torch.randn(1, 3, 32, 32)
    gm, eager, traced = trace_and_compare(model, x)
    assert fastconv_calls(gm)["conv2d"] == {"resnet18": 20, "densenet121": 120}[name]
    assert_bitwise(traced, eager)


# --------------------------------------------------------------------------- fastconv.models builders

def randn(*shape):
    return lambda: torch.randn(shape)


# (builder, its keyword arguments, the input, concrete_args for symbolic_trace)
BUILDERS = [
    ("resnet18", {}, randn(1, 3, 64, 64), None),
    ("densenet121", {}, randn(1, 3, 32, 32), None),
    ("vgg11", {"num_classes": 10}, randn(1, 3, 64, 64), None),
    ("googlenet", {"num_classes": 10}, randn(1, 3, 32, 32), None),
    ("unet", {"base_width": 8}, randn(1, 3, 64, 64), None),
    ("lenet5", {}, randn(2, 1, 32, 32), None),
    ("fcn8s", {"num_classes": 5, "width_mult": 0.125}, randn(1, 3, 48, 40), None),
    # forward(x, sample=None) branches on `sample`: fix it to its default
    ("vae", {}, randn(2, 1, 28, 28), {"sample": None}),
    ("text_cnn", {"vocab_size": 50, "embed_dim": 16, "num_filters": 8}, lambda: torch.randint(0, 50, (2, 12)), None),
    ("tdnn", {"num_classes": 5, "channels": (16, 16, 16, 16, 32), "embedding_dim": 8}, randn(2, 40, 30), None),
]


@pytest.mark.parametrize("name,kwargs,make_input,concrete_args", BUILDERS, ids=[b[0] for b in BUILDERS])
def test_fastconv_model_builder_traces(name, kwargs, make_input, concrete_args):
    torch.manual_seed(0)
    model = models.get_model(name, **kwargs)
    gm, eager, traced = trace_and_compare(model, make_input(), concrete_args=concrete_args)
    assert sum(fastconv_calls(gm).values()) > 0
    assert_bitwise(traced, eager)


@pytest.mark.parametrize("model,bad,match", [
    (lambda: models.unet(base_width=4, depth=2), torch.randn(1, 3, 10, 12), "divisible by 4"),
    (lambda: models.lenet5(), torch.randn(1, 1, 28, 28), r"\[N, 1, 32, 32\]"),
    (lambda: models.fcn32s(num_classes=3, width_mult=0.125), torch.randn(3, 32, 32), "FCN expects input"),
    (lambda: models.text_cnn(50, embed_dim=8, num_filters=4), torch.randint(0, 50, (2, 4)), "shorter than"),
    (lambda: models.text_cnn(50, embed_dim=8, num_filters=4), torch.randint(50, 60, (2, 9)), "token ids must be"),
    (lambda: models.tdnn(num_classes=3), torch.randn(2, 40, 10), "receptive field"),
], ids=["unet", "lenet5", "fcn32s", "text_cnn-length", "text_cnn-ids", "tdnn"])
def test_model_input_checks_run_in_the_traced_module(model, bad, match):
    model = model().eval()
    gm = torch.fx.symbolic_trace(model)
    with pytest.raises(ValueError, match=match) as traced_error:
        gm(bad)
    with pytest.raises(ValueError) as eager_error:
        model(bad)
    assert str(traced_error.value) == str(eager_error.value)


# --------------------------------------------------------------------------- detection heads and RoI ops

def small_mask_heads(pooling="align"):
    torch.manual_seed(0)
    return models.maskrcnn_heads(num_classes=3, in_channels=8, pooling=pooling, representation_size=16,
                                 mask_layers=(8, 8), mask_dim_reduced=8, spatial_scale=0.25).eval()


def boxes(k=6, batch=2, size=64.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g) * size * 0.6
    wh = torch.rand(k, 2, generator=g) * size * 0.4 + 2
    index = torch.randint(0, batch, (k, 1), generator=g).float()
    return torch.cat([index, xy, xy + wh], dim=1)


class MaskBranch(nn.Module):
    """Mask R-CNN's mask branch on one feature map: RoIAlign (or RoIPool), the mask head and
    the mask predictor, with the boxes as a Tensor[K, 5]."""

    def __init__(self, heads, pooling):
        super().__init__()
        if pooling == "align":
            self.pool = fastconv.nn.RoIAlign(14, 0.25, 2, aligned=True)
        else:
            self.pool = fastconv.nn.RoIPool(14, 0.25)
        self.mask_head = heads.mask_head
        self.mask_predictor = heads.mask_predictor

    def forward(self, features, rois):
        return self.mask_predictor(self.mask_head(self.pool(features, rois)))


@pytest.mark.parametrize("pooling", ["align", "pool"])
def test_mask_rcnn_mask_branch_traces(pooling):
    heads = small_mask_heads(pooling)
    branch = MaskBranch(heads, pooling)
    features = torch.randn(2, 8, 16, 16)
    gm, eager, traced = trace_and_compare(branch, features, boxes())
    op = "roi_align" if pooling == "align" else "roi_pool"
    assert fastconv_calls(gm) == {op: 1, "conv2d": 3, "conv_transpose2d": 1}
    assert eager.shape == (6, 3, 28, 28)
    assert_bitwise(traced, eager)


def test_mask_rcnn_box_and_mask_heads_trace():
    heads = small_mask_heads()
    crops7 = torch.randn(5, 8, 7, 7)
    crops14 = torch.randn(5, 8, 14, 14)
    for part, x in ((heads.box_head, crops7), (heads.mask_head, crops14), (heads.mask_predictor, crops14)):
        gm, eager, traced = trace_and_compare(part, x)
        assert_bitwise(traced, eager)
    gm, eager, traced = trace_and_compare(heads.box_predictor, torch.randn(5, 16))
    assert_bitwise(traced, eager)
    # their input checks run in the traced modules as in eager mode
    for part, bad, match in ((heads.box_head, torch.randn(5, 8, 6, 6), "expected 392 features"),
                             (heads.box_predictor, torch.randn(5, 16, 2, 2), r"\[K, C, 1, 1\]")):
        with pytest.raises(ValueError, match=match):
            torch.fx.symbolic_trace(part)(bad)


class RoIOp(nn.Module):
    """A module whose whole forward is one RoI op, as torchvision's RoI op tests wrap theirs."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, features, rois):
        return self.layer(features, rois)


ROI_LAYERS = [
    fastconv.nn.RoIAlign((5, 4), 0.5, 2, aligned=True),
    fastconv.nn.RoIAlign(3, 1.0, -1),
    fastconv.nn.RoIPool(4, 0.5),
]


@pytest.mark.parametrize("layer", ROI_LAYERS, ids=repr)
def test_roi_op_is_one_node_for_feature_extraction(layer):
    module = RoIOp(layer)
    train_nodes, eval_nodes = get_graph_node_names(module)
    assert train_nodes == eval_nodes
    # the two inputs and the op, nothing else
    assert len(eval_nodes) == 3
    gm = torch.fx.symbolic_trace(module)
    name = "roi_align" if isinstance(layer, fastconv.nn.RoIAlign) else "roi_pool"
    assert fastconv_calls(gm) == {name: 1}
    features = torch.randn(2, 4, 12, 10)
    rois = boxes(7, size=20.0)
    assert_bitwise(gm(features, rois), module(features, rois))
    # torchvision's list-of-boxes form flows through the traced module too
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    assert_bitwise(gm(features, per_image), module(features, per_image))


def test_feature_extractor_on_roi_model():
    heads = small_mask_heads()
    branch = MaskBranch(heads, "align").eval()
    names = get_graph_node_names(branch)[1]
    assert "pool.roi_align" in names
    extractor = create_feature_extractor(branch, {"pool.roi_align": "crops", "mask_head": "head"})
    features, rois = torch.randn(2, 8, 16, 16), boxes()
    with torch.no_grad():
        out = extractor(features, rois)
        crops = branch.pool(features, rois)
        head = branch.mask_head(crops)
    assert_bitwise([out["crops"], out["head"]], [crops, head])


# --------------------------------------------------------------------------- feature extraction on a whole model

def test_feature_extractor_two_return_nodes_equal_eager():
    torch.manual_seed(0)
    model = fastconv.convert(torchvision.models.resnet18(weights=None)).eval()
    train_nodes, eval_nodes = get_graph_node_names(model)
    # one node per convolution, named after its layer
    assert sum(n.endswith(".conv2d") for n in eval_nodes) == 20
    assert "layer2.0.downsample.0.conv2d" in eval_nodes
    extractor = create_feature_extractor(model, return_nodes={"layer2": "mid", "layer4.1.conv2": "late"})
    seen = {}
    hooks = [
        model.layer2.register_forward_hook(lambda m, i, o: seen.__setitem__("mid", o)),
        model.layer4[1].conv2.register_forward_hook(lambda m, i, o: seen.__setitem__("late", o)),
    ]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = extractor(x)
        model(x)
    for h in hooks:
        h.remove()
    assert set(out) == {"mid", "late"}
    assert out["mid"].shape == (2, 128, 8, 8) and out["late"].shape == (2, 512, 2, 2)
    assert_bitwise([out["mid"], out["late"]], [seen["mid"], seen["late"]])


# --------------------------------------------------------------------------- eager mode is unchanged

def test_tracing_leaves_functional_untouched_and_its_errors_clear():
    originals = {name: getattr(F, name) for name in F.__all__}
    torch.fx.symbolic_trace(RoIOp(fastconv.nn.RoIAlign(2, 1.0, 2)))
    torch.fx.symbolic_trace(fastconv.Conv2d(3, 4, 3))
    assert {name: getattr(F, name) for name in F.__all__} == originals
    w = torch.randn(2, 3, 3, 3)
    with pytest.raises(TypeError, match=r"^fastconv.functional.conv2d: argument 'input' must be a Tensor, got list$"):
        F.conv2d([[1.0]], w)
    with pytest.raises(ValueError, match="fastconv.functional.roi_align: argument 'boxes'"):
        F.roi_align(torch.randn(1, 3, 8, 8), torch.zeros(2, 4), 2)


def test_traced_module_raises_the_eager_errors():
    conv = fastconv.Conv2d(3, 4, 3)
    gm = torch.fx.symbolic_trace(conv)
    bad = torch.randn(1, 1, 3, 8, 8)
    with pytest.raises(ValueError) as eager_error:
        conv(bad)
    with pytest.raises(ValueError) as traced_error:
        gm(bad)
    assert str(traced_error.value) == str(eager_error.value)
    assert "argument 'input'" in str(eager_error.value)

    roi = RoIOp(fastconv.nn.RoIPool(2, 1.0))
    gm = torch.fx.symbolic_trace(roi)
    with pytest.raises(ValueError, match="argument 'boxes'") as traced_error:
        gm(torch.randn(1, 3, 8, 8), torch.zeros(2, 3))
    with pytest.raises(ValueError) as eager_error:
        roi(torch.randn(1, 3, 8, 8), torch.zeros(2, 3))
    assert str(traced_error.value) == str(eager_error.value)


# --------------------------------------------------------------------------- other tracers (README's claims)

def test_jit_trace_works():
    torch.manual_seed(0)
    model = fastconv.convert(torchvision.models.resnet18(weights=None)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated too
        traced = torch.jit.trace(model, x, check_trace=False)
        assert_bitwise(traced(x), model(x))


def test_jit_script_is_refused():
    # torch.jit.script is deprecated in the torch versions fastconv supports, and TorchScript
    # cannot compile fastconv.functional's Python argument handling: scripting fails at
    # compile time with a RuntimeError (it never yields a half-working module).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(RuntimeError, match="fastconv/functional.py"):
            torch.jit.script(fastconv.Conv2d(3, 4, 3))


def test_graph_is_the_convolutions_and_the_model_glue():
    model = fastconv.convert(torchvision.models.resnet18(weights=None)).eval()
    gm = torch.fx.symbolic_trace(model)
    targets = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert targets == {F.conv2d, operator.add, torch.flatten}
