"""Semantic segmentation with fastconv's FCN-8s and U-Net on synthetic shapes.

The data are generated here: 32x32 images with one to three shapes (circle, rectangle,
triangle; they may overlap, the later one in front) of random size and colour on a noisy,
shaded background, and a label per pixel (0 background, 1 circle, 2 rectangle, 3 triangle).
Colour says nothing about the class, so the networks have to recognise the outlines.

Both networks train from scratch for a few epochs and are measured on a held-out split by
per-class intersection-over-union (IoU) and its mean over the four classes. To fit a
two-minute CPU budget both are narrowed, and the FCN is changed in two ways from the paper,
which fine-tunes an ImageNet VGG-16:
* FCN-8s at an eighth of VGG-16's widths (8 ... 64 channels, fc6/fc7 512), on the VGG-16-BN
  backbone (batch_norm=True: without BatchNorm the from-scratch VGG learns several times more
  slowly), with fc dropout 0.1 instead of 0.5, and padding="same" (the paper pads conv1_1 by
  100, which would convolve each 32x32 image at 230x230, ~50x the pixels).
* U-Net with base width 8 (8 ... 128 channels) instead of the paper's 64, with BatchNorm.
A figure with input, truth and both predictions for a few test images goes to --out. Runs
on the CPU, or on a GPU unchanged.
"""

import argparse
import math
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

import fastconv  # noqa: E402
import fastconv.models as models  # noqa: E402

CLASSES = ["background", "circle", "rectangle", "triangle"]
LABEL_COLOURS = ListedColormap(["#202020", "#e41a1c", "#377eb8", "#4daf4a"])


def make_shapes(count: int, size: int, generator: torch.Generator):
    """`count` images [count, 3, size, size] in [0, 1] and labels [count, size, size]."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5,
                            torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")

    def uniform(low, high, n=()):
        return low + (high - low) * torch.rand(n, generator=generator)

    images = torch.empty(count, 3, size, size)
    labels = torch.zeros(count, size, size, dtype=torch.long)
    for n in range(count):
        # A shaded background (a colour plus a linear ramp) with pixel noise, so that the
        # background is not one flat colour a network could simply threshold.
        base = uniform(0.2, 0.8, 3).view(3, 1, 1)
        direction = uniform(0, 2 * math.pi)
        ramp = (torch.cos(direction) * xs + torch.sin(direction) * ys) / size - 0.5
        image = base + uniform(0.1, 0.3) * ramp + 0.06 * torch.randn(3, size, size, generator=generator)
        label = labels[n]
        for _ in range(int(torch.randint(1, 4, (), generator=generator))):
            kind = int(torch.randint(1, 4, (), generator=generator))
            radius = uniform(0.12, 0.25) * size
            cy, cx = uniform(radius, size - radius), uniform(radius, size - radius)
            dy, dx = ys - cy, xs - cx
            if kind == 1:
                mask = dy.square() + dx.square() <= radius**2
            elif kind == 2:
                aspect = uniform(0.5, 1.0)
                mask = (dy.abs() <= radius * aspect) & (dx.abs() <= radius)
            else:
                # An upright equilateral-ish triangle: below the two slanted edges, above the base.
                mask = (dy <= radius / 2) & (dy >= -radius + 1.7 * dx.abs())
            # A colour at least 0.35 away from the background's in some channel, so every
            # shape stands out of the noise, but otherwise unrelated to its class.
            colour = uniform(0, 1, 3)
            while (colour - base.flatten()).abs().max() < 0.35:
                colour = uniform(0, 1, 3)
            image[:, mask] = colour.view(3, 1) + 0.06 * torch.randn(3, int(mask.sum()), generator=generator)
            label[mask] = kind
        images[n] = image.clamp(0, 1)
    return images, labels


def confusion(model, images, labels, num_classes: int, batch_size: int) -> torch.Tensor:
    model.eval()
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            prediction = model(images[start:start + batch_size]).argmax(1)
            truth = labels[start:start + batch_size]
            matrix += torch.bincount((truth * num_classes + prediction).flatten().cpu(),
                                     minlength=num_classes**2).view(num_classes, num_classes)
    return matrix


def iou_per_class(matrix: torch.Tensor) -> torch.Tensor:
    # Rows are the truth, columns the prediction.
    hits = matrix.diag().double()
    return hits / (matrix.sum(0) + matrix.sum(1) - matrix.diag()).double().clamp(min=1)


def train(name, model, train_set, test_set, class_weights, args):
    images, labels = train_set
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(images), device=images.device)
        total = 0.0
        for i in range(0, len(images), args.batch_size):
            batch = order[i:i + args.batch_size]
            loss = F.cross_entropy(model(images[batch]), labels[batch], weight=class_weights)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        miou = iou_per_class(confusion(model, *test_set, len(CLASSES), args.batch_size)).mean().item()
        print(f"{name} epoch {epoch}: train loss {total / len(images):.3f}, test mean IoU {miou:.3f} "
              f"({time.perf_counter() - start:.0f} s)")
    return time.perf_counter() - start


def save_figure(path, images, labels, predictions, count: int):
    columns = ["input", "truth"] + list(predictions)
    fig, axes = plt.subplots(count, len(columns), figsize=(2 * len(columns), 2 * count))
    for row in range(count):
        panels = [images[row].permute(1, 2, 0).cpu().numpy(), labels[row].cpu().numpy()]
        panels += [p[row].cpu().numpy() for p in predictions.values()]
        for col, (title, panel) in enumerate(zip(columns, panels)):
            ax = axes[row, col]
            if col == 0:
                ax.imshow(panel)
            else:
                ax.imshow(panel, cmap=LABEL_COLOURS, vmin=0, vmax=len(CLASSES) - 1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title)
    fig.suptitle("  ".join(f"{name}: {c}" for name, c in zip(CLASSES, ["dark", "red", "blue", "green"])),
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=960)
    parser.add_argument("--test-size", type=int, default=240)
    parser.add_argument("--size", type=int, default=32, help="image side (a multiple of 16 for U-Net)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--fcn-width", type=float, default=0.125, help="FCN width multiplier (paper: 1)")
    parser.add_argument("--fcn-padding", choices=["same", "paper"], default="same")
    parser.add_argument("--fcn-batch-norm", action=argparse.BooleanOptionalAction, default=True,
                        help="VGG-16-BN backbone for the FCN (the paper: no)")
    parser.add_argument("--fcn-dropout", type=float, default=0.1, help="fc6/fc7 dropout (paper: 0.5)")
    parser.add_argument("--unet-width", type=int, default=8, help="U-Net base width (paper: 64)")
    parser.add_argument("--figure-samples", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("example-output", "segmentation"))
    args = parser.parse_args()

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = "cuda" if fastconv.algorithms.usable("cuda") else "cpu"
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

    generator = torch.Generator().manual_seed(args.seed)
    images, labels = make_shapes(args.train_size + args.test_size, args.size, generator)
    images, labels = images.to(device), labels.to(device)
    train_set = images[:args.train_size], labels[:args.train_size]
    test_set = images[args.train_size:], labels[args.train_size:]
    shares = torch.bincount(test_set[1].flatten().cpu(), minlength=len(CLASSES)).double()
    shares /= shares.sum()
    print(f"shapes: {args.train_size} training and {args.test_size} test images of {args.size}x{args.size}; "
          "test pixels " + ", ".join(f"{c} {s:.1%}" for c, s in zip(CLASSES, shares)))

    # Background is ~84% of the pixels; weighting the loss by 1/sqrt(class frequency) stops a
    # short run from settling on "all background"; it raised the shapes' IoU clearly
    # in trials (the metric itself is unweighted).
    frequency = torch.bincount(train_set[1].flatten(), minlength=len(CLASSES)).double() / train_set[1].numel()
    class_weights = frequency.clamp(min=1e-6).rsqrt()
    class_weights = (class_weights / class_weights.mean()).float()
    print("loss weights " + ", ".join(f"{c} {w:.2f}" for c, w in zip(CLASSES, class_weights.tolist())))

    nets = {
        "FCN-8s": models.fcn8s(num_classes=len(CLASSES), width_mult=args.fcn_width, padding=args.fcn_padding,
                               batch_norm=args.fcn_batch_norm, dropout=args.fcn_dropout),
        "U-Net": models.unet(in_channels=3, num_classes=len(CLASSES), base_width=args.unet_width),
    }
    results, seconds = {}, {}
    for name, model in nets.items():
        model.to(device)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params / 1e6:.2f} M parameters")
        seconds[name] = train(name, model, train_set, test_set, class_weights, args)
        results[name] = iou_per_class(confusion(model, *test_set, len(CLASSES), args.batch_size))

    print("\nheld-out IoU   " + "".join(f"{c:>11}" for c in CLASSES) + "       mean")
    for name, iou in results.items():
        print(f"{name:<14} " + "".join(f"{v:11.3f}" for v in iou.tolist()) + f" {iou.mean().item():10.3f}"
              f"   (trained in {seconds[name]:.0f} s)")

    count = min(args.figure_samples, args.test_size)
    sample_images, sample_labels = test_set[0][:count], test_set[1][:count]
    with torch.no_grad():
        predictions = {name: model.eval()(sample_images).argmax(1) for name, model in nets.items()}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "segmentation.png")
    save_figure(path, sample_images, sample_labels, predictions, count)
    print(f"figure written to {path}; {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
