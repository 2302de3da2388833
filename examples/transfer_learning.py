"""Transfer learning with a fastconv ResNet, in the lecture's two steps.

1. The CNN as a fixed feature extractor: freeze the backbone, replace the classifier (`fc`)
   with a new one for the new classes, and train only that.
2. Finetuning: unfreeze everything and train the whole network on, with about 1/10 of the
   learning rate, so that the features adapt without being washed away.

The backbone takes a torchvision-format state_dict (`--weights resnet18.pth`, for example
one saved with `torch.save(torchvision.models.resnet18(weights="DEFAULT").state_dict(), ...)`
on a machine that can download); nothing is downloaded here. Without `--weights` the backbone
is randomly initialised, which the script says: stage 1 then trains a linear classifier on
random convolutional features, and stage 2 has to learn the features itself.

The data set needs no download: scikit-learn's 8×8 handwritten digits (bundled with
scikit-learn), scaled up, or, with `--dataset shapes` or without scikit-learn, images of five
shapes (disc, ring, square, triangle, cross) of random tint, size and position, built here.
Runs on the CPU in about two minutes, or on a GPU unchanged.

    python examples/transfer_learning.py
    python examples/transfer_learning.py --weights resnet18.pth --arch resnet18
"""

import argparse
import json
import pathlib
import time

import torch
import torch.nn.functional as F
from torch import nn

import fastconv
import fastconv.models

ARCHS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
         "resnext101_32x8d"]
SHAPES = ["disc", "ring", "square", "triangle", "cross"]
# torchvision's ImageNet weights expect inputs normalised with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_shapes(n: int, size: int, generator: torch.Generator):
    """n RGB images [n, 3, size, size] in [0, 1] of one of SHAPES each, and their labels."""
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    labels = torch.randint(len(SHAPES), (n,), generator=generator)
    coords = (torch.arange(size) + 0.5) / size
    dx = coords.view(1, 1, size) - (0.3 + 0.4 * rand(n, 1, 1))
    dy = coords.view(1, size, 1) - (0.3 + 0.4 * rand(n, 1, 1))
    r = 0.17 + 0.13 * rand(n, 1, 1)
    dist = (dx.square() + dy.square()).sqrt()
    arm = r / 3.5
    masks = torch.stack([
        dist <= r,
        (dist <= r) & (dist >= 0.55 * r),
        torch.maximum(dx.abs(), dy.abs()) <= 0.8 * r,
        (dy >= -r) & (dy <= 0.7 * r) & (dx.abs() <= 0.65 * (dy + r)),
        ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r)),
    ], dim=1)
    mask = masks[torch.arange(n), labels].unsqueeze(1)
    # A light shape of random tint on a dark one: the class is in the shape, not the colour.
    background = 0.25 * rand(n, 3, 1, 1)
    foreground = 0.7 + 0.3 * rand(n, 3, 1, 1)
    images = torch.where(mask, foreground, background)
    images = images + 0.05 * torch.randn(n, 3, size, size, generator=generator)
    return images.clamp(0, 1), labels


def load_digits(size: int):
    """scikit-learn's 8×8 digits as [n, 3, size, size] images in [0, 1], or None without
    scikit-learn."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        return None
    digits = sklearn_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.expand(-1, 3, -1, -1).contiguous(), torch.tensor(digits.target)


def build_model(arch: str, weights, num_classes: int) -> nn.Module:
    """The fastconv `arch` with the weights of a torchvision-format state_dict file (or random
    ones if `weights` is None) and a new, randomly initialised `fc` for num_classes."""
    if weights is None:
        model = fastconv.models.get_model(arch)
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if "fc.weight" not in state:
            raise ValueError(f"--weights {weights}: not a ResNet state_dict (it has no 'fc.weight')")
        # The file's own head size (1000 for ImageNet) lets the strict load check every other
        # tensor against the architecture; the head is replaced right after.
        model = fastconv.models.get_model(arch, num_classes=state["fc.weight"].shape[0], weights=state)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def training_batches(order: torch.Tensor, batch_size: int):
    """`order` in batches of batch_size, leaving out a last batch of a single image: in
    training mode BatchNorm cannot normalise one 1×1 map (the last stage at 32×32)."""
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        if len(batch) > 1:
            yield batch


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int) -> None:
    """Set every BatchNorm's running statistics to their average over `images`.

    A randomly initialised network's running statistics are the placeholders mean 0, variance
    1; a frozen backbone in eval mode would normalise with them and its activations would
    drift in scale from block to block. Pretrained statistics are kept as they are."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all the batches
    model.train()
    for batch in training_batches(torch.arange(len(images)), batch_size):
        model(images[batch])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@torch.no_grad()
def evaluate(model: nn.Module, images, labels, batch_size: int):
    """Mean cross-entropy and accuracy of `model` on (images, labels)."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start:start + batch_size])
        target = labels[start:start + batch_size]
        loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    return loss / len(images), correct / len(images)


def train_epoch(model, optimizer, images, labels, batch_size: int, generator: torch.Generator):
    """One pass over (images, labels) in a random order; returns the mean loss and accuracy
    seen during the epoch."""
    order = torch.randperm(len(images), generator=generator).to(images.device)
    loss_sum, correct, seen = 0.0, 0, 0
    for index in training_batches(order, batch_size):
        logits = model(images[index])
        loss = F.cross_entropy(logits, labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(index)
        correct += (logits.argmax(1) == labels[index]).sum().item()
        seen += len(index)
    return loss_sum / seen, correct / seen


def train_mode(model: nn.Module, freeze_batchnorm: bool) -> None:
    """Put `model` in training mode; with freeze_batchnorm its BatchNorm layers stay in eval
    mode (running statistics used and kept; their scale and shift still train)."""
    model.train()
    if freeze_batchnorm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--arch", choices=ARCHS, default="resnet18")
    parser.add_argument("--weights", default=None,
                        help="torchvision-format state_dict file for the backbone (random init without)")
    parser.add_argument("--dataset", choices=["digits", "shapes"], default="digits",
                        help="digits needs scikit-learn; without it the shapes are used")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--train-size", type=int, default=320)
    parser.add_argument("--test-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--head-epochs", type=int, default=15,
                        help="stage 1: epochs training the new fc on the frozen backbone")
    parser.add_argument("--finetune-epochs", type=int, default=3,
                        help="stage 2: epochs finetuning the whole network")
    parser.add_argument("--lr", type=float, default=1e-3, help="stage 1 learning rate (Adam)")
    parser.add_argument("--finetune-lr-factor", type=float, default=0.1,
                        help="stage 2 learning rate = lr × this factor")
    parser.add_argument("--finetune-bn", choices=["frozen", "train"], default="frozen",
                        help="stage 2 BatchNorm: keep the running statistics (frozen) or "
                             "normalise with each batch's and update them (train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="example-output/transfer_learning")
    parser.add_argument("--no-plots", action="store_true", help="do not write the PNG figures")
    args = parser.parse_args(argv)
    for name in ("image_size", "train_size", "test_size", "batch_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.batch_size < 2 or args.train_size < 2:
        parser.error("--batch-size and --train-size must be at least 2 (BatchNorm needs two images)")
    if args.image_size < 16:
        parser.error("--image-size must be at least 16 (the ResNet stem and stages downsample 32×)")
    return args


def make_data(args, generator):
    """Train and test images (ImageNet-normalised) and labels, the class names, the raw
    images and the name of the data set used."""
    total = args.train_size + args.test_size
    images = None
    if args.dataset == "digits":
        digits = load_digits(args.image_size)
        if digits is None:
            print("scikit-learn is not installed: using the synthetic shapes data set instead of digits")
        elif len(digits[0]) < total:
            raise SystemExit(f"digits has {len(digits[0])} images, fewer than "
                             f"--train-size + --test-size = {total}")
        else:
            order = torch.randperm(len(digits[0]), generator=generator)[:total]
            images, labels = digits[0][order], digits[1][order]
            classes = [str(d) for d in range(10)]
    name = "digits"
    if images is None:
        images, labels = make_shapes(total, args.image_size, generator)
        classes, name = SHAPES, "shapes"
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    normalised = (images - mean) / std
    split = args.train_size
    return (normalised[:split], labels[:split]), (normalised[split:], labels[split:]), classes, images, name


def save_figures(out: pathlib.Path, raw_images, labels, classes, history) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figures written")
        return
    fig, axes = plt.subplots(2, 8, figsize=(12, 3.4))
    for ax, image, label in zip(axes.flat, raw_images, labels):
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(classes[label], fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=100)
    plt.close(fig)

    rows = history["head"] + history["finetune"]
    epochs = range(1, len(rows) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax_loss.plot(epochs, [r["test_loss"] for r in rows], "o-", label="test")
    ax_acc.plot(epochs, [r["train_acc"] for r in rows], "o-", label="train")
    ax_acc.plot(epochs, [r["test_acc"] for r in rows], "o-", label="test")
    for ax, title in ((ax_loss, "cross-entropy"), (ax_acc, "accuracy")):
        ax.axvline(len(history["head"]) + 0.5, color="gray", linestyle="--")
        ax.set_xlabel("epoch (stage 1: head only | stage 2: finetune all)")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
    print(f"wrote {out / 'samples.png'} and {out / 'curves.png'}")


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    device = "cuda" if fastconv.algorithms.usable("cuda") else "cpu"
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    (train_x, train_y), (test_x, test_y), classes, raw, dataset = make_data(args, generator)
    print(f"device {device}; {dataset} data set: "
          f"{len(train_x)} training and {len(test_x)} test images of {args.image_size}×{args.image_size}, "
          f"{len(classes)} classes")

    model = build_model(args.arch, args.weights, len(classes))
    if args.weights is None:
        print(f"{args.arch}: no --weights given, so the backbone is RANDOMLY INITIALISED "
              "(stage 1 trains on random features)")
    else:
        print(f"{args.arch}: loaded weights from {args.weights} (strict), new fc for {len(classes)} classes")
    model = model.to(device)
    train_x, train_y, test_x, test_y = (t.to(device) for t in (train_x, train_y, test_x, test_y))
    if args.weights is None:
        reestimate_batchnorm(model, train_x, args.batch_size)
        print("random init: BatchNorm running statistics re-estimated on the training images")
    history = {"head": [], "finetune": []}

    # Stage 1: the backbone is frozen: no gradients, and BatchNorm in eval mode, so that it
    # normalises with its (pretrained) running statistics and the small new data set does
    # not overwrite them. A frozen eval-mode backbone is a fixed function, so its features
    # are computed once and only the new fc trains on them: the lecture's "CNN activations as
    # deep features".
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.fc.parameters():
        p.requires_grad_(True)
    head = model.fc
    model.fc = nn.Identity()
    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        train_features = torch.cat([model(train_x[i:i + args.batch_size])
                                    for i in range(0, len(train_x), args.batch_size)])
        test_features = torch.cat([model(test_x[i:i + args.batch_size])
                                   for i in range(0, len(test_x), args.batch_size)])
    model.fc = head
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"stage 1: backbone frozen, training fc only ({trainable:,} of "
          f"{sum(p.numel() for p in model.parameters()):,} parameters); features of "
          f"{len(train_x) + len(test_x)} images computed once in {time.perf_counter() - t0:.1f} s")
    optimizer = torch.optim.Adam(head.parameters(), lr=args.lr)
    for epoch in range(1, args.head_epochs + 1):
        t0 = time.perf_counter()
        head.train()
        train_loss, train_acc = train_epoch(head, optimizer, train_features, train_y, args.batch_size,
                                            generator)
        test_loss, test_acc = evaluate(head, test_features, test_y, args.batch_size)
        history["head"].append(dict(train_loss=train_loss, train_acc=train_acc, test_loss=test_loss,
                                    test_acc=test_acc))
        print(f"  stage 1 epoch {epoch:2d}/{args.head_epochs}: train loss {train_loss:.3f} "
              f"acc {100 * train_acc:5.1f}% | test loss {test_loss:.3f} acc {100 * test_acc:5.1f}% "
              f"({time.perf_counter() - t0:.2f} s)")
    head_acc = evaluate(head, test_features, test_y, args.batch_size)[1]

    # Stage 2: every parameter trains, with a tenth of the learning rate: the pretrained
    # features are a good start that large steps would destroy. By default BatchNorm keeps
    # normalising with its running statistics (its scale and shift still train), as
    # detection models are usually finetuned: at 32×32 the last stage is 1×1, so a batch of
    # 32 gives each channel only 32 values, and batch statistics that noisy would differ
    # from the running ones used at test time.
    for p in model.parameters():
        p.requires_grad_(True)
    finetune_lr = args.lr * args.finetune_lr_factor
    optimizer = torch.optim.Adam(model.parameters(), lr=finetune_lr)
    print(f"stage 2: finetuning all {sum(p.numel() for p in model.parameters()):,} parameters "
          f"at lr {finetune_lr:g} (stage 1: {args.lr:g}), BatchNorm statistics {args.finetune_bn}")
    for epoch in range(1, args.finetune_epochs + 1):
        t0 = time.perf_counter()
        train_mode(model, freeze_batchnorm=args.finetune_bn == "frozen")
        train_loss, train_acc = train_epoch(model, optimizer, train_x, train_y, args.batch_size, generator)
        test_loss, test_acc = evaluate(model, test_x, test_y, args.batch_size)
        history["finetune"].append(dict(train_loss=train_loss, train_acc=train_acc, test_loss=test_loss,
                                        test_acc=test_acc))
        print(f"  stage 2 epoch {epoch:2d}/{args.finetune_epochs}: train loss {train_loss:.3f} "
              f"acc {100 * train_acc:5.1f}% | test loss {test_loss:.3f} acc {100 * test_acc:5.1f}% "
              f"({time.perf_counter() - t0:.1f} s)")
    final_acc = evaluate(model, test_x, test_y, args.batch_size)[1]

    elapsed = time.perf_counter() - started
    print(f"test accuracy: {100 * head_acc:.1f}% after stage 1 (head only), {100 * final_acc:.1f}% "
          f"after stage 2 (finetuned); chance is {100 / len(classes):.0f}%; {elapsed:.1f} s in all")
    figures = dict(arch=args.arch, weights=args.weights, dataset=dataset, device=device,
                   head_accuracy=head_acc, final_accuracy=final_acc, seconds=elapsed, **history)
    (out / "metrics.json").write_text(json.dumps(figures, indent=1))
    if not args.no_plots:
        save_figures(out, raw[:16], torch.cat([train_y.cpu(), test_y.cpu()])[:16], classes, history)
    return figures


if __name__ == "__main__":
    main()
