"""A LayerNorm right before a conv/linear is timed with it (`LayerConfig.pre_norm`), and the reach
check tries the floor on aligned widths before refusing (issue 17: ConvNeXt-Tiny's floor ran at
0.83x under torch-CUDA fp16 because fp16 LayerNorm leaves its vectorized kernel at odd widths;
the same floor rounded up to multiples of 8 ran at 2.2x, benchmarks/results/gpu_h200_floor_probe/)."""

from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn as nn
from models import TINY_MODELS  # tests/models.py

from locp_trt.latency.config import LayerConfig, Op
from locp_trt.latency.onnx_graph import build_layer_onnx
from locp_trt.latency.runtimes.torch_rt import layer_module
from locp_trt.method.config import OptimizeConfig
from locp_trt.method.loop import ALIGN, Optimizer
from locp_trt.models import get_model
from locp_trt.prune.graph import build_graph


def test_layers_fed_by_a_layernorm_carry_it_and_no_other_does():
    factory, shape = TINY_MODELS["convnext"]
    torch.manual_seed(0)
    graph = build_graph(factory().eval(), shape)
    normed = {n for n, s in graph.layers.items() if s.config.pre_norm}
    # the stem's LayerNorm2d -> the block's depthwise conv; the block's LayerNorm -> its first
    # Linear; the downsample's LayerNorm2d -> its conv. The head's LayerNorm reaches its Linear
    # through a flatten (not timed with it), and the second Linear reads a GELU.
    assert normed == {"features.1.block.0", "features.1.block.3", "features.2.1", "features.3.block.3"}


class TwoReaders(nn.Module):
    """One LayerNorm read by two Linears: its time counts once, with the first reader."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.LayerNorm(8)
        self.q, self.k = nn.Linear(8, 8), nn.Linear(8, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.norm(self.conv(x).mean((2, 3)))
        return self.head(self.q(t) * self.k(t))


def test_a_layernorm_read_twice_is_timed_once():
    graph = build_graph(TwoReaders().eval(), (3, 8, 8))
    assert [n for n, s in graph.layers.items() if s.config.pre_norm] == ["q"]


def test_pre_norm_keeps_old_keys_and_round_trips():
    plain = LayerConfig(Op.LINEAR, 39, 156, batch=64)
    normed = LayerConfig(Op.LINEAR, 39, 156, batch=64, pre_norm=True)
    assert "pre_norm" not in plain.key() and '"pre_norm":true' in normed.key()
    assert LayerConfig.from_dict(normed.to_dict()) == normed
    assert LayerConfig.from_dict(plain.to_dict()) == plain
    assert str(normed).startswith("layernorm+linear") and normed.with_channels(40, 160).pre_norm
    dw = LayerConfig(Op.CONV, 10, 10, kernel=7, padding=3, groups=10, input_hw=(8, 8), pre_norm=True)
    assert dw.with_channels(out_channels=16) == LayerConfig(Op.CONV, 16, 16, kernel=7, padding=3, groups=16,
                                                            input_hw=(8, 8), pre_norm=True)


@pytest.mark.parametrize("cfg", [
    LayerConfig(Op.LINEAR, 39, 156, batch=16, pre_norm=True),
    LayerConfig(Op.CONV, 10, 20, kernel=2, stride=2, input_hw=(8, 8), batch=2, pre_norm=True),
])
def test_the_layer_and_its_layernorm_run_in_both_runtimes(cfg):
    """ONNX (LayerNormalization, NHWC for a conv) and torch modules of a pre-normed layer give
    the same output for the same weights."""
    import onnxruntime as ort

    model = onnx.load_from_string(build_layer_onnx(cfg))
    ops = [n.op_type for n in model.graph.node]
    assert "LayerNormalization" in ops and ops[-1] in ("Gemm", "Conv")
    module = layer_module(cfg)
    layer = module[1]
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weights["W"].copy()))
        layer.bias.copy_(torch.from_numpy(weights["B"].copy()))
        module[0].eps = 1e-6
    x = torch.randn(cfg.input_shape)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = module(x).numpy()
    assert got.shape == want.shape == cfg.output_shape
    assert abs(got - want).max() < 1e-4


class OddWidthsSlow:
    """A 'runtime' where every conv whose output width is not a multiple of 8 costs 30 µs more
    (as fp16 LayerNorm off its vectorized kernel does): the width floor of ResNet-20 (2, 4, 7
    channels) is slower than the same floor on multiples of 8."""

    def __init__(self, shape):
        self.shape = shape

    def layer_us(self, cfg) -> float:
        return 1.0 + cfg.flops / 2e5 + (30.0 if cfg.out_channels % 8 else 0.0)

    def prepare(self, module):
        graph = build_graph(module, self.shape)
        true_us = 20.0 + sum(self.layer_us(c) for c in graph.layer_configs({}).values())

        def sample(warmup, iters):
            return [true_us] * iters

        sample.true_us = true_us
        return sample


def test_the_reach_check_tries_aligned_floors_before_refusing(tmp_path):
    torch.manual_seed(0)
    model, fake, lines = get_model("resnet20"), OddWidthsSlow((3, 32, 32)), []
    opt = Optimizer(model, (3, 32, 32), OptimizeConfig(speedup=2.0, steps=1, extra_steps=0),
                    latency_us=fake.layer_us, prepare_model=fake.prepare, out_dir=tmp_path,
                    log=lines.append, progress=False)
    base = fake.prepare(model).true_us
    raw = base / fake.prepare(opt.floor_model()).true_us
    aligned = opt.aligned_floors()
    assert all(w % ALIGN == 0 or w == opt.graph0.groups[g].width for g, w in aligned.items())
    wide = base / fake.prepare(opt.floor_model(aligned)).true_us
    assert raw < 2.0 / 1.1 < 2.0 < wide  # refused on the floor alone, reachable on aligned widths
    result = opt.run()
    assert any(f"multiples of {ALIGN}" in line for line in lines), lines
    assert result.chosen_step >= 1
