"""A stand-in for submitit's Slurm executor (no Slurm in CI): what the suite launcher uses of it.

``AutoExecutor(folder=..., cluster="slurm")`` keeps the parameters it is given; ``submit`` pickles
the callable and its arguments as submitit does (so an unpicklable job fails here too), then runs
them in a thread, as a cluster job runs elsewhere. ``FAIL_JOBS`` makes a job end as a cancelled
Slurm job does: its ``result()`` raises. Every executor is kept in ``EXECUTORS``.
"""

from __future__ import annotations

import itertools
import pickle
import threading
from pathlib import Path

EXECUTORS: list["AutoExecutor"] = []
FAIL_JOBS: set[int] = set()  # submission numbers (1-based) whose job "is cancelled"
_ids = itertools.count(1)


class UncompletedJobError(RuntimeError):
    pass


class Job:
    def __init__(self, number: int, payload: bytes):
        self.job_id = f"{1000 + number}"
        self._number = number
        self._result = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(payload,), daemon=True)
        self._thread.start()

    def _run(self, payload: bytes) -> None:
        fn, args, kwargs = pickle.loads(payload)
        if self._number in FAIL_JOBS:
            self._error = UncompletedJobError(f"Job {self.job_id} (task: 0) with path ... has state CANCELLED")
            return
        try:
            self._result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - a job's exception surfaces in result()
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


class AutoExecutor:
    def __init__(self, folder, cluster: str | None = None):
        self.folder = Path(folder)
        self.cluster = cluster
        self.parameters: dict = {}
        self.jobs: list[Job] = []
        EXECUTORS.append(self)

    def update_parameters(self, **kwargs) -> None:
        self.parameters.update(kwargs)

    def submit(self, fn, *args, **kwargs) -> Job:
        self.folder.mkdir(parents=True, exist_ok=True)
        job = Job(next(_ids), pickle.dumps((fn, args, kwargs)))
        self.jobs.append(job)
        return job


LocalExecutor = AutoExecutor
