"""Decoding after per-row prefixes of different length (LASAR's latent steps, explicit CoT text):
left padding must equal unpadded decoding, in the cached decoder and in transformers' T5."""

import pytest
import torch

from recbole_ext.generation.latent import PrefixedDecoder, latent_prefix_steps, left_pad_starts, token_prefix_steps
from recbole_ext.generation.t5_decoder import T5CachedDecoder


@pytest.fixture(scope="module")
def t5():
    torch.set_num_threads(1)
    from recbole_ext.modules.t5_backbone import build_t5

    torch.manual_seed(0)
    model = build_t5(30, num_layers=1, num_decoder_layers=2, d_model=16, d_ff=32, num_heads=2, d_kv=8)
    model.eval()
    ids = torch.randint(3, 30, (3, 5))
    mask = torch.ones(3, 5, dtype=torch.long)
    mask[1, 3:] = 0
    with torch.no_grad():
        enc = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return model, enc, mask


def _latent_alone(model, enc, mask, row, depth, step):
    """Logits after ``depth`` latent steps for one row, unpadded, by hand: z_j = h_{j-1} + e_j."""
    dec = T5CachedDecoder(model, enc[row : row + 1], mask[row : row + 1], depth + 2)
    out = dec.step(torch.full((1, 1), 2), log_probs=False)
    for j in range(depth):
        out = dec.step_embeds(dec.last_hidden + step[j], log_probs=False)
    return out[0, 0]


def test_left_pad_starts():
    width, start = left_pad_starts(torch.tensor([2, 0, 3]))
    assert width == 3 and start.tolist() == [1, 3, 0]


def test_latent_prefix_with_mixed_depths_equals_each_row_alone(t5):
    model, enc, mask = t5
    step = torch.randn(4, 16)
    depth = torch.tensor([2, 0, 3])
    with torch.no_grad():
        dec = T5CachedDecoder(model, enc, mask, 3 + 2)
        out, latent = latent_prefix_steps(dec, model.shared.weight[2], step, depth, log_probs=False)
        for row, k in enumerate(depth.tolist()):
            torch.testing.assert_close(out[row, 0], _latent_alone(model, enc, mask, row, k, step), atol=1e-5, rtol=1e-5)
    assert latent.shape == (3, 3, 16)  # right-aligned latent outputs: row 2 has 3, row 0 two (columns 1, 2)


def test_zero_depth_is_plain_decoding(t5):
    model, enc, mask = t5
    with torch.no_grad():
        plain = T5CachedDecoder(model, enc, mask, 2).step(torch.full((3, 1), 2))
        dec = T5CachedDecoder(model, enc, mask, 2)
        out, latent = latent_prefix_steps(dec, model.shared.weight[2], torch.randn(2, 16), torch.zeros(3, dtype=torch.long))
    assert torch.equal(out, plain) and latent.shape == (3, 0, 16)


def test_token_prefix_left_padded_matches_hf_unpadded(t5):
    model, enc, mask = t5
    # row 0: bos 5 6 7 ; row 1: bos 8 ; row 2: bos   (left padded to width 4)
    tokens = torch.tensor([[2, 5, 6, 7], [0, 0, 2, 8], [0, 0, 0, 2]])
    real = tokens != 0
    with torch.no_grad():
        dec = T5CachedDecoder(model, enc, mask, 6)
        pre = PrefixedDecoder(dec, lambda lp: token_prefix_steps(dec, model.shared, tokens, real, lp))
        first = pre.step(torch.full((3, 1), 2))  # the prefix replaces bos
        second = pre.step(torch.tensor([[9], [9], [9]]))
        for row, seq in enumerate([[2, 5, 6, 7, 9], [2, 8, 9], [2, 9]]):
            ref = model(input_ids=None, encoder_outputs=(enc[row : row + 1],), attention_mask=mask[row : row + 1],
                        decoder_input_ids=torch.tensor([seq])).logits.log_softmax(-1)[0]
            torch.testing.assert_close(first[row, 0], ref[-2], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(second[row, 0], ref[-1], atol=1e-5, rtol=1e-5)


def test_hf_decoder_left_padding_matches_unpadded(t5):
    """The training path: transformers' T5 decoder with a self-attention mask over left padding."""
    model, enc, mask = t5
    emb = torch.randn(1, 3, 16)
    with torch.no_grad():
        alone = model.decoder(inputs_embeds=emb, encoder_hidden_states=enc[:1], encoder_attention_mask=mask[:1]
                              ).last_hidden_state
        padded = torch.cat([torch.zeros(1, 2, 16), emb], dim=1)
        self_mask = torch.tensor([[0, 0, 1, 1, 1]])
        out = model.decoder(inputs_embeds=padded, attention_mask=self_mask, encoder_hidden_states=enc[:1],
                            encoder_attention_mask=mask[:1]).last_hidden_state
    torch.testing.assert_close(out[:, 2:], alone, atol=1e-5, rtol=1e-5)


def test_prefixed_decoder_forks_rollouts(t5):
    model, enc, mask = t5
    with torch.no_grad():
        dec = T5CachedDecoder(model, enc, mask, 4)
        pre = PrefixedDecoder(dec, lambda lp: latent_prefix_steps(dec, model.shared.weight[2], torch.zeros(1, 16),
                                                                  torch.ones(3, dtype=torch.long), lp)[0])
        out = pre.step(torch.full((3, 4), 2))  # 4 rollouts per row share the prefix
        nxt = pre.step(torch.randint(3, 30, (3, 4)))
    assert out.shape == (3, 4, 30) and torch.equal(out[:, 0], out[:, 3]) and nxt.shape == (3, 4, 30)
