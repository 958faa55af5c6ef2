"""oneDNN for the linear layers (inference/kernels.py): same logits as the model's own layers,
replies batched still equal to replies alone (one reply's products stay on MKL while a batch's
go through oneDNN), each request keeping its own sampled reply, and the load-time choice."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from inference import kernels
from inference.backends.hf import TransformersBackend
from inference.options import GenerationOptions
from tests.inference import tinymodels
from tests.inference.test_batching import BUNDLED, OWN_OPTIONS, PROMPTS, run, together

pytestmark = pytest.mark.skipif(not kernels.available(), reason="this torch has no oneDNN")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = Path(tmp_path_factory.mktemp("kernels"))
    return {arch: tinymodels.build(root / arch, arch) for arch in ("llama", "qwen2", "gpt2")}


@pytest.fixture
def count_onednn(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows of each product oneDNN computed."""
    calls: list[int] = []
    real = kernels.onednn_linear

    def counting(x: Any, weight: Any, bias: Any) -> Any:
        calls.append(x.numel() // x.shape[-1])
        return real(x, weight, bias)

    monkeypatch.setattr(kernels, "onednn_linear", counting)
    return calls


def fresh(path: Path, **kw: Any) -> TransformersBackend:
    backend = TransformersBackend(str(path), device="cpu", max_batch=16, **kw)
    kernels.uninstall(backend.load().model)  # whatever the load-time measurement chose
    return backend


@pytest.mark.parametrize("which", ["bundled", "qwen2", "gpt2"])  # qwen2's layers have biases
def test_installed_layers_give_the_models_own_logits(
    tiny: dict[str, Path], which: str, count_onednn: list[int]
) -> None:
    model = fresh(BUNDLED if which == "bundled" else tiny[which]).load().model
    ids = torch.tensor([list(range(5, 45))])
    with torch.no_grad():  # a fresh model's biases are zero: make them count
        for layer in kernels.linears(model):
            if layer.bias is not None:
                layer.bias.normal_(0.0, 0.5)
    assert which != "qwen2" or any(m.bias is not None for m in kernels.linears(model))
    with torch.inference_mode():
        own = model(input_ids=ids).logits
        assert kernels.install(model, work=1) == 1  # every product through oneDNN
        count_onednn.clear()  # loading measured the kernels
        faster = model(input_ids=ids).logits
        assert len(count_onednn) == len(kernels.linears(model))  # each layer once, via oneDNN
        kernels.uninstall(model)
        again = model(input_ids=ids).logits
    assert (faster - own).abs().max() < 1e-4
    assert torch.equal(again, own)  # uninstalled: the layers' own forward, bit for bit
    assert not any("forward" in vars(m) for m in kernels.linears(model))


def test_only_products_past_the_threshold_go_to_onednn(count_onednn: list[int]) -> None:
    model = fresh(BUNDLED).load().model
    kernels.install(model, work=8 * 768)  # what this machine measures for the bundled model
    count_onednn.clear()  # loading measured the kernels
    with torch.inference_mode():
        model(input_ids=torch.tensor([[5]]))  # one row: 768 x 1 < 6144 everywhere but ...
        one_row = list(count_onednn)
        count_onednn.clear()
        model(input_ids=torch.tensor([list(range(5, 25))]))  # 20 rows
    assert one_row == []  # ... the vocabulary head, 4096 x 1 < 6144 too: MKL throughout
    assert count_onednn and set(count_onednn) == {20}
    kernels.uninstall(model)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_batched_greedy_replies_equal_replies_alone(
    tiny: dict[str, Path], arch: str, count_onednn: list[int]
) -> None:
    backend = fresh(tiny[arch])
    model = backend.load().model
    narrowest = min(m.out_features for m in kernels.linears(model))
    kernels.install(model, work=2 * narrowest)  # a batch's products to oneDNN, one row's not all
    count_onednn.clear()  # loading measured the kernels
    options = GenerationOptions(temperature=0, max_new_tokens=30)
    alone = [run(backend, p, options) for p in PROMPTS]
    batched = together(backend, [(p, options) for p in PROMPTS])
    assert backend._batcher is not None and backend._batcher.max_seen > 1
    assert any(rows > 1 for rows in count_onednn)
    for (text_a, res_a), (text_b, res_b) in zip(alone, batched, strict=True):
        assert text_b == text_a
        assert res_b.completion_tokens == res_a.completion_tokens


def test_the_bundled_model_batched_equals_alone(count_onednn: list[int]) -> None:
    backend = fresh(BUNDLED)
    kernels.install(backend.load().model, work=8 * 768)
    count_onednn.clear()  # loading measured the kernels
    options = GenerationOptions(temperature=0, max_new_tokens=48)
    prompts = PROMPTS * 2
    alone = [run(backend, p, options)[0] for p in prompts]
    batched = [text for text, _ in together(backend, [(p, options) for p in prompts])]
    assert backend._batcher is not None and backend._batcher.max_seen >= 5
    assert batched == alone and all(alone)
    assert any(rows >= 8 for rows in count_onednn)


def test_sampled_replies_keep_their_own_draws_in_a_batch(tiny: dict[str, Path]) -> None:
    backend = fresh(tiny["llama"])
    kernels.install(backend.load().model, work=2)
    alone = [run(backend, text, options) for text, options in OWN_OPTIONS]
    batched = together(backend, OWN_OPTIONS)
    assert [text for text, _ in batched] == [text for text, _ in alone]
    assert batched[0][0] != batched[1][0]


def test_a_cancelled_reply_leaves_the_others_untouched(tiny: dict[str, Path]) -> None:
    backend = fresh(tiny["llama"])
    kernels.install(backend.load().model, work=2)
    options = GenerationOptions(temperature=0, max_new_tokens=40)
    alone = [run(backend, p, options)[0] for p in PROMPTS[:3]]
    cancels = [threading.Event() for _ in range(3)]

    def on_delta(index: int, _: str) -> None:
        if index == 1:
            cancels[1].set()

    out = together(backend, [(p, options) for p in PROMPTS[:3]], on_delta=on_delta, cancels=cancels)
    assert out[1][1].finish_reason == "cancelled"
    assert [out[0][0], out[2][0]] == [alone[0], alone[2]]


# --- the choice at load -----------------------------------------------------------------------


def test_choose_takes_the_first_row_count_where_onednn_is_clearly_faster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = fresh(BUNDLED).load().model
    seen: list[tuple[tuple[int, ...], int]] = []
    timings = {4: (1.0, 1.2), 8: (1.0, 0.95), 16: (1.0, 0.7)}  # 0.95: not clearly faster

    def fake(weight: Any, rows: int) -> tuple[float, float]:
        seen.append((tuple(weight.shape), rows))
        return timings[rows]

    monkeypatch.setattr(kernels, "measure", fake)
    assert kernels.choose(model) == 16 * 768
    assert {shape for shape, _ in seen} == {(768, 256)}  # the widest below the vocabulary
    timings[16] = (1.0, 1.0)
    assert kernels.choose(model) is None  # never clearly faster: MKL stays
    assert kernels.install(model) is None
    assert not any("forward" in vars(m) for m in kernels.linears(model))


def test_nothing_changes_without_onednn_or_without_float32_layers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = fresh(BUNDLED, dtype="bfloat16").load().model
    assert kernels.linears(model) == []
    assert kernels.install(model, work=1) is None
    model = fresh(BUNDLED).load().model
    monkeypatch.setattr(kernels, "available", lambda: False)
    assert kernels.choose(model) is None
    assert kernels.install(model, work=1) is None


def test_loading_on_cpu_in_float32_installs_what_the_measurement_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kernels, "_threshold", lambda layers: 4321)
    model = TransformersBackend(str(BUNDLED), device="cpu").load().model
    assert {m.stellarchat_work for m in kernels.linears(model)} == {4321}
    model = TransformersBackend(str(BUNDLED), device="cpu", dtype="bfloat16").load().model
    assert not any(hasattr(m, "stellarchat_work") for m in model.modules())


def test_timing_a_slow_product_takes_few_repeats() -> None:
    """A big model's layer can take tens of ms a product: the load-time measurement stays
    within about its budget instead of adding seconds to the load."""
    import time

    calls: list[float] = []

    def slow() -> None:
        calls.append(time.perf_counter())
        time.sleep(0.03)

    assert kernels._median_ms(slow) >= 30.0
    assert len(calls) <= 4  # the warm-up, then at least two timed
    fast: list[int] = []
    kernels._median_ms(lambda: fast.append(1))
    assert len(fast) == kernels.REPEATS + 1
