"""NE Table 3 baselines as model-authorization defenses: DP (Opacus), FHE (TenSEAL), ALGOSPEC."""

from baselines.algospec import AlgoSpec
from baselines.dp import DPSGD
from baselines.fhe import FHE, extrapolate_fhe_cost

BUILTIN = {cls.name: cls for cls in (DPSGD, FHE, AlgoSpec)}

__all__ = ["AlgoSpec", "DPSGD", "FHE", "BUILTIN", "extrapolate_fhe_cost"]
