"""Export and serialisation of models built from fastconv layers: torch.export (and its
save/load), torch.save/torch.load, copy.deepcopy, pickle."""

import copy
import io
import pickle

import pytest
import torch

import fastconv
import fastconv.nn as fnn


class Net(torch.nn.Module):
    """Every kind of fastconv layer: strided, depthwise, dilated, transposed, 1-D, RoIAlign."""

    def __init__(self):
        super().__init__()
        self.stem = fnn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.depthwise = fnn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=8)
        self.up = fnn.ConvTranspose2d(16, 4, 2, stride=2)
        self.reflect = fnn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
        self.temporal = fnn.Conv1d(4, 6, 3, padding="same")
        self.pool = fnn.RoIAlign((2, 2), spatial_scale=0.5, sampling_ratio=2, aligned=True)

    def forward(self, x, boxes):
        y = torch.relu(self.bn(self.stem(x)))
        y = self.up(torch.relu(self.depthwise(y)))
        y = self.reflect(y)
        pooled = self.pool(y, boxes)
        sequence = self.temporal(y.mean(dim=3))
        return y, pooled, sequence


@pytest.fixture
def net_and_inputs():
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(2, 3, 16, 16)
    boxes = torch.tensor([[0, 1.0, 2.0, 10.0, 12.0], [1, 0.0, 0.0, 15.0, 15.0], [1, 3.5, 4.0, 6.0, 9.5]])
    return net, (x, boxes)


def _assert_same(a, b):
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


def _uses_fastconv(graph_module) -> set:
    return {str(n.target) for n in graph_module.graph.nodes if n.op == "call_function" and "fastconv" in str(n.target)}


def test_torch_export_runs_and_matches(net_and_inputs):
    net, inputs = net_and_inputs
    program = torch.export.export(net, inputs)
    targets = _uses_fastconv(program.graph_module)
    assert {"fastconv.conv2d.default", "fastconv.conv_transpose2d.default", "fastconv.roi_align.default"} <= targets
    assert not any("aten.convolution" in str(n.target) for n in program.graph_module.graph.nodes)
    _assert_same(program.module()(*inputs), net(*inputs))


def test_torch_export_with_a_dynamic_batch_and_save_load(net_and_inputs):
    net, (x, boxes) = net_and_inputs
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(net, (x, boxes), dynamic_shapes=({0: batch}, None))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    bigger = torch.randn(5, 3, 16, 16)
    _assert_same(loaded.module()(bigger, boxes), net(bigger, boxes))


def test_decomposing_to_core_aten_keeps_the_fastconv_operators(net_and_inputs):
    # Backends lower an exported program to core ATen; fastconv's operators must survive it
    # rather than turn into aten.convolution.
    net, inputs = net_and_inputs
    lowered = torch.export.export(net, inputs).run_decompositions()
    assert {"fastconv.conv2d.default", "fastconv.conv_transpose2d.default"} <= _uses_fastconv(lowered.graph_module)
    assert not any("convolution" in str(n.target) for n in lowered.graph_module.graph.nodes)
    _assert_same(lowered.module()(*inputs), net(*inputs))


def test_torch_save_load_of_a_whole_model_and_its_state_dict(net_and_inputs, tmp_path):
    net, inputs = net_and_inputs
    torch.save(net, tmp_path / "net.pt")
    loaded = torch.load(tmp_path / "net.pt", weights_only=False)
    assert type(loaded.stem) is fnn.Conv2d and isinstance(loaded.stem, torch.nn.Conv2d)
    _assert_same(loaded(*inputs), net(*inputs))

    torch.save(net.state_dict(), tmp_path / "state.pt")
    fresh = Net().eval()
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True), strict=True)
    _assert_same(fresh(*inputs), net(*inputs))


def test_deepcopy_and_pickle(net_and_inputs):
    net, inputs = net_and_inputs
    twin = copy.deepcopy(net)
    assert twin.stem.weight is not net.stem.weight
    _assert_same(twin(*inputs), net(*inputs))
    with torch.no_grad():
        twin.stem.weight.add_(1)  # the copy is independent
    assert not torch.equal(twin.stem.weight, net.stem.weight)
    restored = pickle.loads(pickle.dumps(net))
    _assert_same(restored(*inputs), net(*inputs))


def test_converted_model_exports(net_and_inputs):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Conv2d(6, 16, 5),
        torch.nn.Flatten(), torch.nn.LazyLinear(10),
    )
    x = torch.randn(2, 3, 32, 32)
    model(x)  # materialise the lazy layer
    model = fastconv.convert(model).eval()
    program = torch.export.export(model, (x,))
    assert _uses_fastconv(program.graph_module) == {"fastconv.conv2d.default"}
    _assert_same(program.module()(x), model(x))
