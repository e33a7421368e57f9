"""A subword vocabulary learned from a dataset's own item text (Hugging Face ``tokenizers``, BPE).

Reasoning recommenders (LASAR's rationales, TwiSTAR's collaborative sentences) generate text with a
small decoder, so they need a small vocabulary fitted to the dataset rather than a 32k-token
pretrained one. :func:`train_text_vocab` learns it once and caches it on disk.

Tokenizer (fixed, part of :data:`FORMAT_VERSION`):

- normaliser: NFKD, strip accents, NFC, lowercase, whitespace runs -> one space, strip;
- pre-tokeniser: words are split at spaces with a ``▁`` word-start marker (Metaspace), and every
  punctuation character is its own piece; so ``decode(encode(t))`` gives back the normalised text
  exactly whenever every character of ``t`` was seen in training (an unseen character becomes
  ``[UNK]``);
- model: byte-pair encoding; special tokens ``[UNK]`` = 0 and ``[SEP]`` = 1 (end of a sentence).

Training is deterministic: the same texts and settings give a byte-identical tokenizer JSON.

Cache: ``<cache_dir>/text_vocab.<key[:20]>.json``, where ``key`` is the sha256 of the texts in
order, ``vocab_size``, ``min_frequency``, :data:`FORMAT_VERSION` and the ``tokenizers`` version. A hit
loads without training; an unreadable file is logged and retrained over.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import tokenizers
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from recbole_ext.atomic import atomic_write_text

__all__ = [
    "FORMAT_VERSION",
    "SEP_TOKEN",
    "UNK_TOKEN",
    "TextVocab",
    "encode_padded",
    "text_vocab_key",
    "train_text_vocab",
]

logger = logging.getLogger(__name__)

#: Identity of the tokenizer recipe below; bump it when the recipe changes (invalidates caches).
FORMAT_VERSION = "text_vocab:v1:bpe:nfkd-strip-nfc-lower-ws:metaspace+punct"
UNK_TOKEN = "[UNK]"
SEP_TOKEN = "[SEP]"
SPECIAL_TOKENS = (UNK_TOKEN, SEP_TOKEN)  # ids 0 and 1, in this order
_MARKER = "\u2581"  # "▁": word-start marker of the Metaspace pre-tokeniser


class TextVocab:
    """A trained subword tokenizer with fixed special ids (``[UNK]`` = 0, ``[SEP]`` = 1)."""

    def __init__(self, tokenizer: Tokenizer, cache_key: str | None = None) -> None:
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            found = tokenizer.token_to_id(token)
            if found != expected_id:
                raise ValueError(f"tokenizer has {token} at id {found}, expected {expected_id}")
        self._tokenizer = tokenizer
        self._json = tokenizer.to_str()
        self.cache_key = cache_key  # the train_text_vocab cache key it was trained/loaded under

    @property
    def tokenizer(self) -> Tokenizer:
        """The wrapped ``tokenizers.Tokenizer``."""
        return self._tokenizer

    @property
    def size(self) -> int:
        """Number of ids (special tokens included): ids are ``0 .. size - 1``."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def unk_id(self) -> int:
        return 0

    @property
    def sep_id(self) -> int:
        return 1

    @property
    def digest(self) -> str:
        """sha256 of the tokenizer's JSON: names this exact vocabulary in records and caches."""
        return hashlib.sha256(self._json.encode("utf-8")).hexdigest()

    def normalize(self, text: str) -> str:
        """The text as the tokenizer sees it (what ``decode(encode(text))`` gives back)."""
        return self._tokenizer.normalizer.normalize_str(text)

    def encode(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
        """Ids of each text (no special tokens added), cut to ``max_tokens`` when given."""
        if max_tokens is not None and max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        if not texts:
            return []
        encodings = self._tokenizer.encode_batch([str(t) for t in texts], add_special_tokens=False)
        return [list(e.ids[:max_tokens] if max_tokens is not None else e.ids) for e in encodings]

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        """Text of ``ids``; ``[SEP]``/``[UNK]`` are shown unless ``skip_special``."""
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def to_json(self) -> str:
        """The tokenizer's JSON (what :meth:`from_json` reads and :attr:`digest` hashes)."""
        return self._json

    @classmethod
    def from_json(cls, text: str, cache_key: str | None = None) -> TextVocab:
        """Load from :meth:`to_json`'s output; ``ValueError`` if it is not a valid vocabulary."""
        try:
            tokenizer = Tokenizer.from_str(text)
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise ValueError(f"not a tokenizer JSON: {exc}") from exc
        return cls(tokenizer, cache_key)

    def __repr__(self) -> str:
        return f"TextVocab(size={self.size}, digest={self.digest[:12]})"


def encode_padded(vocab: TextVocab, texts: list[str], max_tokens: int, offset: int, pad: int) -> torch.LongTensor:
    """``[N, max_tokens]`` ids of ``texts`` shifted by ``offset`` (where the caller's vocabulary puts
    the text tokens: ``offset .. offset + vocab.size - 1``), cut to ``max_tokens``, right-padded
    with ``pad``."""
    out = torch.full((len(texts), max_tokens), int(pad), dtype=torch.long)  # [N, max_tokens]
    for row, ids in enumerate(vocab.encode(texts, max_tokens=max_tokens)):
        if ids:
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long) + int(offset)
    return out


def _new_tokenizer() -> Tokenizer:
    """The untrained tokenizer of :data:`FORMAT_VERSION`."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.NFKD(),
            normalizers.StripAccents(),
            normalizers.NFC(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=_MARKER, prepend_scheme="always", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement=_MARKER, prepend_scheme="always", split=True)
    return tokenizer


def _train(texts: list[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    """Fit a BPE tokenizer to ``texts`` (deterministic: merges are chosen by count, then by id)."""
    tokenizer = _new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def text_vocab_key(texts: list[str], vocab_size: int, min_frequency: int) -> str:
    """Cache key: sha256 of the texts in order, the settings, the recipe and the library version."""
    digest = hashlib.sha256()
    for part in (FORMAT_VERSION, tokenizers.__version__, str(vocab_size), str(min_frequency), str(len(texts))):
        digest.update(part.encode("utf-8") + b"\0")
    for text in texts:
        encoded = str(text).encode("utf-8")
        digest.update(str(len(encoded)).encode("ascii") + b":" + encoded)  # length-prefixed: unambiguous
    return digest.hexdigest()


def train_text_vocab(
    texts: list[str],
    vocab_size: int,
    min_frequency: int = 2,
    cache_dir: str | Path | None = None,
) -> TextVocab:
    """Learn (or load from the cache) a :class:`TextVocab` of at most ``vocab_size`` ids from ``texts``.

    ``min_frequency``: a merge must occur at least this often. ``cache_dir`` defaults to
    ``<recbole_ext cache>/text_vocab``. The returned vocabulary's ``cache_key`` names the entry.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS)} (the special tokens), got {vocab_size}")
    if not texts:
        raise ValueError("texts is empty: nothing to learn a vocabulary from")
    if cache_dir is None:
        from recbole_ext.data.prepare import default_cache_dir

        cache_dir = default_cache_dir() / "text_vocab"
    key = text_vocab_key(texts, vocab_size, min_frequency)
    path = Path(cache_dir) / f"text_vocab.{key[:20]}.json"
    if path.exists():
        try:
            vocab = TextVocab.from_json(path.read_text(encoding="utf-8"), cache_key=key)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            logger.warning("ignoring unreadable text vocabulary cache %s (%s): training again", path, exc)
        else:
            logger.info("text vocabulary loaded from cache %s (%d ids)", path, vocab.size)
            return vocab
    logger.info(
        "training a text vocabulary on %d texts (vocab_size=%d, min_frequency=%d)",
        len(texts),
        vocab_size,
        min_frequency,
    )
    vocab = TextVocab(_train(list(texts), vocab_size, min_frequency), cache_key=key)
    atomic_write_text(path, vocab.to_json())
    logger.info("text vocabulary (%d ids, digest %s) cached in %s", vocab.size, vocab.digest[:12], path)
    return vocab
