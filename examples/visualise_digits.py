"""What a trained LeNet-5 has learnt about digits: its filters, its feature maps, the patches
that excite each channel, and saliency maps (the lecture's "hierarchical filters", after
Zeiler & Fergus).

LeNet-5 is trained on scikit-learn's digits as in train_lenet_digits.py; then, with
fastconv.visualise, on the 450 test images:

- filters.png: the six 5×5 filters of the first layer;
- feature_maps.png: a test digit, the first layer's six maps and the second's sixteen;
- top_patches.png: for each channel of the second layer, the nine test images that excite
  it most, each cut to the 14×14 receptive field of the unit that responded;
- saliency.png: test digits beside |d score / d pixel| for their predicted class (Simonyan
  et al., 2014); the script also measures how much of that mass falls on the strokes.

    python examples/visualise_digits.py [--epochs 20] [--out DIR]

Needs scikit-learn and matplotlib.
"""

import argparse
import json
import os
import time

import torch

from fastconv._plotting import figure
from fastconv.models import lenet5
from fastconv.visualise import feature_maps, filter_grid, image_grid, saliency, save_png, top_patches
from train_lenet_digits import accuracy, load_data, train


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("example-output", "visualise_digits"))
    args = parser.parse_args()
    if min(args.epochs, args.threads) < 1:
        parser.error("--epochs and --threads must be positive")
    return args


def show(ax, image, title, cmap="gray"):
    array = image.permute(1, 2, 0).squeeze(-1).numpy() if image.dim() == 3 else image.numpy()
    ax.imshow(array, cmap=cmap, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data("cpu")
    model = lenet5()
    print(f"training LeNet-5 for {args.epochs} epochs ...")
    train(model, x_train, y_train, x_test, y_test, epochs=args.epochs, lr=args.lr,
          generator=torch.Generator().manual_seed(args.seed), log=None)
    test_accuracy = accuracy(model, x_test, y_test)
    print(f"test accuracy {100 * test_accuracy:.2f}%")
    os.makedirs(args.out, exist_ok=True)
    figures = dict(test_accuracy=test_accuracy)

    # The first layer's filters, each stretched to its own range.
    save_png(filter_grid(model.features[0], ncols=6, padding=1), os.path.join(args.out, "filters.png"), scale=24)

    # One digit through the first two layers (after their ReLUs).
    digit = x_test[0]
    maps1 = feature_maps(model, "features.1", digit)
    maps2 = feature_maps(model, "features.4", digit)
    fig = figure("feature maps", figsize=(12, 3.6))
    axes = fig.subplots(1, 3, gridspec_kw=dict(width_ratios=[1, 2.2, 2.2]))
    show(axes[0], image_grid(digit[None], padding=0), f"test digit (a {int(y_test[0])})")
    show(axes[1], image_grid(maps1[:, None], ncols=3), "conv 1: 6 maps of 28x28", cmap="viridis")
    show(axes[2], image_grid(maps2[:, None], ncols=4), "conv 2: 16 maps of 10x10", cmap="viridis")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "feature_maps.png"), dpi=100)

    # Zeiler & Fergus: the strongest nine of each second-layer channel over the test set.
    background = float(x_test.min())
    rows, tops = [], []
    for channel in range(16):
        top = top_patches(model, "features.3", channel, x_test, k=9, fill=background)
        tops.append(top)
        rows.append(top.patches)
        labels = y_test[top.images].tolist()
        print(f"conv 2 channel {channel:2d}: strongest in test images of digits {labels}")
    field = tops[0].field
    figures["top_patches"] = [dict(channel=c, images=t.images.tolist(), digits=y_test[t.images].tolist(),
                                   scores=[round(v, 3) for v in t.scores.tolist()]) for c, t in enumerate(tops)]
    patches = torch.cat(rows)
    grid = image_grid(patches, ncols=9, padding=1)
    fig = figure("top patches", figsize=(6, 10.5))
    ax = fig.subplots()
    show(ax, grid, f"conv 2: the 9 strongest test patches ({field.size[0]}x{field.size[1]} px fields) "
         "of each of its 16 channels, one row each")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "top_patches.png"), dpi=110)

    # Saliency of the predicted class, and its share on the strokes.
    maps = saliency(model, x_test)
    ink = x_test[:, 0] > (x_test.mean() + 0.5 * x_test.std())
    near = torch.nn.functional.max_pool2d(ink[:, None].float(), 5, stride=1, padding=2)[:, 0] > 0  # within 2 px
    share, near_share = (float((maps * m).sum() / maps.sum()) for m in (ink, near))
    ink_share, near_pixels = float(ink.double().mean()), float(near.double().mean())
    figures.update(saliency_on_ink=share, ink_pixels=ink_share, saliency_near_ink=near_share, near_pixels=near_pixels)
    print(f"saliency: {100 * share:.1f}% of its mass is on the {100 * ink_share:.1f}% of pixels that hold ink, "
          f"{100 * near_share:.1f}% within 2 pixels of ink ({100 * near_pixels:.1f}% of the pixels)")
    fig = figure("saliency", figsize=(12, 3.2))
    axes = fig.subplots(2, 8)
    predicted = model(x_test[:8]).argmax(1)
    for i in range(8):
        show(axes[0, i], image_grid(x_test[i][None], padding=0), f"digit {int(y_test[i])}")
        show(axes[1, i], maps[i], f"saliency of {int(predicted[i])}", cmap="hot")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "saliency.png"), dpi=100)

    with open(os.path.join(args.out, "figures.json"), "w") as f:
        json.dump(figures, f, indent=1)
    print(f"figures written to {args.out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
