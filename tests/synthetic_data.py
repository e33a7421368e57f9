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
