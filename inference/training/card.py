"""The model card (README.md of the bundled folder), written by the training run itself so
every number in it comes from the run that produced the weights next to it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inference.training import intents

if TYPE_CHECKING:
    from inference.training.train import Outcome

SAMPLE_PROMPTS = (
    "who exactly am I chatting with?",
    "how do I open a brand new conversation?",
    "how would I go about running a more capable model?",
    "could you multiply 48 by 17 for me?",
    "what's the capital city of Japan",
    "tell me something that will make me laugh",
    "I really like painting",
)


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines()) or ">"


def render(outcome: Outcome, hardware: str, *, size_bytes: int) -> str:
    cfg = outcome.config
    r = outcome.report
    command = "python manage.py train_demo_model" + (" --quick" if cfg.quick else "")
    if cfg.seed != 1234:
        command += f" --seed {cfg.seed}"
    greedy = {x.prompt: x for x in r.replies if x.mode == "greedy"}
    samples = "\n\n".join(
        f"**User:** {p}\n\n{_quote(greedy[p].text)}" for p in SAMPLE_PROMPTS if p in greedy
    )
    varied = [x for x in r.replies if x.prompt == SAMPLE_PROMPTS[5] and x.mode != "greedy"]
    varied_text = "\n\n".join(f"*{x.mode}:*\n\n{_quote(x.text)}" for x in varied)
    by_round = "\n".join(
        f"| {k} | {n} | {g:.0%} | {sm:.0%} |"
        for k, (n, g, sm) in sorted(r.relevance_by_round.items())
    )
    intent_names = sorted({i.name.replace("_", " ") for i in intents.INTENTS})
    warning = (
        "\n> **This folder holds a `--quick` smoke-test model, not the real one.** "
        "Run `python manage.py train_demo_model` to train the shipped model.\n"
        if cfg.quick
        else ""
    )
    return f"""---
license: mit
language:
- en
- zh
library_name: transformers
pipeline_tag: text-generation
tags:
- llama
- chatml
- tiny
- stellarchat
---

# StellarByte-mini
{warning}
StellarByte-mini is the small chat model that ships inside the StellarChat repository, so a
fresh clone can chat right away, offline, on any CPU. It is a {outcome.parameters / 1e6:.1f} M
parameter Llama-architecture model trained from scratch by the project, on conversations the
project wrote itself. It is a *demo*: friendly, honest about its limits, and good at
explaining StellarChat. For real questions, switch to a bigger model (see below).

## At a glance

| | |
|---|---|
| Architecture | `LlamaForCausalLM` (plain transformers, no custom code) |
| Parameters | {outcome.parameters:,} ({cfg.layers} layers, hidden size {cfg.hidden_size}, \
{cfg.heads} attention heads / {cfg.kv_heads} key-value heads, MLP {cfg.intermediate_size}, \
tied embeddings) |
| Vocabulary | {cfg.vocab_size} tokens, byte-level BPE trained on the training data |
| Context | 2048 positions (RoPE); trained on conversations of up to {cfg.max_len} tokens |
| Size on disk | {size_bytes / 1e6:.1f} MB for this whole folder (weights stored as float16) |
| Training time | {outcome.train_seconds / 60:.1f} min of training, \
{outcome.total_seconds / 60:.1f} min for the whole command |
| Hardware | {hardware} |
| Final training loss | {outcome.final_loss:.3f} (mean of the last 50 steps, assistant tokens \
only) |
| Tokens seen | {outcome.tokens_seen:,} over {cfg.steps} steps |
| Reproduce | `{command}` (seed {cfg.seed}) |

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

folder = "inference/bundled/stellarbyte-mini"
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)  # float32 on CPU

messages = [{{"role": "user", "content": "How do I start a new chat?"}}]
inputs = tokenizer.apply_chat_template(
    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
)
output = model.generate(**inputs, max_new_tokens=200)  # samples: temperature 0.7, top_p 0.95
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

The weights are stored as float16 to keep the repository small; `config.json` sets
`"dtype": "float32"`, so a plain `from_pretrained` upcasts them on load (pass `dtype=...` to
choose otherwise). `generation_config.json` stops at `<|im_end|>` and samples with the
app's defaults (temperature 0.7, top_p 0.95).

## Chat format

ChatML, the format Qwen and SmolLM use, so StellarChat treats every model the same way:

```text
<|im_start|>system
You are a helpful assistant.<|im_end|>
<|im_start|>user
Hi!<|im_end|>
<|im_start|>assistant
Hello! How can I help you today?<|im_end|>
```

The system turn is optional. `<|im_end|>` is the end-of-sequence token; `<|pad|>` pads. The
template (`chat_template.jinja`) supports `add_generation_prompt`. The tokenizer is byte-level,
so any text, Chinese and emoji included, round-trips exactly through encode and decode.

## Training data

All training data is generated by the repository itself from hand-written material in
`inference/training/intents.py` (phrasings, replies, small fact tables) and
`inference/training/data.py` (how they are combined). **Source: our own writing. Licence: MIT,
the same as StellarChat.** No external dataset, no other model's outputs.

- {cfg.dialogues:,} conversations for seed {cfg.seed}, {outcome.examples:,} of them within
  {cfg.max_len} tokens: single questions, chains of up to five exchanges, and follow-ups that need
  the earlier context ("tell me another", "and Spain?", "what's my name?"). About one in five
  starts with a system prompt.
- {len(intent_names)} kinds of request ({len(intents.INTENTS)} intents counting each fact and
  favourite separately), each with many user phrasings and several complete replies:
  {", ".join(intent_names)}.
- User messages get light, realistic noise: openers ("hey, quick question:"), lower case,
  missing punctuation, emoji, the odd typo.
- Every assistant reply is a complete, grammatical answer followed by `<|im_end|>`, which
  teaches the model to stop by itself. The loss is computed on assistant turns only.

## Training procedure

Byte-level BPE tokenizer trained with `tokenizers` on the generated text. AdamW (betas 0.9,
0.95, weight decay {cfg.weight_decay}), peak learning rate {cfg.lr}, {cfg.warmup} warm-up steps
then cosine decay to {cfg.min_lr_ratio:.0%} of the peak, gradient clipping at 1.0, batches of
up to {cfg.batch_tokens} tokens bucketed by length, float32 on {cfg.threads} CPU threads.
Deterministic for a given seed on the same machine and library versions.

## Evaluation

{r.prompts} held-out prompts that a new user tries first, written apart from the training
phrasings; the training run checks that none of them occurs in the training data. Each gets
one greedy reply and {r.samples_per_prompt} sampled replies (temperature 0.7, top_p 0.95),
at most {r.max_new_tokens} new tokens.

| Metric | Greedy | Sampled |
|---|---|---|
| Ends by itself (emits the end token) within {r.max_new_tokens} tokens | \
{r.greedy_eos_rate:.0%} | {r.sampled_eos_rate:.0%} |
| Relevant (expected keywords, e.g. "Tokyo", "New chat", "STELLARCHAT_MODEL") | \
{r.greedy_relevance:.0%} | {r.sampled_relevance:.0%} |
| Distinct replies | {r.greedy_distinct_ratio:.0%} across prompts | \
{r.sampled_distinct_ratio:.0%} within a prompt's samples |

Relevance by round of held-out prompts. Rounds 1 and 2 were read while the training data was
being developed (the data was broadened in general ways after seeing their failures, never by
adding their wording), so they flatter the model. Round 3 was written before the final data
change and not looked at until this run: it is the honest number for new phrasings.

| Round | Prompts | Greedy relevant | Sampled relevant |
|---|---|---|---|
{by_round}

{r.verbatim_rate:.0%} of the greedy replies are word for word one of the hand-written training
replies (the rest recombine them); mean reply length {r.mean_reply_tokens:.0f} tokens.

### Sample replies (greedy, held-out prompts)

{samples}

### The same prompt, sampled

**User:** {SAMPLE_PROMPTS[5]}

{varied_text}

## Limits

- It knows only what its training conversations contain: greetings and small talk, how
  StellarChat works, a few dozen simple facts and capitals, jokes and fun facts. Outside that
  it says it is a small demo model, or it may confidently pick a wrong answer.
- It does not do math, code, translation, current events or long writing, and says so.
- It often gets a name you tell it wrong: it has not learned to copy unfamiliar words
  reliably. With greedy decoding it may repeat a joke when asked for another one.
- English only, plus a few Chinese greetings.
- System prompts are accepted but barely followed.
- Its descriptions of the StellarChat interface are frozen at training time: retrain after
  the interface changes.
- It is not meant for any decision that matters.

## Switching to a bigger model

StellarChat loads the model named by the `STELLARCHAT_MODEL` environment variable; without it,
it loads this folder.

```bash
STELLARCHAT_MODEL={intents.BIG_MODEL_A} python manage.py runserver   # small, fast
STELLARCHAT_MODEL={intents.BIG_MODEL_B} python manage.py runserver   # noticeably smarter
STELLARCHAT_MODEL=/path/to/a/local/model/folder python manage.py runserver
```

A Hugging Face id is downloaded once on first start and runs locally afterwards; a local
folder needs no network at all. Any chat model with a chat template works.

## Retraining

```bash
python manage.py train_demo_model            # the shipped model, about half an hour on 2 cores
python manage.py train_demo_model --quick    # one-minute smoke test into train-scratch/quick
python manage.py train_demo_model --seed 7 --out /tmp/my-model
python -m inference.training --help          # the same, without Django
```

Progress (step, loss, tokens per second, ETA) is printed as it trains; the held-out
evaluation runs at the end and this card is rewritten with the new numbers.
"""
