"""Batched decoding is invisible in the replies: a reply generated in a batch equals the same
reply generated alone (greedy, or sampled with a seed), whatever joins or leaves around it.

Against real models: tiny random Llama, Qwen2 and GPT-2 (three attention/position schemes)
and the bundled StellarByte-mini.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from inference.backends.base import Result
from inference.backends.hf import TransformersBackend
from inference.options import GenerationOptions
from tests.inference import tinymodels

BUNDLED = Path(__file__).resolve().parents[2] / "inference" / "bundled" / "stellarbyte-mini"
PROMPTS = [
    "hi",
    "What can you do?",
    "Tell me a long story about a ship, the sea and a lighthouse keeper.",
    "x" * 40,
    "How do I switch to a bigger model?",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = Path(tmp_path_factory.mktemp("batching"))
    return {arch: tinymodels.build(root / arch, arch) for arch in ("llama", "qwen2", "gpt2")}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def run(backend: TransformersBackend, text: str, options: GenerationOptions, **kw: Any) -> Any:
    items = list(backend.stream(user(text), options, **kw))
    result = items[-1]
    assert isinstance(result, Result)
    return "".join(items[:-1]), result


def together(
    backend: TransformersBackend,
    jobs: list[tuple[str, GenerationOptions]],
    *,
    on_delta: Callable[[int, str], None] | None = None,
    cancels: list[threading.Event] | None = None,
) -> list[tuple[str, Result]]:
    """Start every job at once (each joins the running batch at the next step)."""
    start = threading.Barrier(len(jobs))

    def one(index: int) -> tuple[str, Result]:
        cancel = cancels[index] if cancels else threading.Event()
        start.wait()
        parts: list[str] = []
        for item in backend.stream(user(jobs[index][0]), jobs[index][1], cancel):
            if isinstance(item, Result):
                return "".join(parts), item
            parts.append(item)
            if on_delta is not None:
                on_delta(index, item)
        raise AssertionError("no result")

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(one, range(len(jobs))))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_batched_greedy_replies_equal_replies_alone(tiny: dict[str, Path], arch: str) -> None:
    backend = TransformersBackend(str(tiny[arch]), device="cpu", max_batch=8)
    options = GenerationOptions(temperature=0, max_new_tokens=30)
    alone = [run(backend, p, options) for p in PROMPTS]
    assert backend._batcher is not None and backend._batcher.max_seen == 1
    batched = together(backend, [(p, options) for p in PROMPTS])
    assert backend._batcher.max_seen > 1  # they really shared decode steps
    for (text_a, res_a), (text_b, res_b) in zip(alone, batched, strict=True):
        assert text_b == text_a
        assert res_b.finish_reason == res_a.finish_reason
        assert res_b.completion_tokens == res_a.completion_tokens
        assert res_b.prompt_tokens == res_a.prompt_tokens


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_prompts_prefilled_together_equal_prompts_prefilled_alone(
    tiny: dict[str, Path], arch: str
) -> None:
    """Requests queued together share one left-padded prefill forward (prompts of different
    lengths: padding, per-row positions), and still get the replies they get alone."""
    from inference.batching import Request, Scheduler

    backend = TransformersBackend(str(tiny[arch]), device="cpu", max_batch=8)
    options = GenerationOptions(temperature=0, max_new_tokens=20)
    alone = [run(backend, p, options) for p in PROMPTS]
    scheduler = Scheduler(backend.load(), max_batch=8)
    outputs: list[list[Any]] = [[] for _ in PROMPTS]
    for prompt, out in zip(PROMPTS, outputs, strict=True):
        scheduler.submit(Request(user(prompt), options, threading.Event(), out.append))
    scheduler.run_until_idle()  # everything queued before the loop starts
    assert scheduler.max_group == len(PROMPTS) - 1  # the first alone (probes the cache type)
    for (text, result), out in zip(alone, outputs, strict=True):
        assert "".join(x for x in out if isinstance(x, str)) == text
        assert out[-1].completion_tokens == result.completion_tokens
        assert out[-1].prompt_tokens == result.prompt_tokens


def test_prefill_groups_keep_padding_bounded() -> None:
    from inference.batching import prefill_groups

    class Seq:
        def __init__(self, n: int) -> None:
            self.prompt_ids = [1] * n

    groups = prefill_groups([Seq(n) for n in (30, 900, 32, 28, 35, 31, 1000)], 2048)
    sizes = [[len(s.prompt_ids) for s in g] for g in groups]
    assert sizes == [[28, 30, 31, 32, 35], [900, 1000]]
    assert [len(g) for g in prefill_groups([Seq(300) for _ in range(16)], 2048)] == [6, 6, 4]


def test_the_bundled_model_batched_equals_alone() -> None:
    backend = TransformersBackend(str(BUNDLED), device="cpu", max_batch=16)
    options = GenerationOptions(temperature=0, max_new_tokens=48)
    prompts = PROMPTS * 2
    alone = [run(backend, p, options)[0] for p in prompts]
    batched = [text for text, _ in together(backend, [(p, options) for p in prompts])]
    assert backend._batcher is not None and backend._batcher.max_seen >= 5
    assert batched == alone
    assert all(alone)


# Greedy, top-p and top-k rows with their own seeds, and one with a shorter budget.
OWN_OPTIONS = [
    ("hi", GenerationOptions(temperature=0, max_new_tokens=40)),
    ("hi", GenerationOptions(temperature=1.2, top_p=0.9, max_new_tokens=40, seed=11)),
    ("hi", GenerationOptions(temperature=0.8, top_k=5, max_new_tokens=40, seed=12)),
    ("hi", GenerationOptions(temperature=0, max_new_tokens=7)),
]


def test_each_request_keeps_its_own_options(tiny: dict[str, Path]) -> None:
    backend = TransformersBackend(str(tiny["llama"]), device="cpu", max_batch=8)
    jobs = OWN_OPTIONS
    alone = [run(backend, text, options) for text, options in jobs]
    batched = together(backend, jobs)
    for (text_a, res_a), (text_b, res_b) in zip(alone, batched, strict=True):
        assert text_b == text_a  # same seed, same sample, whatever shares the batch
        assert res_b.completion_tokens == res_a.completion_tokens
    assert batched[3][1].finish_reason == "length" and batched[3][1].completion_tokens == 7
    assert batched[0][0] != batched[1][0]  # sampling really applied to its own row

    # Stop strings are per request too: cut one reply where the greedy one has text.
    greedy_text = alone[0][0]
    stop = greedy_text[5:8]
    assert stop and stop in greedy_text
    stopped = together(
        backend,
        [
            ("hi", GenerationOptions(temperature=0, max_new_tokens=40, stop=(stop,))),
            ("hi", GenerationOptions(temperature=0, max_new_tokens=40)),
        ],
    )
    assert stopped[0][0] == greedy_text[: greedy_text.index(stop)]
    assert stopped[0][1].finish_reason == "stop"
    assert stopped[1][0] == greedy_text


def test_a_cancelled_request_leaves_the_others_untouched(tiny: dict[str, Path]) -> None:
    backend = TransformersBackend(str(tiny["llama"]), device="cpu", max_batch=8)
    options = GenerationOptions(temperature=0, max_new_tokens=60)
    prompts = PROMPTS[:4]
    alone = [run(backend, p, options)[0] for p in prompts]
    cancels = [threading.Event() for _ in prompts]

    def on_delta(index: int, _delta: str) -> None:
        if index == 1:
            cancels[1].set()  # stop the second reply at its first words

    batched = together(backend, [(p, options) for p in prompts], on_delta=on_delta, cancels=cancels)
    assert batched[1][1].finish_reason == "cancelled"
    assert alone[1].startswith(batched[1][0]) and len(batched[1][0]) < len(alone[1])
    for index in (0, 2, 3):
        assert batched[index][0] == alone[index]


def test_a_failing_request_does_not_end_the_others(tiny: dict[str, Path]) -> None:
    backend = TransformersBackend(str(tiny["llama"]), device="cpu", max_batch=8)
    options = GenerationOptions(temperature=0, max_new_tokens=20)
    expected = run(backend, "hi", options)[0]
    # Too long for the tiny model's 256-token context: refused alone, at prefill.
    results = together(
        backend,
        [("hi", options), ("word " * 400, options), ("hi", options)],
    )
    assert results[1][1].finish_reason == "error" and results[1][1].error_code == "too_long"
    assert results[0][0] == expected and results[2][0] == expected


def test_max_batch_one_is_one_at_a_time(tiny: dict[str, Path]) -> None:
    backend = TransformersBackend(str(tiny["llama"]), device="cpu", max_batch=1)
    options = GenerationOptions(temperature=0, max_new_tokens=20)
    alone = run(backend, "hi", options)[0]
    results = together(backend, [("hi", options)] * 3)
    assert [text for text, _ in results] == [alone] * 3
    assert backend._batcher is not None and backend._batcher.max_seen == 1


@pytest.mark.parametrize("seed", range(5))
def test_batch_sampling_matches_transformers_warpers(seed: int) -> None:
    """The batched temperature / top-k / top-p equal transformers' own warpers, row by row."""
    import torch
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from inference.batching import sample_probs

    torch.manual_seed(seed)
    logits = torch.randn(4, 500) * 4
    options = [
        GenerationOptions(temperature=0.7, top_p=0.9),
        GenerationOptions(temperature=1.3, top_k=20),
        GenerationOptions(temperature=1.0, top_k=50, top_p=0.5),
        GenerationOptions(temperature=0.5, top_p=1.0),
        # A flat row: its nucleus holds most of the vocabulary, far past the shortlist.
        GenerationOptions(temperature=1.0, top_p=0.99),
        # Tied logits around the k-th: transformers keeps every tie, so must we. (No top-p:
        # which of equal tokens a sort puts first is arbitrary.)
        GenerationOptions(temperature=1.0, top_k=70, top_p=1.0),
    ]
    logits = torch.cat([logits, torch.randn(1, 500) * 0.05, torch.randint(0, 3, (1, 500)) * 1.0])
    got = sample_probs(logits, options, list(range(len(options))))
    for row, opt in enumerate(options):
        warpers = LogitsProcessorList([TemperatureLogitsWarper(opt.temperature)])
        if opt.top_k:
            warpers.append(TopKLogitsWarper(opt.top_k))
        if opt.top_p < 1:
            warpers.append(TopPLogitsWarper(opt.top_p))
        want = torch.softmax(warpers(None, logits[row : row + 1].clone()), dim=-1)[0]
        assert torch.equal(got[row] > 0, want > 0)
        assert torch.allclose(got[row], want, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_draws_follow_the_warped_distribution(seed: int) -> None:
    """Evenly spread uniforms through ``draw`` land on each token as often as its
    probability says (inverse CDF), and never on a dropped token."""
    import torch

    from inference.batching import draw, sample_probs

    torch.manual_seed(seed)
    options = [
        GenerationOptions(temperature=0.8, top_p=0.95),
        GenerationOptions(temperature=1.0, top_p=1.0),
        GenerationOptions(temperature=1.0, top_k=7, top_p=0.9),
        GenerationOptions(temperature=1.0, top_p=0.999),
    ]
    logits = torch.randn(len(options), 300) * torch.tensor([[3.0], [2.0], [2.0], [0.1]])
    rows = list(range(len(options)))
    want = sample_probs(logits, options, rows)
    steps = 4_000  # one call: every row repeated once per evenly spread uniform
    uniforms = ((torch.arange(steps, dtype=torch.float32) + 0.5) / steps).repeat_interleave(
        len(options)
    )
    picks = draw(logits.repeat(steps, 1), options * steps, list(range(steps * len(rows))), uniforms)
    counts = torch.zeros_like(want)
    for at, token in enumerate(picks):
        counts[at % len(options), token] += 1
    assert bool(((counts > 0) <= (want > 0)).all()), "drew a token of probability 0"
    assert torch.allclose(counts / steps, want, atol=2.0 / steps + 1e-4)


def test_a_row_draws_the_same_token_alone_and_beside_rows_that_widen() -> None:
    """Each row's shortlist is its own: a flat row (its nucleus far past the shortlist) or
    tied top-k logits beside it change nothing for a peaked row, and every row draws what it
    draws alone."""
    import torch

    from inference.batching import draw

    torch.manual_seed(7)
    options = [
        GenerationOptions(temperature=1.0, top_p=1.0),  # no truncation: vocabulary order
        GenerationOptions(temperature=0.8, top_p=0.95),
        GenerationOptions(temperature=1.0, top_p=0.99),  # flat: widens alone
        GenerationOptions(temperature=1.0, top_k=40, top_p=1.0),  # ties around the k-th
        GenerationOptions(temperature=0.7, top_k=5, top_p=0.9),
    ]
    logits = torch.randn(len(options), 4096) * torch.tensor([[2.0], [4.0], [0.05], [1.0], [3.0]])
    logits[3] = torch.randint(0, 3, (4096,)) * 1.0
    for _ in range(20):
        uniforms = torch.rand(len(options))
        together = draw(logits, options, list(range(len(options))), uniforms)
        alone = [
            draw(logits[i : i + 1], [options[i]], [0], uniforms[i : i + 1])[0]
            for i in range(len(options))
        ]
        assert together == alone


def test_a_uniform_at_the_top_of_its_range_never_lands_on_a_dropped_token() -> None:
    from inference.batching import _inverse_cdf

    assert _inverse_cdf([0.5, 0.5, 0.0], 0.999999) == 1
    assert _inverse_cdf([0.3, 0.0, 0.7], 0.35) == 2
    assert _inverse_cdf([0.3, 0.0, 0.7], 0.0) == 0
    assert _inverse_cdf([1.0], 0.5) == 0


def test_seeded_sampling_is_reproducible_and_seed_dependent(tiny: dict[str, Path]) -> None:
    backend = TransformersBackend(str(tiny["llama"]), device="cpu", max_batch=4)
    one = GenerationOptions(temperature=1.0, max_new_tokens=30, seed=1)
    two = GenerationOptions(temperature=1.0, max_new_tokens=30, seed=2)
    assert run(backend, "hi", one)[0] == run(backend, "hi", one)[0]
    assert run(backend, "hi", one)[0] != run(backend, "hi", two)[0]


@pytest.mark.asyncio
async def test_a_request_starts_when_it_joins_the_batch_not_when_queued(
    tiny: dict[str, Path],
) -> None:
    """Waiting for a free slot is not generating: the stall clock starts at admission."""
    import asyncio

    from inference import runner

    backend = TransformersBackend(str(tiny["llama"]), device="cpu", max_batch=1)
    options = GenerationOptions(temperature=0, max_new_tokens=60)
    started: list[tuple[str, int]] = []

    async def one(name: str) -> Result:
        def on_start() -> None:  # on the inference thread, as the request is admitted
            assert backend._batcher is not None
            started.append((name, len(backend._batcher.seqs)))

        async for item in runner.astream(backend, user("hi"), options, on_start=on_start):
            if isinstance(item, Result):
                return item
        raise AssertionError("no result")

    async def later() -> Result:
        await asyncio.sleep(0.02)  # the first is generating by now
        return await one("second")

    first, second = await asyncio.gather(one("first"), later())
    # The second was submitted while the first generated, yet started only once the
    # batch (of one) was empty again.
    assert started == [("first", 0), ("second", 0)]
    assert first.finish_reason == second.finish_reason != "error"


def test_the_padding_mask_always_matches_the_cache(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before every batched step: one mask column per cache position, and each row's real
    tokens exactly where its mask says (what keeps padded rows equal to rows alone)."""
    from inference import batching

    checked: list[int] = []
    original = batching.Scheduler._decode

    def checked_decode(self: batching.Scheduler) -> None:
        width = self.cache.layers[0].keys.shape[-2]
        assert self.mask.shape == (len(self.seqs), width)
        for row, seq in enumerate(self.seqs):
            assert int(self.mask[row].sum()) == seq.length - 1
            assert bool(self.mask[row, -(seq.length - 1) :].all())
        checked.append(len(self.seqs))
        original(self)

    monkeypatch.setattr(batching.Scheduler, "_decode", checked_decode)
    backend = TransformersBackend(str(tiny["gpt2"]), device="cpu", max_batch=8)
    options = GenerationOptions(temperature=0, max_new_tokens=25)
    together(backend, [(p, options) for p in PROMPTS])
    assert checked and max(checked) > 1


@pytest.mark.asyncio
async def test_deltas_of_one_step_cross_to_the_loop_in_one_wake_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The inference thread hands a step's deltas for every stream to the event loop at once,
    in order per stream, and reports a closed loop."""
    import asyncio

    from inference import runner

    loop = asyncio.get_running_loop()
    inbox = runner.inbox(loop)
    assert runner.inbox(loop) is inbox  # one per loop
    wakeups = 0
    real = loop.call_soon_threadsafe

    def counting(*args: Any) -> Any:
        nonlocal wakeups
        wakeups += 1
        return real(*args)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in range(16)]

    def steps() -> None:  # like the scheduler: every stream gets a delta per step
        for step in range(50):
            for q in queues:
                assert inbox.post(q, f"{step},")

    steps()  # while the loop is busy (here: running this test), every post waits together
    await asyncio.sleep(0)
    assert wakeups == 1  # not 800
    await asyncio.to_thread(steps)  # from another thread, racing the loop's deliveries
    await asyncio.sleep(0.05)
    for q in queues:
        got = "".join(q.get_nowait() for _ in range(q.qsize()))
        assert got == "".join(f"{step}," for step in range(50)) * 2

    closed = asyncio.new_event_loop()
    closed.close()
    assert runner.Inbox(closed).post(asyncio.Queue(), "x") is False


def test_the_batch_keeps_its_cache_buffers_up_to_the_limit(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``KEEP_SLOTS_BYTES`` the buffers a busy moment made stay for the next replies
    (the memory a soak samples stays where the busiest moment put it); over it an idle batch
    gives them back."""
    from inference import batching

    backend = TransformersBackend(str(tiny["llama"]), device="cpu", max_batch=8)
    options = GenerationOptions(temperature=0, max_new_tokens=12)
    together(backend, [(p, options) for p in PROMPTS])
    batcher = backend._batcher
    assert batcher is not None and batcher.mixed
    cache = batcher.cache
    assert cache is not None and cache.rows == 0 and cache.nbytes > 0
    held = cache.nbytes
    run(backend, "hi", options)  # one short reply later: same buffers, not smaller ones
    assert batcher.cache is cache and cache.nbytes == held

    monkeypatch.setattr(batching, "KEEP_SLOTS_BYTES", held - 1)
    together(backend, [(p, options) for p in PROMPTS])
    assert batcher.cache is None
