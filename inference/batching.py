"""Batched decoding: replies generating at the same time share the model's decode steps.

One ``Scheduler`` per loaded model runs on the process's inference thread. New requests join
the batch inside its next decode step (mixed steps, ``inference.mixed``, for Llama-family
models: their prompts are read in the same forward, into a preallocated cache; a prompt longer
than a step's share is read in chunks over several steps, so it never stalls the replies
already streaming for one long step), or, for other
models, between two decode steps (prefilled together in groups of similar prompt length, their
KV cache left-padded into the batch); finished, stopped or failed ones leave. Every request
keeps its own sampler (temperature, top-k/p, seed), stop strings, token budget and cancel
signal; one failing request never ends the others.

Why our own scheduler rather than transformers' ``generate_batch`` / continuous batching:
measured on this project's CPU machine (PITFALLS.md), ``transformers serve`` with continuous
batching reached 1.8x one stream with 16 streams, a padded batch ~9x. A left-padded dynamic
cache keeps the model's own attention kernels and needs no paged-attention support, so it works
for every causal LM whose cache is a plain ``DynamicCache``; other caches (sliding windows, …)
still go through here, one request at a time.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
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
    (the warping and the draw are done for the whole batch in ``draw``)."""

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
        self.prompt_ids = prompt_ids
        # Real tokens so far (prompt + picked); the last picked one enters the cache at the
        # next step, so the cache holds length - 1 of them, after its row's left padding.
        self.length = len(prompt_ids)
        # Mixed steps: how much of the prompt earlier steps read, and their keys and values.
        self.read = 0
        self.past: Any = None
        self.completion = 0
        self.ttft_ms: float | None = None
        self.last: int | None = None
        self.done = False

    def result(self, reason: Any, **extra: Any) -> Result:
        return Result(
            finish_reason=reason,
            prompt_tokens=len(self.prompt_ids),
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


# A batch whose whole cache (its batch size by its context) fits in this is given it whole at
# its first reply and keeps it; a bigger one grows as replies need, keeps up to this much, and
# gives back what a long conversation made it take once it leaves. Why hold it: returning
# memory buys nothing worth the regrowing (every layer's buffers allocated and zeroed in one
# step: a pause every streaming reply sees) or the see-saw of the process's memory, which an
# hour's soak read as +36 % with buffers kept up to 64 MB (the bundled model's whole cache,
# 32 rows by its 2,048-token context, is 455 MB).
KEEP_SLOTS_BYTES = 512 * 1024 * 1024
PREFILL_TOKENS_CPU = 2048
PREFILL_TOKENS = 16384
# Mixed steps while replies stream: the prompt tokens a step reads are sized to add about this
# much to the step (learned from the steps themselves), so a long prompt arriving costs every
# streaming reply a few slightly longer steps, not one long stall. Measured on the bundled
# model (CPU machine, 15 rows): a decode step 10 ms, +128 prompt tokens 31 ms, +1,500 412 ms.
CHUNK_MS = 20.0
FIRST_CHUNK = 128  # prompt tokens per step before the first measurement
MIN_CHUNK = 16
# A short prompt arriving while a batch streams is read in a step of its own, ahead of the
# batch's next step, when that step (the batch's decode plus the prompt) would take at least
# FIRST_GAIN times a step that reads the prompt alone (both learned as steps run): a person's
# first token then waits for the step in progress and a short step, not for a big batch's step
# too, and each streaming reply waits one short step more. Where a bigger batch costs a step
# little more (a GPU), the ratio is never reached and nothing changes.
FIRST_GAIN = 1.2
SHORTLIST = 16  # candidates a top-k/top-p row starts from (CPU: a vocabulary sort costs ~30x more)


def _warp(logits: Any, options: Sequence[GenerationOptions], rows: list[int]) -> Any:
    """The given rows' logits, as float, divided by each row's temperature."""
    import torch

    index = torch.tensor(rows, device=logits.device)
    x = logits.index_select(0, index).float()
    return x / torch.tensor([[o.temperature] for o in options], device=x.device, dtype=x.dtype)


def _truncates(option: GenerationOptions) -> bool:
    return option.top_k > 0 or option.top_p < 1.0


def _nucleus(
    values: Sequence[float], option: GenerationOptions, norm: float, vocab: int, complete: bool
) -> list[float] | None:
    """The probabilities a top-k and/or top-p row keeps, most likely first, from its largest
    warped logits ``values`` (sorted, most likely first; the whole vocabulary when
    ``complete``) and the log-normaliser ``norm`` of all its logits. Same sets as
    transformers' warpers: top-k keeps ties with the k-th, top-p the smallest set reaching p
    after top-k, always the most likely token. None when the set may go on past ``values``."""
    k = option.top_k if 0 < option.top_k < vocab else vocab
    count = len(values)
    if k < vocab:
        kth = values[min(k, count) - 1]
        count = next((i for i, v in enumerate(values) if v < kth), count)  # ties stay in
        if count == len(values) and not complete:
            return None  # ties with the k-th may go on past the shortlist
        top = values[0]
        norm = top + math.log(sum(math.exp(v - top) for v in values[:count]))
    if option.top_p >= 1.0:
        return [math.exp(v - norm) for v in values[:count]]
    kept: list[float] = []
    before = 0.0  # mass of the more likely tokens (probabilities only as far as needed)
    for v in values[:count]:
        if kept and before >= option.top_p:
            return kept
        p = math.exp(v - norm)
        kept.append(p)
        before += p
    return kept if complete or count < len(values) else None


def _nuclei(x: Any, options: Sequence[GenerationOptions]) -> list[tuple[list[float], list[int]]]:
    """For rows under top-k and/or top-p (``x``: their warped logits): the probabilities each
    keeps and their token ids, most likely first. Found in the ``SHORTLIST`` largest logits
    of every row (one ``topk`` and one ``logsumexp`` for the batch, the rest in Python on a
    few numbers a row: each small tensor op costs microseconds, and a batch of 16 paid ~35 us
    a row that way), widened for a row alone when its set does not fit."""
    vocab = x.shape[-1]
    ks = [o.top_k for o in options if 0 < o.top_k < vocab]
    width = min(vocab, max(SHORTLIST, max(ks, default=0) + 1))
    values, ids = x.topk(width, dim=-1)  # sorted, most likely first
    norms = x.logsumexp(dim=-1).tolist()
    out = []
    for row, (row_values, row_ids, option) in enumerate(
        zip(values.tolist(), ids.tolist(), options, strict=True)
    ):
        wide = width
        kept = _nucleus(row_values, option, norms[row], vocab, wide == vocab)
        while kept is None:  # this row's set reaches the end of its shortlist: widen it
            wide = min(vocab, wide * 4)
            more_values, more_ids = x[row].topk(wide)
            row_values, row_ids = more_values.tolist(), more_ids.tolist()
            kept = _nucleus(row_values, option, norms[row], vocab, wide == vocab)
        out.append((kept, row_ids[: len(kept)]))
    return out


def sample_probs(logits: Any, options: Sequence[GenerationOptions], rows: list[int]) -> Any:
    """Next-token probabilities of the given rows under each row's temperature, top-k and
    top-p, over the whole vocabulary (what ``draw`` samples from; for tests and tools)."""
    import torch

    x = _warp(logits, options, rows)
    out = x.softmax(dim=-1)
    cut = [i for i, o in enumerate(options) if _truncates(o)]
    if cut:
        for i, (probs, ids) in zip(cut, _nuclei(x[cut], [options[i] for i in cut]), strict=True):
            row = torch.zeros_like(out[i])
            total = sum(probs)
            row[ids] = torch.tensor([p / total for p in probs], dtype=row.dtype)
            out[i] = row
    return out


def _inverse_cdf(probs: Sequence[float], uniform: float) -> int:
    """The index the uniform lands on in ``probs`` (unnormalised), never one of probability 0."""
    target = uniform * sum(probs)
    total = 0.0
    last = 0
    for at, p in enumerate(probs):
        if p > 0.0:
            total += p
            last = at
            if total > target:
                return at
    return last  # rounding put the target at the very end


def draw(
    logits: Any, options: Sequence[GenerationOptions], rows: list[int], uniforms: Any
) -> list[int]:
    """One token per given row by inverse CDF: ``uniforms`` holds one number in [0, 1) per
    row (from the row's own generator, so a seed gives the same reply whatever shares the
    batch). Never picks a token of probability 0."""
    import torch

    x = _warp(logits, options, rows)
    picks = [0] * len(rows)
    whole = [i for i, o in enumerate(options) if not _truncates(o)]
    cut = [i for i, o in enumerate(options) if _truncates(o)]
    if whole:  # no truncation: the whole vocabulary, in vocabulary order
        cumulative = x[whole].softmax(dim=-1).cumsum(dim=-1)
        target = (uniforms[whole].to(x.device) * cumulative[:, -1]).unsqueeze(1)
        at = torch.searchsorted(cumulative, target, right=True).clamp_(max=x.shape[-1] - 1)
        for i, token in zip(whole, at.squeeze(1).tolist(), strict=True):
            picks[i] = int(token)
    if cut:
        sub = x if len(cut) == len(options) else x[cut]
        numbers = uniforms.tolist()
        for i, (probs, ids) in zip(cut, _nuclei(sub, [options[i] for i in cut]), strict=True):
            picks[i] = ids[_inverse_cdf(probs, numbers[i])]
    return picks


def batchable(cache: Any) -> bool:
    """Only plain dynamic layers can be padded and merged along the batch."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class Scheduler:
    """Runs the decode loop of one model. ``submit`` from any thread; ``run_until_idle`` on
    the inference thread."""

    def __init__(
        self,
        loaded: Any,
        *,
        max_batch: int,
        after_step: Callable[[], None] | None = None,
        mixed: bool = False,
    ) -> None:
        self.loaded = loaded
        self.max_batch = max(1, max_batch)
        # Mixed steps (new prompts inside decode steps, ``inference.mixed``): only for a model
        # that passed their self-check at load.
        self.mixed = mixed
        # Whether rows can share a batch: the first prefill tells (a plain DynamicCache can);
        # with mixed steps the batch's cache is ours.
        self.can_batch: bool | None = True if mixed else None
        # Called after every step (and when the loop goes idle): a host that ships the
        # step's emitted items elsewhere in one piece (the model process) flushes here.
        self.after_step = after_step
        # Padded prompt tokens per prefill forward: on a CPU a bigger forward stops paying
        # (measured: 16 prompts of 30 tokens 2.3x faster together, of 300 tokens slower).
        on_cpu = getattr(loaded.device, "type", str(loaded.device)) == "cpu"
        self.prefill_tokens = PREFILL_TOKENS_CPU if on_cpu else PREFILL_TOKENS
        # Logits for the last position only: a prompt's others are never used (the
        # vocabulary projection of a 20-token prompt was 7% of its prefill).
        self.model_kwargs: dict[str, Any] = (
            {"logits_to_keep": 1}
            if "logits_to_keep" in inspect.signature(loaded.model.forward).parameters
            else {}
        )
        self.pending: deque[Request] = deque()
        # Mixed steps: taken from ``pending`` and prepared, prompts not read in full yet (at
        # most one of them part-read), in arrival order.
        self.waiting: deque[_Seq] = deque()
        # What a step costs, learned as it runs (mixed steps): a decode step's milliseconds,
        # and the extra milliseconds and prompt tokens of steps that read prompts (decayed
        # sums: their ratio is the cost of a prompt token beside the batch).
        self.decode_ms: float | None = None
        self.prompt_ms = 0.0
        self.prompt_tokens = 0.0
        # What a step that reads prompts and nothing else costs beyond its prompt tokens'
        # share (FIRST_GAIN), and whether the last step was one ahead of the batch (never two
        # in a row: the batch's replies keep at least half the steps).
        self.alone_ms: float | None = None
        self.first_step = False
        self.lock = threading.Lock()
        self.running = False  # a run_until_idle is queued or active
        self.seqs: list[_Seq] = []
        self.cache: Any = None
        self.mask: Any = None  # [batch, cache length] 1 = real token, 0 = left padding
        self.steps = 0
        self.max_seen = 0  # most rows in the batch at once
        self.max_group = 0  # most prompts prefilled in one forward

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
                if not self.pending and not self.seqs and not self.waiting:
                    self.running = False
                    break
            try:
                with torch.inference_mode():
                    if self.mixed:
                        self._mixed()
                    else:
                        self._admit()
                        if self.seqs:
                            self._decode()
            except Exception as exc:  # a step failed: end every reply in it, keep serving
                self._fail_all(exc)
            if self.after_step is not None:
                self.after_step()
        if self.after_step is not None:
            self.after_step()

    def _room(self) -> int:
        if self.can_batch is False:
            return 0 if self.seqs else 1
        return self.max_batch - len(self.seqs) - len(self.waiting)

    def _admit(self) -> None:
        """Take queued requests into the batch, prefilled together in groups of similar
        length (without mixed steps)."""
        for group in prefill_groups(self._take(), self.prefill_tokens):
            self._prefill(group)

    def _mixed(self) -> None:
        """One mixed step: the batch's rows decode one token while waiting prompts are read,
        whole or a chunk of one, within the step's prompt budget (``plan_chunks``)."""
        ready = self._take()  # (it may drop ended requests from ``waiting`` first)
        self.waiting.extend(ready)
        first = self._first_prompts()
        self.first_step = bool(first)
        if first:
            self._mixed_step([], first)
            return
        parts = plan_chunks(list(self.waiting), self._prompt_budget())
        started = time.perf_counter()  # making room ahead is part of what the step costs
        for seq, n in parts:
            left = len(seq.prompt_ids) - seq.read
            if self.seqs and self.cache is not None and n < left:  # read in chunks: its room
                self.cache.prepare(rows=len(self.seqs) + 1, left=left + seq.read, steps=left // n)
        if self.seqs or parts:
            self._mixed_step(self.seqs, parts, started=started)

    def _first_prompts(self) -> list[tuple[_Seq, int]]:
        """The short prompts to read in a step of their own, ahead of the batch's next step
        (``FIRST_GAIN``), or none: the waiting prompts not begun that fit the step's prompt
        budget, in arrival order."""
        if not self.seqs or self.first_step or self.decode_ms is None or self.prompt_tokens < 1:
            return []
        parts, _ = fitting(self.waiting, self._prompt_budget())
        if not parts:
            return []
        prompt = sum(n for _, n in parts) * self.prompt_ms / self.prompt_tokens
        if self.alone_ms is not None and (
            self.decode_ms + prompt < FIRST_GAIN * (self.alone_ms + prompt)
        ):
            return []
        return parts  # (or never measured: this step tells)

    def _prompt_budget(self) -> int:
        """Prompt tokens the next mixed step may read: all it can when no reply is streaming
        (nobody waits on the step), else what adds about ``CHUNK_MS`` to it."""
        if not self.seqs:
            return self.prefill_tokens
        if self.decode_ms is None or self.prompt_tokens < 1 or self.prompt_ms <= 0:
            return min(FIRST_CHUNK, self.prefill_tokens)
        per_token = self.prompt_ms / self.prompt_tokens
        return max(MIN_CHUNK, min(self.prefill_tokens, int(CHUNK_MS / per_token)))

    def _learn(self, elapsed_ms: float, rows: int, tokens: int, whole: bool = False) -> None:
        """Update what a step costs from one that just ran (``tokens`` prompt tokens read
        beside ``rows`` decode rows; ``whole``: every prompt in it read from its start to its
        end)."""
        if rows and not tokens:
            if self.decode_ms is None:
                self.decode_ms = elapsed_ms
            else:
                self.decode_ms += 0.2 * (elapsed_ms - self.decode_ms)
        elif rows and self.decode_ms is not None:
            self.prompt_ms = 0.7 * self.prompt_ms + max(0.0, elapsed_ms - self.decode_ms)
            self.prompt_tokens = 0.7 * self.prompt_tokens + tokens
        elif not rows and whole and self.prompt_tokens >= 1:
            # prompts read alone (into an empty batch, or ahead of one): what such a step
            # costs beyond its tokens' share
            base = max(0.0, elapsed_ms - tokens * self.prompt_ms / self.prompt_tokens)
            if self.alone_ms is None:
                self.alone_ms = base
            else:
                self.alone_ms += 0.2 * (base - self.alone_ms)

    def _take(self) -> list[_Seq]:
        """Queued requests that join now, prepared one by one (a bad one ends alone)."""
        self._drop_cancelled()
        ready: list[_Seq] = []
        while self._room() > len(ready):
            with self.lock:
                if not self.pending:
                    break
                req = self.pending.popleft()
            seq = self._prepare(req)
            if seq is not None:
                ready.append(seq)
            if self.can_batch is None:
                break  # the first prefill tells whether this model's cache can be batched
        return ready

    def _prepare(self, req: Request) -> _Seq | None:
        """Check a request and build its prompt; None when it ended here (its Result sent)."""
        loaded = self.loaded
        if req.cancel.is_set():
            req.emit(Result(finish_reason="cancelled", duration_ms=0.0))
            return None
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
        except BackendError as exc:
            _emit_error(req)("error", error_code=exc.code, error=str(exc))
            return None
        except Exception as exc:  # the tokenizer refused the text (say, a lone surrogate)
            logger.exception("building a prompt failed")
            _emit_error(req)(
                "error",
                error_code="internal",
                error=f"the model could not read this conversation ({type(exc).__name__})",
            )
            return None
        return _Seq(req, loaded, prompt.ids)

    def _prefill(self, seqs: list[_Seq]) -> None:
        """One forward over the prompts of ``seqs`` (left-padded to the longest), their first
        tokens picked, and the rows still going joined to the batch. A group that fails is
        retried one request at a time, so only the request at fault fails."""
        import torch

        device = self.loaded.device
        self.max_group = max(self.max_group, len(seqs))
        width = max(len(s.prompt_ids) for s in seqs)
        pad = self.loaded.tokenizer.pad_token_id or 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
        for row, seq in enumerate(seqs):
            ids[row, width - len(seq.prompt_ids) :] = torch.tensor(seq.prompt_ids, device=device)
            mask[row, width - len(seq.prompt_ids) :] = 1
        kwargs: dict[str, Any] = {"input_ids": ids, "use_cache": True, **self.model_kwargs}
        if len(seqs) > 1:
            kwargs.update(attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
        try:
            out = self.loaded.model(**kwargs)
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            if self.can_batch is None:
                self.can_batch = batchable(cache)
                if not self.can_batch:
                    logger.info("this model's cache cannot be batched; one reply at a time")
            tokens = self._pick(seqs, out.logits[:, -1, :])
        except Exception as exc:
            if len(seqs) > 1:
                for seq in seqs:
                    self._prefill([seq])
            else:
                _fail(seqs[0], exc)
            return
        for seq, token in zip(seqs, tokens, strict=True):
            seq.accept(token)
        self._join(seqs, cache, mask)

    def _mixed_step(
        self, rows: list[_Seq], parts: list[tuple[_Seq, int]], *, started: float | None = None
    ) -> None:
        """``rows`` (the batch, or none) decode one token while ``parts`` are read (each: a
        waiting request and how many more of its prompt tokens), in one forward. A prompt read
        to its end picks its first token and joins the batch. If the step fails with prompts
        in it, each is tried alone, so only the one at fault fails (the rows step next time; a
        fault of theirs fails them then)."""
        from inference import mixed

        slots = self.cache if rows else None  # in mixed steps, the batch's cache is Slots
        ends = [seq.read + n == len(seq.prompt_ids) for seq, n in parts]
        started = time.perf_counter() if started is None else started
        try:
            logits, step = mixed.forward(
                self.loaded.model,
                tokens=[s.last for s in rows],
                positions=[s.length - 1 for s in rows],
                slots=slots,
                prompts=[seq.prompt_ids[seq.read : seq.read + n] for seq, n in parts],
                pasts=[seq.past for seq, _ in parts],
            )
            # Tokens for the rows and the prompts read to their end (a chunk's logits unused).
            picked = list(range(len(rows))) + [len(rows) + i for i, end in enumerate(ends) if end]
            if len(picked) < len(logits):
                logits = logits[picked]
            firsts = [seq for (seq, _), end in zip(parts, ends, strict=True) if end]
            tokens = self._pick([*rows, *firsts], logits)
        except Exception as exc:
            if not parts:
                raise  # a decode step failed: the loop ends every reply in it
            if not rows and len(parts) == 1:
                _fail(parts[0][0], exc)
                self._drop_cancelled()
            else:
                for part in parts:
                    self._mixed_step([], [part])
            return
        self._learn(
            (time.perf_counter() - started) * 1000.0,
            len(rows),
            sum(n for _, n in parts),
            whole=all(end and not seq.read for (seq, _), end in zip(parts, ends, strict=True)),
        )
        self.max_group = max(self.max_group, len(parts))
        if slots is not None:
            slots.advance()
            self.steps += 1
            for seq, token in zip(rows, tokens[: len(rows)], strict=True):
                if seq.req.cancel.is_set():  # stopped during this step: its token is not sent
                    seq.finish("cancelled")
                else:
                    seq.accept(token)
        first_tokens = iter(tokens[len(rows) :])
        going = []
        for index, ((seq, n), end) in enumerate(zip(parts, ends, strict=True)):
            seq.read += n
            kv = [step.prompt_kv[layer][index] for layer in range(len(step.prompt_kv))]
            if not end:
                seq.past = kv  # the next step reads on from here
                continue
            seq.past = None
            seq.accept(next(first_tokens))
            if not seq.done:
                going.append((seq, kv))
        if going:
            if self.cache is None:
                self.cache = mixed.Slots(
                    len(step.prompt_kv),
                    max_rows=self.max_batch,
                    max_columns=self.loaded.context_length + 1,
                    whole_bytes=KEEP_SLOTS_BYTES,
                )
            kept = {layer: [kv[layer] for _, kv in going] for layer in range(len(step.prompt_kv))}
            self.cache.add(kept, [len(seq.prompt_ids) for seq, _ in going])
            self.seqs.extend(seq for seq, _ in going)
            self.max_seen = max(self.max_seen, len(self.seqs))
        self._drop_cancelled()

    def _join(self, seqs: list[_Seq], cache: Any, mask: Any) -> None:
        """Merge freshly prefilled rows (``cache`` and its ``mask``) into the batch: both
        sides left-padded to the longer, rows that already ended left out."""
        import torch
        import torch.nn.functional as F

        keep = [row for row, seq in enumerate(seqs) if not seq.done]
        if not keep:
            return
        if len(keep) < len(seqs):
            mask = _keep_rows(cache, mask, keep)
        seqs = [seqs[row] for row in keep]
        if self.cache is None:
            self.cache, self.mask, self.seqs = cache, mask, seqs
        else:
            width = max(self.mask.shape[1], mask.shape[1])
            grow, pad = width - self.mask.shape[1], width - mask.shape[1]
            for mine, new in zip(self.cache.layers, cache.layers, strict=True):
                mine.keys = torch.cat(
                    [F.pad(mine.keys, (0, 0, grow, 0)), F.pad(new.keys, (0, 0, pad, 0))]
                )
                mine.values = torch.cat(
                    [F.pad(mine.values, (0, 0, grow, 0)), F.pad(new.values, (0, 0, pad, 0))]
                )
            self.mask = torch.cat([F.pad(self.mask, (grow, 0)), F.pad(mask, (pad, 0))])
            self.seqs.extend(seqs)
        self._trim()
        self.max_seen = max(self.max_seen, len(self.seqs))

    def _decode(self) -> None:
        import torch

        device = self.loaded.device
        batch = len(self.seqs)
        input_ids = torch.tensor([[s.last] for s in self.seqs], device=device)
        positions = torch.tensor([[s.length - 1] for s in self.seqs], device=device)
        ones = torch.ones((batch, 1), dtype=self.mask.dtype, device=device)
        mask = torch.cat([self.mask, ones], dim=1)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "use_cache": True,
            "cache": self.cache,
            **self.model_kwargs,
        }
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
        """One token per row: one argmax for the greedy rows; the sampled rows warped and
        drawn together (``draw``), each with a number from its own seeded generator. (An
        argmax over the vocabulary costs ~7 us a row on the CPU machine: only the greedy rows
        take one.)"""
        rows = [i for i, seq in enumerate(seqs) if not seq.sampler.greedy]
        if not rows:
            return logits.argmax(dim=-1).tolist()  # type: ignore[no-any-return]
        import torch

        tokens = [0] * len(seqs)
        greedy = [i for i, seq in enumerate(seqs) if seq.sampler.greedy]
        if greedy:
            index = torch.tensor(greedy, device=logits.device)
            best = logits.index_select(0, index).argmax(dim=-1).tolist()
            for i, token in zip(greedy, best, strict=True):
                tokens[i] = token
        uniforms = torch.cat(
            [
                torch.rand(1, generator=gen, device=gen.device)
                for gen in (seqs[i].sampler.generator for i in rows)
            ]
        ).to(logits.device)
        picks = draw(logits, [seqs[i].req.options for i in rows], rows, uniforms)
        for i, token in zip(rows, picks, strict=True):
            tokens[i] = token
        return tokens

    def _drop_cancelled(self) -> None:
        """End the rows stopped meanwhile, and drop every ended row from the batch (and from
        the prompts waiting to be read, or read in full)."""
        if self.waiting:
            for seq in self.waiting:
                if not seq.done and seq.req.cancel.is_set():
                    seq.finish("cancelled")
            going = [s for s in self.waiting if not s.done and s.read < len(s.prompt_ids)]
            self.waiting.clear()
            self.waiting.extend(going)
        for seq in self.seqs:
            if not seq.done and seq.req.cancel.is_set():
                seq.finish("cancelled")
        keep = [i for i, seq in enumerate(self.seqs) if not seq.done]
        if len(keep) == len(self.seqs):
            return
        if not keep:
            # Mixed steps keep their (modest) buffers for the next reply: allocating and
            # zeroing them again cost the bundled model's first token 2-3 ms.
            kept = self.mixed and self.cache.nbytes <= KEEP_SLOTS_BYTES
            self.cache = self.cache.empty() if kept else None
            self.mask = None
            self.seqs = []
            return
        if self.mixed:  # Slots: the last row takes each leaving row's place
            for row in reversed(range(len(self.seqs))):
                if self.seqs[row].done:
                    self.cache.remove(row)
                    self.seqs[row] = self.seqs[-1]
                    self.seqs.pop()
            # Smaller buffers once a long row leaves: new memory over KEEP_SLOTS_BYTES, or
            # smaller views of the arena (no memory moves; the rows' keys sit closer).
            if self.cache.in_arena or self.cache.nbytes > KEEP_SLOTS_BYTES:
                self.cache.shrink()
            return
        self.mask = _keep_rows(self.cache, self.mask, keep)
        self.seqs = [self.seqs[i] for i in keep]
        self._trim()

    def _trim(self) -> None:
        """Drop the columns that are padding in every row (left by rows that left, or by a
        prefill group padded to its longest prompt)."""
        start = int(self.mask.any(dim=0).long().argmax().item())
        if start:
            self.mask = self.mask[:, start:]
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, start:, :]
                layer.values = layer.values[:, :, start:, :]

    def _fail_all(self, exc: Exception) -> None:
        import torch

        if isinstance(exc, torch.OutOfMemoryError | MemoryError):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            for seq in self.seqs:
                _oom(seq.req, seq)
        else:
            logger.exception("batched decode step failed")
            for seq in self.seqs:
                seq.finish("error", error_code="internal", error=_failure(exc))
        self.seqs, self.cache, self.mask = [], None, None


def _fail(seq: _Seq, exc: Exception) -> None:
    """End one request whose prompt could not be read (out of memory, or a model error)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        _oom(seq.req, seq)
    else:
        logger.exception("prefill failed", exc_info=exc)
        seq.finish("error", error_code="internal", error=_failure(exc))


def _keep_rows(cache: Any, mask: Any, keep: list[int]) -> Any:
    """Keep only the given batch rows of ``cache`` (in place) and of ``mask`` (returned)."""
    import torch

    index = torch.tensor(keep, device=mask.device)
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, index)
        layer.values = layer.values.index_select(0, index)
    return mask.index_select(0, index)


def _failure(exc: Exception) -> str:
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    return f"generation failed: {text}"


def fitting(waiting: Iterable[_Seq], budget: int) -> tuple[list[tuple[_Seq, int]], int]:
    """The ``waiting`` prompts not begun that fit ``budget`` whole, in arrival order, as
    (request, tokens) pairs, and the budget they leave."""
    whole: list[tuple[_Seq, int]] = []
    left = budget
    for seq in waiting:
        n = len(seq.prompt_ids)
        if not seq.read and n <= left:
            whole.append((seq, n))
            left -= n
    return whole, left


def plan_chunks(waiting: list[_Seq], budget: int) -> list[tuple[_Seq, int]]:
    """What one mixed step reads of the ``waiting`` prompts (in arrival order) within
    ``budget`` tokens: (request, tokens) pairs. Prompts that fit are read whole first (a short
    question never waits behind a long paste, however small the budget has become); the
    prompt being read in chunks goes on with what is left, and at least a quarter of the
    budget, so it always gets on; if none is being read, the first that does not fit starts
    being read in chunks with what is left."""
    reading = next((seq for seq in waiting if seq.read), None)
    whole, left = fitting(waiting, budget)
    if reading is not None:
        n = min(len(reading.prompt_ids) - reading.read, max(left, budget // 4, 1))
        return [(reading, n), *whole]
    if left >= MIN_CHUNK or not whole:
        placed = {id(seq) for seq, _ in whole}
        first = next((seq for seq in waiting if id(seq) not in placed), None)
        if first is not None and left > 0:
            whole.append((first, left))
    return whole


def prefill_groups(seqs: list[_Seq], budget: int) -> list[list[_Seq]]:
    """Split requests into prefill groups: by prompt length, a group grows while its padded
    size stays within ``budget`` tokens and at most 1.5x its real tokens (plus 64), so short
    prompts share a forward and a long one never makes short ones pay for its padding."""
    groups: list[list[_Seq]] = []
    for seq in sorted(seqs, key=lambda s: len(s.prompt_ids)):
        n = len(seq.prompt_ids)
        group = groups[-1] if groups else None
        if group is not None:
            real = sum(len(s.prompt_ids) for s in group) + n
            padded = n * (len(group) + 1)  # sorted: this one is the longest so far
            if padded <= budget and padded <= 1.5 * real + 64:
                group.append(seq)
                continue
        groups.append([seq])
    return groups


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
