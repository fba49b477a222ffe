"""authbench: a benchmark harness for model-specific authorization.

    import bench
    results = bench.evaluate("digits-quick")   # see bench.api
"""

import importlib

__version__ = "0.1.0"

_API = ("evaluate", "Results")


def __getattr__(name: str):
    if name in _API:  # the public API, loaded on first use (PEP 562)
        return getattr(importlib.import_module("bench.api"), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")


__all__ = ["evaluate", "Results", "__version__"]
