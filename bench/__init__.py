"""authbench: a benchmark harness for model-specific authorization.

    import bench
    results = bench.evaluate("digits-quick")   # see bench.api
"""

__version__ = "0.1.0"



def __getattr__(name):  # the public API, imported on first use: `authbench --help` and `list` need no torch
    if name in ("evaluate", "Results"):
        from bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")


__all__ = ["evaluate", "Results", "__version__"]
