"""Config lists (`configs`) and lookup tables (`profile`): coverage, files, the torch-free path,
and the acceptance check that a table measured once gives the same plans as measuring directly."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from models import TINY_MODELS  # tests/models.py
from searches import greedy

from locp_trt.cli import main
from locp_trt.errors import InvalidConfigError, StoreError
from locp_trt.latency.config import LayerConfig, Op, Precision
from locp_trt.latency.meter import LatencyMeter, LatencyTable
from locp_trt.latency.runtimes import get_runtime
from locp_trt.latency.store import TABLE_SCHEMA, LatencyStore
from locp_trt.latency.timing import BenchConfig
from locp_trt.method.benefit import predicted_latency_us
from locp_trt.method.candidates import discover_candidates, group_latency_fn
from locp_trt.method.configs_list import (
    CONFIGS_SCHEMA,
    ConfigList,
    Coverage,
    configs_for_model,
    grid_size,
    group_floors,
)
from locp_trt.prune.graph import build_graph
from locp_trt.prune.importance import Importance, group_importance

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
FAST = ["--iters", "25", "--warmup", "3", "--max-spread", "10"]  # enough samples that a tiny layer's stairs beat noise
COVERED = ["residual", "depthwise", "concat", "split", "se", "grouped", "flatten", "unused", "resnext"]


def _graph(name: str, **kw):
    factory, shape = TINY_MODELS[name]
    torch.manual_seed(0)
    return build_graph(factory(), shape, **kw)


# ---- what the lists hold -------------------------------------------------------------------------
@pytest.mark.parametrize("name", COVERED)
def test_grid_holds_every_layer_config_of_any_plan(name):
    graph = _graph(name)
    grid = configs_for_model(graph, coverage=Coverage.GRID)
    step = configs_for_model(graph, coverage=Coverage.STEP)
    assert grid.coverage is Coverage.GRID and step.coverage is Coverage.STEP
    held = set(grid.configs)
    assert len(held) == len(grid) == grid.grid_configs == grid_size(graph)  # distinct, counted right
    assert set(step.configs) <= held and len(step) == grid.step_configs
    floors = group_floors(graph, 0.1)
    rng = random.Random(0)
    prunable = [g for g in graph.groups.values() if g.prunable]
    for _ in range(300):  # random plans within the floors: any step of any run
        widths = {g.id: rng.choice(range(floors[g.id], g.width + 1, g.blocks)) for g in prunable}
        missing = set(graph.layer_configs(widths).values()) - held
        assert not missing, (widths, missing)
    # the corners too: every group at its floor, and all at full width
    assert set(graph.layer_configs({g.id: floors[g.id] for g in prunable}).values()) <= held
    assert set(graph.layer_configs({}).values()) <= held


def test_step_list_is_exactly_what_one_search_step_asks_for():
    graph = _graph("residual")
    widths = {"a1": 4}  # a pruned state: the step list is taken around it
    asked: set[LayerConfig] = set()

    def record(cfg: LayerConfig) -> float:
        asked.add(cfg)
        return 1.0

    floors = group_floors(graph, 0.1, widths)
    for g in graph.prunable():
        fn = group_latency_fn(graph, g.id, widths, record)
        for w in range(floors[g.id], widths.get(g.id, g.width) + 1):
            fn(w)
    predicted_latency_us(graph, {**graph.widths(), **widths}, record)
    step = configs_for_model(graph, coverage="step", widths=widths)
    assert set(step.configs) == asked
    assert step.meta["widths"] == widths
    # ranges end at the current width: layer a1 (8 -> 6 originally, a1 now 4) is never 8 -> 6
    a1_full = graph.layers["a1"].config
    assert a1_full not in step.configs
    assert a1_full in configs_for_model(graph, coverage="step").configs


def test_depthwise_is_one_dimension_and_flatten_scales_by_spatial_size():
    dw = _graph("depthwise")
    cfgs = configs_for_model(dw, coverage="grid").configs
    dws = [c for c in cfgs if c.groups > 1]
    assert dws and all(c.is_depthwise and c.in_channels == c.out_channels == c.groups for c in dws)
    floor = group_floors(dw, 0.1)["expand"]
    assert sorted(c.out_channels for c in dws) == list(range(floor, 13))

    flat = _graph("flatten")  # conv (4 channels) -> pool -> flatten -> fc1 over 4 x 4 x 4
    fc1 = [c for c in configs_for_model(flat, coverage="grid").configs
           if c.op is Op.LINEAR and c.out_channels in range(1, 6) and c.in_channels % 16 == 0]
    assert sorted({c.in_channels for c in fc1}) == [16, 32, 48, 64]  # width x 16, widths 1..4


def test_auto_takes_the_grid_up_to_max_configs_else_the_step_list():
    graph = _graph("residual")
    n = grid_size(graph)
    assert configs_for_model(graph, max_configs=n).coverage is Coverage.GRID
    small = configs_for_model(graph, max_configs=n - 1)
    assert small.coverage is Coverage.STEP and small.grid_configs == n and len(small) < n
    assert "step" in small.describe() and str(len(small)) in small.describe()
    with pytest.raises(InvalidConfigError, match="max_configs"):
        configs_for_model(graph, max_configs=0)


def test_min_width_ratio_sets_the_floors():
    graph = _graph("residual")
    half = configs_for_model(graph, coverage="grid", min_width_ratio=0.5)
    assert min(c.out_channels for c in half.configs if c.op is Op.CONV) == 3  # ceil(0.5 x 5) for b1
    assert len(half) < grid_size(graph)
    with pytest.raises(InvalidConfigError, match="min_width_ratio"):
        configs_for_model(graph, min_width_ratio=0.0)


# ---- the file --------------------------------------------------------------------------------------
def test_config_list_round_trip_and_errors(tmp_path):
    graph = _graph("concat", batch=2, precision="fp16")
    cl = configs_for_model(graph, model="concat test")
    path = cl.save(tmp_path / "sub" / "c.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == CONFIGS_SCHEMA and doc["batch"] == 2 and doc["precision"] == "fp16"
    back = ConfigList.load(path)
    assert back == cl and back.configs == cl.configs and back.model == "concat test"
    assert all(c.batch == 2 and c.precision is Precision.FP16 for c in back.configs)

    (tmp_path / "other.json").write_text(json.dumps({"schema": TABLE_SCHEMA}))
    with pytest.raises(InvalidConfigError, match="not a config list.*latency_table"):
        ConfigList.load(tmp_path / "other.json")
    with pytest.raises(InvalidConfigError, match="not found"):
        ConfigList.load(tmp_path / "missing.json")
    doc["configs"][1]["kernal"] = 3
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(InvalidConfigError, match="config 1 is malformed"):
        ConfigList.load(tmp_path / "bad.json")
    one = LayerConfig(Op.LINEAR, 4, 4)
    with pytest.raises(InvalidConfigError, match="one batch and precision"):
        ConfigList("m", 1, "fp16", (one,))
    with pytest.raises(InvalidConfigError, match="not auto"):
        ConfigList("m", 1, "fp32", (one,), coverage=Coverage.AUTO)


# ---- commands ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def residual_file(tmp_path_factory):
    """The tiny residual model as a state_dict file (loaded with --arch models:Residual)."""
    d = tmp_path_factory.mktemp("residual")
    factory, _ = TINY_MODELS["residual"]
    torch.manual_seed(0)
    model = factory()
    with torch.no_grad():  # non-trivial BN so importance and pruning are not degenerate
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = d / "residual.pt"
    torch.save(model.state_dict(), path)
    return path


MODEL_ARGS = ["--arch", "models:Residual", "--input-shape", "3,24,24"]


def _stepped_us(cfg: LayerConfig) -> float:
    """A latency of the config alone: its FLOPs with the widths rounded up to even (a staircase)."""
    up = cfg.with_channels(-(-cfg.in_channels // 2) * 2, -(-cfg.out_channels // 2) * 2)
    return float(up.flops) / 1e3 + 1.0


@pytest.fixture(scope="module")
def profiled(residual_file, tmp_path_factory):
    """configs -> profile on ORT CPU: (config list, table path, store path)."""
    d = tmp_path_factory.mktemp("profiled")
    configs, table, store = d / "configs.json", d / "table.json", d / "store.sqlite"
    assert main(["configs", str(residual_file), *MODEL_ARGS, "--device", "cpu", "--out", str(configs)]) == 0
    assert main(["profile", "--configs", str(configs), "--device", "cpu", "--runtime", "onnxruntime",
                 "--store", str(store), "--out", str(table), "--no-progress", *FAST]) == 0
    return ConfigList.load(configs), table, store


def test_configs_and_profile_commands(profiled, capsys):
    configs, table, store = profiled
    assert configs.coverage is Coverage.GRID and configs.precision is Precision.FP32 and configs.batch == 1
    assert configs.grid_configs == len(configs) and "Residual" in configs.meta["arch"]
    doc = json.loads(table.read_text())
    assert doc["schema"] == TABLE_SCHEMA and doc["fingerprint"]["runtime"] == "onnxruntime"
    assert [LayerConfig.from_dict(e["config"]) for e in doc["entries"]] == list(configs.configs)
    assert all(e["median_us"] > 0 and e["p10_us"] <= e["median_us"] <= e["p90_us"] for e in doc["entries"])
    loaded = LatencyTable.load(table)
    assert len(loaded) == len(configs) and all(c in loaded for c in configs.configs)
    # two passes by default, and the table says how far they lay apart
    assert doc["passes"]["asked"] == 2 and doc["passes"]["configs"] == len(configs)
    assert {"median_ratio", "share_over_20pct"} <= set(doc["passes"])

    # a second run is resumable for free: everything is a store hit, and the table is the same
    again = table.with_name("again.json")
    capsys.readouterr()
    assert main(["profile", "--configs", str(table.with_name("configs.json")), "--device", "cpu",
                 "--runtime", "onnxruntime", "--store", str(store), "--out", str(again),
                 "--no-progress", *FAST]) == 0
    out = capsys.readouterr().out
    assert f"measured 0, from the store {len(configs)}" in out
    assert json.loads(again.read_text())["entries"] == doc["entries"]


def test_profile_from_model_file_and_usage_errors(residual_file, tmp_path, capsys):
    table = tmp_path / "t.json"
    assert main(["profile", str(residual_file), *MODEL_ARGS, "--device", "cpu", "--runtime", "onnxruntime",
                 "--coverage", "step", "--no-store", "--out", str(table), "--no-progress", *FAST]) == 0
    doc = json.loads(table.read_text())
    graph = build_graph(TINY_MODELS["residual"][0](), (3, 8, 8))
    assert len(doc["entries"]) == len(configs_for_model(graph, coverage="step"))
    assert doc["configs"]["coverage"] == "step"

    configs = tmp_path / "c.json"
    configs_for_model(graph).save(configs)
    capsys.readouterr()
    assert main(["profile", str(residual_file), "--configs", str(configs), "--out", str(table)]) == 1
    assert "exactly one" in capsys.readouterr().err
    assert main(["profile", "--configs", str(configs), "--precision", "fp16", "--runtime", "onnxruntime",
                 "--device", "cpu", "--out", str(table)]) == 1
    assert "differs from the config list's fp32" in capsys.readouterr().err
    fp16 = tmp_path / "c16.json"
    configs_for_model(build_graph(TINY_MODELS["residual"][0](), (3, 8, 8), precision="fp16")).save(fp16)
    assert main(["profile", "--configs", str(fp16), "--runtime", "onnxruntime", "--device", "cpu",
                 "--no-store", "--out", str(table)]) == 1
    assert "cannot time fp16" in capsys.readouterr().err
    assert main(["profile", "--configs", str(configs), "--passes", "0", "--out", str(table)]) == 1
    assert "--passes must be at least 1, got 0" in capsys.readouterr().err
    one = tmp_path / "one.json"
    assert main(["profile", str(residual_file), *MODEL_ARGS, "--device", "cpu", "--runtime", "onnxruntime",
                 "--coverage", "step", "--no-store", "--out", str(one), "--no-progress", "--passes", "1", *FAST]) == 0
    assert json.loads(one.read_text())["passes"] == {"asked": 1} and "passes over" not in capsys.readouterr().out


def test_profile_from_a_config_list_needs_no_torch(profiled, tmp_path):
    """The Jetson path: torch made unimportable, the whole CLI (parser included) must still work."""
    configs = profiled[1].with_name("configs.json")
    out = tmp_path / "t.json"
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
        "from locp_trt.cli import main\n"
        f"rc = main(['profile', '--configs', {str(configs)!r}, '--device', 'cpu', '--runtime', "
        f"'onnxruntime', '--no-store', '--out', {str(out)!r}, '--no-progress', '--iters', '3', "
        "'--warmup', '0', '--max-spread', '10'])\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert loaded == ['torch'] and sys.modules['torch'] is None, loaded\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(json.loads(out.read_text())["entries"]) == len(profiled[0])


# ---- acceptance: the table gives the same plans as measuring directly -------------------------------
def _two_step_plans(graph, model, latency_us) -> list[dict[str, int]]:
    """Two search steps: the second starts from the first's narrower widths (neighbours pruned)."""
    widths: dict[str, int] = {}
    scores = {g.id: group_importance(model, graph, g.id, Importance.L1) for g in graph.prunable()}
    plans = []
    for _ in range(2):  # each step asks for 80% of the current predicted latency
        now = predicted_latency_us(graph, {**graph.widths(), **widths}, latency_us)
        cands = discover_candidates(graph, widths, latency_us, min_width_ratio=0.1, progress=False)
        result = greedy(graph, widths, cands, scores, latency_us, 0.8 * now)
        widths = {g: w for g, w in result.widths.items() if w != graph.groups[g].width}
        plans.append(dict(result.widths))
    return plans


def test_table_gives_the_same_plans_as_measuring_directly(profiled, residual_file):
    configs, table, store_path = profiled
    from locp_trt.prune.loading import load_model

    model = load_model(residual_file, arch="models:Residual", input_shape=(3, 24, 24)).module
    graph = build_graph(model, (3, 24, 24))

    by_table = LatencyMeter(None, LatencyStore(None), table=LatencyTable.load(table), progress=False)
    plans_table = _two_step_plans(graph, model, by_table)

    store = LatencyStore(store_path)
    with get_runtime("onnxruntime", BenchConfig(iters=5, warmup=1)) as rt:
        direct = LatencyMeter(rt, store, progress=False)
        plans_direct = _two_step_plans(graph, model, direct)
    store.close()

    assert plans_table == plans_direct
    full = graph.widths()
    # step 1 pruned, so step 2 explored staircases with narrower neighbours (whether it then finds
    # a width worth cutting depends on the measured stairs)
    assert plans_table[0] != full
    assert direct.stats.measured == 0 and direct.stats.store_hits > 0  # the profile measured it all
    assert by_table.stats.table_hits > 0 and by_table.stats.measured == 0

    # a one-step table is honest about its limit: where the search asks for configs it lacks, it
    # says so; whether step 2 reaches past step 1's staircases depends on the measured stairs, so
    # the configs the full-table search asked decide which outcome is the right one
    asked: set = set()

    def recording(config):
        asked.add(config)
        return by_table(config)

    _two_step_plans(graph, model, recording)
    step_rows = {c: LatencyTable.load(table).get(c) for c in configs_for_model(graph, coverage="step").configs}
    step_table = LatencyTable(by_table.table.fingerprint, step_rows, source="step table")
    step_meter = LatencyMeter(None, LatencyStore(None), table=step_table)
    if asked - set(step_rows):
        with pytest.raises(StoreError, match="no latency for"):
            _two_step_plans(graph, model, step_meter)
    else:  # the step table held all the search asked: the same plans, nothing missing
        assert _two_step_plans(graph, model, step_meter) == plans_table


def test_step_list_covers_a_steps_staircases_not_its_search(profiled, residual_file, capsys):
    """What `configs --coverage step` says is true: the first step's staircase discovery finds
    every config in it, while the search that follows (several groups narrowed at once) asks for
    configs only the grid holds, so `optimize --latency-table` needs a grid table."""
    from locp_trt.prune.loading import load_model

    grid, table, _ = profiled
    model = load_model(residual_file, arch="models:Residual", input_shape=(3, 24, 24)).module
    graph = build_graph(model, (3, 24, 24))
    step = configs_for_model(graph, coverage="step")
    grid_configs = set(grid.configs)
    asked: set[LayerConfig] = set()

    def latency_us(cfg: LayerConfig) -> float:
        # A fixed staircase (FLOPs at widths rounded up to 2), not the live table: which configs
        # the search asks for must not depend on how noisy this machine's timings were.
        asked.add(cfg)
        assert cfg in grid_configs, f"{cfg} is not in the profiled grid"
        return _stepped_us(cfg)

    cands = discover_candidates(graph, {}, latency_us, min_width_ratio=0.1, progress=False)
    assert asked <= set(step.configs)  # the staircases of step 1: all in the step list
    scores = {g: group_importance(model, graph, g, Importance.L1) for g in cands}
    now = predicted_latency_us(graph, graph.widths(), latency_us)
    greedy(graph, {}, cands, scores, latency_us, 0.6 * now)
    beyond = asked - set(step.configs)
    assert beyond and beyond <= set(grid.configs)  # the search needs the grid

    text = step.describe()
    assert "sufficient for the first" not in text and "optimize --latency-table needs the grid" in text
    from locp_trt.cli.configs_cmd import print_counts

    print_counts(step)
    assert "cannot drive optimize --latency-table" in capsys.readouterr().out


def test_optimize_with_the_table_matches_measuring_directly(profiled, residual_file, tmp_path):
    """End to end: `optimize --latency-table` gives the plan the Optimizer finds reading the store
    that `profile` filled. Both read the same figures; what the figures are does not matter here,
    so the live-profiled ones (whose width floor read 0.97x-1.40x faster, with the machine's load)
    are replaced by a staircase of the config alone in a copy of the store, and the table is that
    store exported: the target is then reachable on any machine."""
    from locp_trt.latency.config import Precision as P
    from locp_trt.method.config import OptimizeConfig
    from locp_trt.method.loop import Optimizer
    from locp_trt.prune.loading import load_model

    configs, _, live_path = profiled
    store_path, table = tmp_path / "store.sqlite", tmp_path / "table.json"
    with LatencyStore(live_path) as live, LatencyStore(store_path) as fixed:
        for fp in live.fingerprints():
            for row in live.rows(fp):
                us = _stepped_us(row.config)
                fixed.put_values(row.config, fp, median_us=us, p10_us=us, p90_us=us, iqr_us=0.0, n=row.n)
        assert fixed.export_json(table) == len(configs)
    model = load_model(residual_file, arch="models:Residual", input_shape=(3, 24, 24)).module
    target = 1.3
    out = tmp_path / "run"
    assert main(["optimize", str(residual_file), *MODEL_ARGS, "--device", "cpu", "--latency-table", str(table),
                 "--speedup", str(target), "--steps", "2", "--extra-steps", "0", "--no-store", "--no-engine",
                 "--no-progress", "--out", str(out)]) == 0
    plan_cli = json.loads((out / "plan.json").read_text())["widths"]

    store = LatencyStore(store_path)
    with get_runtime("onnxruntime", BenchConfig(iters=5, warmup=1)) as rt:
        meter = LatencyMeter(rt, store, progress=False)
        cfg = OptimizeConfig(speedup=target, steps=2, extra_steps=0, precision=P.FP32, batch=1)
        result = Optimizer(model, (3, 24, 24), cfg, latency_us=meter, prepare_model=None,
                           out_dir=tmp_path / "direct", log=lambda _m: None, progress=False).run()
    store.close()
    assert plan_cli == result.plan.widths
    assert result.plan.widths != build_graph(model, (3, 24, 24)).widths()  # it did prune
    assert meter.stats.measured == 0  # every config came from the store `profile` filled


def test_optimize_choices_mirror_the_enums():
    """optimize's argument choices are literal (no torch at parser build); they must match the enums."""
    from locp_trt.cli.optimize_cmd import IMPORTANCE_CHOICES

    assert IMPORTANCE_CHOICES == tuple(m.value for m in Importance)
