"""Print the summary table of an optimize run and (re)write its plots.

Example:
  python -m locp_trt report runs/example
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["Command"]


class Command:
    """Print the summary table of an optimize run and (re)write its plots."""

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("run_dir", type=Path, help="the --out directory of an optimize run (or its report.json)")
        p.add_argument("--no-plots", action="store_true", help="only print the table")

    def run(self, args: argparse.Namespace) -> int:
        from ..report import load_report, summary_table, write_plots

        report = load_report(args.run_dir)
        print(summary_table(report))
        if not args.no_plots:
            out = args.run_dir if args.run_dir.is_dir() else args.run_dir.parent
            for p in write_plots(out, report):
                print(f"wrote {p}")
        return 0
