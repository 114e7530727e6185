"""Would end-to-end anchors in a lookup table calibrate a table run's predicted speedup?

A run that decides from a lookup table alone (`optimize --latency-table`) predicts speedups from
the raw layer sum; a live run fits T = a * layer sum + k * activations + c (`latency/e2e.py`) on
the models it measures. This probe measures, on this machine, the two points `profile MODEL`
could record beside its table (the unpruned model and the width floor) and a table run's plan,
interleaved with `bench`, and prints what the raw layer sum and the end-to-end model fitted on
those anchors predict for the plan against what the plan measured.

    python -m locp_trt profile example --device cpu --out /tmp/ta/table.json --store /tmp/ta/s.sqlite
    python benchmarks/table_anchor_probe.py /tmp/ta/table.json PLAN.json --work /tmp/ta --repeats 4 \
        --out benchmarks/results/cpu_table_anchor_probe/probe.json

PLAN.json: a plan.json of a run of the built-in example (its widths are what is predicted).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def example_widths(plan_path: Path, min_width_ratio: float = 0.1) -> tuple[Any, Any, dict[str, dict[str, int]]]:
    """The built-in example (loaded), its graph, and its widths unpruned, at the width floor and
    at `plan_path`'s plan."""
    from locp_trt.method.configs_list import group_floors
    from locp_trt.prune.graph import build_graph
    from locp_trt.prune.loading import load_model

    loaded = load_model("example")
    graph = build_graph(loaded.module, loaded.input_shape)
    plan = json.loads(plan_path.read_text())
    widths = {"unpruned": graph.widths(),
              "floor": {**graph.widths(), **group_floors(graph, min_width_ratio)},
              "plan": {**graph.widths(), **{g: int(w) for g, w in plan["widths"].items()}}}
    return loaded, graph, widths


def _models(plan_path: Path, work: Path, min_width_ratio: float) -> tuple[Any, dict[str, dict[str, int]]]:
    """The example's graph, and the floor and plan models written as pruned files in `work`."""
    import numpy as np

    from locp_trt.prune.plan import PruningPlan, apply_plan, save_pruned

    loaded, graph, widths = example_widths(plan_path, min_width_ratio)
    shape = loaded.input_shape
    work.mkdir(parents=True, exist_ok=True)
    for name in ("floor", "plan"):  # latency only: which channels is moot, the first ones kept
        order = {g: -np.arange(graph.groups[g].width, dtype=np.float64) for g in graph.groups}
        model, kept = apply_plan(loaded.module, PruningPlan(loaded.arch, shape, widths[name]), shape,
                                 scores=order, min_width_ratio=min_width_ratio)
        save_pruned(model, kept, work / f"{name}.pt")
    return graph, widths


def _bench(work: Path, repeats: int, iters: int) -> list[dict[str, float]]:
    """Each repeat: `bench example floor.pt plan.pt`, interleaved; the unpruned median and the
    two speedups against it."""
    out = []
    for i in range(repeats):
        cmd = [sys.executable, "-m", "locp_trt", "bench", "example", str(work / "floor.pt"), str(work / "plan.pt"),
               "--runtime", "onnxruntime", "--threads", "1", "--iters", str(iters),
               "--json", str(work / f"bench_{i + 1}.json")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"bench failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        rows = json.loads((work / f"bench_{i + 1}.json").read_text())
        if any(r["speedup_vs_first"] is None for r in rows[1:]):
            raise SystemExit(f"bench gave no interleaved speedup: {work / f'bench_{i + 1}.json'}")
        out.append({"unpruned_us": rows[0]["median_us"], "floor_speedup": rows[1]["speedup_vs_first"],
                    "plan_speedup": rows[2]["speedup_vs_first"]})
        print(f"bench {i + 1}/{repeats}: unpruned {rows[0]['median_us']:.1f} µs, floor "
              f"{rows[1]['speedup_vs_first']:.3f}x, plan {rows[2]['speedup_vs_first']:.3f}x", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", type=Path, help="lookup table of the example (`profile example`)")
    p.add_argument("plan", type=Path, help="plan.json of a run of the example")
    p.add_argument("--work", type=Path, required=True, help="where the floor and plan models go")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--min-width-ratio", type=float, default=0.1)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)

    from locp_trt.latency.e2e import EndToEndModel
    from locp_trt.latency.meter import LatencyTable
    from locp_trt.method.calibration import Calibration

    table = LatencyTable.load(a.table)
    graph, widths = _models(a.plan, a.work, a.min_width_ratio)
    cal = Calibration(lambda cfg: table.require(cfg).median_us)
    terms = {name: cal.terms(graph, w) for name, w in widths.items()}
    runs = _bench(a.work, a.repeats, a.iters)
    t0 = statistics.median(r["unpruned_us"] for r in runs)
    floor_x = statistics.median(r["floor_speedup"] for r in runs)
    fits = {"raw layer sum": EndToEndModel(),
            "unpruned only": EndToEndModel.fit([(*terms["unpruned"], t0)]),
            "unpruned + floor": EndToEndModel.fit([(*terms["unpruned"], t0), (*terms["floor"], t0 / floor_x)])}
    measured = sorted(r["plan_speedup"] for r in runs)
    mid = statistics.median(measured)
    result: dict[str, Any] = {"command": sys.argv, "table": str(a.table), "plan": str(a.plan),
                              "terms": {n: {"layer_sum_us": round(t[0], 2), "activation_elements": t[1]}
                                        for n, t in terms.items()},
                              "bench": runs, "plan_measured_median": round(mid, 4), "fits": {}}
    print(f"layer sums: unpruned {terms['unpruned'][0]:.1f} µs, floor {terms['floor'][0]:.1f} µs, "
          f"plan {terms['plan'][0]:.1f} µs; measured unpruned {t0:.1f} µs (median of {len(runs)})")
    print(f"plan measured: {', '.join(f'{x:.3f}x' for x in measured)} (median {mid:.3f}x); "
          f"floor measured {floor_x:.3f}x")
    for name, fit in fits.items():
        pred = fit.predict_us(*terms["unpruned"]) / fit.predict_us(*terms["plan"])
        pred_floor = fit.predict_us(*terms["unpruned"]) / fit.predict_us(*terms["floor"])
        result["fits"][name] = {**fit.to_json(), "plan_predicted": round(pred, 4),
                                "floor_predicted": round(pred_floor, 4),
                                "plan_error_vs_median": round(pred / mid - 1, 4)}
        print(f"{name:>17}: plan {pred:.3f}x ({pred / mid - 1:+.1%} against the median), floor "
              f"{pred_floor:.3f}x; {fit.to_json()}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
