"""A defender's model pool (CAE's surrogate/reference models, MetaFinger's positive/negative pool).

Positives are copies of the source modified on the defender's own data (fine-tuned, pruned,
distilled: what the owner expects thieves to do); negatives are trained independently on the
same data with other seeds and architectures. Built with the suspect zoo's cached steps, on the
defender's split only, so no suspect of the suite is ever part of a pool.
"""

from __future__ import annotations

from bench.data.base import Split
from bench.fingerprint.suspects import ZooConfig, derive, independent
from bench.models.adapter import ModelAdapter

POSITIVE_STEPS = ("finetune(FTAL)", "distill({family})", "prune(0.2)", "finetune(FTLL)", "prune(0.1)->finetune(FTAL)")
NEGATIVE_FAMILIES = ("cnn", "mlp", "resnet", "vit", "mixer")


def defender_pool(source: ModelAdapter, data: Split, n_pos: int, n_neg: int, seed: int, epochs: int = 10,
                  families: tuple = NEGATIVE_FAMILIES) -> tuple[list, list]:
    """(positive modules, negative modules); distilled copies and negatives use `families` in turn
    (zoo families on digits; "timm:<name>" architectures for CIFAR/ImageNet pools)."""
    family = families[0]
    config = ZooConfig(negative_epochs=epochs, finetune_epochs=max(1, epochs // 2), distill_epochs=epochs)
    pos = [derive(source, POSITIVE_STEPS[i % len(POSITIVE_STEPS)].format(family=family), data, config,
                  seed + 1000 + i)[0] for i in range(n_pos)]
    neg = [independent(families[i % len(families)], seed + 2000 + i, data, source.preprocess, config)
           for i in range(n_neg)]
    return pos, neg
