"""CoreLocker: bit-exact unlock, what the released model holds, key files, model attacks, reports, recipe."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from safetensors import safe_open

from bench.attacks.model_attacks import Distill, FinePrune, FineTune, Prune
from bench.data.digits import load_digits_split
from bench.defenses.corelocker import CoreLocker, load_key, save_key, unlock
from bench.core.errors import UserError
from bench.models.adapter import ModelAdapter, Preprocess
from bench.models.zoo import SmallResNet, TinyViT
from bench.reports.corelocker import PAPER, REPORTED, corelocker_frame, render_corelocker, table1

PRE = Preprocess((0.5,), (0.25,), (1, 32, 32))


def adapter(module: nn.Module, name: str = "m") -> ModelAdapter:
    torch.manual_seed(0)
    for p in module.parameters():  # non-trivial BN affine parameters, so criteria differ
        if p.ndim == 1:
            nn.init.uniform_(p, -1, 1)
    return ModelAdapter(name, module.eval(), PRE, f"test/{name}", "torch")


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(1024, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(),
                         nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))


def conv_net(widths: tuple[int, ...], pools: tuple[nn.Module, ...], head: tuple[int, ...]) -> nn.Sequential:
    """Seeded: per width a 3x3 Conv2d (1 input channel first), its BatchNorm2d, a ReLU and that layer's
    pooling; then Flatten and Linear layers of sizes `head` with ReLUs between (conv at 0, 4, 8, BN at 1, 5, 9)."""
    torch.manual_seed(0)
    layers, channels = [], 1
    for width, pool in zip(widths, pools, strict=True):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), pool]
        channels = width
    layers.append(nn.Flatten())
    for i, (a, b) in enumerate(zip(head, head[1:])):
        layers += [nn.ReLU()] * (i > 0) + [nn.Linear(a, b)]
    return nn.Sequential(*layers)


def cnn():
    return conv_net((8, 16, 16), (nn.MaxPool2d(2), nn.MaxPool2d(2), nn.MaxPool2d(2)), (16 * 16, 24, 10))


def vit():
    torch.manual_seed(0)
    return TinyViT()


MODELS = {"mlp": mlp, "cnn": cnn, "vit": vit}


def positions(key: dict) -> dict[str, torch.Tensor]:
    return {k[: -len(".index")]: v for k, v in key.items() if k.endswith(".index")}


@pytest.mark.parametrize("kind", list(MODELS))
def test_unlock_is_bit_exact_and_released_holds_no_key_value(kind):
    model = adapter(MODELS[kind]())
    original = copy.deepcopy(model.module.state_dict())
    defense = CoreLocker(ratio=0.1, criterion="l1")
    protected = defense.protect(model, None, seed=0)
    assert all(torch.equal(original[k], v) for k, v in model.module.state_dict().items())  # input untouched
    unlocked = defense.authorized(protected, model)
    assert all(torch.equal(original[k], v) for k, v in unlocked.module.state_dict().items())
    assert unlocked.name == model.name and unlocked.preprocess == model.preprocess and unlocked.arch == model.arch
    released = protected.released.state_dict()
    where = positions(protected.key)
    assert where, "nothing extracted"
    for name, value in original.items():
        flat = released[name].flatten()
        changed = (flat != value.flatten()).nonzero().flatten()
        index = where.get(name, torch.zeros(0, dtype=torch.long))
        assert set(changed.tolist()) <= set(index.tolist()), f"{name} changed outside the key"
        if len(index):
            assert torch.equal(protected.key[f"{name}.values"], value.flatten()[index])
            assert (flat[index] == 0).all()
            kept = value.flatten()[index]
            assert not torch.isin(flat[index], kept[kept != 0]).any()
    bns = {n for n, m in model.module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    for bn in bns & {n.rpartition(".")[0] for n in where}:  # extracted channels: their running statistics too
        for stat in ("running_mean", "running_var"):
            assert torch.equal(where[f"{bn}.{stat}"], where[f"{bn}.weight"])
            assert (released[f"{bn}.{stat}"].flatten()[where[f"{bn}.{stat}"]] == 0).all()
    cost = protected.cost
    assert cost["key_values"] == sum(len(v) for v in where.values()) and cost["retraining"] is False
    assert 0 < cost["fraction_of_params"] < 1 and cost["key_bytes"] > 0 and cost["units_extracted"] > 0


@pytest.mark.parametrize("granularity", ["row", "weight"])
@pytest.mark.parametrize("kind", list(MODELS))
def test_input_and_output_layers_untouched_and_global_ratio(kind, granularity):
    model = adapter(MODELS[kind]())
    layers = [(n, m) for n, m in model.module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
              and ".self_attn." not in n]
    first, last = layers[0][0], layers[-1][0]
    protected = CoreLocker(ratio=0.1, criterion="l1", granularity=granularity).protect(model, None, 0)
    touched = {k.rsplit(".", 1)[0] for k in positions(protected.key)}
    assert first not in touched and last not in touched
    mhas = [m for m in model.module.modules() if isinstance(m, nn.MultiheadAttention)]
    if granularity == "row":  # units: filters and rows
        units = sum(m.out_features if isinstance(m, nn.Linear) else m.out_channels for _, m in layers[1:-1])
        units += sum(m.in_proj_weight.shape[0] + m.out_proj.out_features for m in mhas)
    else:  # Conv2d filters, single Linear / attention weights
        units = sum(m.weight.numel() if isinstance(m, nn.Linear) else m.out_channels for _, m in layers[1:-1])
        units += sum(m.in_proj_weight.numel() + m.out_proj.weight.numel() for m in mhas)
    assert protected.cost["units_eligible"] == units
    if granularity == "row" or kind == "mlp":  # one pool: exactly the global share
        assert protected.cost["units_extracted"] == round(0.1 * units)


def test_weight_granularity_extracts_the_largest_single_weights_globally():
    """Definition 1 / Sec. 5.1: single Linear weights ranked by |w| over all hidden layers together; the
    'row' option ranks whole rows by their l1 norm (the harness's earlier behaviour)."""
    model = adapter(mlp())
    hidden = ["3", "5"]  # Linear layers 2 and 3 of 4 (the input layer 1 and output layer 7 are kept)
    weights = torch.cat([model.module.state_dict()[f"{n}.weight"].flatten() for n in hidden]).abs()
    protected = CoreLocker(ratio=0.01, criterion="l1").protect(model, None, 0)
    where = positions(protected.key)
    assert set(where) <= {f"{n}.weight" for n in hidden}  # no bias, no next-layer columns: single weights
    k = round(0.01 * len(weights))
    picked = torch.cat([protected.key[f"{n}.weight.values"] for n in hidden if f"{n}.weight" in where]).abs()
    assert len(picked) == k == protected.cost["units_extracted"]
    assert picked.min() >= torch.sort(weights, descending=True).values[k - 1]
    released = protected.released.state_dict()
    for n in hidden:  # no whole row is zeroed (a 1% pick of |w| does not fill a row)
        assert not (released[f"{n}.weight"] == 0).all(1).any()
    rows = CoreLocker(ratio=0.1, criterion="l1", granularity="row").protect(model, None, 0)
    assert any((rows.released.state_dict()[f"{n}.weight"] == 0).all(1).any() for n in hidden)
    with pytest.raises(UserError, match="parameter granularity = 'cell' is not valid: it must be one of 'weight', 'row'"):
        CoreLocker(granularity="cell")


def rows_of(protected, layer: str) -> set[int]:
    """Output units of `layer` whose whole weight row was extracted."""
    w = protected.released.state_dict()[f"{layer}.weight"]
    return {r for r in range(w.shape[0]) if (w[r] == 0).all()}


def test_criteria_select_different_units_and_random_uses_seed():
    model = adapter(cnn())
    picks = {c: rows_of(CoreLocker(ratio=0.25, criterion=c, random_unit="filter").protect(model, None, 0), "4") |
             {100 + r for r in rows_of(CoreLocker(ratio=0.25, criterion=c, random_unit="filter").protect(model, None, 0), "8")}
             for c in ("l1", "bn-scale", "random")}
    assert len({frozenset(p) for p in picks.values()}) == 3
    again = CoreLocker(ratio=0.25, criterion="random", random_unit="filter").protect(model, None, 1)
    assert rows_of(again, "4") | {100 + r for r in rows_of(again, "8")} != picks["random"]
    bn = CoreLocker(ratio=0.25, criterion="bn-scale").protect(model, None, 0)
    gamma = model.module[5].weight.abs()
    chosen = rows_of(bn, "4")
    if chosen and len(chosen) < 16:  # the chosen filters of conv 4 are its largest |gamma|
        assert min(gamma[list(chosen)]) >= max(gamma[[r for r in range(16) if r not in chosen]])


def test_linked_next_layer_channels_zeroed_and_residual_noted():
    model = adapter(cnn())
    protected = CoreLocker(ratio=0.5, criterion="random", random_unit="filter").protect(model, None, 0)
    state = protected.released.state_dict()
    assert rows_of(protected, "4") and rows_of(protected, "8")
    for layer, nxt, bn in (("4", "8", "5"), ("8", "13", "9")):
        for r in rows_of(protected, layer):
            assert state[f"{bn}.weight"][r] == 0 and state[f"{bn}.bias"][r] == 0
            cols = state[f"{nxt}.weight"][:, r] if layer == "4" else state[f"{nxt}.weight"][:, r * 16 : (r + 1) * 16]
            assert (cols == 0).all()
    res = CoreLocker(ratio=0.2).protect(adapter(SmallResNet()), None, 0)
    assert "without a verified next-layer link" in res.cost["notes"]


def bn150():
    """Three hidden conv layers with 50 BatchNorm channels each: 150 |gamma| ranked globally."""
    return conv_net((50, 50, 50), (nn.MaxPool2d(4), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1)), (50, 10))


def test_bn_scale_count_paper_by_default_and_the_codes_threshold_as_an_option():
    """150 BatchNorm channels at 0.05: the paper's share round(0.05 * 150) = 8; the public code (corelock.py)
    thresholds at the sorted |gamma| of index int(150 * 0.95) = 142 and extracts those above it: 7."""
    from bench.defenses.corelocker import code_count

    model = adapter(bn150())
    paper = CoreLocker(ratio=0.05).protect(model, None, 0)
    code = CoreLocker(ratio=0.05, count="code").protect(model, None, 0)
    assert paper.cost["units_eligible"] == code.cost["units_eligible"] == 150
    assert (paper.cost["units_extracted"], code.cost["units_extracted"]) == (8, 7) == (8, code_count(150, 0.05))
    gamma = torch.cat([model.module[i].weight.detach().abs() for i in (1, 5, 9)])
    threshold = torch.sort(gamma).values[int(150 * 0.95)]  # corelock.py's rule, written out
    released = torch.cat([code.released[i].weight.detach() for i in (1, 5, 9)])
    assert torch.equal(released == 0, gamma > threshold)


def test_random_control_extracts_random_single_weights_by_default():
    """The paper's baseline is "random weight extraction" at the same ratio: single weights of every hidden layer
    (conv weights too), not whole filters; random_unit = "filter" is the earlier whole-filter control."""
    model = adapter(cnn())
    hidden = {"4.weight": 8 * 16 * 9, "8.weight": 16 * 16 * 9, "13.weight": 256 * 24}
    weights = CoreLocker(ratio=0.1, criterion="random").protect(model, None, 0)
    assert weights.cost["units_eligible"] == sum(hidden.values())
    assert weights.cost["units_extracted"] == round(0.1 * sum(hidden.values()))
    state = weights.released.state_dict()
    zeroed = {name: int((state[name] == 0).sum()) for name in hidden}
    assert sum(zeroed.values()) == weights.cost["units_extracted"] and all(zeroed.values())
    assert not rows_of(weights, "4") and not rows_of(weights, "8")  # no whole filter removed
    assert state["5.weight"].ne(0).all()  # BatchNorm untouched
    filters = CoreLocker(ratio=0.1, criterion="random", random_unit="filter").protect(model, None, 0)
    assert rows_of(filters, "4") or rows_of(filters, "8")


def test_key_round_trip_and_wrong_model(tmp_path):
    model = adapter(cnn())
    protected = CoreLocker().protect(model, None, 0)
    path = save_key(protected.key, tmp_path / "key.safetensors")
    assert path.stat().st_size == protected.cost["key_bytes"]
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["__model_digest__"] == model.digest
    key = load_key(path)
    assert key.keys() == protected.key.keys() and all(torch.equal(key[k], v) for k, v in protected.key.items())
    restored = unlock(protected.released, key, model.digest)
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), model.module.state_dict().values()))
    other = adapter(cnn(), "other")
    other.module[4].weight.data.add_(1)
    with pytest.raises(UserError, match="belongs to model"):
        unlock(protected.released, key, other.digest)
    with pytest.raises(UserError, match="does not restore"):
        unlock(other.module, key, model.digest)
    with pytest.raises(UserError, match="does not have"):
        unlock(mlp(), key, model.digest)
    (tmp_path / "bad").write_text("x")
    with pytest.raises(UserError, match="not a safetensors"):
        load_key(tmp_path / "bad")


@pytest.fixture(scope="module")
def digits():
    return load_digits_split("train").subset(200, 0)


@pytest.mark.parametrize("attack", [FineTune(epochs=1), Prune(ratio=0.3), FinePrune(epochs=1), Distill(fraction=0.3, epochs=1)])
def test_model_attacks_copy_and_leave_input(attack, digits):
    module = adapter(cnn()).module
    before = copy.deepcopy(module.state_dict())
    out = attack(module, PRE, digits, seed=0)
    assert out is not module
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in out.state_dict().items())
    assert out(PRE(digits.images[:4])).shape == (4, 10)


def test_prune_ratio_and_finetune_resamples(digits):
    module = mlp()
    out = Prune(ratio=0.2).__call__(module, PRE, digits, 0)
    weights = [m.weight for m in out.modules() if isinstance(m, nn.Linear)]
    total = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) == round(0.2 * total)
    assert not any(hasattr(m, "weight_orig") for m in out.modules())
    a, b = (FineTune(epochs=1, fraction=0.1)(module, PRE, digits, s) for s in (0, 1))
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def synthetic_rows() -> list[dict]:
    rows = []

    def row(model, defense, role, attack, top1, trial=0, **point):
        rows.append({"suite": "syn", "suite_digest": "abc", "defense": defense, "params": {"ratio": 0.05, "criterion": "bn-scale", "seed": 0},
                     "point": point, "release": "model" if defense != "none" else "clean", "attack": attack,
                     "trial": trial, "authorized": "" if defense == "none" else model,
                     "evaluated": model if role != "unauthorized" else f"{model}[released]", "role": role,
                     "metrics": {"top1": top1}, "cost": {"key_bytes": 10}, "provenance": {"git": "deadbeef"}})

    for i, model in enumerate(("vgg", "resnet")):
        row(model, "none", "clean", "none", 94.0 + i)
        for ratio in (0.001, 0.01, 0.05):
            for crit in ("l1", "bn-scale"):
                row(model, "corelocker", "unauthorized", "none", 10.0 + 100 * (0.05 - ratio), ratio=ratio, criterion=crit)
                row(model, "corelocker", "authorized", "none", 94.0 + i, ratio=ratio, criterion=crit)
            for t in range(3):
                row(model, "corelocker", "unauthorized", "none", 80.0 + t, trial=t, ratio=ratio, criterion="random",
                    random_unit="weight")
        for t in range(3):
            for attack, top1 in (("finetune(fraction=0.05)", 20.0 + 2 * t), ("finetune(fraction=0.1)", 30.0 + t),
                                 ("prune(ratio=0.2)", 10.0), ("distill", 50.0 + t)):
                row(model, "corelocker", "unauthorized", attack, top1, trial=t, ratio=0.05, criterion="bn-scale")
    return rows


def test_report_tables_from_synthetic_rows(tmp_path):
    rows = synthetic_rows()
    t1 = table1(corelocker_frame(rows))
    assert list(t1) == ["vgg", "resnet"]
    assert t1["vgg"]["Original"][:2] == (94.0, 0.0)
    assert t1["vgg"]["Random extraction"] == pytest.approx((81.0, (2 / 3) ** 0.5, 3))
    paths = render_corelocker(rows, tmp_path)
    names = {p.name for p in paths}
    assert {"corelocker_table1.md", "corelocker_table2.md", "corelocker_table3.md", "corelocker_table5.md",
            "corelocker_fig6.png"} <= names
    md1 = (tmp_path / "corelocker_table1.md").read_text()
    assert md1.startswith("Measured by authbench (suite `syn`") and "git `deadbeef`" in md1
    assert "81.00 ± 0.82" in md1
    measured, reported = md1.split(f"### Reported by the paper ({PAPER}), Table 1")
    assert "Zihan Wang, Zhongkui Ma, Xinguo Feng, Ruoxi Sun, Hu Wang, Minhui Xue, Guangdong Bai" in PAPER
    assert "94.62" not in measured and "94.62" in reported
    md2 = (tmp_path / "corelocker_table2.md").read_text()
    assert "▲ finetune(fraction=0.05)" in md2 and "12.00 ± 1.63" in md2 and "17.23 ± 4.26" in md2
    assert "prune" not in md2.split("### Reported")[0]
    md5 = (tmp_path / "corelocker_table5.md").read_text()
    measured5, reported5 = md5.split("### Reported by the paper")
    assert "vgg random" in measured5 and "73.3" not in measured5
    assert "| 73.3 " in reported5 and "73.30" not in reported5 and "| 70–75 " in reported5  # the paper's precision
    csv1 = pd.read_csv(tmp_path / "corelocker_table1.csv")
    assert list(csv1.columns) == ["model", "column", "mean", "std", "trials"] and len(csv1) > 0
    assert json.loads((tmp_path / "corelocker_table1.provenance.json").read_text())["note"].startswith("Measured by")
    assert render_corelocker([r for r in rows if r["attack"] == "none" and r["point"].get("ratio") == 0.05], tmp_path / "few") \
        and not (tmp_path / "few" / "corelocker_table2.md").exists()


def test_reported_values_cite_the_paper():
    assert len([e for e in REPORTED if e["table"] == 1]) == 36
    assert {(e["table"], e["kind"]) for e in REPORTED} == {(t, "reported") for t in (1, 2, 3, 5, 6, 7, "fig7")}
    assert all("IEEE Symposium on Security and Privacy (S&P) 2024" in e["citation"]
               and "Zihan Wang, Zhongkui Ma" in e["citation"]
               for e in REPORTED)
    assert len([e for e in REPORTED if e["table"] == 5]) == 40  # 20 ratios x (ResNet-164, DenseNet-40)
    cell5 = next(e for e in REPORTED if e["table"] == 5 and e["row"] == "0.0050" and "ResNet-164" in e["column"])
    assert cell5["value"] == 51.9
    cell = next(e for e in REPORTED if e["table"] == 2 and e["row"] == "CIFAR-10 / Vgg-19" and "10%" in e["column"])
    assert (cell["value"], cell["std"]) == (29.52, 9.05)


def test_train_recipe_smoke(tmp_path):
    from bench.recipes.train_classifier import densenet40, main, resnet164

    out = main(["--model", "timm:test_resnet", "--dataset", "digits", "--epochs", "1", "--subset", "64",
                "--batch-size", "32", "--out", str(tmp_path / "ck.safetensors")])
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["dataset"] == "digits" and float(f.metadata()["test_top1"]) >= 0
        assert any(k.endswith("weight") for k in f.keys())
    with pytest.raises(UserError, match="not found"):
        main(["--model", "timm:test_resnet", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out", "x"])
    assert sum(p.numel() for p in resnet164().parameters()) == pytest.approx(1.70e6, rel=0.01)
    assert sum(p.numel() for p in densenet40().parameters()) == pytest.approx(1.06e6, rel=0.01)


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("densenet121", 32), ("vit_tiny_patch16_224", 224)])
def test_timm_models_lock_and_unlock_bit_exact(name, size):
    from bench.data.digits import load_digits_split
    from bench.models.sources import load_model

    model = load_model({"source": "timm", "model": name, "num_classes": 10, "input_size": [3, size, size]}, progress=False)
    defense = CoreLocker(ratio=0.05, criterion="bn-scale")
    protected = defense.protect(model, load_digits_split("train"), 0)
    original = model.module.state_dict()
    released = protected.released.state_dict()
    unlocked = defense.authorized(protected, model).module.state_dict()
    assert protected.cost["units_extracted"] > 0
    assert any(not torch.equal(original[k], released[k]) for k in original)
    assert all(torch.equal(original[k], unlocked[k]) for k in original)


def test_batchnorm_statistics_of_extracted_channels_are_zeroed_and_restored():
    """Issue 14: the released model kept the running mean/variance of extracted channels (per-channel
    statistics of the training data); they are extracted into the key with gamma and beta."""
    model = adapter(MODELS["cnn"]())
    gen = torch.Generator().manual_seed(0)
    for m in model.module.modules():  # statistics as after training (fresh modules hold zeros and ones)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    defense = CoreLocker(ratio=0.3, criterion="bn-scale")
    protected = defense.protect(model, None, seed=0)
    where = positions(protected.key)
    stats = [n for n in where if n.endswith((".running_mean", ".running_var"))]
    assert len(stats) >= 2
    released = protected.released.state_dict()
    for name in stats:
        bn = name.rpartition(".")[0]
        assert torch.equal(where[name], where[f"{bn}.weight"]) and (released[name].flatten()[where[name]] == 0).all()
        assert not torch.equal(released[name], model.module.state_dict()[name])
    unlocked = defense.authorized(protected, model).module.state_dict()
    assert all(torch.equal(unlocked[k], v) for k, v in model.module.state_dict().items())


class _SharedOutput(nn.Module):
    """A hidden conv whose output feeds a BatchNorm and, unnormalised, a concat (as a DenseNet stem does)."""

    def __init__(self):
        super().__init__()
        self.stem, self.mid = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1)
        self.bn, self.conv = nn.BatchNorm2d(6), nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        m = self.mid(self.stem(x))
        y = torch.cat([m, self.conv(torch.relu(self.bn(m)))], 1)
        return self.head(y.mean((2, 3)))


def test_bn_scale_ranks_every_batchnorm_gamma_globally_in_a_preactivation_resnet():
    """Issue 15: bn-scale used only a BatchNorm that directly reads a conv output, so a pre-activation
    network (bn -> relu -> conv on a residual sum) fell back to an l1 pool; the public code ranks every
    BatchNorm gamma globally. Units are now all BN channels; the top |gamma| are extracted."""
    from bench.recipes.train_classifier import resnet164

    torch.manual_seed(0)
    model = adapter(resnet164(num_classes=10, in_chans=1, depth=11))  # 3 pre-activation bottlenecks
    bns = {n: m for n, m in model.module.named_modules() if isinstance(m, nn.BatchNorm2d)}
    protected = CoreLocker(ratio=0.1, criterion="bn-scale").protect(model, None, 0)
    total = sum(m.num_features for m in bns.values())
    assert protected.cost["units_eligible"] == total and protected.cost["unit"] == "batchnorm channel"
    assert "ranked by l1" not in protected.cost["notes"]
    where = positions(protected.key)
    picked = {(n, int(c)) for n in bns for c in where.get(f"{n}.weight", [])}
    k = round(0.1 * total)
    assert len(picked) == k == protected.cost["units_extracted"]
    gammas = sorted(((float(m.weight[c].detach().abs()), n, c) for n, m in bns.items() for c in range(m.num_features)), reverse=True)
    assert picked == {(n, c) for _, n, c in gammas[:k]}
    released = protected.released.state_dict()
    for n, c in picked:
        assert released[f"{n}.weight"][c] == 0 and released[f"{n}.bias"][c] == 0
    residual = [n for n in picked if n[0].endswith("bn1") or n[0] == "4"]  # BNs that read a residual sum
    assert residual, "no pre-activation BN (on a residual sum) among the extracted channels"
    for n, c in picked:  # a BN that reads a conv output alone: that filter is extracted with the channel
        if n.endswith(("bn2", "bn3")):
            conv = n[: -len("bnX")] + ("conv1" if n.endswith("bn2") else "conv2")
            assert (released[f"{conv}.weight"][c] == 0).all() and f"{conv}.weight" in where
    unlocked = CoreLocker(ratio=0.1).authorized(protected, model).module.state_dict()
    assert all(torch.equal(unlocked[k_], v) for k_, v in model.module.state_dict().items())
    x = PRE(torch.rand(4, 1, 32, 32))
    assert not torch.equal(protected.released(x), model.module(x))


def test_bn_scale_keeps_a_producer_filter_that_also_feeds_a_concat_and_falls_back_without_bn():
    model = adapter(_SharedOutput())
    protected = CoreLocker(ratio=0.5, criterion="bn-scale").protect(model, None, 0)
    where = positions(protected.key)
    assert "bn.weight" in where and "mid.weight" not in where  # zeroing mid would change the concat
    assert "also feeds other layers" in protected.cost["notes"]
    x = PRE(torch.rand(2, 1, 32, 32))
    # the concat's unnormalised copy of the channel is untouched
    assert torch.equal(protected.released.mid(protected.released.stem(x)), model.module.mid(model.module.stem(x)))
    plain = CoreLocker(ratio=0.1, criterion="bn-scale").protect(adapter(mlp()), None, 0)
    assert "no affine BatchNorm; units ranked by l1" in plain.cost["notes"]


def test_fine_prune_removes_the_least_activated_channels_then_fine_tunes(digits):
    """Fine-Pruning (the attack CoreLocker Sec. 5.3 follows): channels ranked by mean activation on the
    attacker's clean data, the least active `ratio` of each hidden layer pruned, then fine-tuning that
    keeps them pruned."""
    module = adapter(cnn()).module
    subset = digits.subset(round(0.5 * len(digits.labels)), 0)
    acts = {}
    hooks = [module[i].register_forward_hook(lambda m, a, o, i=i: acts.__setitem__(i, o.detach()))
             for i in (4, 8, 13)]
    with torch.no_grad():
        module(PRE(subset.images))
    for h in hooks:
        h.remove()
    only = FinePrune(ratio=0.25, fraction=0.5, epochs=0)(module, PRE, digits, 0)
    for i in (4, 8, 13):  # hidden layers: conv 4, conv 8, linear 13 (conv 0 and linear 15 are kept)
        w = only.state_dict()[f"{i}.weight"]
        zero = {r for r in range(w.shape[0]) if (w[r] == 0).all()}
        mean = acts[i].transpose(0, 1).flatten(1).mean(1) if acts[i].ndim == 4 else acts[i].mean(0)
        assert zero == set(torch.sort(mean, stable=True).indices[: round(0.25 * w.shape[0])].tolist())
    assert torch.equal(only.state_dict()["0.weight"], module.state_dict()["0.weight"])
    last = FinePrune(ratio=0.25, fraction=0.5, epochs=0, scope="last")(module, PRE, digits, 0)
    assert not (last.state_dict()["4.weight"] == 0).all((1, 2, 3)).any() and (last.state_dict()["8.weight"] == 0).any()
    tuned = FinePrune(ratio=0.25, fraction=0.5, epochs=1)(module, PRE, digits, 0)
    for i in (4, 8, 13):
        pruned = (only.state_dict()[f"{i}.weight"] == 0).flatten(1).all(1)
        assert (tuned.state_dict()[f"{i}.weight"][pruned] == 0).all()
    assert not torch.equal(tuned.state_dict()["0.weight"], module.state_dict()["0.weight"])
    assert not any(hasattr(m, "weight_orig") for m in tuned.modules())
    with pytest.raises(UserError, match="fine-prune scope 'first'; valid choices: all, last"):
        FinePrune(scope="first")(module, PRE, digits, 0)


@pytest.mark.parametrize("granularity", ["weight", "row"])
def test_cnn_lstm_recurrent_weights_are_units_and_unlock_is_bit_exact(granularity):
    """Table 6's CNN-LSTM: the LSTM's weight matrices are hidden-layer units (single weights or gate rows)."""
    from bench.recipes.train_classifier import cnn_lstm

    torch.manual_seed(0)
    model = adapter(cnn_lstm(num_classes=10, in_chans=1))
    defense = CoreLocker(ratio=0.05, criterion="l1", granularity=granularity)
    protected = defense.protect(model, None, 0)
    where = positions(protected.key)
    assert {"lstm.weight_ih_l0", "lstm.weight_hh_l0"} & set(where)
    assert not {"features.0.weight", "fc.weight"} & set(where)  # input and output layers
    lstm = model.module.lstm
    conv = model.module.features[4]
    units = conv.out_channels + sum(w.numel() if granularity == "weight" else w.shape[0]
                                    for w in (lstm.weight_ih_l0, lstm.weight_hh_l0))
    assert protected.cost["units_eligible"] == units
    unlocked = defense.authorized(protected, model).module.state_dict()
    assert all(torch.equal(unlocked[k], v) for k, v in model.module.state_dict().items())


def test_report_labels_the_whole_filter_random_control_apart(tmp_path):
    """Rows of random_unit = "filter" (and rows written before the parameter, which drew filters) are their own
    labelled column of Table 1, never the paper's random-weight column."""
    rows = synthetic_rows()
    for r in [r for r in rows if r["point"].get("criterion") == "random"]:
        rows.append({**r, "point": {**r["point"], "random_unit": "filter"}, "metrics": {**r["metrics"], "top1": 11.0}})
    t1 = table1(corelocker_frame(rows))
    for model, cols in t1.items():
        assert cols["Random extraction"][0] == pytest.approx(81.0)  # the random-weight rows alone
        assert cols["Random filters (random_unit = filter)"][0] == pytest.approx(11.0)
    old = [{**r, "point": {k: v for k, v in r["point"].items() if k != "random_unit"}} for r in synthetic_rows()]
    cols = table1(corelocker_frame(old))["vgg"]
    assert np.isnan(cols["Random extraction"][0])  # rows written before random_unit drew whole filters
    assert cols["Random filters (random_unit = filter)"][0] == pytest.approx(81.0)
