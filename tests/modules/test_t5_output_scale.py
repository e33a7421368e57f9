"""decoder_output_scale: T5's rescaling of the decoder output before lm_head, transformers 4.x and 5.x."""

from types import SimpleNamespace

import pytest
import torch

from recbole_ext.modules.t5_backbone import build_t5, decoder_output_scale

QUARTER = 0.25  # 16 ** -0.5: every config here has d_model = 16


def _config(**attrs):
    return SimpleNamespace(d_model=16, **attrs)


@pytest.mark.parametrize(
    "config, under_4, under_5",
    [
        # 5.x-shaped (T5Config of 5.x: tie_word_embeddings forced True, the flag carries the choice)
        (_config(tie_word_embeddings=True, scale_decoder_outputs=True), QUARTER, QUARTER),
        (_config(tie_word_embeddings=True, scale_decoder_outputs=False), QUARTER, None),  # 4.x ignores the flag
        # 4.x-shaped (no scale_decoder_outputs): tie_word_embeddings decides under both
        (_config(tie_word_embeddings=True), QUARTER, QUARTER),
        (_config(tie_word_embeddings=False), None, None),
        (_config(), QUARTER, QUARTER),  # PretrainedConfig's default is tie_word_embeddings=True
    ],
)
def test_rule_of_each_major_version(config, under_4, under_5):
    assert decoder_output_scale(config, transformers_major=4) == under_4
    assert decoder_output_scale(config, transformers_major=5) == under_5


@pytest.mark.parametrize("extra", [{}, {"tie_word_embeddings": False}])
def test_rule_matches_installed_t5_forward(extra):
    """The installed transformers' own logits are lm_head(decoder output * scale)."""
    torch.manual_seed(0)
    model = build_t5(20, num_layers=1, num_decoder_layers=1, d_model=16, d_ff=24, num_heads=2, d_kv=8, **extra).eval()
    scale = decoder_output_scale(model.config)
    if not extra:  # tie_word_embeddings=False means no rescaling under 4.x and >= 5.1, but 5.0.0's T5Config drops it
        assert scale == QUARTER
    ids = torch.randint(3, 20, (2, 5))
    dec_in = torch.tensor([[2, 7, 9], [2, 4, 3]])
    with torch.no_grad():
        out = model(input_ids=ids, decoder_input_ids=dec_in, output_hidden_states=True)
        hidden = out.decoder_hidden_states[-1]  # [B, T, D] after the final layer norm
        expected = model.lm_head(hidden if scale is None else hidden * scale)
    assert torch.allclose(out.logits, expected, atol=1e-6)
    if scale is not None:  # the scaling is not a no-op here
        assert not torch.allclose(out.logits, model.lm_head(hidden), atol=1e-3)
