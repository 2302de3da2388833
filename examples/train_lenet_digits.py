"""Train LeNet-5 on scikit-learn's handwritten digits, the lecture's first CNN on the task it
was built for.

The 1,797 8×8 digit images ship with scikit-learn (no download); they are upsampled to the
32×32 input LeNet-5 expects and split once, stratified, into 1,347 training and 450 test
images. Training batches are randomly rotated, scaled and shifted a little (--no-augment turns
that off: LeNet-5 then memorises the 1,347 images and tops out near 97-98% on the test set).
The script prints each epoch's loss and accuracies, saves the learning curves, and exits
non-zero if the final test accuracy misses --target.

    python examples/train_lenet_digits.py [--epochs 20] [--out DIR]

Needs scikit-learn and matplotlib (pip install scikit-learn matplotlib). Runs on the CPU, or
on a GPU unchanged.
"""

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

import fastconv
from fastconv.models import lenet5


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate")
    parser.add_argument("--no-augment", dest="augment", action="store_false",
                        help="train on the images as they are, without random rotations and shifts")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and shuffling")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for PyTorch. LeNet's layers are too small to gain from "
                             "more, and each extra thread costs synchronisation on every operation: "
                             "on a busy 2-core machine, 2 threads made this run ten times slower")
    parser.add_argument("--target", type=float, default=0.97,
                        help="the test accuracy the run must reach (exit status 1 otherwise)")
    parser.add_argument("--out", default=os.path.join("example-output", "train_lenet_digits"),
                        help="directory for the learning-curve plot")
    args = parser.parse_args()
    if min(args.epochs, args.batch_size, args.threads) < 1 or args.lr <= 0:
        parser.error("--epochs, --batch-size, --lr and --threads must be positive")
    return args


def load_data(device):
    """Train and test images as [N, 1, 32, 32] tensors, normalised with the training set's
    mean and standard deviation, and their labels."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("this example needs scikit-learn for its bundled digits data set: pip install scikit-learn")
    digits = load_digits()
    # The split is fixed (random_state=0) whatever --seed says, so runs compare on one test set.
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images, digits.target, test_size=0.25, random_state=0, stratify=digits.target)

    def to_tensor(images):
        # Pixel values are 0..16. Bilinear upsampling keeps the strokes smooth where nearest
        # neighbour would give LeNet's 5×5 filters blocky 4×4 pixels to look at.
        x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
        return F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)

    x_train, x_test = to_tensor(x_train), to_tensor(x_test)
    mean, std = x_train.mean(), x_train.std()
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_train, y_test = torch.as_tensor(y_train), torch.as_tensor(y_test)
    return [t.to(device) for t in (x_train, y_train, x_test, y_test)]


def augment(x, generator):
    """Random small rotations (±10°), scalings (±10%) and shifts (±2 px): 1,347 images are few
    enough for LeNet-5 to memorise, and a digit stays the same digit under these."""
    n = len(x)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * torch.pi / 18
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 / 16)  # 16 px per grid unit
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # The border of every image is blank, so repeating it fills uncovered corners with background.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def accuracy(model, x, y, batch_size=512):
    model.eval()
    correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def save_plot(history, path):
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib): no plot saved")
        return
    matplotlib.use("Agg")  # write files, never open a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = range(1, len(history["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["loss"], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss (augmented batches)")
    ax_loss.set_yscale("log")
    ax_loss.grid(True, alpha=0.3)
    ax_acc.plot(epochs, [100 * a for a in history["train_acc"]], marker="o", label="train")
    ax_acc.plot(epochs, [100 * a for a in history["test_acc"]], marker="s", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="LeNet-5 on 8×8 digits at 32×32")
    ax_acc.grid(True, alpha=0.3)
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"learning curves saved to {path}")


def train(model, x_train, y_train, x_test, y_test, *, epochs, lr, batch_size=32, augmented=True,
          generator=None, log=print):
    """Adam with a cosine decay of the step to zero over `epochs`; returns the history of
    loss and accuracies per epoch. Also used by the low-rank and visualisation examples."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # Decaying the step towards zero lets the last epochs settle instead of bouncing around.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    shuffle = generator if generator is not None else torch.Generator().manual_seed(0)
    history = {"loss": [], "train_acc": [], "test_acc": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=shuffle).to(x_train.device)
        total_loss = 0.0
        for i in range(0, len(order), batch_size):
            batch = order[i:i + batch_size]
            images = augment(x_train[batch], shuffle) if augmented else x_train[batch]
            loss = F.cross_entropy(model(images), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
        scheduler.step()
        history["loss"].append(total_loss / len(x_train))
        history["train_acc"].append(accuracy(model, x_train, y_train))
        history["test_acc"].append(accuracy(model, x_test, y_test))
        if log is not None:
            log(f"epoch {epoch:2d}/{epochs}  loss {history['loss'][-1]:.4f}  "
                f"train {100 * history['train_acc'][-1]:6.2f}%  test {100 * history['test_acc'][-1]:6.2f}%  "
                f"({time.perf_counter() - start:.1f} s)")
    return history


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = "cuda" if fastconv.algorithms.usable("cuda") else "cpu"
    x_train, y_train, x_test, y_test = load_data(device)
    print(f"device {device}; {len(x_train)} training and {len(x_test)} test images of "
          f"{tuple(x_train.shape[1:])}")

    model = lenet5(num_classes=10).to(device)
    print(f"LeNet-5: {sum(p.numel() for p in model.parameters()):,} parameters")
    start = time.perf_counter()
    history = train(model, x_train, y_train, x_test, y_test, epochs=args.epochs, lr=args.lr,
                    batch_size=args.batch_size, augmented=args.augment,
                    generator=torch.Generator().manual_seed(args.seed))
    elapsed = time.perf_counter() - start

    os.makedirs(args.out, exist_ok=True)
    save_plot(history, os.path.join(args.out, "learning_curve.png"))
    final = history["test_acc"][-1]
    wrong = round((1 - final) * len(x_test))
    print(f"final test accuracy {100 * final:.2f}% ({wrong} of {len(x_test)} wrong) "
          f"after {args.epochs} epochs in {elapsed:.1f} s")
    if final < args.target:
        print(f"FAILED: test accuracy {100 * final:.2f}% is below the target {100 * args.target:.2f}%")
        sys.exit(1)
    print(f"OK: test accuracy reaches the target {100 * args.target:.2f}%")


if __name__ == "__main__":
    main()
