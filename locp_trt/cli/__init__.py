"""Command line: `python -m locp_trt <command>`. Each command is a small class in its own module.

A command's docstring is its help text. `main` catches `LocpError`, prints one line and exits 1;
every command ends with a one-line PASSED/FAILED summary and its run time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence

from ..errors import LocpError

__all__ = ["main", "COMMANDS"]

#: subcommand -> module under locp_trt.cli defining `Command`.
COMMANDS: dict[str, str] = {
    "optimize": "optimize_cmd",
    "stairs": "stairs_cmd",
    "profile": "profile_cmd",
    "configs": "configs_cmd",
    "bench": "bench_cmd",
    "export": "export_cmd",
    "report": "report_cmd",
    "devices": "devices_cmd",
    "zoo": "zoo_cmd",
}


class _Parser(argparse.ArgumentParser):
    """argparse that raises LocpError-style exit code 1 on bad usage instead of 2 with usage spam."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    from .. import __version__

    parser = _Parser(
        prog="python -m locp_trt",
        description="Latency-oriented channel pruning: prune a CNN to the widths your GPU runs fastest.",
    )
    parser.add_argument("--version", action="version", version=f"locp_trt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:  # a command not built into this install: leave it out
            if e.name != f"{__name__}.{module}":
                raise
            continue
        cmd_cls = mod.Command
        doc = (cmd_cls.__doc__ or "").strip()
        # The module docstring (summary + examples) is the long description where it has one.
        long_doc = (mod.__doc__ or "").strip() or doc
        p = sub.add_parser(name, help=doc.splitlines()[0] if doc else "", description=long_doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd_cls.add_arguments(p)
        p.set_defaults(_command=cmd_cls)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_command", None):
        parser.print_help()
        return 1
    start = time.perf_counter()
    try:
        code = int(args._command().run(args) or 0)
    except LocpError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    elapsed = time.perf_counter() - start
    status = "PASSED" if code == 0 else "FAILED"
    print(f"{status} | locp_trt {args.command} | {elapsed:.1f} s", file=sys.stderr)
    return code
