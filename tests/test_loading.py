"""Safe model loading: every accepted format, and one clear ModelLoadError per bad input."""

from __future__ import annotations

import importlib.util
import os
import pickle
import zipfile

import pytest
import torch
from models import Residual, Versioned  # tests/models.py

from locp_trt.errors import LocpError, ModelLoadError
from locp_trt.models import get_model
from locp_trt.prune import PruningPlan, apply_plan, save_pruned
from locp_trt.prune.loading import ModelKind, load_model


def same_outputs(a: torch.nn.Module, b: torch.nn.Module, shape) -> bool:
    x = torch.randn(2, *shape)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.fixture
def resnet20():
    torch.manual_seed(0)
    return get_model("resnet20")


# ---- accepted -----------------------------------------------------------------------------------
def test_state_dict_with_zoo_arch(tmp_path, resnet20):
    torch.save(resnet20.state_dict(), tmp_path / "m.pt")
    got = load_model(tmp_path / "m.pt", arch="resnet20")
    assert (got.kind, got.arch, got.input_shape) == (ModelKind.STATE_DICT, "resnet20", (3, 32, 32))
    assert same_outputs(got.module, resnet20, (3, 32, 32))


def test_legacy_non_zip_state_dict_loads_weights_only(tmp_path):
    torch.manual_seed(0)
    lenet = get_model("lenet5")
    path = tmp_path / "lenet.pt"
    torch.save(lenet.state_dict(), path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    got = load_model(path, arch="lenet5")
    assert got.kind is ModelKind.STATE_DICT and got.input_shape == (1, 28, 28)
    assert same_outputs(got.module, lenet, (1, 28, 28))


@pytest.mark.skipif(importlib.util.find_spec("advertorch_examples") is None,
                    reason="advertorch 0.2.3 (pip install --no-deps advertorch==0.2.3) not installed")
def test_advertorch_lenet5_weights():
    d = importlib.util.find_spec("advertorch_examples").submodule_search_locations[0]
    got = load_model(os.path.join(d, "trained_models", "mnist_lenet5_clntrained.pt"), arch="lenet5")
    assert got.module.linear1.weight.shape == (200, 3136)


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model"])
def test_checkpoint_dicts(tmp_path, resnet20, key):
    torch.save({key: resnet20.state_dict(), "epoch": 3, "best_acc": 91.2}, tmp_path / "c.pt")
    got = load_model(tmp_path / "c.pt", arch="resnet20")
    assert got.kind is ModelKind.CHECKPOINT and same_outputs(got.module, resnet20, (3, 32, 32))


def test_dataparallel_prefix_and_inferred_classes(tmp_path):
    torch.manual_seed(0)
    model = get_model("resnet20", num_classes=100, in_channels=1)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "dp.pt")
    got = load_model(tmp_path / "dp.pt", arch="resnet20")
    assert got.module.fc.out_features == 100 and got.input_shape == (1, 32, 32)
    assert same_outputs(got.module, model, (1, 32, 32))


def test_versioned_modules_keep_their_version_through_a_stripped_prefix(tmp_path):
    torch.manual_seed(0)
    model = Versioned().eval()
    wrapped = torch.nn.DataParallel(model).state_dict()  # keys and _metadata under "module."
    assert all(k.startswith("module.") for k in wrapped) and "module.body.1" in wrapped._metadata
    torch.save(wrapped, tmp_path / "dp.pt")
    got = load_model(tmp_path / "dp.pt", arch="models:Versioned", input_shape=(3, 8, 8))
    assert same_outputs(got.module, model, (3, 8, 8))
    pruned, plan = apply_plan(got.module, PruningPlan("models:Versioned", (3, 8, 8), {"body.0": 5}),
                              (3, 8, 8))
    save_pruned(pruned, plan, tmp_path / "p.pt")  # the pruned file keeps the versions too
    assert same_outputs(load_model(tmp_path / "p.pt").module, pruned, (3, 8, 8))
    torch.save(dict(wrapped), tmp_path / "plain.pt")  # no _metadata: the module's own error, one line
    with pytest.raises(ModelLoadError, match=r"loading the weights into --arch models:Versioned failed "
                       r"\(ValueError: version should be set.*no module versions") as e:
        load_model(tmp_path / "plain.pt", arch="models:Versioned")
    assert "\n" not in str(e.value)


def test_arch_as_module_callable(tmp_path):
    model = Residual()
    torch.save(model.state_dict(), tmp_path / "r.pt")
    got = load_model(tmp_path / "r.pt", arch="models:Residual", input_shape=(3, 8, 8))
    assert got.input_shape == (3, 8, 8) and same_outputs(got.module, model, (3, 8, 8))
    with pytest.raises(ModelLoadError, match="cannot import 'Nope' from 'models'"):
        load_model(tmp_path / "r.pt", arch="models:Nope")


def test_pruned_file_needs_no_arch(tmp_path, resnet20):
    pruned, plan = apply_plan(resnet20, PruningPlan("resnet20", (3, 32, 32), {"conv1": 9}), (3, 32, 32))
    save_pruned(pruned, plan, tmp_path / "p.pt")
    got = load_model(tmp_path / "p.pt")
    assert got.kind is ModelKind.PRUNED and got.arch == "resnet20" and got.plan.widths == {"conv1": 9}
    assert same_outputs(got.module, pruned, (3, 32, 32))


def test_pickled_module_only_with_trust(tmp_path):
    model = Residual()
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(ModelLoadError, match=r"pickled Python objects \(models.Residual\).*"
                       r"arbitrary code.*--trust-pickle only for files you trust"):
        load_model(tmp_path / "whole.pt")
    got = load_model(tmp_path / "whole.pt", trust_pickle=True, input_shape=(3, 8, 8))
    assert got.kind is ModelKind.PICKLED_MODULE and same_outputs(got.module, model, (3, 8, 8))


# ---- refused: one clear line each ---------------------------------------------------------------
def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_missing_empty_garbage_truncated(tmp_path, resnet20):
    cases = []
    cases.append((tmp_path / "nope.pt", "model file not found: .*nope.pt"))
    cases.append((write(tmp_path / "empty.pt", b""), "is empty \\(0 bytes\\)"))
    cases.append((write(tmp_path / "junk.pt", b"hello, this is not a model" * 20),
                  "is not a PyTorch file \\(no zip or pickle header"))
    torch.save(resnet20.state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    cases.append((write(tmp_path / "trunc.pt", data[: len(data) // 2]), "truncated or corrupt"))
    torch.save(resnet20.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pt").read_bytes()
    cases.append((write(tmp_path / "trunc_legacy.pt", data[: len(data) // 2]), "truncated or corrupt"))
    cases.append((write(tmp_path / "badpickle.pt", b"\x80\x02" + os.urandom(64)), "PyTorch file"))
    for path, msg in cases:
        with pytest.raises(ModelLoadError, match=msg) as e:
            load_model(path, arch="resnet20")
        assert "\n" not in str(e.value), path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_refused(tmp_path):
    torch.jit.save(torch.jit.script(Residual()), tmp_path / "ts.pt")
    with pytest.raises(ModelLoadError, match="TorchScript archive.*state_dict.*--arch NAME"):
        load_model(tmp_path / "ts.pt", arch="resnet20", trust_pickle=True)


def test_onnx_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    blob = helper.make_model(graph).SerializeToString()
    for name in ("m.onnx", "exported.pt"):  # by suffix, and by content
        path = write(tmp_path / name, blob)
        with pytest.raises(ModelLoadError, match="is an ONNX model.*PyTorch weights"):
            load_model(path, arch="resnet20")
    assert onnx.load_model_from_string(blob).ir_version > 0


def test_state_dict_without_arch(tmp_path, resnet20):
    torch.save(resnet20.state_dict(), tmp_path / "m.pt")
    with pytest.raises(ModelLoadError, match="pass --arch NAME.*resnet56.*python -m locp_trt zoo"):
        load_model(tmp_path / "m.pt")


def test_mismatching_arch(tmp_path, resnet20):
    torch.save(resnet20.state_dict(), tmp_path / "m.pt")
    with pytest.raises(ModelLoadError, match=r"does not fit --arch resnet56 .*missing in file: "
                       r"layer1\.3\.conv1\.weight.*check that --arch names the architecture"):
        load_model(tmp_path / "m.pt", arch="resnet56")
    lenet = get_model("lenet5")
    sd = lenet.state_dict()
    sd["linear1.weight"] = torch.zeros(200, 1568)
    torch.save(sd, tmp_path / "l.pt")
    with pytest.raises(ModelLoadError, match=r"shape mismatch: linear1\.weight file \(200, 1568\) "
                       r"vs model \(200, 3136\)"):
        load_model(tmp_path / "l.pt", arch="lenet5")
    with pytest.raises(ModelLoadError, match="unknown model 'resnet5'. Did you mean resnet56"):
        load_model(tmp_path / "m.pt", arch="resnet5")


def test_other_payloads(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ModelLoadError, match="holds a list"):
        load_model(tmp_path / "list.pt", arch="resnet20")
    torch.save({"epoch": 1, "optimizer": {"lr": 0.1}}, tmp_path / "d.pt")
    with pytest.raises(ModelLoadError, match="without a state_dict \\(keys: 'epoch', 'optimizer'\\)"):
        load_model(tmp_path / "d.pt", arch="resnet20")
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"a": 1}, f, protocol=2)
    with pytest.raises(LocpError):
        load_model(tmp_path / "plain.pkl", arch="resnet20")
