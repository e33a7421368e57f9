"""Shared base of every semantic-ID generator (TIGER, STREAM-Rec, LASAR, TwiSTAR).

What all of them share, so a table compares methods and nothing else:

* one item tokenizer per dataset (:func:`dataset_semantic_ids`): RQ-VAE over item text
  embeddings, random codes, or an external ``*.index.json``, cached on disk and keyed by raw item
  tokens, so every method on a dataset gets the same IDs;
* the history → encoder tokens mapping (each history item becomes its m code tokens);
* the T5 encoder-decoder backbone (built from the YAML, trained from scratch);
* ranking by trie-constrained beam search, converted to RecBole's [B, n_items] score matrix, with
  decoding time and invalid generations counted for the run record.

Subclasses implement ``calculate_loss`` (single-stage) or declare stages (see
:mod:`recbole_ext.trainers.staged`), and may pass a forced prefix or free (reasoning) steps to
:meth:`SIDGenerativeRecommender.generate`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_ext.generation import beams_to_scores
from recbole_ext.sid import SemanticIDs, build_semantic_ids
from recbole_ext.trainers.reporting import RecordsExtras

logger = logging.getLogger(__name__)


def item_text_embeddings(config: Any, item_tokens: list[str]) -> Any:
    """Text embeddings [n, D] in the order of ``item_tokens`` (RecBole's items, pad excluded)."""
    from recbole_ext.text import dataset_item_embeddings

    data_root = os.path.dirname(os.path.normpath(config["data_path"]))  # RecBole appends /<dataset>
    tokens, vectors = dataset_item_embeddings(config["dataset"], data_root, model=config["text_encoder"])
    row = {t: i for i, t in enumerate(tokens)}
    missing = [t for t in item_tokens if t not in row]
    if missing:
        raise ValueError(
            f"{len(missing)} items of {config['dataset']!r} have no text in its .item file "
            f"(e.g. {missing[:5]}); the RQ-VAE tokenizer needs text for every item "
            "(or use sid_tokenizer: random / external)"
        )
    return vectors[[row[t] for t in item_tokens]]


def sid_settings(config: Any) -> dict:
    """The tokenizer part of the config (what the semantic-ID cache is keyed by)."""
    rqvae = dict(config["rqvae"] or {})
    if config["device"].type == "cuda":
        rqvae.setdefault("device", "cuda")
    return {
        "method": config["sid_tokenizer"],
        "n_levels": config["sid_levels"],
        "codebook_size": config["sid_codebook_size"],
        "collision_codebook_size": config["sid_collision_codebook_size"],
        "seed": config["sid_seed"],
        "rqvae": rqvae,
        "path": config["sid_path"],
    }


def dataset_semantic_ids(config: Any, dataset: Any) -> tuple[SemanticIDs, torch.Tensor]:
    """Semantic IDs for every item of a RecBole dataset: (ids, codes [n_items, m] by RecBole id).

    Row 0 (RecBole's padding item) holds -1. IDs are cached by raw item token.
    """
    id2token = list(dataset.field2id_token[dataset.iid_field])  # [n_items], index 0 = "[PAD]"
    item_tokens = [str(t) for t in id2token[1:]]
    settings = sid_settings(config)
    embeddings = item_text_embeddings(config, item_tokens) if settings["method"] == "rqvae" else None
    from recbole_ext.data import default_cache_dir

    cache = config["sid_cache_dir"] or str(default_cache_dir() / "sid" / config["dataset"])
    sids = build_semantic_ids(item_tokens, embeddings, settings, cache)
    codes = sids.codes_for_tokens(id2token)  # [n_items, m], pad row -1
    collision = sids.stats.get("collision", {})
    logger.info(
        "semantic IDs for %s: %d items x %d codes, sizes %s, collisions %s",
        config["dataset"], len(item_tokens), sids.n_levels, sids.codebook_sizes, collision,
    )
    return sids, codes


class SIDGenerativeRecommender(RecordsExtras, SequentialRecommender):
    """Base for T5 generators over semantic IDs; see the module docstring.

    ``self.seq2seq`` (:class:`~recbole_ext.modules.sid_seq2seq.SIDSeq2Seq`) holds the T5, the
    vocabulary, the items' tokens and the trie. Evaluation decodes ``self.free_steps`` free
    (reasoning) tokens before the item; a staged trainer sets it per stage.
    """

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        from recbole_ext.modules.sid_seq2seq import SIDSeq2Seq, backbone_settings

        self.sids, codes = dataset_semantic_ids(config, dataset)
        self.num_beams = int(config["num_beams"])
        if self.num_beams < max(config["topk"]):
            raise ValueError(f"num_beams={self.num_beams} < max(topk)={max(config['topk'])}: too few ranked items")
        self.constrained = bool(config["constrained_decoding"])
        vocab = self.sids.vocab(n_extra=self.extra_vocab_size(config))
        self.seq2seq = SIDSeq2Seq(vocab, codes, backbone_settings(config))
        self.vocab = vocab
        self.free_steps = 0
        self.reset_decode_stats()

    def extra_vocab_size(self, config) -> int:
        """Tokens beyond the codes (e.g. a text vocabulary); 0 for TIGER."""
        return 0

    # --- inputs ----------------------------------------------------------------------------------
    def history_tokens(self, interaction) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder input: each history item as its m code tokens. -> ids [B, L*m], mask [B, L*m]."""
        return self.seq2seq.history_tokens(interaction[self.ITEM_SEQ])

    def target_tokens(self, interaction) -> torch.Tensor:
        """The next item's code tokens [B, m]."""
        return self.seq2seq.item_tokens[interaction[self.POS_ITEM_ID]]

    # --- ranking ---------------------------------------------------------------------------------
    def reset_decode_stats(self) -> None:
        """Called by the trainer before each evaluation."""
        self.decode_users = 0
        self.decode_seconds = 0.0
        self.decode_beams = 0
        self.invalid_beams = torch.zeros((), dtype=torch.long)
        self.ranked_items = torch.zeros((), dtype=torch.long)

    def generate(self, interaction, prefix=None, free_steps: int = 0, free_range=None):
        """Beam search for a batch of users -> BeamSearchOutput."""
        ids, mask = self.history_tokens(interaction)
        return self.seq2seq.beam_search(ids, mask, self.num_beams, prefix=prefix, free_steps=free_steps,
                                        free_range=free_range, constrain=self.constrained)

    @torch.no_grad()
    def full_sort_predict(self, interaction):
        """Top beams → scores [B, n_items]: distinct valid items in beam order, -inf elsewhere.
        Also counts the distinct items ranked (several reasoning paths may end in one item)."""
        device = interaction[self.ITEM_SEQ].device
        start = time.perf_counter()
        out = self.generate(interaction, free_steps=self.free_steps)
        scores, n_invalid = beams_to_scores(out.items, self.n_items)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # once per batch, for an honest time per user
        self.decode_seconds += time.perf_counter() - start
        self.decode_users += out.items.shape[0]
        self.decode_beams += out.items.numel()
        self.invalid_beams = self.invalid_beams.to(device) + n_invalid
        self.ranked_items = self.ranked_items.to(device) + torch.isfinite(scores).sum()
        return scores

    def predict(self, interaction):
        raise NotImplementedError(
            f"{type(self).__name__} ranks by generation: use full ranking (eval_args.mode: full)"
        )

    def record_extra(self) -> dict:
        """Decoding statistics of the last evaluation (the test set, when called by the runner)."""
        users = max(1, self.decode_users)
        collision = self.sids.stats.get("collision", {})
        rqvae = self.sids.stats.get("rqvae", {})
        return {
            "decode_ms_per_user": round(1000 * self.decode_seconds / users, 4),
            "invalid_rate": float(self.invalid_beams.item()) / max(1, self.decode_beams),
            "num_beams": self.num_beams,
            "constrained_decoding": self.constrained,
            "decode_free_steps": self.free_steps,
            "mean_ranked_items": round(float(self.ranked_items) / users, 3),
            "sid": {
                "method": self.sids.stats.get("method"),
                "codebook_sizes": list(self.sids.codebook_sizes),
                "collision": collision,
                **({"rqvae": rqvae} if rqvae else {}),
            },
        }
