"""Regenerate tests/data/trt_api/<version>.txt: the names each TensorRT Python binding exposes.

TensorRT itself cannot be installed here (TENSORRT.md), but PyPI serves the real Python bindings
wheels (~1 MB each). Their `tensorrt.so` holds every method, property, class and enum-member name
as a NUL-terminated C string (pybind11 registers them by name), so the printable strings of the
library that look like identifiers are a superset of the Python-visible API of that version.
tests/test_trt_api_surface.py checks the TensorRT runtime's attribute names against these lists.

Caveat for readers of the lists: the linker merges a string into the tail of a longer one
("Logger" is stored inside "ILogger"), so a name may exist only as the suffix of a listed one.
The surface test therefore counts a name as present when it is listed or is a suffix of a listed
name, and counts it as absent only when it is neither.

Usage (one command, needs pip access to PyPI):

    python scripts/trt_api_names.py [--out tests/data/trt_api]
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["WHEELS", "identifiers_in_library", "names_in_init", "main"]

# version file stem -> pip requirement specs to try in order (the first that downloads wins).
WHEELS: dict[str, tuple[str, ...]] = {
    "8.6.1": ("tensorrt-bindings==8.6.1",),
    "10.3.0": ("tensorrt-cu12-bindings==10.3.0",),
    "10.13.3.9": ("tensorrt-cu12-bindings==10.13.3.9", "tensorrt-cu13-bindings==10.13.3.9"),
    "11.4.0.106": ("tensorrt-cu12-bindings==11.4.0.106", "tensorrt-cu13-bindings==11.4.0.106"),
}
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_34_x86_64")
PYTHON = "3.11"

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,60}")
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]{3,}")


def identifiers_in_library(data: bytes) -> set[str]:
    """Printable strings of a shared library (like `strings -n 3`) that are whole identifiers.

    Itanium-mangled C++ symbols (`_Z...`) are dropped: they are never Python-visible names.
    """
    names = set()
    for m in _PRINTABLE_RUN.finditer(data):
        s = m.group().decode("ascii")
        if _IDENT.fullmatch(s) and not s.startswith("_Z"):
            names.add(s)
    return names


def names_in_init(source: str) -> set[str]:
    """Names the wheel's pure-Python `__init__.py` adds: defs, classes, assigned names and attrs."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    names.add(t.id)
                elif isinstance(t, ast.Attribute):
                    names.add(t.attr)
    return {n for n in names if _IDENT.fullmatch(n)}


def _download(specs: tuple[str, ...], dest: Path) -> Path:
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    errors = []
    for spec in specs:
        before = set(dest.glob("*.whl"))
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", PYTHON, "--implementation", "cp", "--abi", "cp" + PYTHON.replace(".", ""),
               *platform_args, "-d", str(dest), "--quiet", spec]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        new = sorted(set(dest.glob("*.whl")) - before)
        if proc.returncode == 0 and new:
            return new[0]
        errors.append(f"{spec}: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    raise SystemExit("could not download any of " + "; ".join(errors))


def names_in_wheel(wheel: Path) -> set[str]:
    """Identifier names of every tensorrt*.so in the wheel plus its package `__init__.py`."""
    names: set[str] = set()
    with zipfile.ZipFile(wheel) as zf:
        members = zf.namelist()
        libs = [m for m in members if Path(m).name.startswith("tensorrt") and ".so" in Path(m).name]
        if not libs:
            raise SystemExit(f"{wheel.name} has no tensorrt*.so (members: {members[:10]} ...)")
        for m in libs:
            names |= identifiers_in_library(zf.read(m))
        for m in members:
            if m.endswith("/__init__.py") and m.count("/") == 1:
                names |= names_in_init(zf.read(m).decode("utf-8", errors="replace"))
    return names


def main(argv: list[str] | None = None) -> int:
    """Download each wheel in `WHEELS`, extract its names, write `<out>/<version>.txt`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/data/trt_api")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trt_api_") as tmp:
        for version, specs in WHEELS.items():
            wheel = _download(specs, Path(tmp))
            names = sorted(names_in_wheel(wheel))
            target = args.out / f"{version}.txt"
            header = f"# identifier strings of {wheel.name} (scripts/trt_api_names.py)\n"
            target.write_text(header + "\n".join(names) + "\n", encoding="utf-8")
            print(f"{target}: {len(names)} names from {wheel.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
