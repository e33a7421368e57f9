"""Decoding after a prefix of different length per row: latent reasoning steps or explicit text.

LASAR decodes an item after k continuous reasoning steps (the decoder's last hidden state plus a
learned step embedding, fed back as the next input; no token sampled), with k chosen per user; its
explicit-CoT variant decodes after generated text. A batch mixes lengths by *left padding*: a row
with a prefix of length n among rows of length P starts with P - n padding positions that nothing
attends to (:meth:`~recbole_ext.generation.t5_decoder.T5CachedDecoder.step_embeds` with ``real``),
so every row's bos sits at its own offset and all rows reach the item tokens at the same step.
With T5's relative position bias the padded decoding equals the unpadded one (only distances
between real positions enter).

:class:`PrefixedDecoder` wraps a cached decoder so that the first ``step`` consumes the prefix
and returns the logits of the first item token: the unchanged beam search
(:func:`~recbole_ext.generation.beam_search.beam_search`) and rollout sampling
(:func:`~recbole_ext.generation.sampling.sample_sequences`) then run after any prefix.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from recbole_ext.generation.t5_decoder import T5CachedDecoder


def left_pad_starts(lengths: Tensor) -> tuple[int, Tensor]:
    """Prefix lengths [B] -> (P = longest, start [B] = the first real position P - length)."""
    width = int(lengths.max()) if lengths.numel() else 0
    return width, width - lengths


def latent_prefix_steps(dec: T5CachedDecoder, bos_embed: Tensor, step_embed: Tensor, depth: Tensor,
                        log_probs: bool = True) -> tuple[Tensor, Tensor]:
    """Feed ``[pad x (K - k_b), bos, z_1 .. z_k_b]`` row by row, z_j = h_{j-1} + step_embed[j-1]
    (h_{j-1} the decoder output at the previous position, after the final norm).

    bos_embed [D]; step_embed [K_max, D]; depth [B] (k_b <= K_max; B = the decoder's rows, k = 1).
    Returns (the logits or log-probs [B, 1, V] after the last prefix position, the latent outputs
    [B, K, D] by step: row b's step j (1-based) at column K - k_b + j - 1, i.e. right-aligned)."""
    b, device = depth.shape[0], depth.device
    width, start = left_pad_starts(depth)  # K, [B]
    bos = bos_embed.view(1, 1, -1).expand(b, 1, -1)
    out = dec.step_embeds(bos, real=(start == 0)[:, None], log_probs=log_probs)  # position 0
    states = []
    for t in range(1, width + 1):
        j = (t - start - 1).clamp(min=0, max=max(0, step_embed.shape[0] - 1))  # [B] latent step index (0-based)
        z = dec.last_hidden + step_embed[j][:, None, :]  # [B, 1, D]
        is_latent = (t > start)[:, None, None]
        inp = torch.where(is_latent, z, bos)  # rows at their bos (t == start) or still padding take bos
        out = dec.step_embeds(inp, real=(t >= start)[:, None], log_probs=log_probs)
        states.append(dec.last_hidden[:, 0])
    latent = torch.stack(states, dim=1) if states else bos_embed.new_zeros(b, 0, bos_embed.shape[-1])
    return out, latent.to(device)


def token_prefix_steps(dec: T5CachedDecoder, embed: Callable[[Tensor], Tensor], tokens: Tensor, real: Tensor,
                       log_probs: bool = True) -> Tensor:
    """Feed a left-padded token prefix [B, P] (bos included; ``real`` [B, P] False on padding) ->
    the logits or log-probs [B, 1, V] after its last position."""
    out = None
    for t in range(tokens.shape[1]):
        out = dec.step_embeds(embed(tokens[:, t : t + 1]), real=real[:, t : t + 1], log_probs=log_probs)
    return out


class PrefixedDecoder:
    """A step decoder whose first ``step`` runs ``first`` (which feeds the prefix to ``dec`` and
    returns the next logits); later steps and ``reorder`` go to ``dec`` unchanged."""

    def __init__(self, dec: T5CachedDecoder, first: Callable[[bool], Tensor]):
        self.dec, self.first, self.started = dec, first, False

    @property
    def last_hidden(self) -> Tensor | None:
        return self.dec.last_hidden

    def step(self, tokens: Tensor, log_probs: bool = True) -> Tensor:
        if not self.started:  # ``tokens`` is the caller's bos: the prefix replaces it
            self.started = True
            out = self.first(log_probs)
            k = tokens.shape[1]
            if k != 1:  # several rollouts per row start from one prefix
                self.dec.reorder(torch.zeros(tokens.shape[0], k, dtype=torch.long, device=tokens.device))
                out = out.expand(-1, k, -1)
            return out
        return self.dec.step(tokens, log_probs)

    def reorder(self, parent: Tensor) -> None:
        self.dec.reorder(parent)
