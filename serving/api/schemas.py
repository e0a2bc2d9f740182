"""The API's bodies as pydantic models: what the OpenAPI document says each route takes and answers.

Most routes answer ``orjson`` bytes they build themselves; their models here only document the answer
(``responses=``), FastAPI never validates them at request time. /predict, /split and /feedback read their
raw body (``read_body`` + orjson: pydantic per value would cost /predict more than the model call) and
declare it through ``openapi_extra`` from ``body_spec``: the models' JSON Schema with ``$defs`` inlined;
``with_limits`` fills in the running settings' limits. The handlers check exactly what these say.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Request
from pydantic import BaseModel, Field, StringConstraints
from starlette.requests import ClientDisconnect

from serving.api.errors import CLIENT_CLOSED, HTTPProblem
from serving.settings import ServingSettings

VERSION_PATTERN = "^[0-9]{1,9}$"
MAX_WEIGHT = 1e6       # split weights are relative; larger ones are typos (or 1e308, which routes by overflow)
REQUEST_ID_PATTERN = "^[A-Za-z0-9._:-]{1,128}$"

VersionName = Annotated[str, StringConstraints(pattern=VERSION_PATTERN)]
# A feature value as JSON gives it: the model's schema decides which of these a column takes.
FeatureValue = Annotated[float | int | str | bool | None, Field(
    description="numeric and integer columns take numbers, boolean ones true/false, categorical ones strings; "
                "null where unknown (nullable columns only)")]
FeatureRow = Annotated[dict[str, FeatureValue], Field(
    description="one row: every input column of the model (keys it does not use are ignored)")]


# ---------------------------------------------------------------- requests
class PredictRequest(BaseModel):
    """Feature rows, scored in one batch."""

    features: list[FeatureRow] = Field(min_length=1)
    key: str | float | None = Field(None, description="sticky routing key for a traffic split "
                                                      "(the X-Request-Key header wins)")


class SplitRequest(BaseModel):
    """The traffic split: relative weights per loaded version and an optional shadow version."""

    weights: dict[str, Annotated[float, Field(ge=0, le=MAX_WEIGHT)]] = Field(
        default_factory=dict, description="relative weight per loaded version (a weight of 0 routes nothing to it)",
        json_schema_extra={"propertyNames": {"pattern": VERSION_PATTERN}})
    shadow: VersionName | Annotated[int, Field(ge=0)] | None = Field(
        None, description="a loaded version that scores every request too, never answering it")


class FeedbackLabel(BaseModel):
    request_id: str
    label: Literal[0, 1, True, False]
    row: int = Field(0, ge=0, description="0-based row of the request")


class FeedbackRequest(BaseModel):
    """Labels for rows the server scored, by request id and row."""

    labels: list[FeedbackLabel]


# ---------------------------------------------------------------- answers
class Problem(BaseModel):
    """A refused request."""

    detail: str


class Prediction(BaseModel):
    probability: float
    raw_score: float
    version: str


class PredictAnswer(BaseModel):
    """One prediction per row, in order."""

    request_id: str
    model_version: str
    predictions: list[Prediction]


class LoadAnswer(BaseModel):
    status: Literal["loaded"]
    version: str
    model_dir: str
    default_version: str | None
    release: str
    loaded_versions: list[str]


class UnloadAnswer(BaseModel):
    status: Literal["unloaded"]
    version: str
    loaded_versions: list[str]


class DefaultAnswer(BaseModel):
    status: Literal["ok"]
    default_version: str


class SplitAnswer(BaseModel):
    status: Literal["ok"]
    weights: dict[str, float]
    shadow: str | None


class HealthAnswer(BaseModel):
    """Healthy means "can serve"; what a person should still see is in ``warnings``."""

    status: Literal["healthy", "degraded", "unhealthy"]
    model_loaded: bool
    default_version: str | None
    loaded_versions: list[str]
    queue_depth: int
    uptime_seconds: float
    reasons: list[str]
    warnings: list[str]
    recent_events: list[dict[str, Any]]
    pid: int
    workers: dict[str, Any]


class FeedbackAnswer(BaseModel):
    accepted: int
    unchanged: int
    replaced: int
    unknown: int
    invalid: int


class LabelledRow(BaseModel):
    request_id: str
    row: int = Field(ge=0)
    raw_score: float = Field(description="the network's score before calibration")
    probability: float = Field(description="what /predict answered")
    label: Literal[0, 1]
    scored_at: float = Field(description="epoch seconds")


class LabelledAnswer(BaseModel):
    """Labelled rows, oldest first."""

    version: str
    since: float | None = None
    rows: list[LabelledRow]
    returned: int
    labelled: int = Field(description="labelled rows found")
    truncated: bool = Field(description="more rows were labelled than returned (the newest are)")
    without_raw_score: int | None = None
    max_rows: int | None = None


# ---------------------------------------------------------------- the document
def problems(codes: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for refusals: ``{"detail": ...}``, by status code."""
    return {code: {"model": Problem, "description": text} for code, text in codes.items()}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema, self-contained (``$defs`` inlined)."""
    schema = model.model_json_schema()
    return _inline(schema, schema.get("$defs", {}))


def body_spec(model: type[BaseModel], description: str, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON body of ``model`` that the route reads itself."""
    return {"requestBody": {"required": required, "description": description,
                            "content": {"application/json": {"schema": json_schema(model)}}}}


def with_limits(document: dict[str, Any], settings: ServingSettings) -> dict[str, Any]:
    """The OpenAPI ``document`` with the running settings' limits: rows per /predict, labels per /feedback
    (the routers are shared by every app of a process; the limits are each app's)."""
    for path, field, limit in (("/predict", "features", settings.max_batch_rows),
                               ("/feedback", "labels", settings.max_feedback_items)):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        body["properties"][field]["maxItems"] = limit
    return document


# ---------------------------------------------------------------- reading them
async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it passes ``limit`` bytes (before it is all read).

    Raises:
        HTTPProblem: 413 over the limit; 499 when the client hung up before sending it all.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPProblem(413, f"body of {declared} bytes; at most {limit} (SERVING_MAX_BODY_BYTES)")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPProblem(413, f"body over {limit} bytes (SERVING_MAX_BODY_BYTES)")
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; counted as nginx's 499, never logged as a server error.
        raise HTTPProblem(CLIENT_CLOSED, "the client closed the connection before the body was sent") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
