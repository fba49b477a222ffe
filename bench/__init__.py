"""authbench: a benchmark harness for model-specific authorization.

    import bench
    results = bench.evaluate("digits", threads=1)   # see bench.api
"""

__version__ = "0.1.0"

from bench.api import Results, evaluate  # noqa: E402  (the public API; after __version__, which provenance reads)

__all__ = ["evaluate", "Results", "__version__"]
