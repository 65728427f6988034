"""Data-parallel processes: one per GPU on this node (NCCL), or ``nproc_per_node`` on CPU (gloo), or the
processes of a launcher (``torchrun`` / SLURM with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set).

``launch(fn, config)`` runs ``fn(config, context)`` in every process and returns rank 0's result.
The processes it starts run with its own torch thread count (``torch.get_num_threads()``): CPU kernels split their
sums by thread count, so results equal one process's bit for bit only at the same count (torchrun sets
``OMP_NUM_THREADS=1`` with ``--nproc_per_node`` > 1 unless it is set).
Collectives time out after ``dist_timeout`` minutes, so a rank that died never leaves the others waiting
for ever; an error in any rank ends them all, and a toolkit error keeps its one-line message.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import signal
import time
import traceback
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core.device import resolve_device
from core.errors import ConfigError, ToolkitError

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class Context(NamedTuple):
    """Where a process runs: its rank among ``world`` processes and its device."""
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0 alone writes logs, checkpoints and scores."""
        return self.rank == 0


def single(config: Dict[str, Any]) -> Context:
    return Context(0, 1, resolve_device(config["device"]))


def _device(config: Dict[str, Any], local_rank: int) -> torch.device:
    device = resolve_device(config["device"])
    return torch.device("cuda", local_rank) if device.type == "cuda" else device


def _init(config: Dict[str, Any], rank: int, world: int, local_rank: int) -> Context:
    device = _device(config, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(minutes=config["dist_timeout"]))
    return Context(rank, world, device)


def _worker(local_rank: int, fn: Callable, config: Dict[str, Any], world: int, results: Any, threads: int) -> None:
    torch.set_num_threads(threads)  # the launching process's: the results of one process, bit for bit
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(config["port"]))
    context = _init(config, local_rank, world, local_rank)
    try:
        result = fn(config, context)
        if context.main:
            results.put(("result", result))
        dist.barrier()  # all ranks done before any tears down (gloo aborted a rank that closed first)
    except Exception as err:  # reported with its time: the launcher names the first failure, not its echoes
        toolkit = isinstance(err, ToolkitError)
        results.put(("error", (time.time(), f"rank {local_rank}: {err}" if toolkit else
                               f"rank {local_rank}:\n{traceback.format_exc()}", getattr(err, "exit_code", 2),
                               toolkit)))
        raise
    finally:
        dist.destroy_process_group()


def world_size(config: Dict[str, Any]) -> int:
    """The number of data-parallel processes :func:`launch` runs: 1 without ``distributed``; with it, the
    launcher's ``WORLD_SIZE`` (torchrun / SLURM), else one per visible GPU, else ``nproc_per_node``."""
    if not config["distributed"]:
        return 1
    if all(name in os.environ for name in LAUNCHER_VARIABLES):
        return int(os.environ["WORLD_SIZE"])
    return torch.cuda.device_count() if resolve_device(config["device"]).type == "cuda" else config["nproc_per_node"]


def launch(fn: Callable[[Dict[str, Any], Context], Any], config: Dict[str, Any]) -> Any:
    """Run ``fn(config, context)`` on one device, or data-parallel when ``distributed`` is set."""
    if not config["distributed"]:
        return fn(config, single(config))
    if all(name in os.environ for name in LAUNCHER_VARIABLES):  # torchrun or SLURM started the processes
        context = _init(config, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
        try:
            result = fn(config, context)
            dist.barrier()  # all ranks done before any tears down
            return result
        finally:
            dist.destroy_process_group()
    world = world_size(config)
    if world < 1:
        raise ConfigError("distributed: no process to start (nproc_per_node must be at least 1).")
    results = mp.get_context("spawn").SimpleQueue()
    try:
        processes = mp.start_processes(_worker, args=(fn, config, world, results, torch.get_num_threads()),
                                       nprocs=world, join=False, start_method="spawn")
        with forwarded_signals(processes.processes):
            while not processes.join():
                pass
    except mp.ProcessRaisedException as err:
        errors = sorted(text for kind, text in _drain(results) if kind == "error")
        if errors and errors[0][3]:  # the first failure is a toolkit error: its message and exit status
            error = ConfigError(errors[0][1])  # (2, or 128 + signal when stopped)
            error.exit_code = errors[0][2]  # type: ignore[attr-defined]
            raise error from None
        if errors:  # the first failure (the others' errors, e.g. a lost connection, follow from it)
            raise RuntimeError(f"a data-parallel process failed; all {world} were stopped. The first failure, "
                               f"{errors[0][1]}") from None
        raise RuntimeError(f"a data-parallel process failed; all {world} were stopped:\n{err}") from None
    outcome = dict(_drain(results))
    return outcome.get("result")


@contextlib.contextmanager
def forwarded_signals(processes: List[Any]) -> Iterator[None]:
    """While the launcher waits: SIGTERM is passed on to the training processes (each stops at its next step
    boundary with a checkpoint); SIGINT from a terminal reaches them directly, so the launcher only waits."""
    def forward(signum: int, frame: Any) -> None:
        if signum == signal.SIGTERM:
            for process in processes:
                if process.is_alive():
                    os.kill(process.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _drain(results: Any) -> List[tuple]:
    """What the processes put in ``results`` (all of them have ended)."""
    items = []
    while not results.empty():
        items.append(results.get())
    return items


def all_gather(obj: Any, context: Context) -> Optional[List[Any]]:
    """Every rank's ``obj`` on rank 0 (in rank order), None on the others; just ``[obj]`` in one process."""
    if context.world == 1:
        return [obj]
    gathered: List[Any] = [None] * context.world
    dist.all_gather_object(gathered, obj)
    return gathered if context.main else None


def everywhere(obj: Any, context: Context) -> List[Any]:
    """Every rank's ``obj`` on every rank (in rank order), for a decision all ranks must take alike (e.g. whether
    a file every rank needs exists); just ``[obj]`` in one process."""
    if context.world == 1:
        return [obj]
    gathered: List[Any] = [None] * context.world
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(context: Context) -> None:
    if context.world > 1:
        dist.barrier()
