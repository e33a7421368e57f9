"""RQ-VAE: shapes, exact loss terms on a hand-set case, gradients, training stats."""

import pytest
import torch

from recbole_ext.sid.rqvae import RQVAE, RQVAEConfig, codebook_usage, train_rqvae


def _hand_model() -> RQVAE:
    cfg = RQVAEConfig(hidden_dims=(), latent_dim=2, n_levels=2, codebook_size=2, beta=0.25)
    model = RQVAE(2, cfg)
    with torch.no_grad():
        for lin in (model.encoder[0], model.decoder[0]):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
        model.codebooks[0].copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        model.codebooks[1].copy_(torch.tensor([[0.5, 0.0], [0.0, -0.5]]))
    return model


def test_hand_set_losses_and_codes():
    torch.set_num_threads(1)
    model = _hand_model()
    x = torch.tensor([[1.2, 0.1], [0.1, 0.4]])
    out = model(x)
    # level 0: (1,0) and (0,1); residuals (0.2,0.1), (0.1,-0.6) -> level 1: (0.5,0), (0,-0.5)
    assert out.codes.tolist() == [[0, 0], [1, 1]]
    assert torch.allclose(out.x_hat, torch.tensor([[1.5, 0.0], [0.0, 0.5]]))
    assert out.recon_loss.item() == pytest.approx(0.03)
    assert out.codebook_loss.item() == pytest.approx(0.105 + 0.03)
    assert out.commit_loss.item() == pytest.approx(0.135)
    assert out.loss.item() == pytest.approx(0.03 + 0.135 + 0.25 * 0.135)


def test_gradients_codebook_vs_commitment():
    model = _hand_model()
    x = torch.tensor([[1.2, 0.1], [0.1, 0.4]])
    model(x).loss.backward()
    # codebooks learn only from the codebook term: d/de mean((e - r)^2) = 2 (e - r) / 4
    assert torch.allclose(model.codebooks[0].grad, torch.tensor([[-0.1, -0.05], [-0.05, 0.3]]))
    # straight-through: the decoder's input gradient reaches the encoder
    assert model.encoder[0].weight.grad.abs().sum() > 0


def test_shapes_default_sizes():
    model = RQVAE(48, RQVAEConfig(hidden_dims=(40, 24), latent_dim=8, n_levels=3, codebook_size=16))
    out = model(torch.randn(10, 48))
    assert out.codes.shape == (10, 3) and out.codes.dtype == torch.long
    assert out.x_hat.shape == (10, 48)
    assert int(out.codes.max()) < 16 and int(out.codes.min()) >= 0
    assert [m.out_features for m in model.encoder if isinstance(m, torch.nn.Linear)] == [40, 24, 8]
    assert [m.out_features for m in model.decoder if isinstance(m, torch.nn.Linear)] == [24, 40, 48]


def test_codebook_usage():
    codes = torch.tensor([[0, 1], [0, 2], [3, 1]])
    assert codebook_usage(codes, 4) == [0.5, 0.5]


def test_train_rqvae_stats_and_determinism():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(300, 16, generator=g).numpy()
    cfg = dict(hidden_dims=(32,), latent_dim=4, n_levels=3, codebook_size=8, epochs=4, batch_size=128, log_every=0)
    res = train_rqvae(emb, cfg)
    assert res.codes.shape == (300, 3)
    n_distinct = len(torch.unique(res.codes, dim=0))
    assert res.stats["collision_rate"] == pytest.approx(1 - n_distinct / 300)
    assert res.stats["codebook_usage"] == codebook_usage(res.codes, 8)
    # k-means init on 128 points x 8 centroids uses most codewords
    assert min(res.stats["codebook_usage"]) >= 0.5
    assert res.stats["recon_mse"] > 0
    again = train_rqvae(emb, cfg)
    assert torch.equal(res.codes, again.codes)


def test_train_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        train_rqvae(torch.full((4, 3), float("nan")).numpy(), dict(epochs=1))
    with pytest.raises(ValueError, match="unknown RQ-VAE options"):
        train_rqvae(torch.zeros(4, 3).numpy(), dict(epoch=1))


def test_standardize_sets_buffers_and_hand_case_ignores_them():
    model = _hand_model()
    x = torch.tensor([[1.2, 0.1], [0.1, 0.4]])
    with torch.no_grad():
        model.x_mean.copy_(torch.tensor([1.0, 1.0]))
        model.x_scale.copy_(torch.tensor([2.0, 2.0]))
    out = model(x)  # encoder sees (x - 1) / 2 = [[0.1, -0.45], [-0.45, -0.3]]
    # level 0: (0.1,-0.45) -> (1,0) (d=.81+.2025 < .01+2.1025); (-0.45,-0.3) -> (0,1) (.2025+1.69 < 2.1025+.09)
    assert out.codes[:, 0].tolist() == [0, 1]
    xn_hat = (out.x_hat - 1.0) / 2.0  # x_hat comes back in raw units
    xn = (x - 1.0) / 2.0
    assert out.recon_loss.item() == pytest.approx(((xn_hat - xn) ** 2).mean().item())
    res = train_rqvae(x.repeat(5, 1).numpy() + torch.arange(10.0)[:, None].numpy(), dict(
        hidden_dims=(), latent_dim=2, n_levels=1, codebook_size=2, epochs=1, log_every=0))
    assert torch.allclose(res.model.x_mean, torch.tensor([5.15, 4.75]))


def test_reset_dead_codes_reseeds_only_unused():
    model = _hand_model()
    x = torch.tensor([[1.2, 0.1], [0.1, 0.4]])
    before = [b.detach().clone() for b in model.codebooks]
    counts = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # level 0 codeword 1 unused
    n = model.reset_dead_codes(x, counts, torch.Generator().manual_seed(0))
    assert n == 1
    assert torch.equal(model.codebooks[0][0], before[0][0])
    assert torch.equal(model.codebooks[1], before[1])
    assert any(torch.allclose(model.codebooks[0][1], r) for r in x)  # level-0 residual = encoder(x) = x
