"""Mask R-CNN heads on fastconv, and the lecture's RoIPool-vs-RoIAlign comparison.

Part 1 runs the second stage of Mask R-CNN at inference (`fastconv.models.maskrcnn_heads`,
torchvision's head sizes) on synthetic feature maps and proposals: 7×7 RoIAlign crops, box
head, per-class NMS, then 14×14 crops of the surviving boxes, mask head, 28×28 masks pasted
into the image and thresholded at 0.5. The weights are random unless `--weights` gives a
torchvision Mask R-CNN `roi_heads` state_dict, so the detections mean nothing; the point is
the data flow and its shapes.

Part 2 is the lecture's table ("Compare to RoIPool: quantization breaks pixel-to-pixel
alignment") in miniature. Images hold one shape (ellipse, rectangle or diamond; random size,
rotation and sub-pixel position). A fixed "backbone" summarises every 8×8 pixel cell (stride
8) by how much of it the shape covers and where (first and second moments of the covered
area), so the features do know sub-cell geometry. Proposals are the shape's box with every
side moved by up to ±15% (fractional coordinates), and each proposal's target is the 28×28
mask of the shape inside that proposal, as in Mask R-CNN training. Two identical mask heads
(same initial weights, same batches, same steps) are trained, one on RoIPool crops and one
on RoIAlign crops (aligned=True, the paper's), and scored on held-out proposals by mask IoU.
RoIPool rounds each box to the stride-8 grid, so the crop no longer lines up with the box
the target is drawn in; RoIAlign samples exactly inside the box.

    python examples/detection_heads.py
    python examples/detection_heads.py --steps 600 --stride 16
"""

import argparse
import copy
import json
import math
import pathlib
import time

import torch
import torch.nn.functional as F
from torch import nn

import fastconv
import fastconv.models
from fastconv.models import detection as det

KINDS = ("ellipse", "rectangle", "diamond")
MASK = 28  # mask head output side


# --------------------------------------------------------------------------- synthetic world

def sample_shapes(n: int, image_size: int, generator: torch.Generator) -> dict:
    """n shapes with random kind, half-axes, rotation and a sub-pixel centre that keeps the
    whole shape inside the image; and each shape's tight box."""
    rand = lambda: torch.rand(n, generator=generator, dtype=torch.float64)  # noqa: E731
    kind = torch.randint(len(KINDS), (n,), generator=generator)
    a = image_size * (0.10 + 0.16 * rand())
    b = image_size * (0.10 + 0.16 * rand())
    theta = math.pi * rand()
    c, s = theta.cos().abs(), theta.sin().abs()
    # Half-extents of the rotated shape along x and y, per kind.
    hx = torch.stack([torch.sqrt((a * c) ** 2 + (b * s) ** 2), a * c + b * s, torch.maximum(a * c, b * s)], 1)
    hy = torch.stack([torch.sqrt((a * s) ** 2 + (b * c) ** 2), a * s + b * c, torch.maximum(a * s, b * c)], 1)
    hx, hy = hx[torch.arange(n), kind], hy[torch.arange(n), kind]
    cx = hx + 1 + (image_size - 2 * hx - 2) * rand()
    cy = hy + 1 + (image_size - 2 * hy - 2) * rand()
    box = torch.stack([cx - hx, cy - hy, cx + hx, cy + hy], 1)
    return dict(kind=kind, a=a, b=b, theta=theta, cx=cx, cy=cy, box=box)


def inside(shapes: dict, index: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Whether the points (x, y) [len(index), ...] lie in shapes[index]."""
    def col(name):
        v = shapes[name][index]
        return v.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    dx, dy = x - col("cx"), y - col("cy")
    cos, sin = col("theta").cos(), col("theta").sin()
    u = (cos * dx + sin * dy) / col("a")
    v = (-sin * dx + cos * dy) / col("b")
    kind = shapes["kind"][index].view(-1, *([1] * (x.dim() - 1)))
    ellipse = u * u + v * v <= 1
    rectangle = torch.maximum(u.abs(), v.abs()) <= 1
    diamond = u.abs() + v.abs() <= 1
    return torch.where(kind == 0, ellipse, torch.where(kind == 1, rectangle, diamond))


def render_features(shapes: dict, image_size: int, stride: int, fine: int = 2, chunk: int = 128) -> torch.Tensor:
    """The fixed backbone: for each stride×stride cell, the covered fraction and the first and
    second moments of the covered area in cell-local coordinates: [n, 6, S/stride, S/stride]."""
    n, cells, per_cell = len(shapes["kind"]), image_size // stride, stride * fine
    points = (torch.arange(image_size * fine, dtype=torch.float32) + 0.5) / fine
    local = (torch.arange(per_cell, dtype=torch.float32) + 0.5) / per_cell - 0.5
    lx = local.view(1, 1, 1, 1, per_cell)
    ly = local.view(1, 1, per_cell, 1, 1)
    out = []
    for start in range(0, n, chunk):
        index = torch.arange(start, min(start + chunk, n))
        cover = inside(shapes, index, points.view(1, 1, -1), points.view(1, -1, 1)).float()
        cover = cover.view(len(index), cells, per_cell, cells, per_cell)
        moments = [cover, cover * lx, cover * ly, cover * lx * lx, cover * ly * ly, cover * lx * ly]
        out.append(torch.stack([m.mean(dim=(2, 4)) for m in moments], 1))
    return torch.cat(out)


def jitter_boxes(boxes: torch.Tensor, per_shape: int, amount: float, image_size: int, generator) -> torch.Tensor:
    """per_shape proposals per box: each side moved by up to ±amount of the box's size."""
    boxes = boxes.repeat_interleave(per_shape, 0)
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    moved = boxes + amount * size * (2 * torch.rand(boxes.shape, generator=generator, dtype=torch.float64) - 1)
    moved = moved.clamp(0, image_size)
    # Keep every proposal at least a quarter of its box's size on each side.
    moved[:, 2:] = torch.maximum(moved[:, 2:], moved[:, :2] + 0.25 * size[:, :2])
    return moved


def mask_targets(shapes: dict, owner: torch.Tensor, boxes: torch.Tensor, supersample: int = 4) -> torch.Tensor:
    """The fraction of each of the 28×28 cells of each proposal that the shape covers."""
    # float32 is exact enough for coordinates below a few thousand pixels, and twice as fast.
    boxes = boxes.float()
    grid = (torch.arange(MASK * supersample, dtype=torch.float32) + 0.5) / (MASK * supersample)
    x = boxes[:, 0:1, None] + grid.view(1, 1, -1) * (boxes[:, 2:3, None] - boxes[:, 0:1, None])
    y = boxes[:, 1:2, None] + grid.view(1, -1, 1) * (boxes[:, 3:4, None] - boxes[:, 1:2, None])
    cover = inside(shapes, owner, x, y).float()
    return F.avg_pool2d(cover[:, None], supersample)[:, 0]


def make_split(n_images: int, per_shape: int, args, generator) -> dict:
    shapes = sample_shapes(n_images, args.image_size, generator)
    boxes = jitter_boxes(shapes["box"], per_shape, args.jitter, args.image_size, generator)
    owner = torch.arange(n_images).repeat_interleave(per_shape)
    return dict(shapes=shapes, features=render_features(shapes, args.image_size, args.stride),
                boxes=boxes, owner=owner, targets=mask_targets(shapes, owner, boxes))


def crops(split: dict, pooling: str, args, device) -> torch.Tensor:
    """14×14 crops of every proposal with fastconv RoIPool or RoIAlign (the features are fixed,
    so each method pools once)."""
    pooler = det.RoIPooler(14, pooling, sampling_ratio=2, aligned=True, spatial_scale=1.0 / args.stride)
    per_image = [split["boxes"][split["owner"] == i].float().to(device) for i in range(len(split["features"]))]
    return pooler(split["features"].to(device), per_image)


def mask_iou(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    pred, truth = probs > 0.5, targets > 0.5
    inter = (pred & truth).flatten(1).sum(1).float()
    union = (pred | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


# --------------------------------------------------------------------------- part 1

def inference_demo(args, device):
    print("\n== 1. Mask R-CNN second stage at inference (maskrcnn_heads, torchvision sizes) ==")
    heads = fastconv.models.get_model(
        "maskrcnn_heads", num_classes=91, in_channels=256, spatial_scale=1 / 8, score_thresh=0.011,
        detections_per_img=10, mask_threshold=0.5, weights=args.weights,
    ).to(device).eval()
    print("weights: " + (args.weights or "random (detections are meaningless; the shapes are the point)"))
    g = torch.Generator().manual_seed(args.seed)
    sizes = [(128, 128), (112, 128)]
    features = torch.randn(2, 256, 16, 16, generator=g).to(device)
    proposals = []
    for h, w in sizes:
        wh = 12 + 60 * torch.rand(40, 2, generator=g)
        xy = torch.rand(40, 2, generator=g) * (torch.tensor([w, h]) - wh)
        proposals.append(torch.cat([xy, xy + wh], 1).to(device))
    start = time.perf_counter()
    with torch.no_grad():
        results = heads(features, proposals, sizes)
    elapsed = time.perf_counter() - start
    for i, r in enumerate(results):
        areas = r["masks"].flatten(1).sum(1).tolist()
        print(f"image {i} {sizes[i]}: {len(proposals[i])} proposals -> {len(r['boxes'])} detections; "
              f"masks {tuple(r['masks'].shape)} {r['masks'].dtype}; top scores "
              f"{[round(s, 4) for s in r['scores'][:3].tolist()]}, labels {r['labels'][:3].tolist()}, "
              f"mask areas {[int(a) for a in areas[:3]]} px")
    print(f"second stage for 2 images: {1e3 * elapsed:.0f} ms on {device}")


# --------------------------------------------------------------------------- part 2

def mask_head(in_channels: int, width: int) -> nn.Module:
    return nn.Sequential(det.MaskRCNNHeads(in_channels, (width,) * 4, 1),
                         det.MaskRCNNPredictor(width, width, 1))


def train(head: nn.Module, train_crops, train_targets, args, device, label):
    head.train()
    optimiser = torch.optim.Adam(head.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.steps)
    order = torch.Generator().manual_seed(args.seed + 1)  # the same batches for both heads
    start, running = time.perf_counter(), 0.0
    for step in range(1, args.steps + 1):
        batch = torch.randint(len(train_crops), (args.batch,), generator=order).to(device)
        logits = head(train_crops[batch])[:, 0]
        loss = F.binary_cross_entropy_with_logits(logits, train_targets[batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running += loss.item()
        if step % args.log_every == 0 or step == args.steps:
            print(f"  {label} step {step:4d}/{args.steps}: loss {running / args.log_every:.4f} "
                  f"({time.perf_counter() - start:.1f} s)")
            running = 0.0
    return time.perf_counter() - start


@torch.no_grad()
def evaluate(head, test_crops, test, args, device) -> dict:
    head.eval()
    probs = torch.cat([torch.sigmoid(head(c)) for c in test_crops.split(256)])[:, 0].cpu()
    iou = mask_iou(probs, test["targets"])
    # The same masks as a detector reports them: pasted into the image, thresholded at 0.5,
    # against the shape's mask at pixel centres.
    centres = torch.arange(args.image_size, dtype=torch.float64) + 0.5
    truth = inside(test["shapes"], test["owner"], centres.view(1, 1, -1), centres.view(1, -1, 1))
    pasted = torch.cat([det.paste_masks_in_image(p[:, None], b.float(), (args.image_size,) * 2, threshold=0.5)
                        for p, b in zip(probs.split(64), test["boxes"].split(64))])[:, 0]
    image_iou = ((pasted & truth).flatten(1).sum(1).float()
                 / (pasted | truth).flatten(1).sum(1).clamp(min=1).float())
    return dict(mask_iou=iou.mean().item(), iou_ge_075=(iou >= 0.75).float().mean().item(),
                iou_ge_090=(iou >= 0.9).float().mean().item(), image_iou=image_iou.mean().item(), probs=probs)


def save_figure(test, results, args, out: pathlib.Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no figure)")
        return
    rows = 4
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2 * rows))
    centres = torch.arange(args.image_size * 2, dtype=torch.float64) / 2 + 0.25
    for r in range(rows):
        k = r * 7
        img = inside(test["shapes"], test["owner"][k:k + 1], centres.view(1, 1, -1), centres.view(1, -1, 1))[0]
        x1, y1, x2, y2 = test["boxes"][k].tolist()
        axes[r, 0].imshow(img, cmap="gray", extent=(0, args.image_size, args.image_size, 0))
        axes[r, 0].add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="red"))
        panels = [("target 28×28", test["targets"][k])] + [
            (f"{name} IoU {mask_iou(res['probs'][k:k + 1], test['targets'][k:k + 1]).item():.2f}",
             res["probs"][k]) for name, res in results.items()]
        for c, (title, m) in enumerate(panels, start=1):
            axes[r, c].imshow(m, cmap="viridis", vmin=0, vmax=1)
            axes[r, c].set_title(title, fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("image + proposal", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "masks.png", dpi=100)
    plt.close(fig)
    print(f"figure: {out / 'masks.png'}")


def roi_comparison(args, device, out: pathlib.Path) -> dict:
    print(f"\n== 2. RoIPool vs RoIAlign at the mask head (stride {args.stride}, "
          f"{args.image_size}×{args.image_size} images) ==")
    start = time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    train_split = make_split(args.train_images, args.proposals, args, g)
    test_split = make_split(args.test_images, args.proposals, args, g)
    # Scale each feature channel to unit spread (statistics of the training images only).
    scale = train_split["features"].transpose(0, 1).flatten(1).std(dim=1).view(1, -1, 1, 1)
    for split in (train_split, test_split):
        split["features"] = split["features"] / scale
    print(f"data: {len(train_split['boxes'])} training and {len(test_split['boxes'])} held-out proposals, "
          f"features {tuple(train_split['features'].shape[1:])} per image "
          f"({time.perf_counter() - start:.1f} s)")

    torch.manual_seed(args.seed)
    initial = mask_head(train_split["features"].shape[1], args.width)
    print(f"mask head: MaskRCNNHeads 4×{args.width} + MaskRCNNPredictor -> 1×28×28, "
          f"{sum(p.numel() for p in initial.parameters()):,} parameters, same initial weights for both")
    results = {}
    train_targets = train_split["targets"].to(device)
    for pooling, name in (("pool", "RoIPool"), ("align", "RoIAlign")):
        head = copy.deepcopy(initial).to(device)
        train_crops, test_crops = crops(train_split, pooling, args, device), crops(test_split, pooling, args, device)
        seconds = train(head, train_crops, train_targets, args, device, name)
        results[name] = evaluate(head, test_crops, test_split, args, device)
        results[name]["train_seconds"] = seconds

    print(f"\nheld-out mask quality ({len(test_split['boxes'])} proposals, masks thresholded at 0.5):")
    print(f"{'':10s} {'mask IoU':>9s} {'IoU>=0.75':>10s} {'IoU>=0.90':>10s} {'pasted IoU':>11s}")
    for name, r in results.items():
        print(f"{name:10s} {r['mask_iou']:9.3f} {r['iou_ge_075']:10.3f} {r['iou_ge_090']:10.3f} {r['image_iou']:11.3f}")
    pool, align = results["RoIPool"], results["RoIAlign"]
    print(f"RoIAlign - RoIPool: mask IoU {align['mask_iou'] - pool['mask_iou']:+.3f}, share of masks with "
          f"IoU>=0.75 {align['iou_ge_075'] - pool['iou_ge_075']:+.3f} "
          f"(relative {100 * (align['iou_ge_075'] / max(pool['iou_ge_075'], 1e-9) - 1):+.0f}%)")
    save_figure(test_split, results, args, out)
    return {name: {k: v for k, v in r.items() if k != "probs"} for name, r in results.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="example-output/detection_heads", help="folder for the figure and results")
    parser.add_argument("--steps", type=int, default=300, help="training steps per mask head")
    parser.add_argument("--batch", type=int, default=32, help="proposals per training step")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--width", type=int, default=32, help="mask head width (torchvision: 256)")
    parser.add_argument("--stride", type=int, default=8, choices=(4, 8, 16), help="feature stride in pixels")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--jitter", type=float, default=0.15, help="proposal sides move by up to this share")
    parser.add_argument("--proposals", type=int, default=2, help="proposals per shape")
    parser.add_argument("--train-images", type=int, default=1500)
    parser.add_argument("--test-images", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--weights", default=None,
                        help="a torchvision Mask R-CNN roi_heads state_dict (torch.save'd) for part 1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.image_size % args.stride:
        parser.error("--image-size must be a multiple of --stride")

    torch.manual_seed(args.seed)
    device = "cuda" if fastconv.algorithms.usable("cuda") else "cpu"
    print(f"fastconv {fastconv.__version__}, torch {torch.__version__}, device {device}, "
          f"{torch.get_num_threads()} CPU threads")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    inference_demo(args, device)
    results = roi_comparison(args, device, out)
    results["args"] = vars(args)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {out / 'results.json'}; total {time.perf_counter() - start:.0f} s wall, "
          f"{time.process_time() - cpu_start:.0f} s CPU")


if __name__ == "__main__":
    main()
