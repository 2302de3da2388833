"""fastconv in one minute: the drop-in layer, converting a model, RoIAlign, and which kernel
ran. Runs on the CPU, or on a GPU unchanged."""

import time

import torch

import fastconv
import fastconv.functional as F


def main():
    torch.manual_seed(0)
    device = "cuda" if fastconv.algorithms.usable("cuda") else "cpu"
    print(f"fastconv {fastconv.__version__}, torch {torch.__version__}, device {device}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"CPU algorithms, tried in order: {fastconv.algorithms.names('cpu')}")

    # 1. fastconv.Conv2d is torch.nn.Conv2d with fastconv's kernels.
    conv = fastconv.Conv2d(64, 64, 3, padding=1).to(device)
    ref = torch.nn.Conv2d(64, 64, 3, padding=1).to(device)
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(8, 64, 56, 56, device=device)
    y, y_ref = conv(x), ref(x)
    err = ((y - y_ref).norm() / y_ref.norm()).item()
    print(f"Conv2d 64->64 3x3 @56, batch 8: relative difference from torch.nn.Conv2d {err:.1e}")

    # 2. convert() swaps the convolutions of any model in place, keeping its parameters.
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, padding=1, groups=32), torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(32, 3, 2, stride=2),
    ).to(device)
    image = torch.randn(4, 3, 64, 64, device=device)
    before = model(image)
    fastconv.convert(model)
    after = model(image)
    print(f"converted {sum(isinstance(m, fastconv.nn.Conv2d) for m in model.modules())} Conv2d and "
          f"{sum(isinstance(m, fastconv.nn.ConvTranspose2d) for m in model.modules())} ConvTranspose2d; "
          f"outputs differ by {((after - before).norm() / before.norm()).item():.1e}")
    loss = after.square().mean()
    loss.backward()
    print(f"a training step's gradients flow through fastconv: |dW| = {model[0].weight.grad.norm():.3f}")

    # 3. RoIAlign as in Mask R-CNN: 7x7 bins from 1/4-scale features.
    features = torch.randn(2, 256, 50, 68, device=device)
    boxes = [torch.tensor([[10.0, 20.0, 120.0, 90.0], [0.0, 0.0, 271.0, 199.0]], device=device),
             torch.tensor([[33.5, 47.25, 64.0, 180.0]], device=device)]
    start = time.perf_counter()
    pooled = F.roi_align(features, boxes, output_size=7, spatial_scale=0.25, sampling_ratio=2, aligned=True)
    print(f"roi_align: {tuple(pooled.shape)} in {1e3 * (time.perf_counter() - start):.1f} ms")

    # 4. Every algorithm can be forced, e.g. to compare against the always-correct direct kernel.
    with fastconv.algorithms.force("direct"):
        y_direct = conv(x[:1])
    print(f"direct kernel vs default: {((y_direct - y[:1]).norm() / y[:1].norm()).item():.1e}")


if __name__ == "__main__":
    main()
