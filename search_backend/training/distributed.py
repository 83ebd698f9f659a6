"""Everything distributed training needs, in one place (the train loop only asks "am I rank 0?").

``torchrun`` (or SLURM's ``srun``) starts one process per device and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; :func:`init_distributed` reads them,
joins the process group (``gloo`` on the CPU, ``nccl`` on GPUs) and says which device this
process uses. A plain ``python`` start is a world of one, and every helper here is then the
identity, so single-process code pays nothing.

:func:`gather_rows` concatenates a tensor's rows from every rank *with gradients*: its backward
sums each rank's gradient for the gathered whole and hands every rank the part for its own rows.
The trainer gathers the twin-mode vectors (in-batch negatives are the global batch, as in
open_clip) and the cross-encoder's text and image states (a negative may live on another rank).
Each rank's loss is its share of the global loss, and DDP averages gradients over ranks, so the
trainer back-propagates ``world_size`` times its share: the same gradient as one process with the
whole batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEVICES",
    "Dist",
    "all_reduce_sum",
    "barrier",
    "gather_objects",
    "gather_rows",
    "gather_sizes",
    "init_distributed",
    "resolve_device",
]

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, metrics and the model."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if os.environ.get(name, "") != "":
            return int(os.environ[name])
    return default


def resolve_device(device: str, local_rank: int = 0) -> str:
    """``auto`` -> ``cuda:<local rank>`` when a GPU is visible, else ``cpu``; checks ``cuda``."""
    import torch

    from search_backend.config import check_choice

    check_choice("device", device, DEVICES)
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible to this process")
    return f"cuda:{local_rank % max(1, torch.cuda.device_count())}"


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group that ``torchrun``/``srun`` describe (once per process) or stay alone."""
    import torch
    import torch.distributed as dist

    world = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    local = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
    where = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        if where.startswith("cuda"):
            torch.cuda.set_device(torch.device(where))
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        dist.init_process_group("nccl" if where.startswith("cuda") else "gloo", rank=rank, world_size=world)
    return Dist(rank=rank, world=world, local_rank=local, device=where)


def _gather_class() -> Any:
    import torch
    import torch.distributed as dist

    class _GatherRows(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
            rank = dist.get_rank()
            ctx.sizes, ctx.rank = sizes, rank
            longest = max(sizes)
            padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
            padded[: x.shape[0]] = x
            parts = [torch.empty_like(padded) for _ in sizes]
            dist.all_gather(parts, padded.contiguous())
            return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
            grad = grad.contiguous()
            dist.all_reduce(grad)
            start = sum(ctx.sizes[: ctx.rank])
            return grad[start : start + ctx.sizes[ctx.rank]], None

    return _GatherRows


_GATHER: Any = None


def gather_rows(x: torch.Tensor, d: Dist, sizes: list[int] | None = None) -> torch.Tensor:
    """Every rank's rows of ``x``, in rank order, differentiable (identity in a world of one).

    ``sizes`` (rows per rank) may be given when known; otherwise it is gathered first.
    """
    global _GATHER
    if not d.active:
        return x
    if sizes is None:
        sizes = gather_sizes(int(x.shape[0]), d)
    if _GATHER is None:
        _GATHER = _gather_class()
    out: torch.Tensor = _GATHER.apply(x, sizes)
    return out


def gather_sizes(n: int, d: Dist) -> list[int]:
    """``n`` from every rank, in rank order."""
    import torch
    import torch.distributed as dist

    if not d.active:
        return [n]
    mine = torch.tensor([n], dtype=torch.long, device=d.device)
    parts = [torch.zeros_like(mine) for _ in range(d.world)]
    dist.all_gather(parts, mine)
    return [int(p.item()) for p in parts]


def gather_objects(obj: Any, d: Dist) -> list[Any]:
    """A picklable object from every rank, in rank order."""
    import torch.distributed as dist

    if not d.active:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(value: float, d: Dist) -> float:
    import torch
    import torch.distributed as dist

    if not d.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t.item())


def barrier(d: Dist) -> None:
    import torch.distributed as dist

    if d.active:
        dist.barrier()
