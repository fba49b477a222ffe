"""The papers the built-in defenses come from (full citations), shared by the leaderboard entries
(bench.reports.entries) and the boards' `paper` column (bench.reports.boards)."""

from __future__ import annotations

from bench.defenses import get_defense
from bench.core.errors import UserError

NE_AUTHORS = ("Zihan Wang, Zhiyong Ma, Zhongkui Ma, Shuofeng Liu, Akide Liu, Derui Wang, Minhui Xue, "
              "Guangdong Bai")
NE_TITLE = "Catch-Only-One: Non-Transferable Examples for Model-Specific Authorization"
NE_CITATION = f'{NE_AUTHORS}, "{NE_TITLE}", arXiv 2510.10982'
NE = {"authors": NE_AUTHORS, "title": NE_TITLE, "venue": "arXiv", "arxiv": "2510.10982",
      "link": "https://arxiv.org/abs/2510.10982"}
CORELOCKER_AUTHORS = "Zihan Wang, Zhongkui Ma, Xinguo Feng, Ruoxi Sun, Hu Wang, Minhui Xue, Guangdong Bai"
CORELOCKER_CITATION = f'{CORELOCKER_AUTHORS}, "CoreLocker: Neuron-level Usage Control", IEEE S&P 2024'

CORELOCKER = {"authors": CORELOCKER_AUTHORS,
              "title": "CoreLocker: Neuron-level Usage Control", "venue": "IEEE S&P 2024", "arxiv": None,
              "link": "https://github.com/CoreLocker/CoreLocker"}
MFUE = {"authors": "Tianlong Xu, Zixiong Wang, Gaoyang Liu, Jian Chen, Ahmed M. Abdelmoniem, Chen Wang", "title": "Breaking the Boundary Barrier: Robust Model Fingerprinting via Unlearnable "
        "Examples in Model-Parameter Space", "venue": "KDD '26", "arxiv": None,
        "link": "https://doi.org/10.1145/3770854.3780310"}
# The baselines are scored as the NE paper's Table 3 instantiates them (baselines/README.md).
PAPERS = {"ne-patch": NE, "ne-operator": NE, "corelocker": CORELOCKER, "mfue-w": MFUE, "mfue-b": MFUE,
          "dp": NE, "fhe": NE, "algospec": NE}
PAPER_NOTES = {"ne-operator": "a whole-operator variant of NE's construction (docs/ne.md), not the paper's own",
               "dp": "as instantiated in NE Table 3", "fhe": "as instantiated in NE Table 3",
               "algospec": "as instantiated in NE Table 3 (ALGOSPEC: Liu et al., USENIX Security 2024)",
               "noise": "the model-agnostic Gaussian-noise control at the same PSNR; no paper"}


def _cls(defense: str):
    try:
        return get_defense(defense)
    except UserError:
        return None


def paper_of(defense: str) -> dict | None:
    """The defense's paper: its class's `paper` attribute, else the built-in table, else None."""
    cls = _cls(defense)
    paper = getattr(cls, "paper", None) if cls is not None else None
    paper = paper or PAPERS.get(getattr(cls, "name", defense))
    if not paper:
        return None
    out = {k: paper.get(k) for k in ("authors", "title", "venue", "arxiv", "link")}
    note = PAPER_NOTES.get(getattr(cls, "name", defense))
    return {**out, "note": note} if note else out
