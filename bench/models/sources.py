"""Model sources: turn a spec ("zoo:vit-s0", "timm:resnet50" or a TOML table) into a ModelAdapter.

Each source is a `ModelSource` (bench.models.source_base) registered in `SOURCES` and declares the
table keys it reads. Table keys: `source` ("zoo" | "timm" | "hf" | "torch"), `model`, `name`, `pretrained`,
`num_classes`, `checkpoint`, `kwargs`, `input_size`, `mean`, `std` (and `epochs` for
the zoo). A "torch" source names `factory = "package.module:function"` and must give
`mean`, `std` and `input_size`. "timm" and "hf" also take `arch` (the architecture label
that groups same-architecture models in NE's Table 2; default: the library's own name),
`init_seed` (random weights when `pretrained = false`), `resize` and `interpolation`
(the model's input geometry, see bench.models.geometry); "hf" is bench.models.hf_vision.
"python" (weights inside a pip package), "onnx" and "tflite" are bench.models.python_source, onnx_source
and tflite_source.
"""

from __future__ import annotations

import difflib
import hashlib
import functools
import importlib
import json
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Sequence

import torch
import torch.nn as nn

from bench.data.base import file_digest
from bench.core.errors import UserError, install_hint
from bench.kits.resolve import PREFIX as KIT_PREFIX, model_identity, resolve_model
from bench.models.adapter import ModelAdapter, Preprocess
from bench.models.hf_vision import HF_KEYS, load_hf
from bench.models.onnx_source import ONNX_KEYS, load_onnx
from bench.models.python_source import PYTHON_KEYS, load_python, weights_path
from bench.models.tflite_source import TFLITE_KEYS, load_tflite
from bench.models.geometry import interpolation_name
from bench.models.source_base import SOURCES, ModelSource, get_source, spec_identity
from bench.models.zoo import load_zoo_model, pinned_identity, recipe_for
from bench.zoo_catalog import zoo_models

class _SourceKeys(Mapping):
    """source name -> the spec-table keys it reads (each source declares its own `keys`)."""

    def __getitem__(self, name):
        return get_source(name).keys if name in SOURCES else {}[name]

    def __iter__(self):
        return iter(SOURCES.names())

    def __len__(self):
        return len(SOURCES.names())


SOURCE_KEYS = _SourceKeys()


def model_label(spec) -> str:
    """The label a suite's model spec goes by in every row: its `name`, else its model, else the
    part of a 'source:name' string after the source."""
    if isinstance(spec, dict):
        if spec.get("source") in SOURCES:
            return get_source(spec["source"]).label(spec)
        return str(spec.get("name") or spec.get("model"))
    source, sep, model = str(spec).partition(":")
    if sep and source in SOURCES:
        return get_source(source).label({"source": source, "model": model})
    return str(spec).split(":", 1)[-1]


def list_models() -> dict[str, str]:
    """Every loadable spec: each source's own lines (the zoo's names, the other sources' patterns)."""
    models: dict[str, str] = {}
    for name in SOURCES.names():
        models.update(get_source(name).models())
    return models


def default_init_seed(suite_seed: int, label: str) -> int:
    """The seed of a model's random initialisation when its spec names none: from the suite seed and the
    model's label, so random weights are the same in every process and run."""
    return int(hashlib.sha256(f"{suite_seed}|{label}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def load_model(spec: str | dict, progress: bool = True, *, default_seed: int | None = None,
               cache_dir: Path | None = None) -> ModelAdapter:
    """The adapter for `spec`: 'zoo:<name>', 'timm:<name>' or a table with a `source` key. `default_seed`
    seeds the random initialisation of timm and torch-factory models whose spec gives no `init_seed`
    (recorded as `adapter.init_seed`); `cache_dir` is where zoo weights live (default: the cache root)."""
    if isinstance(spec, str):
        source, sep, model = spec.partition(":")
        if not sep:
            raise UserError(f"model spec {spec!r} needs a source prefix: 'zoo:<name>' or 'timm:<name>' (see list_models())")
        spec = get_source(source).from_string(model, spec)
    if not isinstance(spec, dict):
        raise UserError(f"model spec must be a string like 'timm:resnet50' or a table, got {spec!r}")
    source = get_source(spec.get("source"))
    source.check(spec)
    return source.load(spec, progress=progress, default_seed=default_seed, cache_dir=cache_dir)


def _seeded(spec: dict, default_seed: int | None, build) -> ModelAdapter:
    """build() under the spec's init_seed (else the suite's default seed), recorded as adapter.init_seed."""
    seed = spec.get("init_seed", default_seed)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(int(seed))
        adapter = build()
    adapter.init_seed = None if seed is None else int(seed)
    return adapter


@SOURCES.register
class ZooSource(ModelSource):
    name = "zoo"
    description = "the pinned digits zoo shipped with the package (authbench zoo list)"
    keys = frozenset({"model", "name", "epochs"})
    listing = "bench.zoo_catalog:zoo_models"  # its `models()`, importable without torch

    def load(self, spec, *, progress, default_seed, cache_dir):
        adapter = load_zoo_model(_required(spec, "model"), spec.get("epochs"), progress, cache_dir)
        if "name" in spec:
            adapter.name = spec["name"]
        return adapter

    def identity(self, spec, default_seed):
        try:
            return {"recipe": recipe_for(str(spec.get("model")), spec.get("epochs")).digest,
                    "pinned": pinned_identity(str(spec.get("model")), spec.get("epochs"))}
        except UserError:
            return {"recipe": None}  # reported when the model is loaded

    def models(self):
        return zoo_models()


@SOURCES.register
class TimmSource(ModelSource):
    name = "timm"
    description = "any timm architecture (pretrained = true needs hub access; checkpoint = local file)"
    keys = frozenset({"model", "name", "pretrained", "num_classes", "checkpoint", "kwargs", "input_size", "mean",
                      "std", "arch", "init_seed", "resize", "interpolation", "loader"})
    pattern = "timm:<name>"

    def load(self, spec, *, progress, default_seed, cache_dir):
        return _seeded(spec, default_seed, lambda: _load_timm(spec))

    def identity(self, spec, default_seed):
        return {"init_seed": spec.get("init_seed", default_seed)}


@SOURCES.register
class HFSource(ModelSource):
    name = "hf"
    description = ("transformers AutoModelForImageClassification (pretrained by default; pretrained = false + config "
                   "table for random weights; MambaVision needs CUDA + mamba-ssm and trust_remote_code = true)")
    keys = frozenset(HF_KEYS)
    pattern = "hf:<hub name or dir>"

    def load(self, spec, *, progress, default_seed, cache_dir):
        return load_hf(spec, _preprocess, _load_checkpoint)


@SOURCES.register
class TorchSource(ModelSource):
    name = "torch"
    description = ("a table {source = 'torch', factory = 'pkg.mod:fn', kwargs, mean, std, input_size, checkpoint}"
                   " (e.g. torchvision.models:resnet18)")
    keys = frozenset({"factory", "name", "kwargs", "checkpoint", "input_size", "mean", "std", "init_seed", "loader",
                      "arch"})
    pattern = "torch:<module:function>"

    def from_string(self, model, spec):
        raise UserError(
            f"model {spec!r} needs mean, std and input_size; give it as a table "
            "{source = 'torch', factory = 'pkg.mod:fn', mean = [...], std = [...], input_size = [c, h, w]}"
        )

    def load(self, spec, *, progress, default_seed, cache_dir):
        return _seeded(spec, default_seed, lambda: _load_factory(spec))

    def identity(self, spec, default_seed):
        return {"init_seed": spec.get("init_seed", default_seed)}


@SOURCES.register
class PythonSource(ModelSource):
    name = "python"
    description = ("a table {source = 'python', factory = 'pkg.mod:fn', package = 'pip_pkg', member = "
                   "'path/in/package.pth' (or checkpoint = 'file')} (e.g. bench.models.efficientnet_lite:efficientnet_lite)")
    keys = frozenset(PYTHON_KEYS)
    pattern = "python:<module:function>"

    def from_string(self, model, spec):
        raise UserError(f"model {spec!r} needs a table {{source = 'python', factory = 'pkg.mod:fn', "
                        "package = 'pip_package', member = 'path/in/package.pth'}")

    def load(self, spec, *, progress, default_seed, cache_dir):
        return load_python(spec, factory_module, _preprocess, _load_checkpoint)

    def identity(self, spec, default_seed):
        if "package" not in spec or "member" not in spec:
            return {}
        try:
            return {"file": file_digest(weights_path(spec, model_label(spec)))}
        except UserError:
            return {"file": None}  # reported when the model is loaded


class _FileSource(ModelSource):
    """A model file converted to torch: 'source:<path>' or a table with `path`."""

    def from_string(self, model, spec):
        return {"source": self.name, "path": model}

    def identity(self, spec, default_seed):
        if not spec.get("path"):
            return {}
        path = Path(str(spec["path"])).expanduser()
        return {"file": file_digest(path) if path.is_file() else None}


@SOURCES.register
class TFLiteSource(_FileSource):
    name = "tflite"
    description = "a TFLite flatbuffer as a float32 torch module (table keys: drop_background, ...)"
    keys = frozenset(TFLITE_KEYS)
    pattern = "tflite:<path>"

    def load(self, spec, *, progress, default_seed, cache_dir):
        return load_tflite(spec, _preprocess)


@SOURCES.register
class ONNXSource(_FileSource):
    name = "onnx"
    description = "an ONNX file through onnx2torch (a table with mean and std)"
    keys = frozenset(ONNX_KEYS)
    pattern = "onnx:<path>"

    def load(self, spec, *, progress, default_seed, cache_dir):
        return load_onnx(spec, _preprocess)


@SOURCES.register
class KitSource(ModelSource):
    name = "kit"
    description = "a model of a pinned kit (authbench kit list; files fetched or imported first)"
    keys = frozenset({"model", "name"})
    pattern = "kit:<kit>/<model>"

    def label(self, spec):
        return str(spec.get("name") or str(spec.get("model")).rsplit("/", 1)[-1])

    def load(self, spec, *, progress, default_seed, cache_dir):
        """The kit's manifest spec with kit files as cache paths (bench.kits)."""
        resolved = resolve_model(KIT_PREFIX + str(_required(spec, "model")), cache_dir)
        adapter = load_model(resolved.spec, progress, default_seed=default_seed, cache_dir=cache_dir)
        adapter.name = self.label(spec)
        return adapter

    def identity(self, spec, default_seed):
        return {"kit": model_identity(KIT_PREFIX + str(spec.get("model")))}


def from_module(
    module: nn.Module,
    name: str,
    mean: Sequence[float],
    std: Sequence[float],
    input_size: Sequence[int],
    arch: str | None = None,
) -> ModelAdapter:
    """Wrap a plain torch module that takes normalized (N, C, H, W) input."""
    arch = arch or f"torch/{type(module).__module__}.{type(module).__qualname__}"
    return ModelAdapter(name, module, _preprocess(name, mean, std, input_size), arch, "torch")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _kwargs(spec: dict, label: str) -> dict:
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise UserError(f"model {label!r}: kwargs must be a table, got {kwargs!r}")
    return dict(kwargs)


def _build(fn, kwargs: dict, label: str) -> nn.Module:
    """Call a model constructor, turning bad keyword arguments into a UserError."""
    try:
        return fn(**kwargs)
    except TypeError as e:
        raise UserError(f"model {label!r}: bad arguments {kwargs!r} ({_first_line(e)})") from None


def _required(spec: dict, key: str) -> Any:
    if key not in spec:
        raise UserError(f"model spec {spec!r} needs a {key!r} key")
    return spec[key]


def _preprocess(label: str, mean, std, input_size, extra: dict | None = None, resize=None,
                interpolation=None) -> Preprocess:
    """Validated Preprocess: input_size (C, H, W); mean/std with 1 or C entries, std > 0; resize an
    int (shorter side) or [h, w]; interpolation a name or PIL resample code."""
    try:
        size = tuple(int(v) for v in input_size)
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise UserError(f"model {label!r}: mean/std must be lists of numbers and input_size [c, h, w] integers") from None
    if len(size) != 3 or min(size) < 1:
        raise UserError(f"model {label!r}: input_size must be [c, h, w] with positive entries, got {list(input_size)}")
    for key, vals in (("mean", mean), ("std", std)):
        if len(vals) not in (1, size[0]):
            raise UserError(f"model {label!r}: {key} needs 1 or {size[0]} values (one per channel), got {len(vals)}")
    if min(std) <= 0:
        raise UserError(f"model {label!r}: std must be positive, got {list(std)}")
    if resize is not None:
        ok = isinstance(resize, int) or (isinstance(resize, (list, tuple)) and len(resize) == 2
                                         and all(isinstance(v, int) for v in resize))
        if not ok or min([resize] if isinstance(resize, int) else resize) < 1:
            raise UserError(f"model {label!r}: resize must be an int (shorter side) or [h, w], got {resize!r}")
        resize = resize if isinstance(resize, int) else tuple(resize)
    if interpolation is not None:
        interpolation = interpolation_name(interpolation)
    return Preprocess(mean, std, size, extra or {}, resize, interpolation)


def _load_timm(spec: dict) -> ModelAdapter:
    try:
        import timm
    except ImportError:
        raise UserError(f"model {spec.get('name', spec.get('model'))!r} needs timm: {install_hint('vision')}") from None

    model = str(_required(spec, "model"))
    label = spec.get("name", model)
    if not timm.is_model(model):
        close = difflib.get_close_matches(model, timm.list_models(), n=5, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
        raise UserError(f"unknown timm model {model!r}; {hint}")
    kwargs = _kwargs(spec, label)
    if "num_classes" in spec:
        kwargs["num_classes"] = int(spec["num_classes"])
    pretrained = bool(spec.get("pretrained", False))
    try:  # seeded by load_model (init_seed, else the suite's default seed)
        module = _build(functools.partial(timm.create_model, model, pretrained=pretrained), kwargs, label)
    except (OSError, RuntimeError) as e:
        if not pretrained:
            raise
        raise UserError(
            f"could not load pretrained weights for timm model {model!r} ({_first_line(e)}); "
            "set pretrained = false and give a local checkpoint"
        ) from None
    if "checkpoint" in spec:
        _load_checkpoint(module, spec["checkpoint"], label, spec.get("loader"))
    cfg = timm.data.resolve_data_config({}, model=module)
    pre = _preprocess(
        label,
        spec.get("mean", cfg["mean"]),
        spec.get("std", cfg["std"]),
        spec.get("input_size", cfg["input_size"]),
        {k: cfg[k] for k in ("interpolation", "crop_pct", "crop_mode") if k in cfg},
        spec.get("resize"),
        spec.get("interpolation"),
    )
    arch = spec.get("arch") or f"timm/{timm.models.get_arch_name(model)}"
    return ModelAdapter(label, module, pre, str(arch), "timm")


def _load_factory(spec: dict) -> ModelAdapter:
    factory = str(_required(spec, "factory"))
    mod_name, sep, fn_name = factory.partition(":")
    if not sep or not mod_name or not fn_name or ":" in fn_name:
        raise UserError(f"bad model factory {factory!r}; expected 'package.module:function'")
    label = spec.get("name", factory)
    missing = [k for k in ("mean", "std", "input_size") if k not in spec]
    if missing:
        raise UserError(f"model {label!r} (factory {factory!r}) needs {', '.join(missing)}: torch factories have no defaults")
    module, kwargs = factory_module(spec, label)
    if "checkpoint" in spec:
        _load_checkpoint(module, spec["checkpoint"], label, spec.get("loader"))
    arch = spec.get("arch") or f"torch/{factory}" + (json.dumps(kwargs, sort_keys=True) if kwargs else "")
    return ModelAdapter(label, module, _preprocess(label, spec["mean"], spec["std"], spec["input_size"]), arch, "torch")


def factory_module(spec: dict, label: str) -> tuple[nn.Module, dict]:
    """The module built by the spec's `factory` ('package.module:function') with its `kwargs`, and the kwargs."""
    factory = str(_required(spec, "factory"))
    mod_name, sep, fn_name = factory.partition(":")
    if not sep or not mod_name or not fn_name or ":" in fn_name:
        raise UserError(f"bad model factory {factory!r}; expected 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except AttributeError:
        raise UserError(f"bad model factory {factory!r}: module {mod_name!r} has no {fn_name!r}") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed to import (ImportError or its own error)
        raise UserError(f"bad model factory {factory!r}: cannot import {mod_name!r} ({_first_line(e)}); {IMPORT_HINT}") from None
    if not callable(fn):
        raise UserError(f"bad model factory {factory!r}: {fn_name!r} is not callable")
    kwargs = _kwargs(spec, label)
    try:
        module = _build(fn, kwargs, label)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's factory failed: one line naming it
        raise UserError(f"model factory {factory!r} for model {label!r} raised {_first_line(e)}") from None
    if not isinstance(module, nn.Module):
        raise UserError(f"model factory {factory!r} returned {type(module).__name__}, not a torch.nn.Module")
    return module, kwargs


IMPORT_HINT = ("modules are imported from the suite file's folder, the folders in its [models] python_path "
               "(relative to the suite file) and PYTHONPATH")

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "state", "module", "weights")
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel; torch.compile


def _describe(obj) -> str:
    if isinstance(obj, dict):
        keys = ", ".join(repr(k) for k in list(obj)[:6]) + (", ..." if len(obj) > 6 else "")
        return f"a dict with keys {keys}" if obj else "an empty dict"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} item(s)"
    return f"a {type(obj).__name__}"


def unwrap_state_dict(obj):
    """The name -> tensor mapping inside the common checkpoint wrappers: {'state_dict': ...}, {'model': ...},
    {'net': ...} (and the other WRAPPER_KEYS), a one-element list, keys prefixed 'module.' or '_orig_mod.';
    None when there is none."""
    for _ in range(4):  # wrappers nest (e.g. {'model': {'state_dict': ...}})
        if isinstance(obj, (list, tuple)) and len(obj) == 1:
            obj = obj[0]
        elif isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), (dict, list, tuple))), None)
            if inner is None:
                return None
            obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def _read_checkpoint(path: Path, label: str, loader: str | None):
    if loader:
        mod_name, sep, fn_name = loader.partition(":")
        if not sep or not mod_name or not fn_name:
            raise UserError(f"model {label!r}: bad loader {loader!r}; expected 'package.module:function'")
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except ImportError as e:
            raise UserError(f"model {label!r}: cannot load loader {loader!r} ({_first_line(e)}); {IMPORT_HINT}") from None
        except AttributeError as e:
            raise UserError(f"model {label!r}: cannot load loader {loader!r} ({_first_line(e)})") from None
        try:
            return fn(str(path))
        except Exception as e:  # the user's loader: its failure is theirs to fix
            raise UserError(f"model {label!r}: loader {loader!r} failed on {str(path)!r}: {_first_line(e)}") from None
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is the user's to fix
        import pickle

        if isinstance(e, pickle.UnpicklingError) or "weights_only" in str(e) or "Weights only" in str(e):
            raise UserError(f"cannot read checkpoint {str(path)!r} for model {label!r}: it is not a safetensors file or "
                            "a torch state dict of plain tensors (reading it would unpickle arbitrary objects, which "
                            "can run code, so it is refused); convert it to .safetensors, or give the model spec a "
                            "loader = \"module:function\" that reads this format into a state dict "
                            "(docs/own-models.md)") from None
        raise UserError(f"cannot read checkpoint {str(path)!r} for model {label!r}: {_first_line(e)}") from None


def _load_checkpoint(module: nn.Module, path: str | Path, label: str, loader: str | None = None) -> None:
    """Load a local checkpoint into `module` by torch's own rules (e.g. BatchNorm state saved before
    `num_batches_tracked` existed loads), unwrapping the common wrappers; a file that does not fit is a
    one-line error naming the first missing / unexpected keys and shape mismatches. `loader`
    ('module:function', path -> state dict) reads formats the harness does not know."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} for model {label!r} does not exist")
    raw = _read_checkpoint(path, label, loader)
    state = unwrap_state_dict(raw)
    if state is None:
        raise UserError(f"checkpoint {str(path)!r} for model {label!r} holds no state dict (name -> tensor): found "
                        f"{_describe(raw)}; give the spec a loader = 'module:function' for this format")
    expected = module.state_dict()
    mismatched = [k for k, v in expected.items() if k in state and state[k].shape != v.shape]
    # torch decides what may be absent (e.g. BatchNorm's num_batches_tracked in old files); the module is
    # discarded when anything is reported below
    result = module.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    problems = [f"missing {k}" for k in result.missing_keys if k not in mismatched]
    problems += [f"unexpected {k}" for k in result.unexpected_keys]
    problems += [f"{k} has shape {tuple(state[k].shape)}, model expects {tuple(expected[k].shape)}" for k in mismatched]
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UserError(f"checkpoint {str(path)!r} does not fit model {label!r}: {'; '.join(problems[:3])}{more}")
