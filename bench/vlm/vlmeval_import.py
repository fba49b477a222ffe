"""Import VLMEvalKit lazily and undo its process-wide SSL change.

`import vlmeval` sets `ssl._create_default_https_context = ssl._create_unverified_context`,
turning certificate verification off for every HTTPS connection of the process, and
`vlmeval.vlm` calls `torch.set_grad_enabled(False)` for the whole process. The harness imports
it only on the VLM path, through this function, and puts both back right after.
"""

from __future__ import annotations

import importlib
import ssl

import torch

from bench.errors import UserError, install_hint


def import_vlmeval(module: str = "vlmeval"):
    """`import <module>` (a vlmeval submodule) with SSL verification and autograd left as they were."""
    saved, grad = ssl._create_default_https_context, torch.is_grad_enabled()
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"the MMBench suite needs VLMEvalKit ({install_hint('vlm')}): {exc}") from None
    finally:
        ssl._create_default_https_context = saved
        torch.set_grad_enabled(grad)
