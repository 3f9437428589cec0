"""Drill: bad input. Schemathesis against the served OpenAPI schema, then hand-made cases.

The gateway runs for real (uvicorn over HTTP) in front of the fake upstream, with the memory
store behind its episode reads. A server error is any 5xx except the upstream-mapped ones
(502 upstream_error, 503 service_unavailable, 504 timeout) in OpenAI's error shape; every
error the gateway answers is in that shape, and none is a 500.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from ledger.memstore import MemoryStore
from tests.fixtures.upstream import (
    FakeServer,
    GatewayServer,
    gateway_settings,
    start_fake,
    start_gateway,
    stop_gateway,
)

pytestmark = pytest.mark.integration

LIMIT = 64 * 1024  # max_body_bytes in these tests
MAX_N, MAX_TOKENS = 4, 512
MSG = [{"role": "user", "content": "hi"}]
UPSTREAM_MAPPED = {502: "upstream_error", 503: "service_unavailable", 504: "timeout"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeServer, GatewayServer]]:
    fake = start_fake()
    cfg = gateway_settings(
        tmp_path_factory.mktemp("bad-input"),
        [fake.url],
        max_body_bytes=LIMIT,
        max_n=MAX_N,
        max_tokens_limit=MAX_TOKENS,
    )
    gw = start_gateway(cfg)
    gw.services.store = MemoryStore()  # GET /v1/episodes/{id} reads it
    yield fake, gw
    stop_gateway(gw)
    fake.stop.set()


@pytest.fixture
def gw(served: tuple[FakeServer, GatewayServer]) -> GatewayServer:
    return served[1]


def assert_no_server_error(resp: httpx.Response | Any, what: str) -> None:
    """No 500; a 5xx only as an upstream-mapped error; every error in OpenAI's shape (Anthropic's
    on /v1/messages)."""
    status = resp.status_code
    assert status != 500, f"{what}: 500 {resp.text[:300]}"
    if status < 400:
        return
    body = orjson.loads(resp.content)
    if "/v1/messages" in what:
        assert isinstance(body, dict) and body.get("type") == "error", f"{what}: {status} {resp.text[:300]}"
        assert set(body["error"]) == {"type", "message"}, f"{what}: {body}"
        assert "Traceback" not in body["error"]["message"]
        assert status < 500 or body["error"]["type"] in ("api_error", "overloaded_error"), f"{what}: {body}"
        return
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), (
        f"{what}: {status} {resp.text[:300]}"
    )
    assert set(body["error"]) == {"message", "type", "param", "code"}, f"{what}: {body}"
    assert "Traceback" not in body["error"]["message"]
    if status >= 500:
        assert UPSTREAM_MAPPED.get(status) == body["error"]["type"], f"{what}: {status} {body}"


def post(gw: GatewayServer, path: str, content: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    h = {"Content-Type": "application/json", **(headers or {})}
    return httpx.post(gw.root + path, content=content, headers=h, timeout=10)


def code_of(resp: httpx.Response) -> str | None:
    assert_no_server_error(resp, "request")
    code: str | None = resp.json()["error"]["code"]
    return code


# ---- schemathesis ------------------------------------------------------------------------


def _fuzz(cases: Any, gw: GatewayServer, calls: dict[str, int], label: str) -> Any:
    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def check(case: Any) -> None:
        resp = case.call(base_url=gw.root, timeout=10)
        assert_no_server_error(resp, f"{case.method} {case.formatted_path} {case.body!r:.200}")
        calls[label] = calls.get(label, 0) + 1

    return check


def test_schemathesis_finds_no_server_errors(gw: GatewayServer, caplog: pytest.LogCaptureFixture) -> None:
    schema = schemathesis.openapi.from_url(gw.root + "/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]  # type: ignore[union-attr]
    assert any(op.path == "/v1/chat/completions" for op in operations)
    assert any(op.path == "/v1/feedback" for op in operations)
    calls: dict[str, int] = {}
    started = time.monotonic()
    for op in operations:
        for mode in GenerationMode:
            check = _fuzz(op.as_strategy(mode), gw, calls, f"{op.label} {mode.value}")
            with caplog.at_level(logging.ERROR):
                try:
                    check()
                except Unsatisfiable:  # nothing to break: an operation without parameters
                    assert mode is GenerationMode.NEGATIVE
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[-2000:]
    total = sum(calls.values())
    print(
        f"\nschemathesis: {total} requests over {len(calls)} operations in {time.monotonic() - started:.1f}s"
    )
    assert total > 100


# ---- hand-made cases ---------------------------------------------------------------------


def test_oversized_body_by_content_length_and_chunked(gw: GatewayServer) -> None:
    big = orjson.dumps({"model": "rlgw", "messages": [{"role": "user", "content": "x" * 2 * LIMIT}]})
    for path in ("/v1/chat/completions", "/v1/feedback"):
        assert code_of(post(gw, path, big)) == "body_too_large"

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(big), 4096):
                yield big[i : i + 4096]

        resp = post(gw, path, chunks())  # no Content-Length: Transfer-Encoding: chunked
        assert resp.status_code == 413 and code_of(resp) == "body_too_large"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b" ",
        b"{not json",
        b'{"model": "rlgw", "messages": [',
        b"\xff\xfe{}",
        b'{"model": "rlgw", "messages": [{"role": "user", "content": "\xff\xfe"}]}',  # invalid UTF-8
        b'{"model": "rlgw", "messages": [{"role": "user", "content": "\\ud800"}]}',  # lone surrogate
        b"null",
        b"[]",
        b"[1, 2]",
        b'"a string"',
        b"42",
        b"true",
        b"[" * 5000 + b"]" * 5000,  # nesting past the parser's limit
        b"\x00\x00\x00",
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/feedback"])
def test_broken_and_non_object_json_is_400(gw: GatewayServer, path: str, content: bytes) -> None:
    resp = post(gw, path, content)
    assert resp.status_code == 400, resp.text
    assert_no_server_error(resp, repr(content[:40]))


WRONG = [None, True, 1, 1.5, -1, "x", [], [1], {}, {"a": 1}]
CHAT_FIELDS: dict[str, list[Any]] = {
    "model": [v for v in WRONG if v != "x"] + ["not-our-model"],
    "messages": [v for v in WRONG] + [[{}], [{"role": 1}], [None], ["hi"], [[]]],
    "stream": [v for v in WRONG if v is not True and v is not None],
    "n": [v for v in WRONG if v not in (None, 1) or isinstance(v, bool)] + [0, MAX_N + 1, 10**12, 2**70],
    "max_tokens": [v for v in WRONG if v not in (None, 1) or isinstance(v, bool)]
    + [0, MAX_TOKENS + 1, 2**70],
    "max_completion_tokens": [0, -5, 1.0, "9", MAX_TOKENS + 1, 10**30],
}


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, vs in CHAT_FIELDS.items() for v in vs])
def test_wrong_types_for_documented_chat_fields(gw: GatewayServer, field: str, value: Any) -> None:
    body = {"model": "rlgw", "messages": MSG, field: value}
    resp = post(gw, "/v1/chat/completions", _dumps(body))
    assert resp.status_code in (400, 404), f"{field}={value!r}: {resp.status_code} {resp.text[:200]}"
    err = resp.json()["error"]
    assert_no_server_error(resp, f"{field}={value!r}")
    assert err["param"] == field or (err["param"] or "").startswith(field), err


RESPONSES_FIELDS = ["input", "instructions", "tools", "tool_choice", "text", "max_output_tokens", "stream"]
RESPONSES_FIELDS += ["previous_response_id", "metadata", "store", "background"]
MESSAGES_FIELDS = ["messages", "system", "tools", "tool_choice", "max_tokens", "stop_sequences", "stream"]
MESSAGES_FIELDS += ["metadata"]
BLOCKS: list[Any] = [
    [1],
    [{"type": "image", "source": "x"}],
    [{"type": "tool_use"}],
    [{"type": "tool_result"}],
]
BLOCKS += [[{"type": "tool_result", "tool_use_id": "a", "content": [1, {"type": "text"}]}], [{"type": "doc"}]]
ITEMS: list[Any] = [
    [1],
    [{"type": "function_call"}],
    [{"type": "function_call_output", "call_id": "a", "output": 1}],
]
ITEMS += [[{"role": "user", "content": None}], [{"role": "user", "content": [{"type": "input_image"}]}]]


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [("/v1/responses", f, v) for f in RESPONSES_FIELDS for v in WRONG]
    + [("/v1/responses", "input", v) for v in ITEMS]
    + [("/v1/messages", f, v) for f in MESSAGES_FIELDS for v in WRONG]
    + [
        ("/v1/messages", "messages", [{"role": r, "content": b}])
        for r in ("user", "assistant")
        for b in BLOCKS
    ],
)
def test_wrong_types_for_the_other_front_doors(gw: GatewayServer, path: str, field: str, value: Any) -> None:
    """Responses and Messages requests with a field of the wrong type: an error in the door's own
    shape (a 200 where the upstream takes it), never a 500."""
    if path == "/v1/responses":
        body: dict[str, Any] = {"model": "rlgw", "input": "hi", field: value}
    else:
        body = {"model": "rlgw", "max_tokens": 8, "messages": MSG, field: value}
    resp = post(gw, path, _dumps(body))
    assert resp.status_code in (200, 400, 404), f"{field}={value!r}: {resp.status_code} {resp.text[:200]}"
    assert_no_server_error(resp, f"{path} {field}={value!r}")


def _dumps(body: Any) -> bytes:
    """JSON with integers past 64 bits (orjson refuses to write them)."""
    return json.dumps(body).encode()


FEEDBACK_CASES: list[dict[str, Any]] = [
    {},
    {"name": "thumbs", "value": 1},  # no target
    {"episode_id": 1, "name": "x", "value": 1},
    {"episode_id": "e", "name": None, "value": 1},
    {"episode_id": "e", "name": "x"},
    {"episode_id": "e", "name": "x", "value": None},
    {"episode_id": "e", "name": "x", "value": {"a": 1}},
    {"episode_id": "e", "name": "x", "value": [1, 2]},
    {"episode_id": "e", "name": "x", "value": 1, "done": "maybe"},
    {"episode_id": "e", "turn_id": [], "name": "x", "value": 1},
    {"episode_id": "", "turn_id": "", "name": "x", "value": 1},
    {"episode_id": "e" * 100_000, "name": "x", "value": 1},
    {"turn_id": "no-such-turn", "name": "x", "value": 1},
]


@pytest.mark.parametrize("body", FEEDBACK_CASES, ids=range(len(FEEDBACK_CASES)))
def test_wrong_feedback_is_4xx(gw: GatewayServer, body: dict[str, Any]) -> None:
    resp = post(gw, "/v1/feedback", orjson.dumps(body))
    assert 400 <= resp.status_code < 500, resp.text[:300]
    assert_no_server_error(resp, repr(body)[:100])


def _with_nested(body: dict[str, Any], levels: int) -> bytes:
    """`body` as JSON with its "DEEP" placeholder replaced by `levels` nested arrays."""
    return orjson.dumps(body).replace(b'"DEEP"', b"[" * levels + b'"leaf"' + b"]" * levels)


@pytest.mark.parametrize("levels", [100, 245, 248, 250, 251, 252, 253, 255, 600, 1000])
def test_deep_json_is_served_and_recorded_or_refused(gw: GatewayServer, levels: int) -> None:
    """orjson parses 1024 levels but writes ~255: a body accepted must be forwarded and
    recorded (a record that cannot be written would jam the recorder), the rest is a 400."""
    before = len(gw.bus.messages("turns")), len(gw.bus.messages("feedback"))
    bodies: dict[str, dict[str, Any]] = {
        "/v1/chat/completions": {
            "model": "rlgw",
            "messages": [{"role": "user", "content": "hi", "x": "DEEP"}],
        },
        "/v1/feedback": {"episode_id": "e", "name": "demo", "value": [{"content": "DEEP"}]},
    }
    meta: dict[str, Any] = {
        "model": "rlgw",
        "messages": MSG,
        "metadata": {"x": "DEEP"},
    }  # recorded, not forwarded
    statuses = []
    for path, body in [*bodies.items(), ("/v1/chat/completions", meta)]:
        resp = post(gw, path, _with_nested(body, levels))
        assert_no_server_error(resp, f"{path} {levels} levels")
        assert resp.status_code in (200, 400)
        if resp.status_code == 400:
            assert code_of(resp) in ("too_deeply_nested", "invalid_json")
        statuses.append(resp.status_code)
    deadline = time.monotonic() + 5  # the recorder writes on its own thread
    want = before[0] + statuses.count(200) - (statuses[1] == 200), before[1] + (statuses[1] == 200)
    while (len(gw.bus.messages("turns")), len(gw.bus.messages("feedback"))) != want:
        assert time.monotonic() < deadline, f"records not written: {statuses}, {want}"
        time.sleep(0.02)
    if levels <= 245:
        assert statuses == [200, 200, 200]
    if levels >= 253:
        assert statuses == [400, 400, 400]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
        "application/xml",
    ],
)
def test_content_type_is_not_trusted(gw: GatewayServer, content_type: str) -> None:
    """The body is read as JSON whatever the header says (curl -d sends a form type):
    JSON is served, anything else is a 400 invalid_json."""
    ok = post(
        gw,
        "/v1/chat/completions",
        orjson.dumps({"model": "rlgw", "messages": MSG}),
        {"Content-Type": content_type},
    )
    assert ok.status_code == 200, ok.text
    bad = post(gw, "/v1/chat/completions", b"model=rlgw&messages=hi", {"Content-Type": content_type})
    assert bad.status_code == 400 and code_of(bad) == "invalid_json"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Episode-Id": "e" * 10_000},
        {"X-Episode-Id": "épisode\u00a0ünïcode"},
        {"X-Episode-End": "\u00ff" * 3},
        {"X-Task": "t" * 5000},
        {"Authorization": "Bearer \u00ff\u00fe"},
    ],
)
def test_odd_headers_never_break_a_request(gw: GatewayServer, headers: dict[str, str]) -> None:
    raw = {k.encode(): v.encode("latin-1", errors="replace") for k, v in headers.items()}
    resp = httpx.post(
        gw.root + "/v1/chat/completions",
        content=orjson.dumps({"model": "rlgw", "messages": MSG}),
        headers={b"Content-Type": b"application/json", **raw},
        timeout=10,
    )
    if "X-Episode-Id" in headers:  # sent back as a header: checked at the door, never truncated
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["code"] == "invalid_episode_id"
        return
    assert resp.status_code == 200, resp.text
    assert len(resp.headers["x-episode-id"]) <= 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/chat/completions"),
        ("PUT", "/v1/feedback"),
        ("GET", "/v1/nope"),
        ("GET", "/v1/episodes/"),
        ("GET", "/v1/episodes/" + "x" * 5000),
        ("POST", "/v1/episodes/%00/end"),
        ("GET", "/admin/episodes/%ff"),
    ],
)
def test_unknown_routes_and_methods_in_openai_shape(gw: GatewayServer, method: str, path: str) -> None:
    resp = httpx.request(method, gw.root + path, timeout=10)
    assert 200 <= resp.status_code < 500, resp.text
    assert_no_server_error(resp, f"{method} {path}")


def test_the_gateway_still_serves_after_the_drill(gw: GatewayServer) -> None:
    resp = post(gw, "/v1/chat/completions", orjson.dumps({"model": "rlgw", "messages": MSG}))
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"]
