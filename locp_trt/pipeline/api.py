"""`locp_trt.optimize`: the Python front door. The CLI's `optimize` and the benchmarks call it.

    import torch, locp_trt
    from locp_trt.models import get_model

    model = get_model("resnet20")
    result = locp_trt.optimize(model, torch.zeros(1, 3, 32, 32), runtime="onnxruntime", speedup=2,
                               out="runs/r20")
    result.model, result.plan, result.report["result"]["speedup"]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError
from ..method.follower import release_followers
from ..train.distributed import barrier, joined
from .family import Family
from .job import OptimizeJob, resolve_job, sample_shape
from .outdir import CHECKPOINT, RUN_OUTPUTS, prepare_out_dir, removed_on_failure
from .run import Optimized, follow_job, run_job

__all__ = ["optimize", "optimize_family", "Optimized"]


def optimize(model: Any, example_input: Any = None, *, runtime: Any = None,
             speedup: float | Sequence[float] | None = None, data: Any = None,
             out: str | Path = "runs/optimize", device: Any = "auto",
             log: Callable[[str], None] | None = None, **options: Any) -> Optimized | Family | None:
    """Prune `model` to the widths `runtime` runs fastest until its measured speedup reaches
    `speedup`, fine-tune between steps when `data` is given, and write the run to `out`.

    Args:
        model: an nn.Module (not modified), a model.pt path, or "example" (the built-in ResNet-20).
        example_input: a batch-first tensor or a (C, H, W) shape: the sample shape timed (the
            batch is the device profile's unless `batch=` says). None for a path that knows it.
        runtime: "onnxruntime", "onnxruntime-cuda", "torch", "torch-cpu", "tensorrt", "auto", or
            a `Runtime` instance; None: the device profile's first available one.
        speedup: the end-to-end speedup over the unpruned model to land on (default 2; or give
            `target_latency_ms=`). A list of two or more (or of `target_latency_ms=`) runs a
            family: one folder per target in `out` and `out/family.json` (`optimize_family`).
        data: a data spec ("cifar10:PATH", "synthetic", ...) or `train.data.Loaders` (train, val,
            test); None: prune for latency alone, no fine-tuning, no accuracy.
        out: the output folder (refused when it holds a run, unless `resume=True` or `force=True`).
        device: a device profile or its name ("cpu", "desktop", "jetson", "auto").
        log: where progress lines go (default: stderr).
        **options: `OptimizeConfig` fields (`steps`, `tolerance`, `importance`, ...),
            `Training` fields (`epochs`, `final_epochs`, `lr`, `train_device`, ...), and `precision`,
            `batch`, `bench`, `latency_table` (a path; a list of paths: one plan for all those
            devices, the worst device deciding), `store` (default: the shared store, as the
            command's; None: in memory), `meter`, `arch`, `resume`, `force`, `engine`,
            `export` (False: no pruned.pt, ONNX, engine or plots; report.json and checkpoints
            still), `progress`.

    Returns:
        `Optimized`: the pruned model, its plan, the report (what report.json holds) and the
        loop's result. `report["result"]["status"]` says whether it landed, missed or overshot.
        For a family, a `Family`: its members (each with its `Optimized`, or None where refused)
        and family.json's content. Under torchrun (or a process group the caller initialised),
        rank 0 returns that and every other rank None: they fine-tune and evaluate with rank 0
        (`method.follower`), and only rank 0 measures, decides and writes.
    """
    from ..latency.store import default_store_path

    shape = sample_shape(example_input)
    if shape is not None:
        options.setdefault("input_shape", shape)
    if speedup is not None:
        options["speedup"] = speedup
    if "meter" not in options:  # the shared latency store, as the command's
        options.setdefault("store", default_store_path())
    job = resolve_job(model, out=out, device=device, runtime=runtime, data=data, **options)
    with joined(job.training.device) as dist:
        if not dist.active:
            return _lead(job, log)
        job = replace(job, dist=dist)
        if not dist.is_main:
            follow_job(job)
            return None
        # The other ranks load their model and data first: nothing of theirs runs beside the
        # timing from here on (they wait for rank 0's tasks).
        barrier(dist)
        try:
            return _lead(job, log)
        finally:
            release_followers(dist)


def _lead(job: OptimizeJob, log: Callable[[str], None] | None) -> Optimized | Family:
    """The run itself (alone, or on rank 0): its output folder, the loop, the files."""
    outputs, keep = RUN_OUTPUTS, (CHECKPOINT,)
    if job.family:  # a member's folder holds a run: keep the family's folder once one checkpointed
        from .family import FAMILY_OUTPUTS

        outputs = (*FAMILY_OUTPUTS, *(t.label for t in job.family))
        keep = tuple(f"{t.label}/{CHECKPOINT}" for t in job.family)
    created = prepare_out_dir(job.out, resume=job.resume, force=job.force, outputs=outputs)
    with removed_on_failure(created, keep_if=keep):
        return run_job(job) if log is None else run_job(job, log)


def optimize_family(model: Any, example_input: Any = None, *, speedups: Sequence[float] | None = None,
                    target_latencies_ms: Sequence[float] | None = None, **kwargs: Any) -> Family:
    """`optimize` for a family of targets: one complete output folder per target in `out`
    (`out/1.5x/`, ...), `out/family.json` and `out/family.png`; give `speedups` or
    `target_latencies_ms` (two or more). Other keywords are `optimize`'s."""
    if (speedups is None) == (target_latencies_ms is None):
        raise InvalidConfigError("give one of speedups= or target_latencies_ms= (a list of two or more)")
    given = speedups if speedups is not None else target_latencies_ms
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence) or len(given) < 2:
        raise InvalidConfigError(f"a family needs two targets or more, got {given!r}; for one, call optimize")
    if speedups is not None:
        return optimize(model, example_input, speedup=list(speedups), **kwargs)
    return optimize(model, example_input, target_latency_ms=list(target_latencies_ms), **kwargs)
