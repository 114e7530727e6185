"""A family of targets in one run: `optimize MODEL --speedup 1.5,2,2.5` writes one complete output
folder per target (OUT/1.5x/, OUT/2x/, ... each as a single run writes it) and OUT/family.json +
OUT/family.png.

The members run from the least to the most pruned and share what a single run would build again:
the model as loaded, the latency meter and store (every layer measured once for the family), the
data and the teacher (the unpruned model) with its logits on the training images (computed once:
`train.teacher`), and what is computed once about the unpruned model (`run.Unpruned`): its channel
graph, its baseline, its reference for the comparisons (its ONNX export and the build the probes
time against) and its per-layer profile inside the model.
How a member starts (docs/METHOD.md, "A family in one run"):

* with data, from the emitted, fine-tuned model of the member before it: the loop's schedule
  already starts each step from the fine-tuned model of the step before, and the steps the next
  member needs up to the previous target are the ones that member took. The configured `--steps`
  are shared among the members by the log of the speedup each adds (at least one each);
* without data, from the unpruned model: nothing is fine-tuned between steps, one step lands
  directly, and the greedy path from the unpruned model to the floor is the same for every member,
  so the members are prefixes of one path (nested) and share every staircase.

A target the model cannot reach (above what the width floor allows, or a latency at or above the
unpruned model's) is refused for that member alone; a member that misses or overshoots ends with
that status as a single run would; the others still run. The family's status is its worst member's.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError, LocpError, first_line
from ..method.config import GeometricSchedule
from ..method.loop import REACH_SLACK
from ..prune.plan import PruningPlan
from .job import OptimizeJob, Target
from .outdir import prepare_out_dir
from .run import Optimized, Session, open_session, run_member

__all__ = ["Member", "Family", "run_family", "FAMILY_OUTPUTS", "share_steps", "share_final_epochs"]

#: What a family writes into its folder (beside one folder per member).
FAMILY_OUTPUTS = ("family.json", "family.png")


@dataclass(frozen=True)
class Member:
    """One member of a family: its target, folder and how it ended (`optimized` None when it was
    refused or failed before it emitted a model)."""

    target: Target
    out: Path
    status: str  # landed | overshot | missed | refused | failed
    optimized: Optimized | None
    why: str = ""
    continued_from: str | None = None


@dataclass(frozen=True)
class Family:
    """What a family run returns: its members (least pruned first) and family.json's content."""

    members: tuple[Member, ...]
    doc: dict[str, Any]

    @property
    def status(self) -> str:
        """The worst member's status."""
        return self.doc["status"]

    def __getitem__(self, label: str) -> Member:
        """The member of `label` ('1.5x', '2ms')."""
        for m in self.members:
            if m.target.label == label:
                return m
        raise KeyError(f"no member {label!r}; the family has {[m.target.label for m in self.members]}")


def share_steps(steps: int, speedups: list[float]) -> list[int]:
    """`steps` shared among members by the log of the speedup each adds over the one before (the
    first over 1x), at least one each."""
    edges = [1.0, *speedups]
    total = math.log(max(speedups))
    return [max(1, round(steps * math.log(b / a) / total)) if b > a else 1 for a, b in zip(edges, edges[1:])]


def run_family(job: OptimizeJob, log: Callable[[str], None]) -> Family:
    """Run every member of `job.family` into `job.out/<label>/` and write family.json/.png."""
    from ..report.family import family_doc, member_row, plot_family, write_family

    t0 = time.perf_counter()
    rows, members = [], []
    with open_session(job, log) as (job, session):
        tuned = session.method.finetune is not None and session.loaders is not None
        state = _State()
        for i, target in enumerate(job.family):
            start = ("" if state.baseline is None else
                     f", continuing from member {state.previous.target.label}'s emitted model (its checkpoint "
                     "is this member's step 1; the loop resumes from it)" if tuned and state.previous else
                     ", from the unpruned model and the baseline the first member took (its checkpoint is "
                     "this member's step 0; the loop resumes from it)")
            log(f"family member {i + 1} of {len(job.family)}: {target.label}{start}")
            member, wall = _run_one(job, session, target, state, tuned, log)
            members.append(member)
            report = member.optimized.report if member.optimized is not None else None
            rows.append(member_row(target.label, {"speedup": target.speedup, "latency_ms": target.latency_ms},
                                   str(member.out), report, status=member.status, why=member.why,
                                   continued_from=member.continued_from, wall_s=wall))
        facts = _facts(job, session, state)
        doc = family_doc(rows, continuation=(
            "continue from the previous member's emitted, fine-tuned model" if tuned else
            "start from the unpruned model (no data: one step from it, the members nested prefixes of one path)"),
            shared=state.shared(session), total_s=time.perf_counter() - t0, facts=facts)
    out = Path(job.out)
    write_family(out, doc)
    if job.export:
        try:
            plot_family(doc, out / "family.png")
        except Exception as e:  # noqa: BLE001 - the members' results stand
            log(f"warning: drawing family.png failed ({first_line(e)}); family.json stands")
    from ..report.family import family_summary

    log(family_summary(doc))
    return Family(tuple(members), doc)


class _State:
    """What the members pass on: the unpruned model's graph and baseline, the width floor's
    speedup, and the last member that emitted a model."""

    def __init__(self) -> None:
        self.graph0 = None
        self.baseline = None  # StepRecord of the unpruned model
        self.floor_speedup: float | None = None
        self.floor_how = ""
        self.previous: Member | None = None

    def shared(self, session: Session) -> dict[str, Any]:
        base, teacher = self.baseline, session.unpruned.teacher
        return {"baseline_us": None if base is None else round(base.latency_us, 3),
                "baseline_kind": None if base is None else base.kind,
                "floor_speedup": None if self.floor_speedup is None else round(self.floor_speedup, 4),
                "floor": self.floor_how, "graph": "the unpruned model's channel graph, built once",
                "reference": ("the unpruned model exported once, built once for the probes"
                              if session.unpruned.reference is not None else None),
                "unpruned_profiled": session.unpruned.profiled,
                "teacher_logits": teacher.stats.to_json() if teacher is not None else None,
                "measurements": session.latency.stats()}


def _run_one(job: OptimizeJob, session: Session, target: Target, state: _State, tuned: bool,
             log: Callable[[str], None]) -> tuple[Member, float]:
    """One member: refused before pruning when its target is out of reach, else run."""
    t0 = time.perf_counter()
    out = Path(job.out) / target.label
    member_job = replace(job, out=out, method=target.config(job.method), family=())
    if state.baseline is not None:
        why = _out_of_reach(target, state)
        if why:
            log(f"member {target.label}: refused: {why}")
            return Member(target, out, "refused", None, why), time.perf_counter() - t0
    prepare_out_dir(out, force=job.force)
    previous = state.previous if tuned else None
    schedule, prepare = _start(job, session, target, state, previous)
    final_epochs = _final_epochs(job, session, target, state, previous) if tuned else None
    if final_epochs is not None:
        log(f"member {target.label}: final fine-tune of {final_epochs} of {session.method.final_finetune.epochs} "
            f"epochs (its share of the family's speedup over {'the member before' if previous else 'the unpruned model'})")
    try:
        optimized, loop = run_member(member_job, session, log, prepare=prepare, schedule=schedule,
                                     graph0=state.graph0, final_epochs=final_epochs)
    except LocpError as e:
        status = "refused" if isinstance(e, InvalidConfigError) else "failed"
        log(f"member {target.label}: {status}: {first_line(e)}")
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        return Member(target, out, status, None, first_line(e)), time.perf_counter() - t0
    if state.baseline is None:
        state.graph0, state.baseline = loop.graph0, optimized.result.history[0]
        state.floor_speedup, state.floor_how = _floor(loop, state.baseline)
    # the report's status: a joint plan measured below the target on a device here has missed
    member = Member(target, out, optimized.report["result"].get("status", optimized.result.status), optimized,
                    optimized.report["result"].get("why_missed", ""),
                    previous.target.label if previous is not None else None)
    state.previous = member
    return member, time.perf_counter() - t0


def _start(job: OptimizeJob, session: Session, target: Target, state: _State,
           previous: Member | None) -> tuple[GeometricSchedule | None, Callable[[Any], None] | None]:
    """The member's schedule and the checkpoint it starts from: nothing for the first member (a
    fresh run); the shared baseline alone (the unpruned model) without data; with data, the
    baseline and the previous member's emitted model as step 1."""
    method = session.method
    speedups = [t.speedup for t in job.family]
    known = all(s is not None for s in speedups)
    if state.baseline is None:
        if not session.loaders or method.finetune is None:
            return None, None
        first = share_steps(method.steps, speedups)[0] if known else max(1, method.steps // len(job.family))
        return GeometricSchedule(first, method.extra_steps), None
    base = state.baseline
    speedup = _target_speedup(target, base)
    if previous is None:
        def from_unpruned(loop) -> None:
            model = copy.deepcopy(loop.original)
            plan = PruningPlan(loop.arch, loop.input_shape, loop.graph0.widths(),
                               kept={g: list(range(w)) for g, w in loop.graph0.widths().items()})
            loop.checkpoints.save(model, plan, [base], speedup)
        return None, from_unpruned
    result = previous.optimized.result
    reached = result.speedup_final
    widest = math.log(max(_target_speedup(t, base) for t in job.family))
    steps = max(1, round(method.steps * math.log(speedup / reached) / widest)) if speedup > reached else 1
    inherited = replace(result.final, step=1, probes=[],
                        search=f"inherited: member {previous.target.label}'s emitted model "
                               f"(its step {result.chosen_step}, {reached:.3f}x)")

    def from_previous(loop) -> None:
        loop.checkpoints.save(result.model, result.plan, [base, inherited], speedup)
    return GeometricSchedule(steps, method.extra_steps, start_step=1, start_speedup=reached), from_previous


def share_final_epochs(epochs: float, speedup: float, reached: float, widest: float) -> float:
    """A member's final fine-tune: `epochs` times the log share of the speedup it adds over the
    model it starts from (`reached`: the member before's, or 1.0, the unpruned model) in the
    family's widest (`log` of the largest target), at least 1, at most `epochs`: as `--steps` are
    shared (`share_steps`), so the family's final fine-tunes add up to about the single run's at
    its largest target; the channels a member inherits were recovered by the members before."""
    if speedup <= reached or widest <= 0:
        return epochs
    return min(epochs, max(1, round(epochs * math.log(speedup / reached) / widest)))


def _final_epochs(job: OptimizeJob, session: Session, target: Target, state: _State,
                  previous: Member | None) -> int | None:
    """A member's final fine-tune epochs, its share (None: as configured, or not known before the
    first member measured the baseline that a latency target needs)."""
    final = session.method.final_finetune
    base = state.baseline
    if final is None or (base is None and any(t.speedup is None for t in job.family)):
        return None
    widest = math.log(max(_target_speedup(t, base) for t in job.family))
    reached = 1.0 if previous is None else previous.optimized.result.speedup_final
    epochs = share_final_epochs(final.epochs, _target_speedup(target, base), reached, widest)
    return epochs if epochs != final.epochs else None


def _target_speedup(target: Target, base) -> float:
    """The speedup `target` asks over the unpruned model (a latency target: over its baseline)."""
    if target.speedup is not None:
        return float(target.speedup)
    return base.latency_us / (target.latency_ms * 1000.0)


def _floor(loop, base) -> tuple[float, str]:
    """The speedup with every group at its floor, as the first member's loop measured it (else
    predicted, as the loop's reach check does)."""
    notes = loop.calibration.report().get("predictions", {})
    measured = [notes[k] for k in ("floor", "aligned floor") if k in notes]
    if measured:  # the aligned floor is measured only when the floor itself fell short
        return (max(float(m["measured_speedup"]) for m in measured),
                "measured by the first member against the unpruned model")
    graph0 = loop.graph0
    floor_widths = {**graph0.widths(), **loop.floors()}
    floor_us = loop.calibration.predict_us(graph0, floor_widths)
    return loop.calibration.predict_us(graph0, graph0.widths()) / floor_us, "predicted (layer sum)"


def _out_of_reach(target: Target, state: _State) -> str:
    """Why a member's target cannot be reached (empty: it may be)."""
    base = state.baseline
    speedup = _target_speedup(target, base)
    if speedup <= 1.0:
        return (f"{target.label} is at or above the unpruned model's {base.latency_us / 1000:.4f} ms "
                f"({base.kind}): nothing to prune")
    if state.floor_speedup is not None and speedup > state.floor_speedup * REACH_SLACK:
        return (f"a {speedup:.3g}x speedup cannot be reached: with every channel group at its floor the "
                f"model is {state.floor_speedup:.2f}x ({state.floor_how}); ask for at most "
                f"{state.floor_speedup:.2f}x, or lower --min-width-ratio")
    return ""


def _facts(job: OptimizeJob, session: Session, state: _State) -> dict[str, Any]:
    """What family.json says about the run besides its members."""
    model, latency = session.model, session.latency
    return {"model": {"source": job.source, "arch": model.arch, "input_shape": list(model.input_shape)},
            "runtime": job.runtime.label if job.runtime is not None else None,
            "latency_source": ("measured here" if not job.latency_tables
                               else "lookup tables " + ", ".join(str(p) for p in job.latency_tables)),
            "fingerprint": latency.fingerprint.describe(),
            "devices": list(latency.joint.names) if latency.joint is not None else None,
            "precision": job.method.precision.value, "batch": job.method.batch,
            "data": model.data if isinstance(model.data, str) or model.data is None else "loaders",
            "targets": [t.label for t in job.family]}
