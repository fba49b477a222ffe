"""Ownership verification: metrics, suspect zoo, fingerprint methods, the verify protocol through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import validate_rows
from bench.attacks.model_attacks import magnitude_prune
from bench.cli import main as cli_main
from bench.data.digits import load_digits_split
from bench.errors import UserError
from bench.fingerprint import FINGERPRINTS as METHODS
from bench.fingerprint import metrics as M
from bench.fingerprint import suspects as S
from bench.fingerprint import training as T
from bench.fingerprint.base import SuspectOracle
from bench.models.adapter import ModelAdapter
from bench.models.zoo import digits_preprocess
from bench.results import read_rows

TINY = {  # query budgets and pools small enough for CPU tests
    "mfue-w": {"n_triggers": 12, "n_mimic": 2, "mimic_steps": 2, "trigger_rounds": 1},
    "mfue-b": {"n_triggers": 8, "n_mimic": 2, "mimic_steps": 2, "trigger_rounds": 1, "n_probes": 8,
               "bisection_steps": 4},
    "ipguard": {"n_triggers": 8, "steps": 10},
    "cae": {"n_triggers": 6, "n_surrogates": 1, "n_references": 1, "steps": 5, "pool_epochs": 1, "pool_families": ["mlp"]},
    "metafinger": {"n_triggers": 6, "n_positive": 1, "n_negative": 1, "steps": 5, "pool_epochs": 1,
                   "pool_families": ["mlp"]},
    "adv-tra": {"n_triggers": 3, "length": 8, "m": 2},
}


@pytest.fixture(scope="module")
def setup():
    """A quickly trained MLP source, its defender/attacker halves, and an easy positive and negative."""
    pre = digits_preprocess()
    source = ModelAdapter("mlp-src", S.digits_source("mlp", 0, epochs=3), pre, "zoo/mlp", "torch")
    defender, attacker = T.halves(load_digits_split("train"))
    config = S.ZooConfig(negative_epochs=3, finetune_epochs=1)
    positive = ModelAdapter("pos", magnitude_prune(source.module, 0.05), pre, "zoo/mlp", "test")
    negative = ModelAdapter("neg", S.independent("mlp", 7, attacker, pre, config), pre, "zoo/mlp", "test")
    return source, defender, attacker, positive, negative


def test_metrics_on_known_scores():
    pos, neg = [0.9, 0.8, 0.7], [0.1, 0.2, 0.75]
    assert M.auc(pos, neg) == pytest.approx(8 / 9)
    assert M.tpr_at_fpr(pos, neg, 0.01) == pytest.approx(2 / 3)  # no false positive allowed: threshold above 0.75
    assert M.tpr_at_fpr(pos, neg, 0.34) == pytest.approx(1.0)
    summary = M.summarize(pos, neg, n_boot=200)
    lo, hi = summary["auc_ci"]
    assert 0 <= lo <= hi <= 1 and summary["n_positive"] == 3
    assert M.bootstrap_ci([0.9, 0.8], [0.1, 0.2], "auc", n=50) == (1.0, 1.0)  # separated: every resample too


def test_vectorized_bootstrap_statistics_match_sklearn():
    rng = np.random.default_rng(1)
    pos, neg = rng.integers(0, 8, (30, 12)) / 8, rng.integers(0, 6, (30, 20)) / 8  # ties included
    assert np.allclose(M._auc_rows(pos, neg), [M.auc(p, q) for p, q in zip(pos, neg)])
    for target in (0.01, 0.05, 0.1, 0.5):
        assert np.allclose(M._tpr_rows(pos, neg, target), [M.tpr_at_fpr(p, q, target) for p, q in zip(pos, neg)])


def test_metrics_reject_bad_scores():
    with pytest.raises(UserError, match="at least one positive and one negative"):
        M.auc([0.5], [])
    with pytest.raises(UserError, match="NaN"):
        M.auc([float("nan")], [0.1])


def test_halves_are_disjoint_and_stratified():
    train = load_digits_split("train")
    a, b = T.halves(train)
    assert not set(a.indices) & set(b.indices) and len(a.labels) + len(b.labels) == len(train.labels)
    assert abs(int((a.labels == 3).sum()) - int((b.labels == 3).sum())) <= 1


def test_chain_parsing_and_naming(setup):
    assert S.parse_chain("prune(0.3)->finetune(FTAL,0.5)") == [("prune", ["0.3"]), ("finetune", ["FTAL", "0.5"])]
    assert S.parse_number("2/255") == pytest.approx(2 / 255)
    assert S.parse_chain("finetune(RTAL,1,3)->advtrain(2/255,4)->hardlabel(cnn)") == [
        ("finetune", ["RTAL", "1", "3"]), ("advtrain", ["2/255", "4"]), ("hardlabel", ["cnn"])]
    for bad in ("prune(0.3)->shrink(2)", "finetune(XX)", "prune()", "finetune(FTAL,1.5)", "finetune(RTAL,1,0)",
                "advtrain(2/255,1.5)", "hardlabel()", "prune(0.1,2)"):
        with pytest.raises(UserError):
            S.parse_chain(bad)
    with pytest.raises(UserError, match="2/255"):
        S.parse_number("a")
    source, _, attacker, _, _ = setup
    config = S.ZooConfig(positives=("prune(0.3)",), negatives=("mlp",), negative_seeds=(0,), negative_epochs=2)
    zoo = S.build_zoo(source, config, attacker, load_digits_split("test"), "digits", progress=False)
    assert [(s.name, s.role, s.kind) for s in zoo] == [
        ("source(mlp-src,digits)->prune(0.3)", "positive", "prune"),
        ("independent(mlp,s0,digits/train[attacker-half])", "negative", "independent"),
    ]
    assert all(0 <= s.top1 <= 100 for s in zoo)


def test_step_epochs_and_hardlabel_extraction(setup, session_cache):
    """finetune(MODE,fraction,epochs) / advtrain(eps,epochs) train for those epochs (Figure 6's epoch axes);
    hardlabel(family) trains a fresh student from the teacher's top-1 labels on generated images only."""
    source, _, attacker, _, _ = setup
    small = attacker.subset(64, 0)
    config = S.ZooConfig(finetune_epochs=1, hardlabel_steps=3)
    one, _ = S.derive(source, "finetune(FTAL,1,1)", small, config, 0)
    two, _ = S.derive(source, "finetune(FTAL,1,2)", small, config, 0)
    default, _ = S.derive(source, "finetune(FTAL)", small, config, 0)
    again = T.finetune(source.module, source.preprocess, small, "FTAL", 2, config.finetune_lr, 0)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in two.state_dict().items())
    assert all(torch.equal(v, default.state_dict()[k]) for k, v in one.state_dict().items())  # default: 1 epoch
    student, kinds = S.derive(source, "hardlabel(mlp)", small, config, 0)
    assert kinds == ["hardlabel"] and type(student) is type(T.build_arch("mlp"))
    calls = []
    teacher = source.module
    hook = teacher.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        T.hardlabel_extract(teacher, source.preprocess, (1, 32, 32), 10, "mlp", 2, 1e-3, 1, batch=16)
    finally:
        hook.remove()
    assert calls == [16, 16]  # one labelled batch of generated images per step, nothing else


def test_finetune_modes_and_cache(setup, session_cache):
    source, _, attacker, _, _ = setup
    config = S.ZooConfig(finetune_epochs=1)
    ftll, _ = S.derive(source, "finetune(FTLL,0.2)", attacker, config, 0)
    before = {k: v.clone() for k, v in source.module.state_dict().items()}
    changed = {k for k, v in ftll.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"net.5.weight", "net.5.bias"}  # last layer only; the source is untouched
    assert all(torch.equal(v, before[k]) for k, v in source.module.state_dict().items())
    files = sorted((session_cache / "suspects").glob("*.safetensors"))
    again, _ = S.derive(source, "finetune(FTLL,0.2)", attacker, config, 0)
    assert sorted((session_cache / "suspects").glob("*.safetensors")) == files  # loaded, not retrained
    assert all(torch.equal(v, ftll.state_dict()[k]) for k, v in again.state_dict().items())


@pytest.mark.parametrize("name", list(TINY))
def test_method_end_to_end(setup, name):
    source, defender, _, positive, negative = setup
    method = METHODS[name](**TINY[name])
    fp = method.fingerprint(source, defender, seed=0)
    scores = {}
    for adapter in (source, positive, negative):
        oracle = SuspectOracle(adapter, labels_only=method.labels_only)
        scores[adapter.name] = method.verify(fp, oracle)
        assert oracle.queries > 0
    assert all(0 <= s <= 1 for s in scores.values())
    assert scores["mlp-src"] == 1.0  # the source matches its own fingerprint
    if name == "mfue-w":  # easy case: a 5%-pruned copy against an independently trained model
        assert scores["pos"] > scores["neg"]


def test_labels_only_oracle_refuses_probabilities(setup):
    with pytest.raises(UserError, match="labels only"):
        SuspectOracle(setup[0], labels_only=True).probs(torch.zeros(1, 1, 32, 32))


def _suite(path: Path, extra_defense: str = "", suspects: bool = True) -> Path:
    section = ('[suspects]\npositives = ["prune(0.2)", "finetune(FTLL)"]\nnegatives = ["mlp"]\n'
               'negative_seeds = [0, 1]\nnegative_epochs = 2\nfinetune_epochs = 1\n') if suspects else ""
    params = "{ " + ", ".join(f"{k} = {v}" for k, v in TINY["ipguard"].items()) + " }"
    path.write_text(
        '[suite]\nname = "fp-mini"\nseed = 0\n\n[data]\ndataset = "digits"\nsplit = "test"\nsubset = 60\n\n'
        '[models]\nauthorized = [{ source = "torch", name = "src", factory = "bench.fingerprint.suspects:digits_source", '
        'kwargs = { family = "mlp", seed = 0, epochs = 3 }, mean = [0.305555], std = [0.323724], input_size = [1, 32, 32] }]\n\n'
        f'{section}\n[[defenses]]\nname = "ipguard"\nparams = {params}\nattacks = ["none", "flip", {{ name = "dp-logits", sigma = 1.0 }}]\n'
        f'{extra_defense}')
    return path


def test_cli_run_writes_rows_roc_and_table(tmp_path, capsys):
    suite = _suite(tmp_path / "fp.toml")
    args = ["run", str(suite), "--out", str(tmp_path / "run"), "--reports", str(tmp_path / "rep"), "--no-progress"]
    assert cli_main(args) == 0
    rows = [r for r in read_rows(tmp_path / "run") if r["release"] == "verify"]
    assert {r["role"] for r in rows} == {"positive", "negative", "summary"}
    validate_rows(rows)
    assert len([r for r in rows if r["role"] == "positive"]) == 2 * 3  # 2 positives x 3 attacks
    assert "source(src,digits)->prune(0.2)" in {r["evaluated"] for r in rows}
    summary = next(r for r in rows if r["role"] == "summary" and r["attack"] == "none")
    assert 0 <= summary["metrics"]["auc"] <= 1 and summary["metrics"]["self_score"] == 1.0
    assert (tmp_path / "rep" / "fingerprint_roc.png").stat().st_size > 0
    assert (tmp_path / "rep" / "fingerprint_attacks.png").stat().st_size > 0
    table = (tmp_path / "rep" / "fingerprint_table1.md").read_text()
    assert "fp-mini (measured)" in table and "CIFAR-10 (reported)" in table
    assert "no figure here is reported by a paper" not in table and "seed 003" not in table
    assert 'Breaking the Boundary Barrier' in table and "doi 10.1145/3770854.3780310, Table 1" in table
    assert "|                  0.63 |" in table  # IPGuard, CIFAR-10, at the paper's precision (not 0.630)
    table2 = (tmp_path / "rep" / "fingerprint_table2.md").read_text()
    assert "Table 2" in table2 and "| she        | ipguard  |" in table2 and "0.77" in table2
    summary_metrics = summary["metrics"]
    assert all(0 <= summary_metrics[f"detect_{d}"] <= 1 for d in ("msp", "she", "daeit", "scadn"))
    assert summary_metrics["query_detection_rate"] == summary_metrics["detect_msp"]
    strength = (tmp_path / "rep" / "fingerprint_strength.md").read_text()
    assert "| pruning rate | 0.200 |" in strength  # the prune(0.2) positive, by its rate
    assert "ipguard" in capsys.readouterr().out
    suspects = (tmp_path / "rep" / "fingerprint_suspects.md").read_text().splitlines()
    assert "| source(src)" in suspects[6] and "->prune(0.2)" in suspects[7]  # source first, then its suspects
    assert cli_main(args) == 0  # rerun: every job is done
    assert len([r for r in read_rows(tmp_path / "run") if r["release"] == "verify"]) == len(rows)


def test_bad_suites_are_user_errors(tmp_path):
    from conftest import make_engine
    from bench.suite import load_suite

    with pytest.raises(UserError, match=r"no \[suspects\] section"):
        make_engine(load_suite(str(_suite(tmp_path / "a.toml", suspects=False))), tmp_path / "ra", progress=False)
    model_attack = '\n[[defenses]]\nname = "mfue-w"\nattacks = ["prune"]\n'
    with pytest.raises(UserError, match="belong in the \\[suspects\\] section"):
        make_engine(load_suite(str(_suite(tmp_path / "b.toml", model_attack))), tmp_path / "rb", progress=False)
    with pytest.raises(UserError, match="tau must be in"):
        METHODS["mfue-w"](tau=1.5)
    with pytest.raises(UserError, match="unknown probe"):
        METHODS["mfue-b"](probe="uniform")


def test_gpu_suites_plan_and_hub_architectures(tmp_path):
    """The CIFAR-10 / ImageNet suites parse and plan verify jobs; their timm/torchvision steps run on a tiny batch."""
    from bench.data.base import Split
    from bench.models.adapter import Preprocess
    from conftest import make_engine
    from bench.suite import load_suite
    from bench.protocols.ownership import zoo_config

    for name in ("fingerprint-cifar10", "fingerprint-imagenet", "fingerprint-cifar100", "fingerprint-digits-fig6"):
        runner = make_engine(load_suite(name), tmp_path / name, progress=False)
        assert {j.protocol for j in runner.jobs if j.defense != "none"} == {"verify"}
        assert len(zoo_config(runner.ctx.suite).positives) >= 14
    gen = torch.Generator().manual_seed(0)
    tiny = Split("tiny", torch.rand(8, 3, 32, 32, generator=gen), torch.arange(8) % 4, torch.arange(8).numpy(), 4)
    pre = Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), (3, 32, 32))
    teacher = T.build_arch("timm:test_resnet", 4, 3).eval()
    student = T.distill(teacher, pre, tiny, "torchvision:resnet18", 1, 1e-3, 0)
    assert student(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(UserError, match="unknown torchvision model"):
        T.build_arch("torchvision:no-such-net")


def test_cifar_style_suite_smoke(tmp_path):
    """A tiny version of fingerprint-cifar10.toml end to end: 3-channel data from an .npz, a timm ResNet18
    source (timm test_resnet, the CPU stand-in for ResNet18) trained on the source half
    (half_trained), a timm negative, IPGuard."""
    gen = np.random.default_rng(0)
    labels = np.arange(80) % 4
    images = (labels[:, None, None, None] * 60 + gen.integers(0, 40, (80, 3, 32, 32))).astype(np.uint8)
    np.savez(tmp_path / "c.npz", train_images=images[:60], train_labels=labels[:60], test_images=images[60:],
             test_labels=labels[60:])
    data = f'dataset = "cifar10", path = "{tmp_path / "c.npz"}"'
    (tmp_path / "c.toml").write_text(
        f'[suite]\nname = "fp-cifar-mini"\n\n[data]\n{data.replace(", ", chr(10))}\nsplit = "test"\n\n'
        '[models]\nauthorized = [{ source = "torch", name = "r18", factory = "bench.fingerprint.suspects:half_trained", '
        f'kwargs = {{ family = "timm:test_resnet", {data}, epochs = 3, lr = 0.001, optimizer = "adamw" }}, '
        'mean = [0.5, 0.5, 0.5], std = [0.25, 0.25, 0.25], input_size = [3, 32, 32] }]\n\n'
        '[suspects]\npositives = ["prune(0.2)"]\nnegatives = ["timm:test_resnet"]\nnegative_seeds = [0]\nnegative_epochs = 1\n\n'
        '[[defenses]]\nname = "ipguard"\nparams = { n_triggers = 2, steps = 3 }\n')
    args = ["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"), "--reports", str(tmp_path / "rep"),
            "--no-progress"]
    assert cli_main(args) == 0
    rows = {r["role"]: r for r in read_rows(tmp_path / "run") if r["release"] == "verify"}
    assert rows["positive"]["evaluated"] == "source(r18,cifar10)->prune(0.2)"
    assert rows["negative"]["arch"]["evaluated"] == "fingerprint/timm:test_resnet"
    assert rows["summary"]["metrics"]["n_positive"] == 1
