"""Architectures by name: a zoo name or `package.module:callable`, built into an `nn.Module`, and
whether a state_dict fits it.

Shared by `loading` (a model file plus `--arch`) and `prune.plan` (a pruned file rebuilds its
original architecture from the name its plan recorded), so neither of those imports the other.
"""

from __future__ import annotations

import importlib
import inspect
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn

from ..errors import ModelLoadError, first_line
from .registry import get_model, list_models, model_spec, torchvision_import_hint

__all__ = ["is_callable_arch", "import_arch", "resolve_arch", "rebuild_arch", "check_state_dict",
           "rekey_state_dict", "load_weights"]


def is_callable_arch(arch: str) -> bool:
    """True for `package.module:callable` (not a zoo name)."""
    return ":" in arch and arch not in list_models()


def import_arch(arch: str, what: str | None = None) -> Callable[..., Any]:
    """The callable named by `package.module:callable` (the attribute may be dotted: `mod:Cls.make`).

    Raises:
        ModelLoadError: the module does not import or has no such attribute; one line with the fix.
    """
    what = what or f"--arch {arch}"
    mod_name, _, attr = arch.partition(":")
    if not mod_name or not attr:
        raise ModelLoadError(f"{what}: expected package.module:callable, got {arch!r}")
    try:
        obj: Any = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - any failing import (also a broken install) is one line
        top = mod_name.split(".")[0]
        missing = isinstance(e, ModuleNotFoundError) and e.name is not None and top.startswith(e.name)
        if top == "torchvision" and not missing:
            hint = torchvision_import_hint(e)
        elif missing:
            hint = (f"is {top!r} installed, or its folder the current directory or on PYTHONPATH?")
        else:
            hint = f"importing {mod_name} raised this error; fix it there"
        raise ModelLoadError(f"{what}: cannot import module {mod_name!r} ({first_line(e)}); {hint}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelLoadError(f"{what}: cannot import {attr!r} from {mod_name!r} (it has no "
                                 f"attribute {part!r}); check the spelling") from None
    if not callable(obj):
        raise ModelLoadError(f"{what}: {attr!r} in {mod_name!r} is a {type(obj).__name__}, not a callable")
    return obj


def _as_module(obj: Any, what: str) -> nn.Module:
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{what} returned a {type(obj).__name__}, not an nn.Module")
    return obj


def resolve_arch(arch: str, num_classes: int | None = None, in_channels: int | None = None,
                 state_dict: Mapping[str, torch.Tensor] | None = None
                 ) -> tuple[Callable[[], nn.Module], tuple[int, ...] | None]:
    """A zero-argument factory for `arch` and its input shape (None when unknown).

    `arch` is a zoo name (see `python -m locp_trt zoo`) or `package.module:callable`. A callable
    gets `num_classes` / `in_channels` as keyword arguments only when given. For zoo models,
    those not given are read off `state_dict` when it has a different classifier or first conv.
    """
    if is_callable_arch(arch):
        fn = import_arch(arch)
        kwargs = {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels))
                  if v is not None}
        return (lambda: _as_module(fn(**kwargs), f"--arch {arch}")), None
    spec = model_spec(arch)  # InvalidConfigError with close names if unknown
    if state_dict is not None and (num_classes is None or in_channels is None):
        probe = get_model(arch, num_classes, in_channels)
        convs = [n for n, m in probe.named_modules() if isinstance(m, nn.Conv2d)]
        linears = [n for n, m in probe.named_modules() if isinstance(m, nn.Linear)]
        if in_channels is None and convs and f"{convs[0]}.weight" in state_dict:
            w = state_dict[f"{convs[0]}.weight"]
            if w.dim() == 4 and probe.get_submodule(convs[0]).groups == 1:
                in_channels = int(w.shape[1])
        if num_classes is None and linears and f"{linears[-1]}.weight" in state_dict:
            num_classes = int(state_dict[f"{linears[-1]}.weight"].shape[0])
    shape = (in_channels or spec.input_shape[0], *spec.input_shape[1:])
    return (lambda: get_model(arch, num_classes, in_channels)), tuple(shape)


def _accepted(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `kwargs` that `fn`'s signature names (none when it has no signature)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in kwargs.items() if v is not None and k in params}


def rebuild_arch(arch: str, num_classes: int | None, in_channels: int | None,
                 source: str) -> nn.Module:
    """The unpruned original of a pruned model, from the architecture name its plan recorded.

    A zoo name is built with `num_classes` / `in_channels`; a `package.module:callable` is
    imported again and called with those of the two its signature names.

    Raises:
        ModelLoadError: the name is unknown or its module does not import; says what to pass.
    """
    from ..errors import InvalidConfigError

    fix = "or pass --arch (arch_factory=) for the original model"
    if is_callable_arch(arch):
        fn = import_arch(arch, f"{source}: the plan's architecture {arch}")
        kwargs = _accepted(fn, {"num_classes": num_classes, "in_channels": in_channels})
        try:
            return _as_module(fn(**kwargs), f"{source}: {arch}")
        except ModelLoadError:
            raise
        except Exception as e:  # noqa: BLE001 - user code failed: one line, with the fix
            raise ModelLoadError(f"{source}: calling the plan's architecture {arch}({', '.join(kwargs)}) "
                                 f"failed ({first_line(e)}); {fix}") from None
    try:
        return get_model(arch, num_classes=num_classes, in_channels=in_channels)
    except InvalidConfigError as e:
        raise ModelLoadError(f"{source}: the plan's architecture: {e}; {fix}") from None


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Any], source: str,
                     arch: str | None = None) -> None:
    """Raise `ModelLoadError` listing the first mismatching keys/shapes unless `state_dict` fits."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k} file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items()
              if k in state_dict and isinstance(state_dict[k], torch.Tensor)
              and tuple(state_dict[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        parts.append(f"shape mismatch: {'; '.join(shapes[:3])}")
    if missing:
        parts.append(f"missing in file: {', '.join(missing[:4])}")
    if unexpected:
        parts.append(f"not in model: {', '.join(unexpected[:4])}")
    total = len(missing) + len(unexpected) + len(shapes)
    target = f"--arch {arch}" if arch else type(model).__name__
    raise ModelLoadError(
        f"{source} does not fit {target} ({total} mismatching keys; {' | '.join(parts)}); check that "
        "--arch names the architecture these weights were saved from (classes and input channels are "
        "read from the weights; `export` also takes --num-classes and --in-channels)"
    )


def rekey_state_dict(state: Mapping[str, Any], prefix: str = "",
                     convert: Callable[[Any], Any] | None = None) -> OrderedDict[str, Any]:
    """A copy of `state` with `prefix` dropped from every key, keeping its `_metadata`.

    `nn.Module.state_dict()` records each module's `_version` in `state._metadata` (keyed by
    module path); modules such as torchvision's MNASNet, and BatchNorm, read it back in
    `_load_from_state_dict`. A plain `dict(...)` copy drops it, so the modules see version None.
    `convert` maps each value (e.g. to a detached CPU tensor).
    """
    out: OrderedDict[str, Any] = OrderedDict(
        (k[len(prefix):] if prefix and k.startswith(prefix) else k, convert(v) if convert else v)
        for k, v in state.items())
    meta = getattr(state, "_metadata", None)
    if meta is not None:
        stem = prefix.rstrip(".")
        kept: OrderedDict[str, Any] = OrderedDict()
        for key, value in meta.items():
            if not prefix:
                kept[key] = value
            elif key == stem:  # the wrapped module itself becomes the root
                kept[""] = value
            elif key.startswith(prefix):
                kept[key[len(prefix):]] = value
            # else: the wrapper's own entry (e.g. DataParallel's ""); no module of ours has it
        out._metadata = kept  # type: ignore[attr-defined]
    return out


def load_weights(model: nn.Module, state: Mapping[str, Any], source: str,
                 arch: str | None = None) -> None:
    """Check that `state` fits `model`, then load it (missing `num_batches_tracked` allowed).

    Raises:
        ModelLoadError: the weights do not fit, or a module's own loading code rejected them
            (one line with the module's message).
    """
    check_state_dict(model, state, source, arch)
    try:
        model.load_state_dict(state, strict=False)  # exact fit checked above
    except Exception as e:  # noqa: BLE001 - a module's _load_from_state_dict: one user error
        versions = "" if getattr(state, "_metadata", None) is not None else (
            "; the file has no module versions (_metadata): save it with "
            "torch.save(model.state_dict(), path), not a plain dict copy")
        target = f"--arch {arch}" if arch else type(model).__name__
        raise ModelLoadError(f"{source}: loading the weights into {target} failed "
                             f"({first_line(e)}){versions}") from None
