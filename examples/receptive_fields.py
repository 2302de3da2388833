"""Receptive fields of the lecture's networks: theoretical, layer by layer, and effective.

1. The theoretical field (size, jump, start) of VGG-16 and ResNet-50 at 224×224, and of
   DeepLab's ResNet-50 (stages 3 and 4 dilated instead of strided), from
   fastconv.receptive_field: no arithmetic is done here.
2. The effective receptive field (Luo et al., 2016) at initialisation: the mean absolute
   gradient of a central unit with respect to the input, over random images and weight
   draws, at growing depth: VGG-16 after each block, ResNet-50 after stages 1 and 2, and
   a stack of 3×3 convolutions dilated 1, 2, 4, ... (Guideline 6) against a plain one.
   Each input is just large enough to hold the central unit's theoretical field.

VGG-16's effective fields are measured at a quarter of its width (its layer layout and
initialisation at 16 to 128 channels), which a 2-core CPU computes in seconds; a check at
full width on the first three blocks shows the width changes the field little.

    python examples/receptive_fields.py [--draws 4] [--images 4] [--out DIR]

Writes the figures as JSON and PNG to --out. Needs matplotlib for the PNGs.
"""

import argparse
import json
import os
import time

import torch
from torch import nn

import fastconv
import fastconv.models as models
from fastconv._plotting import figure
from fastconv.receptive_field import effective_receptive_field, receptive_fields

VGG16_CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=4, help="weight draws per network")
    parser.add_argument("--images", type=int, default=4, help="random images per weight draw")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch")
    parser.add_argument("--out", default=os.path.join("example-output", "receptive_fields"))
    args = parser.parse_args()
    if min(args.draws, args.images, args.threads) < 1:
        parser.error("--draws, --images and --threads must be positive")
    return args


def vgg16_features(width: float = 1.0) -> nn.Sequential:
    """VGG-16's convolutional layers (configuration D) with its initialisation (He normal,
    fan-out, zero biases), every channel count scaled by width."""
    layers, channels = [], 3
    for item in VGG16_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        conv = fastconv.Conv2d(channels, max(1, int(item * width)), 3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
        channels = conv.out_channels
    return nn.Sequential(*layers)


def conv_stack(dilations) -> nn.Sequential:
    layers = []
    for i, d in enumerate(dilations):
        conv = fastconv.Conv2d(3 if i == 0 else 32, 32, 3, padding=d, dilation=d)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def theoretical_tables():
    """Selected rows of each network's theoretical fields, as (network, layer, size, jump, start)."""
    picks = {
        "vgg16": (models.vgg16, {}, [("features.2", "conv1_2"), ("features.7", "conv2_2"), ("features.14", "conv3_3"),
                                     ("features.21", "conv4_3"), ("features.28", "conv5_3"), ("features.30", "pool5")]),
        "resnet50": (models.resnet50, {}, [("maxpool", "stem"), ("layer1", "stage 1"), ("layer2", "stage 2"),
                                           ("layer3", "stage 3"), ("layer4", "stage 4")]),
        "resnet50 dilated": (models.resnet50, {"replace_stride_with_dilation": [False, True, True]},
                             [("layer2", "stage 2"), ("layer3", "stage 3"), ("layer4", "stage 4")]),
    }
    rows = []
    for network, (builder, kwargs, layers) in picks.items():
        with torch.device("meta"):  # shapes only: no weights are made
            model = builder(**kwargs)
        fields = receptive_fields(model, (1, 3, 224, 224))
        for name, label in layers:
            rf = fields.layer(name)
            rows.append(dict(network=network, layer=label, module=name, size=rf.size[0], jump=int(rf.jump[0]),
                             start=rf.start[0], output=list(rf.output_shape[2:]), merged=rf.merged))
    return rows


def measure(label, depth, builder, input_side, layer, args, seed):
    start = time.perf_counter()
    erf = effective_receptive_field(builder, (args.images, 3, input_side, input_side), layer=layer,
                                    draws=args.draws, seed=seed)
    sy, sx = erf.std()
    row = dict(network=label, depth=depth, layer=layer, input=input_side, theoretical=erf.theoretical.size[0],
               r50=round(erf.radius(0.5), 2), r95=round(erf.radius(0.95), 2), std=round((sy + sx) / 2, 2),
               inside=round(erf.share_inside_theoretical(), 12), samples=erf.samples,
               seconds=round(time.perf_counter() - start, 1))
    print(f"  {label:<24} {depth:<10} field {row['theoretical']:>4} px   effective: std {row['std']:6.2f}, "
          f"50% within r = {row['r50']:6.2f}, 95% within r = {row['r95']:6.2f}   ({row['seconds']:.1f} s)")
    return row, erf


def draw_maps(path, measured):
    """One panel per measured field: the effective field, the theoretical one outlined."""
    from matplotlib.patches import Rectangle

    groups = list(dict.fromkeys(row["network"] for row, _ in measured))
    ncols = max(sum(1 for row, _ in measured if row["network"] == g) for g in groups)
    fig = figure("draw_maps", figsize=(2.6 * ncols, 2.7 * len(groups)))
    axes = fig.subplots(len(groups), ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, group in enumerate(groups):
        for c, (row, erf) in enumerate([m for m in measured if m[0]["network"] == group]):
            ax = axes[r, c]
            ax.imshow(erf.map.numpy(), cmap="magma", interpolation="nearest")
            (top, bottom), (left, right) = erf.theoretical.region(*erf.unit)
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                                   edgecolor="deepskyblue", linewidth=1))
            ax.set_title(f"{group}\n{row['depth']}: field {row['theoretical']}, r95 {row['r95']:.0f}", fontsize=8)
    fig.suptitle("effective receptive fields at initialisation (theoretical field outlined)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def draw_growth(path, rows):
    """The effective field's width against the theoretical field's size, and their ratio by depth."""
    fig = figure("draw_growth", figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for network, marker in [("VGG-16 (1/4 width)", "o"), ("ResNet-50", "s"), ("3x3, dilated 1, 2, 4, ...", "^"),
                            ("3x3, plain", "v")]:
        points = [r for r in rows if r["network"] == network]
        axes[0].plot([r["theoretical"] for r in points], [r["std"] for r in points], marker=marker, label=network)
        axes[1].plot(range(1, len(points) + 1), [r["std"] / r["theoretical"] for r in points], marker=marker,
                     label=network)
    axes[0].set(xscale="log", yscale="log", xlabel="theoretical field (px)", ylabel="std of the effective field (px)",
                title="effective width against theoretical size")
    axes[1].set(xlabel="depth (block, stage or layer count)", ylabel="std / theoretical size",
                title="the share of the theoretical field in use")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()

    print("theoretical receptive fields at 224x224 (fastconv.receptive_field):")
    table = theoretical_tables()
    for row in table:
        print(f"  {row['network']:<17} {row['layer']:<8} ({row['module']:<11}) size {row['size']:>3}  "
              f"jump {row['jump']:>2}  start {row['start']:>4}  output {row['output'][0]}x{row['output'][1]}")

    # The quarter-width builder at width 1 is VGG-16's own layout.
    with torch.device("meta"):
        assert str(vgg16_features(1.0)) == str(models.vgg16().features)

    print(f"\neffective receptive fields at initialisation ({args.draws} weight draws x {args.images} images):")
    # The last convolution of each block (its output, before the ReLU), on an input 14 jumps wide.
    vgg_layers = [("block 1", "2", 14), ("block 2", "7", 28), ("block 3", "14", 56), ("block 4", "21", 112),
                  ("block 5", "28", 224)]
    measured = []
    for depth, layer, side in vgg_layers:
        measured.append(measure("VGG-16 (1/4 width)", depth, lambda: vgg16_features(0.25), side, layer, args, 0))
    for depth, layer, side in vgg_layers[:3]:
        measured.append(measure("VGG-16 (full width)", depth, lambda: vgg16_features(1.0), side, layer, args, 0))
    for depth, layer, side in [("stem", "maxpool", 32), ("stage 1", "layer1", 64), ("stage 2", "layer2", 128)]:
        measured.append(measure("ResNet-50", depth, models.resnet50, side, layer, args, 0))
    for n in range(1, 7):
        dilations = [2 ** i for i in range(n)]
        # Inputs of the field (2^(n+1) - 1 dilated, 2n + 1 plain) and a margin.
        measured.append(measure("3x3, dilated 1, 2, 4, ...", f"{n} layers", lambda d=dilations: conv_stack(d),
                                2 ** (n + 1) + 16, str(2 * n - 2), args, 0))
        measured.append(measure("3x3, plain", f"{n} layers", lambda n=n: conv_stack([1] * n), 2 * n + 17,
                                str(2 * n - 2), args, 0))
    rows = [row for row, _ in measured]

    with open(os.path.join(args.out, "receptive_fields.json"), "w") as f:
        json.dump(dict(theoretical=table, effective=rows, machine=_machine(), threads=args.threads), f, indent=1)
    try:
        draw_maps(os.path.join(args.out, "effective_fields.png"), measured)
        draw_growth(os.path.join(args.out, "growth.png"), rows)
        block4 = next(erf for row, erf in measured if row["network"] == "VGG-16 (1/4 width)" and row["depth"] == "block 4")
        block4.save_png(os.path.join(args.out, "vgg16_block4.png"),
                        title=f"VGG-16 (1/4 width) conv4_3 at initialisation: {block4.samples} gradients")
        print(f"\nfigures written to {args.out}")
    except ImportError as error:
        print(f"\nno figures: {error}")
    print(f"done in {time.perf_counter() - start:.1f} s")


def _machine() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


if __name__ == "__main__":
    main()
