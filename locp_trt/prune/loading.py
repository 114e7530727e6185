"""Load the model to prune, safely.

Accepted, without running code from the file (`torch.load(weights_only=True)`):
- a state_dict (zip or legacy pre-1.6 `torch.save` format, e.g. advertorch's LeNet5 weights) plus
  an architecture: a zoo name (`--arch resnet56`) or `package.module:callable`;
- a checkpoint dict whose "state_dict" / "model_state_dict" / "model" entry is a state_dict;
- a pruned model written by `locp_trt.prune.save_pruned` (state_dict + plan: no --arch needed).

A whole pickled `nn.Module`, and the weights of a `torch.export` program (.pt2; with --arch, as
its traced graph has no modules to prune), are loaded only with `trust_pickle=True`, since
unpickling (which torch.export.load may do) runs arbitrary code from the file. TorchScript archives and ONNX files are refused with what to pass
instead. Every failure is one `ModelLoadError` line naming the file, what was seen and the fix.
"""

from __future__ import annotations

import enum
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import InvalidConfigError, ModelLoadError, first_line
from ..models.arch import check_state_dict as check_state_dict
from ..models.arch import load_weights, rekey_state_dict
from ..models.arch import resolve_arch as resolve_arch
from .plan import PRUNED_FORMAT, pruned_from_payload

__all__ = ["ModelKind", "LoadedModel", "load_model", "resolve_arch", "check_state_dict", "EXAMPLE",
           "example_model_path", "resolve_model_source"]

#: The built-in example, which every command that takes a model accepts under the name
#: `example` (weights ship inside the package). Its data set is small (2,048 images), so
#: `optimize` fine-tunes it for more epochs than the defaults give.
EXAMPLE = {"name": "example", "arch": "resnet20", "file": "resnet20_synthetic.pt",
           "data": "synthetic:2048:10", "epochs": 2.0, "final_epochs": 4.0}

_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")
_TRUST_HINT = ("unpickling runs arbitrary code from the file; pass --trust-pickle only for files you "
               "trust, or re-save the weights with torch.save(model.state_dict(), 'model.pt') and "
               "pass --arch NAME")


class ModelKind(enum.Enum):
    """What the model file held."""

    STATE_DICT = "state_dict"
    CHECKPOINT = "checkpoint"
    PICKLED_MODULE = "pickled_module"
    PRUNED = "pruned"
    EXPORTED_PROGRAM = "exported_program"  # a torch.export .pt2: its weights, with --arch


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to prune (eval mode, on the CPU)."""

    module: nn.Module
    input_shape: tuple[int, ...] | None  # one sample (C, H, W); None when unknown (pass one)
    arch: str | None  # zoo name or "module:callable"; None for a pickled module without --arch
    kind: ModelKind
    plan: Any = None  # the PruningPlan of a PRUNED file, else None


def example_model_path() -> Path:
    """The built-in example's weights (ResNet-20 trained on the synthetic set, see scripts/)."""
    return Path(__file__).parents[1] / "examples" / EXAMPLE["file"]


def resolve_model_source(model: str | Path, arch: str | None = None) -> tuple[Path, str | None]:
    """(file, architecture) of a model argument: `example` names the built-in example (its
    weights and, unless `arch` says otherwise, its architecture); anything else is a path.

    The one place the name is resolved, so every command that takes a model accepts it.
    """
    if str(model) == EXAMPLE["name"]:
        return example_model_path(), arch or EXAMPLE["arch"]
    return Path(model), arch


def _examples() -> str:
    try:
        from ..models import list_models

        names = [n for n in list_models() if n in ("resnet20", "resnet56", "vgg16_bn", "mobilenetv2", "lenet5")]
        return ", ".join(names)
    except Exception:  # noqa: BLE001 - only a hint
        return "resnet56, lenet5"


def _sniff(path: Path) -> str:
    """'zip', 'pickle' or raise for files that are not PyTorch saves (with the fix)."""
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"model path is not a file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"model file {path} is empty (0 bytes); re-save it with torch.save")
    if path.suffix.lower() == ".onnx":
        raise _onnx_error(path)
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise ModelLoadError(f"model file {path} is truncated or corrupt (unreadable zip archive: "
                                 f"{e}); copy or save it again") from None
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise ModelLoadError(
                f"{path} is a TorchScript archive (torch.jit.save); its compiled graph cannot be "
                "pruned structurally. Pass the weights instead: torch.save(model.state_dict(), "
                "'model.pt') and --arch NAME"
            )
        if any(n.endswith(("/archive_format", "/serialized_exported_program.json")) for n in names):
            return "pt2"
        return "zip"
    if head[:1] == b"\x80":  # pickle protocol opcode: legacy (pre-1.6) torch.save or plain pickle
        return "pickle"
    if _looks_like_onnx(path):
        raise _onnx_error(path)
    raise ModelLoadError(
        f"{path} is not a PyTorch file (no zip or pickle header; starts with {head!r}); pass a "
        "file written by torch.save"
    )


def _onnx_error(path: Path) -> ModelLoadError:
    return ModelLoadError(
        f"{path} is an ONNX model; locp_trt prunes PyTorch modules. Pass the PyTorch weights it "
        "was exported from (a state_dict .pt with --arch NAME, or a checkpoint)"
    )


def _looks_like_onnx(path: Path) -> bool:
    if path.stat().st_size > 2**31:
        return False
    try:
        import onnx

        m = onnx.load_model_from_string(path.read_bytes())
    except Exception:  # noqa: BLE001 - not parseable means not ONNX
        return False
    return m.ir_version > 0 and len(m.opset_import) > 0 and len(m.graph.node) > 0


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - classified below
        text = str(e)
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if unsafe or "Weights only load failed" in text and "global" in text.lower():
            if not trust_pickle:
                what = unsafe.group(1) if unsafe else "a Python class"
                raise ModelLoadError(
                    f"{path} contains pickled Python objects ({what}), e.g. a whole nn.Module saved "
                    f"with torch.save(model); {_TRUST_HINT}"
                ) from None
        elif isinstance(e, (EOFError, RuntimeError)) or "central directory" in text:
            raise ModelLoadError(f"model file {path} is truncated or corrupt ({first_line(e)}); "
                                 "copy or save it again") from None
        else:
            raise ModelLoadError(f"{path} could not be read as a PyTorch file ({first_line(e)}); "
                                 "pass a file written by torch.save") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - the trusted unpickling failed
        raise ModelLoadError(f"{path} could not be unpickled ({first_line(e)}); is the code that "
                             "defines its classes importable here?") from None


class _Pt2Weights(dict):
    """The state_dict of a torch.export program (marks where it came from)."""


def _pt2_state_dict(path: Path, trust_pickle: bool, arch: str | None) -> dict[str, torch.Tensor]:
    """Parameters and buffers of a `torch.export.save` archive, by their original names.

    `torch.export.load` unpickles some entries (sample inputs, pickled weights, opaque constants)
    with `weights_only=False`, so it runs only with `trust_pickle`.
    """
    if not trust_pickle:
        raise ModelLoadError(
            f"{path} is a torch.export program (.pt2); torch.export.load may unpickle Python objects "
            "from it (that runs code), so locp_trt reads it only with --trust-pickle, and only for "
            f"its weights, with --arch NAME{f' (given: {arch})' if arch else ''}; or save "
            "torch.save(model.state_dict(), 'model.pt') instead"
        )
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable archive is one user error
        raise ModelLoadError(f"{path} looks like a torch.export program (.pt2) but torch "
                             f"{torch.__version__} cannot load it ({first_line(e)}); save the "
                             "weights instead: torch.save(model.state_dict(), 'model.pt')") from None
    state = {k: v.detach() for k, v in program.state_dict.items() if isinstance(v, torch.Tensor)}
    for k, v in getattr(program, "constants", {}).items():
        if isinstance(v, torch.Tensor) and not k.startswith("lifted_tensor"):
            state.setdefault(k, v.detach())
    return _Pt2Weights(state)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a DataParallel/DDP 'module.' prefix present on every key (from the module versions
    in `_metadata` too, which are kept: versioned modules read them when loading)."""
    prefix = "module." if sd and all(k.startswith("module.") for k in sd) else ""
    return rekey_state_dict(sd, prefix)


def load_model(path: str | Path, *, arch: str | None = None, trust_pickle: bool = False,
               num_classes: int | None = None, in_channels: int | None = None,
               input_shape: tuple[int, ...] | None = None) -> LoadedModel:
    """Load the model to prune (eval mode, CPU).

    Args:
        path: .pt file: state_dict, checkpoint dict, pruned model, or (trusted) pickled module;
            or `example`, the built-in example (see `resolve_model_source`).
        arch: zoo name or `package.module:callable`; needed for a bare state_dict/checkpoint
            (the example's defaults to its own).
        trust_pickle: allow unpickling a whole nn.Module (runs code from the file).
        num_classes: classifier outputs when building `arch` (default: read from the weights).
        in_channels: image channels when building `arch` (default: read from the weights).
        input_shape: one sample's (C, H, W) when the architecture does not say (overrides it).

    Raises:
        ModelLoadError: missing, empty, truncated, garbage, TorchScript or ONNX file; pickled
            module without `trust_pickle`; state_dict without `arch`; weights that do not fit.
    """
    path, arch = resolve_model_source(path, arch)
    if _sniff(path) == "pt2":
        payload = _pt2_state_dict(path, trust_pickle, arch)
    else:
        payload = _torch_load(path, trust_pickle)
    override = tuple(int(v) for v in input_shape) if input_shape is not None else None

    if isinstance(payload, nn.Module):
        shape = override
        if shape is None and arch is not None and ":" not in arch:
            from . import model_spec

            shape = model_spec(arch).input_shape
        return LoadedModel(payload.eval(), shape, arch, ModelKind.PICKLED_MODULE)

    if not isinstance(payload, Mapping):
        raise ModelLoadError(f"{path} holds a {type(payload).__name__}; expected a state_dict, a "
                             "checkpoint dict with a 'state_dict' entry, or a locp_trt pruned model")

    if payload.get("format") == PRUNED_FORMAT:
        factory = resolve_arch(arch, num_classes, in_channels)[0] if arch else None
        module, plan = pruned_from_payload(payload, factory, str(path))
        return LoadedModel(module, override or plan.input_shape, arch or plan.arch, ModelKind.PRUNED, plan)

    kind = ModelKind.EXPORTED_PROGRAM if isinstance(payload, _Pt2Weights) else ModelKind.STATE_DICT
    state = payload
    if not _is_state_dict(payload):
        for key in _CHECKPOINT_KEYS:
            inner = payload.get(key)
            if isinstance(inner, nn.Module):
                return LoadedModel(inner.eval(), override, arch, ModelKind.PICKLED_MODULE)
            if _is_state_dict(inner):
                state, kind = inner, ModelKind.CHECKPOINT
                break
        else:
            keys = ", ".join(repr(k) for k in list(payload)[:8])
            raise ModelLoadError(
                f"{path} holds a dict without a state_dict (keys: {keys}); expected tensors by "
                f"parameter name, or a checkpoint with one of {', '.join(_CHECKPOINT_KEYS)}"
            )
    state = _strip_prefix(state)
    if arch is None and kind is ModelKind.EXPORTED_PROGRAM:
        raise ModelLoadError(
            f"{path} is a torch.export program (.pt2): its traced graph has no nn.Conv2d modules "
            "to prune; pass --arch NAME (or package.module:callable) of the model it was exported "
            "from, and its weights are loaded into that"
        )
    if arch is None:
        raise ModelLoadError(
            f"{path} holds only weights (a {kind.value}); pass --arch NAME to say which "
            f"architecture, e.g. {_examples()} (python -m locp_trt zoo lists all), or --arch "
            "package.module:callable"
        )
    try:
        factory, shape = resolve_arch(arch, num_classes, in_channels, state)
    except InvalidConfigError as e:
        raise ModelLoadError(f"--arch: {e}") from None
    module = factory()
    load_weights(module, state, str(path), arch)
    return LoadedModel(module.eval(), override or shape, arch, kind)
