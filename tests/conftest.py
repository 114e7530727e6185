"""Test-session settings shared by every test module.

One intra-op thread for torch here and in the processes tests start: CI is a shared 2-core
machine, and a second thread per process only oversubscribes the cores when anything else runs
(the loaded suite took 11 minutes with torch's default of 2 threads beside one busy process).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402 - after the environment setting above, which torch reads at import

torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list) -> None:
    """Tests marked `slow` first: pytest-xdist hands each worker a contiguous share of the
    collection, so a long end-to-end run collected late (the README's quick start, 3-5 minutes on
    the loaded 2-core CI machine) started last and ran alone at the end; first, the other worker
    runs everything else beside it."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
