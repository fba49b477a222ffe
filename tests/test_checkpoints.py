"""Users' own checkpoints (issue 16): torch's strictness rules, the common wrappers, a loader plugin."""

from __future__ import annotations

import json

import pytest
import torch

from bench.core.errors import UserError
from bench.models.sources import load_model
from models_example import bn_cnn

SPEC = {"source": "torch", "factory": "models_example:bn_cnn", "mean": [0.5], "std": [0.25], "input_size": [1, 32, 32],
        "name": "mine", "init_seed": 0}


@pytest.fixture
def trained():
    torch.manual_seed(1)
    model = bn_cnn()
    model.train()
    model(torch.rand(8, 1, 32, 32))  # running statistics move away from their initial values
    return model.eval()


def _same(adapter, model) -> bool:
    return all(torch.equal(adapter.module.state_dict()[k], v) for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked"))


def test_batchnorm_state_without_num_batches_tracked_loads(trained, tmp_path):
    """Regression (bug 1): an old BatchNorm checkpoint was refused ('missing ...num_batches_tracked')."""
    state = {k: v for k, v in trained.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pt")
    assert _same(load_model({**SPEC, "checkpoint": str(tmp_path / "old.pt")}), trained)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "net", "list", "module.", "_orig_mod.", "nested"])
def test_common_checkpoint_wrappers_are_unwrapped(trained, tmp_path, wrap):
    """Regression (bug 2): {'state_dict': ...}, {'model': ...}, {'net': ...}, [state], 'module.' / '_orig_mod.'."""
    state = trained.state_dict()
    obj = {"list": [state], "nested": {"model": {"state_dict": state}, "epoch": 3},
           "module.": {f"module.{k}": v for k, v in state.items()},
           "_orig_mod.": {f"_orig_mod.{k}": v for k, v in state.items()}}.get(wrap, {wrap: state, "epoch": 7})
    torch.save(obj, tmp_path / "w.pt")
    assert _same(load_model({**SPEC, "checkpoint": str(tmp_path / "w.pt")}), trained)


def test_something_else_is_described_in_one_line(tmp_path):
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "x.pt")
    with pytest.raises(UserError, match=r"holds no state dict .*found a dict with keys 'epoch', 'optimizer'.*loader"):
        load_model({**SPEC, "checkpoint": str(tmp_path / "x.pt")})


def test_a_checkpoint_that_does_not_fit_names_the_keys(trained, tmp_path):
    state = dict(trained.state_dict())
    state.pop("5.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(UserError, match=r"does not fit model 'mine': missing 5.weight; unexpected extra.weight"):
        load_model({**SPEC, "checkpoint": str(tmp_path / "bad.pt")})


def test_a_loader_plugin_reads_a_format_the_harness_does_not_know(trained, tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps({k: v.tolist() for k, v in trained.state_dict().items()}))
    adapter = load_model({**SPEC, "checkpoint": str(path), "loader": "models_example:json_weights", "arch": "mine/bn"})
    assert _same(adapter, trained) and adapter.arch == "mine/bn"
    with pytest.raises(UserError, match="cannot load loader 'models_example:nope'"):
        load_model({**SPEC, "checkpoint": str(path), "loader": "models_example:nope"})


def test_a_timm_model_without_timm_installed_is_a_one_line_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(UserError, match=r"model 'r18' needs timm: pip install 'timm>=1.0' 'torchvision>=0.16' \(the 'vision' extra\)"):
        load_model({"source": "timm", "model": "resnet18", "name": "r18"})
