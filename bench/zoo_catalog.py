"""The digits zoo's names and one-line descriptions, without torch: what `authbench list models` shows
(`ZooSource.listing`, bench.core.catalog) and what bench.models.zoo builds its families from."""

from __future__ import annotations

FAMILY_DESCRIPTIONS = {
    "mlp": "MLP 1024-256-128-10 (Linear first layer, 768-dim nullspace)",
    "cnn": "3-layer CNN, 3x3 stride-1 stem (overlapping, no per-patch nullspace)",
    "resnet": "ResNet-6-style CNN with BatchNorm, 3x3 stride-1 stem, 2 residual blocks",
    "vit": "ViT, 8x8 patch embedding to 32 dims, 2 blocks",
    "mixer": "MLP-Mixer, 8x8 patch embedding to 32 dims, 2 blocks",
    "fhe": "FHE-sized CNN with x^2 activations: 8x8/8 conv to 4 channels, MLP 64-16-10 (for encrypted inference)",
}
SEEDS = (0, 1)


def zoo_names() -> dict[str, str]:
    """name -> description of every zoo model (each family at each seed)."""
    return {f"{fam}-s{seed}": f"{desc}, seed {seed}" for fam, desc in FAMILY_DESCRIPTIONS.items() for seed in SEEDS}


def zoo_models() -> dict[str, str]:
    """`authbench list models` lines of the zoo source: spec -> description."""
    return {f"zoo:{name}": desc for name, desc in zoo_names().items()}
