"""Whether to draw progress bars, and how to say how long something will take.

tqdm redraws a bar with carriage returns. On a terminal that is one line updating in place; in
a log file, a pipe or CI output every redraw stays, and one bar becomes a line of thousands of
characters. So bars are drawn only when they were asked for AND stderr (where they go) is a
terminal. Every place that creates a tqdm bar asks `progress_enabled` first.
"""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["progress_enabled", "format_duration"]


def progress_enabled(requested: bool = True, stream: TextIO | None = None) -> bool:
    """True when a bar was `requested` and `stream` (default: the current sys.stderr) is a TTY."""
    if not requested:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no stream, or a closed one
        return False


def format_duration(seconds: float) -> str:
    """'40 s', '3.5 min', '1.2 h': a duration at the precision an estimate deserves."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
