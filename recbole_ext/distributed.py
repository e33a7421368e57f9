"""Data-parallel runs: one process per device, torch.distributed (gloo on CPU, nccl on CUDA).

Two ways to start a run of ``world_size`` processes on one machine:

* ``run_benchmark.py ... --nproc=N`` (:func:`spawn`): the launching process prepares the run (config
  checks, dataset), then starts N workers with ``torch.multiprocessing`` (start method ``spawn``); each
  joins the group at ``tcp://127.0.0.1:<free port>``. Rank r uses ``cuda:r`` of the visible GPUs
  (``CUDA_VISIBLE_DEVICES``), or the CPU.
* ``torchrun --nproc_per_node=N run_benchmark.py ...`` (:func:`from_environment`): every process is a
  rank already (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

RecBole's own distributed branch (``Config._init_device``) hard-codes nccl and ``cuda:local_rank`` and
builds the group itself; :class:`~recbole_ext.config.ExtConfig` instead reads the group started here
(:func:`current`) and sets RecBole's keys (``single_spec``, ``local_rank``, ``world_size``, ``nproc``,
``offset``, ``ip``, ``port``), so RecBole's distributed samplers and trainer code run unchanged.

Helpers for the trainers: rank-0 guards (:func:`is_main`, :func:`main_first`), agreement
(:func:`broadcast_object`, :func:`all_agree`), the explicit gradient average of our generative trainers
(:func:`average_gradients`: our models call submodules directly, so a ``DistributedDataParallel`` wrapper
around the top module would not see those calls), and the exact gather of an evaluation sharded by
RecBole's ``DistributedSampler`` (:func:`gather_rows`). Every helper is a no-op in a single process.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

#: RecBole's config keys of a distributed run (absent in a single-process config): they say how a run
#: is spread over processes, never what it trains (run-local: out of config hashes and stage-cache keys).
DISTRIBUTED_KEYS = frozenset({"nproc", "world_size", "offset", "ip", "port"})
#: How long a collective waits for a missing rank before it fails (a dead rank ends the run).
TIMEOUT = datetime.timedelta(minutes=30)


class DistributedRunError(RuntimeError):
    """A rank of a distributed run failed (or the run cannot start); no record was written."""


@dataclass(frozen=True)
class Context:
    """This process's place in the group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    ip: str
    port: int
    launcher: str  # "spawn" (--nproc) or "torchrun"

    def describe(self) -> dict[str, Any]:
        """What a run record stores about the group."""
        return {"world_size": self.world_size, "backend": self.backend, "launcher": self.launcher}


_CONTEXT: Context | None = None


def current() -> Context | None:
    """The group this process belongs to, or None in a single-process run."""
    return _CONTEXT if _CONTEXT is not None and dist.is_available() and dist.is_initialized() else None


def rank() -> int:
    ctx = current()
    return ctx.rank if ctx is not None else 0


def world_size() -> int:
    ctx = current()
    return ctx.world_size if ctx is not None else 1


def is_main() -> bool:
    """True on rank 0 and in a single process: the one that writes records, caches and checkpoints."""
    return rank() == 0


# --- starting and ending a group ---------------------------------------------------------------------
def free_port() -> int:
    """A TCP port that is free now on this machine (for the group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init(rank_: int, world: int, local_rank: int, use_cuda: bool, ip: str, port: int, launcher: str) -> Context:
    """Join the group (nccl with ``cuda:local_rank`` when ``use_cuda``, else gloo on the CPU)."""
    global _CONTEXT
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise DistributedRunError(f"rank {rank_} needs GPU {local_rank} but {torch.cuda.device_count()} are "
                                      "visible: lower --nproc or set CUDA_VISIBLE_DEVICES")
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{ip}:{port}", rank=rank_, world_size=world, timeout=TIMEOUT)
    _CONTEXT = Context(rank_, world, local_rank, backend, device, ip, port, launcher)
    logger.info("rank %d/%d joined the %s group on %s", rank_, world, backend, device)
    return _CONTEXT


def from_environment() -> tuple[int, int, int, str, int] | None:
    """(rank, world size, local rank, master address, port) set by torchrun, or None (not launched by it)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or "RANK" not in os.environ or "MASTER_PORT" not in os.environ:
        return None
    return (int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
            os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ["MASTER_PORT"]))


def shutdown() -> None:
    """Leave the group (a no-op when none was joined)."""
    global _CONTEXT
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT = None


def spawn(worker: Callable[..., Any], nproc: int, args: tuple) -> None:
    """Run ``worker(rank, *args)`` in ``nproc`` fresh processes and wait for all of them.

    A rank that raises or dies ends every rank (torch.multiprocessing terminates the others) and this
    raises :class:`DistributedRunError` naming the rank and the last lines of its traceback.
    """
    import torch.multiprocessing as mp

    try:
        mp.spawn(worker, args=args, nprocs=nproc, join=True, start_method="spawn")
    except mp.ProcessRaisedException as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise DistributedRunError(f"rank {exc.error_index} of {nproc} failed, the run was stopped and no record "
                                  f"was written: {lines[-1] if lines else exc}\n" + "\n".join(lines[-12:])) from None
    except mp.ProcessExitedException as exc:
        raise DistributedRunError(f"rank {exc.error_index} of {nproc} died (exit code {exc.exit_code}), the run "
                                  "was stopped and no record was written") from None


# --- agreement -------------------------------------------------------------------------------------
def barrier() -> None:
    if current() is not None:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (it writes caches: dataset, semantic IDs, text vectors), the other
    ranks after it, reading what it wrote."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in a single process)."""
    if current() is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if current() is None:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_agree(flag: bool) -> bool:
    """True when ``flag`` is true on every rank (one decision for all ranks)."""
    return all(all_gather_object(bool(flag)))


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums of ``values`` over the ranks (float64)."""
    ctx = current()
    if ctx is None:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


# --- training --------------------------------------------------------------------------------------
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (the same start)."""
    if current() is None:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=src)


def average_gradients(parameters: Sequence[torch.nn.Parameter] | Any) -> None:
    """Replace each gradient by its mean over the ranks (one all-reduce per dtype), after ``backward``.

    With each rank's loss the mean over its (equal-sized) shard, this is the gradient of the mean loss over
    the whole batch. A parameter without a gradient on some rank counts zero there; one without a
    gradient on every rank keeps ``None`` (the optimizer skips it, as in a single process).
    """
    ctx = current()
    if ctx is None:
        return
    params = [p for p in parameters if p.requires_grad]
    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    world = float(ctx.world_size)
    for group in by_dtype.values():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group] +
                         [torch.tensor([float(p.grad is not None) for p in group], dtype=group[0].dtype,
                                       device=group[0].device)])
        dist.all_reduce(flat)
        has = flat[-len(group):]
        offset = 0
        for i, p in enumerate(group):
            n = p.numel()
            if float(has[i]) > 0:
                grad = flat[offset:offset + n].view_as(p).div_(world)
                if p.grad is None:
                    p.grad = grad.clone()
                else:
                    p.grad.copy_(grad)
            offset += n


def wrap_for_recbole(model: torch.nn.Module) -> torch.nn.Module:
    """``DistributedDataParallel`` of ``model`` for RecBole's own ``_train_epoch`` (its reduce hook): on the
    GPU as RecBole builds it (``device_ids=[local_rank]``), on the CPU without device ids (which DDP needs
    for a CPU module and RecBole does not give)."""
    from torch.nn.parallel import DistributedDataParallel

    ctx = current()
    assert ctx is not None
    if ctx.device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[ctx.local_rank])
    return DistributedDataParallel(model)


def load_checkpoint(path: str, device: Any) -> Any:
    """``torch.load`` of a checkpoint of this run. The project's ``torch.load`` trusts (unpickles fully)
    only files its own process wrote; in a distributed run rank 0 writes every checkpoint, at a path
    broadcast to all ranks and read only after a barrier, so the other ranks trust it as well."""
    if is_main():
        return torch.load(path, map_location=device)
    return torch.load(path, map_location=device, weights_only=False)


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Reshuffle a distributed training loader for ``epoch`` (the same order on every rank, disjoint shards)."""
    sampler = getattr(loader, "sampler", None)
    if current() is not None and getattr(loader, "shuffle", False) and hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


# --- evaluation --------------------------------------------------------------------------------------
def loader_positions(loader: Any) -> list[int] | None:
    """The sample positions this rank's shard of an evaluation loader holds, in iteration order (None when
    the loader is not sharded)."""
    from torch.utils.data.distributed import DistributedSampler

    if current() is None:
        return None
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler) or getattr(loader, "shuffle", False):
        return None
    return [int(i) for i in sampler]


def gather_rows(positions: list[int], rows: dict[str, Any]) -> tuple[list[int], dict[str, Any]]:
    """Every rank's per-sample ``rows`` (tensors or lists with one entry per local position) gathered into
    the order of a single-process pass: sorted by position, each position once (``DistributedSampler``
    repeats a few samples to give every rank as many). Returns (positions, rows) on every rank."""
    parts = all_gather_object((positions, {k: v.cpu() if torch.is_tensor(v) else v for k, v in rows.items()}))
    order: dict[int, tuple[int, int]] = {}  # position -> (rank, row)
    for r, (pos, _) in enumerate(parts):
        for j, p in enumerate(pos):
            order.setdefault(p, (r, j))
    keys = sorted(order)
    out: dict[str, Any] = {}
    for name, local in rows.items():
        picked = [parts[r][1][name][j] for r, j in (order[p] for p in keys)]
        out[name] = torch.stack(picked) if torch.is_tensor(local) else picked
    return keys, out


def single_process_config(config: dict) -> dict:
    """``config`` as a single-process run would hold it (RecBole's distributed keys dropped, ``single_spec``
    True, ``local_rank`` 0): what config hashes, stage-cache keys and the record's config see, so a
    distributed run is the same cell as a single-process one."""
    if config.get("single_spec", True):
        return config
    out = {k: v for k, v in config.items() if k not in DISTRIBUTED_KEYS}
    out.update(single_spec=True, local_rank=0)
    return out
