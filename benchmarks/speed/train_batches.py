"""Training-batch supply: RecBole's loader (+ copy to the device) vs DeviceBatches (rows kept there).

Times one epoch of batches only (no model), so what is printed is the per-step cost of getting a
batch onto the training device, which ``data_on_device: True`` removes from each step:

    python benchmarks/speed/train_batches.py --dataset=ml-100k --batch 256 --device cpu --threads 1
    python benchmarks/speed/train_batches.py --dataset=scientific2018 --data_path=../shared/datasets \
        --batch 256 --device cuda

Prints ms per batch of each and their ratio (best of ``--repeats`` epochs).
"""

from __future__ import annotations

import argparse
import logging
import time

import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data_path", default=None)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    return p.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_seconds(batches, device: torch.device, to_device: bool) -> tuple[float, int]:
    """Seconds to draw every batch of one epoch onto ``device``, and the number of batches."""
    sync(device)
    start = time.perf_counter()
    n = 0
    for batch in batches:
        if to_device:
            batch = batch.to(device)  # what RecBole's trainer does with each host batch
        n += 1
    sync(device)
    return time.perf_counter() - start, n


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_ext.config import ExtConfig
    from recbole_ext.runner import resolve_dataset
    from recbole_ext.trainers.device_batches import device_batches_for

    device = torch.device(args.device)
    config = ExtConfig("SASRec", args.dataset, config_dict={
        "data_path": resolve_dataset(args.dataset, args.data_path), "train_batch_size": args.batch,
        "use_gpu": device.type == "cuda",
    })
    init_seed(config["seed"], True)
    train, _, _ = data_preparation(config, create_dataset(config))
    resident, why = device_batches_for(train, device)
    if resident is None:
        raise SystemExit(f"DeviceBatches declined: {why}")
    best = {"recbole": float("inf"), "device": float("inf")}
    for _ in range(args.repeats):
        s, n = epoch_seconds(train, device, to_device=True)
        best["recbole"] = min(best["recbole"], s)
        s, n_dev = epoch_seconds(resident, device, to_device=False)
        best["device"] = min(best["device"], s)
    assert n == n_dev, (n, n_dev)
    ms = {k: 1000 * v / n for k, v in best.items()}
    from recbole_ext.provenance import output_header

    print("\n".join(output_header()))
    print(f"dataset={args.dataset} rows={resident.n} batch={args.batch} batches={n} device={device} "
          f"threads={args.threads} (best of {args.repeats} epochs)")
    print(f"RecBole loader + .to(device): {ms['recbole']:8.3f} ms/batch")
    print(f"DeviceBatches (rows on device): {ms['device']:8.3f} ms/batch")
    print(f"ratio: {ms['recbole'] / ms['device']:.1f}x less time per batch")


if __name__ == "__main__":
    main()
