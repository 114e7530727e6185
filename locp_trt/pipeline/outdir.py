"""Output folders of `optimize` and `export`: never mix two runs, never leave an empty folder.

`prepare_out_dir` runs before any work. It turns an unusable `--out` (an existing file, a path
below a file, a place the user cannot write) into one `OutDirError` instead of a traceback, and
refuses a folder that already holds a run unless the caller resumes it or replaces it (`force`:
the old run's outputs, checkpoints included, are deleted first, and one line says what went;
other files are left alone).

`removed_on_failure` wraps the work: when it fails (an error or Ctrl-C), the folders
`prepare_out_dir` created are removed again, unless the run got far enough to write something
worth keeping (by default a checkpoint, which `--resume` continues from).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..errors import InvalidConfigError

__all__ = ["RUN_OUTPUTS", "CHECKPOINT", "OutDirError", "prepare_out_dir", "removed_on_failure",
           "has_checkpoint"]

#: What `optimize` writes into its folder (a checkpoint folder included).
RUN_OUTPUTS = ("pruned.pt", "plan.json", "model.onnx", "model.engine", "model.engine.json",
               "report.json", "history.png", "stairs.png", "checkpoints")
#: The file `optimize --resume` continues from.
CHECKPOINT = "checkpoints/state.json"


class OutDirError(InvalidConfigError):
    """The output folder cannot take this run's outputs (a file, unwritable, or a previous run)."""


def has_checkpoint(out_dir: str | Path) -> bool:
    """True when `out_dir` holds a checkpoint an `optimize --resume` can continue from."""
    return (Path(out_dir) / CHECKPOINT).is_file()


def _first_existing(path: Path) -> Path:
    """`path` itself or its nearest ancestor that exists."""
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(path.anchor or ".")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _finished_run(path: Path) -> str | None:
    """'status missed, 2.003x by its final check' when `path` holds a finished run's report.json
    (a run resumed after its end is continued, not an interrupted one); else None."""
    try:
        result = json.loads((path / "report.json").read_text())["result"]
        return f"status {result['status']}, {float(result['speedup']):.3f}x by its final check"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _described(path: Path, names: Sequence[str]) -> str:
    """'pruned.pt, report.json, checkpoints/ (3 files)': the names, a folder with its file count."""
    parts = []
    for name in names:
        p = path / name
        if p.is_dir() and not p.is_symlink():
            n = sum(1 for f in p.rglob("*") if not f.is_dir())
            parts.append(f"{name}/ ({n} file{'s' if n != 1 else ''})")
        else:
            parts.append(name)
    return ", ".join(parts)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def prepare_out_dir(path: str | Path, *, resume: bool = False, force: bool = False,
                    outputs: Sequence[str] = RUN_OUTPUTS,
                    log: Callable[[str], None] = _stderr) -> list[Path]:
    """Make sure `path` is a writable folder ready for a run; create it where missing.

    Args:
        path: the output folder (`--out`).
        resume: the run continues the one already in `path` (its outputs stay).
        force: delete the previous run's `outputs` in `path` first.
        outputs: names a run writes there; finding one means `path` holds a run already.
        log: where `force` says what it deleted (one line; default stderr).

    Returns:
        The folders this call created, outermost first (empty when `path` existed); pass them to
        `removed_on_failure`.

    Raises:
        OutDirError: `path` is a file or lies below one, cannot be created or written, or holds a
            previous run and neither `resume` nor `force` is set.
    """
    if resume and force:
        raise OutDirError("--resume continues the run in the output folder and --force deletes it; "
                          "pass one of them")
    path = Path(path)
    base = _first_existing(path)
    if not base.is_dir():
        where = "is an existing file" if base == path else f"lies below {base}, which is a file"
        raise OutDirError(f"output folder {path} {where}; pass a folder path to --out")
    if base == path:
        found = [name for name in outputs if (path / name).exists()]
        if found and not (resume or force):
            raise OutDirError(
                f"output folder {path} already holds a run ({', '.join(found[:4])}"
                f"{', ...' if len(found) > 4 else ''}); pass --resume to continue it, --force to "
                "replace it, or another --out")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutDirError(f"cannot write into output folder {path} (permission denied); pass "
                              "--out a folder you can write to")
        if resume:
            finished = _finished_run(path)
            if finished:
                log(f"--resume: {path} holds a finished run ({finished}); it continues after its last "
                    "checkpointed step, and its outputs are written again")
        if force and found:
            what = _described(path, found)
            try:
                for name in found:
                    _remove(path / name)
            except OSError as e:
                raise OutDirError(f"--force could not delete the previous run in {path}: "
                                  f"{e.strerror or e}") from None
            log(f"--force: removed the previous run's {what} from {path}")
        return []
    created = [p for p in reversed((path, *path.parents)) if not p.exists()]
    try:
        path.mkdir(parents=True)
    except OSError as e:
        raise OutDirError(f"cannot create output folder {path}: {e.strerror or e}; pass --out a "
                          "folder you can write to") from None
    return created


@contextlib.contextmanager
def removed_on_failure(created: Sequence[Path], keep_if: Sequence[str] = (CHECKPOINT,)) -> Iterator[None]:
    """Remove the folders in `created` (from `prepare_out_dir`) if the block raises, Ctrl-C
    included, unless the innermost one holds one of `keep_if` (paths relative to it)."""
    try:
        yield
    except BaseException:
        if created:
            out = Path(created[-1])
            if not any((out / name).exists() for name in keep_if):
                shutil.rmtree(out, ignore_errors=True)
                for parent in reversed(created[:-1]):  # empty parents this run made, innermost first
                    try:
                        Path(parent).rmdir()
                    except OSError:
                        break
        raise
