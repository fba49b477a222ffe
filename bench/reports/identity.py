"""What a run measured, compared before `rank` places it on a board or `check` compares it with a reference.

Names are not identity: two runs may share a suite name, model labels and n and still differ in the data
(JPEG copies of the test images), the models' weights, the suite file or the standard attacks. A
`RunIdentity` collects what result rows record about each (suite names and digests, the data identity
digest, each model label's weights digest, the sample counts, the protocols); `differences` names every
part that two identities both record and that differs, and `refuse` turns them into one line (exit 2).
A part one side does not record (rows written before it was recorded, a legacy reference) is not compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.core.types import infer_protocol
from bench.errors import UserError


def _few(items, limit: int = 3) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


@dataclass(frozen=True, kw_only=True)
class RunIdentity:
    suites: tuple[str, ...] = ()
    suite_digests: tuple[str, ...] = ()
    data: tuple[str, ...] = ()  # data_identity digests the rows record
    models: dict = field(default_factory=dict)  # label -> weights digest
    n: tuple[int, ...] = ()
    protocols: tuple[str, ...] = ()
    standard_attacks: dict | None = None  # board -> attack labels (None: not known)

    def to_json(self) -> dict:
        return {"suites": list(self.suites), "suite_digests": list(self.suite_digests), "data": list(self.data),
                "models": dict(self.models), "n": list(self.n), "protocols": list(self.protocols),
                "standard_attacks": None if self.standard_attacks is None else
                {k: list(v) for k, v in self.standard_attacks.items()}}

    @classmethod
    def from_json(cls, data) -> "RunIdentity":
        if not isinstance(data, dict):
            return cls()
        std = data.get("standard_attacks")
        return cls(suites=tuple(map(str, data.get("suites") or ())),
                   suite_digests=tuple(map(str, data.get("suite_digests") or ())),
                   data=tuple(map(str, data.get("data") or ())),
                   models={str(k): str(v) for k, v in dict(data.get("models") or {}).items()},
                   n=tuple(int(v) for v in data.get("n") or ()), protocols=tuple(map(str, data.get("protocols") or ())),
                   standard_attacks=None if not isinstance(std, dict) else {str(k): tuple(v) for k, v in std.items()})


def of_rows(rows: list[dict], standard_attacks: dict | None = None) -> RunIdentity:
    """The identity of result rows (scored rows only for n: the clean baseline's n is the same split)."""
    models: dict[str, str] = {}
    for r in rows:
        prov = r.get("provenance") or {}
        if r.get("authorized") and prov.get("authorized_digest"):
            models.setdefault(str(r["authorized"]), str(prov["authorized_digest"]))
        if r.get("evaluated") and prov.get("model_digest") and "[" not in str(r["evaluated"]):
            models.setdefault(str(r["evaluated"]), str(prov["model_digest"]))

    def values(get):
        return tuple(sorted({str(v) for v in map(get, rows) if v}))

    return RunIdentity(
        suites=values(lambda r: r.get("suite")), suite_digests=values(lambda r: r.get("suite_digest")),
        data=values(lambda r: (r.get("provenance") or {}).get("data_identity")), models=dict(sorted(models.items())),
        n=tuple(sorted({int(r["n"]) for r in rows if isinstance(r.get("n"), int) and r.get("defense") != "none"})),
        protocols=values(infer_protocol),
        standard_attacks=None if standard_attacks is None else {k: tuple(v) for k, v in standard_attacks.items()})


def differences(run: RunIdentity, reference: RunIdentity, *, parts=("suite", "data", "weights", "n",
                                                                      "standard_attacks")) -> list[str]:
    """One phrase per part both identities record and that differs (run first, reference second)."""
    out = []
    if "suite" in parts and run.suites and reference.suites and set(run.suites) != set(reference.suites):
        out.append(f"suite {_few(run.suites)} vs the reference's {_few(reference.suites)}")
    if "data" in parts and run.data and reference.data and set(run.data) != set(reference.data):
        out.append(f"data (identity {_few(d[:12] for d in run.data)} vs the reference's "
                   f"{_few(d[:12] for d in reference.data)}: other images, split, subset or [data] settings)")
    if "weights" in parts:
        other = sorted(k for k in set(run.models) & set(reference.models) if run.models[k] != reference.models[k])
        if other:
            out.append(f"model weights ({_few(other)} differ from the reference's, e.g. digest "
                       f"{run.models[other[0]][:12]} vs {reference.models[other[0]][:12]})")
    if "n" in parts and run.n and reference.n and set(run.n) != set(reference.n):
        out.append(f"n ({'/'.join(map(str, run.n))} samples vs the reference's {'/'.join(map(str, reference.n))})")
    if "standard_attacks" in parts and run.standard_attacks is not None and reference.standard_attacks is not None:
        boards = sorted(set(run.standard_attacks) | set(reference.standard_attacks))
        for b in boards:
            mine, theirs = tuple(run.standard_attacks.get(b, ())), tuple(reference.standard_attacks.get(b, ()))
            if set(mine) != set(theirs):
                out.append(f"standard attacks of the {b} board ({', '.join(mine) or 'none'} vs the reference's "
                           f"{', '.join(theirs) or 'none'})")
                break
    return out


def refuse(found: list[str], what: str, hint: str) -> None:
    """One UserError line naming every difference found, or nothing when there is none."""
    if found:
        raise UserError(f"{what} differ from the reference: {'; '.join(found)}; {hint}")
