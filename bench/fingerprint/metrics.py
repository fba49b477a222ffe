"""ROC, AUC and TPR at a fixed FPR for matching scores, with stratified bootstrap CIs (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from bench.core.errors import UserError


def _check(pos, neg) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if len(pos) == 0 or len(neg) == 0:
        raise UserError(f"ROC needs at least one positive and one negative suspect, got {len(pos)} and {len(neg)}")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise UserError("matching scores contain NaN or infinite values")
    return pos, neg


def roc(pos, neg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): positives are suspects derived from the source; higher score = derived."""
    pos, neg = _check(pos, neg)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return roc_curve(y, np.r_[pos, neg], drop_intermediate=False)


def auc(pos, neg) -> float:
    pos, neg = _check(pos, neg)
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def tpr_at_fpr(pos, neg, target: float) -> float:
    """The highest TPR of any threshold whose FPR is at most `target` (no interpolation: with
    N negatives, FPR moves in steps of 1/N, so below 1/N this is the TPR at zero false positives)."""
    fpr, tpr, _ = roc(pos, neg)
    return float(tpr[fpr <= target + 1e-12].max())


def _auc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC of each row pair (Mann-Whitney: P(pos > neg) + P(pos = neg) / 2), vectorized over resamples."""
    diff = pos[:, :, None] - neg[:, None, :]
    return ((diff > 0).mean((1, 2)) + 0.5 * (diff == 0).mean((1, 2)))


def _tpr_rows(pos: np.ndarray, neg: np.ndarray, target: float) -> np.ndarray:
    """TPR@FPR<=target of each row pair: share of positives above the (floor(target*N)+1)-th highest negative."""
    allowed = int(np.floor(target * neg.shape[1] + 1e-12))
    if allowed >= neg.shape[1]:
        return np.ones(len(pos))
    bar = -np.sort(-neg, axis=1)[:, allowed]
    return (pos > bar[:, None]).mean(1)


def bootstrap_ci(pos, neg, stat: str = "auc", n: int = 1000, level: float = 0.95, seed: int = 0,
                 target: float = 0.01) -> tuple[float, float]:
    """Percentile CI of "auc" or "tpr" (at FPR <= target), resampling positives and negatives
    separately with replacement (vectorized; the same values as roc_auc_score / roc_curve per resample)."""
    pos, neg = _check(pos, neg)
    rng = np.random.default_rng(seed)
    p, q = rng.choice(pos, (n, len(pos))), rng.choice(neg, (n, len(neg)))
    values = _auc_rows(p, q) if stat == "auc" else _tpr_rows(p, q, target)
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def summarize(pos, neg, n_boot: int = 1000, seed: int = 0) -> dict:
    """AUC, TPR@1%FPR and TPR@5%FPR, each with a 95% bootstrap CI, and the counts."""
    out = {"n_positive": len(pos), "n_negative": len(neg), "auc": auc(pos, neg),
           "auc_ci": list(bootstrap_ci(pos, neg, "auc", n_boot, seed=seed))}
    for name, target in (("tpr@1%fpr", 0.01), ("tpr@5%fpr", 0.05)):
        out[name] = tpr_at_fpr(pos, neg, target)
        out[f"{name}_ci"] = list(bootstrap_ci(pos, neg, "tpr", n_boot, seed=seed, target=target))
    return out
