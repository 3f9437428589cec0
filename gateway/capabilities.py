"""Whether a replica returns token ids and behaviour log-probs: a property of the replica.

The learner trains only on turns that carry the served tokens and the log-probs they were
sampled with, which the gateway asks each replica for through vLLM's `return_token_ids`
and `logprobs` (docs/faults.md). Not every OpenAI-compatible server takes these fields: one
may refuse the request (400), another ignore them. So each replica is asked once, by the
pool, with a one-token probe: when it is first seen healthy and again each time it comes
back after being down (it may have been replaced by another server). Its answer holds for
streams and non-streams alike until the next probe.

A client's request never changes what a replica is believed to support: a client's 400
(asking vLLM for more `top_logprobs` than it allows, say) is that client's error.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from gateway.upstream import Endpoint, UpstreamIOError

log = logging.getLogger(__name__)

PROBE_MESSAGES = [{"role": "user", "content": "ping"}]


def probe_body(model: str) -> bytes:
    """The smallest request that shows whether token ids and log-probs come back."""
    return orjson.dumps(
        {
            "model": model,
            "messages": PROBE_MESSAGES,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": 0,
            "return_token_ids": True,
        }
    )


def reply_has_tokens(data: Any) -> bool:
    """A chat completion carrying prompt token ids, and per choice token ids with log-probs."""
    if not isinstance(data, dict) or not isinstance(data.get("prompt_token_ids"), list):
        return False
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for ch in choices:
        lp = ch.get("logprobs") if isinstance(ch, dict) else None
        if not isinstance(ch, dict) or not isinstance(ch.get("token_ids"), list):
            return False
        if not isinstance(lp, dict) or not isinstance(lp.get("content"), list):
            return False
    return True


async def probe_tokens(endpoint: Endpoint, model: str, timeout_s: float) -> bool | None:
    """True or False as the replica answered; None when it could not tell (no reply, 5xx):
    the pool asks again at its next health check."""
    try:
        resp = await endpoint.request("POST", "/chat/completions", probe_body(model), timeout_s=timeout_s)
        raw = await resp.read()
    except (UpstreamIOError, TimeoutError) as exc:
        log.info(
            "token probe of %s:%s got no answer (%r); asking again later", endpoint.host, endpoint.port, exc
        )
        return None
    if resp.status >= 500 or resp.status in (404, 408, 429):
        return None  # busy, broken, or the model not loaded yet: no answer about the fields
    if resp.status != 200:
        return False  # the replica refuses the fields themselves
    try:
        return reply_has_tokens(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return None
