"""Checks for `optimize` runs that decide on live timing.

On a shared CI machine a live run may honestly miss a modest target, so a test of anything else
(replacing an old run, progress bars) must accept both endings and check that each is told
truthfully: exit 0 with PASSED and status `landed`, exit 3 with FAILED and exactly one
`missed the target:` line, or exit 4 with FAILED and exactly one `overshot the target:` line (met,
but above the band). Any other exit is a failure of the tool.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path


def assert_honest_end(proc: subprocess.CompletedProcess, report: Path) -> dict:
    """Assert a live `optimize` run landed (0), honestly missed (3) or honestly overshot (4);
    return report's result."""
    assert proc.returncode in (0, 3, 4), proc.stderr[-3000:]
    result = json.loads(report.read_text())["result"]
    expected = {0: "landed", 3: "missed", 4: "overshot"}[proc.returncode]
    assert result["status"] == expected, result
    assert result["met_target"] == (proc.returncode != 3), result
    for code, prefix in ((3, "missed the target:"), (4, "overshot the target:")):
        lines = [x for x in proc.stderr.splitlines() if x.startswith(prefix)]
        assert len(lines) == (1 if proc.returncode == code else 0), proc.stderr[-3000:]
    status = "PASSED" if proc.returncode == 0 else "FAILED"
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(f"{status} | locp_trt optimize"), proc.stderr[-500:]
    return result


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, step: int, timeout_s: float = 300) -> int:
    """Wait until the run writing `out` has checkpointed `step` (its checkpoints/state.json, which
    is replaced atomically after step_NNN.pt, names a step whose file is there), the process has
    ended, or `timeout_s` has passed; return the step checkpointed so far (-1: none)."""
    state_file = out / "checkpoints" / "state.json"

    def checkpointed() -> int:
        try:
            return int(json.loads(state_file.read_text())["step"])
        except (OSError, ValueError, KeyError):
            return -1

    deadline = time.monotonic() + timeout_s
    while checkpointed() < step and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return checkpointed()
