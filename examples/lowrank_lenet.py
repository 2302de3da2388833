"""Low-rank decompositions of a trained LeNet-5 (Guideline 5), before and after a finetune.

LeNet-5 is trained on scikit-learn's digits as in train_lenet_digits.py. Then
fastconv.lowrank.decompose_model replaces its two 5×5 convolutions, by each method in turn,
under a budget of half and of a quarter of the model's FLOPs:

- spatial: 5×1 then 1×5 convolutions through D channels (Jaderberg et al., 2014);
- channel: 1×1 reduce, 5×5, 1×1 expand (Tucker-2).

For each: the test accuracy straight after the decomposition and after a short finetune at
a tenth of the learning rate, the FLOPs and parameters, and the time to classify the 450 test
images (median of repeats, one thread).

    python examples/lowrank_lenet.py [--epochs 20] [--finetune 3] [--out DIR]

Needs scikit-learn (and matplotlib for the plot).
"""

import argparse
import copy
import json
import os
import statistics
import time

import torch

import fastconv
from fastconv.lowrank import decompose_model
from fastconv.models import lenet5
from fastconv.summary import summary
from train_lenet_digits import accuracy, load_data, train

BUDGETS = [0.5, 0.25]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of the original")
    parser.add_argument("--finetune", type=int, default=3, help="finetuning epochs after each decomposition")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate for training")
    parser.add_argument("--repeats", type=int, default=30, help="timed inference passes")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (LeNet is too small to gain from more)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("example-output", "lowrank_lenet"))
    args = parser.parse_args()
    if min(args.epochs, args.repeats, args.threads) < 1 or args.finetune < 0:
        parser.error("--epochs, --repeats and --threads must be positive, --finetune not negative")
    return args


@torch.no_grad()
def inference_ms(model, images, repeats):
    """Median milliseconds to classify `images` in one batch, after warm-up passes."""
    model.eval()
    for _ in range(3):
        model(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(images)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def figures(model, data, args):
    x_train, y_train, x_test, y_test = data
    s = summary(model, (1, 1, 32, 32), verbose=False)
    return dict(test_accuracy=accuracy(model, x_test, y_test), flops=s.flops, params=s.total_params,
                inference_ms=inference_ms(model, x_test, args.repeats))


def save_plot(path, rows):
    try:
        from fastconv._plotting import figure

        fig = figure("save_plot", figsize=(7, 4.2))
    except ImportError as error:
        print(f"no plot: {error}")
        return
    ax = fig.subplots()
    original = rows[0]
    ax.scatter([original["flops"] / 1e3], [100 * original["test_accuracy"]], marker="*", s=150, color="black",
               label="LeNet-5 as trained", zorder=3)
    for method, color in [("spatial", "tab:blue"), ("channel", "tab:orange")]:
        mine = [r for r in rows[1:] if r["method"] == method]
        ax.scatter([r["flops"] / 1e3 for r in mine], [100 * r["decomposed_accuracy"] for r in mine], marker="o",
                   facecolors="none", edgecolors=color, s=60, label=f"{method}: decomposed")
        ax.scatter([r["flops"] / 1e3 for r in mine], [100 * r["finetuned_accuracy"] for r in mine], marker="o",
                   color=color, s=60, label=f"{method}: after {rows[0]['finetune_epochs']} finetuning epochs")
    ax.set(xlabel="FLOPs per image (thousands)", ylabel="test accuracy (%)",
           title="LeNet-5 on digits, decomposed under FLOPs budgets")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot saved to {path}")


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    data = load_data("cpu")
    x_train, y_train, x_test, y_test = data

    model = lenet5()
    print(f"training LeNet-5 for {args.epochs} epochs ...")
    train(model, *data, epochs=args.epochs, lr=args.lr, generator=torch.Generator().manual_seed(args.seed), log=None)
    original = figures(model, data, args)
    original.update(method="original", finetune_epochs=args.finetune)
    print(f"original: test accuracy {100 * original['test_accuracy']:.2f}%, {original['flops']:,} FLOPs and "
          f"{original['params']:,} parameters, {original['inference_ms']:.2f} ms for the {len(x_test)} test images")

    rows = [original]
    for method in ["spatial", "channel"]:
        for budget in BUDGETS:
            result = decompose_model(model, x_train[:256], budget, method=method)
            decomposed = result.model
            row = figures(decomposed, data, args)
            row.update(method=method, budget=budget, energy=result.energy, decomposed_accuracy=row["test_accuracy"],
                       layers={name: dict(rank=r.rank, energy=r.energy, output_error=r.output_error,
                                          flops_before=r.flops_before, flops_after=r.flops_after)
                               for name, r in result.layers.items()})
            tuned = copy.deepcopy(decomposed)
            if args.finetune:
                train(tuned, *data, epochs=args.finetune, lr=args.lr / 10,
                      generator=torch.Generator().manual_seed(args.seed + 1), log=None)
            row["finetuned_accuracy"] = accuracy(tuned, x_test, y_test)
            del row["test_accuracy"]
            rows.append(row)
            print(f"\n{method}, budget {budget:.0%} of the FLOPs:")
            print("  " + str(result).replace("\n", "\n  "))
            print(f"  test accuracy {100 * row['decomposed_accuracy']:.2f}% decomposed, "
                  f"{100 * row['finetuned_accuracy']:.2f}% after {args.finetune} finetuning epochs; "
                  f"{row['params']:,} parameters; {row['inference_ms']:.2f} ms for the test images "
                  f"(original {original['inference_ms']:.2f} ms)")

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "lowrank_lenet.json"), "w") as f:
        json.dump(dict(rows=rows, threads=args.threads, torch=torch.__version__, fastconv=fastconv.__version__),
                  f, indent=1, default=str)
    save_plot(os.path.join(args.out, "accuracy_vs_flops.png"), rows)
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
