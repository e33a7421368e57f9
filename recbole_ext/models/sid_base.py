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
from recbole_ext.generation.scores import path_sum_scores
from recbole_ext.sid import SemanticIDs, build_semantic_ids
from recbole_ext.trainers.reporting import RecordsExtras

logger = logging.getLogger(__name__)


def item_text_embeddings(config: Any, item_tokens: list[str], length_stats: dict | None = None) -> Any:
    """Text embeddings [n, D] in the order of ``item_tokens`` (RecBole's items, pad excluded);
    ``length_stats`` receives the over-length text statistics (:func:`recbole_ext.text.text_length_stats`)."""
    from recbole_ext.text import dataset_item_embeddings

    data_root = os.path.dirname(os.path.normpath(config["data_path"]))  # RecBole appends /<dataset>
    tokens, vectors = dataset_item_embeddings(config["dataset"], data_root, model=config["text_encoder"],
                                              length_stats=length_stats)
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
    settings = {
        "method": config["sid_tokenizer"],
        "n_levels": config["sid_levels"],
        "codebook_size": config["sid_codebook_size"],
        "collision_codebook_size": config["sid_collision_codebook_size"],
        "seed": config["sid_seed"],
        "rqvae": rqvae,
        "path": config["sid_path"],
    }
    # keys added since IDs were first cached enter only when used, so existing caches stay valid
    if settings["method"] == "rkmeans":
        settings["rkmeans"] = dict(config["rkmeans"] or {})
    if config["sid_allow_extra_items"]:
        settings["allow_extra_items"] = True
    if config["sid_collision"] not in (None, "append"):
        settings["collision"] = config["sid_collision"]
    return settings


def dataset_semantic_ids(config: Any, dataset: Any) -> tuple[SemanticIDs, torch.Tensor]:
    """Semantic IDs for every item of a RecBole dataset: (ids, codes [n_items, m] by RecBole id).

    Row 0 (RecBole's padding item) holds -1. IDs are cached by raw item token.
    """
    id2token = list(dataset.field2id_token[dataset.iid_field])  # [n_items], index 0 = "[PAD]"
    item_tokens = [str(t) for t in id2token[1:]]
    settings = sid_settings(config)
    needs_text = settings["method"] in ("rqvae", "rkmeans")
    text_stats: dict = {}
    embeddings = item_text_embeddings(config, item_tokens, text_stats) if needs_text else None
    from recbole_ext.data import default_cache_dir

    cache = config["sid_cache_dir"] or str(default_cache_dir() / "sid" / config["dataset"])
    sids = build_semantic_ids(item_tokens, embeddings, settings, cache)
    if text_stats:  # what the encoder cut (not part of the IDs' cache: a fresh dict per run)
        items = text_stats.pop("over_length_items", [])
        sids.stats = {**sids.stats, "text": {**text_stats, "over_length_examples": items[:20]}}
    codes = sids.codes_for_tokens(id2token)  # [n_items, m], pad row -1
    collision = sids.stats.get("collision", {})
    logger.info(
        "semantic IDs for %s: %d items x %d codes, sizes %s, collisions %s",
        config["dataset"], len(item_tokens), sids.n_levels, sids.codebook_sizes, collision,
    )
    return sids, codes


def sid_report(sids: SemanticIDs, codes: torch.Tensor, dataset: Any, item_seq: str, item_seq_len: str,
               item_id: str) -> dict:
    """:func:`~recbole_ext.sid.report.tokenizer_report` of the IDs, with the consecutive pairs (last
    history item, target) of ``dataset``'s rows (the training split, as the model is built on it)."""
    from recbole_ext.sid.report import semantic_codes, tokenizer_report

    pairs = None
    feat = getattr(dataset, "inter_feat", None)
    if feat is not None and item_seq in feat.interaction and item_id in feat.interaction:
        seq, length = feat[item_seq], feat[item_seq_len].long()  # [R, L], [R]
        last = seq.gather(1, (length - 1).clamp(min=0)[:, None]).squeeze(1)  # [R]
        keep = length > 0
        pairs = torch.stack([last[keep], feat[item_id][keep]], dim=1) - 1  # RecBole ids -> rows of codes[1:]
    semantic = semantic_codes(codes[1:], sids.stats)
    sizes = sids.codebook_sizes[: semantic.shape[1]]
    report = tokenizer_report(semantic, sizes, pairs)
    if "text" in sids.stats:
        report["text"] = sids.stats["text"]
    return report


class SIDGenerativeRecommender(RecordsExtras, SequentialRecommender):
    """Base for T5 generators over semantic IDs; see the module docstring.

    ``self.seq2seq`` (:class:`~recbole_ext.modules.sid_seq2seq.SIDSeq2Seq`) holds the T5, the
    vocabulary, the items' tokens and the trie. Evaluation decodes ``self.free_steps`` free
    (reasoning) tokens before the item; a staged trainer sets it per stage.
    """

    input_type = InputType.POINTWISE
    #: Whether the model's losses train an EOS after the target (``target_eos``); a model whose
    #: losses do not (STREAM-Rec's stages) refuses the key rather than ignore it.
    supports_target_eos = False

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        from recbole_ext.modules.sid_seq2seq import SIDSeq2Seq, backbone_settings

        self.sids, codes = dataset_semantic_ids(config, dataset)
        self.sid_report = sid_report(self.sids, codes, dataset, self.ITEM_SEQ, self.ITEM_SEQ_LEN, self.ITEM_ID)
        self.num_beams = int(config["num_beams"])
        if self.num_beams < max(config["topk"]):
            raise ValueError(f"num_beams={self.num_beams} < max(topk)={max(config['topk'])}: too few ranked items")
        self.constrained = bool(config["constrained_decoding"])
        vocab = self.sids.vocab(n_extra=self.extra_vocab_size(config, dataset))
        self.target_eos = bool(config["target_eos"])
        if self.target_eos and not self.supports_target_eos:
            raise ValueError(f"target_eos is not supported by {type(self).__name__} (its losses score the m target "
                             "tokens only); set target_eos: False")
        self.seq2seq = SIDSeq2Seq(vocab, codes, backbone_settings(config), history_eos=bool(config["history_eos"]))
        self.vocab = vocab
        self.free_steps = 0
        #: how items are ranked after free (reasoning) steps: joint (one beam over reasoning and item
        #: tokens) | best_thought | path_sum; reasoning models set it from their YAML
        self.reasoning_decode = "joint"
        self.reset_decode_stats()

    def extra_vocab_size(self, config, dataset) -> int:
        """Tokens beyond the codes (e.g. a text vocabulary learned from ``dataset``'s item text); 0 for TIGER."""
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
        mode = self.reasoning_decode if self.free_steps > 0 else "joint"
        if mode == "best_thought":  # the best reasoning path on its own, then the items after it
            ids, mask = self.history_tokens(interaction)
            thoughts = self.seq2seq.beam_search(ids, mask, self.num_beams, free_steps=self.free_steps,
                                                item_levels=False).tokens[:, 0]  # [B, free_steps]
            out = self.seq2seq.beam_search(ids, mask, self.num_beams, prefix=thoughts, constrain=self.constrained)
        else:
            out = self.generate(interaction, free_steps=self.free_steps)
        scores, n_invalid = beams_to_scores(out.items, self.n_items)
        if mode == "path_sum":  # rank items by the probability summed over their reasoning paths
            scores = path_sum_scores(out.items, out.scores, self.n_items)
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

    def _sid_digest(self) -> str:
        if getattr(self, "_sid_table_sha256", None) is None:
            self._sid_table_sha256 = self.sids.table_digest()
        return self._sid_table_sha256

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
                "table_sha256": self._sid_digest(),
                "codebook_sizes": list(self.sids.codebook_sizes),
                "collision": collision,
                **({"rqvae": rqvae} if rqvae else {}),
                **({"rkmeans": self.sids.stats["rkmeans"]} if "rkmeans" in self.sids.stats else {}),
                "report": self.sid_report,
            },
        }
