"""One error hierarchy for everything a user can cause.

`LocpError` and its subclasses are user errors: the CLI prints their message on one line and
exits 1. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = [
    "read_json",
    "LocpError",
    "BackendUnavailableError",
    "InvalidConfigError",
    "UnsupportedLayerError",
    "UnstableMeasurementError",
    "ModelLoadError",
    "DatasetError",
    "PlanError",
    "StoreError",
    "first_line",
    "short_list",
]


class LocpError(Exception):
    """Root of all user-facing errors. The message says what failed, the values seen, and the fix."""


class BackendUnavailableError(LocpError):
    """A runtime (TensorRT, ONNX Runtime CUDA, torch CUDA) is not installed or has no device."""


class InvalidConfigError(LocpError, ValueError):
    """A layer configuration, CLI value or option combination is impossible."""


class UnsupportedLayerError(LocpError):
    """A layer kind the latency model or the pruner cannot handle."""


class UnstableMeasurementError(LocpError):
    """Timings stayed noisier than allowed after every re-measurement."""


class ModelLoadError(LocpError):
    """model.pt (or a plan, or a checkpoint) could not be loaded safely."""


class DatasetError(LocpError):
    """A dataset path is missing, malformed, or of an unknown kind."""


class PlanError(LocpError):
    """A pruning plan does not fit the model it is applied to."""


class StoreError(LocpError):
    """The latency store or a lookup table file is unreadable or of another schema."""


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def first_line(e: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`, without terminal colour codes, for one-line errors."""
    text = _ANSI.sub("", str(e)).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:limit]}" if text else type(e).__name__


def short_list(items: Any, limit: int = 5) -> str:
    """'a, b, c' or 'a, b, c, d, e and 37 more': names in an error line, however many there are."""
    names = [str(i) for i in items]
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"


def read_json(path: str | Path, error: type[LocpError], what: str = "file", reading: str = "JSON from") -> Any:
    """The JSON document in `path`; a missing or unreadable file is one `error`: "{what} not
    found: PATH" or "cannot read {reading} PATH: why"."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} not found: {p}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"cannot read {reading} {p}: {exc}") from None

