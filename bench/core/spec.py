"""Self-contained job specs: what leaves the driver for a remote worker, and what comes back.

A `JobSpec` is a small record (a few kB): the suite as TOML text (its table after the command
line's --subset / --data-root / --random-weights, which live in that table) with its digest, the
job's id, the run options in force, the cells of the job already written, the package version,
and the driver's working directory, import path and AUTHBENCH_* environment. Nothing large is
pickled: no model, no tensor, no split. A worker rebuilds the suite from the text, checks its
digest, re-plans it with the same options and finds the job by id (bench.core.engine.run_specs).

A `JobResult` is what a worker sends back: the job's rows as JSON dicts (only the driver writes
them) and the counters the run's summary line adds up (forward passes, encodings, cache hits).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.cache import digest
from bench.core.types import Job
from bench.errors import UserError
from bench.suite import Suite, load_suite

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

JOB_ID_LENGTH = 16
# environment a worker takes from the driver (never credentials: no tokens, no keys)
ENV_PREFIXES = ("AUTHBENCH_",)
ENV_NAMES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def job_id(job: Job) -> str:
    """A job's identity across processes: the digest of every field of the job as planned."""
    return digest(asdict(job))[:JOB_ID_LENGTH]


def job_label(job: Job) -> str:
    """One short human line naming a job (logs, failures, --plan)."""
    point = ",".join(f"{k}={v}" for k, v in job.point.items() if k != "psnr_mode") or "-"
    attack = job.attack if isinstance(job.attack, str) else (job.attack or {}).get("name", "?")
    task = job.extra.get("task") if isinstance(job.extra, dict) else None
    return " ".join(str(p) for p in (job.protocol, job.defense, point, job.release, attack,
                                     f"auth={job.authorized or '-'}", f"trial={job.trial}", task) if p is not None)


# -- the suite as TOML text ---------------------------------------------------------------------
def _toml_value(value, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v, where)}" for k, v in value.items()) + "}"
    raise UserError(f"suite value {value!r} at {where} cannot be sent to a worker (only strings, numbers, booleans, "
                    f"lists and tables); write it as a string")


def suite_toml(suite: Suite) -> str:
    """The suite's table as TOML text (one `key = inline table` line per section), checked to parse
    back to the same table (same digest)."""
    text = "".join(f"{json.dumps(str(k))} = {_toml_value(v, k)}\n" for k, v in suite.raw.items())
    if digest(tomllib.loads(text))[:16] != suite.digest:  # pragma: no cover - a value TOML cannot hold
        raise UserError(f"suite {suite.name!r} does not survive a TOML round trip; remote executors need a plain suite")
    return text


# -- the spec -----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class JobSpec:
    job: str  # job_id of the job as the driver planned it
    label: str
    suite_name: str
    suite_file: str  # the suite file's name (its stem names a suite without [suite] name)
    suite_toml: str
    suite_digest: str
    options: dict  # RunOptions in force, as JSON values (filters, batch size, device, threads, cache_dir)
    done: tuple[str, ...] = ()  # cells of this job already in the results file
    out_dir: str = ""
    version: str = ""  # authbench version of the driver
    cwd: str = ""
    sys_path: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)

    @property
    def context_key(self) -> str:
        """Jobs with one context key share one worker context (models loaded once per process), across runs
        of the same suite, options and data: the results folder is not part of it (a worker points the
        context at each spec's folder), so a long-lived worker serves the next run of the suite warm."""
        return digest([self.suite_digest, self.options, self.cwd, self.version])[:16]

    def suite(self) -> Suite:
        """The suite rebuilt from the text, verified against the driver's digest and name."""
        user = os.getuid() if hasattr(os, "getuid") else 0
        folder = Path(tempfile.gettempdir()) / f"authbench-spec-{user}" / digest(self.suite_toml)[:16]  # by content
        path = folder / (Path(self.suite_file).stem + ".toml")
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{path.name}.{os.getpid()}.tmp"
            tmp.write_text(self.suite_toml)
            os.replace(tmp, path)
        suite = load_suite(str(path))
        if suite.digest != self.suite_digest or suite.name != self.suite_name:
            raise UserError(f"suite {self.suite_name!r}: the worker rebuilt digest {suite.digest} ({suite.name!r}), the "
                            f"driver sent {self.suite_digest}; driver and worker must run the same authbench")
        return suite


def environment() -> dict:
    """The driver's AUTHBENCH_* and offline settings, for workers that do not inherit its environment."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}


@dataclass(frozen=True, kw_only=True)
class JobResult:
    job: str
    rows: list = field(default_factory=list)  # Row.to_json() dicts
    forwards: int = 0
    encodings: int = 0
    cache: dict = field(default_factory=lambda: {"hits": 0, "misses": 0, "corrupt": 0})
    wall_s: float = 0.0  # time inside the job (rebuilding a context included, on a worker)
    worker: str = ""  # host:pid
    error: str | None = None  # one line; the traceback is in the worker's log
    user_error: bool = False  # bad input (exit 2), not a worker failure
