"""The mean of replicate fine-tunes: results.json files whose variants are the same pruned models
fine-tuned with different seeds (`accuracy.py finetune --seed N`), merged into one results.json
whose accuracy is each variant's mean over the replicates (the list kept as
`accuracy_replicates`). `accuracy.py report` then reads it as any run.

    python benchmarks/replicates.py SEED0/results.json SEED1/results.json --out DIR/results.json
    python benchmarks/replicates.py --join PART1/results.json PART2/results.json --out SEED1/results.json

`--join`: one replicate whose fine-tunes ran in parts (a call cut short, the rest run in the
next): the parts' variants in one results.json, each variant once, before the mean is taken.

A fine-tune's own noise (the batches' order, augmentation, initial RNG) moves one variant's
accuracy by a tenth of a point or more; the mean of k replicates is a steadier reading of where
each method stands. Per-image records (`test_correct`) are dropped from the mean: the paired test
belongs to each replicate's own table.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Key = tuple[str, str, float, str]


def _key(v: dict[str, Any]) -> Key:
    """A variant's identity across replicates: its file's name, not its folder (a rebuilt
    baseline lies in another machine's work folder)."""
    return (v["model"], v["method"], float(v["target"]), Path(v["file"]).name)


def merge(runs: list[dict[str, Any]], sources: list[str] | None = None, *,
          keep_single: bool = False) -> dict[str, Any]:
    """One results dict: the first run's, each variant's accuracy the mean over `runs`. A variant
    every run holds must have the same measured speedup in each (it is the same pruned model);
    one that some run lacks or left without accuracy is left without accuracy, unless
    `keep_single`: then a variant the other runs do not hold at all keeps the first run's one
    reading, and its method is listed in `replicates.single`."""
    if len(runs) < 2:
        raise ValueError("give two or more replicate results.json files")
    merged = copy.deepcopy(runs[0])
    others = [{_key(v): v for v in run["variants"]} for run in runs[1:]]
    single: set[str] = set()
    for v in merged["variants"]:
        same = [o.get(_key(v)) for o in others]
        for field in ("test_correct", "test_n"):
            v.pop(field, None)
        if keep_single and not any(same):
            v["accuracy_replicates"] = [v.get("accuracy")]
            single.add(v["method"])
            continue
        accs = [v.get("accuracy")] + [o.get("accuracy") if o else None for o in same]
        for o in same:
            if o and o["measured"]["speedup"] != v["measured"]["speedup"]:
                raise ValueError(f"{_key(v)}: measured {v['measured']['speedup']} in one replicate and "
                                 f"{o['measured']['speedup']} in another: not the same variant")
        v["accuracy_replicates"] = accs
        v["accuracy"] = round(statistics.fmean(accs), 2) if None not in accs else None
    merged["replicates"] = {"n": len(runs), "sources": sources or [], "single": sorted(single),
                            "reading": "accuracy: the mean over the replicates' fine-tunes"
                            + ("; methods in `single`: the first run's one fine-tune" if single else "")}
    return merged


def join(parts: list[dict[str, Any]], sources: list[str] | None = None) -> dict[str, Any]:
    """One results dict from `parts` of one replicate: the first part's settings, every part's
    variants that have an accuracy (each once: one that two parts hold alike, as a `--missing`
    part repeats what it was given, is taken once; one whose readings differ would be two
    replicates and is refused), and the errors of variants no part fine-tuned. Parts of other
    fine-tune seeds or epochs are refused."""
    def replicate(part: dict[str, Any]) -> tuple[Any, Any]:
        st = part.get("settings", {})
        return st.get("ft_seed"), st.get("ft_epochs")

    if len({replicate(p) for p in parts}) > 1:
        raise ValueError("the parts are of different replicates (fine-tune seed, epochs): "
                         + ", ".join(f"{seed}/{ep}" for seed, ep in map(replicate, parts)))
    joined = copy.deepcopy(parts[0])
    seen: dict[Key, dict[str, Any]] = {}
    for part in parts:
        for v in part["variants"]:
            if v.get("accuracy") is None:
                continue
            if _key(v) in seen:
                if seen[_key(v)].get("accuracy") == v["accuracy"]:
                    continue  # the same fine-tune, repeated by a later part
                raise ValueError(f"{_key(v)}: fine-tuned in two parts; give them as replicates, not parts")
            seen[_key(v)] = copy.deepcopy(v)
    names = {k[3] for k in seen}
    joined["variants"] = list(seen.values())
    joined["errors"] = [e for part in parts for e in part.get("errors", [])
                        if Path(str(e.get("file", ""))).name not in names]
    joined["joined_from"] = sources or []
    return joined


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="replicates' results.json files (or one's parts)")
    p.add_argument("--out", type=Path, required=True, help="the merged results.json to write")
    p.add_argument("--keep-single", action="store_true",
                   help="a variant only the first file holds keeps its one reading (say so where it is read)")
    p.add_argument("--join", action="store_true",
                   help="the files are parts of one replicate: write their variants as one results.json")
    a = p.parse_args(argv)
    if a.join:
        joined = join([json.loads(f.read_text()) for f in a.results], [str(f) for f in a.results])
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(joined, indent=1) + "\n")
        print(f"{len(joined['variants'])} variants from {len(a.results)} parts, "
              f"{len(joined['errors'])} left with an error")
        return 0
    merged = merge([json.loads(f.read_text()) for f in a.results], [str(f) for f in a.results],
                   keep_single=a.keep_single)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(merged, indent=1) + "\n")
    spread = [max(x) - min(x) for v in merged["variants"]
              if len(x := v["accuracy_replicates"]) > 1 and None not in x]
    if spread:
        print(f"{len(spread)} variants in {len(a.results)} replicates: accuracy spread median "
              f"{statistics.median(spread):.2f}, largest {max(spread):.2f} points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
