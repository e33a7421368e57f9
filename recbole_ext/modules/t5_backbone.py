"""T5 encoder-decoder backbone built from a config (no download). The one place that imports
transformers' T5 model code; import this module lazily from models."""

from __future__ import annotations

import transformers
from transformers import T5Config, T5ForConditionalGeneration

from recbole_ext.sid.vocab import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN


def t5_config(
    vocab_size: int,
    num_layers: int = 4,
    num_decoder_layers: int = 4,
    d_model: int = 256,
    d_ff: int = 1024,
    num_heads: int = 4,
    d_kv: int = 64,
    dropout: float = 0.1,
    feed_forward_proj: str = "relu",
    pad_token_id: int = PAD_TOKEN,
    eos_token_id: int = EOS_TOKEN,
    decoder_start_token_id: int = BOS_TOKEN,
    **extra,
) -> T5Config:
    """A T5Config for a model trained from scratch on the SIDVocab layout (defaults: TIGER size)."""
    return T5Config(
        vocab_size=vocab_size,
        num_layers=num_layers,
        num_decoder_layers=num_decoder_layers,
        d_model=d_model,
        d_ff=d_ff,
        num_heads=num_heads,
        d_kv=d_kv,
        dropout_rate=dropout,
        feed_forward_proj=feed_forward_proj,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        decoder_start_token_id=decoder_start_token_id,
        use_cache=True,
        **extra,
    )


def decoder_output_scale(config, transformers_major: int | None = None) -> float | None:
    """The factor (``d_model ** -0.5``) by which ``T5ForConditionalGeneration`` multiplies the
    decoder output before ``lm_head``, or None where it does not rescale.

    The rule is that of the transformers release that runs the model (``transformers_major``: the
    installed one unless given):

    * 4.x rescales when ``config.tie_word_embeddings`` (PretrainedConfig's default: True);
    * 5.x rescales when ``config.scale_decoder_outputs``: T5Config derives it from the
      ``tie_word_embeddings`` it was given (not False: rescale; 5.0.0 ignores the argument and always
      rescales), then forces ``tie_word_embeddings`` to True (``lm_head`` is always tied). A config
      without the attribute is read as T5Config would derive it.
    """
    major = int(transformers.__version__.split(".")[0]) if transformers_major is None else transformers_major
    tied = getattr(config, "tie_word_embeddings", True)
    scales = getattr(config, "scale_decoder_outputs", tied is not False) if major >= 5 else tied
    return config.d_model**-0.5 if scales else None


def build_t5(vocab_size: int, **kwargs) -> T5ForConditionalGeneration:
    """Randomly initialised T5ForConditionalGeneration; kwargs as in :func:`t5_config`."""
    return T5ForConditionalGeneration(t5_config(vocab_size, **kwargs))


def build_t5_decoder(model: T5ForConditionalGeneration):
    """A fresh (randomly initialised) decoder stack shaped like ``model.decoder`` whose input
    embeddings are ``model.shared`` (tied), e.g. STREAM-Rec's one-step "direct" decoder that
    shares the encoder, the embeddings and the output layer of ``model``."""
    import copy

    from transformers.models.t5.modeling_t5 import T5Stack

    decoder = T5Stack(copy.deepcopy(model.decoder.config))
    decoder.embed_tokens = model.shared
    return decoder
