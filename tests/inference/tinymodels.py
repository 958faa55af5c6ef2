"""Tiny causal LMs built from configs (random weights) with a byte-level tokenizer trained here:
real transformers code paths, no downloads, seconds to build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Hello there! How are you today? I am fine, thank you.",
    "StellarChat streams answers token by token over a WebSocket.",
    "你好，世界！今天天气很好。我们一起学习中文。",
    "こんにちは世界。カタカナとひらがな。",
    "Emoji: 🌟🚀✨🙂👩‍🚀 and café, naïve, Ångström, Привет мир.",
    "def add(a, b):\n    return a + b\n",
] * 20


def byte_level_tokenizer(folder: Path, *, chat_template: str | None = CHATML) -> Any:
    """A GPT-2-style byte-level BPE (any text round-trips) saved as a HF tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>" if chat_template else "<|endoftext|>",
        bos_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"] if chat_template else [],
    )
    if chat_template:
        fast.chat_template = chat_template
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return fast


def build(folder: Path, arch: str, *, context: int = 256, seed: int = 0) -> Path:
    """Save a tiny ``arch`` ("llama", "qwen2", "gpt2") model + tokenizer in ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    tokenizer = byte_level_tokenizer(folder, chat_template=None if arch == "gpt2" else CHATML)
    vocab = len(tokenizer)
    eos = tokenizer.eos_token_id
    common: dict[str, Any] = {"vocab_size": vocab, "eos_token_id": eos, "bos_token_id": eos}
    if arch == "llama":
        config: Any = LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=context,
            **common,
        )
    elif arch == "qwen2":
        config = Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=context,
            **common,
        )
    elif arch == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=context, **common)
    else:  # pragma: no cover
        raise ValueError(arch)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = eos
    model.save_pretrained(folder)
    return folder


def teach(folder: Path, text: str, *, steps: int = 150) -> None:
    """Overfit the model in ``folder`` on one reply so greedy decoding reproduces ``text``.

    Random weights rarely emit whole CJK characters or emoji; a model that has memorized a
    reply full of them exercises the multi-byte paths of streaming for real.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    turns = [{"role": "user", "content": "sing"}]
    prompt = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt + text + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    batch = torch.tensor([ids])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(folder)
