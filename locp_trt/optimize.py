"""The LOCP loop: profile, select, prune, fine-tune, and land on the requested speedup.

One step:
1. build the channel graph of the current model (`graph.build_graph`);
2. find each prunable group's candidate widths on its latency staircase (three-point
   discrimination through the shared `LatencyMeter`, so each distinct layer config is measured
   once across groups, steps and runs);
3. score channels (`prune.importance`) and let the two-stage benefit search
   (`prune.benefit.greedy_steps`) lay out its whole decision path, best benefit first, down to
   the width floor;
4. choose how far along that path to go by measuring prefixes against the unpruned model,
   interleaved (`landing.land`, `latency.compare`): the smallest prefix whose measured speedup
   reaches the step's goal;
5. prune physically, fine-tune, record, checkpoint.

Step goals rise geometrically from 1x to the target over `steps` steps (one step when there is
no fine-tuning between steps: the path is the same and only the landing matters). The last step
aims half the tolerance above the target, so re-measurement noise on either side still
lands in [target, target x (1 + tolerance)]. Extra steps run only while the target is missed and
the search still finds a narrower width that is faster.

The emitted model is the best checkpoint that meets the target (best accuracy when data is given,
else the least pruned), never a later, slower one; with none meeting it, the fastest. See
docs/METHOD.md, "Landing on the target".

Resuming: after every step `checkpoints/state.json` and `checkpoints/step_NNN.pt` are written
atomically; `resume=True` reloads the last completed step and continues from there.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .config_diff import config_differences
from .errors import InvalidConfigError, LocpError
from .graph import ModelGraph, build_graph, count_params
from .landing import Landing, Probe, land
from .latency.compare import CompareRule, Comparison, Sampler, Verdict, compare, compare_builds
from .latency.config import LayerConfig, Precision
from .latency.e2e import EndToEndModel, activation_elements
from .latency.timing import Timing
from .prune.benefit import predicted_latency_us
from .prune.candidates import DiscoveryMethod, discover_candidates, group_floor
from .prune.importance import (
    Importance,
    group_importance,
    most_important,
    taylor_scores,
    weigh_by_reach,
)
from .prune.ladder import Ladder, SearchMethod, build_ladder
from .prune.plan import PruningPlan, apply_plan, save_pruned
from .train import TrainConfig, evaluate, fine_tune

__all__ = ["OptimizeConfig", "StepRecord", "OptimizeResult", "Optimizer", "STATE_SCHEMA",
           "UnreachableTargetError"]

STATE_SCHEMA = "locp_trt.optimize_state/2"
#: A target is refused when it exceeds the speedup at the width floor by this factor (the floor
#: model is one plan; the path may find a slightly faster mix of widths above it).
REACH_SLACK = 1.1
#: Times the last step is redone when the final check lands above the band.
MAX_REPAIRS = 2


class UnreachableTargetError(InvalidConfigError):
    """The target cannot be reached: refused before any pruning, with the predicted maximum."""


@dataclass(frozen=True)
class OptimizeConfig:
    """What to optimize for and how. Exactly one of `speedup` / `target_latency_ms` is set."""

    # ---- target
    speedup: float | None = 2.0  # measured end-to-end speedup over the unpruned model
    target_latency_ms: float | None = None  # or an absolute end-to-end target
    tolerance: float = 0.10  # land within [target, target x (1 + tolerance)] of speedup
    # ---- schedule
    steps: int = 3  # pruning steps from the baseline to the target (geometric goals)
    extra_steps: int = 2  # more steps at the target while it is missed and a step still helps
    max_probes: int = 8  # measured prefixes of the decision path per step
    # ---- method
    discovery: DiscoveryMethod = DiscoveryMethod.THREE_POINT
    importance: Importance = Importance.L1
    weigh_groups: bool = True  # scale each group's importance by its reach (layers it touches)
    # the candidate plans a step lands among: prefixes of the greedy decision path, or knapsack
    # plans (least importance lost for each of a ladder of predicted latencies; opt-in, see METHOD.md)
    search: SearchMethod = SearchMethod.GREEDY
    min_width_ratio: float = 0.1  # never below this fraction of a group's original width
    # ---- what is measured, and how decisions are taken
    batch: int = 1
    precision: Precision = Precision.FP32
    compare: CompareRule = field(default_factory=CompareRule)
    # ---- training (None: no fine-tuning, e.g. latency-only runs)
    finetune: TrainConfig | None = None  # after every step
    final_finetune: TrainConfig | None = None  # once at the end
    max_acc_drop: float | None = None  # validation top-1 points a step may lose (None: no guard)
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.speedup is None) == (self.target_latency_ms is None):
            raise InvalidConfigError("give exactly one of --speedup or --target-latency-ms")
        if self.speedup is not None and not (math.isfinite(self.speedup) and self.speedup > 1.0):
            raise InvalidConfigError(
                f"--speedup must be a number above 1 (e.g. 1.5 or 2), got {self.speedup}")
        if self.target_latency_ms is not None and not (
                math.isfinite(self.target_latency_ms) and self.target_latency_ms > 0):
            raise InvalidConfigError(
                f"--target-latency-ms must be a positive number, got {self.target_latency_ms}")
        if not (math.isfinite(self.tolerance) and 0 < self.tolerance <= 1):
            raise InvalidConfigError(f"--tolerance must be in (0, 1] (0.1: up to 10% above the "
                                     f"target), got {self.tolerance}")
        if self.steps < 1 or self.extra_steps < 0 or self.max_probes < 1:
            raise InvalidConfigError(f"--steps must be >= 1 (got {self.steps}), --extra-steps >= 0 "
                                     f"(got {self.extra_steps}), max_probes >= 1")
        if not 0 < self.min_width_ratio <= 1:
            raise InvalidConfigError(f"--min-width-ratio must be in (0, 1], got {self.min_width_ratio}")
        if self.max_acc_drop is not None and not (math.isfinite(self.max_acc_drop) and self.max_acc_drop >= 0):
            raise InvalidConfigError(f"--max-acc-drop must be a number of points >= 0, got {self.max_acc_drop}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("discovery", "importance", "precision", "search"):
            d[k] = getattr(self, k).value
        return d


@dataclass(frozen=True)
class StepRecord:
    """What one step did and measured (step 0 is the unpruned baseline).

    `measured` holds the step's interleaved comparison with the unpruned model
    (`Comparison.summary()`: speedup and its interval, both medians in µs, rounds, verdict), or is
    empty when only a lookup table was available and every figure is a prediction.
    """

    step: int
    widths: dict[str, int]  # width of every group, relative to the ORIGINAL model
    predicted_us: float  # summed layer latencies at these widths
    measured: dict[str, Any]  # see above; {} when only predicted
    accuracy: float | None  # top-1 % on the test split (reported, never decided on), with data
    flops: int
    params: int
    target_us: float | None = None  # this step's end-to-end goal in µs (baseline / goal speedup)
    goal_speedup: float | None = None  # this step's goal
    search: str = ""  # the search's one-line summary
    candidates: dict[str, list[int]] = field(default_factory=dict)  # envelope widths offered per group
    decisions: int = 0  # decisions of the path taken at this step
    path_length: int = 0  # decisions the path offered
    importance_lost: float = 0.0  # cumulative, since the unpruned model
    probes: list[dict[str, Any]] = field(default_factory=list)  # prefixes measured to land
    val_accuracy: float | None = None  # top-1 % on the validation split: what decisions use
    guard_rejected: bool = False  # the accuracy guard refused this step (never emitted)
    wall_s: float = 0.0
    # End-to-end speedup the calibrated latency model (`latency.e2e`) predicted for this step's
    # plan before it was measured (None: nothing measured to calibrate on).
    predicted_speedup: float | None = None
    # The speedup the step landed on, as its chosen probe measured it (before fine-tuning).
    landed_speedup: float | None = None

    @property
    def kind(self) -> str:
        """'measured' or 'predicted': where `latency_us` and `speedup` come from."""
        return "measured" if self.measured else "predicted"

    @property
    def latency_us(self) -> float:
        """Measured median where measured, else the prediction."""
        return float(self.measured.get("median_us", self.predicted_us))

    def speedup_over(self, baseline: StepRecord) -> float:
        """Speedup over the unpruned model: the interleaved comparison's, else predicted."""
        if "speedup" in self.measured:
            return float(self.measured["speedup"])
        return baseline.predicted_us / self.predicted_us if self.predicted_us > 0 else 1.0


@dataclass(frozen=True)
class OptimizeResult:
    """The emitted model (the best checkpoint), its plan and the history of the run."""

    model: nn.Module
    plan: PruningPlan
    history: tuple[StepRecord, ...]
    target_us: float  # the end-to-end target, relative to the baseline measured in this run
    target_speedup: float
    chosen_step: int  # the step whose checkpoint is emitted
    met_target: bool  # by the loop's own comparison of the chosen step
    stop_reason: str  # why the loop ended, in words
    guard: dict[str, Any] | None = None  # what the accuracy guard did (None: no guard)
    confirmation: Comparison | None = None  # the final check of the emitted model (None: predicted)
    tolerance: float = 0.10  # the band is [target, target x (1 + tolerance)]
    latency_model: dict[str, Any] = field(default_factory=dict)  # `latency.e2e` fit and its errors

    @property
    def status(self) -> str:
        """'landed' (in the band), 'overshot' (met, but above the band) or 'missed'."""
        if not self.met_target:
            return "missed"
        return "overshot" if self.speedup_final > self.target_speedup * (1 + self.tolerance) else "landed"

    @property
    def speedup_final(self) -> float:
        """The final check's speedup where there was one, else the loop's figure."""
        return self.confirmation.speedup if self.confirmation is not None else self.speedup

    @property
    def baseline(self) -> StepRecord:
        return self.history[0]

    @property
    def final(self) -> StepRecord:
        """The emitted step's record (not necessarily the last step run)."""
        return next(h for h in self.history if h.step == self.chosen_step)

    @property
    def speedup(self) -> float:
        """The emitted step's speedup over the unpruned model, as the loop measured it."""
        return self.final.speedup_over(self.baseline)


class Optimizer:
    """Runs the LOCP loop for one model.

    Args:
        model: the trained, unpruned model (not modified).
        input_shape: one sample's shape, e.g. (3, 32, 32).
        config: targets and method.
        latency_us: latency of one layer config in µs (a `LatencyMeter` behind it: shared).
        prepare_model: builds a module once for repeated timing (`Runtime.prepare_module` at the
            run's input shape and precision); None when only a lookup table is available (every
            end-to-end figure is then a prediction).
        builder: module -> a factory of fresh builds (`Runtime.builder`: exports once, builds
            many); None: each build calls `prepare_model` again.
        build_variance: fresh builds of one model may differ in speed (GPU runtimes): probes near
            the target band in the last step then pool `config.compare.builds` builds.
        out_dir: where checkpoints go.
        arch: zoo name of the architecture (recorded in the plan), if any.
        loaders: `data.Loaders` (train, val, test); None: no fine-tuning and no accuracy. Decisions (guard, best checkpoint) use val where there is one.
        train_device: where fine-tuning runs (auto: CUDA when present), whatever is measured.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], config: OptimizeConfig, *,
                 latency_us: Callable[[LayerConfig], float],
                 prepare_model: Callable[[nn.Module], Sampler] | None,
                 out_dir: Path, arch: str | None = None,
                 loaders: Any = None, train_device: str = "auto",
                 log: Callable[[str], None] = print, progress: bool = True,
                 builder: Callable[[nn.Module], Callable[[], Sampler]] | None = None,
                 build_variance: bool = False) -> None:
        self.original = model.eval()
        self.input_shape = tuple(int(v) for v in input_shape)
        self.config = config
        self.latency_us = latency_us
        self.prepare_model = prepare_model
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.arch = arch
        self.loaders = loaders
        self.log = log
        self.progress = progress
        self._reference: Sampler | None = None  # the unpruned model, built once per run
        self._reference_builds: Callable[[], Sampler] | None = None
        self.builder = builder
        self.build_variance = bool(build_variance)
        # (layer sum µs, activation elements, measured µs) of every measured model: `latency.e2e`
        self._points: list[tuple[float, float, float]] = []
        self.e2e = EndToEndModel()
        self._errors: dict[str, dict[str, float]] = {}  # where predictions met measurements
        self._aim_scale = 1.0  # lowered when the final check overshoots the band (one redo each)
        self._overshoots: list[dict[str, Any]] = []
        self._current: tuple[nn.Module, PruningPlan] | None = None  # where the steps have got to
        self.device = torch.device("cpu")
        if config.finetune is not None or config.final_finetune is not None:
            from .train import resolve_torch_device

            self.device = resolve_torch_device(train_device)

    # ---- measurement -----------------------------------------------------------------------------
    @property
    def measures(self) -> bool:
        """True when decisions are measured end to end (else predicted from the lookup table)."""
        return self.prepare_model is not None

    def _builds(self, model: nn.Module) -> Callable[[], Sampler]:
        """A factory of fresh builds of a copy of `model`."""
        work = copy.deepcopy(model).cpu().eval()
        if self.builder is not None:
            return self.builder(work)
        assert self.prepare_model is not None
        return lambda: self.prepare_model(work)

    def reference_builds(self) -> Callable[[], Sampler]:
        """Fresh builds of the unpruned model (exported once per run)."""
        if self._reference_builds is None:
            self._reference_builds = self._builds(self.original)
        return self._reference_builds

    def reference(self) -> Sampler:
        """The unpruned model, built once for the probes of the run."""
        if self._reference is None:
            self._reference = self.reference_builds()()
        return self._reference

    def compare_to_reference(self, model: nn.Module, threshold: float | None, *,
                             builds: int = 1) -> Comparison:
        """Interleaved comparison of `model` with the unpruned model (`latency.compare`). With
        `builds` > 1, that many fresh builds of both are compared and judged together
        (`compare_builds`); with 1, the run's reference build and one build of `model`."""
        assert self.prepare_model is not None
        candidate = self._builds(model)
        if builds <= 1:
            return compare(self.reference(), candidate(), self.config.compare, threshold=threshold)
        return compare_builds(self.reference_builds(), candidate, self.config.compare,
                              threshold=threshold, builds=builds)

    # ---- the end-to-end latency model ----------------------------------------------------------
    def _layer_terms(self, graph: ModelGraph, widths: Mapping[str, int]) -> tuple[float, float]:
        """(layer sum µs, activation elements) of `graph` at `widths`."""
        configs = graph.layer_configs(dict(widths))
        return (float(sum(self.latency_us(c) for c in configs.values())),
                activation_elements(configs.values()))

    def e2e_us(self, graph: ModelGraph, widths: Mapping[str, int]) -> float:
        """End-to-end latency of `graph` at `widths` as the calibrated model predicts it (µs);
        the raw layer sum while nothing was measured."""
        return self.e2e.predict_us(*self._layer_terms(graph, widths))

    def _observe(self, graph: ModelGraph, widths: Mapping[str, int], measured_us: float) -> None:
        """A measured end-to-end latency at `widths`: one more point, and the model refitted."""
        if measured_us > 0 and math.isfinite(measured_us):
            self._points.append((*self._layer_terms(graph, widths), float(measured_us)))
            self.e2e = EndToEndModel.fit(self._points)

    def _note_error(self, name: str, predicted: float, measured: float) -> None:
        """Record a predicted vs measured speedup (the report's latency-model section)."""
        self._errors[name] = {"predicted_speedup": round(predicted, 4),
                              "measured_speedup": round(measured, 4),
                              "error": round(predicted / measured - 1, 4) if measured > 0 else None}

    def latency_model_report(self) -> dict[str, Any]:
        """The fitted model, the layer sum's share of the unpruned model's time, and every
        predicted-vs-measured pair of the run."""
        out: dict[str, Any] = {**self.e2e.to_json(), "predictions": dict(self._errors)}
        if self._points:
            L0, _, T0 = self._points[0]
            out["layer_sum_share"] = round(L0 / T0, 4) if T0 > 0 else None
        errs = [abs(v["error"]) for v in self._errors.values() if v.get("error") is not None]
        out["max_abs_error"] = round(max(errs), 4) if errs else None
        return out

    def _baseline_measure(self) -> dict[str, Any]:
        """The unpruned model timed alone (as many samples as a full comparison's minimum)."""
        if not self.measures:
            return {}
        rule = self.config.compare
        sample = self.reference()
        sample(rule.warmup, 1)
        timing = Timing.from_samples(sample(rule.warmup, rule.iters * rule.min_rounds))
        return {**timing.summary(), "speedup": 1.0, "speedup_low": 1.0, "speedup_high": 1.0}

    # ---- helpers ---------------------------------------------------------------------------
    def _graph(self, model: nn.Module) -> ModelGraph:
        return build_graph(model, self.input_shape, batch=self.config.batch,
                           precision=self.config.precision)

    def _accuracy(self, model: nn.Module, split: str = "test") -> float | None:
        loader = getattr(self.loaders, split, None) if self.loaders is not None else None
        if loader is None:
            return None
        return evaluate(model.to(self.device), loader, self.device)

    def _fine_tune(self, model: nn.Module, cfg: TrainConfig, desc: str) -> None:
        teacher = self.original if cfg.distill_alpha > 0 else None
        fine_tune(model.to(self.device), self.loaders.train, cfg, self.device, teacher=teacher,
                  progress=self.progress, desc=desc)

    def _record(self, step: int, model: nn.Module, graph0: ModelGraph, widths: Mapping[str, int],
                start: float, measured: Mapping[str, Any], **extra: Any) -> StepRecord:
        return StepRecord(
            step=step, widths=dict(widths),
            predicted_us=predicted_latency_us(graph0, widths, self.latency_us),
            measured=dict(measured), accuracy=self._accuracy(model),
            val_accuracy=self._accuracy(model, "val"),
            flops=graph0.flops(widths), params=count_params(model),
            wall_s=round(time.perf_counter() - start, 3), **extra)

    def _reseed(self, seed: int) -> None:
        """Seed torch and the training loader's shuffle per step, so a resumed run trains on
        exactly the batches an uninterrupted one would have."""
        torch.manual_seed(seed)
        gen = getattr(self.loaders.train, "generator", None) if self.loaders else None
        if gen is not None:
            gen.manual_seed(seed)

    def _floors(self, graph0: ModelGraph) -> dict[str, int]:
        # Per group, and per concat part inside a group: no part may be emptied.
        return {g: group_floor(grp, self.config.min_width_ratio)
                for g, grp in graph0.groups.items() if grp.prunable}

    def target_speedup(self, baseline: StepRecord) -> float:
        """The speedup to reach: --speedup, or what --target-latency-ms needs over the baseline."""
        cfg = self.config
        if cfg.speedup is not None:
            return float(cfg.speedup)
        base_us = baseline.latency_us
        target_us = cfg.target_latency_ms * 1000.0
        if target_us >= base_us:
            raise InvalidConfigError(
                f"--target-latency-ms {cfg.target_latency_ms} is at or above the unpruned model's "
                f"{base_us / 1000:.4f} ms ({baseline.kind}): nothing to prune; ask for less")
        return base_us / target_us

    def check_reachable(self, graph0: ModelGraph, baseline: StepRecord, speedup: float) -> float:
        """The maximum speedup at the width floor; refuses a target far above it.

        Every group at its floor (--min-width-ratio) is the most the loop may prune. Its speedup is
        predicted by the end-to-end model calibrated on the unpruned model (`latency.e2e`) and,
        when the loop measures, measured against the unpruned model: that point calibrates the
        model for the steps, and the prediction's error is reported. The measured figure (else
        the prediction), with 10% slack, bounds what is accepted.
        """
        floor_widths = {**graph0.widths(), **self._floors(graph0)}
        floor_us = self.e2e_us(graph0, floor_widths)
        base_us = self.e2e_us(graph0, graph0.widths())
        predicted = base_us / floor_us if floor_us > 0 else math.inf
        best, how = predicted, f"predicted {predicted:.2f}x"
        if self.measures:
            floor_model, _ = apply_plan(self.original, PruningPlan(self.arch, self.input_shape,
                                                                   self._floors(graph0)),
                                        self.input_shape)  # latency only: which channels is moot
            cmp = self.compare_to_reference(floor_model, threshold=None)
            self._note_error("floor", predicted, cmp.speedup)
            self._observe(graph0, floor_widths, baseline.latency_us / cmp.speedup)
            best, how = cmp.speedup, f"measured {cmp.describe()} (predicted {predicted:.2f}x)"
        if speedup > best * REACH_SLACK:
            raise UnreachableTargetError(
                f"a {speedup:.3g}x speedup cannot be reached: with every channel group at its floor "
                f"(--min-width-ratio {self.config.min_width_ratio}) the model is {how}; ask for at "
                f"most {best:.2f}x, or lower --min-width-ratio")
        return best

    # ---- checkpoints -------------------------------------------------------------------------
    def _save_state(self, model: nn.Module, plan: PruningPlan, history: list[StepRecord],
                    target_speedup: float) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        step = history[-1].step
        weights = self.ckpt_dir / f"step_{step:03d}.pt"
        tmp = weights.with_suffix(".pt.tmp")
        save_pruned(model.cpu(), plan, tmp)
        os.replace(tmp, weights)
        state = {"schema": STATE_SCHEMA, "config": self.config.to_json(), "step": step,
                 "weights": weights.name, "target_speedup": target_speedup,
                 "history": [asdict(h) for h in history]}
        tmp_state = self.ckpt_dir / "state.json.tmp"
        tmp_state.write_text(json.dumps(state, indent=1))
        os.replace(tmp_state, self.ckpt_dir / "state.json")

    def _read_state(self) -> dict[str, Any] | None:
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
                            f"expected {STATE_SCHEMA!r}; delete {self.ckpt_dir} to start afresh")
        if state.get("config") != self.config.to_json():
            diffs = config_differences(state.get("config") or {}, self.config.to_json())
            raise LocpError(f"cannot resume: the options differ from the interrupted run's "
                            f"({'; '.join(diffs) or 'the saved config does not match'}); rerun with "
                            "the same options, or with --force to start afresh")
        return state

    def _load_step(self, step: int) -> tuple[nn.Module, PruningPlan]:
        from .prune.plan import pruned_from_payload

        path = self.ckpt_dir / f"step_{step:03d}.pt"
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return pruned_from_payload(payload, arch_factory=lambda: copy.deepcopy(self.original),
                                   source=str(path))

    def last_checkpoint(self) -> tuple[nn.Module, PruningPlan, list[StepRecord], float] | None:
        """The last completed step in `out_dir` as (model, plan, history, target speedup), or None.

        What `run(resume=True)` continues from; also how a caller keeps the best result of a run
        it had to stop early.
        """
        state = self._read_state()
        if state is None:
            return None
        model, plan = self._load_step(int(state["step"]))
        history = [StepRecord(**h) for h in state["history"]]
        return model, plan, history, float(state["target_speedup"])

    # ---- the loop ------------------------------------------------------------------------------
    def run(self, *, resume: bool = False) -> OptimizeResult:
        """Run (or resume) the loop and return the best checkpoint, fine-tuned."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        graph0 = self._graph(self.original)
        if not graph0.prunable():
            raise LocpError("the model has no prunable channel group: "
                            + "; ".join(f"{g.id}: {g.reason}" for g in graph0.unprunable()))
        if cfg.importance is Importance.TAYLOR and self.loaders is None:
            raise InvalidConfigError("--importance taylor needs training data for its gradients: pass "
                                     "--data, or use --importance l1")
        loaded = self.last_checkpoint() if resume else None
        start = time.perf_counter()
        if loaded is not None:
            model, plan, history, target = loaded
            for h in history:  # the measured points calibrate the end-to-end model again
                if h.measured:
                    self._observe(graph0, h.widths, history[0].latency_us / h.speedup_over(history[0]))
            self.log(f"resuming after step {history[-1].step} "
                     f"({history[-1].speedup_over(history[0]):.2f}x, target {target:.2f}x)")
        else:
            if resume:
                self.log(f"nothing to resume in {self.ckpt_dir}; starting afresh")
            model = copy.deepcopy(self.original)
            plan = PruningPlan(self.arch, self.input_shape, graph0.widths(),
                               kept={g: list(range(w)) for g, w in graph0.widths().items()})
            self.log("timing the unpruned model" if self.measures else "predicting the unpruned model")
            base = self._record(0, model, graph0, graph0.widths(), start, self._baseline_measure())
            if base.measured:
                self._observe(graph0, graph0.widths(), base.latency_us)
            target = self.target_speedup(base)
            predicted_max = self.check_reachable(graph0, base, target)
            history = [base]
            self.log(f"baseline: {base.latency_us:.1f} µs end to end ({base.kind} in this run), "
                     f"layer sum predicted {base.predicted_us:.1f} µs; target {target:.3g}x "
                     f"(land within +{cfg.tolerance:.0%}); at the width floor about {predicted_max:.2f}x")
            self._save_state(model, plan, history, target)

        steps = cfg.steps if cfg.finetune is not None and self.loaders is not None else 1
        confirmation: Comparison | None = None
        tuned_step = -1
        repairs = 0
        while True:
            stop_reason, hard_stop = self._steps(model, plan, graph0, history, target, steps)
            model, plan = self._current
            # After a redo the steps' own figures read low by the offset the final checks showed.
            chosen = self._best(history, target * min(1.0, self._aim_scale))
            if chosen.step != history[-1].step:
                self.log(f"emitting step {chosen.step} ({chosen.speedup_over(history[0]):.3f}x): "
                         f"better than the last step {history[-1].step}")
                model, plan = self._load_step(chosen.step)
            if cfg.final_finetune is not None and self.loaders is not None and 0 < chosen.step != tuned_step:
                self._reseed(cfg.seed + 10_000 + chosen.step)
                self._fine_tune(model, cfg.final_finetune, "final fine-tune")
                tuned_step = chosen.step
                i = next(i for i, h in enumerate(history) if h.step == chosen.step)
                before = history[i]
                history[i] = replace(history[i], accuracy=self._accuracy(model),
                                     val_accuracy=self._accuracy(model, "val"))
                self.log(f"final fine-tune of step {chosen.step}: test accuracy {_pct(before.accuracy)} -> "
                         f"{_pct(history[i].accuracy)}, validation {_pct(before.val_accuracy)} -> "
                         f"{_pct(history[i].val_accuracy)}")
            if not self.measures or chosen.step == 0:
                break
            # The final check, on the model as emitted: when it falls short and the step was the
            # last one, the loop goes on from it (the check replaces the step's own figure).
            confirmation = self.confirm(model, target)
            i = next(i for i, h in enumerate(history) if h.step == chosen.step)
            history[i] = replace(history[i], measured={**confirmation.summary(), "final_check": True})
            if i + 1 == len(history):  # the emitted step is the last: its checkpoint is this model
                self._save_state(model, plan, history, target)
            high = target * (1 + cfg.tolerance)
            if (confirmation.verdict is Verdict.MEETS and confirmation.speedup > high
                    and target <= (chosen.landed_speedup or chosen.speedup_over(history[0])) <= high
                    and chosen.step == history[-1].step and repairs < MAX_REPAIRS):
                # The step landed inside the band by its probe, the final check is above it (the
                # probes' builds ran slower than fresh ones, or fine-tuning changed the speed).
                # Redo the step from the checkpoint before it, aiming lower. (A step already above the band by its own probes found no plan
                # inside it: redoing it would find the same plan.)
                repairs += 1
                # The first redo corrects half the (log) gap, which may be part noise; a second
                # one, with the offset seen twice, the whole gap.
                gap = target * (1 + cfg.tolerance / 2) / confirmation.speedup
                self._aim_scale *= gap ** (repairs / MAX_REPAIRS)
                self.log(f"final check {confirmation.speedup:.3f}x is above the band "
                         f"[{target:.3g}x, {high:.3g}x]: redoing step {chosen.step} from step "
                         f"{chosen.step - 1} with a lower aim ({repairs} of {MAX_REPAIRS})")
                self._overshoots.append({"step": chosen.step, "speedup": round(confirmation.speedup, 4),
                                         "aim_scale": round(self._aim_scale, 4)})
                history.pop()
                previous = history[-1]
                self._current = self._load_step(previous.step)
                if previous.step == 0:
                    self._current = (copy.deepcopy(self.original), self._current[1])
                self._save_state(*self._current, history, target)
                tuned_step = -1
                model, plan = self._current
                continue
            if confirmation.verdict is Verdict.MEETS:  # the whole interval at or above the target
                break
            if hard_stop or chosen.step != history[-1].step or history[-1].step >= steps + cfg.extra_steps:
                stop_reason = (f"{stop_reason}; the final check measured {confirmation.speedup:.3f}x"
                               if stop_reason else f"the final check measured {confirmation.speedup:.3f}x")
                break
            self.log(f"final check {confirmation.describe()}: not clearly at or above {target:.3g}x, "
                     "one more step")
            # A lowered aim that now falls short was an offset that did not hold: aim as at first.
            self._aim_scale = 1.0
            self._current = (model, plan)
        chosen = next(h for h in history if h.step == chosen.step)  # with its final check
        met = chosen.step > 0 and chosen.speedup_over(history[0]) >= target
        if confirmation is not None:  # measured: met only when the final check clearly says so
            met = met and confirmation.verdict is Verdict.MEETS
        guard = None
        if cfg.max_acc_drop is not None:
            rejected = [h.step for h in history if h.guard_rejected]
            guard = {"max_acc_drop": cfg.max_acc_drop, "split": "val" if history[0].val_accuracy is not None
                     else "test", "rejected_steps": rejected,
                     "note": (f"rejected step(s) {rejected}; emitted step {chosen.step}" if rejected
                              else "every step stayed within the limit")}
        if self._overshoots:
            stop_reason += "; " + "; ".join(
                f"step {o['step']} overshot at {o['speedup']:.3f}x and was redone" for o in self._overshoots)
        return OptimizeResult(model=model.cpu().eval(), plan=plan, history=tuple(history),
                              target_us=history[0].latency_us / target, target_speedup=target,
                              chosen_step=chosen.step, met_target=met, stop_reason=stop_reason,
                              guard=guard, confirmation=confirmation, tolerance=cfg.tolerance,
                              latency_model={**self.latency_model_report(),
                                             "overshoots_repaired": list(self._overshoots)})

    def _steps(self, model: nn.Module, plan: PruningPlan, graph0: ModelGraph, history: list[StepRecord],
               target: float, steps: int) -> tuple[str, bool]:
        """Steps until the target is reached (by the steps' own comparisons) or the loop must
        stop; returns (why it stopped, whether that was a hard stop), the model and plan reached
        in `self._current`."""
        cfg = self.config
        self._current = (model, plan)
        while True:
            last = history[-1]
            reached = last.speedup_over(history[0])
            if last.step >= 1 and reached >= target * min(1.0, self._aim_scale):
                return f"target reached at step {last.step}", False
            if last.step >= steps + cfg.extra_steps:
                return (f"the target was still missed after {last.step} steps (--steps {steps}, "
                        f"--extra-steps {cfg.extra_steps})"), True
            step = last.step + 1
            # The first scheduled goal above what is already reached (a step may overshoot its own).
            s = step
            while s < steps and target ** (s / steps) <= reached:
                s += 1
            goal = target ** (min(s, steps) / steps)
            final = s >= steps
            # After a redo the aim (and the band the step's probes land in) is scaled by what the
            # final checks showed, even below the target: the final check still decides.
            aim = goal * (1 + cfg.tolerance / 2) * self._aim_scale if final else goal
            model, plan = self._current
            outcome = self._step(step, model, plan, graph0, history, goal, aim, final, time.perf_counter())
            if isinstance(outcome, str):
                self.log(f"step {step}: {outcome}")
                return f"step {step}: {outcome}", True
            model, plan, record = outcome
            self._current = (model, plan)
            drop = self._guard_drop(history[0], record)
            if drop is not None:
                record = replace(record, guard_rejected=True)
            history.append(record)
            self.log(f"step {step}: {record.speedup_over(history[0]):.3f}x {record.kind} "
                     f"(goal {goal:.3f}x), {record.decisions} of {record.path_length} "
                     f"{'plans' if record.search.startswith('knapsack') else 'decisions'}, "
                     f"{len(record.probes)} probes"
                     + (f", accuracy {record.accuracy:.2f}%" if record.accuracy is not None else ""))
            self._save_state(model, plan, history, target)
            if drop is not None:
                reason = (f"accuracy guard: step {step} lost {drop:.2f} validation points "
                          f"(--max-acc-drop {cfg.max_acc_drop}); stopped before pruning further")
                self.log(reason)
                return reason, True

    def confirm(self, model: nn.Module, target: float) -> Comparison:
        """The emitted model against the unpruned one, judged against the target on fresh builds
        of both (`config.compare.builds` pairs at least, more while unclear): never the build or
        the rounds that selected the step."""
        builds = self.config.compare.builds
        self.log(f"final check: the emitted model against the unpruned one, {builds} fresh builds of each")
        cmp = self.compare_to_reference(model, threshold=target, builds=builds)
        spread = cmp.build_spread
        self.log(f"final check: {cmp.describe()}"
                 + (f"; per-build medians spread {spread:.1%}" if spread is not None else ""))
        return cmp

    def _guard_drop(self, base: StepRecord, record: StepRecord) -> float | None:
        """The accuracy the step lost, when that is more than --max-acc-drop allows (else None)."""
        limit = self.config.max_acc_drop
        before = base.val_accuracy if base.val_accuracy is not None else base.accuracy
        after = record.val_accuracy if record.val_accuracy is not None else record.accuracy
        if limit is None or before is None or after is None:
            return None
        drop = before - after
        return drop if drop > limit else None

    @staticmethod
    def _best(history: list[StepRecord], target: float) -> StepRecord:
        """The checkpoint to emit: among steps meeting the target, the most accurate (data given)
        or the least pruned; with none meeting it, the fastest."""
        base = history[0]
        steps = [h for h in history if h.step > 0 and not h.guard_rejected]
        if not steps:
            return base
        meeting = [h for h in steps if h.speedup_over(base) >= target]
        if meeting:
            def acc(h: StepRecord) -> float | None:
                return h.val_accuracy if h.val_accuracy is not None else h.accuracy

            if all(acc(h) is not None for h in meeting):
                return max(meeting, key=lambda h: (acc(h), -h.step))
            return min(meeting, key=lambda h: h.step)
        return max(steps, key=lambda h: (h.speedup_over(base), -h.step))

    # ---- one step ------------------------------------------------------------------------------
    def _ladder(self, graph: ModelGraph, current: dict[str, int], model: nn.Module,
                floors: Mapping[str, int], discovery: DiscoveryMethod) -> tuple[dict, Ladder | None]:
        """(candidates, the step's ladder: None when no narrower width is predicted faster)."""
        cfg = self.config
        cands = discover_candidates(graph, current, self.latency_us, method=discovery,
                                    floors=floors, progress=self.progress)
        if cfg.importance is Importance.TAYLOR:
            scores = taylor_scores(model, graph, self.loaders.train, batches=8, device=self.device,
                                   groups=list(cands))
        else:
            scores = {g: group_importance(model, graph, g, cfg.importance) for g in cands}
        if cfg.weigh_groups:
            scores = weigh_by_reach(scores, graph)
        e2e = self.e2e  # the model as calibrated before this step's probes

        def predict_us(widths: Mapping[str, int]) -> float:
            return e2e.predict_us(*self._layer_terms(graph, widths))

        ladder = build_ladder(cfg.search, graph, current, cands, scores, floors,
                              latency_us=self.latency_us, predict_us=predict_us)
        return cands, scores, ladder

    def _step(self, step: int, model: nn.Module, plan: PruningPlan, graph0: ModelGraph,
              history: list[StepRecord], goal: float, aim: float, final: bool, t0: float):
        """One step; returns (model, plan, record), or a sentence saying why no step was found."""
        cfg = self.config
        graph = self._graph(model)
        current = graph.widths()
        floors0 = self._floors(graph0)
        floors = {g: floors0[g] for g in current if g in floors0}
        movable = [g for g in floors if current[g] > floors[g]]
        if not movable:
            return f"no width can shrink further: every group is at its floor (--min-width-ratio {cfg.min_width_ratio})"
        cands, scores, ladder = self._ladder(graph, current, model, floors, cfg.discovery)
        if ladder is None and cfg.discovery is not DiscoveryMethod.SWEEP:
            self.log(f"step {step}: three-point discrimination found no faster narrower width on "
                     f"{len(movable)} groups above their floor; sweeping every width")
            cands, scores, ladder = self._ladder(graph, current, model, floors, DiscoveryMethod.SWEEP)
        if ladder is None:
            return (f"no narrower width is faster on any of the {len(movable)} groups above their "
                    f"floor (every width swept down to --min-width-ratio {cfg.min_width_ratio}); "
                    "the staircases are flat below the current widths")
        prefix_widths = [r.widths for r in ladder.rungs]
        lost = [r.importance_lost for r in ladder.rungs]
        predicted = ladder.predicted_us
        unit = ladder.unit
        n_plans = ladder.plans
        layout = str(ladder)
        model_before = self.e2e  # as calibrated before this step's probes
        base, last = history[0], history[-1]
        target = goal if final else None
        band = (goal * self._aim_scale, goal * (1 + cfg.tolerance) * self._aim_scale) if final else None
        built: dict[tuple, tuple[nn.Module, PruningPlan]] = {}
        comparisons: dict[tuple, Comparison] = {}

        def build(widths: Mapping[str, int]) -> tuple[nn.Module, PruningPlan]:
            key = tuple(sorted(widths.items()))
            if key not in built:
                new = {g: w for g, w in widths.items() if w != current[g]}
                kept = None
                if cfg.importance is Importance.TAYLOR:
                    # Taylor scores need data, so the step's own are passed in rather than
                    # recomputed inside apply_plan (which keeps concat parts for the others).
                    kept = {g: most_important(scores[g], w) for g, w in new.items()}
                built[key] = apply_plan(model, PruningPlan(self.arch, self.input_shape, new),
                                        self.input_shape, importance=Importance.L1 if kept else cfg.importance,
                                        kept=kept, min_width_ratio=cfg.min_width_ratio)
            return built[key]

        def measure(widths: Mapping[str, int], pred_us: float, label: str, k: int) -> Probe:
            if self.measures:
                cmp = self.compare_to_reference(build(widths)[0], threshold=aim)
                if final and self.build_variance and goal / (1 + cfg.tolerance) <= cmp.speedup <= (
                        goal * (1 + cfg.tolerance) ** 2):
                    # Near the band on a runtime whose builds differ: judge on several fresh builds.
                    cmp = self.compare_to_reference(build(widths)[0], threshold=aim,
                                                    builds=cfg.compare.builds)
                comparisons[tuple(sorted(widths.items()))] = cmp
                self._observe(graph, widths, base.latency_us / cmp.speedup)
                p = Probe(k, cmp.speedup, cmp.low, cmp.high, cmp.verdict.value, pred_us, cmp.rounds)
                how = cmp.describe()
            else:
                sp = base.predicted_us / pred_us
                p = Probe(k, sp, sp, sp, (Verdict.MEETS if sp >= aim else Verdict.MISSES).value, pred_us)
                how = "predicted"
            self.log(f"step {step}: {label}, predicted {pred_us:.1f} µs -> {p.speedup:.3f}x "
                     f"({how}), aim {aim:.3f}x")
            return p

        landing: Landing = land(
            predicted, last.speedup_over(base), aim,
            lambda k: measure(prefix_widths[k], predicted[k], f"probe {k}/{n_plans} {unit}", k),
            max_probes=cfg.max_probes, band=band)
        chosen, chosen_probe, chosen_lost = prefix_widths[landing.k], landing.probe, lost[landing.k]
        probes = list(landing.probes)
        summary = (f"{layout} ({predicted[0]:.1f} -> {predicted[-1]:.1f} µs "
                   f"predicted); took {landing.k} ({predicted[landing.k]:.1f} µs) after "
                   f"{len(landing.probes)} probes"
                   + ("" if landing.reached_aim else f"; no prefix reached {aim:.3f}x, kept the fastest"))
        if band is not None and chosen_probe.speedup > band[1] and landing.k >= 1:
            # One decision of the path jumps over the whole band: try the single decisions from the
            # prefix before it that are predicted to land inside the band, least importance first.
            k = landing.k
            known = {p.k: p.speedup for p in landing.probes} | {0: last.speedup_over(base)}
            if k - 1 in known:
                for rung in ladder.inside_band(k, (known[k - 1], known[k]), aim, band):
                    p = measure(rung.widths, rung.predicted_us, f"alternative to decision {k}", k)
                    probes.append(p)
                    if band[0] <= p.speedup <= band[1]:
                        chosen, chosen_probe, chosen_lost = rung.widths, p, rung.importance_lost
                        summary += f"; decision {k} overshot, replaced by a single decision landing in the band"
                        break

        new_model, applied = build(chosen)
        # Compose kept indices so the plan maps onto the ORIGINAL model's channels.
        kept = dict(plan.kept or {})
        for g, idx in (applied.kept or {}).items():
            kept[g] = [kept[g][i] for i in idx]
        widths = {g: len(v) for g, v in kept.items()}
        new_plan = PruningPlan(self.arch, self.input_shape, widths, kept=kept, meta=applied.meta)
        tuned = cfg.finetune is not None and self.loaders is not None
        if tuned:
            self._reseed(cfg.seed + step)
            self._fine_tune(new_model, cfg.finetune, f"fine-tune step {step}")
        measured = comparisons[tuple(sorted(chosen.items()))].summary() if self.measures else {}
        if self.measures and final and tuned:
            # The last step is judged on the fine-tuned model itself: a CPU runs trained weights
            # measurably slower than fresh ones (denormal activations), about 1-2% here.
            cmp = self.compare_to_reference(new_model, threshold=target)
            self.log(f"step {step}: after fine-tuning {cmp.describe()}")
            measured = cmp.summary()
        predicted_speedup = None
        if model_before.points:
            predicted_speedup = (model_before.predict_us(*self._layer_terms(graph0, graph0.widths()))
                                 / model_before.predict_us(*self._layer_terms(graph, chosen)))
            if measured.get("speedup"):
                self._note_error(f"step {step}", predicted_speedup, float(measured["speedup"]))
        record = self._record(step, new_model, graph0, widths, t0, measured,
                              predicted_speedup=predicted_speedup,
                              landed_speedup=chosen_probe.speedup,
                              target_us=base.latency_us / goal, goal_speedup=goal, search=summary,
                              candidates={g: list(c.widths) for g, c in cands.items()},
                              decisions=chosen_probe.k, path_length=n_plans,
                              importance_lost=last.importance_lost + chosen_lost,
                              probes=[p.to_json() for p in probes])
        return new_model, new_plan, record


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}%"
