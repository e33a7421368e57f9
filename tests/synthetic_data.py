"""Synthetic RecBole datasets for tests (a module of its own: ``import conftest`` is ambiguous)."""

from __future__ import annotations

import random
from pathlib import Path


def write_sequences(root: Path, name: str, n_users: int = 40, n_items: int = 30, min_len: int = 5,
                    max_len: int = 9, seed: int = 0) -> Path:
    """Write ``root/name/name.inter`` with random user sequences; returns ``root``."""
    rng = random.Random(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(n_users):
        length = rng.randint(min_len, max_len)
        for step in range(length):
            lines.append(f"u{user}\ti{rng.randrange(n_items)}\t{step + 1}")
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


ITEM_CATEGORIES = ["Tools", "Tapes", "Lab Supplies", "Fasteners"]


def write_item_text(root: Path, name: str, n_items: int = 30, seed: int = 1) -> None:
    """Write ``root/name/name.item``, an Amazon-style item file (title, categories, brand) for text-capable models."""
    rng = random.Random(seed)
    lines = ["item_id:token\ttitle:token_seq\tcategories:token_seq\tbrand:token"]
    lines += [f"i{i}\tWidget model {i} steel\tIndustrial,{rng.choice(ITEM_CATEGORIES)}\tBrand{i % 5}"
              for i in range(n_items)]
    (root / name / f"{name}.item").write_text("\n".join(lines) + "\n", encoding="utf-8")


#: A tiny generative model (random 2+1-level IDs, 1+1-layer T5 of width 16, 1 epoch) on the CPU.
TINY_GENERATIVE = {
    "sid_tokenizer": "random", "sid_levels": 2, "sid_codebook_size": 8,
    "d_model": 16, "d_ff": 32, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "d_kv": 8,
    "train_batch_size": 64, "eval_batch_size": 64, "epochs": 1, "num_beams": 10, "use_gpu": False,
}


def tiny_loaders(model: str, data_path: str, name: str, sid_cache, **overrides):
    """(config, (train, valid, test)) of RecBole for ``model`` with :data:`TINY_GENERATIVE` sizes."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_ext.config import ExtConfig

    config = ExtConfig(model, name, config_dict={"data_path": data_path, "sid_cache_dir": str(sid_cache),
                                                 **TINY_GENERATIVE, **overrides})
    init_seed(config["seed"], True)
    return config, data_preparation(config, create_dataset(config))


def tiny_model(model: str, data_path: str, name: str, sid_cache, **overrides):
    """(config, model, (train, valid, test)): :func:`tiny_loaders` and the registered ``model`` built on them,
    each after seeding."""
    from recbole.utils import init_seed

    from recbole_ext import registry

    entry = registry.resolve(model)
    config, (train, valid, test) = tiny_loaders(entry, data_path, name, sid_cache, **overrides)
    init_seed(config["seed"], True)
    return config, entry.model_class(config, train._dataset), (train, valid, test)
