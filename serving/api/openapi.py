"""What the OpenAPI spec says about the bodies the server reads itself.

/predict, /split and /feedback read their raw body (orjson, no pydantic: the hot path stays fast), so
FastAPI cannot infer what they accept. These ``openapi_extra`` fragments say it, exactly as the
handlers in serving/api/app.py check it; nothing here parses a request. The spec is static: a feature
row's keys are the loaded model's input columns, which the spec names only as "any key".
"""

from __future__ import annotations

from serving.settings import ServingSettings

VERSION_PATTERN = "^[0-9]{1,9}$"
# A feature value as JSON gives it: the model's schema decides which of these a column takes.
FEATURE_VALUE = {"type": ["number", "integer", "string", "boolean", "null"],
                 "description": "numeric and integer columns take numbers, boolean ones true/false, categorical "
                                "ones strings; null where unknown (nullable columns only)"}
PROBLEM = {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}


def _json_body(schema: dict, description: str, required: bool = True) -> dict:
    return {"required": required, "description": description, "content": {"application/json": {"schema": schema}}}


def _problems(codes: dict[str, str]) -> dict:
    """Error answers: {"detail": ...}, by status code."""
    return {code: {"description": text, "content": {"application/json": {"schema": PROBLEM}}}
            for code, text in codes.items()}


def predict_extra(settings: ServingSettings) -> dict:
    """/predict: rows of features, the optional sticky routing key, the version and request-id overrides."""
    row = {"type": "object", "additionalProperties": FEATURE_VALUE,
           "description": "one row: every input column of the model (keys it does not use are ignored)"}
    body = {"type": "object", "required": ["features"], "additionalProperties": True, "properties": {
        "features": {"type": "array", "minItems": 1, "maxItems": settings.max_batch_rows, "items": row},
        "key": {"type": ["string", "number"], "description": "sticky routing key for a traffic split "
                                                               "(the X-Request-Key header wins)"}}}
    prediction = {"type": "object", "required": ["probability", "raw_score", "version"], "properties": {
        "probability": {"type": "number"}, "raw_score": {"type": "number"}, "version": {"type": "string"}}}
    answer = {"type": "object", "required": ["request_id", "model_version", "predictions"], "properties": {
        "request_id": {"type": "string"}, "model_version": {"type": "string"},
        "predictions": {"type": "array", "items": prediction}}}
    return {
        "parameters": [
            {"name": "version", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "score with this loaded version instead of the routed one"},
            {"name": "X-Request-ID", "in": "header", "required": False,
             "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
             "description": "echoed back; anything else is replaced by a generated id"},
            {"name": "X-Request-Key", "in": "header", "required": False, "schema": {"type": "string"},
             "description": "sticky routing key for a traffic split"},
        ],
        "requestBody": _json_body(body, "feature rows, scored in one batch; rows are 0-based in error answers"),
        "responses": {
            "200": {"description": "one prediction per row, in order",
                    "content": {"application/json": {"schema": answer}}},
            **_problems({
                "404": "the version asked for is not loaded",
                "413": f"more than {settings.max_batch_rows} rows, or a body over {settings.max_body_bytes} bytes",
                "422": 'not JSON, not {"features": [...]}, or rows that break the data contract ("errors" names '
                       "row and feature)",
                "503": "no model loaded, or the model did not answer in time (see Retry-After)"}),
        },
    }


def split_extra() -> dict:
    """/split: relative weights per loaded version and an optional shadow version; no body clears both."""
    version = {"type": "string", "pattern": VERSION_PATTERN}
    body = {"type": "object", "properties": {
        "weights": {"type": "object", "propertyNames": version,
                    "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1e6},
                    "description": "relative weight per loaded version (a weight of 0 routes nothing to it)"},
        "shadow": {"anyOf": [version, {"type": "integer", "minimum": 0}, {"type": "null"}],
                   "description": "a loaded version that scores every request too, never answering it"}}}
    return {"requestBody": _json_body(body, "the traffic split; an empty body clears split and shadow", False),
            "responses": _problems({"401": "missing or wrong bearer token", "404": "a version is not loaded",
                                    "409": "weights that route nothing", "422": "not the body described"})}


def feedback_extra(settings: ServingSettings) -> dict:
    """/feedback: labels for rows the server scored, by request id and 0-based row."""
    label = {"type": "object", "required": ["request_id", "label"], "properties": {
        "request_id": {"type": "string"}, "label": {"enum": [0, 1, True, False]},
        "row": {"type": "integer", "minimum": 0, "default": 0}}}
    body = {"type": "object", "required": ["labels"], "properties": {
        "labels": {"type": "array", "maxItems": settings.max_feedback_items, "items": label}}}
    return {"requestBody": _json_body(body, "labels; items that are not of this shape are counted as invalid"),
            "responses": _problems({"401": "missing or wrong bearer token",
                                    "413": f"more than {settings.max_feedback_items} labels",
                                    "422": "not the body described", "503": "monitoring is off on this server"})}


def labelled_extra() -> dict:
    """/monitoring/labelled: the labelled rows of one version with their raw scores (admin token)."""
    row = {"type": "object", "required": ["request_id", "row", "raw_score", "probability", "label", "scored_at"],
           "properties": {"request_id": {"type": "string"}, "row": {"type": "integer", "minimum": 0},
                          "raw_score": {"type": "number", "description": "the network's score before calibration"},
                          "probability": {"type": "number", "description": "what /predict answered"},
                          "label": {"enum": [0, 1]}, "scored_at": {"type": "number",
                                                                   "description": "epoch seconds"}}}
    answer = {"type": "object", "required": ["version", "rows", "returned", "labelled", "truncated"], "properties": {
        "version": {"type": "string"}, "since": {"type": "number"}, "rows": {"type": "array", "items": row},
        "returned": {"type": "integer"}, "labelled": {"type": "integer", "description": "labelled rows found"},
        "truncated": {"type": "boolean", "description": "more rows were labelled than returned (the newest are)"},
        "without_raw_score": {"type": "integer"}, "max_rows": {"type": "integer"}}}
    return {"responses": {"200": {"description": "labelled rows, oldest first",
                                  "content": {"application/json": {"schema": answer}}},
                          **_problems({"401": "missing or wrong bearer token",
                                       "422": "since or limit out of range",
                                       "503": "monitoring is off on this server"})}}
