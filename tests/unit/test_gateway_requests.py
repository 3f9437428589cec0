"""The public API's request models: checked fields, pass-through fields, misspelt fields, schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from gateway import setup_gateway
from gateway.auth import KeyIn, KeyStore
from gateway.chat_request import ChatCompletionRequest, ChatLimits, check_chat_request
from gateway.errors import APIError
from ledger.bus import MemoryBus
from ledger.recorder import Recorder
from tests.fixtures.upstream import gateway_settings

MSG: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway's ASGI app in process; its upstream is never reached by these requests."""
    settings = gateway_settings(tmp_path, ["http://127.0.0.1:9/v1"], base_model="fake-base")
    recorder = Recorder(MemoryBus())
    app = setup_gateway(settings, recorder=recorder)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c
    recorder.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "hot"),
        ("top_p", True),
        ("seed", 1.5),
        ("stop", [1]),
        ("user", 7),
        ("tools", {"type": "function"}),
        ("logprobs", "yes"),
        ("stream_options", "usage"),
    ],
)
async def test_a_typed_chat_field_of_the_wrong_type_is_a_400_naming_it(
    client: httpx.AsyncClient, field: str, value: Any
) -> None:
    resp = await client.post("/v1/chat/completions", json={"model": "rlgw", "messages": MSG, field: value})
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"].startswith(field), err
    assert set(err) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    "body",
    [
        {"episode_id": "e", "name": "thumbs", "value": 1, "don": True},  # misspelt "done"
        {"episode_id": "e", "name": "thumbs", "value": 1, "tenant": "other"},  # not the client's to set
    ],
)
async def test_a_misspelt_feedback_field_is_a_400_not_dropped(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    resp = await client.post("/v1/feedback", json=body)
    assert resp.status_code == 400, resp.text
    extra = next(k for k in body if k not in ("episode_id", "name", "value"))
    assert resp.json()["error"]["param"] == extra


async def test_the_openapi_bodies_are_generated_from_the_request_models(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    for path, model in [
        ("/v1/chat/completions", "ChatCompletionRequest"),
        ("/v1/feedback", "FeedbackIn"),
        ("/admin/versions", "PublishedVersion"),
    ]:
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
    chat = components["ChatCompletionRequest"]
    assert chat["additionalProperties"] is True and set(chat["required"]) == {"messages", "model"}
    assert "temperature" in chat["properties"] and "max_tokens" in chat["properties"]
    assert components["FeedbackIn"]["additionalProperties"] is False
    assert components["PublishedVersion"]["additionalProperties"] is False


def test_a_key_names_its_tenant_and_scope_and_nothing_else(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tenant must be"):
        KeyStore(tmp_path / "keys.json").create("a b")
    with pytest.raises(ValueError):
        KeyIn.model_validate({"tenant": "acme", "admn": True})
    key = KeyStore(tmp_path / "keys.json").create("acme", admin=True)
    assert KeyStore(tmp_path / "keys.json").authenticate(f"Bearer {key}").admin


WRONG: list[Any] = [None, True, 0, 1, -1, 1.5, "x", [], ["x"], [1], {}, {"a": 1}, [{"role": "user"}]]


def _bodies() -> list[dict[str, Any]]:
    fields = [*ChatCompletionRequest.model_fields, "my_own_field"]
    base: dict[str, Any] = {"model": "rlgw", "messages": MSG}
    out = [base, {"messages": MSG}, {"model": "rlgw"}]
    out += [{**base, f: v} for f in fields for v in WRONG]
    bad_messages: list[Any] = [[{}], [{"role": 1}], [None], ["hi"], [[]], [{"role": "u", "x": 1}]]
    out += [{**base, "messages": v} for v in bad_messages]
    return out


def test_the_check_names_the_field_the_model_finds_at_fault() -> None:
    """check_chat_request refuses what the model refuses (with limits no body here reaches)
    and accepts the rest, naming in `param` the field of the model's first error."""
    for body in _bodies():
        model = body.get("model")
        limits = ChatLimits(model if isinstance(model, str) else "rlgw", max_n=10**9, max_tokens=10**9)
        try:
            ChatCompletionRequest.model_validate(body)
            expected = None
        except ValidationError as exc:
            expected = str(exc.errors()[0]["loc"][0])
        try:
            check_chat_request(body, limits)
            got = None
        except APIError as err:
            got = (err.param or "").split(".")[0]
        assert got == expected, (body, got, expected)
