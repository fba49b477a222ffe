"""transformers image classifiers (`AutoModelForImageClassification`) as model adapters: source "hf".

    { source = "hf", model = "microsoft/resnet-50", pretrained = true }
    { source = "hf", model = "checkpoints/cifar10/resnet-50" }              # a local save_pretrained dir
    { source = "hf", model = "tiny-vit", pretrained = false,
      config = { model_type = "vit", image_size = 32, patch_size = 8, hidden_size = 32, ... } }

`pretrained = true` (the default) loads weights from the hub or a local directory;
`pretrained = false` builds random weights from the model's config (`AutoConfig`, or the
`config` table with its `model_type`, which needs no hub), seeded by `init_seed`.
Preprocessing comes from the model's `AutoImageProcessor` (size, crop, mean/std, resample),
else from its config (MambaVision keeps mean/std/crop_pct there), else ImageNet defaults;
`input_size`, `mean`, `std`, `resize`, `interpolation` in the spec override it.
Logits are `outputs.logits`: the module is wrapped so that it maps a tensor to logits.

MambaVision (`nvidia/MambaVision-T-1K`) loads only with `trust_remote_code = true` on a CUDA
machine with `mamba-ssm` installed; elsewhere it is a one-line error.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

import torch
import torch.nn as nn

from bench.errors import UserError, install_hint
from bench.models.adapter import ModelAdapter

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# remote-code families whose kernels need CUDA, with the module they import
CUDA_ONLY = {"mambavision": "mamba_ssm"}
HF_KEYS = {"model", "name", "pretrained", "config", "num_classes", "checkpoint", "input_size", "mean", "std",
           "resize", "interpolation", "arch", "trust_remote_code", "revision", "init_seed"}


class HFLogits(nn.Module):
    """Wrap a transformers classifier so that module(x) returns the logits tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        if isinstance(out, torch.Tensor):
            return out
        return out["logits"] if isinstance(out, dict) else out.logits


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def check_runtime(model: str, trust_remote_code: bool) -> None:
    """One-line errors for models this machine cannot run (CUDA-only remote code)."""
    for family, module in CUDA_ONLY.items():
        if family in model.lower():
            if not trust_remote_code:
                raise UserError(f"hf model {model!r} ships its own code: set trust_remote_code = true in its spec")
            if not torch.cuda.is_available():
                raise UserError(f"hf model {model!r} needs a CUDA machine ({module} kernels are CUDA-only); "
                                "this machine has no CUDA device: drop it with --model or run on a GPU machine")
            if importlib.util.find_spec(module) is None:
                raise UserError(f"hf model {model!r} needs {module}: pip install {module.replace('_', '-')} "
                                "(CUDA build) on this GPU machine")


# The architectures of the NE paper's hub backbones (their published config.json, minus the weights),
# so `pretrained = false` (`--random-weights` smoke runs) builds them where the hub is unreachable.
# facebook/deit-base-patch16-224 is published as a ViTForImageClassification.
OFFLINE_ARCHITECTURES = {
    "microsoft/resnet-50": {"model_type": "resnet", "num_labels": 1000},
    "google/vit-base-patch16-224": {"model_type": "vit", "num_labels": 1000},
    "microsoft/swinv2-tiny-patch4-window8-256": {"model_type": "swinv2", "image_size": 256, "window_size": 8,
                                                  "num_labels": 1000},
    "facebook/deit-base-patch16-224": {"model_type": "vit", "num_labels": 1000},
}


def _config(spec: dict, model: str, trc: bool):
    from transformers import AutoConfig

    table = spec.get("config")
    try:
        if table is not None:
            if not isinstance(table, dict) or "model_type" not in table:
                raise UserError(f"hf model {model!r}: config must be a table with a model_type, got {table!r}")
            config = _from_table(table)
        else:
            config = AutoConfig.from_pretrained(model, trust_remote_code=trc, revision=spec.get("revision"))
    except (OSError, ValueError, KeyError) as e:
        if table is None and not spec.get("pretrained", True) and model in OFFLINE_ARCHITECTURES:
            config = _from_table(OFFLINE_ARCHITECTURES[model])  # no hub: the published architecture, random weights
        else:
            raise UserError(f"cannot get the config of hf model {model!r} ({_first_line(e)}); give a local model "
                            "directory, a config table, or run where the hub (or its cache) is reachable") from None
    if "num_classes" in spec:
        config.num_labels = int(spec["num_classes"])
    return config


def _from_table(table: dict):
    from transformers import AutoConfig

    kwargs = dict(table)
    return AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)


def _build(spec: dict, model: str, config, trc: bool) -> nn.Module:
    from transformers import AutoModelForImageClassification

    pretrained = bool(spec.get("pretrained", True)) and spec.get("config") is None
    if pretrained:
        try:
            return AutoModelForImageClassification.from_pretrained(
                model, config=config, trust_remote_code=trc, revision=spec.get("revision"),
                ignore_mismatched_sizes="num_classes" in spec,
            )
        except (OSError, ValueError) as e:
            raise UserError(f"could not load pretrained hf model {model!r} ({_first_line(e)}); use a local "
                            "directory, or pretrained = false for random weights") from None
    if not getattr(config, "architectures", None):  # families with several heads (DeiT): the plain classifier
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as heads

        names = heads.get(config.model_type)
        if isinstance(names, (tuple, list)):
            config.architectures = [names[0]]
    seed = int(spec.get("init_seed", 0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForImageClassification.from_config(config, trust_remote_code=trc)


def _size_hw(size) -> tuple[int, int] | int | None:
    """(h, w) from {"height", "width"}, an int for {"shortest_edge"}; None when absent."""
    if size is None:
        return None
    get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
    if get("height") and get("width"):
        return int(get("height")), int(get("width"))
    if get("shortest_edge"):
        return int(get("shortest_edge"))
    return None


def processor_preprocess(processor) -> dict:
    """mean, std, input size (h, w), resize and interpolation from a transformers image processor."""
    out: dict = {}
    if getattr(processor, "image_mean", None) is not None:
        out["mean"], out["std"] = tuple(processor.image_mean), tuple(processor.image_std)
    size = _size_hw(getattr(processor, "size", None)) if getattr(processor, "do_resize", True) else None
    crop = _size_hw(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else None
    crop_pct = getattr(processor, "crop_pct", None)
    if isinstance(size, int) and crop_pct and size < 384:  # ConvNext-style: shortest edge / crop_pct, crop to it
        out["resize"], out["hw"] = int(size / crop_pct), (size, size)
    elif isinstance(size, int):
        out["resize"], out["hw"] = size, crop if isinstance(crop, tuple) else (size, size)
    elif isinstance(size, tuple):
        out["resize"], out["hw"] = size, crop if isinstance(crop, tuple) else size
    if getattr(processor, "resample", None) is not None:
        out["interpolation"] = processor.resample
    return out


def config_preprocess(config) -> dict:
    """The same facts from a model config (MambaVision keeps mean/std/crop_pct there), else defaults."""
    image_size = getattr(config, "image_size", None) or 224
    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    out = {"mean": tuple(getattr(config, "mean", None) or IMAGENET_MEAN),
           "std": tuple(getattr(config, "std", None) or IMAGENET_STD), "hw": tuple(int(v) for v in hw)}
    crop_pct = getattr(config, "crop_pct", None)
    if crop_pct:
        out["resize"] = math.floor(out["hw"][0] / crop_pct) if getattr(config, "crop_mode", "center") != "squash" \
            else tuple(math.floor(v / crop_pct) for v in out["hw"])
    if getattr(config, "interpolation", None):
        out["interpolation"] = config.interpolation
    return out


def _processor(spec: dict, model: str, trc: bool):
    if spec.get("config") is not None:
        return None
    try:
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(model, trust_remote_code=trc, revision=spec.get("revision"))
    except (OSError, ValueError, KeyError, ImportError):
        return None  # remote-code models without a processor keep their facts in the config


def load_hf(spec: dict, preprocess_fn, load_checkpoint):
    """The adapter for an "hf" spec (preprocess_fn / load_checkpoint: the shared validators in sources)."""
    model = str(spec.get("model", ""))
    if not model:
        raise UserError(f"model spec {spec!r} needs a 'model' key (hub name or local directory)")
    label = spec.get("name", model)
    trc = bool(spec.get("trust_remote_code", False))
    check_runtime(model, trc)
    if Path(model).expanduser().is_dir():
        model = str(Path(model).expanduser())
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UserError(f"source 'hf' needs transformers: {install_hint('text')}") from None
    config = _config(spec, model, trc)
    module = _build(spec, model, config, trc).eval()
    if "checkpoint" in spec:
        load_checkpoint(module, spec["checkpoint"], label)
    processor = _processor(spec, model, trc)
    facts = config_preprocess(config)
    if processor is not None:
        facts.update(processor_preprocess(processor))
    channels = int(getattr(config, "num_channels", 3) or 3)
    input_size = spec.get("input_size", (channels, *facts["hw"]))
    resize = spec.get("resize", facts.get("resize"))
    interpolation = spec.get("interpolation", facts.get("interpolation"))
    pre = preprocess_fn(label, spec.get("mean", facts["mean"]), spec.get("std", facts["std"]), input_size,
                        resize=resize, interpolation=interpolation)
    arch = spec.get("arch") or f"hf/{getattr(config, 'model_type', type(module).__name__)}-{structure_digest(module)}"
    return ModelAdapter(label, HFLogits(module), pre, str(arch), "hf")


def structure_digest(module: nn.Module) -> str:
    """8 hex digits over parameter and buffer names and shapes: equal for the same architecture."""
    text = ";".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(module.state_dict().items()))
    return hashlib.sha256(text.encode()).hexdigest()[:8]
