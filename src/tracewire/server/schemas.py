"""Request and response bodies of the JSON API (pydantic: validated, and documented in OpenAPI).

Every request body has bounds on list lengths, string lengths and numbers, on top of the
server-wide body-size limit, so a malformed or hostile request is a clear 422 naming the field and
never reaches graph code. Responses that can be large (graph nodes and links) are not modelled
here: they are built as JSON text directly (see ``graph_routes``) and documented by description.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tracewire.errors import InvalidArgumentError

#: Node ids are short ("12_3456_7", "E_13_0"); anything longer is not a node id.
NodeId = Annotated[str, Field(min_length=1, max_length=200)]
#: At most this many pinned nodes (the UI's subgraph is for reading, not for whole graphs).
MAX_PINNED = 10_000
MAX_INTERVENTIONS = 64


class GraphSummary(BaseModel):
    """One graph in the directory listing."""

    slug: str = Field(description="Name used in every /api/graphs/{slug} route.")
    kind: Literal["tracewire", "neuronpedia"] = Field(
        description="'tracewire': a .safetensors graph, pruned on request; 'neuronpedia': a graph JSON file."
    )
    file: str = Field(description="File name inside the served directory.")
    size_bytes: int
    prompt: str | None = None
    scan: str | None = None
    n_nodes: int | None = Field(None, description="Nodes in the file (before pruning), when cheap to know.")
    n_edges: int | None = None
    error: str | None = Field(None, description="Why the file could not be read, if it could not.")


class GraphList(BaseModel):
    graphs: list[GraphSummary]


class ServerInfo(BaseModel):
    """What this server can do; the UI greys out what is missing."""

    version: str
    features: bool = Field(description="A feature store is open (feature cards, labels).")
    labels_writable: bool
    steering: bool = Field(description="A model and transcoders are loaded (POST /api/steer).")
    attribution: bool = Field(
        default=False,
        description="Attribution jobs can be started from the page (POST /api/attribution/jobs).",
    )
    read_only: bool = Field(description="Saving qParams is refused.")
    max_body_bytes: int


class QParams(BaseModel):
    """Frontend state saved into a graph's ``qParams`` (Neuronpedia / attribution-graph names).

    Unknown keys are kept as given, so state written by other frontends survives a save.
    """

    model_config = ConfigDict(extra="allow")

    pinnedIds: list[NodeId] = Field(default_factory=list, max_length=MAX_PINNED)
    supernodes: list[Annotated[list[Annotated[str, Field(max_length=500)]], Field(min_length=1)]] = Field(
        default_factory=list,
        max_length=MAX_PINNED,
        description="Each supernode is [label, node_id, node_id, ...]; its edges are sums over members.",
    )
    linkType: Literal["input", "output", "either", "both"] = "both"
    clickedId: Annotated[str, Field(max_length=200)] = ""
    sg_pos: Annotated[str, Field(max_length=100_000)] = ""
    nodeLabels: dict[NodeId, Annotated[str, Field(max_length=500)]] = Field(
        default_factory=dict,
        max_length=MAX_PINNED,
        description="tracewire: custom labels of pinned nodes (node_id -> text).",
    )


class SaveQParamsRequest(BaseModel):
    qParams: QParams


class SaveQParamsResponse(BaseModel):
    slug: str
    file: str
    qParams: dict[str, Any]


class SubgraphScoresRequest(BaseModel):
    pinnedIds: list[NodeId] = Field(max_length=MAX_PINNED, description="Node ids of the pinned subgraph.")


class ScorePair(BaseModel):
    replacement: float | None
    completeness: float | None


class SubgraphScoresResponse(BaseModel):
    """Scores with every feature outside the pinned set folded into its error node."""

    replacement: float | None
    completeness: float | None
    n_pinned_features: int = Field(description="Pinned nodes that are features (only these matter).")
    full_graph: ScorePair | None = Field(
        description="Scores of the whole (unpruned) graph, for comparison; null while still being computed."
    )


class FeatureLabelRequest(BaseModel):
    label: Annotated[str, Field(max_length=500)] | None = Field(
        description="The user label; null or an empty string removes it (the automatic label shows again)."
    )


class FeatureLabelResponse(BaseModel):
    layer: int
    feature: int
    label: str | None


class SteerIntervention(BaseModel):
    """Change one transcoder feature: ``set`` its activation, ``scale`` it, or ``add`` to it."""

    layer: int = Field(ge=0, le=10_000)
    feature: int = Field(ge=0, le=100_000_000)
    position: int | Literal["all"] = Field(
        description="Token index (BOS is 0; negative counts from the end), or 'all' (every position, "
        "generated tokens included)."
    )
    op: Literal["set", "scale", "add"] = "set"
    value: float

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value) or abs(value) > 1e6:
            raise InvalidArgumentError("value must be a finite number with |value| <= 1e6")
        return value

    @field_validator("position")
    @classmethod
    def _bounded(cls, value: int | str) -> int | str:
        if isinstance(value, int) and abs(value) > 1_000_000:
            raise InvalidArgumentError("position is out of range")
        return value


class SteerRequest(BaseModel):
    slug: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="The graph whose prompt is steered (its token ids are used as they are)."
    )
    interventions: list[SteerIntervention] = Field(min_length=1, max_length=MAX_INTERVENTIONS)
    top_k: int = Field(10, ge=1, le=50)
    max_new_tokens: int = Field(16, ge=0, le=64, description="0: no generation, top logits only.")
    freeze_attention: bool = True


class TopLogit(BaseModel):
    token_id: int
    token: str
    probability: float
    logit: float


class SteerOutcome(BaseModel):
    top_logits: list[TopLogit]
    text: str | None = Field(description="The greedy continuation (null when max_new_tokens is 0).")


class SteerResponse(BaseModel):
    prompt_tokens: list[str]
    before: SteerOutcome
    after: SteerOutcome
    interventions: list[str] = Field(description="What was applied, as readable text.")
