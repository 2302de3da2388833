"""fastconv.visualise: grids, feature maps, top patches and saliency against known answers;
the PNGs open as images."""

import sys

import pytest
import torch
from torch import nn

import fastconv
import fastconv.models
from fastconv.visualise import feature_maps, filter_grid, image_grid, saliency, save_png, top_patches


def test_image_grid_layout_and_normalisation():
    torch.manual_seed(0)
    images = torch.randn(5, 3, 4, 6)
    grid = image_grid(images, ncols=3, padding=2, pad_value=0.25)
    assert grid.shape == (3, 2 * (4 + 2) + 2, 3 * (6 + 2) + 2)
    tiles = [grid[:, 2 + r * 6:2 + r * 6 + 4, 2 + c * 8:2 + c * 8 + 6] for r in range(2) for c in range(3)][:5]
    for tile, image in zip(tiles, images):
        assert tile.min() == 0 and tile.max() == 1  # each image stretched by itself
        expected = (image - image.min()) / (image.max() - image.min())
        torch.testing.assert_close(tile, expected.double())
    assert (grid[:, :2] == 0.25).all() and (grid[:, 8:14, 18:] == 0.25).all()  # padding and the empty sixth cell
    together = image_grid(images, normalize="all")
    assert together.min() == 0 and together.max() == 1 and together.shape[1:] == (3 * 5 + 1, 2 * 7 + 1)  # 5 images: 2 columns, 3 rows
    constant = image_grid(torch.ones(1, 1, 2, 2), padding=0)
    assert torch.equal(constant, torch.full((1, 2, 2), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="C 1 or 3"):
        image_grid(torch.zeros(2, 2, 3, 3))
    with pytest.raises(ValueError, match="normalize"):
        image_grid(images, normalize="max")


def test_filter_grid():
    rgb = fastconv.Conv2d(3, 8, 5)
    assert filter_grid(rgb).shape == (3, 3 * 6 + 1, 3 * 6 + 1)  # 8 filters, a 3x3 grid
    grey = filter_grid(fastconv.Conv2d(1, 6, 5).weight, ncols=6)
    assert grey.shape == (1, 7, 6 * 6 + 1)
    wide = filter_grid(fastconv.Conv2d(2, 4, 3))  # a row per filter, a tile per input channel
    assert wide.shape == (1, 4 * 4 + 1, 2 * 4 + 1)
    with pytest.raises(ValueError, match="weights"):
        filter_grid(nn.Linear(2, 2))


class Failing(nn.Module):
    def forward(self, x):
        raise AssertionError("the forward pass went past the layer it was asked for")


def test_feature_maps_are_the_layer_output_and_stop_there():
    torch.manual_seed(0)
    model = nn.Sequential(fastconv.Conv2d(1, 4, 3), nn.ReLU(), Failing())
    x = torch.randn(2, 1, 8, 8)
    maps = feature_maps(model, "1", x)
    with torch.no_grad():
        torch.testing.assert_close(maps, torch.relu(model[0](x)))
    assert feature_maps(model, model[0], x[0]).shape == (4, 6, 6)
    with pytest.raises(ValueError, match="layer 'x'"):
        feature_maps(model, "x", x)


def centre_tap(channels_in=1):
    """A 3x3 convolution that passes its input's centre pixel through."""
    conv = fastconv.Conv2d(channels_in, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, :, 1, 1] = 1
    return conv


def test_top_patches_find_the_brightest_pixels():
    # Two centre-tap 3x3 convolutions: each unit reads the pixel under it, and sees the 5x5
    # square around it. Image i holds one bright pixel of value v[i] at a known place.
    model = nn.Sequential(centre_tap(), nn.ReLU(), centre_tap())
    values = torch.tensor([3.0, 7.0, 1.0, 9.0, 5.0, 2.0])
    places = [(4, 4), (0, 0), (7, 2), (5, 9), (2, 8), (9, 9)]
    data = torch.zeros(6, 1, 10, 12)
    for i, (r, c) in enumerate(places):
        data[i, 0, r, c] = values[i]
    # In batches of 4, as a DataLoader of (images, labels) pairs would give them.
    loader = [(data[:4], None), (data[4:], None)]
    result = top_patches(model, "2", 0, loader, k=3, fill=-1.0)
    assert result.images.tolist() == [3, 1, 4] and result.scores.tolist() == [9.0, 7.0, 5.0]
    assert result.units.tolist() == [[5, 9], [0, 0], [2, 8]]
    assert result.field.size == (5, 5) and result.patches.shape == (3, 1, 5, 5)
    for patch, value in zip(result.patches, [9.0, 7.0, 5.0]):
        assert patch[0, 2, 2] == value  # the unit's pixel, at the patch's centre
    # The unit at (0, 0) sees two rows and columns beyond the image: filled.
    corner = result.patches[1, 0]
    assert (corner[:2] == -1).all() and (corner[:, :2] == -1).all() and (corner[2:, 2:] >= 0).all()
    same = top_patches(model, model[2], 0, data, k=10, batch_size=5)
    assert same.images.tolist() == [3, 1, 4, 0, 5, 2]  # k larger than the data set: all of it
    with pytest.raises(ValueError, match="channel 1"):
        top_patches(model, "2", 1, data)
    with pytest.raises(ValueError, match="k must"):
        top_patches(model, "2", 0, data, k=0)
    with pytest.raises(ValueError, match="no images"):
        top_patches(model, "2", 0, [])


def test_saliency_of_a_linear_model_is_its_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 5, 6))
    x = torch.randn(2, 3, 4, 5)
    weights = model[1].weight.detach().view(6, 3, 4, 5)
    maps = saliency(model, x, target=torch.tensor([2, 5]))
    torch.testing.assert_close(maps, torch.stack([weights[2].abs().amax(0), weights[5].abs().amax(0)]))
    top = model(x).argmax(1)
    torch.testing.assert_close(saliency(model, x), weights[top].abs().amax(1))
    torch.testing.assert_close(saliency(model, x[1], target=4), weights[4].abs().amax(0))
    assert all(p.requires_grad for p in model.parameters()) and model.training  # put back
    with pytest.raises(ValueError, match="target"):
        saliency(model, x, target=6)


def test_saliency_through_a_convolutional_network():
    model = fastconv.models.lenet5()
    x = torch.randn(3, 1, 32, 32)
    maps = saliency(model, x)
    assert maps.shape == (3, 32, 32) and (maps >= 0).all() and (maps.flatten(1).amax(1) > 0).all()


def test_png_files(tmp_path):
    matplotlib_image = pytest.importorskip("matplotlib.image")  # not in the low-end torch CI venv
    grid = image_grid(torch.rand(4, 3, 5, 5))  # 3 x 13 x 13
    path = save_png(grid, tmp_path / "grid.png")
    assert matplotlib_image.imread(path).shape[:2] == (13 * 20, 13 * 20)  # scaled to >= 256 px
    grey = save_png(torch.rand(7, 9), tmp_path / "grey.png", scale=3, cmap="magma")
    assert matplotlib_image.imread(grey).shape[:2] == (21, 27)
    with pytest.raises(ValueError, match="image"):
        save_png(torch.rand(2, 3, 4, 5), tmp_path / "bad.png")


def test_png_without_matplotlib(monkeypatch, tmp_path):
    grid = image_grid(torch.rand(2, 1, 3, 3))  # computed without matplotlib
    for name in ("matplotlib", "matplotlib.image", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"save_png\(\) draws with matplotlib.*pip install matplotlib"):
        save_png(grid, tmp_path / "grid.png")
