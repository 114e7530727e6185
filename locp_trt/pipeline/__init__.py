"""The optimize job end to end: the typed job record (`job`), the stages in order (`run`), the
public `optimize()` function (`api`) and the output folder's rules (`outdir`).

Nothing is imported here (the CLI builds its parser without torch)."""
