"""One parameter count everywhere: `graph.count_params` (BatchNorm affine weights and biases
included, running statistics not) in the optimize report (graph.params), `bench` and `zoo`."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from locp_trt.cli import main
from locp_trt.deploy.bench import bench_file
from locp_trt.latency.timing import BenchConfig
from locp_trt.models import get_model, model_spec
from locp_trt.prune.graph import build_graph, count_params


def test_count_params_includes_batchnorm_affine_not_buffers():
    m = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    assert count_params(m) == 4 * 3 * 9 + 2 * 4  # running mean/var are buffers


@pytest.mark.parametrize("name", ["resnet20", "lenet5"])
def test_report_bench_and_zoo_agree(tmp_path, capsys, name):
    torch.manual_seed(0)
    model = get_model(name)
    expected = count_params(model)
    assert build_graph(model, model_spec(name).input_shape).params() == expected  # the report's

    assert main(["zoo", name]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(name + " "))
    assert f"{expected:,}" in row.split()

    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    fast = BenchConfig(warmup=1, iters=3, max_rel_spread=10.0)
    assert bench_file(path, runtime="onnxruntime", arch=name, bench_cfg=fast).params == expected
