"""How suites name kit contents: `kit:<kit>/<model>` model specs and `[data] dataset = "kit:<kit>/<dataset>"`.

A kit model resolves to its manifest spec with every `"kit-file:<path>"` value replaced by the file's
cache path; a kit dataset to its registered format and options with kit paths replaced the same way.
Both fail upfront, in one line naming the fetch and import commands, when the kit's files are missing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import UserError
from bench.kits.manifest import KIT_FILE, Kit, get_kit, thaw
from bench.kits.store import file_path, kit_dir, require

PREFIX = "kit:"


def is_kit(ref) -> bool:
    return isinstance(ref, str) and ref.startswith(PREFIX)


def split_ref(ref: str) -> tuple[str, str]:
    """'kit:<kit>/<item>' -> (kit, item)."""
    body = ref[len(PREFIX):] if ref.startswith(PREFIX) else ref
    kit, sep, item = body.partition("/")
    if not sep or not kit or not item:
        raise UserError(f"{ref!r} must name a kit and an entry of it: 'kit:<kit>/<name>' (see `authbench kit list`)")
    return kit, item


@dataclass(frozen=True, kw_only=True)
class ResolvedModel:
    kit: str
    model: str
    spec: dict  # the model spec with kit files as cache paths
    identity: dict  # kit name, manifest digest, the used files' sha256


@dataclass(frozen=True, kw_only=True)
class ResolvedDataset:
    kit: str
    dataset: str
    format: str
    options: dict  # the format's options (kit paths made absolute), num_classes, class_names
    identity: dict


def _replace(value, kit: Kit, cache: Path | None):
    if isinstance(value, str) and value.startswith(KIT_FILE):
        return str(file_path(kit, value[len(KIT_FILE):], cache))
    if isinstance(value, dict):
        return {k: _replace(v, kit, cache) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, kit, cache) for v in value]
    return value


def model_identity(ref: str) -> dict:
    """What determines a kit model's weights, known without the files: kit, manifest digest, files' sha256."""
    kit_name, model_name = split_ref(ref)
    kit = get_kit(kit_name)
    model = kit.model(model_name)
    # the spec and the files' content, not the whole manifest's digest: a citation or a note edited in the
    # manifest does not change what a model computes, so it does not invalidate results
    return {"kit": kit.name, "model": model_name, "spec": thaw(model.spec),
            "files": {p: kit.file(p).sha256 for p in model.files()}}


def resolve_model(ref: str, cache: Path | None = None, *, check: bool = True) -> ResolvedModel:
    kit_name, model_name = split_ref(ref)
    kit = get_kit(kit_name)
    model = kit.model(model_name)
    if check:
        require(kit, cache, model.files(), what=f"model {ref!r}")
    spec = _replace(thaw(model.spec), kit, cache)
    spec.setdefault("name", model_name)
    return ResolvedModel(kit=kit.name, model=model_name, spec=spec, identity=model_identity(ref))


def resolve_dataset(ref: str, cache: Path | None = None, *, check: bool = True) -> ResolvedDataset:
    kit_name, ds_name = split_ref(ref)
    kit = get_kit(kit_name)
    ds = kit.dataset(ds_name)
    files = kit.dataset_files(ds_name)
    if check:
        require(kit, cache, files, what=f"dataset {ref!r}")
    base = kit_dir(kit, cache)
    kit_paths = {f.path for f in kit.files}
    folders = {str(Path(p).parent) for p in kit_paths}
    folders |= {str(q) for p in kit_paths for q in Path(p).parents if str(q) != "."}

    def absolute(value):
        if isinstance(value, str) and (value in kit_paths or value.rstrip("/") in folders):
            return str(base / value)
        return value

    options = {k: absolute(v) for k, v in thaw(ds.options).items()}
    options["num_classes"] = ds.num_classes
    if ds.class_names:
        options["class_names"] = str(base / ds.class_names)
    identity = {"kit": kit.name, "dataset": ds_name,
                "files": hashlib.sha256(
                    "".join(f"{p}|{kit.file(p).sha256}\n" for p in sorted(files)).encode()).hexdigest()}
    return ResolvedDataset(kit=kit.name, dataset=ds_name, format=ds.format, options=options, identity=identity)


def suite_kits(data: dict, specs) -> list[tuple[str, str]]:
    """The ('dataset' | 'model', ref) pairs of a suite that name kits."""
    out = []
    if is_kit(data.get("dataset")):
        out.append(("dataset", data["dataset"]))
    if is_kit(data.get("train_split")):  # the attacker's / defender's images of a kit (kit:cifar10-real/train)
        out.append(("dataset", data["train_split"]))
    for spec in specs:
        if is_kit(spec):
            out.append(("model", spec))
        elif isinstance(spec, dict) and spec.get("source") == "kit":
            out.append(("model", PREFIX + str(spec.get("model"))))
    return out


def check_suite(data: dict, specs, cache: Path | None = None) -> None:
    """Upfront, before any job: every kit the suite names exists and its files are in the cache (one line
    naming `authbench kit fetch` / `kit import` otherwise)."""
    for kind, ref in suite_kits(data, specs):
        if kind == "dataset":
            resolve_dataset(ref, cache)
        else:
            resolve_model(ref, cache)
