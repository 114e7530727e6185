"""The TensorRT runtime only touches names that exist in every TensorRT it claims to support.

The name lists in tests/data/trt_api/ are extracted from the real TensorRT Python bindings wheels
(8.6.1, 10.3, 10.13, 11.4) by scripts/trt_api_names.py. TensorRT itself is never imported here:
this is a static check of locp_trt/latency/runtimes/tensorrt_rt.py with `ast`.

Presence: a name counts as present in a version when it is listed or is the tail of a listed name
(the linker stores "Logger" inside "ILogger"); it counts as absent only when it is not listed at
all (so "absent" facts are checked on exact names).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from locp_trt.latency.runtimes import tensorrt_rt

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "trt_api"
MODULE = ROOT / "locp_trt" / "latency" / "runtimes" / "tensorrt_rt.py"
GATES = {"_has", "getattr", "hasattr"}
# Attribute chains starting at these names are Python / torch / onnx / locp_trt objects.
PY_ROOTS = frozenset({"Precision", "torch", "os", "re", "onnx", "tempfile", "logging", "timing", "_log"})

# Attribute names in tensorrt_rt.py that belong to Python, torch, onnx or the module itself, not
# to TensorRT. A new TensorRT name goes into tensorrt_rt.TRT_NAMES_USED instead.
PY_ATTRS = frozenset({
    # stdlib
    "__init__", "__name__", "append", "clear", "group", "home", "is_file", "join", "mkdir",
    "parent", "read_bytes", "strip", "value", "write_bytes", "time_onnx",
    # the module's own objects (options, runner, runtime)
    "bench", "buffers", "capture", "close", "context", "runtime", "_runner", "device", "device_index", "dla_core", "engine",
    "errors", "graph", "graph_replays", "gpu_fallback", "last_extra", "launch", "optimization_level",
    "options", "sampler", "stream", "timing_cache_path", "timing_iterations", "torch",
    "use_timing_cache", "workspace_mib",
    # torch objects reached through locals
    "cuda_stream", "data_ptr", "elapsed_time", "is_floating_point", "record", "replay",
    "synchronize",
    # onnx protobuf fields
    "data_type", "elem_type", "initializer", "input", "tensor_type", "type",
})


def _load_lists() -> dict[str, set[str]]:
    lists = {}
    for f in sorted(DATA.glob("*.txt")):
        lines = f.read_text(encoding="utf-8").splitlines()
        lists[f.stem] = {ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")}
    return lists


LISTS = _load_lists()


def _major(version: str) -> int:
    return int(version.split(".")[0])


def present(name: str, names: set[str]) -> bool:
    """Listed, or the tail of a listed string (tail-merged by the linker)."""
    return name in names or any(n.endswith(name) for n in names)


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _gate_names(test: ast.AST) -> set[str]:
    """String names checked by `_has(obj, "NAME")` / `hasattr(...)` calls inside an if-test."""
    out = set()
    for n in ast.walk(test):
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in GATES
                and len(n.args) >= 2 and isinstance(n.args[1], ast.Constant)):
            out.add(str(n.args[1].value))
    return out


def _is_gated(node: ast.AST, name: str, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether `node` only runs when an enclosing `if`/conditional expression checked `name`."""
    child, cur = node, parents.get(node)
    while cur is not None:
        if isinstance(cur, (ast.If, ast.IfExp)):
            in_body = child in cur.body if isinstance(cur, ast.If) else child is cur.body
            if in_body and name in _gate_names(cur.test):
                return True
        if isinstance(cur, ast.BoolOp) and isinstance(cur.op, ast.And):
            before = cur.values[: cur.values.index(child)] if child in cur.values else []
            if any(name in _gate_names(v) for v in before):
                return True
        child, cur = cur, parents.get(cur)
    return False


def analyse(source: str) -> dict[str, list[str]]:
    """Problems of a tensorrt_rt-like source, by kind (empty lists: clean)."""
    tree = ast.parse(source)
    parents = _parents(tree)
    used, versioned = tensorrt_rt.TRT_NAMES_USED, tensorrt_rt.VERSIONED_NAMES
    problems: dict[str, list[str]] = {"unknown": [], "ungated": [], "trt_chain": []}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            root = node
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in PY_ROOTS:
                continue
            if node.attr not in used and node.attr not in PY_ATTRS:
                problems["unknown"].append(f"line {node.lineno}: .{node.attr}")
            if node.attr in versioned and not _is_gated(node, node.attr, parents):
                problems["ungated"].append(f"line {node.lineno}: .{node.attr}")
            # every link of a `trt.X.Y` chain is a TensorRT name (Python's dunders aside)
            dunder = node.attr.startswith("__") and node.attr.endswith("__")
            if isinstance(root, ast.Name) and root.id == "trt" and node.attr not in used and not dunder:
                problems["trt_chain"].append(f"line {node.lineno}: trt...{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in GATES
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
            if node.args[1].value not in used:
                problems["unknown"].append(f"line {node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return problems


# ---- the name lists themselves --------------------------------------------------------------
def test_lists_cover_the_supported_majors():
    assert {_major(v) for v in LISTS} >= {8, 10, 11}, sorted(LISTS)
    assert (tensorrt_rt.MIN_VERSION[0], tensorrt_rt.MIN_VERSION[1]) <= min(
        tuple(int(p) for p in v.split(".")[:2]) for v in LISTS
    )
    for v, names in LISTS.items():
        assert 1000 < len(names) < 20000, (v, len(names))
        for must in ("execute_async_v3", "build_serialized_network", "set_tensor_address",
                     "set_memory_pool_limit", "create_timing_cache", "builder_optimization_level"):
            assert must in names, (v, must)


@pytest.mark.parametrize(
    "name, where",
    [
        # rows of the table in shared TENSORRT.md, checked against the extracted lists
        ("execute_async_v2", {8}), ("num_bindings", {8}), ("build_engine", {8}),
        ("max_workspace_size", {8}), ("STRONGLY_TYPED", {10, 11}), ("EXPLICIT_BATCH", {8, 10}),
        ("FP16", {8, 10}), ("TF32", {8, 10, 11}), ("GPU_FALLBACK", {8, 10, 11}),
        ("execute_async_v3", {8, 10, 11}), ("DLA_core", {8, 10, 11}),
    ],
)
def test_lists_agree_with_tensorrt_md(name, where):
    for version, names in LISTS.items():
        assert (name in names) == (_major(version) in where), (name, version)


def test_versioned_names_table_matches_lists():
    for name, (lo, hi) in tensorrt_rt.VERSIONED_NAMES.items():
        for version, names in LISTS.items():
            inside = lo <= _major(version) <= (hi if hi is not None else 99)
            if inside:
                assert present(name, names), f"{name} documented for {lo}..{hi} but missing in {version}"
            else:
                assert name not in names, f"{name} documented for {lo}..{hi} but listed in {version}"
        # a restriction that restricts nothing is a mistake in the table
        assert not all(name in names for names in LISTS.values()), f"{name} exists everywhere"


# ---- the runtime module against the lists -------------------------------------------------------
def test_every_trt_name_used_exists_where_its_code_path_runs():
    missing = []
    for name in sorted(tensorrt_rt.TRT_NAMES_USED):
        lo, hi = tensorrt_rt.VERSIONED_NAMES.get(name, (0, None))
        for version, names in LISTS.items():
            if lo <= _major(version) <= (hi if hi is not None else 99) and not present(name, names):
                missing.append(f"{name} (TensorRT {version})")
    assert not missing, ("TensorRT names used by tensorrt_rt.py but absent from a supported "
                         f"version; gate them and add them to VERSIONED_NAMES: {missing}")


def test_module_touches_only_declared_and_gated_names():
    problems = analyse(MODULE.read_text(encoding="utf-8"))
    assert not problems["unknown"], (
        "attribute names neither in tensorrt_rt.TRT_NAMES_USED nor in this test's PY_ATTRS: "
        f"{problems['unknown']}")
    assert not problems["ungated"], f"version-dependent names used without a _has() gate: {problems['ungated']}"
    assert not problems["trt_chain"], problems["trt_chain"]


def test_trt_names_used_is_not_stale():
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    stale = tensorrt_rt.TRT_NAMES_USED - attrs - strings
    assert not stale, f"TRT_NAMES_USED lists names the module never touches: {sorted(stale)}"


def test_python_allowlist_hides_no_version_dependent_trt_name():
    everywhere = set.intersection(*LISTS.values())
    somewhere = set.union(*LISTS.values())
    version_dependent = {n for n in somewhere - everywhere
                         if not all(present(n, names) for names in LISTS.values())}
    hidden = PY_ATTRS & version_dependent
    assert not hidden, f"PY_ATTRS must not contain version-dependent TensorRT names: {sorted(hidden)}"


# ---- the checker catches what it is for ------------------------------------------------------
LEGACY_UNGATED = """
def legacy(context, stream):
    context.execute_async_v2([], stream)
"""

FP16_UNGATED = """
def fp16(config, trt):
    config.set_flag(trt.BuilderFlag.FP16)
"""

FP16_GATED = """
def fp16(config, trt):
    if _has(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)
    flag = trt.BuilderFlag.FP16 if _has(trt.BuilderFlag, "FP16") else None
    return flag
"""

FP16_WRONG_BRANCH = """
def fp16(config, trt):
    if _has(trt.BuilderFlag, "FP16"):
        pass
    else:
        config.set_flag(trt.BuilderFlag.FP16)
"""


def test_checker_flags_an_ungated_legacy_call():
    source = MODULE.read_text(encoding="utf-8") + LEGACY_UNGATED
    problems = analyse(source)
    assert any("execute_async_v2" in p for p in problems["unknown"]), problems
    # and declaring it is not enough: it is missing from 10.x and 11.x
    assert all(not present("execute_async_v2", LISTS[v]) for v in LISTS if _major(v) >= 10)


def test_checker_flags_fp16_flag_outside_a_gate():
    assert analyse(FP16_UNGATED)["ungated"]
    assert analyse(FP16_WRONG_BRANCH)["ungated"]
    assert not analyse(FP16_GATED)["ungated"]


def test_module_declares_its_tables_consistently():
    assert set(tensorrt_rt.VERSIONED_NAMES) <= tensorrt_rt.TRT_NAMES_USED
    for name, (lo, hi) in tensorrt_rt.VERSIONED_NAMES.items():
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
        assert lo >= 8 and (hi is None or hi >= lo), (name, lo, hi)
