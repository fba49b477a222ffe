"""Cache reads: format 2 (an .npz payload, checked by a payload sha256 and a key binding) vs format 3 (a JSON
header and raw arrays under one sha256), and one request's reads one by one vs in one `get_many` batch.

Entries of three sizes are written in both formats into a fresh cache folder: a digits forward entry (logits
and labels of 1,000 images, ~19 KB as in the digits reference cache), a 1,300-image ImageNet forward entry
(1,000-way logits, ~5 MB) and an encoding record (a JSON text, ~3 KB). Each read is a cold-in-Python but
warm-in-page-cache read of the file plus every integrity check, timed in CPU seconds of this thread
(`time.thread_time`), the two formats alternated entry by entry with the order flipped each repeat, so a
load change hits both. Format 2 is read the way format 2 was read before issue 26 (the file's bytes, then
the checks and the .npz parse); format 3 through `ArrayCache.get`. Both must return equal arrays (checked).

    PYTHONPATH=. python benchmarks/bench_cache.py [--entries 40] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.core.cache import ArrayCache, _parse_v2, encode_entry_v2  # noqa: E402


def kinds(rng) -> dict[str, dict]:
    return {
        "digits forward (1,000 x 10 logits)": {"logits": rng.standard_normal((1000, 10)).astype(np.float32),
                                              "labels": rng.integers(0, 10, 1000)},
        "imagenet forward (1,300 x 1,000 logits)": {"logits": rng.standard_normal((1300, 1000)).astype(np.float32),
                                                   "labels": rng.integers(0, 1000, 1300)},
        "encoding record (JSON)": {"stats": np.array(json.dumps({"psnr": list(rng.standard_normal(100))}))},
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=40, help="entries of each kind and format (default 40)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        v2 = ArrayCache(Path(tmp), "v2")
        v3 = ArrayCache(Path(tmp), "v3")
        print(f"{'entry':42s} {'bytes v2':>10s} {'bytes v3':>10s} {'v2 ms/read':>11s} {'v3 ms/read':>11s} {'v3/v2':>7s}")
        for name, arrays in kinds(rng).items():
            n = args.entries if "imagenet" not in name else max(4, args.entries // 10)
            keys = [v3.key(f"model-{i}", {"kind": name}) for i in range(n)]
            for k in keys:
                v3.put(k, arrays)
                v2.path_of(k).parent.mkdir(parents=True, exist_ok=True)
                v2.path_of(k).write_bytes(encode_entry_v2(k, arrays))
            t2, t3 = [], []
            for r in range(args.repeats):
                for k in keys:
                    for fmt in (("v2", "v3") if r % 2 == 0 else ("v3", "v2")):
                        start = time.thread_time()
                        got = _parse_v2(v2.path_of(k).read_bytes(), k) if fmt == "v2" else v3.get(k)
                        spent = time.thread_time() - start
                        (t2 if fmt == "v2" else t3).append(spent)
                        assert all(np.array_equal(got[a], arrays[a]) for a in arrays), (name, fmt)
            m2, m3 = statistics.median(t2) * 1e3, statistics.median(t3) * 1e3
            size2, size3 = v2.path_of(keys[0]).stat().st_size, v3.path_of(keys[0]).stat().st_size
            print(f"{name:42s} {size2:10d} {size3:10d} {m2:11.3f} {m3:11.3f} {m3 / m2:7.3f}")
        # one request of 10 models (a digits job scores the whole zoo): ten gets vs one get_many
        keys = [v3.key(f"model-{i}", {"kind": "digits forward (1,000 x 10 logits)"}) for i in range(10)]
        one, batch = [], []
        for r in range(args.repeats * 4):
            for mode in (("one", "batch") if r % 2 == 0 else ("batch", "one")):
                start = time.thread_time()
                if mode == "one":
                    [v3.get(k) for k in keys]
                else:
                    v3.get_many(keys)
                (one if mode == "one" else batch).append(time.thread_time() - start)
        print(f"one request of 10 digits entries: {statistics.median(one) * 1e3:.2f} ms as ten gets, "
              f"{statistics.median(batch) * 1e3:.2f} ms as one get_many "
              f"(ratio {statistics.median(batch) / statistics.median(one):.3f})")


if __name__ == "__main__":
    main()
