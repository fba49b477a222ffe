"""glibc malloc thresholds on vs off (bench.allocator): CPU time and minor page faults of the same cold run.

Each measurement is one `authbench run` subprocess (fresh cache and results folder) with
AUTHBENCH_MALLOC=tuned or =default; the parent reads the child's own rusage through os.wait4 (user and
system CPU, minor faults, peak RSS). The two modes alternate in pairs, the order flipped each pair, so a
change of load hits both; ratios tuned/default are per pair, then the median.

    PYTHONPATH=. python benchmarks/bench_allocator.py [--pairs 3] [--suite digits] [-- extra run flags]

Default run: digits, ne-patch and noise at 20 dB float, authorized cnn-s0 (every zoo model evaluated),
one thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FLAGS = ["--defense", "ne-patch", "--defense", "noise", "--psnr", "20", "--release", "float",
                 "--authorized", "cnn-s0"]


def measure(mode: str, suite: str, flags: list[str], tmp: Path, tag: str) -> dict:
    env = {**os.environ, "AUTHBENCH_MALLOC": mode, "AUTHBENCH_CACHE": str(tmp / f"cache-{tag}"),
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bench", "run", suite, "--out", str(tmp / f"run-{tag}"), "--reports",
           str(tmp / f"rep-{tag}"), "--threads", "1", "--no-progress", *flags]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{mode} run failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {"user": usage.ru_utime, "sys": usage.ru_stime, "cpu": usage.ru_utime + usage.ru_stime,
            "minflt": usage.ru_minflt, "maxrss_mb": usage.ru_maxrss / 1024}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--suite", default="digits")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="run flags after -- (default: a small digits grid)")
    args = parser.parse_args(argv)
    flags = [f for f in args.flags if f != "--"] or DEFAULT_FLAGS
    print(f"load before: {os.getloadavg()}")
    print(f"run: authbench run {args.suite} {' '.join(flags)} --threads 1 (fresh cache each)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            pair = {}
            for mode in (("tuned", "default") if i % 2 == 0 else ("default", "tuned")):
                pair[mode] = m = measure(mode, args.suite, flags, Path(tmp), f"{mode}-{i}")
                print(f"pair {i} {mode:<7}: CPU {m['cpu']:6.2f} s (user {m['user']:6.2f}, sys {m['sys']:5.2f}), "
                      f"minor faults {m['minflt']:>9,}, peak RSS {m['maxrss_mb']:.0f} MiB", flush=True)
            rows.append(pair)
    print(f"load after: {os.getloadavg()}")
    for key, label in (("cpu", "CPU"), ("sys", "system CPU"), ("minflt", "minor faults")):
        ratios = [p["tuned"][key] / p["default"][key] for p in rows]
        print(f"{label} tuned/default: median {statistics.median(ratios):.3f} ({', '.join(f'{r:.3f}' for r in ratios)})")
    extra = [p["tuned"]["maxrss_mb"] - p["default"]["maxrss_mb"] for p in rows]
    print(f"peak RSS tuned - default: median {statistics.median(extra):+.0f} MiB ({', '.join(f'{r:+.0f}' for r in extra)})")


if __name__ == "__main__":
    main()
