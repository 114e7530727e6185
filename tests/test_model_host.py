"""Whole models built and timed in a child process (`latency.runtimes.model_host`), on ORT CPU."""

from __future__ import annotations

import gc
import pickle
from dataclasses import replace

import pytest

pytest.importorskip("onnxruntime")

from locp_trt.errors import InvalidConfigError  # noqa: E402
from locp_trt.latency import LayerConfig, Op, Precision  # noqa: E402
from locp_trt.latency.compare import CompareRule, compare_builds  # noqa: E402
from locp_trt.latency.onnx_graph import build_layer_onnx  # noqa: E402
from locp_trt.latency.runtimes.onnxrt import OrtCpuRuntime, OrtCudaRuntime  # noqa: E402


def _conv(c: int) -> tuple[bytes, tuple[int, ...]]:
    cfg = LayerConfig(Op.CONV, c, c, kernel=3, padding=1, input_hw=(16, 16))
    return build_layer_onnx(cfg), cfg.input_shape


def test_builds_live_and_are_timed_in_the_child_process():
    with OrtCpuRuntime(isolate=True) as rt:
        onnx_bytes, shape = _conv(16)
        make = rt.onnx_builder(onnx_bytes, shape, Precision.FP32)
        first, second = make(), make()
        assert rt._host is not None and rt._host.builds == 2
        assert rt._host._proc.pid is not None and rt._host._proc.poll() is None
        samples = first(1, 5)
        assert len(samples) == 5 and all(v > 0 for v in samples)
        assert len(second(0, 3)) == 3
        del first
        gc.collect()
        assert len(second(0, 2)) == 2  # a released build does not disturb the live one
        proc = rt._host._proc
    assert proc.poll() is not None  # closing the runtime stops the child


def test_a_hosted_comparison_tells_a_big_layer_from_a_small_one():
    with OrtCpuRuntime(isolate=True) as rt:
        big = rt.onnx_builder(*_conv(128), Precision.FP32)
        small = rt.onnx_builder(*_conv(8), Precision.FP32)
        # 256x fewer MACs: the speedup is far above 2 on any machine, busy or not
        cmp = compare_builds(big, small, CompareRule(min_rounds=3, max_rounds=6, iters=10), builds=2)
        assert len(cmp.builds) >= 2 and cmp.speedup > 2


def test_errors_in_the_child_come_back_as_the_same_error():
    with OrtCpuRuntime(isolate=True) as rt:
        make = rt.onnx_builder(b"not an onnx model", (1, 3, 8, 8), Precision.FP32)
        with pytest.raises(InvalidConfigError, match="could not load the ONNX model"):
            make()
        assert len(rt.onnx_builder(*_conv(8), Precision.FP32)()(0, 2)) == 2  # still serving


def test_isolation_is_a_recorded_setting_and_the_runtime_pickles_without_its_host():
    rt = OrtCpuRuntime(isolate=True)
    rt.onnx_builder(*_conv(8), Precision.FP32)()
    child_copy = pickle.loads(pickle.dumps(rt))
    assert child_copy._host is None and child_copy.isolate is False  # the child never nests
    settings = rt.settings()
    assert settings["whole_models_in"] == "a child process"
    assert OrtCpuRuntime.options_from_settings(settings) == {"isolate": True}
    assert OrtCudaRuntime.options_from_settings(settings)["isolate"] is True
    assert OrtCpuRuntime(isolate=False).settings()["whole_models_in"] == "the measuring process"
    assert OrtCudaRuntime.isolate_default and OrtCpuRuntime.isolate_default
    rt.close()


def test_a_pooled_comparison_goes_round_fresh_processes_pair_by_pair():
    with OrtCpuRuntime(isolate=True) as rt:
        big = rt.onnx_builder(*_conv(64), Precision.FP32)
        small = rt.onnx_builder(*_conv(8), Precision.FP32)
        big()  # the run's own host, as the probes' reference
        main = rt._host
        rule = CompareRule(min_rounds=2, max_rounds=2, build_rounds=2, iters=3, builds=4)
        with rt.spread_processes(2):
            pool = list(rt._pool)
            cmp = compare_builds(big, small, rule, builds=4)
            assert all(h._proc.poll() is None for h in pool)
        assert len(cmp.builds) >= 4 and cmp.speedup > 1
        # each pair (A then B) in one process, the pairs alternating between the two
        assert [h.builds for h in pool] == [2 * ((len(cmp.builds) + 2 - i) // 2) for i in (1, 2)]
        assert main.builds == 1 and rt._host is main and rt._pool is None
        assert all(h._proc is None for h in pool)  # the pool's processes are gone with the verdict
        assert len(big()(0, 2)) == 2  # the run's host still serves
    with OrtCpuRuntime(isolate=False) as rt, rt.spread_processes(3):
        assert rt._pool is None  # nothing to spread: whole models are timed in this process


def test_a_build_used_after_its_runtime_closed_says_so():
    from locp_trt.errors import LocpError

    with OrtCpuRuntime(isolate=True) as rt:
        sample = rt.onnx_builder(*_conv(8), Precision.FP32)()
    with pytest.raises(LocpError, match="closed with its runtime"):
        sample(0, 2)


def test_ort_cpu_verdicts_pool_more_builds_than_the_default_rule():
    rule = CompareRule()
    cpu = OrtCpuRuntime(isolate=False).pooled_rule(rule)
    assert (cpu.builds, cpu.max_builds, cpu.probe_builds) == (12, 24, 6)
    assert cpu.build_rounds == rule.build_rounds and cpu.processes == rule.processes
    # never fewer than asked: a rule that already pools more keeps its own figures
    big = CompareRule(builds=20, max_builds=30, probe_builds=8)
    assert OrtCpuRuntime(isolate=False).pooled_rule(big) == replace(big, occasion_sd=OrtCpuRuntime.OCCASION_SD,
                                                                         quiet=OrtCpuRuntime.QUIET_SLACK)
    with pytest.raises(InvalidConfigError, match="processes"):
        CompareRule(processes=0)
