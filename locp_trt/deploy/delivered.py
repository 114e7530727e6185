"""What an optimize run delivered, measured again from its output folder alone.

`optimize` writes `runtime.json` beside `model.onnx`: the runtime, the build settings every
session used (ONNX Runtime's session and provider options, torch's cuDNN mode, TensorRT's
builder level and timing cache) and where the unpruned model came from. `reproduce(OUT)` rebuilds
the emitted files with exactly those settings, times them interleaved with the unpruned model
over several fresh builds of each (`latency.compare.compare_builds`), and says whether the
report's headline holds: the two intervals overlap. `python -m locp_trt bench OUT/` prints it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import LocpError
from ..latency.compare import CompareRule, Comparison, compare_builds
from ..latency.config import Precision
from ..latency.timing import BenchConfig

__all__ = ["Reproduction", "reproduce", "read_runtime_file", "RUNTIME_FILE"]

RUNTIME_FILE = "runtime.json"
_ONNX_RUNTIMES = ("onnxruntime", "onnxruntime-cuda", "tensorrt")


@dataclass(frozen=True)
class Reproduction:
    """The emitted model against the unpruned one, re-measured, beside the report's headline."""

    comparison: Comparison
    runtime_label: str
    candidate: str  # the file timed: model.onnx (ONNX runtimes) or pruned.pt (torch runtimes)
    reported: dict[str, Any]  # the report's result block: speedup, speedup_low, speedup_high

    @property
    def reproduced(self) -> bool:
        """The re-measured interval overlaps the report's (a stated rule, not a reading)."""
        r = self.reported
        low, high = r.get("speedup_low", r["speedup"]), r.get("speedup_high", r["speedup"])
        return self.comparison.low <= high and low <= self.comparison.high

    @property
    def band(self) -> tuple[float, float] | None:
        """The run's band [target, target x (1 + tolerance)] from its report (None: no target)."""
        target, tol = self.reported.get("target_speedup"), self.reported.get("tolerance")
        return None if target is None or tol is None else (target, target * (1 + tol))

    @property
    def against_target(self) -> str | None:
        """Where this measurement's interval lies against `band`: 'in the band', 'below the
        target', 'above the band' or 'across an edge of the band' (None: no target)."""
        if self.band is None:
            return None
        (target, top), low, high = self.band, self.comparison.low, self.comparison.high
        if high < target:
            return "below the target"
        if low > top:
            return "above the band"
        return "in the band" if target <= low and high <= top else "across an edge of the band"

    def to_json(self) -> dict[str, Any]:
        return {**self.comparison.summary(), "runtime": self.runtime_label,
                "candidate": self.candidate, "reported_speedup": self.reported["speedup"],
                "reported_low": self.reported.get("speedup_low"),
                "reported_high": self.reported.get("speedup_high"), "reproduced": self.reproduced,
                "against_target": self.against_target}


def read_runtime_file(out_dir: str | Path) -> dict[str, Any]:
    """runtime.json of an optimize output folder (a clear error when it is missing)."""
    path = Path(out_dir) / RUNTIME_FILE
    if not path.is_file():
        raise LocpError(f"no {RUNTIME_FILE} in {out_dir}: pass the --out folder of an optimize run "
                        "that measured on a runtime (a lookup-table run has nothing to rebuild)")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LocpError(f"{path} is unreadable ({e}); rerun optimize to write it again") from None


def _reference_module(info: dict[str, Any], baseline: str | Path | None):
    """The unpruned model named in runtime.json (or `baseline`), loaded for export/timing."""
    from ..prune.loading import EXAMPLE, example_model_path, load_model

    ref = info.get("reference") or {}
    source, arch = str(baseline) if baseline is not None else ref.get("model"), ref.get("arch")
    if source == "example":
        source, arch = str(example_model_path()), arch or EXAMPLE["arch"]
    if not source or not Path(source).is_file():
        raise LocpError(f"the unpruned model {source!r} recorded in {RUNTIME_FILE} is not here; "
                        "pass it with --baseline PATH")
    shape = tuple(ref["sample_shape"]) if ref.get("sample_shape") else None
    return load_model(source, arch=arch, input_shape=shape).module.eval()


def reproduce(out_dir: str | Path, *, baseline: str | Path | None = None, builds: int | None = None,
              max_rounds: int = 12, bench: BenchConfig | None = None) -> Reproduction:
    """Re-measure an optimize output folder's headline speedup from its emitted files.

    Args:
        out_dir: the folder optimize wrote (report.json, runtime.json, model.onnx, pruned.pt).
        baseline: the unpruned model.pt when it is no longer where runtime.json says.
        builds: fresh build pairs timed (default: as many as the runtime's final check pools).
        max_rounds: interleaved rounds per build pair at most.
        bench: timing settings; threads default to the run's.
    """
    from ..latency.runtimes import get_runtime, runtime_class
    from ..report import load_report

    out = Path(out_dir)
    report = load_report(out)
    info = read_runtime_file(out)
    name, settings = info["runtime"], info.get("settings") or {}
    shape = tuple(int(v) for v in info["input_shape"])
    precision = Precision.parse(info["precision"])
    cls = runtime_class(name)
    threads = (settings.get("session_options") or {}).get("intra_op_num_threads") or settings.get("threads")
    bench = bench or BenchConfig(threads=int(threads) if threads else 1,
                                 graph_replays=int(settings.get("graph_replays") or 1))
    reference = _reference_module(info, baseline)
    with get_runtime(name, bench, **cls.options_from_settings(settings)) as rt:
        rule = rt.pooled_rule(CompareRule(max_rounds=max_rounds))
        builds = rule.builds if builds is None else int(builds)
        rule = replace(rule, builds=builds, max_builds=max(builds, rule.max_builds))
        make_a = rt.builder(reference, shape, precision)
        if name in _ONNX_RUNTIMES:
            candidate = out / "model.onnx"
            make_b = rt.onnx_builder(candidate.read_bytes(), shape, precision)
        else:
            from ..prune.plan import load_pruned

            candidate = out / "pruned.pt"
            make_b = rt.builder(load_pruned(candidate)[0], shape, precision)
        with rt.spread_processes(rule.processes):
            cmp = compare_builds(make_a, make_b, rule, threshold=None, builds=builds)
        label = rt.label
    return Reproduction(comparison=cmp, runtime_label=label, candidate=str(candidate),
                        reported=dict(report["result"]))
