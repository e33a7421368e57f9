"""Command line of ``run_benchmark.py``.

    python run_benchmark.py --model=SASRec --dataset=ml-100k [--epochs=1 --learning_rate=0.003 ...]
    python run_benchmark.py --model=TIGER --dataset=ml-100k --nproc=4   (data-parallel: 4 GPUs, or 4 CPU ranks)
    python run_benchmark.py --suite=quickstart [--output_dir=DIR] [--gpus=0,1]
    python run_benchmark.py --tables [--output_dir=DIR] [--suite=NAME]   (NAME: that suite's cells and table options)
    python run_benchmark.py --list

A single run rebuilds the tables of its output folder afterwards (``--no_tables`` skips that; suites
pass it and rebuild once at the end).

Our own flags are consumed here; every other ``--key=value`` is a RecBole config override with the
highest precedence (see :mod:`recbole_ext.config`).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

logger = logging.getLogger("recbole_ext")

USAGE = __doc__

# Flags of the runner itself (never passed to RecBole's config).
OWN_FLAGS = ("model", "dataset", "config_files", "output_dir", "run_id", "suite", "gpus", "launcher", "nproc",
             "gpus_per_cell")
SWITCHES = ("tables", "list", "help", "no_tables")  # no_tables: suites rebuild tables once at the end
DEFAULT_OUTPUT_DIR = "results"
DEFAULT_DATASET = "ml-100k"


class UsageError(ValueError):
    """A malformed command line."""


def parse_args(argv: list[str]) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """Split ``argv`` into (our flags, RecBole overrides, switches)."""
    own: dict[str, str] = {}
    overrides: dict[str, str] = {}
    switches: set[str] = set()
    for arg in argv:
        if arg in ("-h", "--help"):
            switches.add("help")
            continue
        if not arg.startswith("--"):
            raise UsageError(f"unexpected argument {arg!r}: options are written --key=value")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if key in SWITCHES:
                switches.add(key)
                continue
            raise UsageError(f"option {arg!r} needs a value: write --{key}=VALUE")
        if not key:
            raise UsageError(f"malformed option {arg!r}")
        target = own if key in OWN_FLAGS else overrides
        if key in target and target[key] != value:
            raise UsageError(f"--{key} given twice with different values")
        target[key] = value
    return own, overrides, switches


def _list_models_and_datasets() -> None:
    from recbole_ext.registry import builtin_model_names, plugin_names

    print("plugins:", ", ".join(plugin_names()) or "(none)")
    print("RecBole built-ins:", ", ".join(builtin_model_names()))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        own, overrides, switches = parse_args(argv)
    except UsageError as error:
        print(f"error: {error}\n{USAGE}", file=sys.stderr)
        return 2
    if "help" in switches:
        print(USAGE)
        return 0
    if "list" in switches:
        _list_models_and_datasets()
        return 0
    output_dir = os.path.expanduser(own.get("output_dir", DEFAULT_OUTPUT_DIR))  # a relative one is the cwd's
    # progress of suites and table writing (a single run sets up its own log file as well)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if "tables" in switches:
        return _build_tables(output_dir, own.get("suite"))
    if "suite" in own:
        return _run_suite(own, overrides, output_dir)
    if "model" not in own:
        print(f"error: give --model=NAME (or --suite=NAME, --tables, --list)\n{USAGE}", file=sys.stderr)
        return 2
    return _run_one(own, overrides, output_dir, rebuild_tables="no_tables" not in switches,
                    argv=[sys.argv[0] if sys.argv else "run_benchmark.py", *argv])


def _run_one(own: dict[str, str], overrides: dict[str, Any], output_dir: str, rebuild_tables: bool = True,
             argv: list[str] | None = None) -> int:
    from recbole_ext.runner import run

    config_files = own.get("config_files", "").split()
    try:
        nproc = _positive_int(own.get("nproc", "1"), "nproc")
        record = run(
            own["model"],
            own.get("dataset", DEFAULT_DATASET),
            overrides=overrides,
            config_files=config_files,
            output_dir=output_dir,
            run_id=own.get("run_id"),
            argv=argv,
            nproc=nproc,
        )
    except _our_errors() as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error  # no repr quotes
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(_format_metrics(record))
    if rebuild_tables:
        _build_tables(output_dir)
    return 0


def _positive_int(value: str, flag: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(f"--{flag} must be a positive integer, got {value!r}")
    return number


def _our_errors() -> tuple[type[BaseException], ...]:
    """The errors whose message says what to change: shown as one ``error:`` line, exit code 2
    (anything else is a bug and keeps its traceback)."""
    from recbole_ext.benchmark.records import RecordExistsError
    from recbole_ext.config import ConfigFileError
    from recbole_ext.data import DownloadError
    from recbole_ext.distributed import DistributedRunError
    from recbole_ext.registry import UnknownModelError
    from recbole_ext.runner import UnknownDatasetError
    from recbole_ext.sid.external import SIDFileError
    from recbole_ext.trainers.generative import NonFiniteLossError
    from recbole_ext.trainers.stages import MissingConfigKeyError
    from recbole_ext.validate import ConfigValueError

    return (UnknownModelError, UnknownDatasetError, ConfigFileError, ConfigValueError, RecordExistsError,
            DownloadError, SIDFileError, NonFiniteLossError, MissingConfigKeyError, FileNotFoundError,
            DistributedRunError, UsageError)


def _format_metrics(record: dict) -> str:
    metrics = record["test"]
    values = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if v is not None)
    return f"{record['model']} on {record['dataset']} (run {record['run_id']}) test: {values}"


def _build_tables(output_dir: str, suite: str | None = None) -> int:
    """Tables of every record in ``output_dir``, or with ``suite`` of that suite's cells with its table options."""
    from pathlib import Path

    from recbole_ext.benchmark import build_tables

    if suite and not (Path(output_dir) / "suites" / suite / "suite.json").is_file():
        ran = sorted(p.parent.name for p in (Path(output_dir) / "suites").glob("*/suite.json"))
        print(f"error: no suite {suite!r} ran into {output_dir} (suites there: {', '.join(ran) or 'none'}); "
              "leave out --suite to tabulate every record", file=sys.stderr)
        return 2
    for path in build_tables(output_dir, suite):
        logger.info("table written: %s", path)
    return 0


def _run_suite(own: dict[str, str], overrides: dict[str, Any], output_dir: str) -> int:
    from recbole_ext.benchmark import run_suite

    gpus = [g for g in own.get("gpus", "").split(",") if g] or None
    try:
        per_cell = _positive_int(own["gpus_per_cell"], "gpus_per_cell") if "gpus_per_cell" in own else None
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return run_suite(
        own["suite"], output_dir, gpus=gpus, launcher=own.get("launcher", "local"), extra_overrides=overrides or None,
        gpus_per_cell=per_cell,
    )
