"""authbench: a benchmark harness for model-specific authorization."""

__version__ = "0.1.0"
