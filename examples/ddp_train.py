"""Data-parallel training of a fastconv model with torch.distributed (DDP), launched by torchrun.

    torchrun --nproc_per_node=2 examples/ddp_train.py            # gloo on the CPU
    torchrun --nproc_per_node=2 examples/ddp_train.py --check --dtype float64   # and prove it equals 1 process

Each process takes its share of every global batch; DDP averages the gradients, so two
processes on half a batch each take the same steps as one process on the whole batch. With
--check, rank 0 then trains a fresh copy alone on the whole batches and compares every
parameter; that needs float64, since training amplifies float32 rounding step by step.

The backend is nccl when fastconv can run on the GPUs, gloo otherwise. The task is synthetic
(no download): 10 classes of 32x32 images, each class a bar at its own angle, with noise.
"""

import argparse
import math
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import fastconv
import fastconv.models


def make_dataset(n: int, seed: int, dtype: torch.dtype):
    """n noisy 1x32x32 images of a centred bar whose angle is the class (18 degrees apart)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    angle = labels.double() * math.pi / 10 + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    coords = torch.linspace(-1, 1, 32, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    # distance of each pixel from the line through the centre at the class's angle
    dist_to_line = (xx[None] * torch.sin(angle)[:, None, None] - yy[None] * torch.cos(angle)[:, None, None]).abs()
    images = torch.exp(-((dist_to_line / 0.12) ** 2)) * (xx[None] ** 2 + yy[None] ** 2 < 0.8)
    images = images + 0.3 * torch.randn(n, 32, 32, generator=g, dtype=torch.float64)
    return images[:, None].to(dtype), labels


def build_model(dtype: torch.dtype, device) -> torch.nn.Module:
    torch.manual_seed(0)  # every process, and the --check copy, start from the same weights
    return fastconv.models.lenet5(num_classes=10).to(device=device, dtype=dtype)


def batches(n: int, batch_size: int, steps: int, seed: int):
    """The index sets of the global batches, the same in every process."""
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(steps * batch_size / n) + 1)])
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def train(model, images, labels, plan, lr, rank=0, world=1, log_every=0):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    for step, index in enumerate(plan):
        mine = index.chunk(world)[rank]  # this process's contiguous share of the global batch
        x, y = images[mine], labels[mine]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        if log_every and (step + 1) % log_every == 0:
            report = loss.detach().clone()
            if world > 1:
                dist.all_reduce(report)
                report /= world
            if rank == 0:
                print(f"step {step + 1:4d}/{len(plan)}  loss {report.item():.4f}", flush=True)


@torch.no_grad()
def accuracy(model, images, labels):
    return (model(images).argmax(1) == labels).double().mean().item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, split across the processes")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--train-size", type=int, default=2048)
    parser.add_argument("--check", action="store_true", help="rank 0 retrains alone on whole batches and compares")
    parser.add_argument("--backend", choices=["gloo", "nccl"], default=None, help="default: nccl on usable GPUs, else gloo")
    args = parser.parse_args(argv)
    if args.check and args.dtype != "float64":
        parser.error("--check compares to rounding, which float32 training amplifies step by step: add --dtype float64")
    if "RANK" not in os.environ:
        parser.error("launch with torchrun, e.g. torchrun --nproc_per_node=2 examples/ddp_train.py")
    if args.batch_size % int(os.environ["WORLD_SIZE"]):
        parser.error(f"--batch-size {args.batch_size} must divide evenly across {os.environ['WORLD_SIZE']} processes")

    use_gpu = fastconv.algorithms.usable("cuda") and args.backend != "gloo"
    backend = args.backend or ("nccl" if use_gpu else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if use_gpu else torch.device("cpu")
    if use_gpu:
        torch.cuda.set_device(device)
    else:
        # two processes on a small CPU should not fight over its cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["WORLD_SIZE"])))
    dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    dtype = getattr(torch, args.dtype)
    if rank == 0:
        print(f"DDP: {world} processes, backend {backend}, device {device.type}, {args.dtype}, "
              f"global batch {args.batch_size} ({args.batch_size // world} per process)", flush=True)

    images, labels = make_dataset(args.train_size + 1000, seed=1, dtype=dtype)
    images, labels = images.to(device), labels.to(device)
    train_x, train_y = images[:args.train_size], labels[:args.train_size]
    test_x, test_y = images[args.train_size:], labels[args.train_size:]
    plan = batches(args.train_size, args.batch_size, args.steps, seed=2)

    model = DistributedDataParallel(build_model(dtype, device))
    start = time.perf_counter()
    train(model, train_x, train_y, plan, args.lr, rank, world, log_every=max(1, args.steps // 10))
    elapsed = time.perf_counter() - start
    status = 0
    if rank == 0:
        print(f"trained {args.steps} steps in {elapsed:.1f} s; test accuracy {accuracy(model.module, test_x, test_y):.3f}")
        if args.check:
            alone = build_model(dtype, device)
            train(alone, train_x, train_y, plan, args.lr)
            diff = max((a - b).abs().max().item() for a, b in zip(model.module.parameters(), alone.parameters()))
            scale = max(p.abs().max().item() for p in alone.parameters())
            tol = 1e-9
            print(f"check: largest parameter difference from 1 process on whole batches: {diff:.3e} "
                  f"(largest parameter {scale:.3f}; tolerance {tol:g})")
            status = 0 if diff <= tol * scale else 1
            print("check: " + ("equal" if status == 0 else "DIFFERENT"), flush=True)
    outcome = torch.tensor([status], dtype=torch.int64, device=device)
    dist.broadcast(outcome, src=0)
    # DDP's reducer holds the process group: release it, and let every rank get here, before
    # the group goes (gloo aborts a process whose group dies under live work).
    del model
    dist.barrier()
    dist.destroy_process_group()
    return int(outcome.item())


if __name__ == "__main__":
    sys.exit(main())
