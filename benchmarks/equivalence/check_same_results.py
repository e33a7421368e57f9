"""Do TIGER and STREAM-Rec still write the same numbers? Runs both (tiny sizes, ml-100k, all three
STREAM-Rec stages, one seed, one thread) and compares their records with reference records.

Used to show that a refactoring leaves behaviour unchanged: run it once on the old code to write
the reference records, then on the new code with ``--reference`` pointing at them.

    OMP_NUM_THREADS=1 python benchmarks/equivalence/check_same_results.py --output_dir=OUT_BEFORE
    OMP_NUM_THREADS=1 python benchmarks/equivalence/check_same_results.py --output_dir=OUT_AFTER \
        --reference=OUT_BEFORE

Compared exactly: valid and test metrics, per-user test values (keyed by user token), and for each
stage its name, valid and test metrics and per-user test values. Exit status 1 on any difference,
each difference printed. Timings, paths, run ids and commits are not compared.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("check_same_results")

TINY_T5 = {"d_model": 32, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "d_kv": 16,
           "train_batch_size": 512, "warmup_steps": 100, "epochs": 1, "seed": 2020, "stage_cache": False,
           # RecBole's loader in every stage: before issue 10's fix the RL stage could not keep batches on the
           # device (its batch cap hid the loader), so with True the RL row differs by that fix alone
           "data_on_device": False}
CELLS = {
    "TIGER": dict(TINY_T5),
    "STREAMRec": {**TINY_T5, "reasoning_len": 2, "sft_rounds": 1, "sft_round_epochs": 1, "stages": "pt,sft,rl",
                  "rl_max_batches": 2, "rl_group_size": 4, "rl_hard_negatives": 10},
}


def comparable(record: dict) -> dict:
    """The parts of a record that a behaviour-preserving change must leave identical."""
    out = {"valid": record["valid"], "test": record["test"], "per_user": record.get("per_user")}
    out["stages"] = [{"name": s["name"], "valid": s["valid"], "test": s["test"], "per_user": s.get("per_user")}
                     for s in record.get("stages", [])]
    return out


def differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in {'reference' if k in a else 'new'}" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += differences(x, y, f"{where}[{i}]")
        return out[:20]
    return [] if a == b else [f"{where}: reference {str(a)[:80]} != new {str(b)[:80]}"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--reference", default=None, help="output_dir of an earlier run of this script")
    p.add_argument("--models", default=",".join(CELLS))
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from recbole_ext.runner import run

    failed = False
    for model in args.models.split(","):
        out = Path(args.output_dir)
        path = out / "runs" / "ml-100k" / model / "check.json"
        record = json.loads(path.read_text()) if path.is_file() else run(
            model, "ml-100k", overrides={**CELLS[model], "state": "WARNING"}, output_dir=out, run_id="check")
        if args.reference is None:
            continue
        ref = json.loads((Path(args.reference) / "runs" / "ml-100k" / model / "check.json").read_text())
        diff = differences(comparable(ref), comparable(record))
        failed |= bool(diff)
        print(f"{model}: {'SAME' if not diff else f'{len(diff)} DIFFERENCES'}"
              f" (test {record['test']}; stages {[s['name'] for s in record.get('stages', [])]})")
        for line in diff:
            print("  ", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
