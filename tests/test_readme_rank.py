"""The README's "Rank a new defense" section, run verbatim from a folder outside the checkout: its Python
block saved under the file name the text gives, its suite likewise, and each line of its shell block run
as written (the installed `authbench` command; PYTHONPATH points at this checkout so that the code under
test is what runs). The suite ranks on the shipped digits-quick board, which `rank` finds inside the
package by suite name."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def rank_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Rank a new defense")
    return text[start:text.index("\n## ", start + 5)]


def blocks(section: str) -> list[tuple[str, str, str]]:
    """(language, code, the file name the text before it gives: the last `name.py` / `name.toml` quoted)."""
    out, last = [], 0
    for m in FENCE.finditer(section):
        names = re.findall(r"`([\w./-]+\.(?:py|toml))`", section[last:m.start()])
        out.append((m.group(1), m.group(2), names[-1] if names else ""))
        last = m.end()
    return out


def test_the_readme_names_a_file_for_each_block():
    found = blocks(rank_section())
    assert [lang for lang, _, _ in found] == ["python", "toml", "bash"]
    assert found[0][2] == "mypkg/defenses.py" and found[1][2] == "my-digits.toml"
    assert 'name = "mypkg.defenses:MyRecoding"' in found[1][1]


@pytest.mark.slow
def test_the_readme_rank_section_runs_verbatim_outside_the_checkout(tmp_path):
    authbench = shutil.which("authbench", path=str(Path(sys.executable).parent)) or shutil.which("authbench")
    if authbench is None:
        pytest.fail("the `authbench` command is not installed; pip install -e . first")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{Path(authbench).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("HF_HUB_OFFLINE", None)  # the run decides to go offline itself (nothing to download here)
    outputs = []
    for lang, code, name in blocks(rank_section()):
        if lang in ("python", "toml"):
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code)
            continue
        for line in filter(None, (l.strip() for l in code.splitlines())):
            proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=1800)
            assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            outputs.append(proc.stdout)
    ranked = outputs[-1]
    assert "NEW" in ranked and "my-recoding" in ranked and "digits-quick" in ranked
    assert "ranked against" in ranked and "bench/leaderboards/digits-quick.json" in ranked  # the shipped board
    assert (tmp_path / "runs" / "mine" / "ranked" / "site" / "index.html").is_file()
    assert (tmp_path / "runs" / "mine" / "ranked" / "site" / "boards.html").is_file()
    assert list((tmp_path / "entries").rglob("my-recoding-*.json"))
    assert not (tmp_path / "reports").exists()  # a run writes under the run
