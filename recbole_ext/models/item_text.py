"""Item text for semantic-ID generators that also read or write text (LASAR; TwiSTAR's slow model).

* :class:`TextSettings` - the YAML keys of the text side (vocabulary size, rationale and title lengths);
* :class:`ItemText` - built once per model from the dataset: the items' facts (:mod:`recbole_ext.rationale`,
  from the ``.item`` file), transition counts of the *training* rows (:mod:`recbole_ext.cooccurrence`),
  the deterministic rationale generator, and a subword vocabulary learned from the items' text and the
  templates (:mod:`recbole_ext.text_vocab`, cached by content). Its tokens go after the code tokens of
  the model's :class:`~recbole_ext.sid.vocab.SIDVocab` (``extra_offset``);
* :func:`text_then_sid_pass` - ``[bos, text, SID]`` teacher-forced after the history, rows left-padded
  (texts differ in length): the mean token CE and the decoder states at each sentence's end;
* :func:`text_prefix` - greedy (or sampled) text after the history until a first SID token is chosen:
  the explicit-reasoning decoding, left-padded for a SID beam after it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextSettings:
    """Text keys of a model's YAML (unprefixed)."""

    text_vocab_size: int
    text_min_frequency: int
    rationale_sentences: int
    sentence_tokens: int
    title_tokens: int

    def __post_init__(self):
        if self.rationale_sentences < 1:
            raise ValueError("rationale_sentences must be >= 1 (the conclusion sentence)")


class ItemText:
    """Facts, training transitions, rationale generator and text vocabulary of one dataset."""

    def __init__(self, config, dataset, settings: TextSettings, seq_field: str, len_field: str, item_field: str):
        from recbole_ext.cooccurrence import TransitionStats
        from recbole_ext.data import default_cache_dir
        from recbole_ext.data.catalog import CATALOG
        from recbole_ext.rationale import EMPTY_FACTS, TEMPLATE_TEXTS, RationaleBuilder, item_facts
        from recbole_ext.text_vocab import train_text_vocab

        self.settings = settings
        name = str(config["dataset"])
        self.id2token = [str(t) for t in dataset.field2id_token[dataset.iid_field]]
        item_file = os.path.join(config["data_path"], f"{name}.item")
        spec = CATALOG.get(name)
        if os.path.exists(item_file):
            self.facts = item_facts(item_file, self.id2token, spec.text_kind if spec else "amazon")
        else:
            logger.warning("%s has no item file (%s): rationales and titles will carry no item text", name, item_file)
            self.facts = [EMPTY_FACTS] * len(self.id2token)
        feat = dataset.inter_feat  # the training split: models are built on it
        self.transitions = TransitionStats.from_rows(feat[seq_field], feat[len_field], feat[item_field],
                                                     len(self.id2token))
        # leave_one_out: a sample's co-occurrence count leaves out its own transition, as a test sample's would
        self.rationales = RationaleBuilder(self.facts, self.transitions, settings.rationale_sentences,
                                           leave_one_out=True)
        corpus = [" ".join(x for x in (f.title, f.category, f.brand, f.year) if x) for f in self.facts[1:]]
        # the templates' own words and digits, often enough for BPE to merge them into whole words
        corpus += list(TEMPLATE_TEXTS) * max(1, settings.text_min_frequency)
        cache = default_cache_dir() / "text_vocab" / name
        self.vocab = train_text_vocab(corpus, settings.text_vocab_size, settings.text_min_frequency, cache)
        logger.info("text vocabulary of %s: %d tokens (cache %s)", name, self.vocab.size, cache)

    @property
    def size(self) -> int:
        return self.vocab.size

    def encode(self, texts: list[str], max_tokens: int, offset: int, pad: int) -> Tensor:
        """Texts -> token ids [N, max_tokens] shifted by ``offset`` (right-padded with ``pad``)."""
        from recbole_ext.text_vocab import encode_padded

        return encode_padded(self.vocab, texts, max_tokens, offset, pad)

    def titles(self, offset: int, pad: int) -> Tensor:
        """Every item's title tokens [n_items, title_tokens] (row 0, padding, empty)."""
        return self.encode([f.title for f in self.facts], self.settings.title_tokens, offset, pad)

    def rationale_tokens(self, seq: Tensor, length: Tensor, target: Tensor, offset: int,
                         pad: int) -> tuple[Tensor, Tensor, Tensor]:
        """The training samples' rationales: tokens [B, T] (right-padded), sentence ends [B, S] (the
        [SEP] positions, -1 absent), sentence counts [B]; on ``seq``'s device."""
        from recbole_ext.rationale import encode_rationales

        sentences = self.rationales.batch(seq.cpu(), length.cpu(), target.cpu())
        s = self.settings
        tokens, ends, n = encode_rationales(self.vocab, sentences, s.sentence_tokens, offset, pad,
                                            s.rationale_sentences)
        return tokens.to(seq.device), ends.to(seq.device), n.to(seq.device)


def text_then_sid_pass(s2s, enc: Tensor, mask: Tensor, text: Tensor, ends: Tensor,
                       target: Tensor, with_loss: bool = True) -> tuple[Tensor | None, Tensor]:
    """Teacher-forced ``[bos, text, SID]`` after the history, each row left-padded (``text`` [B, T]
    right-padded, ``ends`` [B, S] its sentence ends, ``target`` [B, m]) -> (mean token CE of the text
    and SID tokens, None without ``with_loss`` (no [B, T, V] logits: the costly part), the decoder
    states at each sentence's end [B, S, D], detached, zero where absent)."""
    pad, bos = s2s.vocab.pad, s2s.vocab.bos
    b, tc = text.shape
    m = target.shape[1]
    n = (text != pad).sum(dim=1)  # [B] text length
    compact = text.new_full((b, 1 + tc + m), pad)  # [bos, text_b, sid, pad...]
    compact[:, 0] = bos
    compact[:, 1 : 1 + tc] = text
    compact = compact.scatter(1, 1 + n[:, None] + torch.arange(m, device=text.device)[None], target)
    shift = tc - n  # [B] left padding of each row
    pos = torch.arange(1 + tc + m, device=text.device)[None, :] - shift[:, None]  # [B, 1+T+m]
    seq = torch.where(pos >= 0, compact.gather(1, pos.clamp(min=0)), torch.full_like(compact, pad))
    inputs, labels = seq[:, :-1], seq[:, 1:]  # [B, T+m] each
    hidden = s2s.decode(enc, mask, input_ids=inputs, self_mask=(inputs != pad).long())
    loss = None
    if with_loss:
        logits = s2s.logits(hidden)  # [B, T+m, V]
        ignore = (labels == pad) | (labels == bos)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                               labels.masked_fill(ignore, -100).reshape(-1), ignore_index=-100)
    at = (1 + ends + shift[:, None]).clamp(min=0)  # [B, S] input position of each sentence's [SEP]
    states = hidden.detach().gather(1, at[..., None].expand(-1, -1, hidden.shape[-1]))  # [B, S, D]
    return loss, states * (ends >= 0)[..., None]


@torch.no_grad()
def text_prefix(s2s, enc: Tensor, mask: Tensor, max_tokens: int, temperature: float | None = None,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Text after the history (text tokens only) until a first SID token is chosen, at most ``max_tokens``
    -> left-padded ``[bos, text]`` [B, P] and its mask (False on padding). ``temperature`` None: greedy
    (the model's preferred token); else drawn from softmax(logits / temperature) with ``generator``."""
    from recbole_ext.generation.t5_decoder import T5CachedDecoder

    v, pad = s2s.vocab, s2s.vocab.pad
    b = enc.shape[0]
    dec = T5CachedDecoder(s2s.t5, enc, mask, max_tokens + 1)
    lo0, hi0 = v.level_range(0)
    allowed = torch.full((v.vocab_size,), float("-inf"), device=enc.device)
    allowed[v.extra_offset :] = 0.0  # text tokens
    allowed[lo0:hi0] = 0.0  # or the first SID token: the text ends
    cur = torch.full((b, 1), v.bos, dtype=torch.long, device=enc.device)
    done = torch.zeros(b, dtype=torch.bool, device=enc.device)
    out = []
    for _ in range(max_tokens):
        logits = dec.step(cur, log_probs=False)[:, 0] + allowed  # [B, V]
        if temperature is None:
            nxt = logits.argmax(dim=-1)  # [B]
        else:
            probs = torch.softmax(logits.float() / max(temperature, 1e-6), dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(enc.device)  # [B]
        done = done | (nxt < v.extra_offset)
        out.append(torch.where(done, torch.full_like(nxt, pad), nxt))
        if bool(done.all()):
            break
        cur = nxt[:, None]
    text = torch.stack(out, dim=1) if out else cur.new_zeros(b, 0)  # [B, P-1], pad after the end
    n = (text != pad).sum(dim=1)  # [B]
    width = text.shape[1]
    seq = torch.cat([cur.new_full((b, 1), v.bos), text], dim=1)  # [B, P] right-padded
    pos = torch.arange(width + 1, device=enc.device)[None, :] - (width - n)[:, None]
    left = torch.where(pos >= 0, seq.gather(1, pos.clamp(min=0)), torch.full_like(seq, pad))
    return left, pos >= 0
