"""Attribution from the explorer: one ``tracewire attribute`` run at a time in a worker process.

The worker is the CLI itself (``python -m tracewire.cli.main attribute ...``) with the model and
transcoders the server was started with, so a graph made from the page is the graph the command
line makes with the same settings. Its progress is read from the CLI's own progress bar (tqdm's
``attribution rows k/n`` on stderr). The output is written by ``Graph.save`` (atomic), straight
into the served directory under a new slug: there is no partial file under that name at any time,
and a cancelled run (the worker's process group is terminated) also leaves none of the writer's
temporary files behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from tracewire.errors import InvalidArgumentError, ResourceLimitError

logger = logging.getLogger(__name__)

JobState = Literal["running", "done", "failed", "cancelled"]
_ROWS = re.compile(rb"attribution rows:.*?(\d+)/(\d+)")
#: Share of the bar before the first row (starting Python, loading the model and transcoders).
_LOADED_AT = 0.1
_WRITING_AT = 0.95
_KEPT_LINES = 20


@dataclass(frozen=True)
class AttributionSettings:
    """What the server was started with (``tracewire serve --model M --transcoders T``)."""

    model: str
    transcoders: str
    dtype: str = "fp32"
    device: str = "cpu"


@dataclass
class AttributionJob:
    id: str
    slug: str
    prompt: str
    output: Path
    process: subprocess.Popen[bytes]
    state: JobState = "running"
    phase: str = "starting the worker"
    rows_done: int = 0
    rows_total: int = 0
    fraction: float = 0.0
    message: str = ""
    version: int = 0
    cancel_requested: bool = False
    started: float = field(default_factory=time.monotonic)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_KEPT_LINES))

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "slug": self.slug,
            "prompt": self.prompt,
            "state": self.state,
            "phase": self.phase,
            "rows_done": self.rows_done,
            "rows_total": self.rows_total,
            "fraction": round(self.fraction, 4),
            "message": self.message,
            "elapsed_s": round(time.monotonic() - self.started, 1),
            "version": self.version,
        }


class AttributionJobs:
    """Starts, follows and cancels worker processes; every method is thread-safe."""

    def __init__(self, settings: AttributionSettings) -> None:
        self.settings = settings
        self._lock = threading.Condition()
        self._jobs: dict[str, AttributionJob] = {}

    # ---------------------------------------------------------------------------------- start
    def start(
        self,
        directory: Path,
        prompt: str,
        *,
        targets: list[str] | None = None,
        max_feature_nodes: int | None = None,
        batch_size: int | None = None,
    ) -> AttributionJob:
        if not prompt.strip():
            raise InvalidArgumentError("prompt is empty: type the text whose next token to explain")
        with self._lock:
            running = [job for job in self._jobs.values() if job.state == "running"]
            if running:
                raise ResourceLimitError(
                    f"an attribution is already running ({running[0].slug}); cancel it or wait for it"
                )
            slug = _free_slug(directory, prompt)
            output = directory / f"{slug}.safetensors"
            command = self._command(prompt, output, targets, max_feature_nodes, batch_size)
            env = {**os.environ, "TQDM_MININTERVAL": "0", "PYTHONUNBUFFERED": "1"}
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: cancel ends it and its children
            )
            job = AttributionJob(
                id=uuid.uuid4().hex[:12], slug=slug, prompt=prompt, output=output, process=process
            )
            self._jobs[job.id] = job
        threading.Thread(target=self._follow, args=(job,), daemon=True, name=f"attribution-{slug}").start()
        logger.info("attribution job %s started: %s -> %s", job.id, prompt[:60], output.name)
        return job

    def _command(
        self,
        prompt: str,
        output: Path,
        targets: list[str] | None,
        max_feature_nodes: int | None,
        batch_size: int | None,
    ) -> list[str]:
        s = self.settings
        command = [sys.executable, "-m", "tracewire.cli.main", "attribute", prompt]
        command += ["--model", s.model, "--transcoders", s.transcoders, "--output", str(output)]
        command += ["--dtype", s.dtype, "--device", s.device]
        for target in targets or []:
            command += ["--target", target]
        if max_feature_nodes is not None:
            command += ["--max-feature-nodes", str(max_feature_nodes)]
        if batch_size is not None:
            command += ["--batch-size", str(batch_size)]
        return command

    # --------------------------------------------------------------------------------- follow
    def _follow(self, job: AttributionJob) -> None:
        """Read the worker's output until it exits: progress from tqdm, errors from the last lines."""
        assert job.process.stdout is not None
        stream = cast(io.BufferedReader, job.process.stdout)  # Popen(bufsize=-1) pipes are buffered readers
        pending = b""
        while chunk := stream.read1(4096):
            pending += chunk
            *lines, pending = re.split(rb"[\r\n]", pending)
            for line in lines:
                self._read_line(job, line)
        self._read_line(job, pending)
        code = job.process.wait()
        _remove_leftovers(job.output)
        with self._lock:
            if job.cancel_requested:
                job.state, job.phase, job.message = (
                    "cancelled",
                    "cancelled",
                    "cancelled: no graph was written",
                )
                if job.output.exists():  # finished writing just before the cancel: keep nothing
                    job.output.unlink()
            elif code == 0 and job.output.is_file():
                job.state, job.phase, job.fraction = "done", "done", 1.0
                wrote = next((line for line in job.tail if line.startswith("wrote ")), "done")
                job.message = wrote.replace(str(job.output), job.output.name)  # no server paths
            else:
                job.state, job.phase = "failed", "failed"
                errors = [line for line in job.tail if line.startswith("error:")]
                job.message = (
                    errors[-1] if errors else (list(job.tail)[-1] if job.tail else f"exit code {code}")
                )
            job.version += 1
            self._lock.notify_all()
        logger.info("attribution job %s %s: %s", job.id, job.state, job.message)

    def _read_line(self, job: AttributionJob, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return
        rows = _ROWS.search(line)
        with self._lock:
            if rows:
                done, total = int(rows.group(1)), int(rows.group(2))
                job.rows_done, job.rows_total = done, total
                job.phase = "writing the graph" if total and done >= total else "attribution rows"
                share = done / total if total else 0.0
                job.fraction = max(job.fraction, _LOADED_AT + (_WRITING_AT - _LOADED_AT) * share)
            else:
                job.tail.append(text)
                if job.phase == "starting the worker":
                    job.phase = "loading the model and transcoders"
                    job.fraction = max(job.fraction, 0.03)
            job.version += 1
            self._lock.notify_all()

    # ------------------------------------------------------------------------- read / cancel
    def get(self, job_id: str) -> AttributionJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def wait_for_change(self, job: AttributionJob, seen: int, timeout: float) -> dict[str, Any]:
        """The job's state once its version passes ``seen`` (or after ``timeout`` seconds)."""
        with self._lock:
            self._lock.wait_for(lambda: job.version > seen or job.state != "running", timeout=timeout)
            return job.snapshot()

    def cancel(self, job: AttributionJob) -> None:
        with self._lock:
            if job.state != "running":
                return
            job.cancel_requested = True
            job.phase = "cancelling"
            job.version += 1
            self._lock.notify_all()
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.killpg(job.process.pid, signal.SIGTERM)

    def close(self) -> None:
        """End running workers (server shutdown)."""
        with self._lock:
            running = [job for job in self._jobs.values() if job.state == "running"]
        for job in running:
            self.cancel(job)


def _free_slug(directory: Path, prompt: str) -> str:
    """A new slug from the prompt's words, unused in ``directory``."""
    words = re.sub(r"[^A-Za-z0-9]+", "-", prompt).strip("-").lower()[:40].strip("-") or "graph"
    base = f"{words}-{time.strftime('%Y%m%d-%H%M%S')}"
    slug, k = base, 2
    while any(directory.glob(f"{slug}.*")):
        slug, k = f"{base}-{k}", k + 1
    return slug


def _remove_leftovers(output: Path) -> None:
    """The atomic writer's temporary files of ``output`` (only a killed writer leaves them)."""
    for leftover in output.parent.glob(f".{output.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
