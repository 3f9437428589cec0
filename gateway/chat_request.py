"""The chat-completions request body, as this gateway checks it.

The fields the gateway reads or OpenAI types plainly are typed and checked here; every other
field (OpenAI's newer ones, vLLM's extensions, a client's own) passes through to the upstream
untouched. The body forwarded is the client's own JSON, never this model's dump. A failed
check is a 400 (404 for a model this gateway does not serve) whose `param` names the field.

On the hot path the check costs a few microseconds a request (messages are TypedDicts, not
models: about half the cost); the figures are in docs/tolerances.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    with_config,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from typing_extensions import TypedDict

from gateway.errors import APIError, InvalidRequest, NotFound

# Fields of OpenAI's chat request (and vLLM's extensions) that we know; others pass through.
KNOWN_FIELDS = frozenset(
    (
        "messages",
        "model",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "presence_penalty",
        "response_format",
        "seed",
        "stop",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "metadata",
        "store",
        "service_tier",
        "reasoning_effort",
        "modalities",
        "prediction",
        "audio",
        "web_search_options",
        "top_k",
        "min_p",
        "repetition_penalty",
        "return_token_ids",
        "min_tokens",
        "ignore_eos",
        "skip_special_tokens",
        "chat_template_kwargs",
    )
)
MAX_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True, slots=True)
class ChatLimits:
    """What a request is checked against: the public model's name and the configured caps."""

    model: str
    max_n: int
    max_tokens: int


@with_config(ConfigDict(extra="allow"))
class ChatMessage(TypedDict):
    """One message: an object with a `role`; its other fields pass through."""

    role: StrictStr


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions (OpenAI's chat completion request; unknown fields pass through)."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)
    model: StrictStr
    n: StrictInt | None = Field(None, ge=1)
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    stream: StrictBool | None = None
    stream_options: dict[str, Any] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = None
    temperature: StrictFloat | None = None
    top_p: StrictFloat | None = None
    presence_penalty: StrictFloat | None = None
    frequency_penalty: StrictFloat | None = None
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    user: StrictStr | None = None
    metadata: dict[str, Any] | None = None  # the gateway's: read for the episode and task, not forwarded
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    return_token_ids: StrictBool | None = None  # vLLM's

    @field_validator("model")
    @classmethod
    def _served(cls, model: str, info: ValidationInfo) -> str:
        limits: ChatLimits | None = info.context
        if limits is not None and model != limits.model:
            raise PydanticCustomError(
                "model_not_found",
                "The model '{model}' does not exist; this gateway serves '{served}'",
                {"model": model, "served": limits.model},
            )
        return model

    @field_validator("n", *MAX_TOKEN_FIELDS)
    @classmethod
    def _capped(cls, value: int | None, info: ValidationInfo) -> int | None:
        limits: ChatLimits | None = info.context
        cap = None if limits is None else limits.max_n if info.field_name == "n" else limits.max_tokens
        if value is not None and cap is not None and value > cap:
            raise PydanticCustomError("over_cap", "over the cap")
        return value


def check_chat_request(body: Any, limits: ChatLimits) -> None:
    """Raise the APIError a client gets for `body`, if any (the first field at fault)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        ChatCompletionRequest.model_validate(body, context=limits)
    except ValidationError as exc:
        raise chat_error(exc.errors()[0], limits) from None


def chat_error(error: ErrorDetails, limits: ChatLimits) -> APIError:
    """One validation error as the client sees it: a message naming the rule, `param` the field."""
    loc = error["loc"]
    field = str(loc[0]) if loc else None
    if field == "messages":
        if len(loc) == 1:
            return InvalidRequest("'messages' must be a non-empty array", param="messages")
        return InvalidRequest(
            f"messages[{loc[1]}] must be an object with a 'role'", param=f"messages.{loc[1]}"
        )
    if field == "model":
        if error["type"] == "model_not_found":
            return NotFound(error["msg"], param="model", code="model_not_found")
        return InvalidRequest("'model' is required and must be a string", param="model")
    if field == "n":
        return InvalidRequest(f"'n' must be an integer from 1 to {limits.max_n}", param="n")
    if field in MAX_TOKEN_FIELDS:
        return InvalidRequest(f"'{field}' must be an integer from 1 to {limits.max_tokens}", param=field)
    if field == "stream":
        return InvalidRequest("'stream' must be a boolean", param="stream")
    param = ".".join(str(p) for p in loc) or None
    return InvalidRequest(f"{error['msg']}" + (f" (at {param})" if param else ""), param=param)
