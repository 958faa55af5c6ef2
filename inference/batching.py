"""Batched decoding: replies generating at the same time share the model's decode steps.

One ``Scheduler`` per loaded model runs on the process's inference thread. Between two decode
steps, new requests join (each prefilled alone, its KV cache left-padded into the batch) and
finished, stopped or failed ones leave (their rows dropped, common padding trimmed). Every
request keeps its own sampler (temperature, top-k/p, seed), stop strings, token budget and
cancel signal; one failing request never ends the others.

Why our own scheduler rather than transformers' ``generate_batch`` / continuous batching:
measured on this project's CPU machine (PITFALLS.md), ``transformers serve`` with continuous
batching reached 1.8x one stream with 16 streams, a padded batch ~9x. A left-padded dynamic
cache keeps the model's own attention kernels and needs no paged-attention support, so it works
for every causal LM whose cache is a plain ``DynamicCache``; other caches (sliding windows, …)
still go through here, one request at a time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from inference.backends.base import BackendError, Result, StreamItem, Turn, validate_turns
from inference.options import GenerationOptions
from inference.prompt import build_prompt
from inference.text import TextAssembler

logger = logging.getLogger(__name__)

Emit = Callable[[StreamItem], None]


@dataclass
class Request:
    turns: Sequence[Turn]
    options: GenerationOptions
    cancel: threading.Event
    emit: Emit  # called on the inference thread with each delta, then the Result
    started: float = field(default_factory=time.monotonic)
    on_start: Callable[[], None] | None = None  # called when it leaves the queue


class Sampler:
    """A request's sampling state: greedy at temperature 0, else its own seeded generator
    (the warping is done for the whole batch in ``sample_probs``)."""

    def __init__(self, options: GenerationOptions, *, device: Any) -> None:
        import torch

        self.greedy = options.greedy
        seed = options.seed if options.seed is not None else int.from_bytes(os.urandom(7), "big")
        where = "cpu" if getattr(device, "type", str(device)) == "mps" else device  # no MPS ones
        self.generator = torch.Generator(device=where).manual_seed(seed)


class _Seq:
    """One request in the batch: its sampler, text assembly, counters and ending."""

    def __init__(self, req: Request, loaded: Any, prompt_ids: list[int]) -> None:
        self.req = req
        self.loaded = loaded
        self.sampler = Sampler(req.options, device=loaded.device)
        self.text = TextAssembler(loaded.tokenizer, stop=req.options.stop)
        self.prompt_tokens = len(prompt_ids)
        # Real tokens so far (prompt + picked); the last picked one enters the cache at the
        # next step, so the cache holds length - 1 of them, after its row's left padding.
        self.length = len(prompt_ids)
        self.completion = 0
        self.ttft_ms: float | None = None
        self.last: int | None = None
        self.done = False

    def result(self, reason: Any, **extra: Any) -> Result:
        return Result(
            finish_reason=reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion,
            ttft_ms=self.ttft_ms,
            duration_ms=(time.monotonic() - self.req.started) * 1000.0,
            **extra,
        )

    def finish(self, reason: Any, **extra: Any) -> None:
        if self.done:
            return
        self.done = True
        if reason != "error":
            tail = self.text.finish()
            if tail:
                self.req.emit(tail)
        self.req.emit(self.result(reason, **extra))

    def accept(self, token: int) -> None:
        """Take the next token: emit text, or finish (EOS, stop string, budget)."""
        self.completion += 1
        if self.ttft_ms is None:
            self.ttft_ms = (time.monotonic() - self.req.started) * 1000.0
        if token in self.loaded.eos_ids:
            self.finish("stop")
            return
        delta = self.text.add(token)
        if delta:
            self.req.emit(delta)
        if self.text.stopped:
            self.finish("stop")
        elif self.completion >= self.req.options.max_new_tokens:
            self.finish("length")
        else:
            self.last = token
            self.length += 1


def sample_probs(logits: Any, options: Sequence[GenerationOptions], rows: list[int]) -> Any:
    """Next-token probabilities of the given rows under each row's temperature, top-k and
    top-p (top-p keeps the smallest set of tokens whose probability reaches p, and always the
    most likely one; top-k keeps the k most likely; 0 = off)."""
    import torch

    index = torch.tensor(rows, device=logits.device)
    x = logits.index_select(0, index).float()
    column = {"device": x.device, "dtype": x.dtype}
    x = x / torch.tensor([[o.temperature] for o in options], **column)
    vocab = x.shape[-1]
    if any(o.top_k > 0 for o in options):
        keep = torch.tensor(
            [[min(o.top_k, vocab) - 1 if o.top_k > 0 else vocab - 1] for o in options],
            device=x.device,
        )
        kth = x.sort(dim=-1, descending=True).values.gather(1, keep)
        x = x.masked_fill(x < kth, float("-inf"))
    if any(o.top_p < 1.0 for o in options):
        ascending, order = x.sort(dim=-1)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        cut = torch.tensor([[1.0 - o.top_p] for o in options], **column)
        drop = cumulative <= cut
        drop[:, -1] = False  # the most likely token always stays
        x = x.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return x.softmax(dim=-1)


def batchable(cache: Any) -> bool:
    """Only plain dynamic layers can be padded and merged along the batch."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class Scheduler:
    """Runs the decode loop of one model. ``submit`` from any thread; ``run_until_idle`` on
    the inference thread."""

    def __init__(self, loaded: Any, *, max_batch: int) -> None:
        self.loaded = loaded
        self.max_batch = max(1, max_batch)
        self.pending: deque[Request] = deque()
        self.lock = threading.Lock()
        self.running = False  # a run_until_idle is queued or active
        self.seqs: list[_Seq] = []
        self.cache: Any = None
        self.mask: Any = None  # [batch, cache length] 1 = real token, 0 = left padding
        self.can_batch: bool | None = None  # known after the first prefill
        self.steps = 0
        self.max_seen = 0

    def submit(self, req: Request) -> bool:
        """Queue a request; True if the caller must start ``run_until_idle``."""
        with self.lock:
            self.pending.append(req)
            if self.running:
                return False
            self.running = True
            return True

    # --- the loop (inference thread) --------------------------------------------------------

    def run_until_idle(self) -> None:
        import torch

        while True:
            with self.lock:
                if not self.pending and not self.seqs:
                    self.running = False
                    return
            try:
                with torch.inference_mode():
                    self._admit()
                    if self.seqs:
                        self._decode()
            except Exception as exc:  # a step failed: end every reply in it, keep serving
                self._fail_all(exc)

    def _room(self) -> int:
        if self.can_batch is False:
            return 0 if self.seqs else 1
        return self.max_batch - len(self.seqs)

    def _admit(self) -> None:
        self._drop_cancelled()
        while self._room() > 0:
            with self.lock:
                if not self.pending:
                    return
                req = self.pending.popleft()
            self._prefill(req)

    def _prefill(self, req: Request) -> None:
        import torch

        loaded = self.loaded
        if req.cancel.is_set():
            req.emit(Result(finish_reason="cancelled", duration_ms=0.0))
            return
        seq: _Seq | None = None
        try:
            if req.on_start is not None:
                req.on_start()
            validate_turns(req.turns)
            budget = loaded.context_length - req.options.max_new_tokens
            if budget < 1:
                raise BackendError(
                    f"max_new_tokens={req.options.max_new_tokens} leaves no room for the prompt "
                    f"in this model's context of {loaded.context_length} tokens",
                    code="invalid_option",
                )
            prompt = build_prompt(
                loaded.tokenizer, req.turns, budget=budget, template=loaded.template
            )
            seq = _Seq(req, loaded, prompt.ids)
            ids = torch.tensor([prompt.ids], device=loaded.device)
            out = loaded.model(input_ids=ids, use_cache=True)
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            if self.can_batch is None:
                self.can_batch = batchable(cache)
                if not self.can_batch:
                    logger.info("this model's cache cannot be batched; one reply at a time")
            seq.accept(self._pick([seq], out.logits[:, -1, :])[0])
        except BackendError as exc:
            (seq.finish if seq else _emit_error(req))("error", error_code=exc.code, error=str(exc))
            return
        except (torch.OutOfMemoryError, MemoryError):
            _oom(req, seq)
            return
        if seq.done:
            return
        self._join(seq, cache)

    def _join(self, seq: _Seq, cache: Any) -> None:
        import torch
        import torch.nn.functional as F

        # The cache holds the prompt; the token just picked goes in at the next step.
        cached = seq.length - 1
        row_mask = torch.ones((1, cached), dtype=torch.long, device=self.loaded.device)
        if self.cache is None:
            self.cache, self.mask, self.seqs = cache, row_mask, [seq]
        else:
            width = max(self.mask.shape[1], cached)
            grow, pad = width - self.mask.shape[1], width - cached
            for mine, new in zip(self.cache.layers, cache.layers, strict=True):
                mine.keys = torch.cat(
                    [F.pad(mine.keys, (0, 0, grow, 0)), F.pad(new.keys, (0, 0, pad, 0))]
                )
                mine.values = torch.cat(
                    [F.pad(mine.values, (0, 0, grow, 0)), F.pad(new.values, (0, 0, pad, 0))]
                )
            self.mask = torch.cat([F.pad(self.mask, (grow, 0)), F.pad(row_mask, (pad, 0))])
            self.seqs.append(seq)
        self.max_seen = max(self.max_seen, len(self.seqs))

    def _decode(self) -> None:
        import torch

        device = self.loaded.device
        batch = len(self.seqs)
        input_ids = torch.tensor([[s.last] for s in self.seqs], device=device)
        positions = torch.tensor([[s.length - 1] for s in self.seqs], device=device)
        ones = torch.ones((batch, 1), dtype=self.mask.dtype, device=device)
        mask = torch.cat([self.mask, ones], dim=1)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": True, "cache": self.cache}
        if batch > 1 or self.mask.shape[1] != self.seqs[0].length - 1:
            kwargs.update(attention_mask=mask, position_ids=positions)
        out = self.loaded.model(**kwargs)
        self.cache = out.cache if hasattr(out, "cache") else out.past_key_values
        self.mask = mask
        self.steps += 1
        for seq, token in zip(self.seqs, self._pick(self.seqs, out.logits[:, -1, :]), strict=True):
            if seq.req.cancel.is_set():  # stopped during this step: its token is not sent
                seq.finish("cancelled")
            else:
                seq.accept(token)
        self._drop_cancelled()

    def _pick(self, seqs: Sequence[_Seq], logits: Any) -> list[int]:
        """One token per row. Greedy rows: one argmax for all. Sampled rows: temperature,
        top-k and top-p applied to all of them at once (one sort, not one per row), then a
        draw per row from its own seeded generator, so a seed gives the same reply whatever
        else shares the batch."""
        tokens: list[int] = logits.argmax(dim=-1).tolist()
        rows = [i for i, seq in enumerate(seqs) if not seq.sampler.greedy]
        if not rows:
            return tokens
        probs = sample_probs(logits, [seqs[i].req.options for i in rows], rows)
        import torch

        # Inverse-CDF draws for all rows at once; each row's uniform number comes from its
        # own generator (one scalar each: cheap, and independent of the batch).
        uniforms = torch.cat(
            [
                torch.rand(1, generator=gen, device=gen.device)
                for gen in (seqs[i].sampler.generator for i in rows)
            ]
        ).to(probs.device)
        cumulative = probs.cumsum(dim=-1)
        target = (uniforms * cumulative[:, -1]).unsqueeze(1)
        picks = torch.searchsorted(cumulative, target, right=True)  # never a 0-probability token
        picks = picks.clamp_(max=probs.shape[-1] - 1).squeeze(1).tolist()
        for j, i in enumerate(rows):
            tokens[i] = int(picks[j])
        return tokens

    def _drop_cancelled(self) -> None:
        for seq in self.seqs:
            if not seq.done and seq.req.cancel.is_set():
                seq.finish("cancelled")
        keep = [i for i, seq in enumerate(self.seqs) if not seq.done]
        if len(keep) == len(self.seqs):
            return
        if not keep:
            self.cache = self.mask = None
            self.seqs = []
            return
        import torch

        index = torch.tensor(keep, device=self.loaded.device)
        mask = self.mask.index_select(0, index)
        start = int(mask.any(dim=0).long().argmax().item())  # columns all rows pad: trim
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:, :]
            layer.values = layer.values.index_select(0, index)[:, :, start:, :]
        self.mask = mask[:, start:]
        self.seqs = [self.seqs[i] for i in keep]

    def _fail_all(self, exc: Exception) -> None:
        import torch

        if isinstance(exc, torch.OutOfMemoryError | MemoryError):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            for seq in self.seqs:
                _oom(seq.req, seq)
        else:
            logger.exception("batched decode step failed")
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            for seq in self.seqs:
                seq.finish("error", error_code="internal", error=f"generation failed: {text}")
        self.seqs, self.cache, self.mask = [], None, None


def _emit_error(req: Request) -> Callable[..., None]:
    def emit(reason: Any, **extra: Any) -> None:
        req.emit(
            Result(
                finish_reason=reason,
                duration_ms=(time.monotonic() - req.started) * 1000.0,
                **extra,
            )
        )

    return emit


def _oom(req: Request, seq: _Seq | None) -> None:
    message = "out of memory while generating; lower max_new_tokens or use a smaller model"
    if seq is not None:
        seq.finish("error", error_code="inference_unavailable", error=message)
    else:
        _emit_error(req)("error", error_code="inference_unavailable", error=message)
