"""Issue 16: the path researchers take with their own models and data, on fixtures made here (no downloads).

Unreachable PSNR targets (uint8), `report` / `check` with a suite outside suites/, `[models] python_path`,
`run --authorized / --evaluated`, defense entry labels, identical jobs merged, `data convert`."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.engine.context import EvalContext
from bench.data import load_dataset
from bench.data.convert import convert
from bench.core.errors import UserError
from bench.reports import figures
from bench.reports.tables import render_tables
from bench.core.results import read_rows
from bench.suite import load_suite
from conftest import FAST_MODELS, make_engine, validate_rows

TWO_MODELS = ", ".join(FAST_MODELS[:2])


def _suite(folder, body: str, name: str = "own"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(f'[suite]\nname = "{name}"\nseed = 0\n\n[data]\ndataset = "digits"\nsplit = "test"\nsubset = 40\n\n'
                    f'[models]\nauthorized = [{TWO_MODELS}]\n{body}')
    return path


@pytest.fixture(scope="module")
def uint8_run(tmp_path_factory):
    """One real run: ne-patch released as 8-bit PNG-like images at 20, 0 and -10 dB (0 and -10 cannot be reached),
    from a suite file outside suites/ whose [report] and [check] sections must apply without --suite."""
    root = tmp_path_factory.mktemp("uint8")
    path = _suite(root / "elsewhere", '\n[[defenses]]\nname = "ne-patch"\npsnr = [20, 0, -10]\nrelease = ["uint8"]\n'
                  '\n[report]\npsnr = [0]\n\n[check]\ndefault_tolerance = 5.0\ninference_tolerance = 5.0\n', name="own-uint8")
    summary = make_engine(load_suite(str(path)), root / "run", progress=False, threads=1).run()
    return path, root / "run", read_rows(summary.results)


def _protected(rows, psnr):
    return [r for r in rows if r["defense"] == "ne-patch" and r["point"]["psnr"] == psnr]


def test_an_unreachable_uint8_target_is_recorded_as_not_reached(uint8_run):
    """Regression (bug 3): 0 and -10 dB rows were labelled as reached, released the same saturated image after
    raising the strength 1000x, and showed in tables as '0 dB' and '-10 dB'."""
    _, _, rows = uint8_run
    validate_rows(rows)
    for row in _protected(rows, 20.0):
        assert row["metrics"]["target_reached"] is True
        assert row["metrics"]["psnr_achieved"] == pytest.approx(20.0, abs=0.1)
    zero, minus_ten = _protected(rows, 0.0), _protected(rows, -10.0)
    for row in zero + minus_ten:
        assert row["metrics"]["target_reached"] is False and row["encoding"]["unreachable"] == row["n"]
        assert row["metrics"]["psnr_achieved"] > 1.0  # the saturated release's PSNR, well above either target
    by_cell = {(r["authorized"], r["evaluated"]): r for r in minus_ten}
    for row in zero:  # the same image (the search stops where the PSNR stops falling): the same numbers
        other = by_cell[(row["authorized"], row["evaluated"])]
        assert row["metrics"]["psnr_achieved"] == other["metrics"]["psnr_achieved"]
        assert row["metrics"]["top1"] == other["metrics"]["top1"]


def test_tables_and_figures_show_the_achieved_psnr(uint8_run, tmp_path, monkeypatch):
    _, _, rows = uint8_run
    render_tables(rows, tmp_path, [20.0, 0.0, -10.0], ["uint8"])
    text = (tmp_path / "table1_cross_model.md").read_text()
    achieved = np.mean([r["metrics"]["psnr_achieved"] for r in _protected(rows, 0.0) if r["role"] == "authorized"])
    assert f"target PSNR 0 dB (achieved {achieved:.1f})" in text and "target PSNR -10 dB (achieved" in text
    assert "target PSNR 20 dB (psnr_mode" in text  # reached: the target alone
    assert "||L(x~) - L(x)|| / ||L(x)||" in text  # the deviation's definition is stated
    shown = []
    monkeypatch.setattr(figures.plt, "close", lambda fig: shown.append(fig))
    figures.psnr_curves(rows, tmp_path, "uint8")
    texts = [t.get_text() for fig in shown for legend in fig.legends for t in legend.get_texts()]
    assert figures.UNREACHED_LABEL in texts
    markers = [line for fig in shown for ax in fig.axes for line in ax.get_lines()
               if line.get_marker() == figures.UNREACHED_MARKER]
    assert markers and all(len(line.get_xdata()) == 2 for line in markers)  # 0 and -10 dB, per authorized model


def test_report_and_check_use_the_recorded_suite(uint8_run, tmp_path, capsys):
    """Regression (bug 5): a suite outside suites/ lost its [report] / [check] sections without --suite, and
    `--suite <its name>` failed with 'unknown suite'."""
    path, run, rows = uint8_run
    assert {r["provenance"]["suite_path"] for r in rows} == {str(path.resolve())}
    for extra in ([], ["--suite", "own-uint8"]):
        out = tmp_path / f"reports{len(extra)}"
        assert main(["report", str(run), "--out", str(out), *extra]) == 0
        text = (out / "table1_cross_model.md").read_text()
        assert "target PSNR 0 dB" in text and "target PSNR 20 dB" not in text  # [report] psnr = [0]
    reference = tmp_path / "reference.jsonl"
    moved = [json.loads(json.dumps(r)) for r in rows]
    for r in moved:
        if r["metrics"].get("top1") is not None and r["role"] == "authorized":
            r["metrics"]["top1"] = min(100.0, r["metrics"]["top1"] + 3.0)  # the fresh run reads 3 points worse
    reference.write_text("".join(json.dumps(r) + "\n" for r in moved))
    assert main(["check", str(run), "--against", str(reference)]) == 0  # [check] inference_tolerance = 5
    assert main(["check", str(run), "--against", str(reference), "--default-tolerance", "1"]) == 1
    capsys.readouterr()
    assert main(["report", str(run), "--suite", "no-such-suite"]) == 2
    assert "the results record suite 'own-uint8'" in capsys.readouterr().err


def test_filters_labels_and_identical_jobs(tmp_path, capsys):
    """--authorized / --evaluated filter one side each; entry labels name rows and pick entries; an entry whose
    parameters resolve to another's (ne-operator dims = 1/12 of 1 x 32 x 32 = 86) is merged, not run twice."""
    body = ('\n[[defenses]]\nname = "ne-operator"\npsnr = [20]\n'
            '\n[[defenses]]\nname = "ne-operator"\nlabel = "op-86"\nparams = { dims = 86 }\npsnr = [20]\n'
            '\n[[defenses]]\nname = "ne-operator"\nlabel = "op-sixteen"\nparams = { dims = 16 }\npsnr = [20]\n')
    path = _suite(tmp_path, body)
    code = main(["run", str(path), "--out", str(tmp_path / "run"), "--reports", str(tmp_path / "rep"), "--threads", "1",
                 "--no-progress", "--authorized", "mlp-s0"])
    out = capsys.readouterr().out
    assert code == 0 and "1 duplicate job(s) merged" in out
    rows = read_rows(tmp_path / "run")
    validate_rows(rows)
    protected = [r for r in rows if r["defense"] != "none"]
    assert {r["authorized"] for r in protected} == {"mlp-s0"} and {r["evaluated"] for r in protected} == {"mlp-s0", "mlp-s1"}
    assert len(protected) == 4  # default (= dims 86) and dims 16, two evaluated models each: no row twice
    assert sorted(r.get("label", "") for r in protected) == ["", "", "op-sixteen", "op-sixteen"]
    assert "ne-operator [op-sixteen]" in (tmp_path / "rep" / "table1_cross_model.md").read_text()
    engine = make_engine(load_suite(str(path)), tmp_path / "run2", defenses=["op-sixteen"], evaluated=["mlp-s1"])
    assert {(j.defense, j.params.get("dims"), j.evaluated) for j in engine.jobs if j.defense != "none"} == {
        ("ne-operator", 16, ("mlp-s1",))}
    with pytest.raises(UserError, match=r"--evaluated 'nope' is not in suite 'own'; valid choices: mlp-s0, mlp-s1"):
        make_engine(load_suite(str(path)), tmp_path / "run3", evaluated=["nope"])
    with pytest.raises(UserError, match=r"defense 'op-x' is not in suite 'own'; valid choices \(names or labels\): "
                                        r"ne-operator, op-86, op-sixteen"):
        make_engine(load_suite(str(path)), tmp_path / "run3", defenses=["op-x"])
    bad = _suite(tmp_path / "dup", '\n[[defenses]]\nname = "noise"\nlabel = "a"\n\n[[defenses]]\nname = "ne-patch"\nlabel = "a"\n')
    with pytest.raises(UserError, match="label 'a' is used by another"):
        load_suite(str(bad))


FACTORY = '''import torch.nn as nn


def net(classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, classes))
'''
LOADER = '''import json

import torch


def read(path):
    return {k: torch.tensor(v) for k, v in json.loads(open(path).read()).items()}
'''


def test_factories_and_loaders_import_from_the_suite_folder_and_python_path(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "own_factory_mod.py").write_text(FACTORY)
    (tmp_path / "own_loader_mod.py").write_text(LOADER)  # next to the suite file
    torch.manual_seed(0)
    weights = {k: v.tolist() for k, v in torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).state_dict().items()}
    (tmp_path / "w.json").write_text(json.dumps(weights))
    spec = ('{ source = "torch", factory = "own_factory_mod:net", loader = "own_loader_mod:read", name = "mine", '
            f'checkpoint = "{tmp_path / "w.json"}", mean = [0.5], std = [0.25], input_size = [1, 8, 8] }}')
    path = tmp_path / "mine.toml"
    path.write_text(f'[data]\ndataset = "digits"\nsubset = 8\n\n[models]\npython_path = ["src"]\nauthorized = [{spec}]\n'
                    '\n[[defenses]]\nname = "noise"\n')
    model = EvalContext(load_suite(str(path))).model("mine")
    assert torch.equal(model.module.state_dict()["1.weight"], torch.tensor(weights["1.weight"]))
    path.write_text(path.read_text().replace('"own_factory_mod:net"', '"own_missing_mod:net"'))
    with pytest.raises(UserError, match=r"cannot import 'own_missing_mod' .*\[models\] python_path"):
        EvalContext(load_suite(str(path))).model("mine")
    path.write_text(path.read_text().replace('python_path = ["src"]', 'python_path = ["nowhere"]'))
    with pytest.raises(UserError, match=r"python_path folder .*nowhere' does not exist"):
        make_engine(load_suite(str(path)), tmp_path / "run")


# -- data convert ------------------------------------------------------------------------------
def _images(n=6, hw=(5, 7), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *hw, 3), dtype=np.uint8)


def _read_back(npz):
    split = load_dataset("cifar10", "test", path=str(npz))
    return (split.images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8), split.labels.numpy()


def test_convert_imagefolder_csv_cifar_and_npz(tmp_path, capsys):
    from PIL import Image

    imgs, labels = _images(), np.array([0, 1, 2, 0, 1, 2])
    for i, (img, y) in enumerate(zip(imgs, labels)):  # ImageFolder: class folders in sorted order
        (tmp_path / "tree" / f"class{y}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "tree" / f"class{y}" / f"{i}.png")
    got = convert(tmp_path / "tree", tmp_path / "a.npz")
    assert got[1:] == (6, 3)
    order = np.argsort(labels, kind="stable")  # files are read class by class
    x, y = _read_back(tmp_path / "a.npz")
    assert np.array_equal(x, imgs[order]) and np.array_equal(y, labels[order])

    (tmp_path / "flat").mkdir()
    rows = ["filename,label"]
    for i, (img, yy) in enumerate(zip(imgs, labels)):
        Image.fromarray(img).save(tmp_path / "flat" / f"im{i}.png")
        rows.append(f"im{i}.png,{yy}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    assert main(["data", "convert", str(tmp_path / "flat"), "--labels", str(tmp_path / "labels.csv"),
                 "--out", str(tmp_path / "b.npz")]) == 0
    x, y = _read_back(tmp_path / "b.npz")
    assert np.array_equal(x, imgs) and np.array_equal(y, labels)

    cifar = tmp_path / "cifar-10-batches-py"  # torchvision's pickle batches (a tiny one per file)
    cifar.mkdir()
    big = _images(10, (32, 32), seed=1)
    flat = big.transpose(0, 3, 1, 2).reshape(10, -1)
    with open(cifar / "test_batch", "wb") as f:
        pickle.dump({"data": flat, "labels": list(range(10))}, f)
    for k in range(1, 6):
        with open(cifar / f"data_batch_{k}", "wb") as f:
            pickle.dump({"data": flat[:2], "labels": [k, k]}, f)
    convert(tmp_path, tmp_path / "c.npz", layout="cifar")
    x, y = _read_back(tmp_path / "c.npz")
    assert np.array_equal(x, big) and np.array_equal(y, np.arange(10))
    assert convert(cifar, tmp_path / "ctrain.npz", split="train")[1] == 10

    np.savez(tmp_path / "other.npz", X_test=big.transpose(0, 3, 1, 2), y_test=np.arange(10))  # other key names, NCHW
    convert(tmp_path / "other.npz", tmp_path / "d.npz")
    x, y = _read_back(tmp_path / "d.npz")
    assert np.array_equal(x, big) and np.array_equal(y, np.arange(10))

    convert(tmp_path / "d.npz", tmp_path / "folder", to="imagefolder")  # and back out as an ImageFolder
    split = load_dataset("imagenet", "validation", root=str(tmp_path / "folder"), resize=32)
    assert len(split) == 10 and sorted(split.labels.tolist()) == list(range(10))


@pytest.mark.parametrize("setup, argv, needle", [
    ("mixed", ["--out", "x.npz"], "images differ in size"),
    ("flat", ["--out", "x.npz"], "holds images but no class folders; pass --labels"),
    ("tree", ["--out", "x.txt", "--to", "npz"], "needs a name ending in .npz"),
    ("none", ["--out", "x.npz"], "does not exist"),
])
def test_convert_errors_are_one_line(tmp_path, capsys, setup, argv, needle):
    from PIL import Image

    src = tmp_path / "src"
    if setup in ("mixed", "tree"):
        for i, hw in enumerate([(4, 4), (5, 5)] if setup == "mixed" else [(4, 4)]):
            (src / "a").mkdir(parents=True, exist_ok=True)
            Image.fromarray(_images(1, hw)[0]).save(src / "a" / f"{i}.png")
    elif setup == "flat":
        src.mkdir()
        Image.fromarray(_images(1)[0]).save(src / "0.png")
    argv = [a if not a.endswith((".npz", ".txt")) else str(tmp_path / a) for a in argv]
    assert main(["data", "convert", str(src), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
