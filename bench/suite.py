"""Suite files (TOML): dataset, models, defenses with parameter sweeps, attacks, tolerances, report.

    [suite]      name, description, seed
    [data]       dataset, split, subset (0 = all), subset_seed, train_split (defender's and
                 attacker's data for model defenses and model attacks; default "train"), options
    [models]     authorized = [spec, ...]; evaluated = [spec, ...] (default: authorized)
                 a spec is "source:name" or an inline table (see bench.models.sources);
                 python_path = ["folder", ...] (relative to the suite file): where `factory` / `loader`
                 modules are imported from, besides the suite file's own folder
    [[defenses]] name, label (optional, unique: names the entry in rows and tables, and `--defense` picks it),
                 params = {...}, sweep = {param = [values], ...} (cartesian product),
                 trials = N (repeats with seeds seed..seed+N-1), attacks = ["none", ...],
                 tier = "default" | "full" (full entries run only with `authbench run --full`),
                 models = [labels] (the authorized models this entry protects; default all; a spec
                 such as "zoo:fhe-s0" adds a model only this entry protects);
                 and the keys its protocol's entry dataclass declares (input defenses: psnr = [...],
                 psnr_mode, evaluation, release; bench.protocols.input_auth.ImageEntry): a key the
                 entry's protocol does not read is an error
    [check]      tolerance = {metric = points}, default_tolerance, inference_tolerance (cells that train
                 nothing at run time; default 0 = exact), trials (repeats of the cells that train at run
                 time, for the spread `check` derives their tolerance from; bench.reports.reference)
    [standard_attacks] board = [attack entries]: the attack set every row of that board is scored
                 under (boards: input, model, baselines, ownership; bench.reports.boards); a row
                 lacking one of them is shown unranked
    [run]        batch_size, device ("cpu" | "cuda" | "cuda:N" | "auto"), threads (CLI flags override)
    [executor]   name ("local" | "ray" | "submitit"), and their settings (bench.executors)
    [report]     psnr = [...], release = [...]   (which points get tables); paper_dataset =
                 "ImageNet" | "CIFAR-10" and paper_models = {label = "ResNet-50", ...} print the NE
                 paper's Tables 1-2 beside the measured cells (bench.reports.ne_reported); table3 =
                 {ne, psnr, release} picks Table 3's NE column (baselines.report; default ne-patch, -10, float)

Every section and key, with its type, is in one table, bench.suite_schema.SECTIONS: `load_suite` validates
the file against it (unknown keys and values of the wrong type are one-line errors naming the valid ones).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a suite's name is a folder name under runs/, reports/
SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"


@dataclass
class DefenseEntry:
    """A [[defenses]] entry as the suite states it: the keys every entry shares, and the table as read (`raw`).
    The engine parses `raw` into the entry dataclass of the entry's protocol (bench.protocols.base.Protocol.entry),
    which rejects a key that protocol does not read."""

    name: str
    params: dict
    attacks: list = field(default_factory=lambda: ["none"])
    sweep: dict = field(default_factory=dict)
    trials: int = 1
    tier: str = "default"
    models: list[str] = field(default_factory=list)  # authorized labels this entry protects (empty: all)
    label: str = ""  # optional display / selection name (rows carry it; not part of the cell key)
    raw: dict = field(default_factory=dict)  # the entry's table as read
    index: int = 0  # its position among the [[defenses]] entries (1-based)

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    seed: int
    data: dict
    authorized: list
    evaluated: list
    defenses: list[DefenseEntry]
    check: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)  # [run]: batch_size, device, threads
    standard_attacks: dict = field(default_factory=dict)  # [standard_attacks]: board -> [attack entries]

    @property
    def digest(self) -> str:
        from bench.core.cache import digest  # numpy: not needed to list suites

        return digest(self.raw)[:16]

    @property
    def import_path(self) -> list[Path]:
        """Folders `factory = "module:function"` and `loader` modules import from: the suite file's own folder,
        then [models] python_path (relative to the suite file)."""
        folder = Path(self.path).resolve().parent
        extra = (self.raw.get("models") or {}).get("python_path", [])
        return [folder, *[(folder / Path(p).expanduser()).resolve() for p in extra]]


def available_suites() -> dict[str, Path]:
    """Suites shipped in suites/ (and in ./suites of the working directory)."""
    found = {}
    for folder in (SUITES_DIR, Path.cwd() / "suites"):
        if folder.is_dir():
            for p in sorted(folder.glob("*.toml")):
                found.setdefault(p.stem, p)
    return dict(sorted(found.items()))


DEFAULT_SUITE = "digits-quick"  # `authbench run` with no suite: a few minutes; `digits` is the reference grid


def suite_description(path: Path) -> str:
    """A suite file's [suite] description as written (not validated: `authbench list suites` stays light)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
        return str((raw.get("suite") or {}).get("description", ""))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return f"(invalid: {exc})"


def find_suite(name_or_path: str | None) -> Path:
    if name_or_path is None:
        name_or_path = DEFAULT_SUITE
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserError(f"suite file {str(path)!r} does not exist; valid suites: {', '.join(available_suites())}")
        return path
    suites = available_suites()
    if name_or_path not in suites:
        raise UserError(f"unknown suite {name_or_path!r}; valid choices: {', '.join(suites)} or a path to a .toml file")
    return suites[name_or_path]


def _as_list(value) -> list:
    """A scalar or a list (the schema allows either where a list is meant) as a list."""
    return value if isinstance(value, list) else [value]


def load_suite(name_or_path: str | None = None) -> Suite:
    path = find_suite(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: malformed TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: is not a text (UTF-8) TOML file") from None
    from bench.suite_schema import validate  # imports every plugin (torch): only when a suite is loaded

    validate(raw, str(path))  # every section and key: bench.suite_schema
    meta = raw.get("suite", {})
    models = raw["models"]
    authorized = _as_list(models["authorized"])
    evaluated = _as_list(models.get("evaluated", authorized))
    defenses = []
    for i, d in enumerate(raw["defenses"]):
        label = d.get("label", "")
        if label and label in {e.label for e in defenses}:
            raise UserError(f"{path}: defenses[{i}]: label {label!r} is used by another [[defenses]] entry; labels must be "
                            "unique")
        defenses.append(
            DefenseEntry(
                name=d["name"],
                params=dict(d.get("params", {})),
                attacks=_as_list(d.get("attacks", ["none"])),
                sweep={k: _as_list(v) for k, v in d.get("sweep", {}).items()},
                trials=d.get("trials", 1),
                tier=d.get("tier", "default"),
                models=[str(m) for m in _as_list(d.get("models", []))],
                label=label,
                raw=dict(d),
                index=i + 1,
            )
        )
    standard = raw.get("standard_attacks", {})
    name = meta.get("name", path.stem)
    if not SUITE_NAME.fullmatch(name):
        raise UserError(f"{path}: [suite] name {name!r} cannot name a folder (runs/<name>, reports/<name>); use letters, "
                        "digits, '.', '_' and '-', starting with a letter or digit")
    return Suite(
        name=name,
        path=path,
        description=meta.get("description", ""),
        seed=int(meta.get("seed", 0)),
        data=raw["data"],
        authorized=authorized,
        evaluated=evaluated,
        defenses=defenses,
        check=raw.get("check", {}),
        report=raw.get("report", {}),
        raw=raw,
        run=dict(raw.get("run", {})),
        standard_attacks={k: list(v) for k, v in standard.items()},
    )


def _recorded(records) -> dict:
    """What results say about their suite: name, the file's path and its digest as loaded (before command-line
    overrides), from result rows (their provenance) or a leaderboard's provenance."""
    if isinstance(records, dict):
        prov = records.get("provenance") or {}
        return {"name": prov.get("suite"), "path": prov.get("suite_path"), "file_digest": prov.get("suite_file_digest")}
    for row in records or []:
        prov = row.get("provenance") or {}
        if prov.get("suite_path"):
            return {"name": row.get("suite"), "path": prov["suite_path"], "file_digest": prov.get("suite_file_digest")}
    first = (records or [{}])[0]
    return {"name": first.get("suite"), "path": None, "file_digest": None}


def recorded_suite(records, name: str | None = None) -> tuple[Suite | None, str]:
    """The suite whose [report] / [check] sections apply to `records` (result rows or a leaderboard dict), and a
    note (empty, or why the file read may differ from the one the results were written from).

    `name` (--suite): a shipped suite name or a .toml path; a name that is neither resolves by the suite file the
    results recorded (its [suite] name or file stem). Without `name`: the recorded suite file while it exists,
    else the shipped suite of the recorded name, else None (no section applies)."""
    rec = _recorded(records)
    path = Path(rec["path"]) if rec["path"] else None
    on_disk = path is not None and path.is_file()
    if name is not None:
        try:
            return load_suite(name), ""
        except UserError as exc:
            if not on_disk or name not in (rec["name"], path.stem) or Path(name).suffix == ".toml":
                raise UserError(f"{exc}; the results record suite {rec['name']!r}"
                                + (f" at {str(path)!r}" if path else "")) from None
    if on_disk:
        suite = load_suite(str(path))
        note = ""
        if rec["file_digest"] and suite.digest != rec["file_digest"]:
            note = (f"suite file {str(path)!r} changed since these results were written (digest {rec['file_digest']} "
                    f"then, {suite.digest} now); its sections as they are now apply")
        return suite, note
    if rec["name"] in available_suites():
        return load_suite(rec["name"]), ""
    return None, (f"the suite file the results recorded ({str(path)!r}) is gone; no [report] / [check] section "
                  "applies (pass --suite)") if path else ""
