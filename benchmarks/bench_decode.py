"""Decoding throughput of JPEG files: the reader with a pool of decoding threads vs one thread, in one run.

Writes --n JPEGs (--size px, random content, quality 90) into a temporary ImageFolder and reads them through
`bench.data.vision.ImageFolderReader` (PIL decode, resize 256 / crop 224 as the ImageNet suite does) in
batches of --batch-size: with 1 decoding thread and with --workers threads, alternated for --repeats rounds
with the order flipped. Prints images/s for each and the ratio, and checks that both give the same tensor.

    PYTHONPATH=. python benchmarks/bench_decode.py [--n 256] [--size 320] [--workers 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.data import vision  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--size", type=int, default=320, help="stored JPEG side (resized to 256, cropped to 224)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    print(f"load before: {os.getloadavg()}, {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        files = []
        for i in range(args.n):
            name = f"c{i % 8}/{i:05d}.jpg"
            (Path(tmp) / name).parent.mkdir(exist_ok=True)
            smooth = rng.integers(0, 255, (args.size // 8, args.size // 8, 3), dtype=np.uint8)
            img = Image.fromarray(smooth).resize((args.size, args.size), Image.BILINEAR)
            img.save(Path(tmp) / name, quality=90)
            files.append(name)
        reader = vision.ImageFolderReader(tmp, files, 256, 224, "bilinear", "bench")
        batches = [np.arange(s, min(s + args.batch_size, args.n)) for s in range(0, args.n, args.batch_size)]
        rates = {1: [], args.workers: []}
        outputs = {}
        for r in range(args.repeats):
            for workers in ((1, args.workers) if r % 2 == 0 else (args.workers, 1)):
                os.environ[vision.DECODE_WORKERS_ENV] = str(workers)
                start = time.perf_counter()
                out = [reader(b) for b in batches]
                rates[workers].append(args.n / (time.perf_counter() - start))
                outputs[workers] = torch.cat(out)
        assert torch.equal(outputs[1], outputs[args.workers]), "threaded decoding differs from serial"
    print(f"load after: {os.getloadavg()}")
    one, many = statistics.median(rates[1]), statistics.median(rates[args.workers])
    print(f"{args.n} JPEGs {args.size}x{args.size} -> 224x224, batches of {args.batch_size}")
    print(f"1 thread:       {one:8.1f} images/s  ({', '.join(f'{x:.1f}' for x in rates[1])})")
    print(f"{args.workers} threads:      {many:8.1f} images/s  ({', '.join(f'{x:.1f}' for x in rates[args.workers])})")
    print(f"ratio {args.workers} threads / 1: {many / one:.2f}x (same tensors: yes)")


if __name__ == "__main__":
    main()
