"""`python -m locp_trt export MODEL --arch NAME --out DIR`: write model.onnx (checked against
PyTorch in ONNX Runtime) and, where TensorRT is installed and the device profile uses it,
model.engine with model.engine.json (TensorRT version, GPU, precision, build options, date).

Engines are built for the profile's fixed batch; with --dynamic-batch, model.onnx keeps a
symbolic batch and the engine is built from model_b<N>.onnx written next to it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._args import parse_shape

__all__ = ["Command"]


class Command:
    """Export a model to ONNX (verified in ONNX Runtime) and a TensorRT engine where possible."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", help="model file: state_dict/checkpoint .pt (with --arch), a "
                                          "locp_trt pruned model, a pickled module, or 'example' "
                                          "(the built-in model)")
        parser.add_argument("--arch", default=None,
                            help="architecture: zoo name (python -m locp_trt zoo) or package.module:callable")
        parser.add_argument("--out", type=Path, required=True, help="output folder")
        parser.add_argument("--name", default="model", help="file stem of the outputs (default: model)")
        parser.add_argument("--device", default="auto",
                            help="device profile: cpu | desktop | jetson | jetson-dla | auto (default; "
                                 "see python -m locp_trt devices)")
        parser.add_argument("--precision", default=None, help="fp32 | fp16 (default: the device profile's)")
        parser.add_argument("--batch", type=int, default=None, help="batch size (default: the profile's)")
        parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
        parser.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension in model.onnx")
        parser.add_argument("--input-shape", type=parse_shape, default=None,
                            help="one sample's C,H,W when the architecture does not define it")
        parser.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default: from weights)")
        parser.add_argument("--in-channels", type=int, default=None, help="image channels (default: from weights)")
        parser.add_argument("--trust-pickle", action="store_true",
                            help="allow loading a whole pickled nn.Module (runs code from the file)")
        parser.add_argument("--no-verify", action="store_true",
                            help="skip comparing ONNX Runtime outputs with PyTorch")
        parser.add_argument("--no-engine", action="store_true", help="write the ONNX file only")
        parser.add_argument("--timing-cache", type=Path, default=None,
                            help="TensorRT timing cache file (default: per TensorRT version and GPU)")

    def run(self, args: argparse.Namespace) -> int:
        from ..deploy.devices import resolve_device
        from ..errors import InvalidConfigError, ModelLoadError
        from ..latency.config import Precision
        from ..pipeline.outdir import prepare_out_dir, removed_on_failure
        from ..prune.loading import load_model

        profile = resolve_device(args.device)
        precision = Precision.parse(args.precision) if args.precision else profile.precision
        batch = profile.batch if args.batch is None else args.batch
        if batch < 1 or not 7 <= args.opset <= 23:
            raise InvalidConfigError(f"--batch must be >= 1 and --opset within 7..23, got {batch} and {args.opset}")
        loaded = load_model(args.model, arch=args.arch, trust_pickle=args.trust_pickle,
                            num_classes=args.num_classes, in_channels=args.in_channels,
                            input_shape=args.input_shape)
        if loaded.input_shape is None:
            raise ModelLoadError(f"{args.model}: the input shape is unknown for this architecture; pass "
                                 "--input-shape C,H,W")
        shape = (batch, *loaded.input_shape)
        out: Path = args.out
        # Exports overwrite their own files; only a failed export's new folder is removed.
        created = prepare_out_dir(out, outputs=())
        with removed_on_failure(created, keep_if=(f"{args.name}.onnx",)):
            return self._export(args, loaded, profile, precision, batch, shape, out)

    @staticmethod
    def _export(args: argparse.Namespace, loaded, profile, precision, batch: int, shape: tuple[int, ...],
                out: Path) -> int:
        from ..deploy.export import build_trt_engine, export_onnx
        from ..errors import BackendUnavailableError

        onnx_path = out / f"{args.name}.onnx"
        result = export_onnx(loaded.module, onnx_path, shape, precision, opset=args.opset,
                             dynamic_batch=args.dynamic_batch, verify=not args.no_verify)
        check = (f"max |ORT - PyTorch| {result.max_abs_diff:.2e} (allowed {result.tolerance:.1e})"
                 if result.verified else result.note)
        print(f"wrote {onnx_path} ({result.size_bytes / 1e6:.2f} MB, {precision.value}, opset {args.opset}, "
              f"input {'N' if args.dynamic_batch else batch}x{'x'.join(map(str, loaded.input_shape))}); {check}")
        summary = {"model": str(args.model), "arch": loaded.arch, "device_profile": profile.name,
                   "onnx": result.to_dict(), "engine": None}

        if args.no_engine:
            pass
        elif "tensorrt" not in profile.runtimes:
            print(f"device profile {profile.name!r} does not use TensorRT; no engine built")
        else:
            engine_src = onnx_path
            if args.dynamic_batch:
                engine_src = out / f"{args.name}_b{batch}.onnx"
                export_onnx(loaded.module, engine_src, shape, precision, opset=args.opset, verify=False)
            engine_path = out / f"{args.name}.engine"
            try:
                build_trt_engine(engine_src, engine_path, precision, profile, args.timing_cache)
            except BackendUnavailableError as e:
                if engine_src != onnx_path:
                    engine_src.unlink(missing_ok=True)
                print(str(e))
            else:
                print(f"wrote {engine_path} ({engine_path.stat().st_size / 1e6:.2f} MB) and "
                      f"{engine_path.name}.json (from {engine_src.name}, batch {batch})")
                summary["engine"] = str(engine_path)
        (out / f"{args.name}.export.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return 0
