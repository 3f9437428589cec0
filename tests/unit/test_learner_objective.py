"""The objective on hand-computed tensors, chunked log-probs, and packing."""

from __future__ import annotations

import math

import pytest
import torch

from learner.objective import chunked_logprobs, policy_gradient_loss
from learner.packing import pack
from learner.samples import Sample


def test_truncated_policy_gradient_matches_the_hand_computation() -> None:
    logps = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    behaviour = torch.tensor([-1.0, -2.5, -0.1])
    adv = torch.tensor([1.0, 1.0, -2.0])
    loss, stats = policy_gradient_loss(logps, behaviour, adv, clip=1.2, normaliser=3.0)
    # ratios 1, e^0.5 = 1.6487 (truncated to 1.2), e^-0.4 = 0.6703
    w = [1.0, 1.2, math.exp(-0.4)]
    expected = -(w[0] * 1 * -1.0 + w[1] * 1 * -2.0 + w[2] * -2.0 * -0.5) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert logps.grad is not None
    assert logps.grad.tolist() == pytest.approx([-w[0] / 3, -w[1] / 3, 2 * w[2] / 3], abs=1e-6)
    assert all(v.device == logps.device and v.dim() == 0 for v in stats.values())  # not read on the host
    assert stats["clipped"].item() == 1
    assert stats["ratio_max"].item() == pytest.approx(math.exp(0.5), abs=1e-6)
    assert (stats["ratio_sum"] / stats["tokens"]).item() == pytest.approx(
        sum([1.0, math.exp(0.5), math.exp(-0.4)]) / 3
    )


def test_kl_term_is_the_k3_estimator() -> None:
    logps = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    ref = torch.tensor([-1.0, -1.0, -1.0])
    zero = torch.zeros(3)
    loss, stats = policy_gradient_loss(
        logps, logps.detach(), zero, clip=2.0, normaliser=3.0, ref_logprobs=ref, kl_coef=0.1
    )
    d = [0.0, 1.0, -0.5]
    k3 = [math.exp(x) - x - 1 for x in d]
    assert stats["kl"].item() == pytest.approx(sum(k3) / 3, abs=1e-6)
    assert loss.item() == pytest.approx(0.1 * sum(k3) / 3, abs=1e-6)
    loss.backward()
    assert logps.grad is not None
    assert logps.grad.tolist() == pytest.approx([0.1 * (1 - math.exp(x)) / 3 for x in d], abs=1e-6)


@pytest.mark.parametrize("recompute", [True, False])
def test_chunked_logprobs_equal_the_full_softmax_with_gradients(recompute: bool) -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(7, 8, requires_grad=True)
    targets = torch.randint(0, 50, (7,))

    lp, ent, raw = chunked_logprobs(hidden, targets, head, chunk=3, recompute=recompute)
    assert raw is lp  # nothing processed: one tensor
    lp.sum().backward()
    grad_chunked = hidden.grad.clone()  # type: ignore[union-attr]
    hidden.grad = None

    full = torch.log_softmax(head(hidden), -1)  # (7, 50)
    ref = full.gather(-1, targets[:, None])[:, 0]
    ref.sum().backward()
    assert torch.allclose(lp, ref, atol=1e-6)
    assert torch.allclose(grad_chunked, hidden.grad, atol=1e-6)  # type: ignore[arg-type]
    assert torch.allclose(ent, -(full.exp() * full).sum(-1).detach(), atol=1e-5)
    assert not ent.requires_grad


def test_pack_predicts_each_loss_token_from_the_previous_position() -> None:
    a = Sample([1, 2, 3], [False, False, True], [0, 0, -0.3], 1.0, "r", "t", "e", ["base"], advantage=2.0)
    b = Sample([4, 5], [False, True], [0, -0.7], 0.0, "r", "t", "e", ["base"], advantage=-1.0)
    (mb,) = pack([a, b], max_tokens=16, device=torch.device("cpu"))
    assert mb.input_ids.tolist() == [[1, 2, 3, 4, 5]]
    assert mb.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert mb.predict_at.tolist() == [1, 3]
    assert mb.targets.tolist() == [3, 5]
    assert mb.behaviour.tolist() == pytest.approx([-0.3, -0.7])
    assert mb.advantages.tolist() == [2.0, -1.0]
    # the boundaries the varlen attention reads: a is tokens 0..2, b is 3..4 (flash wants int32)
    assert mb.cu_seqlens.tolist() == [0, 3, 5] and mb.cu_seqlens.dtype == torch.int32
    assert mb.max_len == 3
    assert mb.attention_kwargs["cu_seq_lens_q"] is mb.cu_seqlens
    alone = pack([a, b], max_tokens=4, device=torch.device("cpu"))
    assert [m.cu_seqlens.tolist() for m in alone] == [[0, 3], [0, 2]]
    assert [m.max_len for m in alone] == [3, 2]
