"""One run over several processes (`torchrun`): the process group, and fine-tuning and evaluation
as collectives, thin over torch.distributed, DistributedDataParallel and DistributedSampler.

Without a process group, and without torchrun's environment (WORLD_SIZE > 1), `joined` yields
`SINGLE` and every function here is the single-process one: nothing changes.

Under `torchrun --nproc-per-node N`, `joined` initialises the default group (gloo when fine-tuning
runs on the CPU, NCCL on CUDA) unless the caller already did, and a gloo group for rank 0's
control messages (`broadcast_object`): the other ranks wait for the next message in a blocking
socket read, which takes no CPU and no GPU while rank 0 measures latency.

The batch rule: `--batch-size` is the global batch. Each rank takes `batch // N` of it from its
shard of the training set (`DistributedSampler`, reshuffled every epoch), DDP averages the
gradients over the ranks, and the learning rate is the single-process one: a step sees as many
images as a single-process step, and an epoch has as many steps. BatchNorm normalises each rank's
own batch (no SyncBatchNorm: gloo has none); DDP broadcasts rank 0's running statistics.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..errors import BackendUnavailableError, DatasetError, InvalidConfigError
from .finetune import TrainConfig, count_correct, evaluate, fine_tune, resolve_torch_device

__all__ = ["DistContext", "SINGLE", "CONTROL_TIMEOUT", "COLLECTIVE_TIMEOUT", "joined", "torchrun_rank",
           "broadcast_object", "barrier",
           "collective_fine_tune", "collective_accuracy", "sync_module", "shard_train_loader",
           "shard_eval_loader"]

#: How long the other ranks wait for rank 0's next message: rank 0 measures (a whole step's
#: staircases and probes on a large model) meanwhile.
CONTROL_TIMEOUT = datetime.timedelta(hours=24)
#: How long a collective of the default group (DDP's all-reduces, an evaluation's counts) may
#: wait: every rank enters those together, inside a task, so a longer wait is a fault (a rank
#: gone, a collective one rank skipped) that should end the run with NCCL's or gloo's error.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
#: How long a rank waits at the end for the others before it takes the groups down anyway (a
#: rank that failed never comes; torchrun ends the rest).
SETTLE_TIMEOUT = datetime.timedelta(minutes=2)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: alone (`SINGLE`), or one rank of a run over several."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # this rank's index on its host (its GPU under torchrun)
    backend: str | None = None  # the default group's: "gloo" or "nccl" (None: alone)
    control: Any = None  # the gloo group rank 0's messages travel on (None: alone)

    @property
    def active(self) -> bool:
        """Whether there are other ranks."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: measures, decides, writes and prints."""
        return self.rank == 0

    def per_rank_batch(self, batch_size: int) -> int:
        """This rank's share of the global batch."""
        return max(1, batch_size // self.world_size)

    def describe(self, batch_size: int | None = None) -> dict[str, Any]:
        """report.json's `distributed` block."""
        out: dict[str, Any] = {"world_size": self.world_size, "backend": self.backend}
        if self.active and batch_size is not None:
            per = self.per_rank_batch(batch_size)
            out.update(per_rank_batch=per, global_batch=per * self.world_size,
                       rule="--batch-size is the global batch, split over the ranks; the learning "
                            "rate is the single-process one")
        return out


SINGLE = DistContext()


def torchrun_rank() -> int | None:
    """This process's rank as torchrun's environment says (RANK with WORLD_SIZE > 1); None
    outside torchrun. Needs no torch import (the CLI asks before loading it)."""
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return int(os.environ["RANK"])
    except (KeyError, ValueError):
        return None
    return None


def _rank_device(train_device: str, local_rank: int) -> torch.device:
    """Where a rank fine-tunes: its own GPU (cuda:LOCAL_RANK) for auto / cuda, else the CPU."""
    key = str(train_device).strip().lower()
    if key.startswith("cuda:"):
        raise InvalidConfigError(f"--train-device {train_device} under torchrun: each rank fine-tunes on "
                                 "cuda:LOCAL_RANK; pass --train-device cuda (or auto), or cpu")
    device = resolve_torch_device(key)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InvalidConfigError(f"LOCAL_RANK {local_rank} but torch sees {torch.cuda.device_count()} "
                                     "CUDA GPUs; start at most that many processes per node")
        device = torch.device("cuda", local_rank)
    return device


def _check_backend(backend: str, device: torch.device) -> None:
    if not dist.is_available():
        raise BackendUnavailableError(f"torch {torch.__version__} was built without torch.distributed; "
                                      "run without torchrun, or install a build of torch that has it")
    available = {"gloo": dist.is_gloo_available(), "nccl": dist.is_nccl_available()}
    if not available.get(backend, True):
        raise BackendUnavailableError(
            f"fine-tuning on {device} under torchrun needs the {backend} backend, which torch "
            f"{torch.__version__} does not have; " + ("install a CUDA build of torch with NCCL, or pass "
                                                      "--train-device cpu (gloo)" if backend == "nccl"
                                                      else "install a build of torch with gloo"))


@contextlib.contextmanager
def joined(train_device: str = "auto") -> Iterator[DistContext]:
    """The run's place among several processes, for the duration of the block.

    A process group already initialised (the caller's) is used as it is. Else, under torchrun
    (WORLD_SIZE > 1), the default group is initialised here (NCCL when `train_device` resolves to
    CUDA, gloo on the CPU) and destroyed at the end. Else `SINGLE`.

    Raises:
        BackendUnavailableError: the backend the device needs is not in this torch build.
        InvalidConfigError: a fixed GPU (cuda:N) under torchrun, more ranks per node than GPUs,
            or the caller's group is NCCL while fine-tuning runs on the CPU.
    """
    created = False
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        backend = str(dist.get_backend())
        device = resolve_torch_device(train_device)
        if world > 1 and backend == "nccl" and device.type != "cuda":
            raise InvalidConfigError(f"the process group's backend is nccl but fine-tuning runs on {device}; "
                                     "initialise the group with gloo, or fine-tune on CUDA")
        if (world > 1 and backend == "nccl" and "LOCAL_RANK" in os.environ
                and local_rank != torch.cuda.current_device() and torch.cuda.device_count() > local_rank):
            # Every rank would train on the same GPU, which NCCL refuses (a duplicate GPU).
            raise InvalidConfigError(f"this rank (LOCAL_RANK {local_rank}) has cuda:{torch.cuda.current_device()} "
                                     "as its current GPU; call torch.cuda.set_device(LOCAL_RANK) before "
                                     "init_process_group")
    elif torchrun_rank() is not None:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = _rank_device(train_device, local_rank)
        backend = "nccl" if device.type == "cuda" else "gloo"
        _check_backend(backend, device)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # "cuda" is this rank's GPU from here on
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
        created = True
    else:
        yield SINGLE
        return
    if world <= 1:
        try:
            yield SINGLE
        finally:
            if created:
                dist.destroy_process_group()
        return
    # Every rank creates the control group, in the same order (a collective call).
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    try:
        yield DistContext(rank, world, local_rank, backend, control)
    finally:
        _settle(control)
        if created:
            dist.destroy_process_group()
        else:
            dist.destroy_process_group(control)


def _settle(control: Any) -> None:
    """Every rank done with the control group before any rank takes it down. Rank 0's last
    message (the followers' STOP) may still be in flight when it returns; gloo tearing a pair
    down while its peer still reads can abort the process at exit ("terminate called without an
    active exception", once in a CI run of a 2-rank test; pytorch/gloo#155). Bounded: a rank that
    failed is waited for `SETTLE_TIMEOUT` at most."""
    try:
        dist.monitored_barrier(group=control, timeout=SETTLE_TIMEOUT)
    except RuntimeError:
        pass  # a rank failed or left; take the groups down all the same


def broadcast_object(ctx: DistContext, obj: Any = None) -> Any:
    """Rank 0's `obj` (pickled) on every rank, over the control group; `obj` itself when alone."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=ctx.control)
    return box[0]


def barrier(ctx: DistContext) -> None:
    """Wait until every rank is here (on the control group; nothing alone)."""
    if ctx.active:
        dist.barrier(group=ctx.control)


def sync_module(ctx: DistContext, model: nn.Module) -> None:
    """Rank 0's parameters and buffers into every rank's `model` (same shapes on every rank)."""
    if ctx.active:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def shard_train_loader(ctx: DistContext, loader: DataLoader, seed: int) -> DataLoader:
    """This rank's part of the training data: its shard (reshuffled each epoch from `seed`), in
    batches of its share of the global batch. Every rank gets as many batches (the sampler pads)."""
    sampler = DistributedSampler(loader.dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=seed, drop_last=False)
    return DataLoader(loader.dataset, batch_size=ctx.per_rank_batch(loader.batch_size or 1), sampler=sampler,
                      num_workers=loader.num_workers, drop_last=loader.drop_last)


def shard_eval_loader(ctx: DistContext, loader: DataLoader) -> DataLoader:
    """Every `world_size`-th sample from this rank's: the ranks' shards cover the split exactly once."""
    part = Subset(loader.dataset, range(ctx.rank, len(loader.dataset), ctx.world_size))  # type: ignore[arg-type]
    return DataLoader(part, batch_size=loader.batch_size, num_workers=loader.num_workers)


def collective_fine_tune(ctx: DistContext, model: nn.Module, loader: DataLoader, cfg: TrainConfig,
                         device: torch.device, *, seed: int | None, teacher: Any,
                         progress: bool, desc: str) -> None:
    """`fine_tune` on every rank together: rank 0's weights to start (DDP broadcasts them), each
    rank on its shard, gradients averaged. Alone: `fine_tune` on `loader`."""
    if not ctx.active:
        fine_tune(model, loader, cfg, device, teacher=teacher, progress=progress, desc=desc)
        return
    from torch.nn.parallel import DistributedDataParallel

    model.to(device)
    gpu = (device.index if device.index is not None else torch.cuda.current_device()) if device.type == "cuda" else None
    wrapped = DistributedDataParallel(model, device_ids=None if gpu is None else [gpu])
    try:
        fine_tune(wrapped, shard_train_loader(ctx, loader, cfg.seed if seed is None else seed), cfg, device,
                  teacher=teacher, progress=progress and ctx.is_main, desc=desc)
    finally:
        del wrapped  # its hooks go with it; `model` holds the trained weights


def collective_accuracy(ctx: DistContext, model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Top-1 % of rank 0's `model` on `loader`: each rank counts its shard, the counts are summed.
    Alone: `evaluate`."""
    if not ctx.active:
        return evaluate(model, loader, device)
    model.to(device)
    sync_module(ctx, model)
    correct, seen = count_correct(model, shard_eval_loader(ctx, loader), device)
    counts = torch.tensor([correct, seen], dtype=torch.float64, device=device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(counts)
    correct, seen = (int(v) for v in counts.tolist())
    if seen == 0:
        raise DatasetError("the evaluation loader yielded no sample; check --data and --test-limit")
    return 100.0 * correct / seen
