"""Model sources and adapter identity: load_model, from_module, checkpoints, predict() checks (CPU, offline)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from bench.core.errors import UserError
from bench.models import ModelAdapter, from_module, list_models, load_model

MEAN, STD, SIZE = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), (3, 8, 8)


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


@pytest.fixture(scope="module")
def resnet18():
    """timm resnet18 with 10 classes, random init (no hub)."""
    torch.manual_seed(0)
    return load_model({"source": "timm", "model": "resnet18", "num_classes": 10})


def _user_error(fn, *args, match: str | None = None) -> str:
    """Run fn, expect a one-line UserError matching `match`, return its message."""
    with pytest.raises(UserError, match=match) as err:
        fn(*args)
    message = str(err.value)
    assert "\n" not in message
    return message


# identity / digest


def test_digest_stable_for_same_weights():
    a, b = from_module(_net(), "a", MEAN, STD, SIZE), from_module(_net(), "b", MEAN, STD, SIZE)
    assert a.identity == b.identity
    assert a.digest == b.digest  # the label is not part of the identity


def test_digest_changes_with_one_weight():
    module = _net()
    changed = copy.deepcopy(module)
    changed[4].weight[0, 0] += 1e-3
    assert from_module(module, "a", MEAN, STD, SIZE).digest != from_module(changed, "a", MEAN, STD, SIZE).digest


def test_digest_changes_with_preprocessing():
    module = _net()
    base = from_module(module, "a", MEAN, STD, SIZE)
    assert base.digest != from_module(module, "a", MEAN, (0.2, 0.25, 0.31), SIZE).digest
    assert base.digest != from_module(module, "a", (0.4, 0.4, 0.3), STD, SIZE).digest
    assert base.digest != from_module(module, "a", MEAN, STD, (3, 8, 8), arch="torch/other").digest


def test_different_timm_archs_differ(resnet18):
    other = load_model("timm:resnet10t.c3_in1k")
    assert (other.name, other.arch, other.source) == ("resnet10t.c3_in1k", "timm/resnet10t", "timm")
    assert resnet18.arch == "timm/resnet18"
    assert other.digest != resnet18.digest


# timm specs


def test_timm_preprocess_and_overrides(resnet18):
    pre = resnet18.preprocess
    assert (pre.mean, pre.std, pre.input_size) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (3, 224, 224))
    assert set(pre.extra) == {"interpolation", "crop_pct", "crop_mode"}
    custom = load_model(
        {"source": "timm", "model": "resnet18", "name": "r18-small", "input_size": [3, 64, 64], "mean": [0.5], "std": [0.5]}
    )
    assert custom.name == "r18-small"
    assert (custom.preprocess.mean, custom.preprocess.std, custom.preprocess.input_size) == ((0.5,), (0.5,), (3, 64, 64))
    assert custom.predict(torch.rand(2, 3, 64, 64)).shape == (2, 1000)


# checkpoints


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pt-wrapped"])
def test_checkpoint_round_trip(resnet18, tmp_path, fmt):
    state = {k: v.contiguous() for k, v in resnet18.module.state_dict().items()}
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pt")
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "epoch": 3} if fmt == "pt-wrapped" else state, path)
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
    loaded = load_model({"source": "timm", "model": "resnet18", "num_classes": 10, "checkpoint": str(path)})
    assert loaded.digest == resnet18.digest
    x = torch.rand(2, 3, 224, 224)
    torch.testing.assert_close(loaded.predict(x), resnet18.predict(x))


def test_checkpoint_for_wrong_architecture(resnet18, tmp_path):
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in resnet18.module.state_dict().items()}, str(path))
    message = _user_error(load_model, {"source": "timm", "model": "resnet18", "checkpoint": str(path)}, match="does not fit")
    assert "fc.weight has shape (10, 512), model expects (1000, 512)" in message
    message = _user_error(load_model, {"source": "timm", "model": "resnet10t", "checkpoint": str(path)}, match="does not fit")
    assert "missing" in message or "unexpected" in message


def test_checkpoint_missing_or_unreadable(tmp_path):
    missing = tmp_path / "nope.safetensors"
    _user_error(load_model, {"source": "timm", "model": "resnet18", "checkpoint": str(missing)}, match="does not exist")
    garbage = tmp_path / "bad.pt"
    garbage.write_bytes(b"not a checkpoint")
    _user_error(load_model, {"source": "timm", "model": "resnet18", "checkpoint": str(garbage)}, match="cannot read")


# torch factories and plain modules


def test_torch_factory():
    spec = {
        "source": "torch",
        "factory": "torchvision.models:resnet18",
        "kwargs": {"num_classes": 3},
        "mean": [0.5],
        "std": [0.25],
        "input_size": [3, 32, 32],
    }
    adapter = load_model(spec)
    assert isinstance(adapter, ModelAdapter)
    assert (adapter.name, adapter.source) == ("torchvision.models:resnet18", "torch")
    assert adapter.arch.startswith("torch/torchvision.models:resnet18")
    assert adapter.predict(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def test_from_module_defaults():
    adapter = from_module(_net(), "net", MEAN, STD, SIZE)
    assert (adapter.name, adapter.source, adapter.arch) == ("net", "torch", "torch/torch.nn.modules.container.Sequential")
    assert adapter.predict(torch.rand(3, *SIZE)).shape == (3, 5)


# predict() checks


def test_predict_rejects_nan():
    adapter = from_module(_net(), "net", MEAN, STD, SIZE)
    x = torch.rand(2, *SIZE)
    x[1, 0, 0, 0] = float("nan")
    _user_error(adapter.predict, x, match="NaN")


def test_predict_rejects_wrong_channels():
    adapter = from_module(_net(), "net", MEAN, STD, SIZE)  # any height and width: predict() resizes and crops
    message = _user_error(adapter.predict, torch.rand(2, 1, 8, 8))
    assert "(N, 3, H, W)" in message and "(2, 1, 8, 8)" in message


# load_model errors


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"source": "caffe", "model": "x"}, "unknown model source 'caffe'; valid choices: hf, "),
        ("caffe:model", "unknown model source 'caffe'"),
        ("resnet50", "needs a source prefix"),
        ({"source": "timm", "model": "resnet18", "chekpoint": "w.pt"}, "chekpoint"),
        ({"source": "torch", "factory": "torchvision.models.resnet18"}, "expected 'package.module:function'"),
        ({"source": "torch", "factory": "no_such_pkg.models:net", "mean": [0], "std": [1], "input_size": [1, 2, 2]}, "cannot import"),
        ({"source": "torch", "factory": "torchvision.models:no_such_fn", "mean": [0], "std": [1], "input_size": [1, 2, 2]}, "has no 'no_such_fn'"),
        ({"source": "torch", "factory": "torchvision.models:resnet18", "mean": [0.5]}, "needs std, input_size"),
        ("torch:torchvision.models:resnet18", "needs mean, std and input_size"),
        ({"source": "timm", "model": "resnet18", "kwargs": {"bogus": 1}}, "bad arguments"),
        ({"source": "timm", "model": "resnet18", "std": [0.0]}, "std must be positive"),
        ({"source": "timm", "model": "resnet18", "mean": [0.1, 0.2]}, "mean needs 1 or 3 values"),
        ("zoo:transformer-s0", "unknown zoo model"),
    ],
)
def test_load_model_errors(spec, match):
    _user_error(load_model, spec, match=match)


def test_unknown_timm_model_suggests_close_names():
    message = _user_error(load_model, "timm:resnet5O", match="unknown timm model 'resnet5O'")
    assert "did you mean" in message and "resnet50" in message


def test_list_models():
    models = list_models()
    assert "zoo:mlp-s0" in models and "zoo:vit-s1" in models
    assert "timm:<name>" in models and "torch:<module:function>" in models
    assert all(isinstance(v, str) and v for v in models.values())
