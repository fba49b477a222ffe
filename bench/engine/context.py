"""What a protocol receives to plan and run jobs: the `EvalContext`.

It holds the suite and the run's options, the lazily loaded splits, the model store (each model
loaded once and kept on the compute device, `device`: the one every protocol and training step uses),
the cached forward-pass service (`forwards`, bench.core.forward) and the seeds. Protocols use it through its public methods only; they never see the engine.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import torch

from bench.core.cache import cache_root
from bench.core.forward import ForwardService
from bench.data import load_dataset
from bench.core.errors import UserError
from bench.kits.resolve import check_suite, resolve_dataset
from bench.models.adapter import ModelAdapter, resolve_device
from bench.models.sources import default_init_seed, load_model, model_label, spec_identity
from bench.suite import Suite

DEFAULT_BATCH_SIZE = 256
PRECISIONS = ("float32", "bfloat16", "float16")


def add_import_path(suite: Suite) -> None:
    """Put the suite's import folders (its own folder, [models] python_path) at the front of sys.path, and the
    current folder at its end, so its `factory = "module:function"`, `loader` and `module:Class` defense modules
    import; folders that do not exist are left out (a worker rebuilds the suite elsewhere and gets the driver's
    import path instead)."""
    added = False
    for folder in reversed(suite.import_path):
        if folder.is_dir() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
            added = True
    cwd = str(Path.cwd())  # and the current folder, last, as `python -m` has it and `authbench rank` does
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
        added = True
    if added:
        importlib.invalidate_caches()


CPU_THREADS = 1  # torch intra-op threads per process on CPU unless --threads or [run] threads says


def default_threads(option, suite_value, device) -> tuple[int | None, str]:
    """(torch intra-op threads to set, where the number comes from) for a run: --threads, else the suite's
    [run] threads, else one per process on CPU (torch's own default, one per core, ran 3-5x slower in wall
    time and burnt ~5x the CPU on this project's 2-core machines, issue 26), else torch's own (None)."""
    for value, source in ((option, "--threads"), (suite_value, "suite [run] threads")):
        if value is not None:
            if int(value) < 1:
                raise UserError(f"threads must be >= 1, got {value}")
            return int(value), source
    if torch.device(device).type == "cpu":
        return CPU_THREADS, "one per process on CPU by default; --threads N to change"
    return None, "torch's default"


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What a user can override for one run (CLI flags, `bench.evaluate` keywords, suite [run])."""

    defenses: tuple[str, ...] = ()  # only these defense entries (by name or label)
    models: tuple[str, ...] = ()  # only these model labels (authorized and evaluated)
    authorized: tuple[str, ...] = ()  # only these authorized models (others are still evaluated)
    evaluated: tuple[str, ...] = ()  # only these evaluated models
    psnr: tuple[float, ...] = ()  # only these PSNR points
    releases: tuple[str, ...] = ()  # only these release formats
    full: bool = False  # also the suite's tier = "full" entries
    batch_size: int | None = None  # default: suite [run] batch_size, else 256
    device: str | None = None  # cpu | cuda | cuda:N | auto (default: suite [run] device, else auto)
    threads: int | None = None  # torch CPU threads (default: suite [run] threads, else 1 on CPU)
    precision: str | None = None  # forwards: float32 (default), or bfloat16 / float16 under torch.autocast
    channels_last: bool | None = None  # models and their inputs in channels-last memory format (default False)
    progress: bool = True
    cache_dir: Path | None = None
    trials: int | None = None  # at most this many trials per cell (--trials 1: the cheap ranking mode)
    loader: Callable | None = None  # replaces the protocol's model loader (tests, notebooks)
    allow_mixed: bool = False  # add rows to a results folder that holds another suite's rows


@dataclass
class EvalContext:
    suite: Suite
    options: RunOptions = field(default_factory=RunOptions)
    out_dir: Path | None = None  # the run folder (protocols that write artifacts put them under it)

    def __post_init__(self):
        run = self.suite.run
        size = self.options.batch_size if self.options.batch_size is not None else run.get("batch_size")
        self.batch_size = int(size if size is not None else DEFAULT_BATCH_SIZE)
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {self.batch_size}")
        self.device = resolve_device(self.options.device or run.get("device"))
        self._threads_before = torch.get_num_threads()
        self.threads, self.threads_source = default_threads(self.options.threads, run.get("threads"), self.device)
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        if self.options.trials is not None and int(self.options.trials) < 1:
            raise UserError(f"--trials must be >= 1, got {self.options.trials}")
        self.precision = str(self.options.precision or run.get("precision") or "float32")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision {self.precision!r} is unknown; valid choices: {', '.join(PRECISIONS)}")
        cl = self.options.channels_last if self.options.channels_last is not None else run.get("channels_last")
        self.channels_last = bool(cl)
        self.cache_root = Path(self.options.cache_dir) if self.options.cache_dir else cache_root()
        self.forwards = ForwardService(self.cache_root)  # the cached forward pass protocols call
        self.done: set[str] = set()  # cells already in the results file
        self.progress = self.options.progress and sys.stderr.isatty()  # bars only on a terminal (the engine logs)
        self.specs = {model_label(s): s for s in [*self.suite.authorized, *self.suite.evaluated]}
        add_import_path(self.suite)
        check_suite(self.suite.data, [*self.suite.authorized, *self.suite.evaluated], self.cache_root)
        entry_models = [model_label(m) for d in self.suite.defenses for m in d.models if ":" in m]
        for flag, labels, known in (("--model", self.options.models, self.specs),
                                    ("--authorized", self.options.authorized,
                                     [*map(model_label, self.suite.authorized), *entry_models]),
                                    ("--evaluated", self.options.evaluated, list(map(model_label, self.suite.evaluated)))):
            for m in labels:
                if m not in known:
                    raise UserError(f"{flag} {m!r} is not in suite {self.suite.name!r}; valid choices: "
                                    f"{', '.join(dict.fromkeys(known))}")
        keep, auth, ev = set(self.options.models), set(self.options.authorized), set(self.options.evaluated)
        self.authorized = [m for m in map(model_label, self.suite.authorized)
                           if (not keep or m in keep) and (not auth or m in auth)]
        self.evaluated = [m for m in map(model_label, self.suite.evaluated)
                          if (not keep or m in keep) and (not ev or m in ev)]
        self._models: dict[str, ModelAdapter] = {}
        self._memos: dict[str, dict] = {}

    def restore_threads(self) -> None:
        """torch's CPU thread count as it was before this context set `threads`."""
        torch.set_num_threads(self._threads_before)

    # -- how forwards run ---------------------------------------------------------------------
    @property
    def compute(self) -> dict:
        """The forward settings that change results (cache keys and row identities carry them); empty for
        the default float32, contiguous forwards, so their keys are as before."""
        out = {}
        if self.precision != "float32":
            out["precision"] = self.precision
        if self.channels_last:
            out["channels_last"] = True
        return out

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the compute device: through pinned memory with a non-blocking copy to a GPU."""
        if self.device.type == "cuda" and x.device.type == "cpu":
            return (x if x.is_pinned() else x.pin_memory()).to(self.device, non_blocking=True)
        return x.to(self.device)

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        """A batch as the models read it: channels-last when asked (encodings never see that layout)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def forward_mode(self):
        """The context model outputs are computed in: torch.inference_mode, and autocast at `precision`."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.precision != "float32":
            stack.enter_context(torch.autocast(self.device.type, dtype=getattr(torch, self.precision)))
        return stack

    # -- models ------------------------------------------------------------------------------
    def authorized_for(self, entry) -> list[str]:
        """The authorized models an entry protects: its `models` (validated), else all of the suite's.
        A spec with a source ("zoo:fhe-s0") is a model only this entry protects (e.g. FHE's)."""
        chosen = set(self.options.authorized)
        extra = [model_label(m) for m in entry.models if ":" in m and model_label(m) not in self.authorized
                 and (not chosen or model_label(m) in chosen)]
        self.specs.update({model_label(m): m for m in entry.models if ":" in m})
        for label in entry.models:
            if model_label(label) not in self.specs:
                raise UserError(f"defense {entry.name!r}: model {label!r} in 'models' is not in the suite; "
                                f"valid choices: {', '.join(self.specs)} or a spec such as 'zoo:fhe-s0'")
        labels = {model_label(m) for m in entry.models}
        return [a for a in self.authorized if not entry.models or a in labels] + extra

    def model(self, label: str) -> ModelAdapter:
        """The image model `label`, loaded once and moved to the compute device once."""
        if label not in self._models:
            adapter = load_model(self.specs[label], progress=self.progress, cache_dir=self.cache_root,
                                 default_seed=default_init_seed(self.suite.seed, label))
            adapter.name = label  # the suite's label names the model in every row
            self._models[label] = adapter.to(self.device)
            if self.channels_last:
                adapter.module.to(memory_format=torch.channels_last)
        return self._models[label]

    def model_identity(self, label: str) -> dict:
        """What determines model `label`'s weights, known without loading it (bench.models.sources.spec_identity)."""
        return spec_identity(self.specs[label], default_init_seed(self.suite.seed, label))

    # -- data --------------------------------------------------------------------------------
    def load_split(self, split_key: str, default: str):
        data = dict(self.suite.data)
        name = data.pop("dataset", None)
        if name is None:
            raise UserError(f"suite {self.suite.name!r}: [data] needs 'dataset = \"...\"'")
        split = data.pop(split_key, default)
        data.pop("split", None), data.pop("train_split", None)
        subset, subset_seed = int(data.pop("subset", 0)), int(data.pop("subset_seed", self.suite.seed))
        data.pop("encode_space", None)
        if str(name).startswith("kit:"):  # the kit's format and options, its files as cache paths
            if split_key != "split":  # a kit dataset is one set of files: never silently its own training data
                if not str(split).startswith("kit:"):
                    raise UserError(f"suite {self.suite.name!r}: {name} is a single evaluation set; the defense or "
                                    "attack asks for training data (attacker or defender images): name a kit "
                                    "dataset of other images, e.g. train_split = \"kit:cifar10-real/train\", or "
                                    "drop that entry")
                if str(split) == str(name):
                    raise UserError(f"suite {self.suite.name!r}: train_split {split!r} is the evaluated dataset "
                                    "itself; the attacker's data must be other images (e.g. kit:cifar10-real/train)")
                name, split = split, "train"
            resolved = resolve_dataset(name, self.cache_root)
            split = load_dataset(resolved.format, split, subset if split_key == "split" else 0, subset_seed,
                                 **{**resolved.options, **data})
            # the data identity names the kit and the sha256 of its files (not the cache's file times)
            split.content = f"kit:{resolved.kit}/{resolved.dataset}|{resolved.identity['files']}"
            return split
        return load_dataset(name, split, subset if split_key == "split" else 0, subset_seed, **data)

    @cached_property
    def data(self):
        """The evaluated split (read lazily, in batches)."""
        return self.load_split("split", "test")

    @cached_property
    def train_data(self):
        """The defender's (and attacker's) training split."""
        return self.load_split("train_split", "train")

    # -- seeds, memos ----------------------------------------------------------------------------
    def seed(self, trial: int = 0) -> int:
        return self.suite.seed + int(trial)

    def memo(self, namespace: str) -> dict:
        """A dict that lives as long as this context (a protocol's fitted defenses, suspect zoos)."""
        return self._memos.setdefault(namespace, {})
