"""A fully-done rerun through the CLI vs the cold run: CPU time of `authbench run` subprocesses, in one run.

1. cold: `authbench run SUITE [flags]` with a fresh cache, results and reports folder;
2. warm rerun: the same command again (every cell done, reports up to date): what it costs to find
   out that there is nothing to do (the run's done stamp, bench.engine.rerun: no plan, no torch);
3. warm rerun without the stamp: the same with the stamp deleted first, so the full path plans,
   finds every cell done and leaves the reports alone (the behaviour before the stamp);
4. warm rerun with --render: the full path, forcing the reports to be rendered again (the behaviour
   before reports were rendered only when rows changed).

Each is a subprocess; its CPU time (user + system) and its peak RSS come from os.wait4. Steps 2-4
are interleaved --repeats times (the order rotates). Also prints whether each rerun imported torch
(the child reports `"torch" in sys.modules` at exit through AUTHBENCH_BENCH_REPORT).

    PYTHONPATH=. python benchmarks/bench_warm_cli.py [--repeats 3] [--suite digits-quick] [-- run flags]

Default: the default suite (digits-quick) as `authbench run` runs it, one thread.
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
KINDS = ("warm", "full", "render")
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
    parser.add_argument("--suite", default="digits-quick")
    parser.add_argument("flags", nargs=argparse.REMAINDER)
    a = parser.parse_args(argv)
    flags = [f for f in a.flags if f != "--"]
    print(f"load before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "AUTHBENCH_CACHE": str(tmp / "cache"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        cmd = ["run", a.suite, "--out", str(tmp / "run"), "--reports", str(tmp / "rep"), "--threads", "1",
               "--no-progress", *flags]
        print(f"authbench {' '.join(cmd[:2])} {' '.join(flags)} --threads 1")
        cold = measure(cmd, env, tmp / "report")
        print(f"cold:  CPU {cold['cpu']:7.2f} s, peak RSS {cold['rss']:.0f} MiB")
        runs = {k: [] for k in KINDS}
        for i in range(a.repeats):
            for kind in KINDS[i % 3:] + KINDS[:i % 3]:
                if kind == "full":
                    (tmp / "run" / ".authbench-done.json").unlink(missing_ok=True)
                m = measure(cmd + (["--render"] if kind == "render" else []), env, tmp / "report")
                runs[kind].append(m)
                print(f"rerun {i} {kind:<6}: CPU {m['cpu']:6.2f} s, peak RSS {m['rss']:.0f} MiB, torch imported: "
                      f"{m['torch']}", flush=True)
    print(f"load after: {os.getloadavg()}")
    for kind, text in (("warm", "warm rerun (done stamp)"), ("full", "warm rerun, full path (no stamp)"),
                       ("render", "warm rerun with --render")):
        cpus = [m["cpu"] for m in runs[kind]]
        med = statistics.median(cpus)
        print(f"{text:<34} / cold CPU: {med / cold['cpu']:.4f} ({med:.2f} s / {cold['cpu']:.2f} s; "
              f"runs {', '.join(f'{c:.2f}' for c in cpus)})")


if __name__ == "__main__":
    main()
