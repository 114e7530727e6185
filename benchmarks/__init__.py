"""Side-by-side benchmarks of LOCP against other pruning methods (`python benchmarks/run.py`).

Modules: `methods` (the pruning methods, each returning a `Variant`), `measure` (runtimes, layer
latency accounting, interleaved end-to-end timing), `results` (targets, JSON, markdown, plot),
`run` (the command line).
"""

__all__: list[str] = []
