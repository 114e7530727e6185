"""The LOCP loop as a schedule: steps to the target, the emitted checkpoint, the final check.

1. the unpruned model, timed (or predicted from a lookup table): the baseline, the target speedup
   and the most the width floor allows (a target far above it is refused before any pruning);
2. steps (`step.Step`) whose goals rise from 1x to the target (`config.GeometricSchedule`); the
   last aims half the tolerance above the target, so re-measurement noise on either side still
   lands in [target, target x (1 + tolerance)]; extra steps only while the target is missed;
3. the emitted model: the best checkpoint that meets the target (best accuracy with data, else the
   least pruned), never a later, slower one; with none meeting it, the fastest; fine-tuned once
   more;
4. the final check: the emitted model against the unpruned one on fresh builds of both. Short of
   the target after the last step: one more step. Above the band while its step's probe landed
   inside: the step is redone from the checkpoint before it, aiming lower.

With `config.time_budget_s`, no step or redo starts once the budget is spent (a step's discovery
and landing end early too: `step.Step`), and the best checkpoint reached is emitted and checked.

After every step the model and history are checkpointed (`checkpoints`); `run(resume=True)`
continues from the last one. See docs/METHOD.md, "Landing on the target".
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import InvalidConfigError, LocpError
from ..latency.compare import Comparison, Sampler, Verdict
from ..latency.config import LayerConfig
from ..prune.graph import ModelGraph, build_graph, count_params, group_floor
from ..prune.importance import Scorer, scorer_for
from ..prune.plan import PruningPlan, apply_plan
from ..train.distributed import SINGLE, DistContext
from ..train.teacher import TeacherOutputs
from .benefit import predicted_latency_us
from .calibration import Calibration
from .checkpoints import Checkpoints, Resumed
from .config import GeometricSchedule, OptimizeConfig, UnreachableTargetError
from .graph_notes import grouped_convs_note, no_prunable_group, unpruned_layers_note
from .records import OptimizeResult, StepRecord, accuracy_drop, best_step
from .reference import Reference
from .step import Step
from .tuning import Tuning

__all__ = ["Optimizer", "REACH_SLACK", "MAX_REPAIRS", "no_prunable_group", "unpruned_layers_note"]

#: A target is refused when it exceeds the speedup at the width floor by this factor (the floor
#: model is one plan; the path may find a slightly faster mix of widths above it).
REACH_SLACK = 1.1
#: Channel multiple of the aligned width floor (`Loop.aligned_floors`): fp16 tensor-core GEMMs and
#: vectorized kernels (LayerNorm) want widths in multiples of 8.
ALIGN = 8

#: Times the last step is redone when the final check lands above the band.
MAX_REPAIRS = 2

#: A final check inside the band whose re-measurement would land above it at least this often
#: (from its own interval, normal in log speedup) has the step redone once, aiming lower.
NEAR_TOP_ODDS = 0.1


@dataclass
class _Run:
    """Where a run has got to: the model and plan reached, the history, the final check."""

    model: nn.Module
    plan: PruningPlan
    history: list[StepRecord]
    target: float
    stop_reason: str = ""
    hard_stop: bool = False
    confirmation: Comparison | None = None
    tuned_step: int = -1  # the step the final fine-tune last ran on
    repairs: int = 0
    overshoots: list[dict[str, Any]] = field(default_factory=list)
    # The step a redo replaced (model, plan, record, final check): it met the target, above the
    # band; emitted again when the time budget runs out before the redo has met the target.
    before_redo: tuple[nn.Module, PruningPlan, StepRecord, Comparison] | None = None
    restored: bool = False  # that step was put back: its final check stands
    #: the first step redone whose final check was inside the band (near its upper edge)
    first_inside: tuple[nn.Module, PruningPlan, StepRecord, Comparison] | None = None
    # The final check was not clearly at or above the target: the next pass takes one more step
    # even where the check's point estimate reached the target (never the same model re-checked
    # until a check happens to pass).
    step_asked: bool = False


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
        spread: `Runtime.spread_processes`: the final check spreads its build pairs over fresh
            processes where the runtime times whole models in child processes.
        build_variance: fresh builds of one model may differ in speed (GPU runtimes): probes near
            the target band in the last step then pool `config.compare.builds` builds.
        out_dir: where checkpoints go.
        arch: zoo name of the architecture (recorded in the plan), if any.
        loaders: `data.Loaders` (train, val, test); None: no fine-tuning and no accuracy.
            Decisions (guard, best checkpoint) use val where there is one.
        train_device: where fine-tuning runs (auto: CUDA when present), whatever is measured.
        scorer: ranks each group's channels (default: `config.importance`'s, from the training
            data where it needs data).
        schedule: the step goals (default: `config.steps` geometric steps with fine-tuning
            between them, else one, then `config.extra_steps`).
        graph0: the channel graph of `model`, when the caller has it (a family shares one).
        reference: `model` as the comparisons' reference, when the caller keeps one (a family's
            members share its export and its build for the probes); default: one of this loop's
            from `prepare_model`, `builder` and `spread`.
        teacher: the distillation teacher's logits, when the caller keeps them (a family's
            members share them: `train.teacher`); default: this loop's own.
        clock: seconds, for `config.time_budget_s` (counted from here; a fake one in tests).
        dist: this process's place in a run over several (`train.distributed`): the loop runs on
            rank 0 alone, and its fine-tunes and evaluations run on every rank (`tuning`).
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], config: OptimizeConfig, *,
                 latency_us: Callable[[LayerConfig], float],
                 prepare_model: Callable[[nn.Module], Sampler] | None,
                 out_dir: Path, arch: str | None = None,
                 loaders: Any = None, train_device: str = "auto",
                 log: Callable[[str], None] = print, progress: bool = True,
                 builder: Callable[[nn.Module], Callable[[], Sampler]] | None = None,
                 spread: Callable[[int], Any] | None = None,
                 build_variance: bool = False, scorer: Scorer | None = None,
                 schedule: GeometricSchedule | None = None, graph0: ModelGraph | None = None,
                 reference: Reference | None = None, teacher: TeacherOutputs | None = None,
                 clock: Callable[[], float] = time.monotonic, dist: DistContext = SINGLE) -> None:
        self.clock = clock
        self.started = clock()
        self.original = model.eval()
        self.input_shape = tuple(int(v) for v in input_shape)
        config = config.with_data(getattr(loaders, "train", None) is not None)
        self.config = config
        self.latency_us = latency_us
        self.arch, self.log, self.progress = arch, log, progress
        self.out_dir = Path(out_dir)
        if reference is None and prepare_model is not None:
            reference = Reference(self.original, config.compare, prepare_model, builder, spread)
        self.reference = reference
        self.build_variance = bool(build_variance)
        self.calibration = Calibration(latency_us)
        self.checkpoints = Checkpoints(self.out_dir, config.to_json(), lambda: copy.deepcopy(self.original))
        self.aim_scale = 1.0  # lowered when the final check overshoots the band (one redo each)
        device = torch.device("cpu")
        # Fine-tuning, and evaluation beside other ranks (their NCCL collectives take this rank's
        # GPU tensors), run on the training device; an evaluation alone stays on the CPU.
        if (config.finetune is not None or config.final_finetune is not None
                or (loaders is not None and dist.active)):
            from ..train.finetune import resolve_torch_device

            device = resolve_torch_device(train_device)
        self.tuning = Tuning(loaders, teacher if teacher is not None else self.original, device, progress, dist)
        self.scorer = scorer or scorer_for(config.importance, loader=loaders.train if loaders else None,
                                           device=device, seed=config.seed)
        tuned = config.finetune is not None and loaders is not None
        self.schedule = schedule or GeometricSchedule(config.steps if tuned else 1, config.extra_steps)
        self.graph0 = graph0 if graph0 is not None else self.graph(self.original)

    # ---- the time budget -------------------------------------------------------------------------
    def time_spent(self) -> bool:
        """Whether `config.time_budget_s` has run out (never without one)."""
        budget = self.config.time_budget_s
        return budget is not None and self.clock() - self.started >= budget

    def budget_line(self, when: str) -> str:
        """'the time budget (--time-budget-s 300) was spent after step 1 (312 s)'."""
        return (f"the time budget (--time-budget-s {self.config.time_budget_s:g}) was spent {when} "
                f"({self.clock() - self.started:.0f} s)")

    # ---- what the steps share ----------------------------------------------------------------------
    def graph(self, model: nn.Module) -> ModelGraph:
        return build_graph(model, self.input_shape, batch=self.config.batch, precision=self.config.precision)

    def floors(self) -> dict[str, int]:
        """Per group (and per concat part inside a group): the narrowest width allowed."""
        return {g: group_floor(grp, self.config.min_width_ratio)
                for g, grp in self.graph0.groups.items() if grp.prunable}

    def record(self, step: int, model: nn.Module, plan: PruningPlan, start: float,
               measured: Mapping[str, Any], **extra: Any) -> StepRecord:
        widths = plan.widths
        return StepRecord(
            step=step, widths=dict(widths),
            predicted_us=predicted_latency_us(self.graph0, widths, self.latency_us),
            measured=dict(measured), accuracy=self.tuning.accuracy(model, plan),
            val_accuracy=self.tuning.accuracy(model, plan, "val"),
            flops=self.graph0.flops(widths), params=count_params(model),
            wall_s=round(time.perf_counter() - start, 3), **extra)

    # ---- the loop ------------------------------------------------------------------------------------
    def run(self, *, resume: bool = False) -> OptimizeResult:
        """Run (or resume) the loop and return the best checkpoint, fine-tuned and checked."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        if not self.graph0.prunable():
            raise LocpError(no_prunable_group(self.graph0))
        note = unpruned_layers_note(self.graph0)
        if note and not resume:
            self.log(f"note: {note}")
        note = grouped_convs_note(self.graph0)
        if note and not resume:
            self.log(f"note: {note}")
        if self.scorer.needs_grads:  # the pruned models of the steps carry no gradients
            raise InvalidConfigError(f"--importance {self.scorer.importance.value} needs training data "
                                     "for its gradients: pass --data, or use --importance l1")
        run = self._start(self.checkpoints.last() if resume else None, resume)
        while True:
            self._steps(run)
            chosen = self._emit(run)
            if self.reference is None or chosen.step == 0 or run.restored:
                break
            if not self._final_check(run, chosen):
                break
        if self._keep_first_check(run):
            chosen = run.history[-1]
        return self._result(run, next(h for h in run.history if h.step == chosen.step))

    def _start(self, resumed: Resumed | None, resume: bool) -> _Run:
        """The run from its last checkpoint, or from the unpruned model's baseline."""
        graph0, start = self.graph0, time.perf_counter()
        if resumed is not None:
            history = resumed.history
            for h in history:  # the measured points calibrate the end-to-end model again
                if h.measured:
                    self.calibration.observe(graph0, h.widths, history[0].latency_us / h.speedup_over(history[0]))
            self.calibration.split(graph0, history[0].latency_us, bool(history[0].measured))
            self.log(f"resuming after step {history[-1].step} "
                     f"({history[-1].speedup_over(history[0]):.2f}x, target {resumed.target_speedup:.2f}x)")
            # A last step saved after its final fine-tune (a family member's inherited step is the
            # member before's emitted model) is not fine-tuned again when it is emitted.
            last = history[-1]
            tuned = last.step if last.step > 0 and last.final_finetune_s is not None else -1
            return _Run(resumed.model, resumed.plan, history, resumed.target_speedup, tuned_step=tuned)
        if resume:
            self.log(f"nothing to resume in {self.checkpoints.dir}; starting afresh")
        model = copy.deepcopy(self.original)
        plan = PruningPlan(self.arch, self.input_shape, graph0.widths(),
                           kept={g: list(range(w)) for g, w in graph0.widths().items()})
        self.log("timing the unpruned model" if self.reference else "predicting the unpruned model")
        base = self.record(0, model, plan, start,
                           self.reference.baseline() if self.reference else {})
        if base.measured:
            self.calibration.observe(graph0, graph0.widths(), base.latency_us)
        shares = self.calibration.split(graph0, base.latency_us, bool(base.measured))
        target = self.target_speedup(base)
        predicted_max = self.check_reachable(base, target)
        self.log(f"baseline: {base.latency_us:.1f} µs end to end ({base.kind} in this run), "
                 f"layer sum predicted {base.predicted_us:.1f} µs, prunable layers "
                 f"{shares.prunable_us:.1f} µs; target {target:.3g}x "
                 f"(land within +{self.config.tolerance:.0%}); at the width floor about {predicted_max:.2f}x")
        self.checkpoints.save(model, plan, [base], target)
        return _Run(model, plan, [base], target)

    def _steps(self, run: _Run) -> None:
        """Steps until the target is reached (by the steps' own comparisons) or the loop must
        stop; `run` holds the model and plan reached and why it stopped."""
        history, target, schedule = run.history, run.target, self.schedule
        while True:
            last = history[-1]
            reached = last.speedup_over(history[0])
            if last.step >= 1 and reached >= target * min(1.0, self.aim_scale) and not run.step_asked:
                run.stop_reason, run.hard_stop = f"target reached at step {last.step}", False
                return
            if last.step >= schedule.last_step:
                what = ("the final check was not clearly at or above the target" if run.step_asked
                        else "the last step's own comparison still read below the target")
                run.stop_reason = (f"{what} after {last.step} steps (--steps "
                                   f"{schedule.steps}, --extra-steps {schedule.extra_steps})")
                run.hard_stop = True
                return
            if self.time_spent():
                run.stop_reason = self.budget_line(f"after step {last.step}" if last.step else "before step 1")
                run.hard_stop = True
                self.log(f"{run.stop_reason}: ending with the best checkpoint so far")
                self._restore_before_redo(run)
                return
            number = last.step + 1
            goal, final = schedule.goal(number, reached, target)
            # After a redo the aim (and the band the step's probes land in) is scaled by what the
            # final checks showed, even below the target: the final check still decides.
            aim = goal * (1 + self.config.tolerance / 2) * self.aim_scale if final else goal
            outcome = Step(self, number, run.model, run.plan, history, goal, aim, final).run()
            if outcome.record is None:
                self.log(f"step {number}: {outcome.stop_reason}")
                run.stop_reason, run.hard_stop = f"step {number}: {outcome.stop_reason}", True
                return
            run.model, run.plan, record = outcome.model, outcome.plan, outcome.record
            run.step_asked = False
            drop = accuracy_drop(history[0], record, self.config.max_acc_drop)
            if drop is not None:
                record = replace(record, guard_rejected=True)
            history.append(record)
            self.log(f"step {number}: {record.speedup_over(history[0]):.3f}x {record.kind} "
                     f"(goal {goal:.3f}x), {record.decisions} of {record.path_length} decisions, "
                     f"{len(record.probes)} probes"
                     + (f", accuracy {record.accuracy:.2f}%" if record.accuracy is not None else ""))
            self.checkpoints.save(run.model, run.plan, history, target)
            if drop is not None:
                run.stop_reason = (f"accuracy guard: step {number} lost {drop:.2f} validation points "
                                   f"(--max-acc-drop {self.config.max_acc_drop}); stopped before pruning further")
                run.hard_stop = True
                self.log(run.stop_reason)
                return

    def _emit(self, run: _Run) -> StepRecord:
        """The checkpoint to emit (`best_step`), loaded into `run` and given its final fine-tune."""
        cfg, history = self.config, run.history
        # After a redo the steps' own figures read low by the offset the final checks showed.
        chosen = best_step(history, run.target * min(1.0, self.aim_scale))
        if chosen.step != history[-1].step:
            self.log(f"emitting step {chosen.step} ({chosen.speedup_over(history[0]):.3f}x): "
                     f"better than the last step {history[-1].step}")
            run.model, run.plan = self.checkpoints.load_step(chosen.step)
        if cfg.final_finetune is not None and self.tuning.has_data and 0 < chosen.step != run.tuned_step:
            self.tuning.reseed(cfg.seed + 10_000 + chosen.step)
            seconds = self.tuning.fine_tune(run.model, run.plan, cfg.final_finetune, "final fine-tune")
            run.tuned_step = chosen.step
            i = next(i for i, h in enumerate(history) if h.step == chosen.step)
            before = history[i]
            history[i] = replace(history[i], accuracy=self.tuning.accuracy(run.model, run.plan),
                                 val_accuracy=self.tuning.accuracy(run.model, run.plan, "val"),
                                 final_finetune_s=seconds)
            self.log(f"final fine-tune of step {chosen.step}: test accuracy {_pct(before.accuracy)} -> "
                     f"{_pct(history[i].accuracy)}, validation {_pct(before.val_accuracy)} -> "
                     f"{_pct(history[i].val_accuracy)}")
        return chosen

    def _final_check(self, run: _Run, chosen: StepRecord) -> bool:
        """The final check of the emitted model; True when the loop goes on (one more step, or
        the last step redone aiming lower), False when it ends."""
        cfg, history, target = self.config, run.history, run.target
        # When the check falls short and the step was the last one, the loop goes on from it (the
        # check replaces the step's own figure).
        run.confirmation = confirmation = self.confirm(run.model, target)
        i = next(i for i, h in enumerate(history) if h.step == chosen.step)
        history[i] = replace(history[i], measured={**confirmation.summary(), "final_check": True})
        if i + 1 == len(history):  # the emitted step is the last: its checkpoint is this model
            self.checkpoints.save(run.model, run.plan, history, target)
        high = target * (1 + cfg.tolerance)
        # The budget spent (during the last step or this check): no redo and no further step.
        spent = self.time_spent()
        # Above the band; or inside it so near its upper edge that a re-measurement would land
        # above it one time in ten or more (redone once: the first check is kept when the
        # redo's is no better, `_keep_first_check`).
        above = confirmation.speedup > high
        near_top = not above and run.repairs == 0 and confirmation.odds_above(high) >= NEAR_TOP_ODDS
        if (confirmation.verdict is Verdict.MEETS and (above or near_top)
                and target <= (chosen.landed_speedup or chosen.speedup_over(history[0])) <= high
                and chosen.step == history[-1].step and run.repairs < MAX_REPAIRS):
            if not spent:
                self._redo(run, chosen, confirmation)
                return True
            run.stop_reason = f"{self.budget_line(f'by the final check of step {chosen.step}')}: not redone"
            return False
        if confirmation.verdict is Verdict.MEETS:  # the whole interval at or above the target
            return False
        if spent and self._restore_before_redo(run):
            return False
        if (run.hard_stop or spent or chosen.step != history[-1].step
                or history[-1].step >= self.schedule.last_step):
            if spent and not run.hard_stop:
                run.stop_reason = self.budget_line(f"by the final check of step {chosen.step}")
            measured = f"the final check measured {confirmation.speedup:.3f}x"
            run.stop_reason = f"{run.stop_reason}; {measured}" if run.stop_reason else measured
            return False
        self.log(f"final check {confirmation.describe()}: not clearly at or above {target:.3g}x, "
                 "one more step")
        # A lowered aim that now falls short was an offset that did not hold: aim as at first.
        self.aim_scale = 1.0
        run.step_asked = True
        return True

    def _redo(self, run: _Run, chosen: StepRecord, confirmation: Comparison) -> None:
        """The step landed inside the band by its probe, the final check is above it (the probes'
        builds ran slower than fresh ones, or fine-tuning changed the speed): redo the step from
        the checkpoint before it, aiming lower. (A step already above the band by its own probes
        found no plan inside it: redoing it would find the same plan.)"""
        cfg, history, target = self.config, run.history, run.target
        run.repairs += 1
        # The first redo corrects half the (log) gap, which may be part noise; a second one, with
        # the offset seen twice, the whole gap.
        gap = target * (1 + cfg.tolerance / 2) / confirmation.speedup
        self.aim_scale *= gap ** (run.repairs / MAX_REPAIRS)
        high = target * (1 + cfg.tolerance)
        where = ("is above the band" if confirmation.speedup > high
                 else f"({confirmation.confidence:.0%} CI up to {confirmation.high:.3f}x) is near the upper edge of the band")
        self.log(f"final check {confirmation.speedup:.3f}x {where} [{target:.3g}x, {high:.3g}x]: redoing "
                 f"step {chosen.step} from step {chosen.step - 1} with a lower aim ({run.repairs} of {MAX_REPAIRS})")
        run.overshoots.append({"step": chosen.step, "speedup": round(confirmation.speedup, 4),
                               "high": round(confirmation.high, 4), "inside": confirmation.speedup <= high,
                               "aim_scale": round(self.aim_scale, 4)})
        run.before_redo = (run.model, run.plan, history[-1], confirmation)
        if confirmation.speedup <= high and run.first_inside is None:
            run.first_inside = run.before_redo
        history.pop()
        previous = history[-1]
        run.model, run.plan = self.checkpoints.load_step(previous.step)
        if previous.step == 0:
            run.model = copy.deepcopy(self.original)
        self.checkpoints.save(run.model, run.plan, history, target)
        run.tuned_step = -1

    def _restore_before_redo(self, run: _Run) -> bool:
        """With the time budget spent during a redo that has not met the target, put back the
        step it replaced (met, above the band) with its final check; True when it did."""
        if run.before_redo is None:
            return False
        record, confirmation = self._put_back(run, run.before_redo)
        run.stop_reason = (f"{self.budget_line(f'while step {record.step} was redone')}: emitting step "
                           f"{record.step} as first checked, {confirmation.speedup:.3f}x")
        run.hard_stop = True
        self.log(run.stop_reason)
        return True

    def _put_back(self, run: _Run, saved: tuple[nn.Module, PruningPlan, StepRecord, Comparison]
                  ) -> tuple[StepRecord, Comparison]:
        """A step a redo replaced, with its model, plan and final check, back as the last."""
        model, plan, record, confirmation = saved
        run.before_redo = run.first_inside = None
        history = run.history
        while history[-1].step >= record.step:
            history.pop()
        history.append(record)
        run.model, run.plan, run.confirmation = model, plan, confirmation
        run.tuned_step, run.restored = record.step, True
        self.checkpoints.save(model, plan, history, run.target)
        return record, confirmation

    def _keep_first_check(self, run: _Run) -> bool:
        """A step redone because its final check, inside the band, was near its upper edge is put
        back when the redo did not end clearly inside the band (it fell short, or overshot) or
        ended nearer that edge: the first check was the better bet. True when it was put back."""
        if run.first_inside is None or run.confirmation is None or run.restored:
            return False
        _, _, record, first = run.first_inside
        now, target = run.confirmation, run.target
        high = target * (1 + self.config.tolerance)

        def inside(c: Comparison) -> bool:
            return c.verdict is Verdict.MEETS and c.speedup <= high

        if not inside(first) or (inside(now) and now.odds_above(high) <= first.odds_above(high)):
            return False
        self._put_back(run, run.first_inside)
        run.stop_reason = (f"step {record.step} redone after its final check {first.speedup:.3f}x reached over "
                           f"the band's upper edge; the redo's check {now.speedup:.3f}x was no better: "
                           f"emitting step {record.step} as first checked")
        self.log(run.stop_reason)
        return True

    def _result(self, run: _Run, chosen: StepRecord) -> OptimizeResult:
        cfg, history, target = self.config, run.history, run.target
        met = chosen.step > 0 and chosen.speedup_over(history[0]) >= target
        if run.confirmation is not None:  # measured: met only when the final check clearly says so
            met = met and run.confirmation.verdict is Verdict.MEETS
        guard = None
        if cfg.max_acc_drop is not None:
            rejected = [h.step for h in history if h.guard_rejected]
            guard = {"max_acc_drop": cfg.max_acc_drop, "split": "val" if history[0].val_accuracy is not None
                     else "test", "rejected_steps": rejected,
                     "note": (f"rejected step(s) {rejected}; emitted step {chosen.step}" if rejected
                              else "every step stayed within the limit")}
        stop_reason = run.stop_reason
        cut = [h.step for h in history if "time budget" in h.search]
        if cut and "time budget" not in stop_reason:  # the step ended early, the loop did not
            stop_reason += (f"; the time budget (--time-budget-s {cfg.time_budget_s:g}) cut step "
                            f"{cut[-1]}'s search short")
        if run.overshoots and not run.restored:  # a restored step says it in the stop reason
            stop_reason += "; " + "; ".join(
                (f"step {o['step']}'s final check {o['speedup']:.3f}x was near the band's upper edge "
                 f"(up to {o['high']:.3f}x), redone" if o["inside"] else
                 f"step {o['step']} overshot at {o['speedup']:.3f}x and was redone") for o in run.overshoots)
        return OptimizeResult(model=run.model.cpu().eval(), plan=run.plan, history=tuple(history),
                              target_us=history[0].latency_us / target, target_speedup=target,
                              chosen_step=chosen.step, met_target=met, stop_reason=stop_reason,
                              guard=guard, confirmation=run.confirmation, tolerance=cfg.tolerance,
                              latency_model={**self.calibration.report(),
                                             "overshoots_repaired": list(run.overshoots)})

    # ---- the target -----------------------------------------------------------------------------------
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

    def floor_model(self, floors: Mapping[str, int] | None = None) -> nn.Module:
        """The unpruned model with every channel group at its floor (--min-width-ratio), or at
        the given widths."""
        floors = self.floors() if floors is None else floors
        # Latency only: which channels is moot, so the first ones rank highest (each concat part
        # keeps its floor) and no channel is scored: scoring every group through Torch-Pruning
        # took 12-32 s on DenseNet-121.
        order = {g: -np.arange(self.graph0.groups[g].width, dtype=np.float64) for g in floors}
        model, _ = apply_plan(self.original, PruningPlan(self.arch, self.input_shape, dict(floors)),
                              self.input_shape, scores=order, min_width_ratio=self.config.min_width_ratio)
        return model

    def aligned_floors(self) -> dict[str, int]:
        """The floors rounded up to multiples of `ALIGN` (a grouped conv's group to whole steps of
        both), never above a group's width: the narrowest widths the fast kernels take."""
        out = {}
        for g, w in self.floors().items():
            grp = self.graph0.groups[g]
            step = math.lcm(ALIGN, getattr(grp, "blocks", 1))
            aligned = -(-w // step) * step
            out[g] = aligned if aligned <= grp.width else w
        return out

    def check_reachable(self, baseline: StepRecord, speedup: float) -> float:
        """The maximum speedup at the width floor; refuses a target far above it.

        Every group at its floor (--min-width-ratio) is the most the loop may prune. Its speedup is
        predicted by the end-to-end model calibrated on the unpruned model (`latency.e2e`) and,
        when the loop measures, measured against the unpruned model: that point calibrates the
        model for the steps, and the prediction's error is reported. The measured figure (else
        the prediction), with 10% slack, bounds what is accepted.
        """
        graph0, floors = self.graph0, self.floors()
        floor_widths = {**graph0.widths(), **floors}
        floor_us = self.calibration.predict_us(graph0, floor_widths)
        base_us = self.calibration.predict_us(graph0, graph0.widths())
        predicted = base_us / floor_us if floor_us > 0 else math.inf
        best, how = predicted, f"predicted {predicted:.2f}x"
        if self.reference is not None:
            cmp = self.reference.compare(self.floor_model(), threshold=None)
            self.calibration.note("floor", predicted, cmp.speedup)
            self.calibration.observe(graph0, floor_widths, baseline.latency_us / cmp.speedup)
            best, how = cmp.speedup, f"measured {cmp.describe()} (predicted {predicted:.2f}x)"
            aligned = self.aligned_floors()
            if speedup > best * REACH_SLACK and aligned != floors:
                # Odd widths can be slower than wide ones (a fp16 LayerNorm off its vectorized
                # kernel: ConvNeXt-Tiny's floor ran at 0.83x, the same floor rounded up to
                # multiples of 8 at 2.2x): before refusing, measure the floor on aligned widths.
                widths = {**graph0.widths(), **aligned}
                cmp8 = self.reference.compare(self.floor_model(aligned), threshold=None)
                predicted8 = base_us / self.calibration.predict_us(graph0, widths)
                self.calibration.note("aligned floor", predicted8, cmp8.speedup)
                self.calibration.observe(graph0, widths, baseline.latency_us / cmp8.speedup)
                self.log(f"the width floor measured {cmp.speedup:.3f}x; on widths rounded up to multiples "
                         f"of {ALIGN}: {cmp8.speedup:.3f}x")
                if cmp8.speedup > best:
                    best, how = cmp8.speedup, (f"measured {cmp8.describe()} with the floors rounded up to "
                                               f"multiples of {ALIGN} (at the floors themselves "
                                               f"{cmp.speedup:.3f}x; predicted {predicted:.2f}x)")
        if speedup > best * REACH_SLACK:
            raise UnreachableTargetError(
                f"a {speedup:.3g}x speedup cannot be reached: with every channel group at its floor "
                f"(--min-width-ratio {self.config.min_width_ratio}) the model is {how}; ask for at "
                f"most {best:.2f}x, or lower --min-width-ratio"
                + (f"; {self.calibration.shares.sentence()}" if self.calibration.shares else ""))
        return best

    def confirm(self, model: nn.Module, target: float) -> Comparison:
        """The emitted model against the unpruned one, judged against the target on fresh builds
        of both (`config.compare.builds` pairs at least, more while it is unclear whether the
        speedup is inside the band [target, target x (1 + tolerance)]): never the build or the
        rounds that selected the step."""
        builds = self.config.compare.builds
        spent = self.time_spent()  # then no builds beyond the first `builds` while unclear
        self.log(f"final check: the emitted model against the unpruned one, {builds} fresh builds of each"
                 + (" (the time budget is spent: no more while unclear)" if spent else ""))
        cmp = self.reference.compare(model, threshold=target, builds=builds, extend=not spent,
                                     band=(target, target * (1 + self.config.tolerance)), fresh_processes=True)
        self.log(f"final check: {cmp.describe()}{cmp.spread_note()}")
        return cmp


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}%"
