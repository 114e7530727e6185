"""The ranks other than 0 under torchrun: they wait for rank 0's next `tuning.Task`, run it with
rank 0 (fine-tune with DDP, or evaluate their shard), and wait again until rank 0 says stop.

They measure nothing, decide nothing and write nothing: while rank 0 measures latency they are
blocked in the wait (`train.distributed.broadcast_object`), so no training runs beside the timing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..errors import LocpError
from ..prune.plan import PruningPlan, apply_plan
from ..train.distributed import DistContext, broadcast_object
from .tuning import STOP, Task, Tuning

__all__ = ["Follower", "FollowerStats", "release_followers"]


@dataclass(frozen=True)
class FollowerStats:
    """What a follower did: tasks run, and how many replicas it pruned for them."""

    tasks: int
    replicas: int


class Follower:
    """A rank other than 0 of a run.

    Args:
        original: the unpruned model (each task's plan prunes a copy of it).
        loaders: the same `data.Loaders` as rank 0's (same data, same split).
        device: where this rank fine-tunes.
        dist: this rank's place (`train.distributed.joined`).
    """

    def __init__(self, original: nn.Module, loaders: Any, device: torch.device, dist: DistContext) -> None:
        if not dist.active or dist.is_main:
            raise ValueError(f"a Follower is a rank other than 0 of several, got rank {dist.rank} of {dist.world_size}")
        self.original = original.eval()
        self.tuning = Tuning(loaders, self.original, device, progress=False, dist=dist)
        self.dist = dist
        self._key: str | None = None
        self._model: nn.Module | None = None
        self._replicas = 0

    def serve(self) -> FollowerStats:
        """Run rank 0's tasks until it says stop."""
        tasks = 0
        while True:
            task: Task = broadcast_object(self.dist)
            if task.kind == STOP:
                return FollowerStats(tasks, self._replicas)
            try:
                self.tuning.perform(task, self._replica(task.plan))
            except LocpError:
                # Rank 0 met the same error in the same task (a diverged fine-tune stops every
                # rank at one step): it reports it, and ends the run or goes on (a family's next
                # member) with the next task or a stop; this rank waits for that.
                pass
            tasks += 1

    def _replica(self, plan_json: dict[str, Any]) -> nn.Module:
        """The unpruned model pruned to the plan's kept channels (its weights come from rank 0);
        the last one is kept while the plan stays."""
        key = json.dumps(plan_json["kept"], sort_keys=True)
        if key != self._key:
            plan = PruningPlan.from_json(plan_json)
            self._model, _ = apply_plan(self.original, plan, plan.input_shape, kept=plan.kept)
            self._key, self._replicas = key, self._replicas + 1
        return self._model


def release_followers(dist: DistContext) -> None:
    """Rank 0: tell the other ranks the run is over (nothing alone)."""
    if dist.active and dist.is_main:
        broadcast_object(dist, Task(STOP))
