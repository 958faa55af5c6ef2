"""Mixed steps (``inference.mixed``): new prompts read inside the batch's decode steps give the
same logits as the model's own forward, the same replies as separate prefill steps, and a
prompt that fails there fails alone. Against tiny random Llama and Qwen2 models and the bundled
StellarByte-mini; GPT-2 (not Llama-family) keeps separate prefill steps."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from inference import mixed
from inference.backends.base import Result
from inference.backends.hf import TransformersBackend
from inference.options import GenerationOptions
from tests.inference import tinymodels
from tests.inference.test_batching import BUNDLED, PROMPTS, run, together

GREEDY = GenerationOptions(temperature=0, max_new_tokens=24)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = Path(tmp_path_factory.mktemp("mixed"))
    models = {arch: tinymodels.build(root / arch, arch) for arch in ("llama", "qwen2", "gpt2")}
    models["long"] = tinymodels.build(root / "long", "llama", context=1024)
    return models


def loaded(path: Path, *, mixed: bool = True) -> Any:
    return TransformersBackend(str(path), device="cpu", mixed=mixed).load()


def assert_own_logits(model: Any, logits: Any, sequences: list[list[int]]) -> None:
    """Each of the first ``len(sequences)`` rows of ``logits`` equals the model's own forward
    of its sequence alone."""
    import torch

    for got, sequence in zip(logits[: len(sequences)], sequences, strict=True):
        own = model(input_ids=torch.tensor([sequence])).logits[0, -1]
        assert torch.allclose(got, own, atol=1e-4), (got - own).abs().max()


def step_on(
    model: Any, slots: Any, logits: Any, sequences: list[list[int]], **prompts: Any
) -> tuple[Any, Any]:
    """The rows' greedy picks from ``logits`` appended to ``sequences``, then one mixed step
    of them (with ``prompts``/``pasts`` if given): its (logits, step)."""
    picks = logits[: len(sequences)].argmax(-1).tolist()
    for sequence, pick in zip(sequences, picks, strict=True):
        sequence.append(pick)
    return mixed.forward(  # type: ignore[no-any-return]
        model,
        tokens=picks,
        positions=[len(s) - 1 for s in sequences],
        slots=slots,
        **{"prompts": [], **prompts},
    )


def test_llama_family_models_are_supported_and_others_are_not(tiny: dict[str, Path]) -> None:
    assert loaded(tiny["llama"]).mixed and not loaded(tiny["gpt2"]).mixed  # checked at load
    assert mixed.supported(loaded(tiny["llama"]).model) is None
    assert mixed.supported(loaded(tiny["qwen2"]).model) is None
    assert mixed.supported(loaded(BUNDLED).model) is None
    assert "gpt2" in (mixed.supported(loaded(tiny["gpt2"]).model) or "")


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_a_mixed_step_gives_the_model_s_own_logits(tiny: dict[str, Path], arch: str) -> None:
    """Three rows of different lengths (left-padded) and three new prompts in one forward,
    each against the model's own forward of that sequence alone."""
    import torch

    state = loaded(tiny[arch])
    model, tok = state.model, state.tokenizer
    assert mixed.install(model, tok)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in PROMPTS[:3]]
    with torch.inference_mode():
        logits, step = mixed.forward(model, tokens=[], positions=[], slots=None, prompts=ids)
        picks = logits.argmax(-1).tolist()
        slots = mixed.Slots(model.config.num_hidden_layers)
        slots.add(step.prompt_kv, [len(i) for i in ids])
        new = [tok(t, add_special_tokens=False)["input_ids"] for t in PROMPTS[3:]] + [[5, 6, 7]]
        logits, _ = mixed.forward(
            model,
            tokens=picks,
            positions=[len(i) for i in ids],
            slots=slots,
            prompts=new,
        )
        wanted = [[*i, p] for i, p in zip(ids, picks, strict=True)] + new
        assert len(logits) == len(wanted)
        assert_own_logits(model, logits, wanted)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_a_decode_step_gives_the_model_s_own_logits(tiny: dict[str, Path], arch: str) -> None:
    """Steps without new prompts (the common step): rows of different lengths (some columns
    hidden from some rows), and one row alone (nothing hidden), each against the model's own
    forward of that sequence, over several steps."""
    import torch

    state = loaded(tiny[arch])
    model, tok = state.model, state.tokenizer
    assert mixed.install(model, tok)
    for texts in (PROMPTS[:4], PROMPTS[:1]):
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        with torch.inference_mode():
            logits, step = mixed.forward(model, tokens=[], positions=[], slots=None, prompts=ids)
            slots = mixed.Slots(model.config.num_hidden_layers)
            slots.add(step.prompt_kv, [len(i) for i in ids])
            sequences = [list(i) for i in ids]
            for _ in range(3):
                logits, step = step_on(model, slots, logits, sequences)
                slots.advance()
                assert (step.bias(1, 1, torch.float32)[1] == 0.0) == (len(ids) == 1)
                assert len(logits) == len(sequences)
                assert_own_logits(model, logits, sequences)


@pytest.mark.parametrize(
    ("lengths", "dtype", "atol"),
    [
        ((7, 3, 12, 1), "float32", 1e-5),  # rows starting at different columns
        ((9,), "float32", 1e-5),  # one row: nothing hidden, no bias
        ((5, 5), "float32", 1e-5),  # rows starting together: no bias either
        ((7, 3, 12, 1), "bfloat16", 2e-2),  # SDPA's own: it keeps half-precision scores in float32
    ],
)
def test_decode_rows_attention_equals_sdpa(
    lengths: tuple[int, ...], dtype: str, atol: float
) -> None:
    """The CPU's decode attention (float32: batched products over column-last keys; bfloat16:
    SDPA over size-last keys) against PyTorch's SDPA in float32 on the same keys, values and
    mask, grouped query heads included."""
    import torch
    import torch.nn.functional as F

    kind = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(3)
    heads, kv_heads, size = 8, 2, 16
    prompt_kv = {
        0: [
            (
                torch.randn(1, kv_heads, n, size, generator=gen).to(kind),
                torch.randn(1, kv_heads, n, size, generator=gen).to(kind),
            )
            for n in lengths
        ]
    }
    slots = mixed.Slots(1)
    slots.add(prompt_kv, list(lengths))
    slots.reserve()
    own = dtype == "float32"
    assert slots.keys[0].stride(2 if own else 3) == 1  # column-last: what the products read fastest
    step = mixed.Step(rows=len(lengths), slots=slots, prompts=[])
    rows = len(lengths)
    query = torch.randn(rows, heads, 1, size, generator=gen).to(kind)
    key = torch.randn(rows, kv_heads, 1, size, generator=gen).to(kind)
    keys, values = slots.append(0, key, key * 2)
    got = mixed.rows_attention(query, keys, values, step, None)
    want = F.scaled_dot_product_attention(
        query.float(), keys.float(), values.float(), attn_mask=step.mask, enable_gqa=True
    )
    assert got.shape == (rows, heads, 1, size) and got.dtype == kind
    assert torch.allclose(got.float(), want, atol=atol), (got.float() - want).abs().max()
    # And a row's output does not depend on the rows beside it.
    for row in range(rows):
        alone = F.scaled_dot_product_attention(
            query[row : row + 1].float(),
            keys[row : row + 1, :, slots.first[row] - slots.lo :].float(),
            values[row : row + 1, :, slots.first[row] - slots.lo :].float(),
            enable_gqa=True,
        )
        assert torch.allclose(got[row : row + 1].float(), alone, atol=atol)


def test_a_long_running_batch_slides_its_columns_instead_of_new_buffers() -> None:
    """Decode steps move every row's end one column right; when the columns run out, the
    live ones slide back inside the same buffers (new ones, zeroed and filled, took a step
    120 ms with 16 replies): over 2,000 steps with rows leaving and joining, the buffers
    are the ones first allocated, and every row still reads its own keys."""
    import torch

    slots = mixed.Slots(1)
    rows: list[list[float]] = []
    counter = iter(range(1, 10**6))

    def join(length: int) -> None:
        values = [float(next(counter)) for _ in range(length)]
        t = torch.tensor(values).view(1, 1, -1, 1)
        slots.add({0: [(t.clone(), -t.clone())]}, [length])
        rows.append(values)

    for length in (30, 12, 50, 7):
        join(length)
    buffers = (slots.keys[0], slots.values[0])
    slides = 0
    for step in range(2000):
        before = slots.end
        if step % 40 == 39:  # the oldest leaves, a new one joins: the width stays bounded
            oldest = slots.first.index(min(slots.first))
            slots.remove(oldest)
            rows[oldest] = rows[-1]
            rows.pop()
            join(20)
        slots.reserve()
        slides += slots.end < before  # the rows' end moved back left
        column = [float(next(counter)) for _ in rows]
        new = torch.tensor(column).view(-1, 1, 1, 1)
        slots.append(0, new, -new)
        slots.advance()
        for held, value in zip(rows, column, strict=True):
            held.append(value)
    assert slides >= 3
    assert slots.keys[0] is buffers[0] and slots.values[0] is buffers[1]  # never reallocated
    keys = slots.keys[0][: slots.rows, 0, :, 0]
    for r, held in enumerate(rows):
        assert keys[r, slots.first[r] : slots.end].tolist() == held
        assert slots.values[0][r, 0, slots.first[r] : slots.end, 0].tolist() == [-v for v in held]


def test_room_made_ahead_for_a_long_prompt_is_what_its_join_takes() -> None:
    """A prompt read in chunks has the bigger buffers it will need made a part each step
    (``prepare``): its join takes them (no allocation in that step), the rows already there
    keep their keys, and steps in between (the live columns growing) do not waste them."""
    import torch

    slots = mixed.Slots(2)
    rows = [[float(i) for i in range(1, 21)], [float(i) for i in range(100, 105)]]
    lengths = [len(r) for r in rows]

    def kv(values: list[float]) -> tuple[Any, Any]:
        t = torch.tensor(values).view(1, 1, -1, 1).expand(1, 2, -1, 3)
        return t.clone(), -t.clone()

    slots.add({layer: [kv(r) for r in rows] for layer in (0, 1)}, lengths)
    before = slots.keys[0]
    made: list[Any] = []
    for steps in (3, 2, 1):  # three chunk steps: each makes a third of the 4 buffers (ceil)
        slots.prepare(rows=3, left=600, steps=steps)
        assert slots._spare is not None
        made = slots._spare[1] + slots._spare[2]
        slots.reserve()
        column = [float(len(r) + 1000) for r in rows]
        new = torch.tensor(column).view(-1, 1, 1, 1).expand(-1, 2, 1, 3)
        for layer in (0, 1):
            slots.append(layer, new, -new)
        slots.advance()
        for held, value in zip(rows, column, strict=True):
            held.append(value)
    assert len(made) == 4 and slots.keys[0] is before  # made, not yet taken
    long = [float(i) for i in range(5000, 5600)]
    slots.add({layer: [kv(long)] for layer in (0, 1)}, [600])
    rows.append(long)
    assert slots._spare is None
    assert all(any(b is m for m in made) for b in slots.keys + slots.values)  # taken
    for r, held in enumerate(rows):
        keys = slots.keys[1][r, 1, slots.first[r] : slots.end, 2].tolist()
        assert keys == held
        assert slots.values[0][r, 0, slots.first[r] : slots.end, 0].tolist() == [-v for v in held]


def test_slots_keep_every_row_s_tokens_through_joins_leaves_and_growth() -> None:
    """Rows of random lengths join, decode, leave (the last row moving into the gap) and the
    buffers grow past their capacity: every row always reads exactly its own keys, in order,
    ending at the shared column, with padding masked."""
    import random

    import torch

    rng = random.Random(7)
    slots = mixed.Slots(2)
    rows: list[list[float]] = []  # what each row must hold, oldest first
    counter = iter(range(1, 10**6))

    def kv(values: list[float]) -> tuple[Any, Any]:
        t = torch.tensor(values, dtype=torch.float32).view(1, 1, -1, 1).expand(1, 2, -1, 3)
        return t.clone(), -t.clone()

    for _ in range(300):
        action = rng.random()
        if action < 0.3 or not rows:  # one to three prompts join, some longer than the width
            lengths = [rng.choice([1, 5, 40, 300]) for _ in range(rng.randint(1, 3))]
            prompts = [[float(next(counter)) for _ in range(n)] for n in lengths]
            slots.add({layer: [kv(p) for p in prompts] for layer in (0, 1)}, lengths)
            rows.extend(prompts)
        elif action < 0.5:  # one leaves
            row = rng.randrange(len(rows))
            slots.remove(row)
            rows[row] = rows[-1]
            rows.pop()
            if not rows:  # an idle batch keeps its buffers (or, past a size, drops them)
                slots = slots.empty() if rng.random() < 0.7 else mixed.Slots(2)
        else:  # a decode step
            slots.reserve()
            column = [float(next(counter)) for _ in rows]
            new = torch.tensor(column).view(-1, 1, 1, 1).expand(-1, 2, 1, 3)
            for layer in (0, 1):
                slots.append(layer, new, -new)
            slots.advance()
            for held, value in zip(rows, column, strict=True):
                held.append(value)
        assert slots.rows == len(rows)
        if not rows:
            continue
        slots.reserve()
        mask = slots.mask()[:, 0, 0, :-1]  # the live columns, without the next step's
        keys = slots.keys[1][: slots.rows, 0, slots.lo : slots.end, 0]
        for r, held in enumerate(rows):
            assert mask[r].tolist() == [False] * (mask.shape[1] - len(held)) + [True] * len(held)
            assert keys[r, mask[r]].tolist() == held
            assert slots.values[0][r, 1, slots.end - len(held) : slots.end, 2].tolist() == [
                -v for v in held
            ]


def test_the_model_s_own_forward_is_unchanged_after_install(tiny: dict[str, Path]) -> None:
    import torch

    state = loaded(tiny["llama"], mixed=False)
    assert state.model.config._attn_implementation == "sdpa" and not state.mixed
    inputs = torch.tensor([[5, 9, 13, 21, 7]])
    with torch.inference_mode():
        before = state.model(input_ids=inputs).logits
        assert mixed.install(state.model, state.tokenizer)
        after = state.model(input_ids=inputs).logits
    assert state.model.config._attn_implementation == mixed.NAME
    assert torch.equal(before, after)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_replies_equal_replies_with_separate_prefill_steps(
    tiny: dict[str, Path], arch: str
) -> None:
    """Requests arriving while others decode (they join mid-batch), greedy: the same text
    with mixed steps as with a separate prefill forward per group."""
    replies = {}
    for flag in (True, False):
        backend = TransformersBackend(str(tiny[arch]), device="cpu", max_batch=8, mixed=flag)
        run(backend, "warm up", GREEDY)
        assert backend._batcher is not None
        assert backend._batcher.mixed is (flag and arch != "gpt2")
        replies[flag], most = staggered(backend, PROMPTS)
        assert most > 1  # they shared steps
    assert replies[True] == replies[False]


def staggered(
    backend: TransformersBackend, prompts: list[str], *, prefill_tokens: int | None = None
) -> tuple[list[str], int]:
    """Start one request, then the others one by one, each two steps after the last (they
    join mid-batch), on a scheduler stepped here: the same interleaving on every machine (a
    thread per request 10 ms apart let a fast machine finish each reply before the next
    came)."""
    from inference.batching import Request, Scheduler

    assert backend._batcher is not None
    scheduler = Scheduler(backend.load(), max_batch=8, mixed=backend._batcher.mixed)
    if prefill_tokens is not None:
        scheduler.prefill_tokens = prefill_tokens
    outputs: list[list[Any]] = [[] for _ in prompts]
    waiting = list(range(len(prompts)))
    steps = 0

    def submit_next() -> None:
        i = waiting.pop(0)
        scheduler.submit(
            Request(
                [{"role": "user", "content": prompts[i]}],
                GREEDY,
                threading.Event(),
                outputs[i].append,
            )
        )

    def after_step() -> None:
        nonlocal steps
        steps += 1
        if waiting and steps % 2 == 0:
            submit_next()

    scheduler.after_step = after_step
    submit_next()
    while True:  # the batch may empty before the next request comes: step on until all ran
        scheduler.run_until_idle()
        if not scheduler.pending:
            break
    assert not waiting and all(isinstance(out[-1], Result) for out in outputs)
    texts = ["".join(x for x in out if isinstance(x, str)) for out in outputs]
    return texts, scheduler.max_seen  # most replies in the batch at once


def test_the_bundled_model_takes_mixed_steps_and_replies_as_before() -> None:
    with_mixed = TransformersBackend(str(BUNDLED), device="cpu", max_batch=16)
    without = TransformersBackend(str(BUNDLED), device="cpu", max_batch=16, mixed=False)
    prompts = ["What can you do?", "Tell me a joke.", "How do I switch to a bigger model?"] * 2
    options = GenerationOptions(temperature=0, max_new_tokens=40)
    a = together(with_mixed, [(p, options) for p in prompts])
    b = together(without, [(p, options) for p in prompts])
    assert with_mixed._batcher is not None and with_mixed._batcher.mixed
    assert [text for text, _ in a] == [text for text, _ in b]
    assert with_mixed._batcher.max_group > 1  # prompts really were read together


def test_the_bundled_model_in_bfloat16_takes_mixed_steps_too() -> None:
    """STELLARCHAT_DTYPE=bfloat16 on a CPU: the self-check at load still passes (decode rows'
    scores computed in bfloat16 once failed it, silently falling back to separate prefill)."""
    backend = TransformersBackend(str(BUNDLED), device="cpu", dtype="bfloat16", max_batch=8)
    assert backend.load().mixed
    options = GenerationOptions(temperature=0, max_new_tokens=24)
    prompts = ["What can you do?", "Tell me a joke.", "How do I switch to a bigger model?"]
    alone = [run(backend, p, options)[0] for p in prompts]
    assert [text for text, _ in together(backend, [(p, options) for p in prompts])] == alone


def test_a_prompt_that_fails_in_a_mixed_step_fails_alone(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forward raises whenever one poisoned prompt is in it: that request ends with an
    error, the rows already decoding and the prompts beside it reply as without it."""
    backend = TransformersBackend(str(tiny["llama"]), device="cpu", max_batch=8)
    expected = run(backend, "hi", GREEDY)[0]
    poison = backend.load().tokenizer("poison", add_special_tokens=False)["input_ids"]
    real = mixed.forward
    failures = []

    def forward(model: Any, **kw: Any) -> Any:
        if any(_contains(p, poison) for p in kw["prompts"]):
            failures.append(len(kw["prompts"]))
            raise RuntimeError("simulated kernel failure")
        return real(model, **kw)

    monkeypatch.setattr(mixed, "forward", forward)
    results = together(backend, [("hi", GREEDY), ("poison", GREEDY), ("hi", GREEDY)])
    assert failures  # the poisoned prompt did go through a mixed step
    assert results[1][1].finish_reason == "error" and results[1][1].error_code == "internal"
    assert "simulated kernel failure" in (results[1][1].error or "")
    assert results[0][0] == expected and results[2][0] == expected
    assert run(backend, "hi", GREEDY)[0] == expected  # and it serves on


def _contains(seq: list[int], part: list[int]) -> bool:
    return any(seq[i : i + len(part)] == part for i in range(len(seq) - len(part) + 1))


def test_a_prompt_the_tokenizer_refuses_ends_with_an_error_not_a_hang(
    tiny: dict[str, Path],
) -> None:
    backend = TransformersBackend(str(tiny["llama"]), device="cpu", max_batch=8)
    results = together(backend, [("hi", GREEDY), ("\ud800 lone surrogate", GREEDY)])
    assert results[0][1].finish_reason in ("stop", "length")
    result: Result = results[1][1]
    assert result.finish_reason == "error" and result.error_code == "internal"
    assert "could not read this conversation" in (result.error or "")


def test_a_model_failing_its_self_check_keeps_separate_prefill_steps(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mixed, "self_check", lambda model, tokenizer: "logits differ (test)")
    backend = TransformersBackend(str(tiny["llama"]), device="cpu", max_batch=8)
    text, result = run(backend, "hi", GREEDY)
    assert backend._batcher is not None and backend._batcher.mixed is False
    assert backend.load().model.config._attn_implementation == "sdpa"
    assert result.finish_reason in ("stop", "length") and text


def test_prompts_past_the_step_budget_are_read_in_chunks(
    tiny: dict[str, Path],
) -> None:
    backend = TransformersBackend(str(tiny["llama"]), device="cpu", max_batch=8)
    alone = [run(backend, p, GREEDY)[0] for p in PROMPTS]
    assert backend._batcher is not None
    backend._batcher.prefill_tokens = 20  # every prompt past the first in a step of its own
    batched = together(backend, [(p, GREEDY) for p in PROMPTS])
    assert [text for text, _ in batched] == alone


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_a_prompt_read_in_chunks_gives_the_model_s_own_logits(
    tiny: dict[str, Path], arch: str
) -> None:
    """A prompt read in three chunks over three steps, beside decoding rows: its logits and
    the decode steps after it joins equal the model's own forward of the whole sequence."""
    import torch

    state = loaded(tiny[arch])
    model, tok = state.model, state.tokenizer
    assert mixed.install(model, tok)
    long = tok(" ".join(PROMPTS), add_special_tokens=False)["input_ids"]
    chunks = [long[:7], long[7:20], long[20:]]
    assert all(chunks) and len(long) > 25
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in PROMPTS[:2]]
    with torch.inference_mode():
        logits, step = mixed.forward(model, tokens=[], positions=[], slots=None, prompts=rows)
        slots = mixed.Slots(model.config.num_hidden_layers)
        slots.add(step.prompt_kv, [len(r) for r in rows])
        sequences = [list(r) for r in rows]
        past = None
        for chunk in chunks:
            logits, step = step_on(model, slots, logits, sequences, prompts=[chunk], pasts=[past])
            slots.advance()
            past = [step.prompt_kv[layer][0] for layer in range(len(step.prompt_kv))]
            assert_own_logits(model, logits, sequences)  # the rows; the chunk's row below
        assert_own_logits(model, logits[-1:], [list(long)])
        assert past[0][0].shape[2] == len(long)
        # The prompt joins the batch with every chunk's keys and values: it decodes right.
        slots.add({layer: [kv] for layer, kv in enumerate(past)}, [len(long)])
        sequences.append(list(long))
        logits, _ = step_on(model, slots, logits, sequences)
        assert len(logits) == len(sequences)
        assert_own_logits(model, logits, sequences)


def _three_then_one(
    scheduler: Any, options: GenerationOptions, joining: str
) -> tuple[list[list[Any]], list[tuple[int, list[int]]]]:
    """Three of PROMPTS stream through ``scheduler``; after its third step ``joining`` joins.
    Returns each reply's items and (rows decoding, prompt tokens read) of every step."""
    from inference import batching

    seen: list[tuple[int, list[int]]] = []
    real = mixed.forward

    def forward(model: Any, **kw: Any) -> Any:
        seen.append((len(kw["tokens"]), [len(p) for p in kw["prompts"]]))
        return real(model, **kw)

    outputs: list[list[Any]] = [[] for _ in range(4)]

    def submit(i: int, text: str) -> None:
        scheduler.submit(
            batching.Request(
                [{"role": "user", "content": text}], options, threading.Event(), outputs[i].append
            )
        )

    def after_step() -> None:
        if len(seen) == 3:
            submit(3, joining)  # joins while the three stream

    scheduler.after_step = after_step
    for i, text in enumerate(PROMPTS[:3]):
        submit(i, text)
    mixed.forward = forward
    try:
        scheduler.run_until_idle()
    finally:
        mixed.forward = real
    return outputs, seen


def test_a_long_prompt_joining_streaming_replies_is_read_in_chunks_and_changes_nothing(
    tiny: dict[str, Path],
) -> None:
    """Greedy replies streaming while a long prompt joins: it is read over several steps (each
    within the step's budget, the rows decoding in every one of them), and every reply's text
    equals its text alone."""
    from inference import batching

    backend = TransformersBackend(str(tiny["long"]), device="cpu", max_batch=8)
    long_text = " ".join(PROMPTS) * 3
    options = GenerationOptions(temperature=0, max_new_tokens=40)
    alone = [run(backend, p, options) for p in [*PROMPTS[:3], long_text]]
    assert all(result.finish_reason in ("stop", "length") for _, result in alone)
    assert backend._batcher is not None
    scheduler = batching.Scheduler(backend.load(), max_batch=8, mixed=True)
    outputs, seen = _three_then_one(scheduler, options, long_text)
    texts = ["".join(x for x in out if isinstance(x, str)) for out in outputs]
    assert texts == [text for text, _ in alone]
    assert all(out[-1].finish_reason in ("stop", "length") for out in outputs)
    long_tokens = alone[3][1].prompt_tokens
    reads = [(rows, sizes) for rows, sizes in seen[3:] if sizes]
    assert long_tokens > batching.FIRST_CHUNK
    assert len(reads) >= 2  # read over several steps (how many: what tokens cost here) ...
    assert all(rows == 3 and sum(sizes) <= batching.FIRST_CHUNK for rows, sizes in reads[:1])
    assert sum(sum(sizes) for _, sizes in reads) == long_tokens  # ... every token once
    assert all(rows > 0 for rows, _ in reads)  # ... beside the streaming replies


def test_the_step_budget_follows_what_prompt_tokens_cost(tiny: dict[str, Path]) -> None:
    from inference import batching

    scheduler = batching.Scheduler(TransformersBackend(str(tiny["llama"])).load(), max_batch=8)
    assert scheduler._prompt_budget() == scheduler.prefill_tokens  # nobody streaming
    scheduler.seqs = [object()]  # type: ignore[list-item]
    assert scheduler._prompt_budget() == batching.FIRST_CHUNK  # nothing measured yet
    scheduler._learn(10.0, rows=4, tokens=0)  # a decode step: 10 ms
    scheduler._learn(40.0, rows=4, tokens=100)  # +100 tokens: +30 ms, 0.3 ms a token
    assert scheduler._prompt_budget() == int(batching.CHUNK_MS / 0.3)
    for _ in range(20):
        scheduler._learn(1010.0, rows=4, tokens=100)  # tokens got dear: 10 ms each
    assert scheduler._prompt_budget() == batching.MIN_CHUNK
    for _ in range(20):
        scheduler._learn(10.1, rows=4, tokens=1000)  # tokens got cheap
    assert scheduler._prompt_budget() == scheduler.prefill_tokens


def _join_beside(
    path: Path, dear_rows: bool
) -> tuple[list[str], list[tuple[int, list[int]]], list[str]]:
    """Three greedy replies stream; at their third step a short question joins. The step costs
    are pinned (``_learn`` off): a decode step of the three ``dear_rows`` (30 ms) or cheap
    (2 ms) against 5 ms for a step of prompts alone, 0.1 ms a prompt token. Returns every
    reply's text, (rows, prompt tokens) of each step, and the texts of each alone."""
    from inference import batching

    backend = TransformersBackend(str(path), device="cpu", max_batch=8)
    options = GenerationOptions(temperature=0, max_new_tokens=30)
    question = "Why?"
    alone = [run(backend, p, options)[0] for p in [*PROMPTS[:3], question]]
    scheduler = batching.Scheduler(backend.load(), max_batch=8, mixed=True)
    scheduler._learn = lambda *a, **k: None  # type: ignore[method-assign]
    scheduler.decode_ms = 30.0 if dear_rows else 2.0
    scheduler.alone_ms, scheduler.prompt_ms, scheduler.prompt_tokens = 5.0, 1.0, 10.0
    outputs, seen = _three_then_one(scheduler, options, question)
    assert all(out[-1].finish_reason in ("stop", "length") for out in outputs)
    return ["".join(x for x in out if isinstance(x, str)) for out in outputs], seen, alone


def test_a_short_question_is_read_ahead_of_a_batch_whose_steps_are_dear(
    tiny: dict[str, Path],
) -> None:
    """Where the batch's step costs much more than reading a short prompt alone (a CPU with
    several rows), the question gets a step of its own before the rows' next one: its first
    token does not wait for the big step. The rows wait one short step; every text is as
    alone."""
    texts, seen, alone = _join_beside(tiny["llama"], dear_rows=True)
    assert texts == alone
    joined = next(i for i, (_, sizes) in enumerate(seen) if i >= 3 and sizes)
    assert seen[joined][0] == 0  # read with no rows beside it ...
    assert seen[joined + 1] == (4, [])  # ... and the next step is the rows', the question in


def test_a_short_question_is_read_beside_a_batch_whose_steps_are_cheap(
    tiny: dict[str, Path],
) -> None:
    """Where more rows cost a step little (a GPU), reading the question beside them costs it
    nothing: no step of its own, the rows never wait."""
    texts, seen, alone = _join_beside(tiny["llama"], dear_rows=False)
    assert texts == alone
    joined = next(i for i, (_, sizes) in enumerate(seen) if i >= 3 and sizes)
    assert seen[joined][0] == 3
    assert all(rows for rows, _ in seen[1:])  # once the batch runs, every step decodes it


def test_steps_ahead_of_the_batch_are_never_two_in_a_row_and_learn_their_cost(
    tiny: dict[str, Path],
) -> None:
    from inference import batching

    scheduler = batching.Scheduler(TransformersBackend(str(tiny["llama"])).load(), max_batch=8)
    scheduler.waiting.extend(_waiting([12, 300, 9]))
    assert scheduler._first_prompts() == []  # no batch: every step reads prompts anyway
    scheduler.seqs = [object()] * 3  # type: ignore[list-item]
    assert scheduler._first_prompts() == []  # nothing measured: the budget is unknown
    scheduler._learn(30.0, rows=3, tokens=0)  # the batch's decode step: 30 ms
    scheduler._learn(40.0, rows=3, tokens=100)  # +100 prompt tokens: +10 ms (budget 200)
    first = scheduler._first_prompts()  # never measured alone: this step tells
    assert [len(s.prompt_ids) for s, _ in first] == [12, 9]  # short ones, whole, not the long
    scheduler._learn(7.1, rows=0, tokens=21, whole=True)  # alone: 5 ms + their tokens' share
    assert scheduler.alone_ms == pytest.approx(5.0)
    assert len(scheduler._first_prompts()) == 2  # 30 + 2.1 >= 1.2 x (5 + 2.1)
    scheduler.first_step = True
    assert scheduler._first_prompts() == []  # the batch's turn
    scheduler.first_step = False
    for _ in range(30):
        scheduler._learn(30.0, rows=0, tokens=21, whole=True)  # prompts alone got as dear
    assert scheduler._first_prompts() == []
    # A chunk of a long prompt teaches nothing about prompts read alone.
    before = scheduler.alone_ms
    scheduler._learn(1.0, rows=0, tokens=16, whole=False)
    assert scheduler.alone_ms == before


def _waiting(lengths: list[int], read: int = 0) -> list[Any]:
    from types import SimpleNamespace

    seqs = [SimpleNamespace(prompt_ids=[1] * n, read=0) for n in lengths]
    seqs[0].read = read
    return seqs


def test_plan_chunks_reads_short_prompts_whole_beside_a_long_one() -> None:
    from inference.batching import MIN_CHUNK, plan_chunks

    def plan(waiting: list[Any], budget: int) -> list[tuple[int, int]]:
        return [(waiting.index(s), n) for s, n in plan_chunks(waiting, budget)]

    # Nothing part-read: short ones whole, the first long one starts with what is left.
    assert plan(_waiting([20, 500, 30, 400]), 100) == [(0, 20), (2, 30), (1, 50)]
    # One part-read: the short ones behind it go whole, it takes what is left; a second long
    # one waits until the first is read.
    assert plan(_waiting([500, 30, 400, 10], read=80), 100) == [(0, 60), (1, 30), (3, 10)]
    # Short ones that take the whole budget still leave it a quarter: it always gets on.
    assert plan(_waiting([500, 60, 40], read=80), 100) == [(0, 25), (1, 60), (2, 40)]
    # A budget shrunk to the minimum (steps slow on a busy machine) never holds a short
    # question behind the long one's chunks (it waited for all of them: 378 ms).
    assert plan(_waiting([199, 14], read=30), MIN_CHUNK) == [(0, MIN_CHUNK // 4), (1, 14)]
    # Alone it takes the whole budget, and never more than it has left.
    assert plan(_waiting([500], read=450), 100) == [(0, 50)]
    # A tiny budget still makes progress.
    assert plan(_waiting([500, 400]), MIN_CHUNK) == [(0, MIN_CHUNK)]


def test_a_reply_stopped_while_its_prompt_is_read_ends_cancelled(tiny: dict[str, Path]) -> None:
    from inference import batching

    backend = TransformersBackend(str(tiny["llama"]), device="cpu", max_batch=8)
    scheduler = batching.Scheduler(backend.load(), max_batch=8, mixed=True)
    scheduler.prefill_tokens = 8  # every prompt read 8 tokens a step
    outputs: list[list[Any]] = [[], []]
    cancel = threading.Event()
    for i, stop in enumerate((threading.Event(), cancel)):
        scheduler.submit(
            batching.Request(
                [{"role": "user", "content": " ".join(PROMPTS)}],
                GREEDY,
                stop,
                outputs[i].append,
            )
        )
    steps = 0

    def after_step() -> None:
        nonlocal steps
        steps += 1
        if steps == 2:
            assert any(seq.read for seq in scheduler.waiting)  # part-read now
            cancel.set()

    scheduler.after_step = after_step
    scheduler.run_until_idle()
    assert outputs[1][-1].finish_reason == "cancelled" and len(outputs[1]) == 1
    assert outputs[0][-1].finish_reason in ("stop", "length")
    assert not scheduler.waiting and not scheduler.seqs


def test_requests_arriving_while_prompts_are_part_read_are_all_answered(
    tiny: dict[str, Path],
) -> None:
    """Every prompt read 8 tokens a step, a new request every two steps: each arrives while
    others are part-read (a request taken then was once lost: it started, and never got an
    answer), and each gets the reply it gets alone."""
    backend = TransformersBackend(str(tiny["llama"]), device="cpu", max_batch=8)
    alone = [run(backend, p, GREEDY)[0] for p in PROMPTS]
    texts, most = staggered(backend, PROMPTS, prefill_tokens=8)
    assert texts == alone and most > 1


@pytest.mark.parametrize("whole", [0, 10**9], ids=["buffers", "arena"])
def test_the_cache_never_grows_past_the_batch_and_the_context(whole: int) -> None:
    """Rows up to the batch's size, prompts up to the context, thousands of steps with rows
    leaving and joining: the buffers stay within max_rows rows and the context plus room to
    slide (they once doubled past both, and a busy batch of long conversations kept that),
    and every row reads its own keys throughout, shrinking included (new buffers, or views
    of one arena)."""
    import random

    import torch

    rng = random.Random(3)
    slots = mixed.Slots(1, max_rows=6, max_columns=300, whole_bytes=whole)
    rows: list[list[float]] = []
    counter = iter(range(1, 10**7))

    def join(length: int) -> None:
        values = [float(next(counter)) for _ in range(length)]
        t = torch.tensor(values).view(1, 1, -1, 1)
        slots.add({0: [(t.clone(), -t.clone())]}, [length])
        rows.append(values)

    for _ in range(3000):
        if len(rows) < 6 and rng.random() < 0.2:
            join(rng.choice([1, 30, 150, 299]))
        if rows and (rng.random() < 0.05 or max(len(r) for r in rows) >= 300):
            row = max(range(len(rows)), key=lambda r: len(rows[r]))  # at the context: it ends
            slots.remove(row)
            rows[row] = rows[-1]
            rows.pop()
        if not rows:
            continue
        slots.reserve()
        column = [float(next(counter)) for _ in rows]
        new = torch.tensor(column).view(-1, 1, 1, 1)
        slots.append(0, new, -new)
        slots.advance()
        for held, value in zip(rows, column, strict=True):
            held.append(value)
        stats = slots.stats()
        assert stats["row_capacity"] <= 6 and stats["column_capacity"] <= 300 + 64 + 256, stats
        if slots.end % 97 == 0:
            slots.shrink()
            keys = slots.keys[0][: slots.rows, 0, :, 0]
            for r, held in enumerate(rows):
                assert keys[r, slots.first[r] : slots.end].tolist() == held
    assert slots.in_arena == bool(whole)
    keys = slots.keys[0][: slots.rows, 0, :, 0]
    for r, held in enumerate(rows):
        assert keys[r, slots.first[r] : slots.end].tolist() == held


def test_buffers_a_long_row_made_long_shrink_when_it_leaves() -> None:
    """A long conversation joins a batch of short ones (every row's buffer grows to its
    length), then ends: the buffers shrink back to what the rows left need, and each row
    still reads exactly its own keys; with nothing to gain, nothing moves."""
    import torch

    slots = mixed.Slots(2)
    rows: list[list[float]] = []
    counter = iter(range(1, 10**6))

    def join(length: int) -> None:
        values = [float(next(counter)) for _ in range(length)]
        t = torch.tensor(values).view(1, 1, -1, 1).expand(1, 2, -1, 3)
        slots.add({layer: [(t.clone(), -t.clone())] for layer in (0, 1)}, [length])
        rows.append(values)

    for length in (10, 20, 30, 2000):
        join(length)
    assert not slots.shrink()  # the long row is still there
    big = slots.nbytes
    slots.remove(3)
    rows.pop()
    assert slots.shrink() and slots.nbytes < big / 4
    assert not slots.shrink()
    for r, held in enumerate(rows):
        for layer in (0, 1):
            keys = slots.keys[layer][r, 1, slots.first[r] : slots.end, 2].tolist()
            assert keys == held
            values = slots.values[layer][r, 0, slots.first[r] : slots.end, 1].tolist()
            assert values == [-v for v in held]
    slots.reserve()  # and it goes on: a decode step's column fits
    assert slots.end + 1 <= slots.keys[0].shape[2]


def test_buffers_made_ahead_all_have_the_set_s_shape() -> None:
    """``prepare`` called again with a smaller need (fewer steps left, less slack) goes on
    making the set it began, in that set's shape: a set of mixed sizes once let a decode step
    write past the end of a value buffer (the keys, checked, were longer)."""
    import torch

    slots = mixed.Slots(3)
    t = torch.ones(1, 2, 10, 4)
    slots.add({layer: [(t.clone(), t.clone())] for layer in range(3)}, [10])
    for steps in (6, 5, 3, 2, 1):  # the slack shrinks with the steps left
        slots.prepare(rows=2, left=500, steps=steps)
    assert slots._spare is not None
    shape, keys, values = slots._spare
    assert len(keys) == len(values) == 3
    assert {tuple(b.shape) for b in keys + values} == {shape}
    long = torch.ones(1, 2, 500, 4)
    slots.add({layer: [(long.clone(), long.clone())] for layer in range(3)}, [500])
    assert len({tuple(b.shape) for b in slots.keys + slots.values}) == 1
    for _ in range(400):  # decode steps well past the joined row's end
        slots.reserve()
        column = torch.zeros(2, 2, 1, 4)
        for layer in range(3):
            slots.append(layer, column, column)
        slots.advance()


def test_a_cache_that_fits_its_limit_takes_its_memory_once() -> None:
    """With ``whole_bytes`` room for the batch size by the context, the first join takes
    that memory (an arena per layer) and every later buffer is a view of it, as small as the
    rows need (joins, a prompt as long as the context, shrinking); each row still reads
    exactly its own keys. With less room the buffers are new tensors, grown as needed."""
    import torch

    rows: list[list[float]] = []
    counter = iter(range(1, 10**6))

    def fill(slots: mixed.Slots, lengths: list[int]) -> None:
        for length in lengths:
            values = [float(next(counter)) for _ in range(length)]
            t = torch.tensor(values).view(1, 1, -1, 1).expand(1, 2, -1, 4)
            slots.add({layer: [(t.clone(), -t.clone())] for layer in (0, 1)}, [length])
            rows.append(values)

    def check(slots: mixed.Slots) -> None:
        for r, held in enumerate(rows):
            for layer in (0, 1):
                keys = slots.keys[layer][r, 1, slots.first[r] : slots.end, 3].tolist()
                values = slots.values[layer][r, 0, slots.first[r] : slots.end, 2].tolist()
                assert keys == held and values == [-v for v in held]

    per_column_row = 2 * 2 * 2 * 4 * 4  # layers x (keys, values) x heads x size x float32
    whole = 8 * (400 + 64 + 256) * per_column_row
    slots = mixed.Slots(2, max_rows=8, max_columns=400, whole_bytes=whole)
    fill(slots, [3])
    assert slots.in_arena and slots.nbytes == whole
    arena = list(slots._arena[0] + slots._arena[1])  # held: an address cannot be reused
    first_view = slots.keys[0].shape
    assert first_view[0] < 8 and first_view[2] < 400  # a view as small as the rows need

    def views_of_the_arena() -> bool:
        mine = [t.untyped_storage().data_ptr() for t in slots.keys + slots.values]
        return mine == [a.untyped_storage().data_ptr() for a in arena]

    fill(slots, [100, 7, 50, 99, 1, 2])
    check(slots)
    for _ in range(290):  # decode steps (no row past the context): the columns slide
        slots.reserve()
        column = [float(next(counter)) for _ in rows]
        new = torch.tensor(column).view(-1, 1, 1, 1).expand(-1, 2, 1, 4)
        for layer in (0, 1):
            slots.append(layer, new, -new)
        slots.advance()
        for held, value in zip(rows, column, strict=True):
            held.append(value)
    fill(slots, [390])  # a prompt of nearly the context joins the eighth row
    check(slots)
    assert views_of_the_arena() and slots.nbytes == whole
    for row in reversed(range(len(rows))):  # every long row leaves, two short ones join
        slots.remove(row)
        rows.pop()
    fill(slots, [5, 6])
    assert slots.shrink() and slots.keys[0].shape[0] < 8  # a smaller view: keys sit closer
    check(slots)
    assert views_of_the_arena() and slots.nbytes == whole

    rows.clear()
    grows = mixed.Slots(2, max_rows=8, max_columns=400, whole_bytes=whole - 1)
    fill(grows, [3])
    assert not grows.in_arena and grows.nbytes < whole / 2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_self_check_catches_a_step_that_reads_wrong_positions(
    dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check's tolerance allows a low precision's rounding, not a real mistake: decode rows
    read one position off (their rotary embedding shifted) fail it in float32 and bfloat16."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        str(BUNDLED), dtype=getattr(torch, dtype), attn_implementation="sdpa"
    )
    tokenizer = AutoTokenizer.from_pretrained(str(BUNDLED))
    real = mixed.forward

    def off_by_one(model: Any, *, positions: list[int], **kw: Any) -> Any:
        return real(model, positions=[p + 1 for p in positions], **kw)

    assert mixed.install(model, tokenizer)  # the real step agrees (the check runs inside)
    with torch.inference_mode():
        monkeypatch.setattr(mixed, "forward", off_by_one)
        assert mixed.self_check(model, tokenizer) == (
            "mixed-step logits differ from the model's own forward"
        )
