"""Attribution jobs from the page: start, follow (Server-Sent Events), cancel.

Only a server started with ``--model`` and ``--transcoders`` runs them (503 otherwise); a
read-only server refuses them (they write a graph file into the served directory).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from tracewire.errors import InvalidArgumentError, ResourceLimitError
from tracewire.server.attribution_jobs import AttributionJob, AttributionJobs
from tracewire.server.context import ServerContext, server_context

router = APIRouter(prefix="/api/attribution", tags=["attribution"])
Context = Annotated[ServerContext, Depends(server_context)]
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")]
#: An event at least this often, so a proxy or the browser never drops an idle stream.
_KEEPALIVE_S = 10.0


class AttributionRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=4000, description="The prompt (BOS is prepended).")
    targets: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=32, description="Target tokens; empty: the salient logits."
    )
    max_feature_nodes: int | None = Field(default=None, ge=1, le=1_000_000, description="Feature budget.")
    batch_size: int | None = Field(default=None, ge=1, le=4096)


def _jobs(request: Request, context: ServerContext) -> AttributionJobs:
    jobs: AttributionJobs | None = request.app.state.attribution
    if jobs is None:
        raise HTTPException(
            503, "attribution needs a model: start `tracewire serve DIR --model M --transcoders T`"
        )
    if context.read_only:
        raise HTTPException(403, "this server is read-only (started with --read-only): no graph is written")
    return jobs


def _job(jobs: AttributionJobs, job_id: str) -> AttributionJob:
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no attribution job {job_id!r}")
    return job


@router.post("/jobs", status_code=201, summary="Start attributing a prompt (one job at a time)")
def start_job(body: AttributionRequest, request: Request, context: Context) -> dict[str, Any]:
    jobs = _jobs(request, context)
    try:
        job = jobs.start(
            context.directory.root,
            body.prompt,
            targets=body.targets,
            max_feature_nodes=body.max_feature_nodes,
            batch_size=body.batch_size,
        )
    except ResourceLimitError as exc:
        raise HTTPException(409, str(exc)) from None
    except InvalidArgumentError as exc:
        raise HTTPException(422, str(exc)) from None
    return job.snapshot()


@router.get("/jobs/{job_id}", summary="A job's state and progress")
def job_state(job_id: JobId, request: Request, context: Context) -> dict[str, Any]:
    return _job(_jobs(request, context), job_id).snapshot()


@router.get(
    "/jobs/{job_id}/events",
    summary="The job's progress as Server-Sent Events, until it ends",
    response_class=StreamingResponse,
)
def job_events(job_id: JobId, request: Request, context: Context) -> StreamingResponse:
    jobs = _jobs(request, context)
    job = _job(jobs, job_id)

    def stream() -> Iterator[str]:
        seen = -1
        while True:
            state = jobs.wait_for_change(job, seen, _KEEPALIVE_S)
            seen = state["version"]
            yield f"data: {json.dumps(state)}\n\n"
            if state["state"] != "running":
                return

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.delete("/jobs/{job_id}", summary="Cancel a job: the worker ends and no graph file is left")
def cancel_job(job_id: JobId, request: Request, context: Context) -> dict[str, Any]:
    jobs = _jobs(request, context)
    job = _job(jobs, job_id)
    jobs.cancel(job)
    return job.snapshot()
