"""ReaRec (Tang et al., "Think Before Recommend", arXiv 2503.22675; code: TangJiakai/ReaRec).

A SASRec encoder that "thinks" K latent steps before it recommends: the last position's output
h_0 is fed back as a new input position, h_{j-1} + p^R_j with its own reasoning position
embedding p^R_j (a table of K rows, separate from the item positions), and the encoder's output
there is h_j. The new position attends to every real history item and to the earlier reasoning
positions (and itself); the history's keys and values are those RecBole's encoder computed for
the history (caught by forward hooks on its key/value projections) and are reused, so each step
costs one position, not a full pass. Two training objectives (``rearec_objective``):

* ``erl`` (Ensemble Reasoning Learning): the user vector is the mean of the K+1 states
  h_0..h_K; loss = CE(mean) - kl_weight * mean over ordered pairs i != j of KL(p_j || sg(p_i)),
  p_j = softmax(h_j E^T / tau), sg = stop-gradient: the KL term pushes the steps' item
  distributions apart. Scoring uses the mean too.
* ``prl`` (Progressive Reasoning Learning): the user vector is the last state h_K; loss =
  CE(h_K E^T / tau) + pl_weight * mean_{j<K} CE(h_j E^T / (tau * alpha^(K-j))) (temperature
  that sharpens with the step) + cl_weight * InfoNCE between each reasoning step's clean output
  and that of a noise-perturbed copy of the chain (in-batch users as negatives). Scoring uses h_K.

Every score and loss divides the item logits by ``temperature`` (tau): the ranking is that of
SASRec's dot product, the scale is the one the softmax was trained at.

What the paper leaves open, and what this file does (following the public code unless said):

* ERL's CE: the paper (as public summaries of it state; its full text was not at hand) trains
  each step against the target; the public code applies one CE to the mean of the K+1 states
  (step 0, the plain SASRec state, included). We follow the code.
* KL direction and gradient: KL(p_j || sg(p_i)) over ordered pairs, mean over the B*(K+1)*K
  pairs, gradient only through p_j (both its factors), as the code's ``F.kl_div`` on detached logits.
* PRL's temperatures: tau_j = tau * alpha^(K-j) for j = 0..K (tau at the last step), the
  progressive CE averaged over steps 0..K-1 and the batch.
* PRL's noisy copy (as in the code): the noisy chain's step-j input is the *clean* h_{j-1} +
  p^R_j + eps, eps ~ N(0, prl_noise_std^2) (std, not variance); its keys and values are its own
  noisy inputs; the contrastive loss compares steps 1..K by raw dot product / tau, the positive
  being the same user at the same step, every other user of the batch a negative.
* Noise warm-up: the code gates the noise by ``--warmup`` epochs (default 2) but its PRL loss is
  undefined then (``cl_loss`` unbound), so the only setting it runs with is no warm-up: the noise
  and the contrastive term are on from the first training batch. Off in eval mode.
* Deliberate difference: the public code duplicates the whole batch for the noisy chain, so its
  two views also see different dropout masks on the history; here both chains share one history
  pass (its keys/values), and differ by the noise (and the reasoning positions' own dropout).
  This saves a second pass over the history; there is no noisy chain at inference.
* Input normalisation: reasoning inputs go through the same LayerNorm + dropout as the item
  inputs (the code's wrapper applies one LayerNorm and a fixed dropout of 0.2 to both); here
  that is SASRec's own LayerNorm and ``hidden_dropout_prob``.
* Padding/positions: RecBole pads on the right; positions count from the oldest item of the
  (truncated) history, as the code's left padding with cumulative positions does. The history
  length is the protocol's MAX_ITEM_LIST_LENGTH (the code uses 50).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from recbole_ext import compat

compat.apply()  # before RecBole's sequential package, whose sine.py turns anomaly detection on

from recbole.model.sequential_recommender.sasrec import SASRec

logger = logging.getLogger(__name__)

OBJECTIVES = ("erl", "prl")


# --- the objectives as pure functions (tested on hand-made tensors) ------------------------------
def erl_diversity(step_logits: torch.Tensor) -> torch.Tensor:
    """Mean over ordered step pairs i != j of KL(p_j || sg(p_i)); ``step_logits`` [B, T, N], T >= 2."""
    T = step_logits.size(1)
    log_p = F.log_softmax(step_logits, dim=-1)  # [B, T, N], with gradient
    p = log_p.exp()  # [B, T, N], with gradient
    # kl[b, i, j] = sum_n p_j (log p_j - sg(log p_i)) = KL(p_j || sg(p_i))
    self_term = (p * log_p).sum(-1).unsqueeze(1)  # [B, 1, T]
    cross = torch.einsum("bjn,bin->bij", p, log_p.detach())  # [B, T, T]
    kl = self_term - cross  # [B, T(i), T(j)]
    off_diagonal = 1.0 - torch.eye(T, dtype=kl.dtype, device=kl.device)  # [T, T]
    return (kl * off_diagonal).sum() / (kl.size(0) * T * (T - 1))


def prl_temperatures(tau: float, alpha: float, steps: int) -> torch.Tensor:
    """[tau * alpha^K, ..., tau * alpha, tau]: step j of K gets tau * alpha^(K - j); shape [K+1]."""
    return tau * alpha ** torch.arange(steps, -1, -1, dtype=torch.float64)


def prl_progressive_loss(states: torch.Tensor, items: torch.Tensor, target: torch.Tensor,
                         temperatures: torch.Tensor, pl_weight: float) -> torch.Tensor:
    """CE(h_K E^T / tau_K) + pl_weight * mean over steps j < K of CE(h_j E^T / tau_j).

    ``states`` [B, K+1, D], ``items`` E [N, D], ``target`` [B], ``temperatures`` [K+1]; the states,
    not the [B, K+1, N] logits, are divided by the temperatures (the same logits, cheaper).
    """
    B, T, _ = states.shape
    logits = (states / temperatures.to(states).view(1, T, 1)) @ items.T  # [B, T, N]
    per_step = F.cross_entropy(logits.reshape(B * T, -1), target.repeat_interleave(T), reduction="none")
    per_step = per_step.view(B, T)  # [B, T]
    loss = per_step[:, -1].mean()
    return loss + pl_weight * per_step[:, :-1].mean() if T > 1 else loss


def prl_contrastive_loss(clean: torch.Tensor, noisy: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean over users b and steps k of -log softmax_c(noisy[b,k] . clean[c,k] / tau)[b].

    ``clean``, ``noisy`` [B, K, D]: the reasoning steps' outputs of the two chains.
    """
    B, K, _ = clean.shape
    similarity = torch.einsum("bkd,ckd->kbc", noisy, clean) / tau  # [K, B, B(c)]
    labels = torch.arange(B, device=clean.device).repeat(K)  # [K*B]: user b is its own positive
    return F.cross_entropy(similarity.reshape(K * B, B), labels)


# --- the model --------------------------------------------------------------------------------------
class ReaRec(SASRec):
    """SASRec plus K latent reasoning steps, trained with ERL or PRL (see the module docstring)."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)  # item/position embeddings, encoder, LayerNorm, dropout
        self.reasoning_steps = int(config["reasoning_steps"])
        self.objective = str(config["rearec_objective"]).lower()
        if self.objective not in OBJECTIVES:
            raise ValueError(f"rearec_objective must be one of {OBJECTIVES}, got {config['rearec_objective']!r}")
        if self.reasoning_steps < 0:
            raise ValueError(f"reasoning_steps must be >= 0, got {self.reasoning_steps}")
        if self.loss_type != "CE":
            raise ValueError(f"ReaRec trains with a full softmax: loss_type must be CE, got {self.loss_type!r}")
        self.temperature = float(config["temperature"])
        self.kl_weight = float(config["kl_weight"])
        self.prl_temp_decay = float(config["prl_temp_decay"])
        self.prl_noise_std = float(config["prl_noise_std"])
        self.pl_weight = float(config["pl_weight"])
        self.cl_weight = float(config["cl_weight"])
        self.reasoning_position_embedding = (
            nn.Embedding(self.reasoning_steps, self.hidden_size) if self.reasoning_steps > 0 else None
        )
        if self.reasoning_position_embedding is not None:
            self._init_weights(self.reasoning_position_embedding)  # SASRec's normal(0, initializer_range)
        logger.info("ReaRec: objective %s, %d reasoning steps, temperature %g",
                    self.objective, self.reasoning_steps, self.temperature)

    # --- the reasoning loop ------------------------------------------------------------------
    def reason(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor,
               noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The K+1 states [B, K+1, D] (h_0 = SASRec's output), and with ``noise`` [B, K, D] the
        noisy chain's K reasoning states [B, K, D] (else None)."""
        L = item_seq.size(1)
        positions = torch.arange(L, device=item_seq.device).unsqueeze(0).expand_as(item_seq)  # [B, L]
        x = self.item_embedding(item_seq) + self.position_embedding(positions)  # [B, L, D]
        x = self.dropout(self.LayerNorm(x))
        # RecBole's encoder over the history; its keys/values are kept (each layer's key and value
        # projections, [B, L, D], caught as they are computed) for the reasoning positions to attend to
        projections = [(layer.multi_head_attention.key, layer.multi_head_attention.value)
                       for layer in self.trm_encoder.layer] if self.reasoning_steps > 0 else []
        caught: dict[nn.Module, torch.Tensor] = {}
        hooks = [module.register_forward_hook(lambda module, args, out: caught.__setitem__(module, out))
                 for pair in projections for module in pair]
        try:
            output = self.trm_encoder(x, self.get_attention_mask(item_seq), output_all_encoded_layers=False)[-1]
        finally:
            for hook in hooks:
                hook.remove()
        h = self.gather_indexes(output, item_seq_len - 1)  # [B, D]
        if self.reasoning_steps == 0:
            return h.unsqueeze(1), None
        history = [self._heads(layer, caught[k], caught[v])  # per layer ([B, heads, L, d_h], same)
                   for layer, (k, v) in zip(self.trm_encoder.layer, projections)]
        history_mask = torch.where(item_seq != 0, 0.0, -10000.0)[:, None, None, :]  # [B, 1, 1, L], RecBole's values
        clean_cache, noisy_cache = [], []  # per layer: the reasoning positions' keys, values [B, heads, j, d_h]
        states, noisy_states = [h], []
        for j in range(self.reasoning_steps):
            step_input = h + self.reasoning_position_embedding.weight[j]  # [B, D]: h_{j-1} + p^R_j
            h, clean_cache = self._step(self.dropout(self.LayerNorm(step_input)), history, history_mask, clean_cache)
            states.append(h)
            if noise is not None:  # the noisy copy: from the clean state, plus noise
                noisy_in = self.dropout(self.LayerNorm(step_input + noise[:, j]))
                noisy_h, noisy_cache = self._step(noisy_in, history, history_mask, noisy_cache)
                noisy_states.append(noisy_h)
        noisy_out = torch.stack(noisy_states, dim=1) if noise is not None else None  # [B, K, D]
        return torch.stack(states, dim=1), noisy_out  # [B, K+1, D]

    @staticmethod
    def _heads(layer, *projections: torch.Tensor) -> list[torch.Tensor]:
        """[B, T, D] -> [B, heads, T, d_h] (contiguous), with RecBole's own reshaping."""
        attention = layer.multi_head_attention
        return [attention.transpose_for_scores(t).permute(0, 2, 1, 3).contiguous() for t in projections]

    def _step(self, x: torch.Tensor, history: list, history_mask: torch.Tensor,
              cache: list) -> tuple[torch.Tensor, list]:
        """One new position [B, D] through every layer of RecBole's encoder; returns its output [B, D]
        and the reasoning keys/values with its own appended.

        It attends to the history's real items (``history``: per layer its keys, values
        [B, heads, L, d_h]; ``history_mask`` [B, 1, 1, L]: 0 for an item, -10000 for padding) and to
        the reasoning positions so far and itself (``cache``: per layer keys, values [B, heads, j, d_h];
        empty at the first step).
        The arithmetic is that of RecBole's MultiHeadAttention for one query (same modules, same
        weights, dropouts and -10000 mask); the feed-forward sublayer is RecBole's own module."""
        h = x.unsqueeze(1)  # [B, 1, D]
        new_cache = []
        for i, (layer, (hist_k, hist_v)) in enumerate(zip(self.trm_encoder.layer, history)):
            attention = layer.multi_head_attention
            q, k, v = self._heads(layer, attention.query(h), attention.key(h), attention.value(h))  # [B, heads, 1, d_h]
            if cache:
                k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)  # [B, heads, j+1, d_h]
            new_cache.append((k, v))
            scale = attention.sqrt_attention_head_size
            scores = torch.cat([q @ hist_k.transpose(-1, -2) / scale + history_mask,
                                q @ k.transpose(-1, -2) / scale], dim=-1)  # [B, heads, 1, L+j+1]
            probs = attention.attn_dropout(attention.softmax(scores))
            L = hist_k.size(2)
            context = probs[..., :L] @ hist_v + probs[..., L:] @ v  # [B, heads, 1, d_h]
            context = context.permute(0, 2, 1, 3).reshape(h.shape)  # [B, 1, D]
            attended = attention.LayerNorm(attention.out_dropout(attention.dense(context)) + h)
            h = layer.feed_forward(attended)  # [B, 1, D]
        return h.squeeze(1), new_cache

    def user_vector(self, states: torch.Tensor) -> torch.Tensor:
        """ERL: the mean of the K+1 states; PRL: the last one. [B, K+1, D] -> [B, D]."""
        return states.mean(dim=1) if self.objective == "erl" else states[:, -1]

    # --- RecBole's interface -----------------------------------------------------------------
    def forward(self, item_seq, item_seq_len):
        states, _ = self.reason(item_seq, item_seq_len)
        return self.user_vector(states)  # [B, D]

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        target = interaction[self.POS_ITEM_ID]  # [B]
        items = self.item_embedding.weight  # [N, D]
        noise = None
        if (self.objective == "prl" and self.training and self.reasoning_steps > 0
                and self.cl_weight > 0 and self.prl_noise_std > 0):
            B, D = item_seq.size(0), self.hidden_size
            noise = torch.randn(B, self.reasoning_steps, D, device=item_seq.device) * self.prl_noise_std
        states, noisy = self.reason(item_seq, item_seq_len, noise)  # [B, K+1, D], [B, K, D] | None
        if self.objective == "erl":
            loss = self.loss_fct((states.mean(dim=1) / self.temperature) @ items.T, target)
            if self.reasoning_steps > 0 and self.kl_weight > 0:
                loss = loss - self.kl_weight * erl_diversity((states / self.temperature) @ items.T)
            return loss
        temperatures = prl_temperatures(self.temperature, self.prl_temp_decay, self.reasoning_steps)
        loss = prl_progressive_loss(states, items, target, temperatures, self.pl_weight)
        if noisy is not None:
            loss = loss + self.cl_weight * prl_contrastive_loss(states[:, 1:], noisy, self.temperature)
        return loss

    def predict(self, interaction):
        user = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, D]
        return (user * self.item_embedding(interaction[self.ITEM_ID])).sum(-1) / self.temperature  # [B]

    def full_sort_predict(self, interaction):
        user = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, D]
        return user @ self.item_embedding.weight.T / self.temperature  # [B, N]
