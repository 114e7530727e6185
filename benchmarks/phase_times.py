"""Where an `optimize` run's wall time goes, phase by phase (issue 19): runs the command in this
process with timers wrapped around the pipeline's phases, and writes one JSON of wall and CPU
seconds per phase (in all, and per family member).

    python benchmarks/phase_times.py OUT.json -- optimize example --device cpu --speedup 1.3,1.6,2 ...

Phases (nested ones are inside their parent's figure: `step` holds `finetune_step`,
`accuracy_*` of its record and `teacher_forward` of its fine-tune):

* `step`: a whole step (discovery, scores, ladder, landing probes, pruning, fine-tune, record);
* `finetune_step`, `finetune_final`: `Tuning.fine_tune` (the step's, the emitted model's final one);
* `teacher_forward`: the distillation teacher's forward passes inside the fine-tunes;
* `accuracy_test`, `accuracy_val`: `Tuning.accuracy` (every record and the final fine-tune's);
* `baseline`, `floor_check`: the unpruned model timed, the width floor measured (first member);
* `final_check`: `Optimizer.confirm` (fresh build pairs; its child processes' CPU is not counted);
* `write_out`: pruned.pt, plan.json, model.onnx checked in ORT, runtime.json;
* `in_model_profile`: per-layer times profiled inside the unpruned and the emitted model;
* `plots`: history.png and stairs.png; `family_png`; `member`: one member's `run_member`.

The CPU seconds are this process's (torch's threads included), a steadier comparison than wall
seconds on a shared machine. The wrappers cost microseconds per call.
"""

from __future__ import annotations

import collections
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any


def _install(acc: dict, where: list[str]) -> None:
    """Wrap the phases' functions; `where[0]` is the member running ('' outside a family)."""
    import locp_trt.train.finetune as finetune
    from locp_trt.method import loop, reference, step, tuning
    from locp_trt.pipeline import family, run
    from locp_trt.report import family as family_report
    from locp_trt.report import plots

    def add(name: str, wall: float, cpu: float) -> None:
        for key in (name, f"{where[0]}/{name}" if where[0] else None):
            if key:
                e = acc[key]
                e[0], e[1], e[2] = e[0] + wall, e[1] + cpu, e[2] + 1

    def timed(name: Any):
        def deco(f):
            @functools.wraps(f)
            def wrapper(*a, **k):
                label = name(*a, **k) if callable(name) else name
                w0, c0 = time.perf_counter(), time.process_time()
                try:
                    return f(*a, **k)
                finally:
                    add(label, time.perf_counter() - w0, time.process_time() - c0)
            return wrapper
        return deco

    def patch(owner: Any, attr: str, name: Any) -> None:
        setattr(owner, attr, timed(name)(getattr(owner, attr)))

    patch(tuning.Tuning, "fine_tune",
          lambda self, m, p, cfg, desc: "finetune_final" if desc.startswith("final") else "finetune_step")
    patch(tuning.Tuning, "accuracy", lambda self, m, p, split="test": f"accuracy_{split}")
    patch(loop.Optimizer, "confirm", "final_check")
    patch(loop.Optimizer, "check_reachable", "floor_check")
    patch(reference.Reference, "baseline", "baseline")
    patch(step.Step, "run", "step")
    patch(run, "_artifacts", "write_out")
    patch(run, "_in_model_times", "in_model_profile")
    patch(plots, "write_plots", "plots")
    patch(family_report, "plot_family", "family_png")
    patch(run, "run_member", "member")
    family.run_member = run.run_member

    one_member = family._run_one

    def run_one(job, session, target, *a, **k):
        where[0] = target.label
        try:
            return one_member(job, session, target, *a, **k)
        finally:
            where[0] = ""
    family._run_one = run_one

    def teacher_timer(teacher):
        """Forward hooks that add the teacher's forward passes up."""
        def pre(_mod, _inp):
            teacher._phase_t0 = (time.perf_counter(), time.process_time())

        def post(_mod, _inp, _out):
            w0, c0 = teacher._phase_t0
            add("teacher_forward", time.perf_counter() - w0, time.process_time() - c0)
        return teacher.register_forward_pre_hook(pre), teacher.register_forward_hook(post)

    fine_tune = finetune.fine_tune

    def timed_fine_tune(model, loader, cfg, device, *, teacher=None, **k):
        module = getattr(teacher, "module", teacher)  # a module, or what wraps one
        hooks = teacher_timer(module) if module is not None else ()
        try:
            return fine_tune(model, loader, cfg, device, teacher=teacher, **k)
        finally:
            for h in hooks:
                h.remove()
    finetune.fine_tune = timed_fine_tune
    import locp_trt.train.distributed as distributed
    distributed.fine_tune = timed_fine_tune


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    from locp_trt.cli import main as cli

    acc: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0])
    _install(acc, [""])
    w0, c0 = time.perf_counter(), time.process_time()
    rc = cli(argv[2:])
    acc["total"] = [time.perf_counter() - w0, time.process_time() - c0, 1]
    phases = {k: {"wall_s": round(v[0], 2), "cpu_s": round(v[1], 2), "calls": int(v[2])}
              for k, v in sorted(acc.items())}
    Path(argv[0]).write_text(json.dumps({"command": argv[2:], "exit": rc, "phases": phases}, indent=1) + "\n")
    for k, v in phases.items():
        print(f"{k:28s} wall {v['wall_s']:8.2f} s  cpu {v['cpu_s']:8.2f} s  calls {v['calls']}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
