"""Run seeded malformed-file cases against the loaders of ``targets`` and classify each outcome.

Each case copies the target's valid artifact, applies one or two seeded mutations and loads the
result under a time limit (SIGALRM raising a ``BaseException``, so no ``except Exception`` in
the code under test can swallow it) and, in the worker process, an address-space limit. Outcomes:

- ``refused``: a :class:`~tracewire.errors.TracewireError` (the file was reported, cleanly);
- ``accepted``: it loaded and every invariant of ``check`` holds (harmless damage, e.g. a flipped
  mantissa bit);
- failures: ``traceback`` (any other exception), ``hang`` (over the time limit), ``memory``
  (``MemoryError``), ``silent`` (loaded although an invariant is broken).

``python -m tests.fuzz.engine --cases N --seed S [--targets a,b] [--json OUT]`` runs in its own
process (with the memory limit); the default test suite and ``benchmarks/fuzz.py`` use it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fuzz.targets import TARGETS, Summary, Target

FAILURES = ("traceback", "hang", "memory", "silent")
CASE_TIME_LIMIT_S = 10
MEMORY_LIMIT_BYTES = 3 * 1024**3
"""Address space a case may add to the worker's (a loader that allocates from a header hits it)."""


class CaseTimeout(BaseException):
    """Raised by SIGALRM inside a case; a BaseException so library ``except Exception`` cannot eat it."""


@dataclass
class Outcome:
    target: str
    seed: int
    kind: str
    mutation: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Tally:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[Outcome] = field(default_factory=list)
    slowest: dict[str, float] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        row = self.counts.setdefault(outcome.target, {})
        row[outcome.kind] = row.get(outcome.kind, 0) + 1
        self.slowest[outcome.target] = max(self.slowest.get(outcome.target, 0.0), outcome.seconds)
        if outcome.kind in FAILURES:
            self.failures.append(outcome)


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def limit_memory(extra_bytes: int = MEMORY_LIMIT_BYTES) -> None:
    """Cap this process's address space at its current size plus ``extra_bytes``."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    current = pages * resource.getpagesize()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (current + extra_bytes, hard))


def _base(entry: Path) -> Path:
    return entry if entry.is_dir() else entry.parent


def mutate(target: Target, rng: random.Random, entry: Path) -> str:
    """Apply one or two mutations (a folder-level one sometimes) to the artifact at ``entry``."""
    base = _base(entry)
    done = []
    for _ in range(1 if rng.random() < 0.8 else 2):
        if target.folder_mutators and rng.random() < 0.12:
            mutator = rng.choice(target.folder_mutators)
            done.append(mutator(rng, base))
            continue
        name = rng.choice(sorted(target.files))
        path = base / name
        if not path.is_file():
            continue  # an earlier mutation of this case removed or replaced it
        mutator = rng.choice(target.files[name])
        done.append(mutator(rng, path))
    return " + ".join(done) or "none"


def run_case(
    target: Target, root: Path, relative: Path, reference: Summary, seed: int, work: Path
) -> Outcome:
    from tracewire.errors import TracewireError

    case = work / f"case-{seed}"
    rng = random.Random(f"{target.name}:{seed}")
    for _attempt in range(10):  # a mutator that does not apply to this file draws again
        shutil.copytree(root, case, symlinks=True)
        entry = case / relative
        try:
            mutation = mutate(target, rng, entry)
            break
        except Exception as exc:
            mutation = f"mutator failed: {exc!r}"
            shutil.rmtree(case, ignore_errors=True)
    else:
        return Outcome(target.name, seed, "skipped", mutation)
    start = time.perf_counter()  # the load (and check) is what is timed, not building the mutation
    try:
        with time_limit(CASE_TIME_LIMIT_S):
            summary = target.load(entry)
        problem = target.check(summary, reference)
        kind, detail = ("silent", problem) if problem else ("accepted", "")
    except CaseTimeout:
        kind, detail = "hang", f"over {CASE_TIME_LIMIT_S} s"
    except TracewireError as exc:
        kind, detail = "refused", str(exc)[:300]
    except MemoryError:
        kind, detail = "memory", traceback.format_exc(limit=-3)[-1500:]
    except Exception:
        kind, detail = "traceback", traceback.format_exc(limit=-4)[-1500:]
    finally:
        shutil.rmtree(case, ignore_errors=True)
    return Outcome(target.name, seed, kind, mutation, detail, time.perf_counter() - start)


def run(targets: list[str], cases: int, seed: int, *, progress: bool = False) -> Tally:
    """``cases`` seeded cases for each target in ``targets``; returns the tally."""
    logging.disable(logging.WARNING)  # loaders warn about what they refuse; the tally is the report
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="tracewire-fuzz-") as tmp:
        work = Path(tmp)
        for name in targets:
            target = TARGETS[name]
            root = work / f"template-{name}"
            root.mkdir()
            entry = target.build(root)
            reference = target.load(entry)
            assert target.check(reference, reference) is None, f"{name}: the valid artifact fails its check"
            started = time.perf_counter()
            for index in range(cases):
                tally.add(run_case(target, root, entry.relative_to(root), reference, seed + index, work))
            if progress:
                row = tally.counts.get(name, {})
                print(
                    f"{name:24s} {cases} cases in {time.perf_counter() - started:6.1f} s  {row}",
                    file=sys.stderr,
                )
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    limit_memory()
    tally = run(args.targets.split(","), args.cases, args.seed, progress=args.progress)
    report = {
        "cases_per_target": args.cases,
        "seed": args.seed,
        "counts": tally.counts,
        "slowest_case_s": {k: round(v, 3) for k, v in tally.slowest.items()},
        "failures": [vars(outcome) for outcome in tally.failures],
    }
    text = json.dumps(report, indent=1)
    if args.json is not None:
        args.json.write_text(text)
    else:
        print(text)
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
