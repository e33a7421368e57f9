"""Incremental T5 decoder for beam search that shares each user's cross-attention across beams.

``transformers``' generate copies the encoder output once per beam and recomputes the
cross-attention keys/values for every copy. Here the keys/values are computed once per user
([B, H, L, d_kv] per layer) and all of a user's beams attend to them as one batched query
([B, H, K, d_kv]); only the small self-attention cache is per beam. The math follows T5 exactly
(RMS layer norms, unscaled dot-product attention, relative position bias in decoder
self-attention, none in cross-attention, optional output rescaling) in inference mode (no
dropout). It reads the weights of a ``T5ForConditionalGeneration`` by attribute; importing it does
not import transformers (the output rescaling rule, which differs between transformers 4.x and 5.x,
comes from :func:`recbole_ext.modules.t5_backbone.decoder_output_scale` when a decoder is built).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _rms_norm(layer_norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    var = x.float().pow(2).mean(-1, keepdim=True)
    return layer_norm.weight * (x * torch.rsqrt(var + layer_norm.variance_epsilon)).to(x.dtype)


def _ffn(ff: nn.Module, x: torch.Tensor) -> torch.Tensor:
    dense = ff.DenseReluDense
    if hasattr(dense, "wi_0"):  # gated activation
        h = dense.act(dense.wi_0(x)) * dense.wi_1(x)
    elif isinstance(dense.act, nn.ReLU):
        h = dense.wi(x).relu_()  # in place: saves a [B, k, d_ff] allocation
    else:
        h = dense.act(dense.wi(x))
    return dense.wo(h.to(dense.wo.weight.dtype))


def encode(
    model: nn.Module,
    input_ids: torch.Tensor,  # [B, L]
    attention_mask: torch.Tensor,  # [B, L], 1 = token; each row's tokens contiguous
    n_buckets: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder output [B, L', D] and its mask [B, L'], computed in length buckets.

    Users are sorted by history length and encoded in ``n_buckets`` groups, each trimmed to its
    longest history, so padding costs nothing; each row's tokens are moved to the front (T5's
    relative positions make this exact when a row's tokens are contiguous, as with RecBole's
    right-padded sequences; cross-attention has no positions). L' is the longest history. One
    host synchronisation per call (the lengths), none per decoding step.
    """
    b, _l = input_ids.shape
    if n_buckets <= 1:
        return model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state, attention_mask
    mask = attention_mask.bool()
    front = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # [B, L] token positions first
    ids = input_ids.gather(1, front)
    mask = mask.gather(1, front)
    lengths = mask.sum(1)  # [B]
    order = torch.argsort(lengths)
    lens_host = lengths[order].tolist()  # the one host sync
    l_max = max(1, lens_host[-1])
    out = None
    for chunk in torch.arange(b, device=input_ids.device).chunk(n_buckets):
        rows = order[chunk]
        lg = max(1, lens_host[int(chunk[-1])])
        h = model.encoder(input_ids=ids[rows, :lg], attention_mask=mask[rows, :lg].long()).last_hidden_state
        if out is None:
            out = h.new_zeros(b, l_max, h.shape[-1])  # [B, L', D]
        out[rows, :lg] = h
    return out, mask[:, :l_max].long()


class T5CachedDecoder:
    """Step-wise decoder state for B users x k beams (k may grow after the first step).

    Usage: ``dec = T5CachedDecoder(model, enc_out, enc_mask, max_steps)``; then per step
    ``log_probs = dec.step(tokens)`` (tokens [B, k]) and ``dec.reorder(parent)`` (parent [B, K]
    indexes the current k beams) after choosing the next beams.
    """

    def __init__(
        self,
        model: nn.Module,
        encoder_out: torch.Tensor,  # [B, L, D]
        encoder_mask: torch.Tensor | None,  # [B, L] (1 = token, 0 = pad)
        max_steps: int,
    ):
        self.model = model
        dec = model.decoder
        self.blocks = list(dec.block)
        attn0 = self.blocks[0].layer[0].SelfAttention
        self.n_heads, self.d_kv = attn0.n_heads, attn0.key_value_proj_dim
        from recbole_ext.modules.t5_backbone import decoder_output_scale  # transformers: model is its T5

        self.scale_out = decoder_output_scale(model.config)
        b, l, _ = encoder_out.shape
        self.batch = b
        dtype = encoder_out.dtype
        if encoder_mask is None:
            encoder_mask = torch.ones(b, l, device=encoder_out.device)
        # additive cross-attention mask [B, 1, 1, L]
        self.enc_bias = ((1.0 - encoder_mask.to(dtype)) * torch.finfo(dtype).min)[:, None, None, :]
        # cross-attention keys / values once per user: per layer [B, H, L, d_kv]
        self.cross_kv = []
        for blk in self.blocks:
            ca = blk.layer[1].EncDecAttention
            k = ca.k(encoder_out).view(b, l, self.n_heads, self.d_kv).transpose(1, 2)
            v = ca.v(encoder_out).view(b, l, self.n_heads, self.d_kv).transpose(1, 2)
            self.cross_kv.append((k, v))
        # fused self-attention q/k/v weights per layer: [3 * H * d_kv, D]
        self.qkv_weight = [
            torch.cat([b.layer[0].SelfAttention.q.weight, b.layer[0].SelfAttention.k.weight,
                       b.layer[0].SelfAttention.v.weight]) for b in self.blocks
        ]
        # self-attention relative position bias for all steps: [1, H, T, T]
        self.pos_bias = attn0.compute_bias(max_steps, max_steps, device=encoder_out.device).to(dtype)
        self.self_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # [B*k, H, t, d_kv]
        self.t = 0
        self.k = 1
        self.last_hidden: torch.Tensor | None = None  # [B, k, D] after the last step
        #: additive self-attention key mask [B*k, 1, 1, t] once a padding position was fed (None before)
        self.key_bias: torch.Tensor | None = None

    def step(self, tokens: torch.Tensor, log_probs: bool = True) -> torch.Tensor:
        """Feed tokens [B, k] at position t; return log-probabilities [B, k, V] for position t+1
        (``log_probs=False``: the raw logits, float32, for callers that need a few of them)."""
        return self.step_embeds(self.model.decoder.embed_tokens(tokens), log_probs=log_probs)

    def step_embeds(self, h: torch.Tensor, real: torch.Tensor | None = None, log_probs: bool = True) -> torch.Tensor:
        """Feed input embeddings [B, k, D] at position t (a token's embedding, or a continuous state
        such as a latent reasoning step); as :meth:`step` otherwise.

        ``real`` [B, k] (bool): False marks a padding position that no position attends to, for rows
        whose prefixes differ in length: left-padded, a row's real positions keep their relative
        distances, so with T5's relative position bias its outputs equal an unpadded decoding."""
        b, k, _ = h.shape
        if self.self_kv is not None and k != self.k:
            raise ValueError(f"step got {k} beams, cache holds {self.k}")
        self.k = k
        t = self.t
        bias = self.pos_bias[:, :, t : t + 1, : t + 1]  # [1, H, 1, t+1]
        if real is not None or self.key_bias is not None:
            col = torch.zeros(b * k, 1, 1, 1, dtype=bias.dtype, device=h.device)
            if real is not None:
                col = col.masked_fill(~real.reshape(b * k, 1, 1, 1), torch.finfo(bias.dtype).min)
            if self.key_bias is None:
                self.key_bias = col.new_zeros(b * k, 1, 1, t)
            self.key_bias = torch.cat([self.key_bias, col], dim=-1)  # [Bk, 1, 1, t+1]
            bias = bias + self.key_bias  # [Bk, H, 1, t+1]
        new_cache = []
        for i, blk in enumerate(self.blocks):
            sa = blk.layer[0].SelfAttention
            x = _rms_norm(blk.layer[0].layer_norm, h).reshape(b * k, -1)  # [Bk, D]
            qkv = F.linear(x, self.qkv_weight[i]).view(b * k, 3, self.n_heads, 1, self.d_kv)
            q, kk, vv = qkv.unbind(1)  # each [Bk, H, 1, dk]
            if self.self_kv is not None:
                kk = torch.cat([self.self_kv[i][0], kk], dim=2)  # [Bk, H, t+1, dk]
                vv = torch.cat([self.self_kv[i][1], vv], dim=2)
            new_cache.append((kk, vv))
            a = F.scaled_dot_product_attention(q, kk, vv, attn_mask=bias, scale=1.0)  # [Bk, H, 1, dk]
            h = h + sa.o(a.transpose(1, 2).reshape(b, k, -1))

            ca = blk.layer[1].EncDecAttention
            x = _rms_norm(blk.layer[1].layer_norm, h)  # [B, k, D]
            q = ca.q(x).view(b, k, self.n_heads, self.d_kv).transpose(1, 2)  # [B, H, k, dk]
            ck, cv = self.cross_kv[i]  # [B, H, L, dk], shared by the k beams
            a = F.scaled_dot_product_attention(q, ck, cv, attn_mask=self.enc_bias, scale=1.0)  # [B, H, k, dk]
            h = h + ca.o(a.transpose(1, 2).reshape(b, k, -1))

            ff = blk.layer[2]
            h = h + _ffn(ff, _rms_norm(ff.layer_norm, h))
        self.self_kv = new_cache
        self.t = t + 1
        h = _rms_norm(self.model.decoder.final_layer_norm, h)
        self.last_hidden = h  # [B, k, D] decoder output state (e.g. STREAM-Rec's d_i)
        if self.scale_out is not None:
            h = h * self.scale_out
        logits = self.model.lm_head(h)  # [B, k, V]
        return torch.log_softmax(logits.float(), dim=-1) if log_probs else logits.float()

    def reorder(self, parent: torch.Tensor) -> None:
        """Keep beams ``parent`` [B, K] (indices into the current k beams); K may differ from k."""
        b, kn = parent.shape
        flat = (parent + torch.arange(b, device=parent.device)[:, None] * self.k).reshape(-1)  # [B*K]
        if self.self_kv is not None:
            self.self_kv = [(kk.index_select(0, flat), vv.index_select(0, flat)) for kk, vv in self.self_kv]
        if self.last_hidden is not None:
            self.last_hidden = self.last_hidden.reshape(b * self.k, -1).index_select(0, flat).view(b, kn, -1)
        if self.key_bias is not None:
            self.key_bias = self.key_bias.index_select(0, flat)
        self.k = kn
