"""The processed sampling distribution: the learner's rebuild, the recorded parameters, and the
greedy rule. (The rebuild against vLLM itself: tests/integration/test_vllm_engine.py.)"""

from __future__ import annotations

import math

import pytest
import torch

from learner.objective import chunked_logprobs, policy_gradient_loss
from learner.processing import Processing
from learner.samples import build_samples
from ledger.records import Episode, Score, Turn, TurnChoice
from ledger.sampling import Sampling, sampling_of


def reference(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """One row's processed log-probs, written the long way: keep a token when the mass of the
    tokens no more likely than it (itself included) exceeds 1 - top_p."""
    z = logits.double() / s.temperature
    probs = z.softmax(-1)
    keep = probs >= probs.max() * s.min_p
    if s.top_k:
        keep &= z >= z.topk(s.top_k).values[-1]
    z = z.masked_fill(~keep, -math.inf)
    if s.top_p < 1.0:
        p = z.softmax(-1)
        at_most = torch.stack([p[p <= p[v]].sum() for v in range(len(p))])
        keep &= at_most > 1.0 - s.top_p
        z = z.masked_fill(~keep, -math.inf)
    return z.log_softmax(-1)


CASES = [
    Sampling(temperature=0.5, top_p=0.9),
    Sampling(temperature=0.8, top_k=5),
    Sampling(temperature=1.3, min_p=0.05),
    Sampling(temperature=0.7, top_p=0.8, top_k=7, min_p=0.02),
    Sampling(),
]


def test_processing_matches_the_long_way_row_by_row() -> None:
    torch.manual_seed(0)
    logits = torch.randn(len(CASES), 40) * 3
    proc = Processing.of(CASES, torch.device("cpu"))
    assert proc is not None
    ours = proc.apply(logits).log_softmax(-1)
    for i, case in enumerate(CASES):
        ref = reference(logits[i], case)
        assert torch.equal(torch.isinf(ours[i]), torch.isinf(ref)), case
        finite = torch.isfinite(ref)
        assert torch.allclose(ours[i][finite].double(), ref[finite], atol=1e-5), case
    assert torch.isinf(ours[0]).any() and torch.isinf(ours[1]).sum() == 35  # top_p and top_k cut


def test_untouched_sampling_costs_nothing_and_the_raw_log_probs_feed_the_kl() -> None:
    assert Processing.of([Sampling(), Sampling(temperature=1.0, top_p=1.0)], torch.device("cpu")) is None
    torch.manual_seed(1)
    head = torch.nn.Linear(8, 30, bias=False)
    hidden = torch.randn(4, 8, requires_grad=True)
    targets = head(hidden).argmax(-1)  # the most likely token is never cut
    proc = Processing.of([Sampling(temperature=0.5, top_p=0.5)] * 4, torch.device("cpu"))
    out = chunked_logprobs(hidden, targets, head, chunk=3, processing=proc)
    raw = torch.log_softmax(head(hidden), -1).gather(-1, targets[:, None])[:, 0]
    assert torch.allclose(out.raw, raw, atol=1e-6)
    assert (out.logprobs > out.raw).all()  # sharper and truncated: the argmax gains mass
    out.logprobs.sum().backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()


def test_a_token_outside_the_kept_set_has_ratio_zero_and_no_gradient() -> None:
    lp = torch.tensor([-0.1, -math.inf, -0.5], requires_grad=True)
    loss, stats = policy_gradient_loss(
        lp, torch.tensor([-0.1, -2.0, -0.5]), torch.ones(3), clip=2.0, normaliser=3.0
    )
    loss.backward()
    assert torch.isfinite(loss) and lp.grad is not None
    assert lp.grad[1] == 0.0 and lp.grad[0] != 0.0
    assert stats["ratio_min"].item() == 0.0 and stats["ratio_max"].item() == pytest.approx(1.0)


def test_sampling_of_reads_engine_defaults_greedy_and_what_cannot_be_rebuilt() -> None:
    assert sampling_of({}) == Sampling()
    assert sampling_of({}).neutral
    greedy = sampling_of({"temperature": 0, "top_p": 0.5, "top_k": 3})
    assert greedy.greedy and (greedy.top_p, greedy.top_k) == (1.0, 0)  # the engine ignores them
    assert sampling_of({"top_k": -1}).top_k == 0
    penalised = sampling_of({"presence_penalty": 0.5, "logit_bias": {"5": 1}})
    assert penalised.unsupported == "presence_penalty,logit_bias"
    assert sampling_of({"response_format": {"type": "json_object"}}).unsupported == "response_format"
    assert sampling_of({"response_format": {"type": "text"}, "repetition_penalty": 1.0}).unsupported is None
    assert sampling_of({"temperature": "hot"}).unsupported is not None  # recorded, never raised


def _turn(prompt: list[int], completion: list[int], request: dict) -> Turn:
    return Turn(
        episode_id="e1",
        model="m",
        version="base",
        request=request,
        sampling=sampling_of(request),
        prompt_token_ids=prompt,
        choices=[TurnChoice(token_ids=completion, logprobs=[-0.5] * len(completion))],
        tokens_recorded=True,
    )


def test_greedy_and_unrebuildable_turns_are_context_never_loss() -> None:
    score = Score(episode_id="e1", rubric="r", rubric_version="1", total=1.0)
    sampled = _turn([1, 2], [3, 4], {"temperature": 0.5, "top_p": 0.9})
    greedy = _turn([1, 2, 3, 4, 9], [5, 6], {"temperature": 0.0})
    samples, stats = build_samples(score, Episode(episode_id="e1", turns=[sampled, greedy]))
    (s,) = samples
    assert s.loss_mask == [False, False, True, True, False, False, False]
    assert s.sampling is not None and s.sampling[2] == Sampling(temperature=0.5, top_p=0.9)
    assert stats.counts["turns_greedy"] == 1

    only_greedy = Episode(episode_id="e1", turns=[_turn([1], [2], {"temperature": 0})])
    samples, stats = build_samples(score, only_greedy)
    assert samples == [] and stats.counts["no_loss_tokens"] == 1
    penalised = Episode(episode_id="e1", turns=[_turn([1], [2], {"frequency_penalty": 0.3})])
    samples, stats = build_samples(score, penalised)
    assert samples == [] and stats.counts["turns_sampling_unsupported"] == 1
