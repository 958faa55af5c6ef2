"""Train StellarByte-mini from scratch on CPU: data, tokenizer, model, evaluation, model card.

One deterministic function (``run``) so the Django command and ``python -m inference.training``
behave the same. The artifacts are first written to a staging folder in the scratch directory
and only then moved into ``out``, so an interrupted run never leaves a half-written model in
the place the app loads it from.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.generation import GenerationConfig
from transformers.utils import logging as hf_logging

from inference.training import card, data
from inference.training import tokenizer as tok_mod
from inference.training.evaluate import Reply, Report, evaluate

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "inference" / "bundled" / "stellarbyte-mini"
DEFAULT_SCRATCH = REPO_ROOT / "train-scratch"
ARTIFACTS = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "README.md",
)
IGNORE = -100


@dataclass(frozen=True)
class TrainConfig:
    """Defaults are the shipped model: about 25 minutes on 2 CPU cores."""

    seed: int = 1234
    dialogues: int = 90_000
    vocab_size: int = 4096
    hidden_size: int = 256
    layers: int = 6
    heads: int = 8
    kv_heads: int = 4
    intermediate_size: int = 768
    max_len: int = 512
    batch_tokens: int = 6144
    steps: int = 1000
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    log_every: int = 25
    threads: int = 2
    eval_samples: int = 3
    quick: bool = False

    @classmethod
    def quick_run(cls, **overrides: Any) -> TrainConfig:
        """A minute or two: proves the pipeline end to end, not a usable model."""
        small = cls(
            dialogues=4000,
            vocab_size=1024,
            hidden_size=96,
            layers=2,
            heads=4,
            kv_heads=2,
            intermediate_size=256,
            batch_tokens=2048,
            steps=200,
            lr=3e-3,
            warmup=20,
            log_every=20,
            eval_samples=1,
            quick=True,
        )
        return replace(small, **overrides)


def set_determinism(seed: int, threads: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    # The BPE trainer parallelises with rayon; one thread keeps merges independent of timing.
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def model_config(cfg: TrainConfig, tokenizer: Any) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_dropout=0.0,
    )


def batches(
    examples: Sequence[tuple[list[int], list[int]]], batch_tokens: int, rng: random.Random
) -> Iterator[list[tuple[list[int], list[int]]]]:
    """Endless length-bucketed batches of at most ``batch_tokens`` (padding included).

    Sorting within shuffled windows keeps padding low while the order stays random.
    """
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        chunks: list[list[tuple[list[int], list[int]]]] = []
        window = 2000
        for w in range(0, len(order), window):
            part = sorted((examples[i] for i in order[w : w + window]), key=lambda e: len(e[0]))
            batch: list[tuple[list[int], list[int]]] = []
            longest = 0
            for ex in part:
                n = len(ex[0])
                if batch and max(longest, n) * (len(batch) + 1) > batch_tokens:
                    chunks.append(batch)
                    batch, longest = [], 0
                batch.append(ex)
                longest = max(longest, n)
            if batch:
                chunks.append(batch)
        rng.shuffle(chunks)
        yield from chunks


def collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, lab) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(lab)] = torch.tensor(lab)
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def hardware() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads (CPU only, torch {torch.__version__})"


@dataclass
class Outcome:
    config: TrainConfig
    parameters: int
    size_bytes: int
    train_seconds: float
    total_seconds: float
    final_loss: float
    tokens_seen: int
    examples: int
    report: Report
    out: Path


def run(
    cfg: TrainConfig,
    *,
    out: Path = DEFAULT_OUT,
    scratch: Path = DEFAULT_SCRATCH,
    log: Callable[[str], None] = print,
) -> Outcome:
    started = time.monotonic()
    set_determinism(cfg.seed, cfg.threads)
    hf_logging.disable_progress_bar()  # our own progress lines are the ones that matter
    scratch.mkdir(parents=True, exist_ok=True)

    log(f"generating {cfg.dialogues:,} dialogues (seed {cfg.seed})")
    dialogues = data.make_dialogues(cfg.dialogues, cfg.seed)
    data.unseen_check(dialogues)
    training_replies = {t["content"] for d in dialogues for t in d if t["role"] == "assistant"}

    log(f"training a {cfg.vocab_size}-token byte-level BPE tokenizer")
    texts = (f"{t['role']}\n{t['content']}" for d in dialogues for t in d)
    tokenizer = tok_mod.train_tokenizer(texts, cfg.vocab_size)
    tok_mod.check_alignment(tokenizer, dialogues[:500])

    examples: list[tuple[list[int], list[int]]] = []
    for turns in dialogues:
        ids, mask = tok_mod.encode_dialogue(tokenizer, turns)
        if len(ids) <= cfg.max_len:
            examples.append((ids, [i if m else IGNORE for i, m in zip(ids, mask, strict=True)]))
    total_tokens = sum(len(ids) for ids, _ in examples)
    log(
        f"{len(examples):,} examples, {total_tokens:,} tokens "
        f"({total_tokens / len(examples):.0f} per dialogue)"
    )

    torch.manual_seed(cfg.seed)
    config = model_config(cfg, tokenizer)
    model = LlamaForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())
    log(
        f"model: LlamaForCausalLM, {parameters / 1e6:.2f} M parameters "
        f"({cfg.layers} layers, hidden {cfg.hidden_size}, vocab {len(tokenizer)})"
    )

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    stream = batches(examples, cfg.batch_tokens, random.Random(cfg.seed))

    model.train()
    train_started = time.monotonic()
    window_loss, window_steps, window_tokens = 0.0, 0, 0
    window_started = train_started
    tokens_seen = 0
    recent: list[float] = []
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = collate(next(stream), tokenizer.pad_token_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        value = loss.item()
        real = int(batch["attention_mask"].sum())
        window_loss += value
        window_steps += 1
        window_tokens += real
        tokens_seen += real
        recent = (recent + [value])[-50:]
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            now = time.monotonic()
            elapsed = now - train_started
            eta = elapsed / (step + 1) * (cfg.steps - step - 1)
            log(
                f"step {step + 1:>5}/{cfg.steps} | loss {window_loss / window_steps:.4f} | "
                f"lr {lr_at(step, cfg):.2e} | {window_tokens / (now - window_started):,.0f} tok/s"
                f" | elapsed {_duration(elapsed)} | ETA {_duration(eta)}"
            )
            window_loss, window_steps, window_tokens = 0.0, 0, 0
            window_started = now
    train_seconds = time.monotonic() - train_started
    final_loss = sum(recent) / len(recent)
    log(
        f"training done in {_duration(train_seconds)}, final loss {final_loss:.4f} "
        f"(mean of the last {len(recent)} steps)"
    )

    stage = scratch / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    save(model, tokenizer, stage)

    # Evaluate what users get: the saved files, loaded the plain way.
    loaded = AutoModelForCausalLM.from_pretrained(stage)
    loaded_tok = AutoTokenizer.from_pretrained(stage)
    log("evaluating on held-out prompts")
    report = evaluate(
        loaded, loaded_tok, samples=cfg.eval_samples, training_replies=training_replies, log=log
    )
    for line in report.lines():
        log(line)

    outcome = Outcome(
        config=cfg,
        parameters=parameters,
        size_bytes=0,
        train_seconds=train_seconds,
        total_seconds=time.monotonic() - started,
        final_loss=final_loss,
        tokens_seen=tokens_seen,
        examples=len(examples),
        report=report,
        out=out,
    )
    card_path = stage / "README.md"
    card_path.write_text(card.render(outcome, hardware(), size_bytes=0))
    size = sum(f.stat().st_size for f in stage.iterdir() if f.is_file())
    # The card states the folder size, so render it once more with the final number.
    card_path.write_text(card.render(outcome, hardware(), size_bytes=size))
    outcome.size_bytes = sum(f.stat().st_size for f in stage.iterdir() if f.is_file())

    (scratch / "eval.json").write_text(
        json.dumps(
            {
                "summary": report.summary(),
                "config": asdict(cfg),
                "replies": [asdict(r) for r in report.replies],
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    (scratch / "outcome.json").write_text(
        json.dumps(
            {k: v for k, v in asdict(outcome).items() if k != "report"}
            | {"report": report.summary(), "hardware": hardware()},
            indent=2,
            default=str,
        )
    )
    publish(stage, out)
    log(f"wrote {out} ({outcome.size_bytes / 1e6:.1f} MB) in {_duration(outcome.total_seconds)}")
    return outcome


def rerender_card(*, out: Path = DEFAULT_OUT, scratch: Path = DEFAULT_SCRATCH) -> Path:
    """Rewrite ``out/README.md`` from the last run's saved results, after editing ``card.py``.

    Only the wording changes: every number still comes from the run that made the weights.
    """
    saved = json.loads((scratch / "outcome.json").read_text())
    replies = json.loads((scratch / "eval.json").read_text())["replies"]
    summary = saved.pop("report")
    summary["relevance_by_round"] = {
        int(k): tuple(v) for k, v in summary.get("relevance_by_round", {}).items()
    }
    outcome = Outcome(
        **{k: v for k, v in saved.items() if k not in ("config", "out", "hardware")},
        config=TrainConfig(**saved["config"]),
        out=out,
        report=Report(**summary, replies=[Reply(**r) for r in replies]),
    )
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file() and f.name != "README.md")
    text = card.render(outcome, saved.get("hardware") or hardware(), size_bytes=size)
    # The card's own size is part of the folder's size.
    size += len(text.encode())
    text = card.render(outcome, saved.get("hardware") or hardware(), size_bytes=size)
    (out / "README.md").write_text(text)
    return out / "README.md"


def save(model: LlamaForCausalLM, tokenizer: Any, folder: Path) -> None:
    """float16 weights keep the folder small; config.json says float32, so a plain
    ``from_pretrained`` (dtype "auto") upcasts on load and CPU inference runs in float32."""
    folder.mkdir(parents=True)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=0.7,
        top_p=0.95,
        max_new_tokens=256,
    )
    model.to(torch.float16).save_pretrained(folder)
    model.to(torch.float32)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(folder)


def publish(stage: Path, out: Path) -> None:
    """Replace the artifacts in ``out`` with the staged ones (other files are left alone)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACTS:
        (out / name).unlink(missing_ok=True)
    for f in stage.iterdir():
        shutil.copyfile(f, out / f.name)
        (out / f.name).chmod(0o644)
