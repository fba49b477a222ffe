"""Kits: pinned external files (public source, sha256, size, license, citation) and the datasets and models
they provide to suites (`kit:<kit>/<name>`). See docs/kits.md."""

from bench.kits.manifest import Kit, KitDataset, KitFile, KitModel, PypiSource, Reported, UrlSource, available_kits, get_kit, load_manifest
from bench.kits.resolve import check_suite, is_kit, resolve_dataset, resolve_model

__all__ = ["Kit", "KitFile", "KitDataset", "KitModel", "UrlSource", "PypiSource", "Reported", "available_kits",
           "get_kit", "load_manifest", "check_suite", "is_kit", "resolve_dataset", "resolve_model"]
