"""Generated requests against the model server: nothing a client sends may earn a 5xx (issue 14).

Three fuzzers, each against an in-process app serving both test versions: schemathesis generates requests
from the server's own OpenAPI spec (every operation, data that fits the spec and data that does not, with
and without the admin token); hypothesis writes /predict bodies byte by byte (values nested up to 2,000
levels, megabyte strings, NaN and Infinity literals, duplicate keys, integers past 64 bits, the wrong
top-level type, more rows than allowed, bytes that are not UTF-8); and hypothesis sends admin requests
(odd and overlong model paths, real loads, splits and feedback with values of any shape). An ASGI wrapper
around the app counts every request it answers and keeps every 5xx, so the figures are what the server
saw. All are deterministic (``derandomize``) and bounded in examples and in seconds.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from serving.api.app import create_app
from serving.contract.constants import GOLDEN_TOLERANCE
from serving.settings import ServingSettings
from tests.faults.conftest import AUTH, TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.faults]

MAX_ROWS = 500                 # the fuzzed server's max_batch_rows and max_body_bytes: limits crossed cheaply
MAX_BODY_BYTES = 2 << 20
SCHEMATHESIS_REQUESTS = 5_000  # the floor, met by the spec-driven fuzzer alone
SCHEMATHESIS_SECONDS = 110     # bounds, not targets (about 60, 12 and 10 s here); stopping early fails the floor
# Examples per (operation, generation mode): with the token, then without it. /predict gets the most.
EXAMPLES = {"POST /predict": (1_000, 100)}
DEFAULT_EXAMPLES = (175, 40)
HYPOTHESIS_EXAMPLES = 2_000
HYPOTHESIS_SECONDS = 30
ADMIN_EXAMPLES = 1_000
ADMIN_SECONDS = 25
RECURSION_LIMIT = sys.getrecursionlimit()   # a server process's (read at import, before hypothesis runs)


@contextmanager
def server_recursion_limit():
    """The app answers with the recursion limit a server process has. Hypothesis raises the limit by 2,000
    while a test runs, and the limit is the interpreter's: the in-process app would get the raised one, and
    a value nested 1,000 levels deep would pass here and fail a real server."""
    raised = sys.getrecursionlimit()
    sys.setrecursionlimit(RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(raised)


class Counted:
    """ASGI wrapper: counts the HTTP requests the app answers and keeps each 5xx (and its exception)."""

    def __init__(self, app) -> None:
        self.app = app
        self.requests = 0
        self.server_errors: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":          # the lifespan
            await self.app(scope, receive, send)
            return
        status = None

        async def watch(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.requests += 1
        where = f"{scope['method']} {scope['path']}?{scope['query_string'].decode(errors='replace')[:200]}"
        try:
            await self.app(scope, receive, watch)
        except Exception as exc:   # Starlette answers 500 and then re-raises: keep the answer, note why
            self.server_errors.append(f"{where} -> {status}: {exc!r}"[:2_000])
            if status is None:
                raise
            return
        if status is not None and status >= 500:
            self.server_errors.append(f"{where} -> {status}")


@pytest.fixture
def server(served_models):
    """An app serving versions 1 (default) and 2, driven in process; its lifespan ends with the test.

    One per test: schemathesis's pytest plugin ends every ASGI lifespan when a test ends (its scorer thread
    with it), so an app kept for the module would serve the next test without one."""
    import schemathesis
    from schemathesis.python import asgi

    settings = ServingSettings(model_root=served_models["root"], admin_token=TOKEN, max_batch_rows=MAX_ROWS,
                               max_body_bytes=MAX_BODY_BYTES,
                               score_timeout_s=120)   # a slow answer on a busy machine is not what is tested
    app = Counted(create_app(settings))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)   # starts the app's lifespan
    client = asgi.get_client(app)
    try:
        for version, default in (("2", "false"), ("1", "true")):
            r = client.post("/load", params={"model_dir": str(served_models["model_dir"]), "version": version,
                                             "default": default}, headers=AUTH)
            assert r.status_code == 200, r.text
        yield {"app": app, "schema": schema, "client": client, "model_dir": served_models["model_dir"]}
    finally:
        asgi.shutdown_lifespans()


def _golden_answered(server) -> None:
    """After a storm: the server is healthy, and its default version answers its golden rows with the golden
    probabilities."""
    health = server["client"].get("/health")
    assert health.status_code == 200, health.text
    version = health.json()["default_version"]
    golden = json.loads((server["model_dir"] / version / "metadata.json").read_text())["golden_examples"]
    r = server["client"].post("/predict", params={"version": version},
                              json={"features": [g["features"] for g in golden]})
    assert r.status_code == 200, r.text
    got = np.array([p["probability"] for p in r.json()["predictions"]])
    assert np.max(np.abs(got - [g["probability"] for g in golden])) <= GOLDEN_TOLERANCE


# ---------------------------------------------------------------- schemathesis: the OpenAPI spec

def _fuzz_operation(op, mode, headers: dict, examples: int, client, deadline: float, failures: list[str]) -> None:
    """Up to ``examples`` schemathesis cases of one operation and generation mode, each sent with ``headers``."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.errors import FailureGroup

    @given(case=op.as_strategy(mode))
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def call(case):
        if time.monotonic() > deadline:
            return
        with server_recursion_limit():
            response = case.call(session=client, headers=headers)
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except FailureGroup as exc:
            failures.append(str(exc)[:2_000])

    try:
        call()
    except Unsatisfiable:     # an operation without parameters has no data that breaks the spec
        pass


def test_requests_generated_from_the_openapi_spec_never_get_a_5xx(server, figure):
    from schemathesis import GenerationMode

    app = server["app"]
    before, errors_before = app.requests, len(app.server_errors)
    failures: list[str] = []
    per_operation: dict[str, int] = {}
    deadline = time.monotonic() + SCHEMATHESIS_SECONDS
    operations = [result.ok() for result in server["schema"].get_all_operations()]
    assert {"POST /predict", "POST /load", "POST /split", "POST /unload", "POST /default", "GET /model_info",
            "GET /health", "POST /feedback"} <= {op.label for op in operations}

    for op in operations:
        with_token, without = EXAMPLES.get(op.label, DEFAULT_EXAMPLES)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for headers, examples in ((AUTH, with_token), ({}, without)):
                start = app.requests
                _fuzz_operation(op, mode, headers, examples, server["client"], deadline, failures)
                per_operation[op.label] = per_operation.get(op.label, 0) + app.requests - start

    sent = app.requests - before
    server_errors = app.server_errors[errors_before:]
    figure("schemathesis_requests", sent, "requests", f"{len(operations)} operations, data that fits the spec "
           "and data that does not, with and without the admin token")
    figure("schemathesis_5xx", len(server_errors), "responses")
    assert server_errors == [] and failures == [], (server_errors[:5], failures[:3])
    assert sent >= SCHEMATHESIS_REQUESTS, per_operation
    _golden_answered(server)


# ---------------------------------------------------------------- hypothesis: /predict bodies, byte by byte

LITERALS = [b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1e-400", b"-0",
            b"123456789012345678901234567890", b"-9223372036854775809", b"18446744073709551615", b"0x10", b"01",
            b"1.", b".5", b"+1", b"true", b"null", b'"\\ud800"', b'"\\u0000"', b'"\xff\xfe"', b'"\xed\xa0\x80"']


def _nest(depth: int, kind: str, leaf: bytes) -> bytes:
    """A value nested ``depth`` levels deep, written out iteratively (no recursion, any depth)."""
    opening, closing = (b"[", b"]") if kind == "list" else (b'{"a":', b"}")
    return opening * depth + leaf + closing * depth


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40), st.sampled_from(["central", "north", "home", "yes", "NaN", "", " 40 "]),
).map(orjson.dumps)
small = st.one_of(scalars, st.sampled_from(LITERALS))
huge_strings = st.builds(lambda c, n: orjson.dumps(c * n), st.characters(codec="utf-8"),
                         st.sampled_from([1_000, 100_000, 1_500_000]))
# Any depth to 2,000, and often just either side of the limits that matter: orjson parses 1,024 levels (a
# value inside a row sits 3 below the top), Python recurses 1,000 frames deep.
EDGE_DEPTHS = [*range(996, 1_003), *range(1_018, 1_027)]
depths = st.one_of(st.integers(1, 2_000), st.sampled_from(EDGE_DEPTHS))
nested = st.builds(_nest, depths, st.sampled_from(["list", "dict"]), small)
values = st.one_of(scalars, small, huge_strings, nested)
header_text = st.text(st.characters(max_codepoint=0xFF, categories=["L", "N", "P", "S"]), max_size=30)


@st.composite
def rows(draw, golden: list[dict], value_strategy=values) -> bytes:
    """A golden row with some of its pairs replaced, added or repeated (a repeated key: the last one wins)."""
    pairs = [(orjson.dumps(k), orjson.dumps(v)) for k, v in draw(st.sampled_from(golden)).items()]
    if draw(st.booleans()):
        del pairs[draw(st.integers(0, len(pairs) - 1))]
    keys = st.one_of(st.sampled_from(sorted(golden[0])), st.text(max_size=20)).map(orjson.dumps)
    pairs += draw(st.lists(st.tuples(keys, value_strategy), max_size=4))
    return b"{" + b",".join(k + b":" + v for k, v in pairs) + b"}"


@st.composite
def predict_requests(draw, golden: list[dict]) -> tuple[bytes, dict, dict]:
    """A /predict request (body, headers, query): mostly rows near the golden ones, else golden rows routed
    by a key nested to any depth, too many rows, the wrong top-level shape, or raw bytes."""
    kind = draw(st.sampled_from(["rows", "rows", "rows", "key", "many rows", "top level", "bytes"]))
    headers = {"content-type": "application/json"}
    if kind != "key" and draw(st.booleans()):
        headers["x-request-key"] = draw(header_text).encode().decode("latin-1")   # what a client's bytes become
    version = None if kind == "key" else draw(st.sampled_from([None, None, None, "1", "2", "3", "01", ""]))
    params = {} if version is None else {"version": version}
    if kind == "bytes":        # not JSON, often not UTF-8 either
        return draw(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode))), headers, params
    if kind == "top level":    # anything but {"features": [object, ...]}
        inner = draw(st.one_of(values, rows(golden)))
        return draw(st.sampled_from([inner, b"[" + inner + b"]", b'{"features":' + inner + b"}",
                                     b'{"features":[' + inner + b"," + inner + b"]}", b'{"features":[]}', b"{}",
                                     b'{"features":[{}],"features":' + inner + b"}"])), headers, params
    if kind == "many rows":    # around the batch limit and far past it (small values: the body stays small)
        body = [draw(rows(golden, small))] * draw(st.sampled_from([MAX_ROWS - 1, MAX_ROWS, MAX_ROWS + 1,
                                                                   20 * MAX_ROWS]))
    elif kind == "key":        # well-formed rows, routed by a sticky key nested to any depth
        body = [orjson.dumps(row) for row in draw(st.lists(st.sampled_from(golden), min_size=1, max_size=3))]
    else:
        body = draw(st.lists(rows(golden), min_size=1, max_size=5))
    key = draw(nested if kind == "key" else st.one_of(st.none(), values))
    extra = b"" if key is None else b',"key":' + key
    return b'{"features":[' + b",".join(body) + b"]" + extra + b"}", headers, params


def test_fuzzed_feature_rows_never_get_a_5xx(server, figure):
    app, client = server["app"], server["client"]
    golden = [g["features"] for g in
              json.loads((server["model_dir"] / "1" / "metadata.json").read_text())["golden_examples"]]
    before, errors_before = app.requests, len(app.server_errors)
    statuses: dict[int, int] = {}
    failures: list[str] = []
    deadline = time.monotonic() + HYPOTHESIS_SECONDS

    @given(request=predict_requests(golden))
    @settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def post(request):
        if time.monotonic() > deadline:
            return
        body, headers, params = request
        with server_recursion_limit():
            r = client.post("/predict", data=body, headers=headers, params=params)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        if r.status_code >= 500 or "request_id" not in r.json():
            failures.append(f"{r.status_code} {r.text[:300]} for {body[:300]!r}")

    post()
    sent = app.requests - before
    server_errors = app.server_errors[errors_before:]
    figure("hypothesis_requests", sent, "requests", "generated /predict bodies: "
           + ", ".join(f"{n} answered {code}" for code, n in sorted(statuses.items())))
    figure("hypothesis_5xx", len(server_errors), "responses")
    assert server_errors == [] and failures == [], (server_errors[:5], failures[:5])
    assert statuses.get(200, 0) > 0 and statuses.get(422, 0) > 0 and statuses.get(413, 0) > 0, statuses
    _golden_answered(server)


# ---------------------------------------------------------------- hypothesis: the admin endpoints

SEGMENTS = ["a", ".", "..", "", "test-model", "1", "2", "x" * 255, "x" * 256, "~", "%ff", "é", "\\", " ", "\x00"]
REAL_DIRS = ["test-model", "./test-model", "a/../test-model", "test-model/"]
path_text = st.text(st.characters(codec="utf-8"), max_size=40)
model_dirs = st.one_of(
    st.lists(st.sampled_from(SEGMENTS), max_size=12).map("/".join),
    # long ones, often either side of PATH_MAX (4,096 bytes) while staying inside the model root
    st.builds(lambda segment, n: "/".join([segment] * n), st.sampled_from(["a", "x" * 100, "."]),
              st.one_of(st.integers(0, 3_000), st.sampled_from([39, 40, 41, 2_030, 2_040, 2_050, 3_000]))),
    path_text)
versions = st.one_of(st.sampled_from(["3", "01", "1\n", "-1", "999999999", "1e3", "", " 1", "١"]), path_text)


@st.composite
def admin_requests(draw, root: str) -> tuple[str, dict, bytes | None]:
    """An admin request (path, query, raw body): a load with one odd parameter (or none: the real versions are
    loaded again), an unload, a default change, a traffic split or feedback, with values of any shape."""
    kind = draw(st.sampled_from(["load", "load", "load", "unload", "default", "split", "split", "feedback"]))
    if kind == "load":
        odd = draw(st.sampled_from(["model_dir", "model_dir", "model_dir", "version", "default", "sha256", None]))
        model_dir = draw(model_dirs if odd == "model_dir" else st.sampled_from(REAL_DIRS))
        params = {"model_dir": f"{root}/{model_dir}" if draw(st.booleans()) else model_dir,
                  "version": draw(versions if odd == "version" else st.sampled_from(["1", "2"])),
                  "default": draw(st.sampled_from(["maybe", "", "2"] if odd == "default" else ["true", "false"]))}
        if odd == "sha256":
            params["metadata_sha256"] = draw(st.one_of(st.sampled_from(["0" * 64, "A" * 64, "zz"]), path_text))
        return "/load", params, None
    if kind in ("unload", "default"):
        return f"/{kind}", {"version": draw(st.one_of(st.sampled_from(["1", "2"]), versions))}, None
    if draw(st.integers(0, 4)) == 0:       # the wrong shape altogether
        return f"/{kind}", {}, draw(st.one_of(values, st.binary(max_size=100)))
    if kind == "split":
        names = st.one_of(st.sampled_from(["1", "2"]), versions).map(orjson.dumps)
        pairs = draw(st.lists(st.tuples(names, st.one_of(small, values)), max_size=4))
        weights = b"{" + b",".join(k + b":" + v for k, v in pairs) + b"}"
        return "/split", {}, b'{"weights":' + weights + b',"shadow":' + draw(st.one_of(names, values)) + b"}"
    fields = [b'"request_id":', b'"label":', b'"row":']
    items = [b"{" + b",".join(f + draw(values) for f in fields if draw(st.booleans())) + b"}"
             for _ in range(draw(st.integers(0, 4)))]
    return "/feedback", {}, b'{"labels":[' + b",".join(items) + b"]}"


def test_fuzzed_admin_requests_never_get_a_5xx(server, figure):
    app, client = server["app"], server["client"]
    root = str(server["model_dir"].parent)
    before, errors_before = app.requests, len(app.server_errors)
    statuses: dict[str, int] = {}      # "/load 200": how many
    failures: list[str] = []
    deadline = time.monotonic() + ADMIN_SECONDS

    @given(request=admin_requests(root), token=st.sampled_from([AUTH, AUTH, AUTH, {}, {"Authorization": "Bearer x"}]))
    @settings(max_examples=ADMIN_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def post(request, token):
        if time.monotonic() > deadline:
            return
        path, params, body = request
        with server_recursion_limit():
            r = client.post(path, params=params, data=body, headers=token)
        statuses[f"{path} {r.status_code}"] = statuses.get(f"{path} {r.status_code}", 0) + 1
        if r.status_code >= 500:
            failures.append(f"{r.status_code} {r.text[:300]} for {path} {str(params)[:300]} {(body or b'')[:200]!r}")

    post()
    sent = app.requests - before
    server_errors = app.server_errors[errors_before:]
    figure("admin_requests", sent, "requests", "generated /load, /unload, /default, /split and /feedback "
           f"requests, {statuses.get('/load 200', 0)} of them loads that succeeded")
    figure("admin_5xx", len(server_errors), "responses")
    assert server_errors == [] and failures == [], (server_errors[:5], failures[:5])
    # the real versions were loaded, and odd paths, missing tokens and bad bodies were refused
    assert {"/load 200", "/load 400", "/load 401", "/split 200", "/split 422", "/feedback 200"} <= set(statuses), \
        statuses
    _golden_answered(server)
