"""Command line: ``python -m recbole_ext.sid report --dataset=NAME [--key=value ...]``.

Builds (or reads from the cache) the semantic IDs a generative run on the dataset would use and
logs their report (:mod:`recbole_ext.sid.report`): per-level usage and perplexity, collisions,
prefix fan-out, how often consecutive training items share a prefix, and over-length item text.
Options are those of ``run_benchmark.py``: ``--dataset``, ``--model`` (default TIGER: its family's
tokenizer keys), ``--config_files``, ``--data_path`` and any config key (``--sid_tokenizer=rkmeans``,
``--sid_collision=reassign``, ``--sid_path=FILE``, ...); ``--json=PATH`` also writes the report
(with the tokenizer's own statistics) as JSON.

    python -m recbole_ext.sid report --dataset=scientific2018 --data_path=../shared/datasets \\
        --sid_tokenizer=external --sid_path=../shared/datasets/scientific2018/indexes/scientific2018.rqvae_zcr.index.json
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("recbole_ext.sid")


def sid_report_for(dataset_name: str, model: str = "TIGER", overrides: dict[str, Any] | None = None,
                   config_files: list[str] | None = None) -> dict:
    """The report of the IDs a ``model`` run on ``dataset_name`` would use (built or read from the cache)."""
    from recbole.data import create_dataset, data_preparation

    from recbole_ext import compat
    from recbole_ext.config import ExtConfig, resolve_paths
    from recbole_ext.models.sid_base import dataset_semantic_ids, sid_report
    from recbole_ext.registry import resolve
    from recbole_ext.runner import resolve_dataset

    compat.apply()
    overrides = resolve_paths(dict(overrides or {}))
    data_path = resolve_dataset(dataset_name, overrides.pop("data_path", None))
    config = ExtConfig(resolve(model), dataset_name, config_file_list=[str(Path(f).resolve()) for f in config_files or []],
                       config_dict={"data_path": data_path}, cmd_dict=overrides)
    train, _, _ = data_preparation(config, create_dataset(config))
    dataset = train._dataset
    sids, codes = dataset_semantic_ids(config, dataset)
    field = config["ITEM_ID_FIELD"]
    report = sid_report(sids, codes, dataset, field + config["LIST_SUFFIX"], config["ITEM_LIST_LENGTH_FIELD"], field)
    tokenizer = {k: v for k, v in sids.stats.items() if k not in ("config", "text")}
    return {"dataset": dataset_name, "method": sids.stats.get("method"), "codebook_sizes": list(sids.codebook_sizes),
            "tokenizer": tokenizer, "report": report}


def main(argv: list[str] | None = None) -> int:
    from recbole_ext.cli import UsageError, parse_args
    from recbole_ext.sid.report import format_report

    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] != "report":
        logger.error("usage: python -m recbole_ext.sid report --dataset=NAME [--key=value ...]\n%s", __doc__)
        return 2
    try:
        own, overrides, _ = parse_args(argv[1:])
    except UsageError as exc:
        logger.error("%s", exc)
        return 2
    json_path = overrides.pop("json", None)
    files = own.get("config_files", "").split()
    result = sid_report_for(own.get("dataset", "ml-100k"), own.get("model", "TIGER"), overrides, files)
    logger.info("semantic IDs of %s (%s, sizes %s):\n%s", result["dataset"], result["method"],
                result["codebook_sizes"], format_report(result["report"]))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        logger.info("report written to %s", json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
