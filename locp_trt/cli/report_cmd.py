"""Print the summary table of an optimize run; with --plots, redraw its plots too.

Examples:
  python -m locp_trt report runs/example
  python -m locp_trt report runs/example --plots

`report` only reads the run unless --plots asks it to rewrite history.png and stairs.png. For a
family's folder (`optimize --speedup 1.3,1.6,2`) it prints one row per member (--plots redraws
family.png); each member's folder is a run of its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["Command"]


class Command:
    """Print the summary table of an optimize run (and with --plots redraw its plots)."""

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("run_dir", type=Path, help="the --out directory of an optimize run or family (or its "
                                                  "report.json / family.json)")
        p.add_argument("--plots", action="store_true",
                       help="also rewrite history.png and stairs.png in the run's folder (default: "
                            "write nothing)")
        # The default since --plots exists; still accepted so older scripts run.
        p.add_argument("--no-plots", action="store_true", help=argparse.SUPPRESS)

    def run(self, args: argparse.Namespace) -> int:
        from ..report import load_report, summary_table, write_plots
        from ..report.family import family_summary, is_family, load_family, plot_family

        if is_family(args.run_dir):  # a family: one row per member (each folder is a run too)
            doc = load_family(args.run_dir)
            print(family_summary(doc))
            if doc.get("status"):
                args.summary_note = f"the family's status: {doc['status']}"
            if args.plots and not args.no_plots:
                out = args.run_dir if args.run_dir.is_dir() else args.run_dir.parent
                print(f"wrote {plot_family(doc, out / 'family.png')}")
            return 0
        report = load_report(args.run_dir)
        print(summary_table(report))
        status = (report.get("result") or {}).get("status")  # reports before statuses have none
        if status:
            args.summary_note = f"the run's status: {status}"
        if args.plots and not args.no_plots:
            out = args.run_dir if args.run_dir.is_dir() else args.run_dir.parent
            for p in write_plots(out, report):
                print(f"wrote {p}")
        return 0
