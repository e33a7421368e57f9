"""STREAM-Rec's iterative-inference labeller (arXiv 2504.09627, section 2.3.1, Eq. 12-13).

Independent of T5: the decoder is reached only through a ``step`` callable. For one batch::

    s_0 = d_0                                   (decoder state before any reasoning token)
    for i = 1..l:
        r_i = ResidualMLP(t - s_{i-1})          (t: mean of the target's token embeddings)
        o_i = argmin_{c in C} ||e_c - r_i||_2   (Eq. 12; C = the allowed reasoning tokens)
        d_i = step([o_1..o_i])                  (decoder hidden state after appending o_i)
        s_i = StateMLP(Σ_{j=0..i} d_j)
    Y = [o_1..o_l ; target codes]               (Eq. 13)

Choices (the paper leaves them open):

* Quantisation is nearest-neighbour by Euclidean (L2) distance, computed as
  ``||e||^2 - 2 e·r`` (the ``||r||^2`` term is constant per row); ties go to the lowest
  allowed position (``torch.argmin``).
* Both MLPs are ``Linear(H, H') -> GELU -> Linear(H', H)`` with H' = H by default; with
  ``init="identity"`` they are ``x + MLP(x)`` with the last layer zero at initialisation, so the
  first labels are the nearest tokens to ``t - d_0`` rather than to a random projection. ``s_0`` is
  d_0 itself (not passed through the state MLP), as the paper writes; ``s_i`` for i >= 1 goes
  through it, its input being the running sum of d_0..d_i.
* ``step`` is called l times (the last call only yields s_l, which Eq. 14 uses).
* The forward value appended to the decoder is the chosen token's embedding; with
  :func:`straight_through` its gradient goes to the residual (so downstream losses train the
  residual MLP). ``quantized_st`` is returned for callers that feed embeddings, not ids.

For SFT the same MLPs are applied to the hidden states of one teacher-forced decoder pass over
``[o_1..o_l; target]`` with :meth:`IterativeInferenceLabeller.teacher_forced` (no loop).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "straight_through",
    "nearest_tokens",
    "ResidualMLP",
    "LabellerOutput",
    "IterativeInferenceLabeller",
]


def straight_through(residual: Tensor, quantized: Tensor) -> Tensor:
    """Forward value ``quantized``, gradient to ``residual`` (Bengio et al., 2013):
    ``r + sg[q - r]``."""
    return residual + (quantized - residual).detach()


@torch.no_grad()
def nearest_tokens(
    vectors: Tensor, table: Tensor, allowed_ids: Optional[Tensor] = None
) -> Tensor:
    """Eq. 12: id of the table row nearest (L2) to each vector.

    Args:
        vectors: ``[*, H]``.
        table: ``[V, H]`` token embedding table (the decoder's shared embeddings).
        allowed_ids: ``[V']`` long ids of the rows that may be chosen (e.g. the code tokens,
            without pad/eos/bos); None = all rows.

    Returns:
        ``[*]`` long ids into the full table (not positions in ``allowed_ids``).
    """
    cand = table if allowed_ids is None else table.index_select(0, allowed_ids)  # [V', H]
    flat = vectors.reshape(-1, vectors.size(-1)).to(cand.dtype)  # [N, H]
    # ||e - r||^2 = ||e||^2 - 2 e.r + ||r||^2; the last term does not change the argmin
    dist = cand.pow(2).sum(-1).unsqueeze(0) - 2.0 * flat @ cand.t()  # [N, V']
    pos = dist.argmin(dim=-1)  # [N]
    ids = pos if allowed_ids is None else allowed_ids[pos]
    return ids.reshape(vectors.shape[:-1])


class ResidualMLP(nn.Module):
    """``Linear(H, H') -> GELU -> Dropout -> Linear(H', H)``: both the residual MLP and the state
    update MLP of section 2.3.1 (separate instances).

    ``skip=True`` computes ``x + MLP(x)`` with the last layer zero at initialisation, so the module
    starts as the identity (not in the paper: an untrained plain MLP is a random projection, and the
    first labels would be nearest tokens to that projection).
    """

    def __init__(self, hidden_size: int, inner_size: Optional[int] = None, dropout: float = 0.0,
                 skip: bool = False):
        super().__init__()
        inner = inner_size or hidden_size
        self.net = nn.Sequential(
            nn.Linear(hidden_size, inner),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(inner, hidden_size),
        )
        self.skip = skip
        if skip:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor) -> Tensor:  # [*, H] -> [*, H]
        return x + self.net(x) if self.skip else self.net(x)


@dataclass
class LabellerOutput:
    """Result of the labeller. ``l = 0`` gives ``[B, 0]`` / ``[B, 0, H]`` tensors."""

    tokens: Tensor  # [B, l] long, ids into the full embedding table
    residuals: Tensor  # [B, l, H] r_1..r_l
    states: Tensor  # [B, l, H] s_1..s_l
    quantized: Tensor  # [B, l, H] e_{o_1}..e_{o_l} (table rows, graph to the table)
    quantized_st: Tensor  # [B, l, H] straight-through: value e_o, gradient to r


StepFn = Callable[..., Tensor]


class IterativeInferenceLabeller(nn.Module):
    """Residual MLP + state-update MLP + nearest-token quantisation of Eq. 12-13.

    Args:
        hidden_size: H (decoder hidden size = token embedding size).
        inner_size: H' of both MLPs (default H).
        dropout: inside both MLPs.
        residual_mlp, state_mlp: replace the default :class:`ResidualMLP` s (any ``[*, H] ->
            [*, H]`` module, e.g. ``nn.Identity()`` in tests).
        init: ``"random"`` (plain MLPs, randomly initialised) or ``"identity"`` (skip MLPs that
            start as the identity, see :class:`ResidualMLP`).
    """

    INITS = ("random", "identity")

    def __init__(
        self,
        hidden_size: int,
        inner_size: Optional[int] = None,
        dropout: float = 0.0,
        residual_mlp: Optional[nn.Module] = None,
        state_mlp: Optional[nn.Module] = None,
        init: str = "random",
    ):
        super().__init__()
        if init not in self.INITS:
            raise ValueError(f"labeller init must be one of {self.INITS}, got {init!r}")
        self.hidden_size = hidden_size
        skip = init == "identity"
        self.residual_mlp = residual_mlp if residual_mlp is not None else ResidualMLP(
            hidden_size, inner_size, dropout, skip=skip)
        self.state_mlp = state_mlp if state_mlp is not None else ResidualMLP(
            hidden_size, inner_size, dropout, skip=skip)

    def forward(
        self,
        target: Tensor,
        d0: Tensor,
        table: Tensor,
        step: StepFn,
        num_steps: int,
        allowed_ids: Optional[Tensor] = None,
        pass_embeddings: bool = False,
    ) -> LabellerOutput:
        """Run l steps of iterative inference.

        Args:
            target: ``[B, H]`` t, mean of the target item's token embeddings.
            d0: ``[B, H]`` decoder hidden state before any reasoning token (output at the
                decoder-start position).
            table: ``[V, H]`` the shared token embedding table.
            step: ``step(tokens_so_far [B, i]) -> d_i [B, H]``, the decoder's hidden state at
                the position of the last appended token; with ``pass_embeddings`` it is called
                as ``step(tokens_so_far, embeds_so_far [B, i, H])`` where the embeddings are
                the straight-through ones (for a differentiable rollout).
            num_steps: l >= 0.
            allowed_ids: ``[V']`` ids that may be chosen as reasoning tokens; None = all.
            pass_embeddings: see ``step``.

        Returns:
            :class:`LabellerOutput`.
        """
        if target.dim() != 2 or d0.shape != target.shape:
            raise ValueError("target and d0 must both be [B, H]")
        if num_steps < 0:
            raise ValueError("num_steps must be >= 0")
        b, h = target.shape
        if num_steps == 0:
            empty = target.new_zeros(b, 0, h)
            return LabellerOutput(
                tokens=torch.zeros(b, 0, dtype=torch.long, device=target.device),
                residuals=empty, states=empty.clone(), quantized=empty.clone(),
                quantized_st=empty.clone())
        state = d0  # s_0 = d_0, [B, H]
        d_sum = d0  # Σ_{j<=i} d_j, [B, H]
        tokens: list[Tensor] = []
        residuals: list[Tensor] = []
        states: list[Tensor] = []
        quantized: list[Tensor] = []
        quantized_st: list[Tensor] = []
        for _ in range(num_steps):
            r = self.residual_mlp(target - state)  # [B, H]
            o = nearest_tokens(r, table, allowed_ids)  # [B]
            q = table.index_select(0, o)  # [B, H]
            tokens.append(o)
            residuals.append(r)
            quantized.append(q)
            quantized_st.append(straight_through(r, q))
            so_far = torch.stack(tokens, dim=1)  # [B, i]
            if pass_embeddings:
                d = step(so_far, torch.stack(quantized_st, dim=1))  # [B, H]
            else:
                d = step(so_far)  # [B, H]
            if d.shape != (b, h):
                raise ValueError(f"step must return [B, H] = {(b, h)}, got {tuple(d.shape)}")
            d_sum = d_sum + d
            state = self.state_mlp(d_sum)  # s_i, [B, H]
            states.append(state)
        out = LabellerOutput(
            tokens=torch.stack(tokens, dim=1),  # [B, l]
            residuals=torch.stack(residuals, dim=1),  # [B, l, H]
            states=torch.stack(states, dim=1),  # [B, l, H]
            quantized=torch.stack(quantized, dim=1),  # [B, l, H]
            quantized_st=torch.stack(quantized_st, dim=1),  # [B, l, H]
        )
        logger.debug("labelled %d samples with %d reasoning tokens", b, num_steps)
        return out

    def teacher_forced(
        self, target: Tensor, hidden: Tensor, tokens: Tensor, table: Tensor
    ) -> LabellerOutput:
        """Residuals and states for already-chosen tokens from one decoder pass (SFT losses).

        Args:
            target: ``[B, H]`` t.
            hidden: ``[B, l + 1, H]`` decoder hidden states d_0..d_l: d_0 at the decoder-start
                position, d_i at the position whose input is o_i.
            tokens: ``[B, l]`` the labelled reasoning tokens o_1..o_l.
            table: ``[V, H]`` token embedding table.

        Returns:
            :class:`LabellerOutput` with the given ``tokens``; ``quantized`` are their
            embeddings (graph to the table) for Eq. 15, ``states`` s_1..s_l for Eq. 14.
        """
        b, l = tokens.shape
        if hidden.shape[:2] != (b, l + 1):
            raise ValueError(f"hidden must be [B, l + 1, H] = [{b}, {l + 1}, H], "
                             f"got {tuple(hidden.shape)}")
        sums = hidden.cumsum(dim=1)  # [B, l+1, H]: Σ_{j<=i} d_j
        states = self.state_mlp(sums[:, 1:])  # [B, l, H] s_1..s_l
        prev = torch.cat([hidden[:, :1], states[:, :-1]], dim=1)  # [B, l, H] s_0..s_{l-1}
        residuals = self.residual_mlp(target.unsqueeze(1) - prev)  # [B, l, H]
        quantized = table[tokens]  # [B, l, H]
        return LabellerOutput(tokens=tokens, residuals=residuals, states=states,
                              quantized=quantized,
                              quantized_st=straight_through(residuals, quantized))
