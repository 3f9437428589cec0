"""Varlen attention on the CPU (its exact fallback): a packed row gives every sample the log-probs
and the gradients it gets alone. The CUDA kernel is checked by benchmarks/gpu_check.py."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, Qwen3Config

from learner.attention import VARLEN, register
from learner.objective import chunked_logprobs
from learner.packing import pack
from learner.samples import Sample

LENGTHS = (5, 1, 12, 8)  # several samples of different lengths, one of a single token


def small_model(family: str):  # -> PreTrainedModel
    """Grouped-query attention (4 query heads, 2 key/value heads); a wide init, so that what a
    token attends to changes its output clearly (a default 0.02 init barely mixes tokens)."""
    shape: dict[str, Any] = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=64,
        initializer_range=0.2,
    )
    config: PretrainedConfig = LlamaConfig(**shape) if family == "llama" else Qwen3Config(**shape)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation=register(), dtype=torch.float32)


def samples() -> list[Sample]:
    g = torch.Generator().manual_seed(1)
    out = []
    for n in LENGTHS:
        tokens = torch.randint(0, 97, (n,), generator=g).tolist()
        out.append(Sample(tokens, [False] + [True] * (n - 1), [0.0] * n, 1.0, "r", "t", "e", ["base"]))
    return out


def grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_a_packed_row_gives_each_sample_what_it_gets_alone(family: str) -> None:
    model = small_model(family)
    assert model.config._attn_implementation == VARLEN
    (mb,) = pack(samples(), max_tokens=64, device=torch.device("cpu"))
    weights = torch.randn(len(mb.targets), generator=torch.Generator().manual_seed(2))  # (N,)

    # packed: one row, the boundaries as keyword arguments, log-probs in chunks over the LM head
    hidden = model.model(input_ids=mb.input_ids, position_ids=mb.position_ids, **mb.attention_kwargs)
    out = chunked_logprobs(hidden.last_hidden_state[0][mb.predict_at], mb.targets, model.lm_head, 7)
    packed = out.logprobs
    (packed * weights).sum().backward()
    packed_grads = grads(model)

    # alone: each sample through the whole model on its own (plain causal SDPA), full softmax
    alone = []
    for s in samples():
        logits = model(torch.tensor([s.tokens])).logits[0, :-1]  # (n-1, V)
        alone.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(s.tokens[1:])[:, None])[:, 0])
    reference = torch.cat(alone)  # (N,) in packing's order: sample by sample, position by position
    (reference * weights).sum().backward()
    reference_grads = grads(model)

    assert torch.allclose(packed, reference, atol=1e-5), (packed - reference).abs().max()
    assert packed_grads.keys() == reference_grads.keys()
    scale = max(g.abs().max().item() for g in reference_grads.values())
    for name, g in reference_grads.items():
        assert torch.allclose(packed_grads[name], g, atol=1e-5 * scale), name

    # the boundaries matter: the same row as one causal sequence gives other log-probs
    plain = model.model(input_ids=mb.input_ids, position_ids=mb.position_ids).last_hidden_state[0]
    with torch.no_grad():
        leaky = chunked_logprobs(plain[mb.predict_at], mb.targets, model.lm_head).logprobs
    assert (leaky - reference).abs().max() > 1e-2


def test_boundaries_must_cover_the_row() -> None:
    model = small_model("llama")
    (mb,) = pack(samples(), max_tokens=64, device=torch.device("cpu"))
    short = {**mb.attention_kwargs, "cu_seq_lens_q": mb.cu_seqlens[:-1]}
    with pytest.raises(ValueError, match="do not cover"):
        model.model(input_ids=mb.input_ids, position_ids=mb.position_ids, **short)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.py)")
def test_varlen_attn_passes_the_learners_own_probe_on_cuda() -> None:
    from learner.attention import check_flash

    assert check_flash(torch.device("cuda"), torch.bfloat16)


def test_the_probe_leaves_cpu_on_sdpa_per_sample() -> None:
    from learner.attention import check_flash, uses_flash

    assert not check_flash(torch.device("cpu"), torch.bfloat16)
    assert not uses_flash(torch.device("cpu"), torch.bfloat16)
