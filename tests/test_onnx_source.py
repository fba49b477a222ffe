"""Source "onnx": an ONNX file exported here from a small torch module, converted by onnx2torch and compared with
the torch module and with onnxruntime."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from bench.core.errors import UserError
from bench.models import load_model
from bench.models.sources import spec_identity

pytest.importorskip("onnx2torch", reason="onnx2torch is not installed: pip install 'authbench[convert]'")

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 5))
    with torch.no_grad():  # non-trivial batch-norm statistics
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    net = _net()
    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 3, 16, 16), str(path), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, opset_version=13, dynamo=False)
    return net, path


def test_matches_torch_and_onnxruntime(exported):
    net, path = exported
    adapter = load_model({"source": "onnx", "path": str(path), "mean": MEAN, "std": STD})
    assert adapter.preprocess.input_size == (3, 16, 16)  # from the graph's static input shape
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    normalized = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    mine = adapter.predict(x)
    with torch.no_grad():
        torch.testing.assert_close(mine, net(normalized), rtol=1e-5, atol=1e-5)
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'authbench[convert]'")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = session.run(None, {"x": normalized.numpy()})[0]
    np.testing.assert_allclose(mine.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_identity_first_linear_and_training(exported):
    net, path = exported
    adapter = load_model({"source": "onnx", "path": str(path), "mean": MEAN, "std": STD})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert adapter.file_sha256 == digest and adapter.identity["file_sha256"] == digest
    assert spec_identity({"source": "onnx", "path": str(path), "mean": MEAN, "std": STD})["file"] == digest
    fl = adapter.first_linear()
    assert (fl.kind, fl.stride, fl.padding, fl.input_shape) == ("conv", (2, 2), (1, 1), (3, 16, 16))
    conv = dict(adapter.module.named_modules())[fl.module_name]  # batch norm folded in by the export
    torch.testing.assert_close(fl.weight, conv.weight.double() / torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1))
    x = torch.rand(2, 3, 16, 16)
    seen = []
    handle = conv.register_forward_hook(lambda m, a, out: seen.append(out))
    adapter.predict(x)
    handle.remove()
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    real = (seen[0].double() - conv.bias.double().view(1, -1, 1, 1)).flatten(1)
    torch.testing.assert_close(fl.apply(x.double() - mean), real, rtol=1e-5, atol=1e-5)
    module = adapter.module.train()
    loss = nn.functional.cross_entropy(module(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    grads = [p.grad for p in module.parameters()]
    assert grads and all(g is not None for g in grads)


def test_errors(exported, tmp_path):
    _, path = exported
    with pytest.raises(UserError, match="needs mean, std in its spec"):
        load_model({"source": "onnx", "path": str(path)})
    with pytest.raises(UserError, match="needs mean, std in its spec"):
        load_model(f"onnx:{path}")
    with pytest.raises(UserError, match="does not exist"):
        load_model({"source": "onnx", "path": str(tmp_path / "none.onnx"), "mean": MEAN, "std": STD})
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not onnx")
    with pytest.raises(UserError, match="onnx model 'bad'") as err:
        load_model({"source": "onnx", "path": str(bad), "mean": MEAN, "std": STD})
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="has sha256"):
        load_model({"source": "onnx", "path": str(path), "mean": MEAN, "std": STD, "sha256": "f" * 64})
