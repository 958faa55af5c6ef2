"""Faster CPU matrix products for batched steps: oneDNN for a float32 model's linear layers.

torch's float32 ``F.linear`` on CPU goes to MKL. On the project's CPU machine (AMD Zen 5,
AVX-512) MKL's kernels lose to oneDNN's (also in every torch build) once a product has a few
rows: measured there on the bundled model's 43 products of one step, one thread, 16 rows 3.22
-> 2.23 ms, 32 rows 5.20 -> 3.11 ms, while one row is no faster (1.24 / 1.29 ms). A decode step
of 16 replies is mostly those products, so the batch gains and one reply alone loses nothing;
reading a prompt (its tokens are the rows) gains the most.

Which kernel wins depends on the CPU (MKL is tuned for Intel's) and on a product's size, so
``install`` times both on one of the model's own weights at load and switches only where
oneDNN is clearly faster: products of at least as many rows x outputs as the first size it
won at. Both give the same products to float rounding (~1e-6; MKL alone differs that much
between one row and sixteen), so replies batched still equal replies alone
(tests/inference/test_kernels.py).
"""

from __future__ import annotations

import logging
import statistics
import time
import types
from typing import Any

logger = logging.getLogger(__name__)

ROWS = (4, 8, 16)  # row counts tried at load, on the model's widest layer below the vocabulary
FASTER = 0.9  # oneDNN must take at most this share of MKL's time
REPEATS = 15
BUDGET = 0.05  # seconds per timing, at most about (a big model gets fewer repeats)


def available() -> bool:
    """Whether this torch build has oneDNN's fused linear op."""
    import torch

    return bool(torch.backends.mkldnn.is_available()) and hasattr(
        torch.ops.mkldnn, "_linear_pointwise"
    )


def linears(model: Any) -> list[Any]:
    """The model's plain float32 ``nn.Linear`` layers on CPU (not subclasses: quantized and
    other special layers keep their own forward; not layers under accelerate's hooks)."""
    import torch

    return [
        module
        for module in model.modules()
        if type(module) is torch.nn.Linear
        and module.weight.dtype == torch.float32
        and module.weight.device.type == "cpu"
        and not hasattr(module, "_hf_hook")
    ]


def _median_ms(fn: Any, budget: float = BUDGET) -> float:
    fn()  # warm: first calls allocate and pick kernels
    started = time.perf_counter()
    fn()
    once = time.perf_counter() - started
    times = [once]
    # A big model's product can take tens of ms: fewer repeats, not seconds more at load.
    for _ in range(max(2, min(REPEATS, int(budget / max(once, 1e-6)))) - 1):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000.0


def measure(weight: Any, rows: int) -> tuple[float, float]:
    """(MKL ms, oneDNN ms) of one product of ``rows`` rows with ``weight``."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(rows, weight.shape[1], dtype=weight.dtype)
    mkl: list[float] = []
    dnn: list[float] = []
    with torch.inference_mode():
        for _ in range(2):  # alternating, best of two: a busy moment hits both
            mkl.append(_median_ms(lambda: F.linear(x, weight)))
            dnn.append(_median_ms(lambda: onednn_linear(x, weight, None)))
    return min(mkl), min(dnn)


def choose(model: Any) -> int | None:
    """The work (rows x output features) from which a product is clearly faster in oneDNN
    on this CPU, or None (MKL throughout).

    oneDNN costs a few microseconds more per call and computes faster: it wins on large
    products, loses on small ones. Measured on the widest layer below the vocabulary (an
    MLP projection, in a transformer) at a few row counts; that layer's first win sets the
    threshold for every layer."""
    layers = linears(model)
    if not layers or not available():
        return None
    return _threshold(layers)


def _threshold(layers: list[Any]) -> int | None:
    """``choose`` for layers already found (``install`` has them)."""
    widest = max(layers, key=lambda m: m.weight.numel())
    below = [m for m in layers if m.weight.numel() < widest.weight.numel()] or [widest]
    weight = max(below, key=lambda m: m.weight.numel()).weight.detach()
    for rows in ROWS:
        mkl_ms, dnn_ms = measure(weight, rows)
        if dnn_ms <= FASTER * mkl_ms:
            work = rows * weight.shape[0]
            logger.info(
                "linear layers: oneDNN from %d rows x outputs (%d rows of a %dx%d weight: "
                "%.3f ms, MKL %.3f)",
                work,
                rows,
                *weight.shape,
                dnn_ms,
                mkl_ms,
            )
            return work
    logger.info("linear layers: MKL (oneDNN not faster on this CPU)")
    return None


def onednn_linear(x: Any, weight: Any, bias: Any) -> Any:
    """``F.linear`` computed by oneDNN."""
    import torch

    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _forward(self: Any, x: Any) -> Any:
    import torch.nn.functional as F

    if x.numel() // x.shape[-1] * self.out_features >= self.stellarchat_work:
        return onednn_linear(x, self.weight, self.bias)
    return F.linear(x, self.weight, self.bias)


def install(model: Any, work: int | None = None) -> int | None:
    """Route the model's float32 linear layers through oneDNN for products of at least
    ``work`` rows x output features (None: ``choose`` measures). Returns the threshold used,
    or None when nothing changed. Installing again replaces the threshold; ``uninstall``
    undoes it."""
    layers = linears(model)
    if not layers or not available():
        return None
    if work is None:
        work = _threshold(layers)
    if work is None:
        return None
    for module in layers:
        module.stellarchat_work = work
        module.forward = types.MethodType(_forward, module)
    return work


def uninstall(model: Any) -> None:
    """The layers' own forward again."""
    for module in model.modules():
        if "stellarchat_work" in vars(module):
            del module.stellarchat_work
            vars(module).pop("forward", None)
