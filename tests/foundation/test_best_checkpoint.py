"""The runner tests the checkpoint that was best on validation, not the last one.

``EarlyPeakRec`` (tiny_plugin.py) ranks items by popularity after its first epoch and by
anti-popularity after every later one. On a dataset whose validation and test targets are the four
most popular items, popularity puts each user's target in the top 4 (HR@5 = 1) and
anti-popularity puts it last (HR@10 = 0): so the record's test HR@5 says which weights were tested.
"""

from __future__ import annotations

import random

import pytest

from recbole_ext import registry
from recbole_ext.runner import run

POPULAR = [f"p{k}" for k in range(4)]
SGD = {"learner": "sgd", "learning_rate": 1.0, "weight_decay": 0.0, "train_batch_size": 4096,
       "eval_batch_size": 64, "embedding_size": 4, "use_gpu": False}


@pytest.fixture
def early_peak():
    registry.register("EarlyPeakRec", "foundation.tiny_plugin:EarlyPeakRec", group="traditional")
    yield
    registry.unregister("EarlyPeakRec")


def write_popular_targets(root, name="poptargets"):
    """40 users: three rare items between popular ones, the last two (valid, test targets) popular."""
    rng = random.Random(5)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(40):
        items = [POPULAR[(u + k) % 4] if k % 2 else f"r{rng.randrange(30)}" for k in range(6)]
        items += [POPULAR[u % 4], POPULAR[(u + 1) % 4]]
        lines += [f"u{u}\t{item}\t{t + 1}" for t, item in enumerate(items)]
    (root / name).mkdir(parents=True)
    (root / name / f"{name}.inter").write_text("\n".join(lines) + "\n")
    return str(root), name


def test_the_best_validation_checkpoint_is_tested(early_peak, tmp_path):
    data_path, name = write_popular_targets(tmp_path / "data")
    record = run("EarlyPeakRec", name, overrides={**SGD, "epochs": 4, "eval_step": 1, "stopping_step": 10,
                                                  "data_path": data_path}, output_dir=tmp_path / "out", run_id="best")
    assert record["timings"]["epochs"] == 4  # trained past the peak
    assert record["valid"]["hit@5"] == 1.0  # the best validation round (after epoch 1) ...
    assert record["test"]["hit@5"] == 1.0 and record["test"]["ndcg@10"] > 0.4  # ... is the one tested


def test_without_validation_the_last_weights_are_tested(early_peak, tmp_path):
    """The control: the same training, no validation to select by (eval_step 0, RecBole keeps the last
    epoch), tests anti-popularity, so the test above can tell the two checkpoints apart."""
    data_path, name = write_popular_targets(tmp_path / "data")
    record = run("EarlyPeakRec", name, overrides={**SGD, "epochs": 4, "eval_step": 0, "data_path": data_path},
                 output_dir=tmp_path / "out", run_id="last")
    assert record["test"]["hit@10"] == 0.0
