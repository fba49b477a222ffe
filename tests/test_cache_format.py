"""The cache's entry format 3 (issue 26: cache reads without .npz parsing, batched per request): round trips,
every corruption it must refuse, the format-2 entries it still serves and rewrites, and `get_many`."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from bench.core.cache import ALIGN, KEY_FIELD, MAGIC, ArrayCache, encode_entry, encode_entry_v2


def _rewrite(key: str, header: dict, data: bytes) -> bytes:
    """A format-3 entry with this header and data and a correct digest (what a writer who recomputes it makes)."""
    raw = json.dumps(header).encode()
    head_len = len(MAGIC) + 36 + len(raw)
    body = len(raw).to_bytes(4, "little") + raw + b" " * (-head_len % ALIGN) + data
    return MAGIC + hashlib.sha256(MAGIC + key.encode() + body).digest() + body


ARRAYS = {
    "logits": np.linspace(-3, 3, 70, dtype=np.float32).reshape(7, 10),
    "labels": np.arange(7, dtype=np.int64),
    "pixels": np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    "flags": np.array([True, False, True]),
    "scalar": np.float64(2.5) * np.ones(()),
    "empty": np.zeros((0, 5), dtype=np.float16),
    "stats": np.array(json.dumps({"psnr": 20.0, "note": "é ü"})),
    "strided": np.arange(40, dtype=np.float64).reshape(5, 8)[:, ::2],
}


def test_every_dtype_round_trips_exactly_and_comes_back_writable(tmp_path):
    cache = ArrayCache(tmp_path, "forward")
    key = cache.key("m", {"x": 1})
    cache.put(key, ARRAYS)
    blob = cache.path_of(key).read_bytes()
    assert blob[: len(MAGIC)] == MAGIC == b"ABC3"
    entry = cache.get(key)
    assert sorted(entry) == sorted(ARRAYS)
    for name, a in ARRAYS.items():
        assert entry[name].dtype == a.dtype and entry[name].shape == a.shape and np.array_equal(entry[name], a)
    assert json.loads(str(entry["stats"]))["note"] == "é ü"
    entry["logits"][0, 0] = 99.0  # a reader may modify what it was given; the file is not touched
    assert cache.get(key)["logits"][0, 0] == ARRAYS["logits"][0, 0]
    assert cache.stats.as_dict() == {"hits": 2, "misses": 0, "corrupt": 0}


def test_arrays_start_on_aligned_offsets(tmp_path):
    blob = encode_entry("k", ARRAYS)
    size = int.from_bytes(blob[36:40], "little")
    header = json.loads(blob[40:40 + size])
    base = 40 + size + (-(40 + size) % ALIGN)
    assert base % ALIGN == 0 and all((base + spec["offset"]) % ALIGN == 0 for spec in header["arrays"])


def test_object_arrays_are_never_written():
    obj = np.empty(1, dtype=object)
    with pytest.raises(TypeError, match="object dtype"):
        encode_entry("k", {"x": obj})


def _corruptions(cache, a, b):
    """name -> bytes to put at a's path; each must be refused."""
    good = cache.path_of(a).read_bytes()
    other = cache.path_of(b).read_bytes()
    size = int.from_bytes(good[36:40], "little")
    header = json.loads(good[40:40 + size])
    base = 40 + size + (-(40 + size) % ALIGN)
    data = good[base:]
    flipped = bytearray(good)
    flipped[-1] ^= 1
    obj_header = {"key": a, "arrays": [{"name": "logits", "dtype": "|O", "shape": [3], "offset": 0}]}
    far_header = {"key": a, "arrays": [{"name": "logits", "dtype": "<f8", "shape": [10 ** 6], "offset": 0}]}
    neg_header = {"key": a, "arrays": [{"name": "logits", "dtype": "<f8", "shape": [3], "offset": -64}]}
    return {
        "truncated": good[:-5],
        "one flipped bit": bytes(flipped),
        "another key's file copied over it": other,
        "another key in the header, digest recomputed under it": _rewrite(b, {**header, "key": b}, data),
        "object dtype, digest recomputed": _rewrite(a, obj_header, data),
        "array past the end, digest recomputed": _rewrite(a, far_header, data),
        "array before the data, digest recomputed": _rewrite(a, neg_header, data),
        "header not json, digest recomputed": MAGIC + hashlib.sha256(MAGIC + a.encode() + b"\x05\0\0\0{nope").digest()
        + b"\x05\0\0\0{nope",
        "header longer than the file": good[:36] + (10 ** 5).to_bytes(4, "little") + good[40:],
        "format 1": b"ABC1" + good[4:],
        "unknown tag": b"XYZ9" + good[4:],
        "empty": b"",
    }


def _cases():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        cache = ArrayCache(Path(tmp), "forward")
        a, b = cache.key("a", {}), cache.key("b", {})
        cache.put(a, {"logits": np.zeros(3)})
        cache.put(b, {"logits": np.ones(3)})
        return sorted(_corruptions(cache, a, b))


@pytest.mark.parametrize("case", _cases())
def test_a_damaged_or_misplaced_entry_is_refused_deleted_and_recomputed(tmp_path, case):
    cache = ArrayCache(tmp_path, "forward")
    a, b = cache.key("a", {}), cache.key("b", {})
    cache.put(a, {"logits": np.zeros(3)})
    cache.put(b, {"logits": np.ones(3)})
    cache.path_of(a).write_bytes(_corruptions(cache, a, b)[case])
    assert cache.get(a) is None, case
    assert cache.stats.corrupt == 1 and not cache.path_of(a).exists()
    cache.put(a, {"logits": np.zeros(3)})
    assert np.array_equal(cache.get(a)["logits"], np.zeros(3))


def test_a_format_2_entry_is_served_and_rewritten_in_format_3(tmp_path):
    cache = ArrayCache(tmp_path, "forward")
    key = cache.key("m", {})
    arrays = {k: v for k, v in ARRAYS.items() if k != "strided"}
    cache.path_of(key).parent.mkdir(parents=True)
    cache.path_of(key).write_bytes(encode_entry_v2(key, arrays))
    entry = cache.get(key)
    assert all(np.array_equal(entry[k], v) and entry[k].dtype == v.dtype for k, v in arrays.items())
    assert KEY_FIELD not in entry
    assert cache.path_of(key).read_bytes()[:4] == MAGIC  # rewritten once
    again = cache.get(key)
    assert all(np.array_equal(again[k], v) for k, v in arrays.items())
    assert cache.stats.as_dict() == {"hits": 2, "misses": 0, "corrupt": 0}


def test_a_format_2_entry_of_another_key_is_not_served(tmp_path):
    cache = ArrayCache(tmp_path, "forward")
    a, b = cache.key("a", {}), cache.key("b", {})
    cache.path_of(a).parent.mkdir(parents=True)
    cache.path_of(a).write_bytes(encode_entry_v2(b, {"logits": np.ones(3)}))
    assert cache.get(a) is None and cache.stats.corrupt == 1 and not cache.path_of(a).exists()


def test_get_many_reads_every_key_of_a_request_once_and_counts_like_get(tmp_path):
    cache = ArrayCache(tmp_path, "forward")
    keys = [cache.key(f"m{i}", {}) for i in range(4)]
    for i, k in enumerate(keys[:3]):
        cache.put(k, {"logits": np.full(2, float(i))})
    got = cache.get_many([*keys, keys[0]])
    assert list(got) == keys
    assert [None if v is None else float(v["logits"][0]) for v in got.values()] == [0.0, 1.0, 2.0, None]
    assert cache.stats.as_dict() == {"hits": 3, "misses": 1, "corrupt": 0}


def test_the_forward_service_reads_a_request_in_one_batch(tmp_path, monkeypatch):
    """Regression (issue 26): `outputs` read its models' entries one `get` at a time."""
    from bench.core.forward import ForwardService

    service = ForwardService(tmp_path)
    models = {"a": "digest-a", "b": "digest-b", "c": "digest-c"}
    service.outputs(models, {"split": "test"}, lambda labels: {m: {"logits": np.ones(2)} for m in labels})
    batches = []
    real = service.cache.get_many
    monkeypatch.setattr(service.cache, "get_many", lambda keys: batches.append(list(keys)) or real(keys))
    out = service.outputs(models, {"split": "test"}, lambda labels: pytest.fail(f"recomputed {labels}"))
    assert len(batches) == 1 and len(batches[0]) == 3 and sorted(out) == ["a", "b", "c"]
