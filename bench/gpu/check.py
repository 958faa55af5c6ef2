"""On a GPU: mixed steps pass their self-check at load, batched replies (greedy and seeded
sampled) equal replies generated alone, in float32 and bfloat16, and the decode rows keep
SDPA's key layout and kernels there.

    DJANGO_SETTINGS_MODULE=bench.gpu.settings python3 bench/gpu/check.py [--device cuda]

The CPU suite (tests/inference) proves the same on a CPU; CI has no GPU, so this is the
command to run when one is lent."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.gpu.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = ROOT / "inference" / "bundled" / "stellarbyte-mini"
PROMPTS = [
    "Tell me about ships.",
    "What is a star?",
    "How do I bake bread?",
    "Rivers and seas",
    "Chess openings, briefly.",
    "Why do bees dance?",
    "Trains of Europe",
    "Music theory 101",
]


def replies(backend: Any, options: Any, together: bool) -> list[str]:
    out = [""] * len(PROMPTS)

    def one(i: int) -> None:
        parts = backend.stream([{"role": "user", "content": PROMPTS[i]}], options)
        out[i] = "".join(p for p in parts if isinstance(p, str))

    if together:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(PROMPTS))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for i in range(len(PROMPTS)):
            one(i)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()

    import django

    django.setup()
    import torch
    import torch.nn.functional as F

    from inference import mixed
    from inference.backends.hf import TransformersBackend
    from inference.options import GenerationOptions

    failed = 0
    for dtype in ("float32", "bfloat16"):
        batched = TransformersBackend(str(MODEL), device=args.device, dtype=dtype, max_batch=16)
        single = TransformersBackend(str(MODEL), device=args.device, dtype=dtype, max_batch=1)
        loaded = batched.load()
        single._loaded = loaded  # one model, two schedulers
        print(f"[{dtype}] mixed steps on {loaded.device}: {loaded.mixed}")
        failed += not loaded.mixed
        for name, options in (
            ("greedy", GenerationOptions(temperature=0, max_new_tokens=48)),
            ("seeded", GenerationOptions(temperature=0.8, top_p=0.95, max_new_tokens=48, seed=5)),
        ):
            alone = replies(single, options, together=False)
            together = replies(batched, options, together=True)
            same = sum(a == b for a, b in zip(alone, together, strict=True))
            print(f"[{dtype}] {name} replies batched == alone: {same}/{len(PROMPTS)}")
            failed += same != len(PROMPTS)

    slots = mixed.Slots(1)
    device = torch.device(args.device)
    kv = [(torch.randn(1, 2, n, 16, device=device),) * 2 for n in (7, 3, 12)]
    slots.add({0: kv}, [7, 3, 12])
    slots.reserve()
    step = mixed.Step(rows=3, slots=slots, prompts=[])
    query, key = torch.randn(3, 8, 1, 16, device=device), torch.randn(3, 2, 1, 16, device=device)
    keys, values = slots.append(0, key, key * 2)
    got = mixed.rows_attention(query, keys, values, step, None).cpu()
    want = F.scaled_dot_product_attention(
        query.cpu(), keys.cpu(), values.cpu(), attn_mask=step.mask.cpu(), enable_gqa=True
    )
    # SDPA's layout (size-last) everywhere but float32 on a CPU, where the products read
    # column-last keys (inference.mixed._own_attention).
    layout_ok = slots.keys[0].stride(2 if device.type == "cpu" else 3) == 1
    diff = float((got - want).abs().max())
    print(f"decode rows: key layout as expected {layout_ok}, vs CPU SDPA max diff {diff:.1e}")
    failed += not layout_ok or diff > 1e-4
    print("OK" if not failed else f"FAILED ({failed})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
