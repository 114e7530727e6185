"""A joint plan checked on the devices whose runtime runs here, and made again while one misses.

The tables predict each device's speedup from layer sums. A runtime that fuses layers can run
the pruned model slower than its table says (2026-12-03, the built-in example at 1.5x: ONNX
Runtime CPU measured 1.354x where its table predicted 1.636x). Where a device's runtime runs here,
the emitted plan is measured on it (`run._devices`). When one did not measure it clearly at or
above the target (its interval reaches below), each device gets the ratio r_d = predicted / the
lower end of the measured interval at that plan (1 for a device only predicted: its table is
trusted), so the new plan clears the target by the measurement's own margin, and
the plan is made again asking device d's table for target x r_d. On the joint model that is the
loop aimed at target x R (R = the largest r_d) with device d's shares weighed r_d / R
(`JointLatency.weigh`). Its figures are then stated back in the user's terms: each step's combined
figure over R is the smallest of the devices' corrected speedups, against the user's target. At
most `MAX_REPLANS` times; a device still short after that ends the run missed (`device_verdict`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import first_line
from ..method.config import UnreachableTargetError
from ..method.records import OptimizeResult

__all__ = ["JointAim", "MAX_REPLANS", "aim_from", "device_verdict", "restate", "run_joint", "short_of"]

MAX_REPLANS = 2  # plans made again after the first; each one is a whole loop (fine-tunes included)


@dataclass(frozen=True)
class JointAim:
    """Per device, its table's predicted speedup over the lower end of its measured interval at a
    checked plan (1.0: only predicted)."""

    ratios: tuple[float, ...]

    @property
    def raise_by(self) -> float:
        """How far the loop's aim on the joint model goes above the target (R)."""
        return max(self.ratios)

    def weights(self) -> tuple[float, ...]:
        """Each device's weight on the joint model (r_d / R, the largest 1)."""
        r = self.raise_by
        return tuple(x / r for x in self.ratios)

    def describe(self, names: Sequence[str]) -> str:
        return ", ".join(f"{n}: its table {x:.3f}x its measurement" for n, x in zip(names, self.ratios) if x != 1.0)

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        return {"ratios": {n: round(x, 4) for n, x in zip(names, self.ratios)}, "raise_by": round(self.raise_by, 4)}


def aim_from(devices: list[dict[str, Any]], target: float) -> JointAim | None:
    """The aim for the next plan when a device measured here was not clearly at or above `target`
    (its interval reaches below it) while its table said more; else None (nothing to correct, or
    the tables themselves missed)."""
    measured = [d.get("measured") for d in devices]
    if not any(short_of(m, target) for m in measured):
        return None
    aim = JointAim(tuple(d["predicted_speedup"] / _low(m) if m and _low(m) > 0 else 1.0
                         for d, m in zip(devices, measured)))
    return aim if aim.raise_by > 1 else None


def _low(measured: dict[str, Any]) -> float:
    return float(measured.get("speedup_low", measured["speedup"]))


def short_of(measured: dict[str, Any] | None, target: float) -> bool:
    """Whether a device's measurement is not clearly at or above `target`: its interval's lower
    end below it (an unclear verdict counts as missing, as the single-device final check's does)."""
    return bool(measured) and _low(measured) < target


def device_verdict(report: dict[str, Any], devices: list[dict[str, Any]], log: Callable[[str], None]) -> None:
    """A joint plan that a device measured here not clearly at or above the target (its interval
    reaches below it) has missed it, whatever the tables predicted: the result says so (status,
    why, exit code)."""
    r = report["result"]
    target = r.get("target_speedup")
    short = [d for d in devices if target and short_of(d.get("measured"), target)]
    if not short or r.get("status") == "refused":
        return
    why = "; ".join(f"measured on {d['device']}: {d['measured']['speedup']:.3f}x"
                    + (f" (90% CI from {d['measured']['speedup_low']:.3f}x)" if "speedup_low" in d["measured"] else "")
                    + f" (predicted {d['predicted_speedup']:.3f}x)" for d in short)
    r.update(status="missed", met_target=False,
             why_missed=f"{why}: not clearly at or above the target {target:g}x (the plan was chosen on the tables' predictions)")
    log(f"missed on a device measured here: {r['why_missed']}")


def restate(result: OptimizeResult, aim: JointAim, target: float) -> OptimizeResult:
    """The loop's figures (aimed at target x R on the weighted joint model) in the user's terms:
    every step's combined figure over R (the smallest corrected speedup of the devices), the
    target the user's."""
    r = aim.raise_by
    history = tuple(h if h.step == 0 else replace(
        h, predicted_us=h.predicted_us * r,
        target_us=None if h.target_us is None else h.target_us * r,
        goal_speedup=None if h.goal_speedup is None else h.goal_speedup / r) for h in result.history)
    return replace(result, history=history, target_speedup=target, target_us=history[0].latency_us / target)


def run_joint(job: Any, session: Any, log: Callable[[str], None]) -> Any:
    """`run_member` for a plan over several tables, made again (at most `MAX_REPLANS` times)
    while a device measured here misses the target; returns the last run's `Optimized`."""
    from .run import run_member

    joint = session.latency.joint
    optimized, _ = run_member(job, session, log)
    target = job.method.speedup
    for n in range(1, MAX_REPLANS + 1):
        result = optimized.report.get("result", {})
        aim = aim_from(optimized.report.get("devices") or [], target) if target else None
        if aim is None or result.get("status") == "refused":
            break
        log(f"planning again ({n} of {MAX_REPLANS}): {aim.describe(joint.names)}; asking each table for "
            f"{target:g}x times that ratio (the joint model aims at {target * aim.raise_by:.3f}x)")
        joint.weigh(aim.weights())
        try:
            optimized, _ = run_member(job, session, log, aim=aim, replan=n)
        except UnreachableTargetError as e:  # raised before the loop writes anything
            log(f"planning again cannot reach that aim on the tables ({first_line(e)}); the last plan stands, "
                "missed on the device measured here")
            break
        finally:
            joint.weigh(None)
    return optimized
