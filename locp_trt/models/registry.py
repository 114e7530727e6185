"""Model registry: `@register_model` factories, looked up by name (`get_model("resnet56")`).

Zoo models are registered when `locp_trt.models` is imported; torchvision's are registered lazily,
the first time the registry is queried, and only when `import torchvision` works (never with
pretrained weights: nothing is downloaded).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidConfigError

__all__ = ["ModelSpec", "register_model", "get_model", "model_spec", "list_models",
           "torchvision_problem", "torchvision_import_hint"]


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model expects and produces."""

    name: str
    input_shape: tuple[int, int, int]  # (C, H, W) of one sample
    num_classes: int  # default number of outputs
    description: str = ""
    source: Literal["zoo", "torchvision"] = "zoo"


_FACTORIES: dict[str, Callable[..., Any]] = {}
_SPECS: dict[str, ModelSpec] = {}
_TORCHVISION_TRIED = False
_TORCHVISION_PROBLEM: str | None = None  # why an installed torchvision did not import
#: torchvision models we register when torchvision imports (name -> description).
TORCHVISION_MODELS = {
    "resnet18": "ResNet-18 (torchvision, ImageNet-sized, no pretrained weights)",
    "resnet50": "ResNet-50 (torchvision, ImageNet-sized, no pretrained weights)",
    "mobilenet_v2": "MobileNetV2 (torchvision, ImageNet-sized, no pretrained weights)",
    "mobilenet_v3_small": "MobileNetV3-Small (torchvision, ImageNet-sized, no pretrained weights)",
}


def register_model(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes_default: int,
    *,
    description: str | None = None,
    source: Literal["zoo", "torchvision"] = "zoo",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering `factory(num_classes: int, in_channels: int) -> nn.Module` under `name`.

    Args:
        name: lookup name, lower case (e.g. "resnet56").
        input_shape: (C, H, W) the model was designed for.
        num_classes_default: outputs when `get_model` is not given `num_classes`.
        description: one line for `python -m locp_trt zoo`; default: the factory's first doc line.
        source: "zoo" for locp_trt's own models, "torchvision" for wrapped torchvision models.
    """

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _FACTORIES:
            raise InvalidConfigError(f"model name {name!r} is registered twice")
        doc = description or ((factory.__doc__ or "").strip().splitlines() or [""])[0]
        _FACTORIES[name] = factory
        _SPECS[name] = ModelSpec(name, tuple(int(v) for v in input_shape), int(num_classes_default),
                                 doc, source)
        return factory

    return deco


def torchvision_import_hint(e: BaseException) -> str:
    """One line: torchvision is installed but `import torchvision` failed with `e`, and the fix.

    The usual cause is a wheel built for another torch (the package index's torchvision needs the
    CUDA build of torch); torchvision 0.N pairs with torch 2.(N-15).
    """
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from ..errors import first_line

    try:
        tv = f"torchvision {version('torchvision')}"
    except PackageNotFoundError:
        tv = "torchvision"
    base = torch.__version__.split("+")[0].split(".")
    pin = f"torchvision==0.{int(base[1]) + 15}.*" if base[0] == "2" and base[1].isdigit() else "torchvision"
    index = " --index-url https://download.pytorch.org/whl/cpu" if "+cpu" in torch.__version__ else ""
    return (f"{tv} is installed but does not import with torch {torch.__version__} "
            f"({first_line(e, 120)}); install the build made for this torch (pip install "
            f"'{pin}'{index}) or uninstall torchvision")


def torchvision_problem() -> str | None:
    """Why torchvision's models are not registered although it is installed; None otherwise."""
    _register_torchvision()
    return _TORCHVISION_PROBLEM


def _register_torchvision() -> None:
    """Register torchvision models once, if torchvision imports (else remember why not)."""
    global _TORCHVISION_TRIED, _TORCHVISION_PROBLEM
    if _TORCHVISION_TRIED:
        return
    _TORCHVISION_TRIED = True
    try:
        import torchvision.models as tvm
    except ModuleNotFoundError as e:
        if e.name != "torchvision":  # installed, but something it needs is missing
            _TORCHVISION_PROBLEM = torchvision_import_hint(e)
        return
    except Exception as e:  # noqa: BLE001 - a broken install (e.g. built for CUDA torch): say why
        _TORCHVISION_PROBLEM = torchvision_import_hint(e)
        return

    def make(tv_name: str) -> Callable[..., Any]:
        def factory(num_classes: int = 1000, in_channels: int = 3) -> Any:
            model = getattr(tvm, tv_name)(weights=None, num_classes=num_classes)
            if in_channels != 3:
                _replace_first_conv(model, in_channels)
            return model

        return factory

    for tv_name, desc in TORCHVISION_MODELS.items():
        if tv_name not in _FACTORIES:
            register_model(tv_name, (3, 224, 224), 1000, description=desc,
                           source="torchvision")(make(tv_name))


def _replace_first_conv(model: Any, in_channels: int) -> None:
    """Swap the first Conv2d of `model` for one taking `in_channels` inputs (same other settings)."""
    import torch.nn as nn

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            new = nn.Conv2d(in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                            m.dilation, 1, m.bias is not None)
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(parent, name.rpartition(".")[2], new)
            return


def _unknown(name: str) -> InvalidConfigError:
    names = sorted(_FACTORIES)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    extra = ""
    if name in TORCHVISION_MODELS:
        problem = torchvision_problem()
        extra = (f" It is a torchvision model, but {problem}." if problem else
                 " It is a torchvision model: install torchvision (pip install 'locp_trt[vision]').")
    return InvalidConfigError(
        f"unknown model {name!r}.{hint}{extra} Valid names: {', '.join(names)}"
    )


def model_spec(name: str) -> ModelSpec:
    """The `ModelSpec` registered under `name`; `InvalidConfigError` listing close names if none."""
    _register_torchvision()
    try:
        return _SPECS[name]
    except KeyError:
        raise _unknown(name) from None


def get_model(name: str, num_classes: int | None = None, in_channels: int | None = None) -> Any:
    """A freshly initialised model (random weights, eval mode) of the registered architecture.

    Args:
        name: registered name, e.g. "resnet56" (see `list_models`).
        num_classes: outputs of the classifier; default: the spec's.
        in_channels: input image channels (1 for MNIST); default: the spec's.
    """
    spec = model_spec(name)
    n = spec.num_classes if num_classes is None else int(num_classes)
    c = spec.input_shape[0] if in_channels is None else int(in_channels)
    if n < 1 or c < 1:
        raise InvalidConfigError(f"num_classes and in_channels must be >= 1, got {n} and {c}")
    model = _FACTORIES[name](num_classes=n, in_channels=c)
    return model.eval()


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching the shell-style `pattern`, sorted (zoo first, then torchvision)."""
    _register_torchvision()
    names = [n for n in _SPECS if fnmatch.fnmatch(n, pattern)]
    return sorted(names, key=lambda n: (_SPECS[n].source != "zoo", n))
