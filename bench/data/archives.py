"""Pinned dataset archives: download, verify and unpack CIFAR-10 and STL-10 as their authors distribute them.

    python -m bench.data.archives fetch stl10 --root data/          # download (resumable), verify, unpack
    python -m bench.data.archives extract stl10 ARCHIVE --root data/ # a local copy of the archive: verify, unpack
    python -m bench.data.archives check cifar10 ARCHIVE             # check a copy only

Each archive is pinned by its byte size, its sha256 and torchvision's md5 (a second, independent check): a
copy that differs in any of them is refused in one line before anything is unpacked. Only the members the
loaders read are unpacked (STL-10's 2.6 GB `unlabeled_X.bin` is skipped), each to `<root>/<member>`; the
folders are then what `dataset = "cifar10"` (`root`, bench.data.torchvision_sets) and `dataset = "stl10"`
(`root`, bench.data.stl10) read. The harness never downloads at run time: fetching is this command only.

Provenance of the pins (none could be measured here: this machine has no route to the authors' servers):
- sha256 and size of both archives: a third party's dataset notes found in the public code index ("exact
  archive provenance, measured from the configured URLs and verified on a second pass": STL-10
  2,640,397,119 bytes, CIFAR-10 170,498,071 bytes); the same sha256 values are pinned independently by
  other projects' download code: STL-10 by Britefury/batchup (batchup/datasets/stl.py) and
  damiendr/MLDatasets.jl (src/STL10/STL10.jl), CIFAR-10 by Keras (tensorflow/tensorflow,
  tensorflow/python/keras/datasets/cifar10.py, `file_hash`);
- md5: torchvision's (torchvision.datasets.STL10.tgz_md5, torchvision.datasets.CIFAR10.tgz_md5).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import sys
import tarfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import UserError

PROVENANCE = ("sha256 and size: a third party's dataset notes in the public code index (measured from the URL), "
              "the same sha256 pinned by {also}; md5: torchvision's {tv}")


@dataclass(frozen=True, kw_only=True)
class ArchivePin:
    """One distributed archive: where it comes from and what its bytes must be."""

    name: str  # the dataset ("cifar10", "stl10")
    file: str  # the archive's file name
    urls: tuple  # the pinned URL first, then mirrors
    size: int
    sha256: str
    md5: str
    members: tuple  # the members unpacked (paths inside the archive)
    provenance: str


CIFAR10 = ArchivePin(
    name="cifar10", file="cifar-10-python.tar.gz", urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    size=170_498_071, sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    md5="c58f30108f718f92721af3b95e74349a",
    members=tuple(f"cifar-10-batches-py/{n}" for n in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                                        "data_batch_5", "test_batch", "batches.meta")),
    provenance=PROVENANCE.format(also="Keras's cifar10.load_data (tensorflow/tensorflow)",
                                 tv="CIFAR10.tgz_md5"))

STL10 = ArchivePin(
    name="stl10", file="stl10_binary.tar.gz",
    urls=("https://cs.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
          "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"),
    size=2_640_397_119, sha256="f31fd99273a1acb8609c8db427cebb1de3f71de77758cdc0e22956e1289b9866",
    md5="91f7769df0f17e558f3565bffb0c7dfb",
    members=tuple(f"stl10_binary/{n}" for n in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin",
                                                 "class_names.txt")),
    provenance=PROVENANCE.format(also="Britefury/batchup and damiendr/MLDatasets.jl", tv="STL10.tgz_md5"))

ARCHIVES = {"cifar10": CIFAR10, "stl10": STL10}


def pin_of(name: str) -> ArchivePin:
    if name not in ARCHIVES:
        raise UserError(f"no pinned archive for dataset {name!r}; valid: {', '.join(ARCHIVES)}")
    return ARCHIVES[name]


def digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a file, in one pass over its bytes."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def verify(path, pin: ArchivePin) -> None:
    """One-line UserError unless `path` is the pinned archive: its size, then its sha256 and md5."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{pin.name}: archive {str(path)!r} does not exist; give the downloaded {pin.file}")
    size = path.stat().st_size
    if size != pin.size:
        raise UserError(f"{pin.name}: {str(path)!r} has {size} bytes, the pinned {pin.file} has {pin.size}; it is "
                        f"not that archive (a partial or other download): get it from {pin.urls[0]}")
    sha, md5 = digests(path)
    if sha != pin.sha256 or md5 != pin.md5:
        which = "sha256 " + sha if sha != pin.sha256 else "md5 " + md5
        raise UserError(f"{pin.name}: {str(path)!r} has {which}, not the pinned {pin.file} (sha256 "
                        f"{pin.sha256[:16]}..., md5 {pin.md5}); nothing was unpacked: get it again from {pin.urls[0]}")


def unpack(path, pin: ArchivePin, root, *, check: bool = True) -> Path:
    """Verify the archive (unless `check` is false: tests of unpacking only) and write its pinned members to
    `<root>/<member>` (each through a temporary file, so an interrupted unpack leaves no half file). Returns the
    folder holding them. Members are matched by exact name: no other path of the archive is written."""
    if check:
        verify(path, pin)
    root = Path(root)
    wanted = set(pin.members)
    found = set()
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name not in wanted:
                    continue
                if not member.isfile():
                    raise UserError(f"{pin.name}: member {member.name!r} of {str(path)!r} is not a regular file")
                dest = root / member.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.tmp")
                with tar.extractfile(member) as src, open(tmp, "wb") as out:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        out.write(block)
                os.replace(tmp, dest)
                found.add(member.name)
    except (tarfile.TarError, OSError, EOFError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{pin.name}: cannot unpack {str(path)!r} ({text})") from None
    missing = sorted(wanted - found)
    if missing:
        raise UserError(f"{pin.name}: {str(path)!r} lacks {missing[0]} ({len(missing)} of the {len(wanted)} members "
                        "the loader reads are missing)")
    return root / Path(pin.members[0]).parent


def fetch(pin: ArchivePin, root, log=print) -> Path:
    """Download the archive into `<root>/.part/` (resumable: bench.kits.store.download), try the mirrors in turn,
    verify it, keep it as `<root>/<file>` and unpack. Returns the unpacked folder."""
    from bench.kits.store import _tqdm_progress, download

    root = Path(root)
    final = root / pin.file
    if not final.is_file():
        part = root / ".part" / pin.file
        reasons = []
        update, close = _tqdm_progress(True)
        try:
            for url in pin.urls:
                try:
                    download(url, part, pin.size, update, pin.file)
                    break
                except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                    reason = getattr(e, "reason", None) or e
                    reasons.append(f"{url}: {str(reason).splitlines()[0] if str(reason) else type(e).__name__}")
        finally:
            close()
        if len(reasons) == len(pin.urls):
            raise UserError(f"{pin.name}: cannot download {pin.file} ({'; '.join(reasons)}); on a machine without "
                            f"internet copy the archive here and run `python -m bench.data.archives extract "
                            f"{pin.name} ARCHIVE --root {root}`")
        if part.stat().st_size < pin.size:
            raise UserError(f"{pin.name}: the download stopped after {part.stat().st_size} of {pin.size} bytes; run "
                            "the same command again to resume")
        try:
            verify(part, pin)
        except UserError:
            part.unlink()
            raise
        os.replace(part, final)
    folder = unpack(final, pin, root)  # verifies again (a copy kept from an earlier fetch included)
    log(f"{pin.name}: {final} verified (sha256 {pin.sha256[:16]}..., md5 {pin.md5}), unpacked into {folder}")
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.data.archives", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    fe = sub.add_parser("fetch", help="download (resumable), verify and unpack a pinned archive")
    fe.add_argument("dataset", choices=sorted(ARCHIVES))
    fe.add_argument("--root", required=True, type=Path, help="the data folder (the suite's --data-root)")
    ex = sub.add_parser("extract", help="verify and unpack a local copy of a pinned archive")
    ex.add_argument("dataset", choices=sorted(ARCHIVES))
    ex.add_argument("archive", type=Path)
    ex.add_argument("--root", required=True, type=Path)
    ve = sub.add_parser("check", help="check a local copy of a pinned archive (size, sha256, md5)")
    ve.add_argument("dataset", choices=sorted(ARCHIVES))
    ve.add_argument("archive", type=Path)
    args = ap.parse_args(argv)
    pin = pin_of(args.dataset)
    try:
        if args.cmd == "fetch":
            print(f"unpacked into {fetch(pin, args.root)}")
        elif args.cmd == "extract":
            print(f"unpacked into {unpack(args.archive, pin, args.root)}")
        else:
            verify(args.archive, pin)
            print(f"{args.archive}: the pinned {pin.file} ({pin.size} bytes, sha256 {pin.sha256}, md5 {pin.md5})")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
