"""Command line: `python -m locp_trt <command>`. Each command is a small class in its own module.

A command's docstring is its help text. `main` catches `LocpError` and bad usage (argparse
errors), prints one `error:` line and exits 1; every command ends with a one-line PASSED/FAILED
summary and its run time.
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


class _UsageError(Exception):
    """Bad command-line usage, raised by `_Parser.error` and reported by `main` on one line."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors `main` reports as one `error:` line and exit code 1 (not
    argparse's usage block and exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(self.prog, message)


def _command_name(prog: str, argv: Sequence[str]) -> str | None:
    """The subcommand a usage error belongs to: the parser's own, else the first one in argv."""
    last = prog.rsplit(" ", 1)[-1]
    if last in COMMANDS:
        return last
    return next((a for a in argv if a in COMMANDS), None)


def _usage_error_line(command: str | None, message: str) -> str:
    """One line: what argparse objected to, and where the usage is explained."""
    where = f"python -m locp_trt {command} --help" if command else "python -m locp_trt --help"
    prefix = f"locp_trt {command}: " if command else ""
    return f"error: {prefix}{message}; see {where}"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    from .._version import __version__

    parser = _Parser(
        prog="python -m locp_trt",
        description="Latency-oriented channel pruning: prune a CNN to the widths its target runtime "
                    "(TensorRT, ONNX Runtime or torch, on a GPU or the CPU) runs fastest.",
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


def _interrupt_hint(args: argparse.Namespace) -> str | None:
    """What to do after Ctrl-C: an interrupted `optimize` resumes from its last checkpoint."""
    if args.command != "optimize":
        return None
    from ..pipeline.outdir import has_checkpoint

    if has_checkpoint(args.out):
        return (f"rerun the same command with --resume{' instead of --force' if args.force else ''} to "
                f"continue from the last completed step checkpointed in {args.out}")
    return "no step was checkpointed yet; rerun the same command to start again"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        command = _command_name(e.prog, argv)
        print(_usage_error_line(command, str(e)), file=sys.stderr)
        print(f"FAILED | locp_trt{' ' + command if command else ''} | 0.0 s", file=sys.stderr)
        return 1
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
        hint = _interrupt_hint(args)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        code = 130
    elapsed = time.perf_counter() - start
    if code == 0 and getattr(args, "quiet_summary", False):  # e.g. a rank other than 0 of a torchrun
        return code
    status = "PASSED" if code == 0 else "FAILED"
    note = getattr(args, "summary_note", None)  # e.g. `report`: it passed, the run it read may not have
    print(f"{status} | locp_trt {args.command} | {elapsed:.1f} s" + (f" ({note})" if note else ""), file=sys.stderr)
    return code
