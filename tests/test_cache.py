"""Cache integrity: round trip, keys never shared, corruption detected and recomputed."""

from __future__ import annotations

import numpy as np

from bench.core.cache import ArrayCache, cache_clear, cache_info


def test_round_trip_and_stats(tmp_path):
    c = ArrayCache(tmp_path, "forward")
    key = c.key("model-a", {"data": "x"})
    assert c.get(key) is None
    c.put(key, {"logits": np.arange(6.0).reshape(2, 3)})
    out = c.get(key)
    assert np.array_equal(out["logits"], np.arange(6.0).reshape(2, 3))
    assert c.stats.as_dict() == {"hits": 1, "misses": 1, "corrupt": 0}
    assert not list(tmp_path.rglob("*.tmp"))


def test_keys_differ_by_model_input_and_namespace(tmp_path):
    a, b = ArrayCache(tmp_path, "forward"), ArrayCache(tmp_path, "encoding")
    inputs = {"data": "d", "transforms": [{"defense": "ne-patch", "params": {"tau": 1e-4}}]}
    other = {"data": "d", "transforms": [{"defense": "ne-patch", "params": {"tau": 1e-3}}]}
    keys = {a.key("m1", inputs), a.key("m2", inputs), a.key("m1", other), b.key("m1", inputs)}
    assert len(keys) == 4


def _corrupt_and_check(tmp_path, damage):
    c = ArrayCache(tmp_path, "forward")
    key = c.key("m", {"d": 1})
    c.put(key, {"logits": np.ones(100)})
    path = next(tmp_path.rglob("*.bin"))
    damage(path)
    assert c.get(key) is None
    assert c.stats.corrupt == 1
    assert not path.exists()  # deleted, so the next run recomputes it


def test_truncated_entry_is_detected(tmp_path):
    _corrupt_and_check(tmp_path, lambda p: p.write_bytes(p.read_bytes()[:-10]))


def test_flipped_byte_is_detected(tmp_path):
    def flip(p):
        data = bytearray(p.read_bytes())
        data[-5] ^= 0xFF
        p.write_bytes(bytes(data))

    _corrupt_and_check(tmp_path, flip)


def test_info_and_clear(tmp_path):
    c = ArrayCache(tmp_path, "forward")
    c.put(c.key("m", {}), {"x": np.zeros(3)})
    info = cache_info(tmp_path)
    assert info["forward"]["entries"] == 1 and info["forward"]["bytes"] > 0
    cache_clear(tmp_path, "forward")
    assert "forward" not in cache_info(tmp_path)


def test_an_entry_copied_over_another_keys_file_is_not_served(tmp_path):
    """Regression (issue 14, bug 3): a valid entry under another key's file name was served."""
    import shutil

    c = ArrayCache(tmp_path, "forward")
    a, b = c.key("model-a", {"d": 1}), c.key("model-b", {"d": 1})
    c.put(a, {"logits": np.zeros(3)})
    c.put(b, {"logits": np.ones(3)})
    shutil.copyfile(c.path_of(a), c.path_of(b))  # a valid entry (checksum intact) at the path of another key
    assert c.get(b) is None and c.stats.corrupt == 1
    assert np.array_equal(c.get(a)["logits"], np.zeros(3))
    assert "__key__" not in c.get(a)


def test_cache_clear_refuses_names_that_leave_the_root(tmp_path):
    """Regression (issue 14, bug 5): `cache clear --namespace ../victim` deleted a folder outside the root."""
    import pytest

    from bench.core.errors import UserError

    root, victim = tmp_path / "cache", tmp_path / "victim"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("x")
    for bad in ("../victim", "/tmp", "a/b", ".."):
        with pytest.raises(UserError, match="plain name"):
            cache_clear(root, bad)
    assert (victim / "keep.txt").exists()
