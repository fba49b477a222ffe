"""NE Table 3 baselines as model-authorization defenses: DP (Opacus), FHE (TenSEAL), ALGOSPEC.

Each registers itself in bench.defenses.DEFENSES (`@DEFENSES.register`), which imports this package on
first lookup."""

from baselines.algospec import AlgoSpec
from baselines.dp import DPSGD
from baselines.fhe import FHE, extrapolate_fhe_cost

__all__ = ["AlgoSpec", "DPSGD", "FHE", "extrapolate_fhe_cost"]
