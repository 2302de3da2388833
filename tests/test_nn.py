"""The drop-in layers: same constructor, initialisation, state_dict, repr and results as
torch.nn; every padding_mode; output_size on transposed forward; convert()."""

import copy

import pytest
import torch

import fastconv
from conftest import rel_err

PAIRS = [
    (fastconv.nn.Conv1d, torch.nn.Conv1d, (4, 6, 3), (2, 4, 11)),
    (fastconv.nn.Conv2d, torch.nn.Conv2d, (4, 6, 3), (2, 4, 9, 8)),
    (fastconv.nn.ConvTranspose1d, torch.nn.ConvTranspose1d, (4, 6, 3), (2, 4, 11)),
    (fastconv.nn.ConvTranspose2d, torch.nn.ConvTranspose2d, (4, 6, 3), (2, 4, 9, 8)),
]
IDS = [p[0].__name__ for p in PAIRS]

VARIANTS = [
    {},
    {"stride": 2, "padding": 1, "dilation": 2, "groups": 2, "bias": False},
]


@pytest.mark.parametrize("ours,theirs,args,x_shape", PAIRS, ids=IDS)
@pytest.mark.parametrize("kwargs", VARIANTS, ids=["default", "options"])
def test_same_init_state_dict_repr_and_results(ours, theirs, args, x_shape, kwargs, device):
    torch.manual_seed(123)
    a = ours(*args, **kwargs).to(device).double()
    torch.manual_seed(123)
    b = theirs(*args, **kwargs).to(device).double()
    assert isinstance(a, theirs)
    assert repr(a) == repr(b)
    assert a.state_dict().keys() == b.state_dict().keys()
    for key in b.state_dict():
        assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    x = torch.randn(x_shape, dtype=torch.float64, device=device)
    assert rel_err(a(x), b(x)) <= 1e-12
    # And a torch state_dict loads strictly.
    c = ours(*args, **kwargs).to(device).double()
    c.load_state_dict(b.state_dict(), strict=True)
    assert rel_err(c(x), b(x)) <= 1e-12


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same"])
def test_conv2d_padding_modes(padding_mode, padding, device):
    torch.manual_seed(0)
    a = fastconv.nn.Conv2d(3, 4, (3, 4), padding=padding, padding_mode=padding_mode).to(device).double()
    b = torch.nn.Conv2d(3, 4, (3, 4), padding=padding, padding_mode=padding_mode).to(device).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, device=device, requires_grad=True)
    ya, yb = a(x), b(x)
    assert ya.shape == yb.shape and rel_err(ya, yb) <= 1e-12
    ga = torch.autograd.grad(ya.sum(), (x, a.weight))
    gb = torch.autograd.grad(yb.sum(), (x, b.weight))
    for u, v in zip(ga, gb):
        assert rel_err(u, v) <= 1e-12


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_conv1d_padding_modes(padding_mode, device):
    a = fastconv.nn.Conv1d(3, 4, 3, padding=2, padding_mode=padding_mode).to(device).double()
    b = torch.nn.Conv1d(3, 4, 3, padding=2, padding_mode=padding_mode).to(device).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 9, dtype=torch.float64, device=device)
    assert rel_err(a(x), b(x)) <= 1e-12


def test_transposed_rejects_other_padding_modes_as_torch_does():
    with pytest.raises(ValueError, match="zeros"):
        fastconv.nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect")


@pytest.mark.parametrize("output_size", [(9, 11), (10, 12), [2, 3, 10, 11]])
def test_conv_transpose2d_output_size(output_size, device):
    torch.manual_seed(0)
    a = fastconv.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).to(device).double()
    b = torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).to(device).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, device=device)
    ya, yb = a(x, output_size=output_size), b(x, output_size=output_size)
    assert ya.shape == yb.shape and rel_err(ya, yb) <= 1e-12
    with pytest.raises(ValueError):
        a(x, output_size=(20, 20))


def test_conv_transpose1d_output_size(device):
    a = fastconv.nn.ConvTranspose1d(3, 2, 3, stride=3).to(device).double()
    b = torch.nn.ConvTranspose1d(3, 2, 3, stride=3).to(device).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 5, dtype=torch.float64, device=device)
    assert rel_err(a(x, output_size=[17]), b(x, output_size=[17])) <= 1e-12


def test_top_level_conv2d():
    assert fastconv.Conv2d is fastconv.nn.Conv2d
    assert isinstance(fastconv.Conv2d(1, 1, 1), torch.nn.Conv2d)


class Plain(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, padding_mode="reflect"),
        )
        self.up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.seq = torch.nn.Conv1d(4, 2, 5, padding=2)
        self.seq_up = torch.nn.ConvTranspose1d(2, 2, 2, stride=2)

    def forward(self, x):
        y = self.up(self.features(x))
        return self.seq_up(self.seq(y.flatten(2)))


class CustomConv(torch.nn.Conv2d):
    """A user's subclass with its own forward: convert() must leave it alone."""

    def forward(self, x):
        return super().forward(x) * 2


def test_convert_keeps_parameters_and_results(device):
    torch.manual_seed(0)
    model = Plain().to(device).double()
    model.custom = CustomConv(1, 1, 1)
    reference = copy.deepcopy(model)
    params = {name: p for name, p in model.named_parameters()}
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, device=device)
    want = reference(x)
    returned = fastconv.convert(model)
    assert returned is model
    assert type(model.features[0]) is fastconv.nn.Conv2d
    assert type(model.features[2]) is fastconv.nn.Conv2d
    assert type(model.up) is fastconv.nn.ConvTranspose2d
    assert type(model.seq) is fastconv.nn.Conv1d
    assert type(model.seq_up) is fastconv.nn.ConvTranspose1d
    assert type(model.custom) is CustomConv
    for name, p in model.named_parameters():
        assert p is params[name]
    assert rel_err(model(x), want) <= 1e-12
    # A converted model is an ordinary module: it copies, and its state_dict loads into torch's.
    assert rel_err(copy.deepcopy(model)(x), want) <= 1e-12
    reference.load_state_dict(model.state_dict(), strict=True)


def test_convert_a_bare_layer():
    conv = torch.nn.Conv2d(2, 3, 3)
    assert type(fastconv.convert(conv)) is fastconv.nn.Conv2d
