"""The values that cross module boundaries: cells, jobs, result rows and their parts.

Every one is a small frozen dataclass built with keyword arguments and serialised in one
place (`to_json` / `from_json`), so a row's schema lives here and in docs/results.schema.json,
never in dict literals at call sites.

- `Cell`: what one result row measures: (defense, parameter point, release, attack, trial,
  authorized model, evaluated model) of a suite. Its key is the digest that resumable runs
  look up; it is the same digest the harness has always written, so old runs still resume.
- `Job`: cells that share one expensive step (one encoding of the data, one protected model,
  one fingerprint): the unit an executor runs.
- `Row`: one measured cell, with its `protocol`, metrics, encoding stats and `Provenance`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum

from bench.cache import digest
from bench.core.entry import legacy_protocol

CELL_KEY_LENGTH = 24
# Bump when a change to the harness moves measured results: rows written under another version are
# superseded (recomputed) on resume, never reused.
# 2: the first-layer deviation is the relative change of the layer's output (bias and mean included), and
#    unreachable PSNR targets of clipped / 8-bit releases stop where the PSNR stops falling
RESULTS_VERSION = 2


class Role(str, Enum):
    """How the evaluated model of a cell relates to the authorized one."""

    CLEAN = "clean"  # no defense: the baseline
    AUTHORIZED = "authorized"  # the model the data (or key) is for
    SAME_ARCH = "same-arch"  # same architecture, other weights
    UNAUTHORIZED = "unauthorized"  # another architecture, or a released artifact without its key
    REFERENCE = "reference"  # an unprotected reference the defense scores beside (FHE's plaintext model)
    POSITIVE = "positive"  # a suspect derived from the protected source (ownership)
    NEGATIVE = "negative"  # an independently trained suspect (ownership)
    SUMMARY = "summary"  # the ROC summary of an ownership job

    @classmethod
    def of(cls, *, authorized: str, evaluated: str, same_arch: bool) -> "Role":
        """The role rule every input-authorization protocol uses."""
        if not authorized:
            return cls.CLEAN
        if evaluated == authorized:
            return cls.AUTHORIZED
        return cls.SAME_ARCH if same_arch else cls.UNAUTHORIZED


@dataclass(frozen=True, kw_only=True)
class Cell:
    suite: str
    defense: str
    params: dict
    point: dict
    release: str
    attack: str
    authorized: str
    evaluated: str
    trial: int = 0
    extra: dict = field(default_factory=dict)  # protocol fields that name the cell, e.g. {"benchmark", "task"}

    def fields(self) -> dict:
        """The fields every result row of this cell carries (and its key hashes)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    def key(self, *, data: dict, seed: int) -> str:
        return digest({**self.fields(), "data": data, "seed": seed})[:CELL_KEY_LENGTH]


@dataclass(frozen=True, kw_only=True)
class Job:
    """Cells sharing one expensive step. `cells` are the keys known when planned; a job whose
    rows are known only when it runs (model authorization, ownership) is done once `key`'s rows
    are all written (rows carry `job` and `job_rows`)."""

    protocol: str
    defense: str
    params: dict
    point: dict
    release: str
    attack: object  # the suite's attack entry: a name or {name = ..., params}
    authorized: str  # "" for the clean baseline
    evaluated: tuple[str, ...] = ()
    trial: int = 0
    key: str = ""
    cells: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)  # protocol-specific (e.g. {"task": "sst2"})
    group: str = ""  # placement: jobs of one group share loaded models (the authorized model)

    def cell(self, evaluated: str, *, suite: str, attack_label: str) -> Cell:
        return Cell(suite=suite, defense=self.defense, params=self.params, point=self.point, release=self.release,
                    attack=attack_label, authorized=self.authorized, evaluated=evaluated, trial=self.trial,
                    extra=dict(self.extra.get("cell_fields", {})))


ENCODING_ALWAYS = ("psnr_true", "psnr_nominal")


@dataclass(frozen=True, kw_only=True)
class Encoding:
    """What an encoding achieved (never its secret): PSNR, calibration, subspace size, timings."""

    psnr_true: float | None = None  # mean achieved pixel-space PSNR (dB)
    psnr_nominal: float | None = None  # paper-nominal dB, when the authorized std is known
    calib_err_db: float | None = None  # max |achieved - target|
    unreachable: int | None = None  # samples whose target could not be met
    subspace_dim: int | None = None
    encode_ms: float | None = None  # per sample
    fit_ms: float | None = None  # one-time fit (SVD)
    snr_db: float | None = None  # text: embedding-space SNR
    auth_dev: float | None = None  # VLM: the authorized tower's patch-embedding deviation

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in ENCODING_ALWAYS or v is not None}

    @classmethod
    def from_json(cls, data: dict | None) -> "Encoding | None":
        if data is None:
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """Where a number came from."""

    model_digest: str | None
    authorized_digest: str | None
    input_digest: str | None
    defense_summary: dict | None
    versions: dict
    git: str
    device: str
    seed: int
    wall_s: float
    cache: dict
    forwards: int
    identity: str | None = None  # what the row's numbers depend on: models, data, RESULTS_VERSION (resume checks it)
    data_identity: str | None = None  # digest of the evaluated data's identity (rank and check compare it)
    suite_path: str | None = None  # the suite file the run read (report / check take its [report] / [check])
    suite_file_digest: str | None = None  # that file's suite digest as read, before command-line overrides

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Provenance":
        known = {f.name for f in fields(cls)}
        return cls(**{k: data.get(k) for k in known})


def infer_protocol(row: dict) -> str:
    """The protocol a row names; a row written before rows named it by the rules the protocols declared
    (bench.core.entry.legacy_protocol: each protocol states how it recognises its own old rows)."""
    return row.get("protocol") or legacy_protocol(row)


ROW_EXTRA_KEYS = ("benchmark", "task", "suspect_kind", "job", "job_rows", "label")


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """What a protocol measured for one cell of a job (`Protocol.run` returns these). The engine turns each
    into a `Row`: the cell's fields and key come from the job and `evaluated`, the provenance (versions, git,
    the device used, seed, per-job wall time, forward passes and cache counters) from the run; a protocol
    never builds a row, a provenance or a cache key itself."""

    evaluated: str  # the evaluated model's label (names the cell); "" or a summary label for a job-level row
    role: Role | str  # a Role, or a role the protocol names itself
    arch: dict  # {"authorized": arch or "", "evaluated": arch}
    metrics: dict
    encoding: Encoding | None = None  # what the encoding achieved (never its secret)
    attack_stats: dict | None = None
    cost: dict | None = None
    n: int = 0
    model_digest: str | None = None  # the evaluated model's weights
    authorized_digest: str | None = None
    input_digest: str | None = None  # what the evaluated inputs were (digest of their identity)
    defense_summary: dict | None = None
    columns: dict = field(default_factory=dict)  # protocol columns the cell does not name (e.g. suspect_kind)


@dataclass(frozen=True, kw_only=True)
class Row:
    protocol: str
    cell: str
    suite: str
    suite_digest: str
    defense: str
    params: dict
    point: dict
    release: str
    attack: str
    authorized: str
    evaluated: str
    trial: int
    role: str
    arch: dict  # {"authorized": arch or "", "evaluated": arch}
    metrics: dict
    encoding: Encoding | None = None
    attack_stats: dict | None = None
    cost: dict | None = None
    n: int = 0
    provenance: Provenance
    extra: dict = field(default_factory=dict)  # benchmark / task (GLUE, MMBench), suspect_kind, job / job_rows

    @classmethod
    def build(cls, *, protocol: str, cell: Cell, key: str, suite_digest: str, role: Role | str, **values) -> "Row":
        """A row of `cell`: its fields, plus what was measured."""
        base = cell.fields()
        extra = {k: base.pop(k) for k in list(base) if k in ROW_EXTRA_KEYS}
        extra.update(values.pop("extra", {}))
        role = role.value if isinstance(role, Role) else str(role)  # a protocol may name roles of its own
        return cls(protocol=protocol, cell=key, suite_digest=suite_digest, role=role, extra=extra,
                   **base, **values)

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out["encoding"] = self.encoding.to_json() if self.encoding is not None else None
        out["provenance"] = self.provenance.to_json()
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: dict) -> "Row":
        known = {f.name for f in fields(cls)} - {"extra", "protocol"}
        values = {k: data.get(k) for k in known}
        values["encoding"] = Encoding.from_json(data.get("encoding"))
        values["provenance"] = Provenance.from_json(data.get("provenance") or {})
        extra = {k: v for k, v in data.items() if k not in known and k != "protocol"}
        return cls(protocol=infer_protocol(data), extra=extra, **values)
