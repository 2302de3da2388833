"""The autoencoders (conv_autoencoder, vae) and the 1-D sequence models (text_cnn, tdnn)."""

import math

import pytest
import torch
from torch import nn

import fastconv.models as models
import fastconv.nn as fnn
from fastconv.models.autoencoder import ConvAutoencoder, kl_divergence, vae_loss
from fastconv.models.sequence import StatsPooling

from model_checks import assert_all_convs_fastconv, forward_backward


# ---------------------------------------------------------------- conv_autoencoder


@pytest.mark.parametrize("size", [(28, 28), (32, 32), (13, 17), (1, 1)])
def test_conv_autoencoder_reconstructs_input_shape(device, size):
    torch.manual_seed(0)
    model = models.conv_autoencoder(in_channels=1, latent_channels=8, channels=(8, 16)).to(device)
    assert assert_all_convs_fastconv(model) == 6
    x = torch.rand(2, 1, *size, device=device)
    code = model.encode(x)
    assert code.shape == (2, 8, math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    out = forward_backward(model, x)
    assert out.shape == x.shape
    assert ((out > 0) & (out < 1)).all()  # the sigmoid output
    assert model.encoder[0][0].weight.grad is not None


def test_conv_autoencoder_options(device):
    torch.manual_seed(0)
    model = models.conv_autoencoder(
        in_channels=3, latent_channels=4, channels=(8, 8, 16), batch_norm=True, output_activation="tanh"
    ).to(device)
    assert model.total_stride == 8
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3 + 3
    assert assert_all_convs_fastconv(model) == 8
    x = torch.rand(2, 3, 24, 40, device=device)
    out = forward_backward(model, x)
    assert out.shape == x.shape and out.abs().max() < 1
    raw = models.conv_autoencoder(output_activation="none").eval()
    assert isinstance(raw.output_activation, nn.Identity)


def test_conv_autoencoder_decode_sizes():
    torch.manual_seed(0)
    model = models.conv_autoencoder(latent_channels=4, channels=(8, 8)).eval()
    z = torch.randn(1, 4, 5, 6)
    # Without a size, decode assumes the input was divisible by the total stride.
    assert model.decode(z).shape == (1, 1, 20, 24)
    # Every size whose code is 5 x 6 can be asked for.
    for h in (17, 18, 19, 20):
        assert model.decode(z, output_size=(h, 21)).shape == (1, 1, h, 21)
    with pytest.raises(ValueError, match="code"):
        model.decode(z, output_size=(16, 24))
    with pytest.raises(ValueError, match="code"):
        model.decode(z, output_size=(20, 25))
    with pytest.raises(ValueError, match="latent_channels=4"):
        model.decode(torch.randn(1, 8, 5, 6))
    assert model.decode(torch.randn(1, 4, 3, 3), output_size=11).shape == (1, 1, 11, 11)


def test_conv_autoencoder_training_reduces_loss():
    torch.manual_seed(0)
    model = models.conv_autoencoder(latent_channels=8, channels=(8, 16), output_activation="none")
    # Smooth blobs: an image an autoencoder can learn, unlike white noise.
    grid = torch.linspace(-1, 1, 16)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    centres = torch.rand(8, 2) * 1.2 - 0.6
    x = torch.exp(-((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2) / 0.1)[:, None]
    # The bar: the error of the best input-blind answer, the batch's mean image.
    blind = (x - x.mean(0, keepdim=True)).square().mean().item()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(model(x), x)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses
    assert losses[-1] < 0.5 * blind, (losses, blind)


def test_conv_autoencoder_bad_arguments():
    with pytest.raises(ValueError, match="in_channels"):
        models.conv_autoencoder(in_channels=0)
    with pytest.raises(TypeError, match="latent_channels"):
        models.conv_autoencoder(latent_channels=2.0)
    with pytest.raises(ValueError, match="channels"):
        models.conv_autoencoder(channels=())
    with pytest.raises(ValueError, match="output_activation"):
        models.conv_autoencoder(output_activation="relu")
    model = models.conv_autoencoder(in_channels=3)
    with pytest.raises(ValueError, match="in_channels=3"):
        model(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="4-D"):
        model(torch.rand(3, 16, 16))
    with pytest.raises(TypeError, match="floating"):
        model(torch.ones(1, 3, 16, 16, dtype=torch.uint8))


def test_conv_autoencoder_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    source = models.get_model("conv_autoencoder", latent_channels=4, channels=(8,)).eval()
    path = tmp_path / "ae.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    loaded = models.conv_autoencoder(latent_channels=4, channels=(8,), weights=path).eval()
    x = torch.rand(2, 1, 10, 10)
    torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)
    assert isinstance(source, ConvAutoencoder)


# ---------------------------------------------------------------- vae


@pytest.mark.parametrize("in_channels,image_size", [(1, 28), (3, 32)])
def test_vae_shapes_and_backward(device, in_channels, image_size):
    torch.manual_seed(0)
    model = models.vae(in_channels=in_channels, image_size=image_size, latent_dim=8, channels=(8, 16)).to(device)
    assert assert_all_convs_fastconv(model) == 4
    x = torch.rand(2, in_channels, image_size, image_size, device=device)
    recon, mu, logvar = model(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (2, 8)
    vae_loss(recon, x, mu, logvar).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    samples = model.sample(5)
    assert samples.shape == (5, in_channels, image_size, image_size)
    assert not samples.requires_grad and ((samples > 0) & (samples < 1)).all()


def test_vae_odd_and_rectangular_sizes():
    model = models.vae(image_size=(20, 27), latent_dim=4, channels=(4, 4, 8))
    x = torch.rand(2, 1, 20, 27)
    assert model(x)[0].shape == x.shape
    with pytest.raises(ValueError, match="image_size"):
        model(torch.rand(2, 1, 28, 28))


def test_kl_divergence_closed_form():
    torch.manual_seed(0)
    mu = torch.randn(4, 6, dtype=torch.float64)
    logvar = torch.randn(4, 6, dtype=torch.float64)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    torch.testing.assert_close(kl_divergence(mu, logvar), expected, rtol=1e-12, atol=1e-12)
    # By hand: N(0, 1) is the prior itself; N(1, 1) per dimension costs 1/2;
    # N(0, e^2) per dimension costs (e^2 - 1 - 2) / 2.
    zeros = torch.zeros(1, 3, dtype=torch.float64)
    assert kl_divergence(zeros, zeros).item() == 0
    assert kl_divergence(zeros + 1, zeros).item() == pytest.approx(1.5)
    assert kl_divergence(zeros, zeros + 2).item() == pytest.approx(3 * (math.e**2 - 3) / 2)


def test_vae_loss_value_and_reduction():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    logits = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    mu, logvar = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    p = torch.sigmoid(logits)
    bce = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)
    torch.testing.assert_close(vae_loss(logits, x, mu, logvar, beta=0.5), (bce + 0.5 * kl).mean())
    mse = 0.5 * (logits - x).square().flatten(1).sum(1)
    torch.testing.assert_close(vae_loss(logits, x, mu, logvar, likelihood="gaussian"), (mse + kl).mean())
    # A mean over the batch: repeating the batch leaves the loss unchanged.
    twice = vae_loss(logits.repeat(2, 1, 1, 1), x.repeat(2, 1, 1, 1), mu.repeat(2, 1), logvar.repeat(2, 1))
    torch.testing.assert_close(twice, vae_loss(logits, x, mu, logvar))
    with pytest.raises(ValueError, match="likelihood"):
        vae_loss(logits, x, mu, logvar, likelihood="poisson")
    with pytest.raises(ValueError, match="beta"):
        vae_loss(logits, x, mu, logvar, beta=-1.0)
    with pytest.raises(ValueError, match="shape"):
        vae_loss(logits[:, :, :2], x, mu, logvar)


def test_reparameterisation_gradient():
    torch.manual_seed(0)
    mu = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 5, dtype=torch.float64)
    z = models.VAE.reparameterize(mu, logvar, generator=torch.Generator().manual_seed(7))
    (weights * z).sum().backward()
    std = torch.exp(0.5 * logvar.detach())
    eps = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(z.detach(), mu.detach() + std * eps)
    torch.testing.assert_close(mu.grad, weights)
    torch.testing.assert_close(logvar.grad, weights * 0.5 * std * eps)


def test_vae_sampling_modes_and_gradient_path():
    torch.manual_seed(0)
    model = models.vae(image_size=12, latent_dim=4, channels=(4,))
    x = torch.rand(2, 1, 12, 12)
    # With beta = 0 the log-variance head is reached only through the sampled z (the KL term
    # still joins the graph, multiplied by zero).
    model.train()
    recon, mu, logvar = model(x)
    vae_loss(recon, x, mu, logvar, beta=0.0).backward()
    assert model.fc_logvar.weight.grad.abs().sum() > 0
    assert not torch.equal(model(x)[0], model(x)[0])
    model.zero_grad(set_to_none=True)
    model.eval()
    recon, mu, logvar = model(x)
    vae_loss(recon, x, mu, logvar, beta=0.0).backward()
    assert model.fc_logvar.weight.grad.abs().sum() == 0
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], model.decode(model.encode(x)[0]))
        assert not torch.equal(model(x, sample=True)[0], model(x)[0])


def test_vae_bad_arguments():
    with pytest.raises(ValueError, match="latent_dim"):
        models.vae(latent_dim=0)
    with pytest.raises(TypeError, match="image_size"):
        models.vae(image_size=(28, 28, 28))
    model = models.vae()
    with pytest.raises(ValueError, match="in_channels=1"):
        model(torch.rand(1, 3, 28, 28))
    with pytest.raises(ValueError, match="latent_dim|\\[N, 16\\]"):
        model.decode(torch.rand(2, 8))
    with pytest.raises(ValueError, match="n must be positive"):
        model.sample(0)


# ---------------------------------------------------------------- text_cnn


class _ReferenceTextCNN(nn.Module):
    """Kim's CNN on torch.nn.Conv1d, with TextCNN's module names."""

    def __init__(self, vocab_size, embed_dim, num_classes, kernel_sizes, num_filters, multichannel):
        super().__init__()
        self.multichannel = multichannel
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        if multichannel:
            self.static_embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        width = embed_dim * (2 if multichannel else 1)
        self.convs = nn.ModuleList(nn.Conv1d(width, num_filters, k) for k in kernel_sizes)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(num_filters * len(kernel_sizes), num_classes)

    def forward(self, tokens):
        e = self.embedding(tokens)
        if self.multichannel:
            e = torch.cat([e, self.static_embedding(tokens)], 2)
        e = e.permute(0, 2, 1)
        return self.fc(self.dropout(torch.cat([nn.functional.relu(c(e)).max(2).values for c in self.convs], 1)))


@pytest.mark.parametrize("mode", ["non-static", "multichannel"])
def test_text_cnn_matches_torch_conv1d_reference(mode):
    torch.manual_seed(0)
    reference = _ReferenceTextCNN(50, 16, 3, (3, 4, 5), 12, mode == "multichannel").double().eval()
    ours = models.text_cnn(50, embed_dim=16, num_classes=3, num_filters=12, embedding_mode=mode)
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours = ours.double().eval()
    for length in (5, 9, 23):
        tokens = torch.randint(0, 50, (3, length))
        with torch.no_grad():
            torch.testing.assert_close(ours(tokens), reference(tokens), rtol=1e-12, atol=1e-12)


def test_text_cnn_shapes_and_backward(device):
    torch.manual_seed(0)
    model = models.text_cnn(100, embed_dim=32, num_classes=4, kernel_sizes=(2, 3, 4, 5), num_filters=8).to(device)
    assert assert_all_convs_fastconv(model) == 4
    assert all(isinstance(c, fnn.Conv1d) for c in model.convs)
    for length in (5, 11, 40):
        tokens = torch.randint(0, 100, (2, length), device=device)
        assert model.features(tokens).shape == (2, 32)
        assert model(tokens).shape == (2, 4)
    model.zero_grad()
    forward_backward(model, torch.randint(0, 100, (2, 9), device=device))
    assert model.embedding.weight.grad is not None
    assert all(c.weight.grad.abs().sum() > 0 for c in model.convs)


def test_text_cnn_defaults_follow_kim():
    model = models.text_cnn(1000)
    assert model.embedding.weight.shape == (1000, 300)
    assert [c.kernel_size for c in model.convs] == [(3,), (4,), (5,)]
    assert [c.out_channels for c in model.convs] == [100, 100, 100]
    assert model.dropout.p == 0.5 and model.fc.out_features == 2
    assert model.embedding.padding_idx == 0


def test_text_cnn_embedding_modes():
    torch.manual_seed(0)
    vectors = torch.randn(30, 8)
    tokens = torch.randint(0, 30, (2, 6))
    static = models.text_cnn(30, embed_dim=8, num_filters=4, embedding_mode="static", pretrained_embeddings=vectors)
    torch.testing.assert_close(static.embedding.weight, vectors)
    static(tokens).sum().backward()
    assert static.embedding.weight.grad is None and static.convs[0].weight.grad is not None

    multi = models.text_cnn(30, embed_dim=8, num_filters=4, embedding_mode="multichannel", pretrained_embeddings=vectors)
    assert multi.convs[0].in_channels == 16
    multi(tokens).sum().backward()
    assert multi.static_embedding.weight.grad is None and multi.embedding.weight.grad is not None

    rand = models.text_cnn(30, embed_dim=8, num_filters=4, embedding_mode="multichannel")
    torch.testing.assert_close(rand.embedding.weight, rand.static_embedding.weight)


def test_text_cnn_bad_inputs():
    model = models.text_cnn(20, embed_dim=8, num_filters=4)
    with pytest.raises(TypeError, match="int64"):
        model(torch.rand(2, 7))
    with pytest.raises(ValueError, match="widest kernel"):
        model(torch.randint(0, 20, (2, 4)))
    with pytest.raises(ValueError, match="2-D"):
        model(torch.randint(0, 20, (7,)))
    with pytest.raises(ValueError, match="vocab_size=20"):
        model(torch.tensor([[1, 2, 3, 4, 20]]))
    with pytest.raises(ValueError, match="vocab_size"):
        models.text_cnn(0)
    with pytest.raises(ValueError, match="embedding_mode"):
        models.text_cnn(20, embedding_mode="dynamic")
    with pytest.raises(ValueError, match="pretrained_embeddings"):
        models.text_cnn(20, embed_dim=8, pretrained_embeddings=torch.zeros(20, 9))
    with pytest.raises(ValueError, match="dropout"):
        models.text_cnn(20, dropout=1.5)
    with pytest.raises(ValueError, match="padding_idx"):
        models.text_cnn(20, padding_idx=20)
    with pytest.raises(ValueError, match="kernel_sizes"):
        models.text_cnn(20, kernel_sizes=(3, 0))


# ---------------------------------------------------------------- tdnn


def _small_tdnn(**kwargs):
    kwargs.setdefault("channels", (24, 24, 24, 24, 48))
    return models.tdnn(in_features=10, num_classes=3, embedding_dim=16, **kwargs)


def test_tdnn_default_layers():
    model = models.tdnn(num_classes=7)
    convs = [block[0] for block in model.frames]
    assert [c.kernel_size[0] for c in convs] == [5, 3, 3, 1, 1]
    assert [c.dilation[0] for c in convs] == [1, 2, 3, 1, 1]
    assert [c.out_channels for c in convs] == [512, 512, 512, 512, 1500]
    assert convs[0].in_channels == 40
    assert model.receptive_field == 15 and model.context == (-7, 7)
    assert model.embedding.in_features == 3000 and model.embedding.out_features == 512
    assert model.classifier.out_features == 7
    assert assert_all_convs_fastconv(model) == 5


@pytest.mark.parametrize("frames", [15, 20, 37])
def test_tdnn_shapes_and_backward(device, frames):
    torch.manual_seed(0)
    model = _small_tdnn().to(device)
    x = torch.randn(2, 10, frames, device=device)
    assert model.frame_features(x).shape == (2, 48, frames - 14)
    assert model.embed(x).shape == (2, 16)
    out = forward_backward(model, x)
    assert out.shape == (2, 3)
    assert all(block[0].weight.grad is not None for block in model.frames)


def _changed_frames(layer, x, t):
    """The output frames of `layer` that change when input frame t is perturbed."""
    with torch.no_grad():
        base = layer(x)
        bumped = x.clone()
        bumped[:, :, t] += 1.0
        diff = (layer(bumped) - base).abs().amax(dim=(0, 1))
    return set(torch.nonzero(diff > 1e-9).flatten().tolist())


def _sum_set(contexts):
    offsets = {0}
    for context in contexts:
        offsets = {a + b for a in offsets for b in context}
    return offsets


@pytest.mark.parametrize(
    "contexts",
    [
        ((-2, -1, 0, 1, 2), (-2, 0, 2), (-3, 0, 3), (0,), (0,)),
        ((-2, 0, 2), (0,), (0,), (-4, 0, 4), (0,)),  # gaps: frames in the window that are never seen
        ((-4, -2, 0), (-1, 0), (0,), (0,), (0,)),  # causal: only past frames
    ],
)
def test_tdnn_receptive_field(contexts):
    torch.manual_seed(0)
    model = _small_tdnn(contexts=contexts).double().eval()
    lo = sum(c[0] for c in contexts)
    assert model.context == (lo, sum(c[-1] for c in contexts))
    offsets = _sum_set(contexts)
    frames = model.receptive_field + 10
    x = torch.randn(2, 10, frames, dtype=torch.float64)
    out_frames = frames - model.receptive_field + 1
    for t in (0, model.receptive_field // 2, frames - 1):
        # Output frame j is centred on input frame j - lo and sees frames j - lo + offset.
        expected = {j for j in range(out_frames) if t - (j - lo) in offsets}
        assert _changed_frames(model.frame_features, x, t) == expected, t


def test_tdnn_each_layer_sees_its_dilation_context():
    torch.manual_seed(0)
    model = _small_tdnn().double().eval()
    x = torch.randn(1, 24, 20, dtype=torch.float64)
    for index, context in [(1, (-2, 0, 2)), (2, (-3, 0, 3)), (3, (0,))]:
        t = 10
        # This layer's output j is centred on its input frame j - context[0].
        expected = {t - o + context[0] for o in context}
        assert _changed_frames(model.frames[index], x, t) == expected, index


def test_stats_pooling():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 11, dtype=torch.float64)
    pooled = StatsPooling()(x)
    torch.testing.assert_close(pooled[:, :3], x.mean(2))
    torch.testing.assert_close(pooled[:, 3:], x.std(2, unbiased=False))
    # A constant channel has zero spread; the floor keeps its gradient finite.
    flat = torch.ones(1, 2, 5, requires_grad=True)
    StatsPooling()(flat).sum().backward()
    assert torch.isfinite(flat.grad).all()


def test_tdnn_bad_inputs():
    model = _small_tdnn()
    with pytest.raises(ValueError, match="receptive field of 15"):
        model(torch.randn(2, 10, 14))
    with pytest.raises(ValueError, match="in_features=10"):
        model(torch.randn(2, 40, 20))
    with pytest.raises(ValueError, match="3-D"):
        model(torch.randn(10, 20))
    with pytest.raises(TypeError, match="floating"):
        model(torch.ones(2, 10, 20, dtype=torch.int64))
    with pytest.raises(TypeError, match="num_classes"):
        models.tdnn()
    with pytest.raises(ValueError, match="num_classes"):
        models.tdnn(num_classes=0)
    with pytest.raises(ValueError, match="evenly spaced"):
        _small_tdnn(contexts=((-2, 0, 3), (0,), (0,), (0,), (0,)))
    with pytest.raises(ValueError, match="one entry per context"):
        _small_tdnn(contexts=((-2, 0, 2),))
    with pytest.raises(TypeError, match="contexts\\[0\\]"):
        _small_tdnn(contexts=((-2.0, 0.0), (0,), (0,), (0,), (0,)))


def test_registry_names():
    names = models.list_models()
    for name in ("conv_autoencoder", "vae", "text_cnn", "tdnn"):
        assert name in names
    assert isinstance(models.get_model("text_cnn", vocab_size=10), models.TextCNN)
    assert isinstance(models.get_model("tdnn", num_classes=2), models.TDNN)
    assert isinstance(models.get_model("vae", image_size=32), models.VAE)
