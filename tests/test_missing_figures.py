"""CoreLocker Figure 5 (FCN grid) and MFUE Figures 5-10 renderers, on reduced settings."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main as cli_main
from bench.core.errors import UserError
from bench.core.results import read_rows
from bench.recipes import fcn_grid as G
from bench.suite import SUITES_DIR


# -- CoreLocker Figure 5 -----------------------------------------------------------------------------------------


def test_fcn_has_depth_hidden_layers_and_trains_once(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTHBENCH_CACHE", str(tmp_path))
    net = G.FCN(3, 16, 1024)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(16, 1024), (16, 16), (16, 16), (10, 16)]
    first = G.trained_fcn(2, 8, dataset="digits", epochs=1)
    files = list((tmp_path / "fcn-grid").glob("*.pt"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = G.trained_fcn(2, 8, dataset="digits", epochs=1)  # from the cache: same weights, file untouched
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert files[0].stat().st_mtime_ns == stamp
    other = G.trained_fcn(2, 8, dataset="digits", epochs=2)  # another setting is another network
    assert len(list((tmp_path / "fcn-grid").glob("*.pt"))) == 2
    assert not torch.equal(first.net[1].weight, other.net[1].weight)
    assert G.parse_fig5_label(G.fig5_label(13, 8000)) == (13, 8000) and G.parse_fig5_label("fcn-13") is None
    with pytest.raises(UserError, match="epochs >= 1"):
        G.train_fcn(2, 8, torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long), epochs=0, lr=1e-3, batch_size=2,
                    seed=0)


def _models(suite: dict) -> list[dict]:
    return suite["models"]["authorized"]


def test_fig5_suites_hold_the_papers_grid_and_the_reduced_one():
    from bench.models.zoo import digits_preprocess

    paper = tomllib.loads((SUITES_DIR / "corelocker-fig5-mnist.toml").read_text())
    grid = {(m["kwargs"]["depth"], m["kwargs"]["width"]) for m in _models(paper)}
    assert grid == {(d, w) for d in range(4, 14) for w in range(1000, 8001, 1000)} and len(_models(paper)) == 80
    assert all(m["kwargs"]["epochs"] == 50 and m["kwargs"]["dataset"] == "mnist" and m["input_size"] == [1, 28, 28]
               and m["name"] == G.fig5_label(m["kwargs"]["depth"], m["kwargs"]["width"]) for m in _models(paper))
    (entry,) = paper["defenses"]
    assert entry["params"] == {"criterion": "l1", "granularity": "weight", "ratio": G.PAPER_RATIO}
    reduced = tomllib.loads((SUITES_DIR / "corelocker-fig5-digits.toml").read_text())
    pre = digits_preprocess()
    assert len(_models(reduced)) == 16
    assert all(m["mean"] == list(pre.mean) and m["std"] == list(pre.std) for m in _models(reduced))
    assert G.PAPER_RATIO in reduced["defenses"][0]["sweep"]["ratio"]


def test_corelocker_fig5_report_matches_the_rows(tmp_path):
    models = ", ".join(
        f'{{ source = "torch", factory = "bench.recipes.fcn_grid:trained_fcn", name = "{G.fig5_label(d, w)}", '
        f'kwargs = {{ depth = {d}, width = {w}, epochs = 1 }}, mean = [0.305555], std = [0.323724], input_size = [1, 32, 32] }}'
        for d in (2, 3) for w in (8, 16))
    suite = tmp_path / "fig5.toml"
    suite.write_text('[suite]\nname = "fig5-mini"\nseed = 0\n\n[data]\ndataset = "digits"\nsplit = "test"\nsubset = 80\n\n'
                     f'[models]\nauthorized = [{models}]\n\n[[defenses]]\nname = "corelocker"\n'
                     'params = { criterion = "l1" }\nsweep = { ratio = [0.01, 0.5] }\n')
    assert cli_main(["run", str(suite), "--out", str(tmp_path / "run"), "--reports", str(tmp_path / "rep"),
                     "--no-progress"]) == 0
    rows = read_rows(tmp_path / "run")
    table = pd.read_csv(tmp_path / "rep" / "corelocker_fig5.csv")
    assert len(table) == 4 * 2 and set(table["depth"]) == {2, 3} and set(table["width"]) == {8, 16}
    for rec in table.itertuples():  # every cell is the rows' own number
        label = G.fig5_label(rec.depth, rec.width)
        clean = next(r for r in rows if r["evaluated"] == label and r["role"] == "clean")["metrics"]["top1"]
        released = next(r for r in rows if r.get("authorized") == label and r["role"] == "unauthorized"
                        and np.isclose(r["point"]["ratio"], rec.ratio))
        assert rec.clean_top1 == pytest.approx(clean) and rec.released_top1 == pytest.approx(released["metrics"]["top1"])
        assert rec.drop == pytest.approx(clean - released["metrics"]["top1"])
        assert rec.weights_extracted == released["cost"]["units_extracted"]
    wide = table[table["ratio"] == 0.5]
    assert (wide["weights_extracted"] > table[table["ratio"] == 0.01]["weights_extracted"].values).all()
    md = (tmp_path / "rep" / "corelocker_fig5.md").read_text()
    assert "| hidden layers \\ neurons" in md and "Global extraction ratio 50 %" in md
    from bench.reports.corelocker import CITATION

    assert CITATION in md and "Reported by the paper" in md  # the full citation (every author)
    assert "suite digest" in md and (tmp_path / "rep" / "corelocker_fig5.png").stat().st_size > 0
    assert json.loads((tmp_path / "rep" / "corelocker_fig5.provenance.json").read_text())["provenance"]["suite"] == "fig5-mini"


# -- MFUE Figures 6a/b, 8, 9, 10 from rows ------------------------------------------------------------------------


def _row(defense, role, suspect, score, attack="none", params=None, **metrics):
    return {"suite": "s", "suite_digest": "d", "provenance": {"git": "abc"}, "defense": defense, "role": role,
            "evaluated": suspect, "attack": attack, "params": params or {"n": 1}, "point": {},
            "metrics": {"score": score, **metrics} if role != "summary" else metrics}


def _rows() -> list[dict]:
    rows = []
    for defense, base in (("mfue-w", 0.9), ("ipguard", 0.4)):
        for attack, shift in (("none", 0.0), ("flip", -0.2), ("dp-logits(sigma=2.0)", -0.3)):
            rows.append(_row(defense, "summary", "(all suspects)", None, attack, auc=0.8 + shift / 10,
                             score_pos_mean=base + shift, score_neg_mean=0.1))
            for i, mode in enumerate(("FTLL", "RTAL")):
                rows.append(_row(defense, "positive", f"source(src,digits)->finetune({mode})", base + shift - i / 10,
                                 attack))
            rows.append(_row(defense, "positive", "source(src,digits)->distill(mlp)", base / 2, attack))
            rows.append(_row(defense, "positive", "source(src,digits)->prune(0.3)->finetune(FTLL)", 0.0, attack))
            rows.append(_row(defense, "negative", "independent(mlp,s0,x)", 0.1, attack))
        # a second configuration of the same method: never mixed into the first's bars
        rows.append(_row(defense, "summary", "(all suspects)", None, params={"n": 2}, auc=0.5, score_pos_mean=0.0,
                         score_neg_mean=0.0))
        rows.append(_row(defense, "positive", "source(src,digits)->finetune(FTLL)", 0.0, params={"n": 2}))
    rows.append(_row("modeldiff", "positive", "source(src,digits)->finetune(FTLL)", 1.0))  # not one of the paper's
    return rows


def test_mfue_figures_from_rows(tmp_path):
    from bench.reports import mfue_figures as F

    rows = _rows()
    f6 = F.fig6ab(rows)
    assert list(f6.index) == ["ipguard", "mfue-w"] and list(f6.columns) == ["FTLL", "RTAL"]
    assert f6.loc["mfue-w", "FTLL"] == pytest.approx(0.9) and f6.loc["mfue-w", "RTAL"] == pytest.approx(0.8)
    f8 = F.fig8(rows)
    assert list(f8.columns) == ["mlp-K", "Avg", "negatives (mean)"]
    assert f8.loc["ipguard", "mlp-K"] == pytest.approx(0.2) and f8.loc["ipguard", "negatives (mean)"] == pytest.approx(0.1)
    assert F.fig8([r for r in rows if "distill" not in r["evaluated"]]).empty  # negatives alone are no Figure 8
    f10 = F.fig10(rows)
    assert list(f10.columns) == ["none", "flip"]  # dp-logits is Figure 9's, not a query-processing attack
    assert f10.loc["mfue-w", "flip"] == pytest.approx(np.mean([0.7, 0.6, 0.45, 0.0]))
    f9 = F.fig9(rows)
    mw = f9[f9["method"] == "mfue-w"].set_index("sigma")
    assert list(mw.index) == [0.0, 2.0] and mw.loc[2.0, "positives (mean)"] == pytest.approx(0.6)
    paths = F.render_mfue_figures(rows, tmp_path)
    names = {p.name for p in paths}
    assert {"mfue_fig6ab.png", "mfue_fig8.png", "mfue_fig9.png", "mfue_fig10.png", "mfue_fig8.csv"} <= names
    md = (tmp_path / "mfue_fig6ab.md").read_text()
    assert "T. Xu, Z. Wang, G. Liu, J. Chen, A. M. Abdelmoniem and C. Wang" in md and "above 0.7" in md
    assert "git `abc`" in md and "| mfue-w   | 0.900  | 0.800" in md
    assert F.render_mfue_figures([r for r in rows if r["defense"] == "modeldiff"], tmp_path / "none") == []


def test_mfue_figures_cli_bad_input(tmp_path, capsys):
    from bench.reports.mfue_figures import main

    assert main([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path)]) == 2
    assert "no results file" in capsys.readouterr().err


def test_mfue_models_cli_bad_input_is_one_line_before_any_work(tmp_path, capsys):
    from bench.reports.mfue_models import main

    assert main(["fingerprint-digits", "--out", str(tmp_path / "out"), "--extra-negatives", "-1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "error: --extra-negatives and --sigma must be >= 0\n"
    assert not (tmp_path / "out").exists()


# -- MFUE Figures 5, 7, 9 (models) ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_mfue_models_on_a_tiny_ownership_suite(tmp_path, monkeypatch):
    from bench.reports import mfue_models as M

    suite = tmp_path / "own.toml"
    suite.write_text(
        '[suite]\nname = "own-mini"\nseed = 0\n\n[data]\ndataset = "digits"\nsplit = "test"\ntrain_split = "train"\n\n'
        '[models]\nauthorized = [{ source = "torch", name = "src", factory = "bench.fingerprint.suspects:digits_source", '
        'kwargs = { family = "mlp", seed = 0, epochs = 3 }, mean = [0.305555], std = [0.323724], input_size = [1, 32, 32] }]\n\n'
        '[suspects]\npositives = ["finetune(FTLL)", "prune(0.2)", "advtrain(4/255,1)", "distill(mlp)"]\n'
        'negatives = ["mlp", "cnn"]\nnegative_seeds = [0]\nnegative_epochs = 2\nfinetune_epochs = 1\ndistill_epochs = 1\n\n'
        '[[defenses]]\nname = "mfue-w"\nparams = { n_triggers = 10, n_mimic = 2, mimic_steps = 1, trigger_rounds = 1 }\n'
        'sweep = { tau = [0.5] }\n\n[[defenses]]\nname = "ipguard"\nparams = { n_triggers = 6, steps = 5 }\n')
    paths = M.render_models(str(suite), tmp_path / "out", extra_negatives=2, sigmas=(0.0, 3.0))
    assert {p.name for p in paths} >= {"mfue_fig5.png", "mfue_fig7.png", "mfue_fig9_models.png", "mfue_fig5.csv"}
    f5 = pd.read_csv(tmp_path / "out" / "mfue_fig5.csv")
    # same architecture only (the cnn negative and the distilled student are left out), extraction excluded
    assert list(f5["group"]).count("source") == 1 and f5.loc[f5["group"] == "source", "l2_distance"].item() == 0
    assert sorted(f5["group"].unique()) == ["negative", "positive (advtrain)", "positive (finetune)",
                                            "positive (prune)", "source"]
    assert (f5["group"] == "negative").sum() == 3  # the suite's mlp negative + 2 extra seeds
    assert f5.loc[f5["group"] == "source", "matching_rate"].item() == 1.0
    f7 = pd.read_csv(tmp_path / "out" / "mfue_fig7.csv")
    assert len(f7) == (10 + 6) * 2 and set(f7["model"]) == {"source", "positive"}
    assert (f7["relative_shift"] > 0).all()
    f9 = pd.read_csv(tmp_path / "out" / "mfue_fig9_models.csv")
    assert list(f9["sigma"]) == [0.0, 3.0] and f9["source_test_top1"].iloc[0] > f9["source_test_top1"].iloc[1]
    md = (tmp_path / "out" / "mfue_fig5.md").read_text()
    assert "suite digest" in md and "Spearman" in md and "Abdelmoniem" in md
    with pytest.raises(UserError, match="no \\[\\[defenses\\]\\] entry 'ipguard'"):
        suite.write_text(suite.read_text().split('[[defenses]]\nname = "ipguard"')[0])
        M.render_models(str(suite), tmp_path / "out2", extra_negatives=0)


def test_mnist_files_give_the_papers_784_input_fcn(tmp_path, monkeypatch):
    """The paper grid's data path: torchvision's MNIST layout (MNIST/raw/*-ubyte), 1x28x28, 784 FCN inputs."""
    pytest.importorskip("torchvision")
    monkeypatch.setenv("AUTHBENCH_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 40), ("t10k", 12)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(np.array([2051, n, 28, 28], ">i4").tobytes() + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(np.array([2049, n], ">i4").tobytes() + labels.tobytes())
    from bench.data import load_dataset

    test = load_dataset("mnist", "test", root=str(tmp_path / "data"))
    assert test.images.shape == (12, 1, 28, 28) and test.labels.tolist()[:3] == [0, 1, 2]
    net = G.trained_fcn(2, 8, dataset="mnist", root=str(tmp_path / "data"), epochs=1)
    assert net.net[1].in_features == 784 and net(test.images).shape == (12, 10)
