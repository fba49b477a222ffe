"""Query detectors of MFUE Table 2 (MSP, SHE, DAEIT, SCADN): registry, thresholds, what each one flags."""

from __future__ import annotations

import pytest
import torch

from bench.data.digits import load_digits_split
from bench.fingerprint import detectors as D
from bench.fingerprint import suspects as S
from bench.fingerprint import training as T
from bench.models.adapter import ModelAdapter
from bench.models.zoo import digits_preprocess


@pytest.fixture(scope="module")
def deployed():
    pre = digits_preprocess()
    source = ModelAdapter("mlp-src", S.digits_source("mlp", 0, epochs=3), pre, "zoo/mlp", "torch")
    _, attacker = T.halves(load_digits_split("train"))
    test = load_digits_split("test")
    return source, attacker, test.images[:200]


@pytest.mark.parametrize("name", list(D.DETECTORS))
def test_detector_flags_noise_not_clean(deployed, name):
    source, attacker, clean = deployed
    det = D.DETECTORS[name]().fit(source, attacker, seed=0)
    assert det.citation and det.fidelity
    assert det.detection_rate(clean, clean) <= D.DETECTOR_FPR + 0.01  # its own threshold: 10% of clean
    if name == "daeit":  # built for adversarial examples: transformations undo them
        test = load_digits_split("test")
        odd = T.pgd(source.module, source.preprocess, test.images[200:264], test.labels[200:264], 0.1, 10)
        assert det.detection_rate(odd, clean) > 2 * D.DETECTOR_FPR
    else:  # far out-of-distribution queries are flagged
        odd = torch.rand(64, *clean.shape[1:], generator=torch.Generator().manual_seed(0))
        assert det.detection_rate(odd, clean) > 0.5
    assert det.score(clean[:5]).shape == (5,)


def test_she_stores_class_mean_features_of_correct_training_samples(deployed):
    source, attacker, clean = deployed
    she = D.SHE().fit(source, attacker, seed=0)
    with torch.no_grad():
        h, logits = D.penultimate(source, attacker.images)
    right = (logits.argmax(1) == attacker.labels) & (attacker.labels == 3)
    assert torch.allclose(she.patterns[3], h[right].mean(0), atol=1e-5)
    with torch.no_grad():
        h1, l1 = D.penultimate(source, clean[:4])
    assert torch.allclose(she.score(clean[:4]), -(h1 * she.patterns[l1.argmax(1)]).sum(1), atol=1e-5)


def test_stripe_masks_are_multiscale_stripes():
    masks = D.stripe_masks((1, 32, 32), seed=0)
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert all(0.3 < float(m.mean()) < 0.7 for m in masks)
    assert torch.equal(masks[0, 0, :, 0], masks[0, 0, :, 5])  # i = 0: horizontal stripes (constant along rows)
    assert torch.equal(masks[1, 0, 0], masks[1, 0, 7])  # i = 1: vertical stripes
