"""`profile`: measure a model's layer configs on THIS machine and write the latency lookup table.

Examples:
  # on the workstation: list the configs (needs torch)
  python -m locp_trt configs model.pt --arch resnet56 --device jetson --out configs.json
  # on the Jetson: locp_trt imports no torch on this path, only onnx, numpy and the runtime
  # (the tensorrt runtime itself uses torch's CUDA tensors and events: JetPack's torch wheel)
  python -m locp_trt profile --configs configs.json --device jetson --out table.json
  # back on the workstation: prune with the Jetson's latencies
  python -m locp_trt optimize model.pt --arch resnet56 --latency-table table.json --out runs/j
  # or in one go on the target, from the model file
  python -m locp_trt profile model.pt --arch resnet56 --runtime onnxruntime --out table.json

Every measurement goes into the latency store first (--store), so an interrupted run resumes
where it stopped: configs already measured on this device are store hits. The table holds
exactly the listed configs, with the device fingerprint (format of LatencyStore.export_json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from ._args import (
    add_bench_args,
    add_runtime_args,
    add_store_args,
    bench_config_from,
    default_store_path,
)
from .configs_cmd import add_configs_args, add_model_args

__all__ = ["Command", "profile_configs", "runtime_for_profile"]


def runtime_for_profile(name: str | None, profile, bench):
    """The runtime to measure with: `name`, or the device profile's first available one.

    TensorRT gets the profile's workspace and DLA settings.
    """
    from ..deploy.devices import runtime_for
    from ..latency.runtimes import get_runtime

    name = name or runtime_for(profile)
    if name.lower() in ("tensorrt", "trt"):
        from ..latency.runtimes.tensorrt_rt import TrtBuildOptions

        options = TrtBuildOptions(workspace_mib=profile.workspace_mb or TrtBuildOptions().workspace_mib,
                                  dla_core=profile.dla_core, gpu_fallback=profile.gpu_fallback)
        return get_runtime(name, bench, options=options)
    return get_runtime(name, bench)


def profile_configs(configs, runtime, store, *, progress: bool = True, passes: int = 2) -> tuple[dict, dict]:
    """Measure every config of a `ConfigList` through a `LatencyMeter` on `store`, in `passes`
    passes (`LatencyMeter.measure_many`: each config keeps its fastest reading).

    Returns:
        (lookup-table document, counts {"configs", "measured", "from_store"}, and "passes": the
        `PassAgreement` when more than one pass measured something).
    """
    from ..errors import StoreError
    from ..latency.meter import LatencyMeter, Source
    from ..latency.store import TABLE_SCHEMA

    meter = LatencyMeter(runtime, store, progress=progress)
    unique = list(dict.fromkeys(configs.configs))
    found = meter.measure_many(unique, passes=passes)
    fingerprint = meter.fingerprint(configs.precision)
    entries = []
    for cfg in unique:
        row = store.get(cfg, fingerprint)
        if row is None:  # the meter stores every measurement; a miss is a store bug
            raise StoreError(f"{cfg} was measured but is missing from the latency store")
        entries.append(row.to_entry())
    counts = {"configs": len(unique),
              "measured": sum(1 for m in found if m.source is Source.MEASURED),
              "from_store": sum(1 for m in found if m.source is Source.STORE),
              "passes": meter.pass_agreement}
    doc = {
        "schema": TABLE_SCHEMA,
        "fingerprint": fingerprint.to_dict(),
        "entries": entries,
        # provenance (readers of the table ignore these keys)
        "runtime_label": runtime.label,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "configs": {"model": configs.model, "coverage": configs.coverage.value,
                    "min_width_ratio": configs.min_width_ratio, "batch": configs.batch,
                    "precision": configs.precision.value, "count": len(unique)},
        "passes": {"asked": passes, **(meter.pass_agreement.to_json() if meter.pass_agreement else {})},
    }
    return doc, counts


def _write_table(path: Path, doc: dict) -> None:
    from ..errors import StoreError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise StoreError(f"cannot write the lookup table {path}: {exc}") from None


class Command:
    """Measure every layer config of a model (or of a config list) here; write the lookup table."""

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", nargs="?", default=None,
                       help="model.pt or 'example' (needs torch); or give --configs instead")
        p.add_argument("--configs", type=Path, default=None,
                       help="config list from `python -m locp_trt configs` (no torch needed)")
        p.add_argument("--out", type=Path, required=True, help="where to write the lookup table (JSON)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--passes", type=int, default=2,
                       help="time every config this many times, far apart, and keep its fastest reading: "
                            "a machine whose speed drifts over seconds (a shared VM) otherwise freezes each "
                            "config in whatever state it met (default 2; 1 halves the time)")
        add_runtime_args(p, default="")
        add_model_args(p)
        add_configs_args(p, precision=False)
        add_bench_args(p)
        add_store_args(p)

    def run(self, args: argparse.Namespace) -> int:
        from ..deploy.devices import check_clocks_locked, resolve_device
        from ..errors import InvalidConfigError
        from ..latency.config import Precision
        from ..latency.store import LatencyStore
        from ..method.configs_list import ConfigList

        if (args.model is None) == (args.configs is None):
            raise InvalidConfigError("give either a MODEL file or --configs configs.json (exactly one)")
        if args.passes < 1:
            raise InvalidConfigError(f"--passes must be at least 1, got {args.passes}")
        bench = bench_config_from(args)
        profile = resolve_device(args.device)
        if args.configs is not None:
            configs = ConfigList.load(args.configs)
            if args.precision and Precision.parse(args.precision) is not configs.precision:
                raise InvalidConfigError(
                    f"--precision {args.precision} differs from the config list's {configs.precision.value} "
                    f"({args.configs}); list the configs again with --precision {args.precision}")
            if args.batch is not None and args.batch != configs.batch:
                raise InvalidConfigError(
                    f"--batch {args.batch} differs from the config list's batch {configs.batch} "
                    f"({args.configs}); list the configs again with --batch {args.batch}")
        else:
            from .configs_cmd import model_config_list

            configs = model_config_list(args)
        warning = check_clocks_locked()
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        store_path = None if args.no_store else (args.store or default_store_path())
        store = LatencyStore(store_path)
        try:
            with runtime_for_profile(args.runtime or None, profile, bench) as runtime:
                runtime.check_precision(configs.precision)
                print(f"profiling {len(configs)} configs of {configs.model} on {runtime.label} "
                      f"({configs.precision.value}, batch {configs.batch}); store: "
                      f"{store_path or 'in memory'}", file=sys.stderr)
                try:
                    doc, counts = profile_configs(configs, runtime, store, progress=not args.no_progress,
                                                  passes=args.passes)
                except KeyboardInterrupt:
                    if store_path is not None:
                        print(f"interrupted; the configs measured so far are in {store_path}: run the "
                              "same command again to continue (stored configs are reused, not timed "
                              "in further passes)", file=sys.stderr)
                    raise
        finally:
            store.close()
        _write_table(args.out, doc)
        from ..latency.fingerprint import DeviceFingerprint

        fp = DeviceFingerprint.from_dict(doc["fingerprint"])
        medians = [e["median_us"] for e in doc["entries"]]
        print(f"device: {fp.describe()} (key {fp.key()})")
        print(f"{counts['configs']} configs: measured {counts['measured']}, from the store "
              f"{counts['from_store']}; median latencies {min(medians):.1f}-{max(medians):.1f} µs"
              if medians else f"{counts['configs']} configs")
        if counts["passes"] is not None:
            print(counts["passes"].sentence())
        print(f"wrote {args.out}")
        return 0
