"""Benchmark suites, run-record collection, statistics, tables and plots.

Importing this package is cheap: it imports neither RecBole, torch, scipy nor matplotlib.
The two entry points the runner wires in are loaded lazily::

    from recbole_ext.benchmark import run_suite, build_tables
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_tables", "load_suite", "run_suite"]


def __getattr__(name: str) -> Any:  # PEP 562 lazy attributes
    if name == "load_suite":
        from recbole_ext.benchmark import suite

        return suite.load_suite
    if name == "run_suite":
        from recbole_ext.benchmark import launch

        return launch.run_suite
    if name == "build_tables":
        from recbole_ext.benchmark import report

        return report.build_tables
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
