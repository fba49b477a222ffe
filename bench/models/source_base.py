"""Model sources: the `ModelSource` interface and its registry (`SOURCES`, entry point `authbench.sources`).

A source turns one kind of model spec into a ModelAdapter. It declares, on its class, its `name` (the
spec's `source` and the prefix of a 'source:model' string), a one-line `description`, the spec-table
`keys` it reads (any other key is a one-line error), and how `authbench list models` shows it (`models`).
The built-ins (zoo, timm, hf, torch) live in bench.models.sources; a third-party source subclasses
ModelSource and registers under the `authbench.sources` entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from bench.data.base import file_digest
from bench.core.errors import UserError
from bench.core.registry import Registry


class ModelSource:
    name: ClassVar[str]
    description: ClassVar[str]
    keys: ClassVar[frozenset[str]] = frozenset()  # the spec-table keys it reads, besides `source`
    pattern: ClassVar[str] = ""  # how `authbench list models` shows it, e.g. "timm:<name>"
    # where `models()` lists more than the pattern: a light "module:function" giving the same lines without
    # importing the source's module (torch), so `authbench list models` stays light (bench.core.catalog)
    listing: ClassVar[str | None] = None

    def from_string(self, model: str, spec: str) -> dict:
        """The table of a 'source:model' string spec (a user error where the source needs a table)."""
        return {"source": self.name, "model": model}

    def label(self, spec: dict) -> str:
        """The label the model goes by in every row: its `name`, else its `model`."""
        return str(spec.get("name") or spec.get("model"))

    def check(self, spec: dict) -> None:
        """A spec table against the declared keys: one UserError line naming the unknown key(s)."""
        extra = set(spec) - set(self.keys) - {"source"}
        if extra:
            raise UserError(f"model spec {spec!r} has key(s) {', '.join(sorted(extra))} not used by source "
                            f"{self.name!r}; valid keys: {', '.join(sorted(self.keys))}")

    def load(self, spec: dict, *, progress: bool, default_seed: int | None, cache_dir: Path | None):
        """The ModelAdapter of a checked spec table."""
        raise NotImplementedError

    def identity(self, spec: dict, default_seed: int | None) -> dict:
        """What determines the weights beyond the spec, known without loading (e.g. a recipe digest, the
        seed of a random initialisation); a local checkpoint's digest is added for every source."""
        return {}

    def models(self) -> dict[str, str]:
        """`authbench list models` lines: spec pattern -> description."""
        return {self.pattern or f"{self.name}:<model>": self.description}


SOURCES: Registry[type[ModelSource]] = Registry("model source", "authbench.sources", base=ModelSource, paths=False,
                                                modules=("bench.models.sources",))


def get_source(name) -> ModelSource:
    return SOURCES.get(str(name))()


def spec_identity(spec: str | dict, default_seed: int | None = None) -> dict:
    """What determines a model's weights, known without loading it: the spec, its source's identity (the
    seed of a random initialisation, a zoo model's recipe digest), a local checkpoint's file digest. Results
    are bound to it, so a model changed behind the same label (other epochs, another file) is never reused."""
    if isinstance(spec, str):
        source, _, model = spec.partition(":")
        try:
            spec = get_source(source).from_string(model, spec)
        except UserError:  # no such source, or one that needs a table: reported when the model is loaded
            spec = {"source": source, "model": model}
    out: dict = {"spec": spec}
    if spec.get("source") in SOURCES:
        out.update(get_source(spec["source"]).identity(spec, default_seed))
    checkpoint = spec.get("checkpoint")
    if checkpoint:
        path = Path(str(checkpoint)).expanduser()
        out["checkpoint"] = file_digest(path) if path.is_file() else None
    return out
