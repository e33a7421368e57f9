"""Command line: ``python -m recbole_ext.data {list,prepare} ...``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .catalog import CATALOG, resolve_url
from .prepare import prepare_dataset


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the sub-command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m recbole_ext.data")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the known datasets and their source URLs")
    prep = sub.add_parser("prepare", help="download (if needed) and convert a dataset")
    prep.add_argument("name", help=f"one of: {', '.join(sorted(CATALOG))}")
    prep.add_argument("--raw_dir", help="folder holding already-downloaded raw files")
    prep.add_argument("--data_path", help="folder with offline/prepared datasets (read only)")
    prep.add_argument("--cache_dir", help="where prepared files go (default ~/.cache/recbole_ext)")
    prep.add_argument("--base_url", help="mirror replacing the official base URL")
    prep.add_argument("--no_download", action="store_true", help="never use the network")
    prep.add_argument("--force", action="store_true", help="rebuild even if prepared")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("recbole_ext.data")

    if args.command == "list":
        for name, spec in sorted(CATALOG.items()):
            urls = " ".join(resolve_url(spec, f) for f in spec.files) or spec.source
            log.info("%-15s %s", name, urls)
        return 0
    try:
        result = prepare_dataset(
            args.name,
            args.data_path,
            not args.no_download,
            raw_dir=args.raw_dir,
            cache_dir=args.cache_dir,
            base_url=args.base_url,
            force=args.force,
        )
    except (KeyError, FileNotFoundError, RuntimeError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    log.info("data_path=%s", result.data_path)
    log.info("stats %s", json.dumps(result.stats.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
