"""The LOCP loop: profile, select, prune, fine-tune, re-measure, repeat to the latency target.

One step:
1. build the channel graph of the current model (`graph.build_graph`);
2. find each prunable group's candidate widths on its latency staircase (three-point
   discrimination through the shared `LatencyMeter`, so each distinct layer config is measured
   once across groups, steps and runs);
3. score channels (`prune.importance`) and choose widths across groups to this step's target
   (`prune.benefit.search`: two-stage benefit, greedy or knapsack);
4. prune physically, fine-tune briefly, measure the whole model end to end, checkpoint.

Step targets shrink geometrically from the baseline to the final target. The layer-sum latency
model misses fusion and non-conv ops, so each step's end-to-end target is converted into a
layer-sum target with the measured/predicted slope seen so far (`Optimizer._slope`), and the
loop runs extra steps when the measured latency still misses the target.

Resuming: after every step `checkpoints/state.json` and `checkpoints/step_NNN.pt` are written
atomically; `resume=True` reloads the last completed step and continues from there.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import InvalidConfigError, LocpError
from .graph import ModelGraph, build_graph
from .latency.config import LayerConfig, Precision
from .prune.benefit import SearchMethod, predicted_latency_us, search
from .prune.candidates import DiscoveryMethod, discover_candidates, width_floor
from .prune.importance import Importance, group_importance
from .prune.plan import PruningPlan, apply_plan, save_pruned
from .train import TrainConfig, evaluate, fine_tune

__all__ = ["OptimizeConfig", "StepRecord", "OptimizeResult", "Optimizer", "STATE_SCHEMA"]

STATE_SCHEMA = "locp_trt.optimize_state/1"


@dataclass(frozen=True)
class OptimizeConfig:
    """What to optimize for and how. Exactly one of `speedup` / `target_latency_ms` is set."""

    # ---- target
    speedup: float | None = 2.0  # measured end-to-end speedup over the unpruned model
    target_latency_ms: float | None = None  # or an absolute end-to-end target
    # ---- schedule
    steps: int = 3  # pruning steps from the baseline to the target (geometric)
    extra_steps: int = 3  # more steps at the final target while the measurement still misses it
    # ---- method
    discovery: DiscoveryMethod = DiscoveryMethod.THREE_POINT
    search: SearchMethod = SearchMethod.GREEDY
    importance: Importance = Importance.L1
    min_width_ratio: float = 0.1  # never below this fraction of a group's original width
    margin: float = 0.05  # aim this fraction below the target, so re-measurement noise still meets it
    # ---- what is measured
    batch: int = 1
    precision: Precision = Precision.FP32
    # ---- training (None: no fine-tuning, e.g. latency-only runs)
    finetune: TrainConfig | None = None  # after every step
    final_finetune: TrainConfig | None = None  # once at the end
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.speedup is None) == (self.target_latency_ms is None):
            raise InvalidConfigError("give exactly one of --speedup or --target-latency-ms")
        if self.speedup is not None and self.speedup <= 1.0:
            raise InvalidConfigError(f"--speedup must be above 1, got {self.speedup}")
        if self.target_latency_ms is not None and self.target_latency_ms <= 0:
            raise InvalidConfigError(f"--target-latency-ms must be positive, got {self.target_latency_ms}")
        if self.steps < 1 or self.extra_steps < 0:
            raise InvalidConfigError(f"--steps must be >= 1 (got {self.steps}), --extra-steps >= 0")
        if not 0 <= self.margin < 0.5:
            raise InvalidConfigError(f"margin must be in [0, 0.5), got {self.margin}")
        if not 0 < self.min_width_ratio <= 1:
            raise InvalidConfigError(f"--min-width-ratio must be in (0, 1], got {self.min_width_ratio}")

    def target_us(self, baseline_us: float) -> float:
        """The final end-to-end target in µs."""
        if self.target_latency_ms is not None:
            return self.target_latency_ms * 1000.0
        return baseline_us / float(self.speedup)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("discovery", "search", "importance", "precision"):
            d[k] = getattr(self, k).value
        return d


@dataclass(frozen=True)
class StepRecord:
    """What one step did and measured (step 0 is the unpruned baseline)."""

    step: int
    widths: dict[str, int]  # width of every group, relative to the ORIGINAL model
    predicted_us: float  # summed layer latencies at these widths
    measured: dict[str, float]  # end-to-end Timing.summary() (µs); {} when only predicted
    accuracy: float | None  # top-1 %, when a test set was given
    flops: int
    params: int
    target_us: float | None = None  # this step's end-to-end target
    search: str = ""  # the search's one-line summary
    candidates: dict[str, list[int]] = field(default_factory=dict)  # envelope widths offered per group
    wall_s: float = 0.0

    @property
    def latency_us(self) -> float:
        """Measured median where measured, else the prediction."""
        return float(self.measured.get("median_us", self.predicted_us))


@dataclass(frozen=True)
class OptimizeResult:
    """The pruned model, its plan and the history of the run."""

    model: nn.Module
    plan: PruningPlan
    history: tuple[StepRecord, ...]
    target_us: float
    met_target: bool

    @property
    def baseline(self) -> StepRecord:
        return self.history[0]

    @property
    def final(self) -> StepRecord:
        return self.history[-1]

    @property
    def speedup(self) -> float:
        """Baseline over final end-to-end latency (measured where measured)."""
        return self.baseline.latency_us / self.final.latency_us


class Optimizer:
    """Runs the LOCP loop for one model.

    Args:
        model: the trained, unpruned model (not modified).
        input_shape: one sample's shape, e.g. (3, 32, 32).
        config: targets and method.
        latency_us: latency of one layer config in µs (a `LatencyMeter` behind it: shared).
        time_model: end-to-end latency of a module, returning `Timing.summary()`; None when
            only a lookup table is available (the end-to-end figures are then predictions).
        out_dir: where checkpoints go.
        arch: zoo name of the architecture (recorded in the plan), if any.
        loaders: (train, test) DataLoaders for fine-tuning and accuracy; None to skip both.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], config: OptimizeConfig, *,
                 latency_us: Callable[[LayerConfig], float],
                 time_model: Callable[[nn.Module], Mapping[str, float]] | None,
                 out_dir: Path, arch: str | None = None,
                 loaders: tuple[Any, Any] | None = None,
                 log: Callable[[str], None] = print, progress: bool = True) -> None:
        self.original = model.eval()
        self.input_shape = tuple(int(v) for v in input_shape)
        self.config = config
        self.latency_us = latency_us
        self.time_model = time_model
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.arch = arch
        self.loaders = loaders
        self.log = log
        self.progress = progress
        self.device = torch.device("cpu")
        if config.finetune is not None or config.final_finetune is not None:
            from .train import resolve_torch_device

            self.device = resolve_torch_device("auto")

    # ---- helpers ---------------------------------------------------------------------------
    def _graph(self, model: nn.Module) -> ModelGraph:
        return build_graph(model, self.input_shape, batch=self.config.batch,
                           precision=self.config.precision)

    def _accuracy(self, model: nn.Module) -> float | None:
        if self.loaders is None:
            return None
        return evaluate(model.to(self.device), self.loaders[1], self.device)

    def _measure(self, model: nn.Module) -> dict[str, float]:
        if self.time_model is None:
            return {}
        return dict(self.time_model(copy.deepcopy(model).cpu().eval()))

    def _record(self, step: int, model: nn.Module, graph0: ModelGraph, widths: Mapping[str, int],
                start: float, **extra: Any) -> StepRecord:
        return StepRecord(
            step=step, widths=dict(widths),
            predicted_us=predicted_latency_us(graph0, widths, self.latency_us),
            measured=self._measure(model), accuracy=self._accuracy(model),
            flops=graph0.flops(widths), params=graph0.params(widths),
            wall_s=round(time.perf_counter() - start, 3), **extra)

    @staticmethod
    def _slope(history: list[StepRecord]) -> float:
        """How much measured end-to-end latency moves per µs of predicted layer-sum saving.

        The layer-sum model misses fusion, non-conv kernels and launch overhead, so the saving it
        predicts is not the saving measured. Before any step, assume savings scale with the
        measured/predicted ratio; afterwards use the last step's observed ratio of savings
        (clamped: one noisy step must not send the search to the floor or nowhere).
        """
        prev = history[-1]
        if len(history) >= 2:
            d_pred = history[-2].predicted_us - prev.predicted_us
            d_meas = history[-2].latency_us - prev.latency_us
            if d_pred > 1e-6 and prev.measured:
                return float(min(1.5, max(0.2, d_meas / d_pred)))
        return prev.latency_us / prev.predicted_us if prev.predicted_us > 0 else 1.0

    @classmethod
    def _layer_target(cls, history: list[StepRecord], step_target_us: float) -> float:
        """The layer-sum target (µs) that should bring the end-to-end latency to `step_target_us`.

        One step removes at most half the predicted layer time: a large calibrated gap must not
        send every group to its floor at once (accuracy), nor ask for a negative target.
        """
        prev = history[-1]
        target = prev.predicted_us - (prev.latency_us - step_target_us) / cls._slope(history)
        return max(target, 0.5 * prev.predicted_us)

    def _reseed(self, seed: int) -> None:
        """Seed torch and the training loader's shuffle per step, so a resumed run trains on
        exactly the batches an uninterrupted one would have."""
        torch.manual_seed(seed)
        gen = getattr(self.loaders[0], "generator", None) if self.loaders else None
        if gen is not None:
            gen.manual_seed(seed)

    # ---- checkpoints -------------------------------------------------------------------------
    def _save_state(self, model: nn.Module, plan: PruningPlan, history: list[StepRecord],
                    target_us: float) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        step = history[-1].step
        weights = self.ckpt_dir / f"step_{step:03d}.pt"
        tmp = weights.with_suffix(".pt.tmp")
        save_pruned(model.cpu(), plan, tmp)
        os.replace(tmp, weights)
        state = {"schema": STATE_SCHEMA, "config": self.config.to_json(), "step": step,
                 "weights": weights.name, "target_us": target_us,
                 "history": [asdict(h) for h in history]}
        tmp_state = self.ckpt_dir / "state.json.tmp"
        tmp_state.write_text(json.dumps(state, indent=1))
        os.replace(tmp_state, self.ckpt_dir / "state.json")

    def last_checkpoint(self) -> tuple[nn.Module, PruningPlan, list[StepRecord], float] | None:
        """The last completed step in `out_dir` as (model, plan, history, target_us), or None.

        What `run(resume=True)` continues from; also how a caller keeps the best result of a run
        it had to stop early.
        """
        path = self.ckpt_dir / "state.json"
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise LocpError(f"cannot resume: {path} is unreadable ({e}); delete {self.ckpt_dir} "
                            "to start afresh") from None
        if state.get("schema") != STATE_SCHEMA:
            raise LocpError(f"cannot resume: {path} has schema {state.get('schema')!r}, "
                            f"expected {STATE_SCHEMA!r}")
        if state.get("config") != self.config.to_json():
            raise LocpError(f"cannot resume: the options differ from the interrupted run's "
                            f"(see {path}); rerun with the same options or without --resume")
        from .prune.plan import pruned_from_payload

        payload = torch.load(self.ckpt_dir / state["weights"], map_location="cpu", weights_only=True)
        model, plan = pruned_from_payload(payload, arch_factory=lambda: copy.deepcopy(self.original),
                                          source=str(self.ckpt_dir / state["weights"]))
        history = [StepRecord(**h) for h in state["history"]]
        return model, plan, history, float(state["target_us"])

    # ---- the loop ------------------------------------------------------------------------------
    def run(self, *, resume: bool = False) -> OptimizeResult:
        """Run (or resume) the loop and return the pruned, fine-tuned model."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        graph0 = self._graph(self.original)
        if not graph0.prunable():
            raise LocpError("the model has no prunable channel group: "
                            + "; ".join(f"{g.id}: {g.reason}" for g in graph0.unprunable()))
        loaded = self.last_checkpoint() if resume else None
        start = time.perf_counter()
        if loaded is not None:
            model, plan, history, target_us = loaded
            self.log(f"resuming after step {history[-1].step} "
                     f"({history[-1].latency_us:.1f} µs, target {target_us:.1f} µs)")
        else:
            if resume:
                self.log(f"nothing to resume in {self.ckpt_dir}; starting afresh")
            model = copy.deepcopy(self.original)
            plan = PruningPlan(self.arch, self.input_shape, graph0.widths(),
                               kept={g: list(range(w)) for g, w in graph0.widths().items()})
            base = self._record(0, model, graph0, graph0.widths(), start)
            target_us = cfg.target_us(base.latency_us)
            history = [base]
            self.log(f"baseline: {base.latency_us:.1f} µs end to end "
                     f"({'measured' if base.measured else 'predicted'}), predicted layer sum "
                     f"{base.predicted_us:.1f} µs; target {target_us:.1f} µs")
            self._save_state(model, plan, history, target_us)

        max_step = cfg.steps + cfg.extra_steps
        aim_us = target_us * (1.0 - cfg.margin)
        while history[-1].step < max_step and history[-1].latency_us > aim_us:
            step = history[-1].step + 1
            t0 = time.perf_counter()
            model, plan, record = self._step(step, model, plan, graph0, history, aim_us, t0)
            if record is None:
                self.log(f"step {step}: no width can shrink further "
                         f"(--min-width-ratio {cfg.min_width_ratio}); stopping")
                break
            history.append(record)
            self.log(f"step {step}: {record.latency_us:.1f} µs "
                     f"(target {record.target_us:.1f}), predicted {record.predicted_us:.1f} µs"
                     + (f", accuracy {record.accuracy:.2f}%" if record.accuracy is not None else ""))
            self._save_state(model, plan, history, target_us)

        if cfg.final_finetune is not None and self.loaders is not None:
            self._reseed(cfg.seed + 10_000)
            fine_tune(model.to(self.device), self.loaders[0], cfg.final_finetune, self.device,
                      progress=self.progress, desc="final fine-tune")
            last = history[-1]
            history[-1] = replace(last, accuracy=self._accuracy(model))
        met = history[-1].latency_us <= target_us
        return OptimizeResult(model=model.cpu().eval(), plan=plan, history=tuple(history),
                              target_us=target_us, met_target=met)

    def _step(self, step: int, model: nn.Module, plan: PruningPlan, graph0: ModelGraph,
              history: list[StepRecord], target_us: float, t0: float):
        cfg = self.config
        base_us = history[0].latency_us
        frac = min(step, cfg.steps) / cfg.steps
        step_target = base_us * (target_us / base_us) ** frac
        predicted_target = self._layer_target(history, step_target)

        graph = self._graph(model)
        # Group ids are root-module names, stable under pruning; widths here are current ones.
        current = graph.widths()
        floors = {g: width_floor(graph0.groups[g].width, cfg.min_width_ratio)
                  for g in current if g in graph0.groups}
        cands = discover_candidates(graph, current, self.latency_us, method=cfg.discovery,
                                    floors=floors, progress=self.progress)
        scores = {g: group_importance(model, graph, g, cfg.importance) for g in cands}
        result = search(graph, current, cands, scores, self.latency_us, predicted_target,
                        method=cfg.search, progress=False)
        if not result.steps:
            return model, plan, None
        new_widths = {g: w for g, w in result.widths.items() if w != current[g]}
        step_plan = PruningPlan(self.arch, self.input_shape, new_widths)
        model, applied = apply_plan(model, step_plan, self.input_shape, importance=cfg.importance)
        # Compose kept indices so the plan maps onto the ORIGINAL model's channels.
        kept = dict(plan.kept or {})
        for g, idx in (applied.kept or {}).items():
            kept[g] = [kept[g][i] for i in idx]
        widths = {g: len(v) for g, v in kept.items()}
        plan = PruningPlan(self.arch, self.input_shape, widths, kept=kept, meta=applied.meta)
        if cfg.finetune is not None and self.loaders is not None:
            self._reseed(cfg.seed + step)
            fine_tune(model.to(self.device), self.loaders[0], cfg.finetune, self.device,
                      progress=self.progress, desc=f"fine-tune step {step}")
        record = self._record(step, model, graph0, widths, t0, target_us=step_target,
                              search=str(result),
                              candidates={g: list(c.widths) for g, c in cands.items()})
        return model, plan, record
