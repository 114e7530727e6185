"""Checks for `optimize` runs that decide on live timing.

On a shared CI machine a live run may honestly miss a modest target, so a test of anything else
(replacing an old run, progress bars) must accept both endings and check that each is told
truthfully: exit 0 with PASSED and `met_target`, or exit 3 with FAILED and exactly one
`missed the target:` line. Any other exit is a failure of the tool.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def assert_honest_end(proc: subprocess.CompletedProcess, report: Path) -> dict:
    """Assert a live `optimize` run ended met (0) or honestly missed (3); return report's result."""
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    result = json.loads(report.read_text())["result"]
    met = proc.returncode == 0
    assert result["met_target"] == met, result
    missed = [x for x in proc.stderr.splitlines() if x.startswith("missed the target:")]
    assert len(missed) == (0 if met else 1), proc.stderr[-3000:]
    status = "PASSED" if met else "FAILED"
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(f"{status} | locp_trt optimize"), proc.stderr[-500:]
    return result
