"""Data-parallel training with ``torch.distributed`` (one process per device, launched by ``torchrun``).

The train stage runs as one process (``python -m pipeline.stages.train``) or as ``N`` processes
(``torchrun --nproc_per_node N -m pipeline.stages.train``): :func:`setup` reads torchrun's
``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``, joins the process group (``nccl`` on CUDA, ``gloo`` on
CPU) and picks the process's device; without ``WORLD_SIZE`` (or with 1) nothing is initialised and
:data:`SINGLE` stands for the one process.

The batch strategy survives the split: each *assembled* global batch (:mod:`pipeline.batching`) is
cut into ``N`` contiguous slices (:func:`shard`: queries, passages and the flat list of hard
negatives alike), so an X-X batch is one language on every rank. The ranks all-gather their
passage and hard-negative embeddings with the gradient kept on the local slice
(:func:`gather_rows`, ``torch.distributed.nn.functional.all_gather``), so each query is scored
against every passage of the global batch: the loss and, after :func:`reduce_gradients`, the
gradients equal those of one process on the whole batch (up to float rounding and dropout draws).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

# a dev evaluation runs on rank 0 while the others wait at the next collective
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there are other processes to talk to."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that evaluates, logs and writes outputs."""
        return self.rank == 0


SINGLE = Dist()


def from_env(env=None) -> Dist:
    """The :class:`Dist` that torchrun's environment variables describe (:data:`SINGLE` without them)."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Dist(int(env["RANK"]), world, int(env.get("LOCAL_RANK", env["RANK"])))


def relaunch(processes: int, module: str, argv: list[str]) -> bool:
    """Run ``python -m module argv`` as ``processes`` processes under torchrun on this machine
    (``torch.distributed.run --standalone --nproc_per_node processes``) and wait for them.

    Returns False without doing anything when one process is asked for or when this process is
    already one of torchrun's (``WORLD_SIZE`` set: the module then takes its slice), so a caller does
    ``if relaunch(...): return``. A failed worker becomes a :class:`~pipeline.errors.PipelineError`
    naming its rank and exit code (torchrun's own report is printed above it)."""
    if processes <= 1 or "WORLD_SIZE" in os.environ:
        return False
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    from .errors import PipelineError

    try:
        torchrun(["--standalone", "--nproc_per_node", str(processes), "-m", module, *argv])
    except ChildFailedError as e:
        rank, failure = next(iter(sorted(e.failures.items())))
        raise PipelineError(f"{processes} processes under torchrun: rank {rank} failed with exit code "
                            f"{failure.exitcode} (its output is above)") from None
    return True


def setup(device_setting: str = "auto") -> tuple[Dist, torch.device]:
    """Join the process group when launched by torchrun; returns ``(dist, device)``.

    ``device_setting`` is ``train.device``; on CUDA each process takes ``cuda:LOCAL_RANK`` and the
    ``nccl`` backend, on CPU ``gloo``. Idempotent (a second call reuses the group)."""
    from .device import pick_device

    d = from_env()
    device = pick_device(device_setting)
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank if d.enabled else torch.cuda.current_device())
        torch.cuda.set_device(device)
    if d.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT,
                                device_id=device if device.type == "cuda" else None)
    return d, device


def teardown(d: Dist) -> None:
    """Leave the process group (a no-op for one process)."""
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous slice of ``n`` rows: the first ``n % world_size``
    ranks take one row more (``numpy.array_split``'s rule)."""
    size, extra = divmod(n, world_size)
    start = rank * size + min(rank, extra)
    return start, start + size + (rank < extra)


def shard(batch, d: Dist):
    """Rank ``d.rank``'s contiguous slice of an assembled batch (a :class:`~pipeline.dual_encoder.TextBatch`):
    its queries with their passages, and its slice of the flat hard-negative list (which may be of any
    length, or empty). Every rank gets at least one pair."""
    if not d.enabled:
        return batch
    if len(batch) < d.world_size:
        raise ValueError(f"a batch of {len(batch)} pairs cannot be split across {d.world_size} processes")
    a, b = bounds(len(batch), d.world_size, d.rank)
    hn = batch.hard_negatives
    if hn:
        lo, hi = bounds(len(hn), d.world_size, d.rank)
        hn = hn[lo:hi]
    return replace(batch, queries=batch.queries[a:b], passages=batch.passages[a:b], hard_negatives=hn)


def gather_rows(x: torch.Tensor, total: int, d: Dist) -> torch.Tensor:
    """All ranks' rows ``(total, H)`` in rank order, from this rank's slice ``x`` (:func:`bounds` of
    ``total``); differentiable: the gradient of every rank's use of this rank's rows flows back here
    (``torch.distributed.nn.functional.all_gather``: reduce-scatter on NCCL, scatters on gloo).
    Slices of unequal size are padded to the largest and trimmed after the gather."""
    if not d.enabled:
        return x
    import warnings

    from torch.distributed.nn.functional import all_gather

    sizes = [bounds(total, d.world_size, r) for r in range(d.world_size)]
    width = max(b - a for a, b in sizes)
    padded = torch.cat([x, x.new_zeros(width - x.shape[0], x.shape[1])]) if x.shape[0] < width else x
    with warnings.catch_warnings():  # torch 2.13 points to a private replacement; this one is public and works
        warnings.simplefilter("ignore", FutureWarning)
        parts = all_gather(padded)
    return torch.cat([p[: b - a] for p, (a, b) in zip(parts, sizes, strict=True)])


def reduce_gradients(params: list[torch.Tensor], d: Dist, average: bool) -> None:
    """Sum (or, with ``average``, average) the ``.grad`` of ``params`` over the ranks, in one flat
    all-reduce; a parameter without a gradient counts as zeros."""
    if not d.enabled:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    if average:
        flat /= d.world_size
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset: offset + n].view_as(p).clone() if p.grad is None else p.grad.copy_(
            flat[offset: offset + n].view_as(p))
        offset += n


def all_sum(value: float, d: Dist) -> float:
    """``value`` summed over the ranks (float64 on the CPU or the process's device)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return float(t.item())


def broadcast_flag(flag: bool, d: Dist) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. rank 0's early-stopping decision)."""
    if not d.enabled:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int64, device=_comm_device())
    dist.broadcast(t, 0)
    return bool(t.item())


def broadcast_parameters(model: torch.nn.Module, d: Dist) -> None:
    """Rank 0's weights on every rank (a guard: every rank loads the same files with the same seed)."""
    if not d.enabled:
        return
    with torch.no_grad():
        for p in model.parameters():
            dist.broadcast(p.data, 0)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
