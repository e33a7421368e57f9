"""Decoder/encoder token layout for semantic-ID (SID) models.

Layout (shared by TIGER, STREAM-Rec, LASAR, TwiSTAR)::

    0                      pad
    1                      eos
    2                      bos  (decoder_start_token_id of the T5 backbone)
    offsets[0] + c         code c (0 <= c < codebook_sizes[0]) of level 0
    offsets[1] + c         code c of level 1
    ...
    offsets[m-1] + c       code c of the last level (the collision code)
    extra_offset + j       j-th extra token (0 <= j < n_extra), e.g. a text vocabulary

with ``offsets[0] = 3`` and ``offsets[l+1] = offsets[l] + codebook_sizes[l]``. A level's tokens are
one contiguous range, so a decoding step at level ``l`` only needs the logits slice
``[offsets[l], offsets[l] + codebook_sizes[l])``. Items are never tokens: an item is the sequence
of its m code tokens, and RecBole's padding item maps to m ``pad`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

PAD_TOKEN = 0
EOS_TOKEN = 1
BOS_TOKEN = 2
N_SPECIAL = 3


@dataclass(frozen=True)
class SIDVocab:
    """Token layout for semantic IDs with ``len(codebook_sizes)`` levels."""

    codebook_sizes: tuple[int, ...]
    n_extra: int = 0
    pad: int = PAD_TOKEN
    eos: int = EOS_TOKEN
    bos: int = BOS_TOKEN
    offsets: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        sizes = tuple(int(s) for s in self.codebook_sizes)
        if not sizes or min(sizes) < 1:
            raise ValueError(f"codebook_sizes must be non-empty and positive, got {sizes}")
        object.__setattr__(self, "codebook_sizes", sizes)
        offsets, off = [], N_SPECIAL
        for s in sizes:
            offsets.append(off)
            off += s
        object.__setattr__(self, "offsets", tuple(offsets))

    @property
    def n_levels(self) -> int:
        """m, the number of code tokens per item."""
        return len(self.codebook_sizes)

    @property
    def extra_offset(self) -> int:
        """First id after the code tokens (start of the optional extra tokens)."""
        return self.offsets[-1] + self.codebook_sizes[-1]

    @property
    def vocab_size(self) -> int:
        return self.extra_offset + self.n_extra

    def level_range(self, level: int) -> tuple[int, int]:
        """[start, end) token ids of one level."""
        return self.offsets[level], self.offsets[level] + self.codebook_sizes[level]

    def code_range(self) -> tuple[int, int]:
        """[start, end) token ids of all code tokens of all levels."""
        return self.offsets[0], self.extra_offset

    def offsets_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.tensor(self.offsets, dtype=torch.long, device=device)  # [m]

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [..., m] -> tokens [..., m]; negative codes (padding) -> pad."""
        if codes.shape[-1] != self.n_levels:
            raise ValueError(f"expected last dim {self.n_levels}, got {tuple(codes.shape)}")
        tokens = codes + self.offsets_tensor(codes.device)
        return torch.where(codes < 0, torch.full_like(codes, self.pad), tokens)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [..., m] -> codes [..., m]; a token outside its level's range -> -1."""
        if tokens.shape[-1] != self.n_levels:
            raise ValueError(f"expected last dim {self.n_levels}, got {tuple(tokens.shape)}")
        off = self.offsets_tensor(tokens.device)
        sizes = torch.tensor(self.codebook_sizes, dtype=torch.long, device=tokens.device)
        codes = tokens - off
        return torch.where((codes >= 0) & (codes < sizes), codes, torch.full_like(codes, -1))

    def item_token_table(self, codes: torch.Tensor, pad_row: bool = False) -> torch.Tensor:
        """Per-item token table [n, m] (optionally with a leading all-pad row for item id 0)."""
        table = self.encode(codes.long())
        if pad_row:
            table = torch.cat([table.new_full((1, self.n_levels), self.pad), table], dim=0)
        return table

    @staticmethod
    def history_tokens(item_token_table: torch.Tensor, item_seq: torch.Tensor) -> torch.Tensor:
        """Item ids [B, L] -> flattened encoder tokens [B, L*m] via a table [n_items, m].

        Row 0 of the table must be the padding item (all pad tokens), as RecBole pads with 0.
        """
        b, l = item_seq.shape
        return item_token_table[item_seq].reshape(b, l * item_token_table.shape[1])
