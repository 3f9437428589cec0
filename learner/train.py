"""The training step, top to bottom: filter stale samples, assign advantages, pack, forward,
policy-gradient loss, backward, AdamW.

Simplifications, stated: samples are packed into micro-batches of at most `micro_batch_tokens`
tokens (no padding; each sample attends to itself only, through the varlen attention of
learner/attention.py), and one step accumulates gradients over all of them; under torchrun
(learner/distributed.py) every rank filters and assigns advantages to the whole batch (cheap,
and it keeps the baselines equal on every rank) and only the forward and backward passes are
split, by shard, with one gradient all-reduce per step; the KL term's base model is the same
weights with the adapter disabled (LoRA) or a frozen copy (full fine-tuning).

The loop over micro-batches never reads a device value on the host: the figures add up in
device tensors and are read once, after the optimizer step. A read (`.item()`, `.tolist()`)
waits for every queued kernel, so on a GPU the host stops queueing the next micro-batch's work.

LoRA on a tiny random model: adapting attention and MLP alone does not learn (the tied
embeddings and final norm dominate a random model's output); adding `lm_head` to
`lora_targets` does. Measured on the built-in tiny model, see tests/integration/test_learner_loop.py.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from prometheus_client import CollectorRegistry

from learner.advantages import Advantages
from learner.attention import check_flash
from learner.config import LearnerConfig
from learner.distributed import World
from learner.memory import release_freed_memory
from learner.metrics import LearnerMetrics
from learner.model_load import auto_dtype, load_causal_lm
from learner.objective import TokenLogProbs, chunked_logprobs, policy_gradient_loss
from learner.packing import MicroBatch, pack
from learner.samples import Sample
from learner.selection import TrainedEpisodes
from learner.stats import StepStats
from ledger.published import BASE_VERSION

log = logging.getLogger(__name__)


class Trainer:
    """The model, its optimizer and the estimator's state; `step(samples)` is one update."""

    def __init__(
        self,
        cfg: LearnerConfig,
        model_dir: str | Path,
        *,
        registry: CollectorRegistry | None = None,
        world: World | None = None,
    ) -> None:
        self.cfg = cfg
        self.model_dir = Path(model_dir)
        self.world = world or World()
        self.device = self.world.device(cfg.device)
        if self.world.leader:  # `learner_phase`, `learner_step`: what rlgw's live view follows
            log.info("learner loading %s", model_dir, extra={"learner_phase": "loading"})
        if self.device.type == "cpu" and cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(cfg.dtype)
        if dtype is None:
            dtype = auto_dtype(self.device, self.model_dir)
        model = load_causal_lm(self.model_dir, dtype)
        model.to(self.device)  # type: ignore[arg-type]  # transformers types .to oddly
        check_flash(self.device, dtype)
        self.reference: Any = None
        if cfg.full_finetune:
            self.model: Any = model
            if cfg.kl_coef > 0 or cfg.max_kl_base > 0 or cfg.max_entropy_rise > 0:
                self.reference = load_causal_lm(self.model_dir, dtype)
                self.reference.to(self.device).eval().requires_grad_(False)
        else:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=cfg.lora_rank,
                lora_alpha=cfg.lora_alpha,
                target_modules=list(cfg.lora_targets),
                lora_dropout=0.0,
                bias="none",
                task_type="CAUSAL_LM",
            )
            with warnings.catch_warnings():
                # lm_head is a LoRA *target* (not tied to an embedding adapter): vLLM serves that
                # exactly, and it is what lets a tiny random model learn (module docstring).
                warnings.filterwarnings("ignore", message=".*ensure_weight_tying.*")
                self.model = get_peft_model(model, lora)
        self.model.train()
        if cfg.activation_checkpointing:
            self.causal_lm.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.world.sync_params(self.params)  # one starting point (a LoRA adapter's init is random)
        self.sharded = cfg.fsdp and self.world.size > 1  # full weights sharded (learner/sharded.py)
        if self.sharded:
            from learner.sharded import shard

            if not cfg.full_finetune:
                raise ValueError("learner.fsdp shards full fine-tuning: set learner.full_finetune")
            shard(self.model, self.world)
            self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.advantages = Advantages(alpha=cfg.baseline_alpha)
        self.trained = TrainedEpisodes()  # episodes trained on, each once (learner/selection.py)
        self.lineage: list[str] = [BASE_VERSION]  # versions this learner produced, base first
        self.steps = 0
        self.metrics = LearnerMetrics(registry)
        if self.world.leader:
            log.info("learner loaded %s on %s", model_dir, self.device, extra={"learner_phase": "ready"})

    def snapshot(self) -> Any:
        """The trainable weights and optimizer state, to go back to when a version is held back
        (None under full fine-tuning: a copy of every weight is too dear; it trains on)."""
        if self.cfg.full_finetune:
            return None
        return [p.detach().clone() for p in self.params], copy.deepcopy(self.optimizer.state_dict())

    def restore(self, snapshot: Any) -> None:
        params, optimizer = snapshot
        with torch.no_grad():
            for p, saved in zip(self.params, params, strict=True):
                p.copy_(saved)
        self.optimizer.load_state_dict(optimizer)

    @property
    def causal_lm(self) -> Any:
        """The transformers model (LoRA layers injected in place when training an adapter)."""
        return self.model if self.cfg.full_finetune else self.model.get_base_model()

    def step(self, samples: Sequence[Sample]) -> StepStats:
        t0 = time.perf_counter()
        self.steps += 1
        stats = StepStats(step=self.steps)

        # 1. staleness: skip samples served more than max_staleness versions ago
        fresh = []
        for s in samples:
            reason = self._stale(s)
            if reason:
                stats.skipped[reason] += 1
            else:
                fresh.append(s)
        if not fresh:
            stats.seconds = time.perf_counter() - t0
            self.metrics.observe_step(stats)
            return stats

        # 2. advantages (running baseline per (rubric, task), groups, batch normalisation)
        self.advantages.assign(fresh)

        # 3. this rank's shard, packed into micro-batches, no padding; the normaliser is the
        #    loss-token count of the whole step, on every rank (token 0 is never predicted)
        n_tokens = sum(sum(s.loss_mask[1:]) for s in fresh)
        mine = self.world.shard(fresh, lambda s: len(s.tokens))
        batches = pack(mine, self.cfg.micro_batch_tokens, self.device)

        # 4. forward, loss, backward per micro-batch; one normaliser for the whole step; the
        #    figures add up on the device (module docstring)
        self.optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(6, dtype=torch.float64, device=self.device)  # loss kl ratio clipped H H_base
        peak = torch.zeros(2, dtype=torch.float64, device=self.device)  # ratio_max, -ratio_min
        for b in batches:
            out = self._logprobs(self.causal_lm, b)  # (N,) each: processed, entropy, raw
            ref = self._reference(b) if self.measures_base else None  # (N,) raw log-probs, entropy
            loss, part = policy_gradient_loss(
                out.logprobs,
                b.behaviour,
                b.advantages,
                clip=self.cfg.clip,
                normaliser=float(n_tokens),
                ref_logprobs=None if ref is None else ref.raw,
                kl_coef=self.cfg.kl_coef,
                raw_logprobs=out.raw,
            )
            loss.backward()
            base_entropy = out.entropy.new_zeros(()) if ref is None else ref.entropy.sum()
            figures = [part["loss"], part["kl"], part["ratio_sum"], part["clipped"], out.entropy.sum()]
            sums += torch.stack([*figures, base_entropy]).double()
            peak = torch.maximum(peak, torch.stack([part["ratio_max"], -part["ratio_min"]]).double())

        # 5. sum gradients and figures over the ranks (no-ops in one process), clip and apply
        self.world.all_reduce_grads(self.params)
        self.world.all_reduce(sums)
        self.world.all_reduce(peak, "max")  # the max of -ratio_min is minus the min
        grad_norm = torch.zeros(1, dtype=torch.float64, device=self.device)
        if self.cfg.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
            grad_norm += norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # DTensor when sharded
        self.optimizer.step()

        # 6. log and export: the step's one read of device values
        loss_sum, kl, ratio_sum, clipped, entropy_sum, base_sum, ratio_max, neg_ratio_min, norm = torch.cat(
            [sums, peak, grad_norm]
        ).tolist()
        stats.samples = len(fresh)
        stats.tokens = n_tokens
        stats.loss = loss_sum
        stats.kl_base = kl if self.measures_base else None
        stats.entropy_base = base_sum / n_tokens if self.measures_base else None
        stats.reward_mean = sum(s.reward for s in fresh) / len(fresh)
        stats.entropy = entropy_sum / n_tokens
        stats.ratio_mean = ratio_sum / n_tokens
        stats.ratio_max = ratio_max
        stats.ratio_min = -neg_ratio_min
        stats.clipped_frac = clipped / n_tokens
        stats.grad_norm = norm
        stats.seconds = time.perf_counter() - t0
        stats.tokens_per_s = n_tokens / stats.seconds
        if self.world.leader:
            log.info("learner %s", stats.line(), extra={"learner_step": stats})
        self.metrics.observe_step(stats)
        if self.device.type == "cpu":
            release_freed_memory()
        return stats

    def _stale(self, sample: Sample) -> str | None:
        ages = []
        for v in sample.versions:
            if v not in self.lineage:
                return "unknown_version"
            ages.append(len(self.lineage) - 1 - self.lineage.index(v))
        return "stale" if max(ages) > self.cfg.max_staleness else None

    def _logprobs(self, causal_lm: Any, b: MicroBatch, *, processed: bool = True) -> TokenLogProbs:
        """`causal_lm`'s log-probs of the micro-batch's loss tokens (under each token's sampling
        distribution, and raw) and its entropy there, (N,) each."""
        body = getattr(causal_lm, "fsdp_body", causal_lm.model)  # FSDP2 gathers the root's weights
        hidden = body(
            input_ids=b.input_ids, position_ids=b.position_ids, use_cache=False, **b.attention_kwargs
        ).last_hidden_state[0]  # (T, H)
        # full-vocabulary logits are recomputed in the backward only when keeping them would be
        # dear (learner/objective.py): a live step of ~1k loss tokens keeps them
        logits_bytes = b.targets.numel() * causal_lm.config.vocab_size * 4
        return chunked_logprobs(
            hidden[b.predict_at],
            b.targets,
            causal_lm.lm_head,
            self.cfg.logprob_chunk,
            recompute=logits_bytes > self.cfg.keep_logits_mb << 20,
            processing=b.processing if processed else None,
        )

    @property
    def measures_base(self) -> bool:
        """The base model's log-probs are computed each step: for the KL term, or for the
        figures the version guard reads (learner/stats.py)."""
        c = self.cfg
        return c.kl_coef > 0 or c.max_kl_base > 0 or c.max_entropy_rise > 0

    @torch.no_grad()
    def _reference(self, b: MicroBatch) -> TokenLogProbs:
        """The base model's raw log-probs and entropy at the micro-batch's loss tokens."""
        if self.reference is not None:
            return self._logprobs(self.reference, b, processed=False)
        with self.model.disable_adapter():
            return self._logprobs(self.causal_lm, b, processed=False)
