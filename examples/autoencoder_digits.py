"""Train fastconv's convolutional autoencoder and VAE on handwritten digits.

The data are scikit-learn's 8×8 digits (1,797 images, no download), upsampled to 32×32 and
scaled to [0, 1]. Both models are trained on 1,500 images and measured on the other 297:
the autoencoder by its reconstruction error, the VAE by its negative ELBO and its KL term.
A figure with test images, both reconstructions and VAE samples from the prior goes to --out.
Runs on the CPU, or on a GPU unchanged.
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import fastconv  # noqa: E402
import fastconv.models as models  # noqa: E402
from fastconv.models.autoencoder import kl_divergence, vae_loss  # noqa: E402


def load_data(size: int, device: str):
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.clamp(0, 1)
    order = torch.randperm(len(images))
    train, test = images[order[:1500]], images[order[1500:]]
    return train.to(device), test.to(device)


def batches(data: torch.Tensor, batch_size: int):
    order = torch.randperm(len(data), device=data.device)
    for start in range(0, len(data), batch_size):
        yield data[order[start:start + batch_size]]


def train_autoencoder(train, test, args, device):
    # Three halvings: a 32x32 digit becomes an 8 x 4 x 4 code, 128 numbers for 1024 pixels.
    model = models.conv_autoencoder(in_channels=1, latent_channels=8, channels=(16, 32, 64)).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(1, args.epochs + 1):
        model.train()
        total = 0.0
        for x in batches(train, args.batch_size):
            # Sigmoid outputs against targets in [0, 1]: binary cross-entropy, as for the VAE.
            loss = torch.nn.functional.binary_cross_entropy(model(x), x)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(x)
        model.eval()
        with torch.no_grad():
            test_mse = torch.nn.functional.mse_loss(model(test), test).item()
        print(f"autoencoder epoch {epoch:2d}: train BCE {total / len(train):.4f}, test MSE {test_mse:.5f}")
    return model, test_mse


def train_vae(train, test, args, device):
    model = models.vae(in_channels=1, image_size=train.shape[-1], latent_dim=args.latent_dim, channels=(16, 32))
    model = model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(1, args.epochs + 1):
        model.train()
        total = 0.0
        for x in batches(train, args.batch_size):
            recon, mu, logvar = model(x)
            loss = vae_loss(recon, x, mu, logvar)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(x)
        model.eval()
        with torch.no_grad():
            recon, mu, logvar = model(test)
            test_loss = vae_loss(recon, test, mu, logvar).item()
            test_kl = kl_divergence(mu, logvar).mean().item()
            test_mse = torch.nn.functional.mse_loss(torch.sigmoid(recon), test).item()
        print(f"VAE epoch {epoch:2d}: train -ELBO {total / len(train):.2f}, test -ELBO {test_loss:.2f} "
              f"(KL {test_kl:.2f} nats), test MSE of the mean reconstruction {test_mse:.5f}")
    return model, test_loss, test_kl, test_mse


def save_figure(path, test, autoencoder, vae, samples):
    with torch.no_grad():
        shown = test[:10]
        rows = [shown, autoencoder(shown), torch.sigmoid(vae(shown)[0]), samples[:10]]
    titles = ["test images", "autoencoder", "VAE (z = mu)", "VAE samples"]
    fig, axes = plt.subplots(len(rows), 10, figsize=(10, 4.4))
    for r, (row, title) in enumerate(zip(rows, titles)):
        for c in range(10):
            axes[r, c].imshow(row[c, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].axis("off")
        axes[r, 0].set_title(title, loc="left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--latent-dim", type=int, default=8, help="VAE latent dimensions")
    parser.add_argument("--size", type=int, default=32, help="image side after upsampling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("example-output", "autoencoder_digits"))
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = "cuda" if fastconv.algorithms.usable("cuda") else "cpu"
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    train, test = load_data(args.size, device)
    print(f"digits: {len(train)} training and {len(test)} test images of {args.size}x{args.size}")
    blind = (test - train.mean(0, keepdim=True)).square().mean().item()
    print(f"test MSE of the mean training image (the input-blind bar): {blind:.5f}")

    start = time.perf_counter()
    autoencoder, ae_mse = train_autoencoder(train, test, args, device)
    vae, vae_nelbo, vae_kl, vae_mse = train_vae(train, test, args, device)
    elapsed = time.perf_counter() - start

    samples = vae.sample(10, generator=torch.Generator(device=device).manual_seed(args.seed))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "reconstructions.png")
    save_figure(path, test, autoencoder.eval(), vae.eval(), samples)
    with torch.no_grad():
        code = autoencoder.encode(test[:1])
    print(f"autoencoder: test MSE {ae_mse:.5f} ({ae_mse / blind:.1%} of the bar), "
          f"code {code[0].numel()} numbers for {args.size ** 2} pixels")
    print(f"VAE: test -ELBO {vae_nelbo:.2f} nats per image, KL {vae_kl:.2f} nats, "
          f"MSE {vae_mse:.5f} ({vae_mse / blind:.1%} of the bar)")
    print(f"trained both in {elapsed:.1f} s; figure written to {path}")


if __name__ == "__main__":
    main()
