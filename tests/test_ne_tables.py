"""NE Table 5 / Figure 3 (first-layer spectra) and Table 6 (layer-wise deviations): `authbench tables`."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from bench.cli import main as cli_main
from bench.defenses import get_defense
from bench.defenses.release import calibrate
from bench.models.sources import from_module
from bench.reports.ne_reported import CITATION, LAYERS_REPORTED, SPECTRA_REPORTED
from bench.reports.ne_spectra import energy_count, layer_deviations, model_spec, raw_weight, spectrum_stats


def _conv_model(seed):
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Conv2d(1, 8, 4, 4), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 10))
    return from_module(module.eval(), f"m{seed}", mean=(0.3,), std=(0.5,), input_size=(1, 16, 16))


def test_spectrum_statistics_and_energy_counts():
    s = np.array([3.0, 2.0, 1.0, 0.5])
    stats = spectrum_stats(s)
    assert (stats["Max"], stats["Min"], stats["Median"]) == (3.0, 0.5, 1.5)
    total = (s**2).sum()  # 14.25: 9 (63%), +4 (91%), +1 (98.2%), +0.25 (100%)
    assert energy_count(s, 0.95) == 3 and energy_count(s, 0.99) == 4 and energy_count(s, 9 / total) == 1


def test_raw_weight_is_the_layers_own_weight():
    model = _conv_model(0)
    w = raw_weight(model)
    assert torch.allclose(w, model.module[0].weight.detach().double().reshape(8, -1), atol=1e-6)


def test_layer_deviation_is_zero_for_the_authorized_stem_in_its_nullspace():
    auth, other = _conv_model(0), _conv_model(1)
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ne = get_defense("ne-patch")()
    ne.fit(auth)
    cal = calibrate(x.double(), ne.directions(x, list(range(6)), [0] * 6, 0), 20.0, "float")
    mine, theirs = (layer_deviations(m, x, cal.released.float(), every=1) for m in (auth, other))
    assert len(mine) == 3  # conv, batch norm, ReLU
    assert max(mine) < 1e-4 and min(theirs) > 1e-2


def test_reported_figures_are_cited_at_the_papers_precision():
    for e in SPECTRA_REPORTED + LAYERS_REPORTED:
        assert e["kind"] == "reported" and e["cite"].startswith(CITATION) and e["text"]
    t5 = {(e["row"], e["column"]): e for e in SPECTRA_REPORTED if e["table"] == 5}
    assert t5[("ResNet-50", "Min")]["value"] == 7.77e-8 and t5[("ViT-Base", "Median")]["text"] == "0.0482"
    t6 = {(e["row"], e["column"]): e["text"] for e in LAYERS_REPORTED}
    assert len(t6) == 9 * 7 and t6[("0 dB", "L5")] == "1.5062" and t6[("40 dB", "L6")] == "0.0008"


def test_random_weights_are_the_default_and_labelled():
    paper, spec, label = model_spec("resnet-50", pretrained=False)
    assert paper == "ResNet-50" and spec["pretrained"] is False and label.startswith("random weights")
    assert model_spec("resnet-50", pretrained=True)[1].get("pretrained", True) is True


def test_cli_ne_spectra_on_the_zoo_and_errors(tmp_path, capsys):
    assert cli_main(["tables", "ne-spectra", "--arch", "zoo:mlp-s0", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "ne_table5_spectra.md").read_text()
    assert "zoo:mlp-s0" in text and "RANDOM WEIGHTS" not in text and "no figure here is reported" in text and (tmp_path / "ne_fig3_spectra.png").stat().st_size
    capsys.readouterr()
    assert cli_main(["tables", "ne-spectra", "--arch", "resnet-5O", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown backbone 'resnet-5O'" in err[0]


def test_cli_ne_spectra_random_weight_backbone_is_labelled(tmp_path):
    assert cli_main(["tables", "ne-spectra", "--arch", "resnet-50", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "ne_table5_spectra.md").read_text()
    assert "RANDOM WEIGHTS" in text and "64 x 147" in text and "7.77×10^-8" in text  # beside the paper's figure


def test_cli_ne_layers_on_the_zoo(tmp_path):
    assert cli_main(["tables", "ne-layers", "--arch", "zoo:mlp-s0", "--arch", "zoo:mlp-s1", "--samples", "4",
                     "--psnr", "20", "--every", "1", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "ne_table6_layers.md").read_text()
    assert "| zoo:mlp-s0 | authorized" in text and "| zoo:mlp-s1 | unauthorized" in text
    assert "beside the paper's Table 6" not in text  # only a ResNet-50 is compared with the paper
    assert "no figure here is reported by a paper" in text and "`reported` column" not in text
