"""Training batches cut from interactions that stay on the training device.

RecBole's ``TrainDataLoader`` builds every batch on the host (a Python list of indices, one
gather per field) and the trainer then copies it to the GPU: for a small T5 that host work and the
copies are a visible share of each step. :class:`DeviceBatches` moves the training interactions to
the device once and cuts each batch there with one gather per field over a device-side permutation,
so a step needs no host work beyond the Python loop.

Only loaders whose batches are plain rows can be replaced: no negative sampling and no RecBole
``transform`` (both build batches on the host). :func:`device_batches_for` says why it declines.
"""

from __future__ import annotations

import logging

import torch
from recbole.data.interaction import Interaction

logger = logging.getLogger(__name__)


class DeviceBatches:
    """Iterate a RecBole training loader's rows in (shuffled) batches, cut on ``device``.

    Same rows, batch size, shuffling switch and last partial batch as the loader; the order comes
    from ``torch.randperm`` on the device (seeded by RecBole's ``init_seed`` like the loader's).
    """

    def __init__(self, loader, device: torch.device | str):
        self.device = torch.device(device)
        self.batch_size = int(loader._batch_size)
        self.shuffle = bool(loader.shuffle)
        self.rows = loader._dataset.inter_feat.to(self.device)  # each field [N, ...] on the device
        self.n = len(self.rows)

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, device=self.device)  # [N]
        else:
            order = torch.arange(self.n, device=self.device)
        fields = self.rows.interaction
        for start in range(0, self.n, self.batch_size):
            index = order[start : start + self.batch_size]  # [b] on the device
            yield Interaction({name: values[index] for name, values in fields.items()})


def device_batches_for(loader, device: torch.device | str) -> tuple[DeviceBatches | None, str]:
    """A :class:`DeviceBatches` for ``loader``, or ``(None, reason)`` when its batches need the host."""
    neg = getattr(loader, "neg_sample_args", None) or {}
    if neg.get("distribution", "none") != "none" and neg.get("sample_num", "none") != "none":
        return None, "the training loader samples negatives"
    if not loader.config["single_spec"]:
        return None, "distributed training shards the rows with RecBole's sampler"
    if loader.config["transform"] is not None:
        return None, f"the training loader applies transform {loader.config['transform']!r}"
    if not hasattr(loader, "_dataset") or not hasattr(loader._dataset, "inter_feat"):
        return None, f"{type(loader).__name__} is not a RecBole training loader"
    return DeviceBatches(loader, device), ""
