"""Rerun a run record from the record itself: ``python -m recbole_ext.reproduce RECORD [--output_dir=DIR] [--run]``.

Prints the command that reproduces the record (``--run``: runs it), the code it needs (``git
checkout`` of the recorded commit; a run made with uncommitted changes says so, with the changes'
digest and files) and the library versions that differ from this environment.

* A record with provenance (every record since its ``provenance`` field) gives its command line
  exactly as typed, and the directory it was typed in.
* An older record gives ``run_benchmark.py --model --dataset --seed`` plus one ``--key=value`` for
  each scalar key whose recorded value differs from today's defaults (RecBole's and
  ``properties/``; ``--key=None`` for a key added since), so today's defaults cannot change what
  reruns. List- and dict-valued keys are
  not compared (RecBole expands some of them), nor is the data folder (machine-specific:
  ``--data_path`` points at the data here).

``--output_dir=DIR`` writes the rerun elsewhere and lets it pick a new run id (records are never
overwritten).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from recbole_ext.config_keys import RUN_LOCAL_KEYS

logger = logging.getLogger("recbole_ext.reproduce")

_SCALARS = (str, int, float, bool, type(None))
#: Keys RecBole derives itself (not options anyone sets), left out of a reconstructed command.
_DERIVED = frozenset({"model", "dataset", "seed", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "single_spec",
                      "local_rank", "is_pretrain", "valid_metric_bigger_flag", "config_file_list"})


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def pinned_keys(record: dict, defaults: dict[str, Any]) -> dict[str, Any]:
    """The record's scalar config values that differ from ``defaults`` (today's), by key; a key
    added to the defaults since the record was made is pinned to None (RecBole read it as None)."""
    config = record.get("config") or {}
    out = {}
    for key in sorted(set(config) | set(defaults)):
        if key in _DERIVED or key in RUN_LOCAL_KEYS or key not in defaults:
            continue
        value, now = config.get(key), defaults[key]
        if not isinstance(value, _SCALARS) or not isinstance(now, _SCALARS):
            continue
        if key not in config and now is None:
            continue
        if not _same(value, now):
            out[key] = value
    return out


def todays_defaults(model: str, dataset: str) -> dict[str, Any]:
    """Every default a run of ``model`` on ``dataset`` would get today (RecBole's, then ours)."""
    from recbole_ext.config import ExtConfig

    return dict(ExtConfig(model, dataset).internal_config_dict)


def _with_output_dir(args: list[str], output_dir: str | None) -> list[str]:
    if output_dir is None:
        return list(args)
    kept = [a for a in args if not a.startswith(("--output_dir=", "--run_id="))]
    return [*kept, f"--output_dir={output_dir}"]


def command_for(record: dict, output_dir: str | None = None,
                defaults: dict[str, Any] | None = None) -> tuple[list[str], str | None, list[str]]:
    """(command, directory to run it from or None, notes) that reproduce ``record``."""
    notes: list[str] = []
    provenance = record.get("provenance") or {}
    if provenance.get("argv"):
        argv = list(provenance["argv"])
        command = ["python", argv[0], *_with_output_dir(argv[1:], output_dir)]
        cwd = provenance.get("cwd")
    else:
        from recbole_ext.benchmark.launch import format_value

        model, dataset = record["model"], record["dataset"]
        defaults = todays_defaults(model, dataset) if defaults is None else defaults
        args = [f"--model={model}", f"--dataset={dataset}", f"--seed={record['seed']}"]
        args += [f"--{k}={format_value(v)}" for k, v in pinned_keys(record, defaults).items()]
        if record.get("run_id") and output_dir is None:
            args.append(f"--run_id={record['run_id']}")
        command, cwd = ["python", "run_benchmark.py", *_with_output_dir(args, output_dir)], None
        data = (record.get("config") or {}).get("data_path")
        notes.append("an older record without its command line: rebuilt from its config (scalar keys that "
                     "differ from today's defaults are pinned; list and dict keys are not compared)")
        if data:
            notes.append(f"it read its data from {data}: add --data_path=FOLDER where {dataset} is on this machine")
    git = provenance.get("git") or {}
    commit = git.get("commit") or str((record.get("versions") or {}).get("git_commit", "")).removesuffix("-dirty")
    if commit and commit != "unknown":
        notes.append(f"code: git checkout {commit}")
    if git.get("dirty") or str((record.get("versions") or {}).get("git_commit", "")).endswith("-dirty"):
        changed = ", ".join(git.get("changed_files") or []) or "not recorded"
        notes.append(f"the run had uncommitted changes (diff sha256 {git.get('diff_sha256') or 'not recorded'}; "
                     f"files: {changed}); the record cannot restore them")
    return command, cwd, notes


def version_differences(record: dict) -> list[str]:
    from recbole_ext.provenance import versions

    then, now = record.get("versions") or {}, versions({})
    skip = {"git_commit"}
    return [f"{k}: {then[k]} (record) vs {now.get(k)} (here)" for k in sorted(then)
            if k not in skip and k in now and then[k] != now.get(k)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_ext.reproduce",
                                     description="print (or run) the command that reproduces a run record")
    parser.add_argument("record", help="a run record: DIR/runs/<dataset>/<model>/<run_id>.json")
    parser.add_argument("--output_dir", help="write the rerun here (with a new run id)")
    parser.add_argument("--run", action="store_true", help="run the command (from the recorded directory "
                                                          "when it exists here, else from this one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        record = json.loads(Path(args.record).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        print(f"error: cannot read the record {args.record}: {error}", file=sys.stderr)
        return 2
    if not isinstance(record, dict) or "model" not in record or "dataset" not in record:
        print(f"error: {args.record} is not a run record (no model/dataset)", file=sys.stderr)
        return 2
    command, cwd, notes = command_for(record, args.output_dir)
    for note in notes + [f"version differs: {d}" for d in version_differences(record)]:
        print(f"# {note}")
    shell = shlex.join(command)
    print(f"cd {shlex.quote(cwd)} && {shell}" if cwd else shell)
    if not args.run:
        return 0
    where = cwd if cwd and Path(cwd).is_dir() else None
    run = [sys.executable, *command[1:]]
    return subprocess.run(run, cwd=where).returncode


if __name__ == "__main__":
    sys.exit(main())
