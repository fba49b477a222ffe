"""Source "tflite": a TFLite flatbuffer as a float32 torch module, checked against the TFLite runtime
(ai-edge-litert) on tiny graphs built here and, where the files are at hand, on Coral's MobileNet models."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.errors import UserError
from bench.models import load_model
from bench.models.sources import spec_identity
from bench.models.tflite_source import convert
from tflite_builder import build, float_ops_graph, tiny_mobilenet

PROBE = Path(__file__).parent / "data" / "probe"
PROBES = ("cat.bmp", "grace_hopper.bmp", "parrot.jpg")
RUNTIME_MISSING = "ai-edge-litert (the TFLite runtime) is not installed: pip install 'authbench[convert]'"


def _interpreter(data: bytes):
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason=RUNTIME_MISSING)
    # the reference kernels (XNNPACK refuses uint8 test graphs whose weights are random)
    interp = litert.Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    return interp


def _runtime_logits(interp, index: int, q: np.ndarray) -> np.ndarray:
    """The runtime's dequantized tensor `index` (the logits before the softmax) for uint8 pixels q (N, H, W, C)."""
    inp = interp.get_input_details()[0]
    out = []
    for image in q:
        x = image[None] if inp["dtype"] == np.uint8 else (image[None].astype(np.int16) - 128).astype(np.int8)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        detail = next(d for d in interp.get_tensor_details() if d["index"] == index)
        scale, zero = detail["quantization"]
        out.append((interp.get_tensor(index).astype(np.float64).reshape(-1) - zero) * scale)
    return np.stack(out)


def _write(tmp_path, data: bytes, name: str = "tiny.tflite") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _pixels(q: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(q)).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("kind", ["uint8", "int8"])
def test_weights_are_dequantized(kind):
    import tflite

    data = tiny_mobilenet(kind)
    module, graph = convert(data)
    conv, dw = module.ops[0].conv, module.ops[1].conv
    for op_index, layer, perm in ((0, conv, (0, 3, 1, 2)), (1, dw, (3, 0, 1, 2))):
        op = graph.graph.Operators(op_index)
        w_index = int(op.Inputs(1))
        q = graph.raw(w_index).astype(np.float64)
        scale, zero, axis = graph.quantization(w_index)
        shape = [1] * q.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        expected = torch.from_numpy((q - zero.reshape(shape)) * scale.reshape(shape)).permute(*perm).float()
        torch.testing.assert_close(layer.weight.detach(), expected)
        b_index = int(op.Inputs(2))
        bias = graph.raw(b_index).astype(np.float64) * graph.quantization(b_index)[0]
        torch.testing.assert_close(layer.bias.detach(), torch.from_numpy(bias).float())
    assert (kind == "int8") == (graph.quantization(int(graph.graph.Operators(0).Inputs(1)))[0].size == 4)
    assert isinstance(graph.model, tflite.Model)


@pytest.mark.parametrize("quantize", [False, True], ids=["float", "quantize_activations"])
@pytest.mark.parametrize("kind", ["uint8", "int8"])
def test_tiny_graph_matches_runtime(kind, quantize):
    """Within 3 steps of the logits' quantization grid of the integer runtime, and the same top-1 wherever the
    runtime's top two logits are more than 2 steps apart."""
    data = tiny_mobilenet(kind)
    interp = _interpreter(data)
    module, graph = convert(data, quantize_activations=quantize)
    q = np.random.default_rng(1).integers(0, 256, size=(24, 8, 8, 3)).astype(np.uint8)
    ref = _runtime_logits(interp, module.output_index, q)
    mean, std = 128 / 255, 128 / 255  # the input's quantization (1/128, zero point 128 in uint8)
    with torch.no_grad():
        mine = module((_pixels(q) - mean) / std).double().numpy()
    step = graph.quantization(module.output_index)[0][0]
    assert np.abs(mine - ref).max() <= 3 * step
    assert np.abs(ref).max() > 10 * step  # the logits are not all at zero: the comparison can fail
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * step
    assert clear.sum() >= 6
    assert (mine.argmax(1) == ref.argmax(1))[clear].all()


def test_float_graph_of_other_ops_matches_runtime():
    """PAD, MAX/AVERAGE_POOL_2D with odd SAME padding (the average over valid pixels only), CONCATENATION, MUL by a
    constant, LOGISTIC, MEAN, FULLY_CONNECTED, RELU: float32 end to end, so runtime and module agree to 1e-5."""
    data = float_ops_graph()
    interp = _interpreter(data)
    module, _ = convert(data)
    assert [op.kind for op in module.ops] == ["PAD", "MAX_POOL_2D", "AVERAGE_POOL_2D", "CONCATENATION", "MUL",
                                              "LOGISTIC", "MEAN", "FULLY_CONNECTED", "RELU"]
    x = np.random.default_rng(2).normal(size=(5, 6, 6, 2)).astype(np.float32)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    ref = []
    for image in x:
        interp.set_tensor(inp["index"], image[None])
        interp.invoke()
        ref.append(interp.get_tensor(out["index"])[0])
    with torch.no_grad():
        mine = module(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert (np.stack(ref) > 0).any()  # the RELU leaves something to compare
    np.testing.assert_allclose(mine, np.stack(ref), rtol=1e-5, atol=1e-5)


def test_adapter_preprocess_identity_and_drop_background(tmp_path):
    data = tiny_mobilenet("uint8")
    path = _write(tmp_path, data)
    adapter = load_model({"source": "tflite", "path": str(path)})
    pre = adapter.preprocess
    assert pre.input_size == (3, 8, 8)
    # uint8 input with scale 1/128 and zero point 128: real = (255 p - 128) / 128 = (p - 128/255) / (128/255)
    torch.testing.assert_close(torch.tensor(pre.mean + pre.std), torch.tensor([128 / 255, 128 / 255]))
    assert pre.extra["crop_pct"] == 0.875 and pre.interpolation == "bilinear"
    assert adapter.file_sha256 == hashlib.sha256(data).hexdigest()
    assert adapter.identity["file_sha256"] == adapter.file_sha256
    assert spec_identity(f"tflite:{path}")["file"] == adapter.file_sha256
    x = torch.rand(3, 3, 8, 8)
    logits = adapter.predict(x)
    assert logits.shape == (3, 5)
    assert not torch.allclose(logits.softmax(1).sum(1), logits.sum(1))  # logits, not the softmax's output
    dropped = load_model({"source": "tflite", "path": str(path), "drop_background": True})
    torch.testing.assert_close(dropped.predict(x), logits[:, 1:])
    assert dropped.digest != adapter.digest  # same weights, other outputs: another model
    assert load_model(f"tflite:{path}").digest == adapter.digest


def test_first_linear_covers_odd_same_padding(tmp_path):
    """The first conv pads 8 -> 4 at stride 2 as TF's SAME: (0, 1), odd; first_linear() is exact."""
    adapter = load_model({"source": "tflite", "path": str(_write(tmp_path, tiny_mobilenet("uint8")))})
    fl = adapter.first_linear()
    conv = dict(adapter.module.named_modules())[fl.module_name]
    assert conv.pads(8, 8) == (0, 1, 0, 1)
    assert (fl.kind, fl.stride, fl.padding, fl.output_hw) == ("conv", (2, 2), (1, 1), (4, 4))
    x = torch.rand(2, 3, 8, 8)
    seen = []
    handle = conv.register_forward_hook(lambda m, a, out: seen.append(out))
    adapter.predict(x)
    handle.remove()
    real = (seen[0].double() - conv.bias.double().view(1, -1, 1, 1)).flatten(1)
    mean = torch.tensor(adapter.preprocess.mean, dtype=torch.float64).view(1, -1, 1, 1)
    torch.testing.assert_close(fl.apply(x.double() - mean), real, rtol=1e-5, atol=1e-5)


def test_module_is_trainable(tmp_path):
    adapter = load_model({"source": "tflite", "path": str(_write(tmp_path, tiny_mobilenet("int8")))})
    module = adapter.module.train()
    params = dict(module.named_parameters())
    assert params and all(p.dtype == torch.float32 and p.requires_grad for p in params.values())
    loss = torch.nn.functional.cross_entropy(module(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())
    assert any(float(p.grad.abs().max()) > 0 for p in params.values())


def test_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model({"source": "tflite", "path": str(tmp_path / "none.tflite")})
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(UserError, match="tflite model 'bad'"):
        load_model({"source": "tflite", "path": str(bad)})
    path = _write(tmp_path, tiny_mobilenet("uint8"))
    with pytest.raises(UserError, match="has sha256 .* the spec expects 0000"):
        load_model({"source": "tflite", "path": str(path), "sha256": "0" * 64})
    with pytest.raises(UserError, match="drop_background must be true or false"):
        load_model({"source": "tflite", "path": str(path), "drop_background": "yes"})
    tanh = build(
        [{"name": "x", "shape": [1, 2, 2, 3], "dtype": np.float32}, {"name": "y", "shape": [1, 2, 2, 3], "dtype": np.float32}],
        [{"op": "TANH", "inputs": [0], "outputs": [1]}], [0], [1])
    with pytest.raises(UserError, match="operator TANH is not supported by the tflite source; supported: CONV_2D") as err:
        load_model({"source": "tflite", "path": str(_write(tmp_path, tanh, "tanh.tflite")), "mean": [0], "std": [1]})
    assert "\n" not in str(err.value)
    relu = build(
        [{"name": "x", "shape": [1, 2, 2, 3], "dtype": np.float32}, {"name": "y", "shape": [1, 2, 2, 3], "dtype": np.float32}],
        [{"op": "RELU", "inputs": [0], "outputs": [1]}], [0], [1])
    with pytest.raises(UserError, match="needs mean, std in its spec"):
        load_model({"source": "tflite", "path": str(_write(tmp_path, relu, "relu.tflite"))})


# Coral's MobileNet files (google-coral/test_data at 104342d2d3480b3e66203073dac24f4e2dbb4c41): found in
# $AUTHBENCH_TFLITE_DIR or the imagenet-mini kit's cache folder; never downloaded by the tests.
MOBILENETS = ("mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.5_160_quant", "mobilenet_v1_0.75_192_quant",
              "mobilenet_v2_1.0_224_quant")


def _find_mobilenet(name: str) -> Path | None:
    folders = [os.environ.get("AUTHBENCH_TFLITE_DIR")]
    cache = os.environ.get("AUTHBENCH_CACHE")
    if cache:
        folders += [str(Path(cache) / "kits" / "imagenet-mini"), str(Path(cache) / "kits" / "imagenet-mini" / "models")]
    for folder in filter(None, folders):
        path = Path(folder) / f"{name}.tflite"
        if path.is_file():
            return path
    return None


@pytest.mark.parametrize("name", MOBILENETS)
def test_mobilenet_matches_runtime_on_probe_images(name):
    path = _find_mobilenet(name)
    if path is None:
        pytest.skip(f"{name}.tflite not found (set AUTHBENCH_TFLITE_DIR to a folder holding google-coral/test_data's "
                    "MobileNet files, or import the imagenet-mini kit)")
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason=RUNTIME_MISSING)
    from PIL import Image

    interp = litert.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    adapter = load_model({"source": "tflite", "path": str(path)})
    _, h, w = adapter.preprocess.input_size
    q = np.stack([np.asarray(Image.open(PROBE / f).convert("RGB").resize((w, h), Image.BILINEAR)) for f in PROBES])
    ref = _runtime_logits(interp, adapter.module.output_index, q)
    mine = adapter.predict(_pixels(q)).double().numpy()
    assert (mine.argmax(1) == ref.argmax(1)).all()
    assert np.abs(mine - ref).max() < 0.15 * np.abs(ref).max()
    if name == "mobilenet_v1_0.5_160_quant":  # the one of these models pycoral's tests/classify_test.py runs on cat.bmp
        assert mine[0].argmax() == 286  # "Egyptian cat" (1001 outputs: background first), as that test asserts


def test_suite_runs_a_tflite_model_with_ne(tmp_path):
    """A suite names the file like any model: NE fits on its first conv (odd SAME padding) and every cell is scored;
    the two variants of the file (float, quantize_activations) are two models."""
    from bench.api import evaluate

    path = _write(tmp_path, tiny_mobilenet("uint8"))
    suite = tmp_path / "t.toml"
    suite.write_text(
        '[suite]\nname = "tflite-tiny"\nseed = 0\n\n[data]\ndataset = "synthetic"\nn = 12\nsize = 8\nclasses = 5\n\n'
        f'[models]\nauthorized = ["tflite:{path}"]\n'
        f'evaluated = ["tflite:{path}", {{ source = "tflite", path = "{path}", name = "tiny-q", quantize_activations = true }}]\n\n'
        '[[defenses]]\nname = "ne-patch"\npsnr = [20]\nrelease = ["float"]\n')
    results = evaluate(suite, out=tmp_path / "runs", write_reports=False, threads=1, cache_dir=tmp_path / "cache")
    rows = [r for r in results.records if r["defense"] == "ne-patch"]
    assert {r["evaluated"] for r in rows} == {str(path), "tiny-q"}
    assert {r["arch"]["evaluated"] for r in rows} == {"tflite/tiny.tflite", "tflite/tiny.tflite+quantize_activations"}
    assert all(0 <= r["metrics"]["top1"] <= 100 for r in rows)
    authorized = next(r for r in rows if r["evaluated"] == str(path))
    assert authorized["metrics"]["first_layer_dev"] > 0  # NE moved the first conv's output: first_linear() was used


def test_logits_are_found_behind_trailing_quantize_and_squeeze():
    """FULLY_CONNECTED -> SOFTMAX -> QUANTIZE (as TF2 post-training graphs end): the module returns the logits;
    a SQUEEZE of a (1, 1, 1, C) map reads channels last."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    t = [{"name": "x", "shape": [1, 1, 1, 4], "dtype": np.float32},
         {"name": "sq", "shape": [1, 4], "dtype": np.float32},
         {"name": "w", "shape": [3, 4], "dtype": np.float32, "data": w},
         {"name": "logits", "shape": [1, 3], "dtype": np.float32},
         {"name": "probs", "shape": [1, 3], "dtype": np.float32},
         {"name": "q", "shape": [1, 3], "dtype": np.uint8, "quant": (np.array([1 / 256]), np.array([0]), 0)}]
    ops = [{"op": "SQUEEZE", "inputs": [0], "outputs": [1], "options": "SqueezeOptions", "fields": {"SqueezeDims": [1, 2]}},
           {"op": "FULLY_CONNECTED", "inputs": [1, 2, -1], "outputs": [3], "options": "FullyConnectedOptions",
            "fields": {"FusedActivationFunction": 0}},
           {"op": "SOFTMAX", "inputs": [3], "outputs": [4], "options": "SoftmaxOptions", "fields": {"Beta": 1.0}},
           {"op": "QUANTIZE", "inputs": [4], "outputs": [5]}]
    module, _ = convert(build(t, ops, [0], [5]))
    assert [op.kind for op in module.ops] == ["SQUEEZE", "FULLY_CONNECTED"] and module.output_index == 3
    x = torch.randn(2, 4, 1, 1)  # NCHW
    with torch.no_grad():
        torch.testing.assert_close(module(x), x.flatten(1) @ torch.from_numpy(w).T)
