"""Execute a suite's cells: one process per cell, resumable, failure-isolated, scalable.

:func:`run_suite` parses a suite (``suite.py``), runs its unfinished cells (:class:`SuiteRun`,
each cell's command from :func:`default_command`) and then rebuilds its tables (``report.py``).

Files under ``DIR/suites/<name>/``:

- ``suite.json``: the expanded suite (cells with ids, labels, groups; table options), read by
  ``tables.build_tables`` to label rows.
- ``state.jsonl``: one line appended (and fsynced) per finished cell: id, status, seconds,
  return code. A ``kill -9`` of the suite loses at most the cells in flight.
- ``logs/<cell id>.log``: the cell's stdout and stderr.

- ``failed/<cell id>.failed.json``: a failing cell's failure record (status "failed", return
  code, command, the log's last lines); removed when a rerun of the cell succeeds. Kept out of
  ``DIR/runs`` so that record readers never mistake it for a run.

A cell is finished when a record with its id exists under ``DIR/runs`` (the runner writes it
atomically); a rerun skips those and retries failed cells. A failing cell never stops the
other cells.

Launchers: ``local`` runs cells as subprocesses, one per slot (``gpus`` names the slots and
sets ``CUDA_VISIBLE_DEVICES``; no gpus = one slot); on Linux a cell dies with the suite process
(``PR_SET_PDEATHSIG``), so ``kill -9`` of the suite leaves no orphaned cell behind. ``slurm``
submits each cell as a Slurm job through submitit (optional dependency); ``submitit-local`` uses
submitit's LocalExecutor (local subprocesses, for testing).

Several GPUs per cell (``gpus_per_cell``: ``--gpus_per_cell=N`` or ``slurm: {gpus_per_cell: N}`` in the
suite): each cell runs data-parallel, ``run_benchmark.py ... --nproc=N`` (:mod:`recbole_ext.distributed`).
Locally ``--gpus`` is cut into slots of N GPUs (``--gpus=0,1,2,3 --gpus_per_cell=2``: cells on 0,1 and on
2,3); on Slurm each job asks for one node, one task and N GPUs (``gpus_per_node``), and the cell starts
its N ranks inside that allocation.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recbole_ext.atomic import atomic_write_text
from recbole_ext.benchmark.collect import FAILED_SUFFIX, index_records, read_record
from recbole_ext.benchmark.suite import REPO_ROOT, Cell, Suite, SuiteError, adopt_aliases, load_suite
from recbole_ext.benchmark.staleness import stale_defaults, stale_message
from recbole_ext.logs import strip_ansi

logger = logging.getLogger(__name__)

TAIL_LINES = 40
_EPOCH = re.compile(r"\bepoch\s+(\d+)\s+(training|evaluating)", re.IGNORECASE)
_STAGE = re.compile(r"\bstage[\s:=]+([A-Za-z0-9_]+)", re.IGNORECASE)

LAUNCHERS = ("local", "slurm", "submitit-local")


@dataclass
class CellResult:
    cell: Cell
    ok: bool
    returncode: int | None
    elapsed_s: float
    error: str = ""


# ----------------------------------------------------------------------------- commands


CommandBuilder = Callable[[Cell, Path], list[str]]


def format_value(value: Any) -> str:
    """A value as RecBole's command-line parser reads it back (it ``eval``s literals)."""
    if isinstance(value, str):
        return value
    return repr(value)


def default_command(cell: Cell, output_dir: Path) -> list[str]:
    """The command that runs one cell: ``python run_benchmark.py --model=M --dataset=D --seed=S
    --output_dir=DIR --run_id=ID --no_tables --key=value ...`` (overrides in sorted order; tables
    are rebuilt once, after the suite)."""
    cmd = [sys.executable, str(REPO_ROOT / "run_benchmark.py"), f"--model={cell.model}",
           f"--dataset={cell.dataset}", f"--seed={cell.seed}", f"--output_dir={output_dir}",
           f"--run_id={cell.id}", "--no_tables"]
    cmd += [f"--{k}={format_value(v)}" for k, v in sorted(cell.overrides.items())]
    return cmd


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else \
        f"{s // 60}m{s % 60:02d}s"


def _atomic_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


# Run in a fresh interpreter in front of a cell's command (Linux): ask the kernel to SIGKILL the
# cell when the suite process that started it dies, even by ``kill -9``, so that no orphaned cell
# keeps a GPU busy or races the rerun; then exec the real command.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(137)  # the suite died before prctl took effect\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def die_with_parent(cmd: Sequence[str]) -> list[str]:
    """``cmd`` wrapped so that it is killed when this process dies (Linux; unchanged elsewhere)."""
    if not sys.platform.startswith("linux"):
        return list(cmd)
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *cmd]


def run_cell_process(cmd: Sequence[str], log_path: str, env: dict[str, str] | None = None,
                     on_line: Callable[[str], None] | None = None,
                     live: set[subprocess.Popen] | None = None) -> tuple[int, str]:
    """Run one cell command, teeing its output to ``log_path``; returns (rc, output tail).

    ``live`` (if given) holds the process while it runs, so that the caller can kill it.
    Module-level so that submitit can pickle it for a cluster job.
    """
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONUNBUFFERED", "1")  # stream progress lines through the pipe
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"# {_now()} {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, text=True, errors="replace", bufsize=1)
        assert proc.stdout is not None
        if live is not None:
            live.add(proc)
        try:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                tail.append(line.rstrip("\n"))
                if on_line is not None:
                    on_line(line)
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if live is not None:
                live.discard(proc)
    return rc, "\n".join(tail)


class SuiteRun:
    """Runs a parsed suite's cells into an output directory."""

    def __init__(self, suite: Suite, output_dir: Path,
                 command_builder: CommandBuilder, gpus_per_cell: int | None = None) -> None:
        self.suite = suite
        per_cell = gpus_per_cell or self.suite.slurm.get("gpus_per_cell") or 1
        if int(per_cell) < 1:
            raise ValueError(f"gpus_per_cell must be a positive integer, got {per_cell!r}")
        self.gpus_per_cell = int(per_cell)
        self.out = Path(output_dir).resolve()
        self.sdir = self.out / "suites" / suite.name
        self.build = command_builder
        self._lock = threading.Lock()
        self._durations: list[float] = []
        self._done = 0
        self._t0 = time.monotonic()
        self._n_slots = 1
        self._total = len(suite.cells)
        self._todo = 0
        self._live: set[subprocess.Popen] = set()
        self._stopping = False

    def _command(self, cell: Cell) -> list[str]:
        """The cell's command; with several GPUs per cell it runs on that many ranks (``--nproc``)."""
        cmd = list(self.build(cell, self.out))
        return cmd + [f"--nproc={self.gpus_per_cell}"] if self.gpus_per_cell > 1 else cmd

    def _gpu_slots(self, gpus: list[str]) -> list[str | None]:
        """``gpus`` cut into slots of ``gpus_per_cell`` (each a CUDA_VISIBLE_DEVICES value); [None]: no GPUs named."""
        n = self.gpus_per_cell
        if not gpus:
            return [None]
        if len(gpus) < n:
            raise ValueError(f"--gpus names {len(gpus)} GPU(s) but each cell needs gpus_per_cell={n}")
        if len(gpus) % n:
            logger.warning("GPUs %s are left idle: %d GPUs do not split into slots of %d", ",".join(gpus[-(len(gpus) % n):]),
                           len(gpus), n)
        return [",".join(gpus[i:i + n]) for i in range(0, len(gpus) - n + 1, n)]

    # -- bookkeeping ------------------------------------------------------------------------

    def _position(self, cell: Cell) -> str:
        return f"{self.suite.cells.index(cell) + 1}/{self._total}"

    def _append_state(self, res: CellResult) -> None:
        line = json.dumps({"time": _now(), "cell": res.cell.id, "model": res.cell.model,
                           "dataset": res.cell.dataset, "seed": res.cell.seed,
                           "status": "ok" if res.ok else "failed",
                           "returncode": res.returncode, "elapsed_s": round(res.elapsed_s, 3)})
        with self._lock, open(self.sdir / "state.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _adopt_stored_ids(self) -> None:
        """Cells a previous run stored under ids of an older scheme keep them as aliases."""
        path = self.sdir / "suite.json"
        try:
            stored = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        except FileNotFoundError:
            return
        except (OSError, json.JSONDecodeError, AttributeError) as exc:
            logger.warning("cannot read the stored suite manifest %s (%s): finished cells are "
                           "recognised by their current ids only", path, exc)
            return
        n = adopt_aliases(self.suite, stored if isinstance(stored, list) else [])
        if n:
            logger.info("%d cells keep the ids a previous run stored them under (aliases in %s)",
                        n, path)

    def _record_path(self, cell: Cell) -> Path | None:
        runs = self.out / "runs"
        hits = [p for i in cell.ids for p in runs.glob(f"*/*/{i}.json")] or [
            p for i in cell.ids for p in runs.rglob(f"{i}.json")]
        for p in hits:
            if read_record(p) is not None:
                return p
        return None

    def _failure_path(self, cell: Cell) -> Path:
        return self.sdir / "failed" / f"{cell.id}{FAILED_SUFFIX}"

    def _finish(self, cell: Cell, rc: int | None, tail: str, elapsed: float,
                cmd: Sequence[str]) -> CellResult:
        record = self._record_path(cell)
        # The record is the truth: a cell that wrote it counts as done even if the process
        # failed afterwards (e.g. while rebuilding tables).
        ok = record is not None
        if ok and rc != 0:
            logger.warning("cell %s exited with %s after writing its record %s", cell.id, rc,
                           record)
        error = ""
        if not ok:
            error = tail if rc != 0 else (tail + "\nthe cell exited 0 but wrote no record "
                                          f"with run_id {cell.id}").strip()
            _atomic_json(self._failure_path(cell), {
                "schema_version": 1, "run_id": cell.id, "status": "failed",
                "model": cell.model, "dataset": cell.dataset, "seed": cell.seed,
                "overrides": cell.overrides, "label": cell.label, "suite": self.suite.name,
                "returncode": rc, "command": list(cmd), "error": error,
                "log": str(self.sdir / "logs" / f"{cell.id}.log"),
                "elapsed_s": elapsed, "created": _now()})
        else:
            self._failure_path(cell).unlink(missing_ok=True)
        res = CellResult(cell, ok, rc, elapsed, error)
        self._append_state(res)
        with self._lock:
            self._done += 1
            self._durations.append(elapsed)
            left = self._todo - self._done
            eta = (sum(self._durations) / len(self._durations)) * left / self._n_slots
            done = self._done
        status = "done" if ok else f"FAILED (rc={rc})"
        logger.info("cell %s %s/%s seed %s %s in %s | %d/%d run, elapsed %s, ETA %s",
                    self._position(cell), cell.model, cell.dataset, cell.seed, status,
                    _fmt_s(elapsed), done, self._todo, _fmt_s(time.monotonic() - self._t0),
                    _fmt_s(eta))
        if not ok:
            last = error.strip().splitlines()[-3:]
            logger.warning("cell %s failed; last lines:\n  %s\n(full log: %s)", cell.id,
                           "\n  ".join(last), self.sdir / "logs" / f"{cell.id}.log")
        return res

    def _progress_hook(self, cell: Cell) -> Callable[[str], None]:
        pos = self._position(cell)
        last_stage: list[str] = []

        def on_line(line: str) -> None:
            text = strip_ansi(line)
            m = _EPOCH.search(text)
            if m and m.group(2).lower() == "training":
                logger.info("cell %s %s/%s: epoch %s", pos, cell.model, cell.dataset, m.group(1))
                return
            s = _STAGE.search(text)
            if s and s.group(1) not in last_stage[-1:]:  # log stage changes only
                last_stage.append(s.group(1))
                logger.info("cell %s %s/%s: stage %s", pos, cell.model, cell.dataset, s.group(1))

        return on_line

    # -- entry point ------------------------------------------------------------------------

    def run(self, gpus: Sequence[str] | None = None, launcher: str = "local") -> list[CellResult]:
        """Run the unfinished cells; returns the failed ones."""
        if launcher not in LAUNCHERS:
            raise ValueError(f"unknown launcher {launcher!r}; available: {list(LAUNCHERS)}")
        self.sdir.mkdir(parents=True, exist_ok=True)
        self._adopt_stored_ids()
        _atomic_json(self.sdir / "suite.json", self.suite.manifest())
        index = index_records(self.out)
        finished = {c.id: next(index[i] for i in c.ids if i in index)
                    for c in self.suite.cells if any(i in index for i in c.ids)}
        todo = [c for c in self.suite.cells if c.id not in finished]
        for cell in self.suite.cells:
            if cell.id in finished:
                record = read_record(finished[cell.id]) or {}
                changes = stale_defaults(cell.model, cell.dataset, cell.overrides, record)
                if changes:
                    logger.warning(stale_message(cell.id, finished[cell.id], changes))
        skipped = len(self.suite.cells) - len(todo)
        logger.info("suite %s: %d cells, %d finished already (skipped), %d to run -> %s",
                    self.suite.name, len(self.suite.cells), skipped, len(todo), self.out)
        self._todo, self._t0 = len(todo), time.monotonic()
        if not todo:
            return []
        if launcher == "local":
            results = self._run_local(todo, list(gpus) if gpus else [])
        else:
            if gpus:
                logger.warning("--gpus is ignored by launcher %s (Slurm assigns GPUs: set "
                               "'slurm: {gpus_per_node: 1}' in the suite)", launcher)
            results = self._run_submitit(todo, cluster=launcher == "slurm")
        failed = [r for r in results if not r.ok]
        logger.info("suite %s finished in %s: %d ok, %d failed", self.suite.name,
                    _fmt_s(time.monotonic() - self._t0), len(results) - len(failed), len(failed))
        if failed:
            logger.warning("failed cells (details in %s; a rerun retries them): %s",
                           self.sdir / "failed", ", ".join(r.cell.id for r in failed))
        return failed

    def _run_local(self, todo: list[Cell], gpus: list[str]) -> list[CellResult]:
        slots: queue.Queue[str | None] = queue.Queue()
        gpu_slots = self._gpu_slots(gpus)
        for g in gpu_slots:
            slots.put(g)
        self._n_slots = len(gpu_slots)

        def work(cell: Cell) -> CellResult | None:
            slot = slots.get()
            try:
                if self._stopping:
                    return None
                env = dict(os.environ)
                if slot is not None:
                    env["CUDA_VISIBLE_DEVICES"] = str(slot)
                cmd = self._command(cell)
                logger.info("cell %s start %s/%s seed %s%s", self._position(cell), cell.model,
                            cell.dataset, cell.seed, f" on GPU {slot}" if slot is not None else "")
                t0 = time.monotonic()
                try:
                    rc, tail = run_cell_process(die_with_parent(cmd),
                                                str(self.sdir / "logs" / f"{cell.id}.log"),
                                                env, self._progress_hook(cell), self._live)
                except OSError as exc:  # e.g. the interpreter or script is missing
                    rc, tail = 127, f"cannot start {cmd[0]}: {exc}"
                return self._finish(cell, rc, tail, time.monotonic() - t0, cmd)
            finally:
                slots.put(slot)

        pool = ThreadPoolExecutor(max_workers=self._n_slots)
        futures = [pool.submit(work, c) for c in todo]
        try:
            return [r for r in (f.result() for f in futures) if r is not None]
        except BaseException:  # Ctrl-C / SIGTERM: stop queued cells, kill running ones
            self._stopping = True
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in list(self._live):
                proc.kill()
            logger.warning("suite %s interrupted; running cells were killed (rerun resumes)",
                           self.suite.name)
            raise
        finally:
            pool.shutdown(wait=True)

    def _run_submitit(self, todo: list[Cell], cluster: bool) -> list[CellResult]:
        try:
            import submitit
        except ImportError as exc:
            raise ImportError("the slurm launchers need submitit: pip install submitit==1.5.4"
                              ) from exc
        folder = self.sdir / "submitit"
        params = {k: v for k, v in self.suite.slurm.items() if k != "gpus_per_cell"}  # ours, not submitit's
        if cluster:
            executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
            params.setdefault("name", f"recbole-ext-{self.suite.name}")
            if self.gpus_per_cell > 1:  # one node, one task that starts the cell's ranks, N GPUs
                params.update(nodes=1, tasks_per_node=1, gpus_per_node=self.gpus_per_cell)
        else:
            executor = submitit.LocalExecutor(folder=folder)
            # Local testing stand-in for Slurm: no GPU scheduling, only the time limit.
            params = {k: v for k, v in params.items() if k == "timeout_min"}
        if params:
            executor.update_parameters(**params)
        jobs = []
        for cell in todo:
            cmd = self._command(cell)
            log = str(self.sdir / "logs" / f"{cell.id}.log")
            job = executor.submit(run_cell_process, cmd, log, None, None)
            logger.info("cell %s submitted %s/%s seed %s as job %s", self._position(cell),
                        cell.model, cell.dataset, cell.seed, job.job_id)
            jobs.append((cell, cmd, job, time.monotonic()))
        results: list[CellResult] = []
        pending = list(jobs)
        while pending:
            still = []
            for cell, cmd, job, t0 in pending:
                if not job.done():
                    still.append((cell, cmd, job, t0))
                    continue
                try:
                    rc, tail = job.result()
                except Exception as exc:  # job crashed, was cancelled or timed out
                    rc, tail = None, f"{type(exc).__name__}: {exc}"
                results.append(self._finish(cell, rc, tail, time.monotonic() - t0, cmd))
            pending = still
            if pending:
                time.sleep(0.5)
        return results


# ----------------------------------------------------------------------------- entry point


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM (Slurm time limit, ``kill``) into SystemExit so running cells are killed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_suite(suite: str, output_dir: str, gpus: list[str] | None = None,
              launcher: str = "local", extra_overrides: dict[str, Any] | None = None, *,
              command_builder: CommandBuilder | None = None, tables: bool = True,
              gpus_per_cell: int | None = None) -> int:
    """Run every unfinished cell of ``suite`` into ``output_dir``, then rebuild its tables.

    ``gpus`` (e.g. ``["0", "1"]``) runs one cell per GPU at a time (``CUDA_VISIBLE_DEVICES``
    per subprocess); ``launcher`` is ``"local"``, ``"slurm"`` (submitit) or
    ``"submitit-local"`` (submitit's LocalExecutor, for testing). ``gpus_per_cell`` (default: the
    suite's ``slurm: {gpus_per_cell: N}``, else 1) runs each cell data-parallel on N GPUs (``--nproc=N``).
    ``command_builder`` replaces
    :func:`default_command` (tests use a fake cell script). Returns 0 when every cell has a
    record, 1 when some cell failed, 2 when the suite itself is invalid.
    """
    try:
        parsed = load_suite(suite, extra_overrides)
    except SuiteError as exc:
        logger.error("%s", exc)
        return 2
    try:
        run = SuiteRun(parsed, Path(output_dir), command_builder or default_command, gpus_per_cell)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    try:
        with _sigterm_as_exit():
            failed = run.run(gpus=gpus, launcher=launcher)
    except (ImportError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    if tables:
        from recbole_ext.benchmark.report import build_tables

        try:
            build_tables(output_dir, suite=parsed.name)
        except Exception:  # a table bug must not hide the records that were produced
            logger.exception("building tables failed (records are kept under %s)", output_dir)
            return 1
    return 1 if failed else 0
