"""What an RL (GRPO) training step of STREAM-Rec costs next to an SFT step, on the same batches.

Builds STREAM-Rec at the quickstart's tiny size on a dataset, then times ``--batches`` training
steps of each stage on the same training batches (forward, backward, optimizer step; SFT with its
labels collected first, outside the timing; RL with its rollouts, rewards and
``rl_updates_per_batch`` updates, counted as one step per rollout batch). Prints ms per batch of
each and their ratio, best of ``--repeats``:

    OMP_NUM_THREADS=1 python benchmarks/speed/rl_vs_sft_step.py --dataset=ml-100k --threads 1

Extra ``--key=value`` arguments are config overrides (e.g. ``--rl_hard_negatives=10``).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time

import torch

TINY = {"d_model": 32, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "d_kv": 16,
        "train_batch_size": 512, "reasoning_len": 2, "data_on_device": False, "state": "WARNING"}


def parse_args() -> tuple[argparse.Namespace, dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data_path", default=None)
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args, rest = p.parse_known_args()
    overrides = dict(a[2:].split("=", 1) for a in rest if a.startswith("--") and "=" in a)
    return args, overrides


def time_stage(trainer, stage, model, batches, repeats: int) -> float:
    """Best-of-``repeats`` seconds per batch of ``stage`` over ``batches`` (one optimizer per repeat)."""
    best = float("inf")
    for _ in range(repeats):
        trainer.start_stage(stage)
        stage.begin(model)
        if stage.name == "sft":
            model.collect_labels(batches)  # the stage's labelling round, not timed
        stage.train_mode(model)
        start = time.perf_counter()
        for batch in stage.batches(batches, 0):
            trainer.optimizer.zero_grad()
            stage.loss(model, batch).backward()
            trainer.optimizer.step()
        best = min(best, (time.perf_counter() - start) / len(batches))
    return best


def main() -> None:
    args, overrides = parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_ext.config import ExtConfig
    from recbole_ext.registry import resolve
    from recbole_ext.runner import resolve_dataset
    from recbole_ext.trainers.staged import StagedTrainer

    resolved = resolve("STREAMRec")
    config = ExtConfig(resolved, args.dataset, config_dict={
        "data_path": resolve_dataset(args.dataset, args.data_path), "stage_cache": False, **TINY},
        cmd_dict=overrides)
    init_seed(config["seed"], True)
    train, _, _ = data_preparation(config, create_dataset(config))
    model = resolved.model_class(config, train._dataset)
    trainer = StagedTrainer(config, model)
    batches = list(itertools.islice(train, args.batches))
    stages = {s.name: s for s in trainer.stages}
    sft = time_stage(trainer, stages["sft"], model, batches, args.repeats)
    rl = time_stage(trainer, stages["rl"], model, batches, args.repeats)
    g, updates, negatives = config["rl_group_size"], config["rl_updates_per_batch"], config["rl_hard_negatives"]
    from recbole_ext.provenance import output_header

    print("\n".join(output_header()))
    print(f"dataset {args.dataset}, batch {config['train_batch_size']}, l={config['reasoning_len']}, "
          f"G={g}, updates per rollout batch {updates}, hard negatives {negatives}, {args.threads} thread(s)")
    print(f"SFT step   {1000 * sft:9.1f} ms/batch")
    print(f"RL step    {1000 * rl:9.1f} ms/batch")
    print(f"RL / SFT   {rl / sft:9.2f}x")


if __name__ == "__main__":
    main()
