"""The sampling parameters a turn was served with: the contract between the gateway (which
records them on each turn) and the learner (which rebuilds the distribution the tokens were
drawn from, so that its importance ratio is taken against the right behaviour policy).

`sampling_of(request)` reads a chat request the way the engine does (vLLM's defaults when a
field is absent; the engine is started with `--generation-config vllm` so that a model
folder's generation_config.json cannot change those defaults behind the record, docs/vllm.md).

Of vLLM's logits processing the learner rebuilds temperature, min_p, top_k and top_p, in the
engine's order (docs/vllm.md). Anything else that changes the distribution (penalties,
logit_bias, min_tokens, allowed or banned tokens, a grammar from `response_format` or a forced
tool call) is named in `unsupported`: the recorded log-probs of such a turn are still the
processed ones, but the learner cannot recompute them, so it does not train on that turn.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

GREEDY_BELOW = 1e-5  # vLLM samples greedily under this temperature (its _SAMPLING_EPS)

# request fields that change the sampling distribution in ways the learner does not rebuild,
# with the value at which each one is neutral
NEUTRAL = {
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "repetition_penalty": 1.0,
    "min_tokens": 0,
}
ALWAYS_UNSUPPORTED = (
    "logit_bias",
    "allowed_token_ids",
    "bad_words",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "logits_processors",
)


class Sampling(BaseModel):
    """The effective sampling parameters of one turn (engine defaults filled in)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k (vLLM also reads -1 so)
    min_p: float = 0.0
    unsupported: str | None = None  # what the learner cannot rebuild; None: all of it

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    @property
    def neutral(self) -> bool:
        """Sampling from the model's own distribution: processed log-probs equal raw ones."""
        return (
            not self.greedy
            and self.temperature == 1.0
            and self.top_p >= 1.0
            and self.top_k <= 0
            and self.min_p <= 0.0
            and self.unsupported is None
        )


def sampling_of(request: dict[str, Any]) -> Sampling:
    """The sampling parameters a chat request is served with; never raises (a value the engine
    would have refused cannot have been served; one we cannot read is named in `unsupported`)."""
    try:
        temperature = _number(request, "temperature", 1.0)
        top_p = _number(request, "top_p", 1.0)
        top_k = int(_number(request, "top_k", 0))
        min_p = _number(request, "min_p", 0.0)
    except (TypeError, ValueError) as exc:
        return Sampling(unsupported=f"unreadable: {exc}"[:200])
    if temperature < GREEDY_BELOW:  # the engine ignores the rest under greedy sampling
        top_p, top_k, min_p = 1.0, 0, 0.0
    return Sampling(
        temperature=temperature,
        top_p=top_p,
        top_k=max(top_k, 0),
        min_p=min_p,
        unsupported=_unsupported(request),
    )


def _number(request: dict[str, Any], name: str, default: float) -> float:
    value = request.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r}")
    return float(value)


def _unsupported(request: dict[str, Any]) -> str | None:
    found = []
    for name, neutral in NEUTRAL.items():
        value = request.get(name)
        if value is not None and value != neutral:
            found.append(name)
    found += [name for name in ALWAYS_UNSUPPORTED if request.get(name)]
    fmt = request.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        found.append("response_format")
    choice = request.get("tool_choice")
    if request.get("tools") and (choice == "required" or isinstance(choice, dict)):
        found.append("tool_choice")
    return ",".join(found) or None
