"""A fully-done rerun through the CLI vs the cold run: CPU time of `authbench run` subprocesses, in one run.

1. cold: `authbench run SUITE [flags]` with a fresh cache, results and reports folder;
2. warm rerun: the same command again (every cell done, reports up to date): what it costs to find
   out that there is nothing to do;
3. warm rerun with --render: the same, forcing the reports to be rendered again (the old behaviour).

Each is a subprocess; its CPU time (user + system) and its peak RSS come from os.wait4. Steps 2 and 3
are alternated --repeats times. Also prints whether the warm rerun imported torch (`-X importtime`
is not used; the child reports `"torch" in sys.modules` at exit through AUTHBENCH_BENCH_REPORT).

    PYTHONPATH=. python benchmarks/bench_warm_cli.py [--repeats 3] [--suite digits] [-- run flags]

Default: digits, ne-patch and noise at 20 and -10 dB, float release, one thread.
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
DEFAULT_FLAGS = ["--defense", "ne-patch", "--defense", "noise", "--psnr", "20", "--psnr", "-10", "--release", "float"]
CHILD = ("import atexit, os, sys\n"
         "atexit.register(lambda: open(os.environ['AUTHBENCH_BENCH_REPORT'], 'w').write(str('torch' in sys.modules)))\n"
         "from bench.cli import main\n"
         "sys.exit(main(sys.argv[1:]))\n")


def measure(args: list[str], env: dict, report: Path) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], env={**env, "AUTHBENCH_BENCH_REPORT": str(report)},
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"run failed: {err.decode()[-2000:]}")
    return {"cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024,
            "torch": report.read_text() == "True"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--suite", default="digits")
    parser.add_argument("flags", nargs=argparse.REMAINDER)
    a = parser.parse_args(argv)
    flags = [f for f in a.flags if f != "--"] or DEFAULT_FLAGS
    print(f"load before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "AUTHBENCH_CACHE": str(tmp / "cache"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        cmd = ["run", a.suite, "--out", str(tmp / "run"), "--reports", str(tmp / "rep"), "--threads", "1",
               "--no-progress", *flags]
        print(f"authbench {' '.join(cmd[:2])} {' '.join(flags)} --threads 1")
        cold = measure(cmd, env, tmp / "report")
        print(f"cold:  CPU {cold['cpu']:7.2f} s, peak RSS {cold['rss']:.0f} MiB")
        warm, forced = [], []
        for i in range(a.repeats):
            for kind in (("warm", "render") if i % 2 == 0 else ("render", "warm")):
                m = measure(cmd + (["--render"] if kind == "render" else []), env, tmp / "report")
                (warm if kind == "warm" else forced).append(m)
                print(f"rerun {i} {kind:<6}: CPU {m['cpu']:6.2f} s, torch imported: {m['torch']}", flush=True)
    print(f"load after: {os.getloadavg()}")
    w, f = statistics.median(m["cpu"] for m in warm), statistics.median(m["cpu"] for m in forced)
    print(f"warm rerun / cold CPU: {w / cold['cpu']:.4f} ({w:.2f} s / {cold['cpu']:.2f} s); "
          f"with --render (reports rendered again, as before): {f / cold['cpu']:.4f} ({f:.2f} s)")


if __name__ == "__main__":
    main()
