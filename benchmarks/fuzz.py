"""Fuzz every file loader with >= 1,000 malformed inputs each: 0 raw tracebacks, hangs or silent accepts.

Run: ``python benchmarks/fuzz.py [--cases 1000] [--seed 0] [--jobs 2]``. Prints a table and writes
``benchmarks/results/fuzz.json``.

The cases are those of the default suite's sample (``tests/fuzz``: the same seeded mutators, the
same loaders, more seeds): each loader's valid artifact from the test factories is damaged by one
or two seeded mutations (truncation, bit flips, garbage, FIFOs and folders in place of files,
hostile header sizes, NaN/Inf data, hostile JSON/YAML field values, gzip bombs, SQLite edits
such as a recursive view) and loaded the way a user does, each case under a 10 s alarm and the
worker under a 3 GiB address-space cap. Outcomes per loader: ``refused`` (a clean
``TracewireError``), ``accepted`` (loaded, every invariant holds), and the failures
``traceback``, ``hang``, ``memory``, ``silent`` (loaded although an invariant is broken).
Targets are split over ``--jobs`` worker processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.engine import FAILURES  # noqa: E402
from tests.fuzz.targets import TARGETS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "fuzz.json"
COLUMNS = ("refused", "accepted", *FAILURES, "skipped")


def _worker(targets: list[str], cases: int, seed: int, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tests.fuzz.engine", "--cases", str(cases), "--seed", str(seed),
               "--targets", ",".join(targets), "--json", str(out), "--progress"]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1000, help="malformed inputs per loader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    names = args.targets.split(",")
    started = time.perf_counter()
    counts: dict[str, dict[str, int]] = {}
    slowest: dict[str, float] = {}
    failures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        groups = [names[i :: args.jobs] for i in range(args.jobs) if names[i :: args.jobs]]
        outs = [Path(tmp) / f"part{i}.json" for i in range(len(groups))]
        workers = [_worker(group, args.cases, args.seed, out) for group, out in zip(groups, outs)]
        codes = [worker.wait() for worker in workers]
        for out, code in zip(outs, codes):
            if not out.exists():
                print(f"a fuzz worker died (exit {code}) before writing {out.name}", file=sys.stderr)
                return 2
            part = json.loads(out.read_text())
            counts.update(part["counts"])
            slowest.update(part["slowest_case_s"])
            failures += part["failures"]
    seconds = time.perf_counter() - started
    header = f"{'loader':24s}" + "".join(f"{c:>10s}" for c in COLUMNS) + f"{'slowest s':>11s}"
    print(header)
    for name in names:
        row = counts.get(name, {})
        print(f"{name:24s}" + "".join(f"{row.get(c, 0):>10d}" for c in COLUMNS) + f"{slowest.get(name, 0):>11.2f}")
    print(f"{len(failures)} failures in {sum(sum(r.values()) for r in counts.values())} cases, {seconds:.0f} s")
    for failure in failures[:20]:
        print(f"  {failure['target']} seed {failure['seed']} {failure['kind']}: {failure['mutation']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {"cases_per_loader": args.cases, "seed": args.seed, "seconds": round(seconds, 1),
              "load_average": os.getloadavg(), "counts": counts, "slowest_case_s": slowest,
              "failures": failures}  # fmt: skip
    RESULTS.write_text(json.dumps(result, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
