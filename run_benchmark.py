#!/usr/bin/env python
"""Entry point: ``python run_benchmark.py --model=SASRec --dataset=ml-100k`` (see recbole_ext/cli.py)."""

import sys

from recbole_ext.cli import main

if __name__ == "__main__":
    sys.exit(main())
