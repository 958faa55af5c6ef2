"""A random-weight Llama of ~0.76B parameters with the bundled model's tokenizer, for engine
speeds on a GPU (the bundled model is too small to keep one busy: every engine would measure
kernel launches). Its replies are noise; bench/engines.py suppresses the end-of-sequence token
in its timed runs, so every engine still generates exactly as many tokens.

    python3 bench/gpu/randmodel.py /tmp/big [--device cuda]
    DJANGO_SETTINGS_MODULE=bench.gpu.settings python3 bench/engines.py --device cuda \\
        --model /tmp/big --dtype bfloat16"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

BUNDLED = Path(__file__).resolve().parents[2] / "inference" / "bundled" / "stellarbyte-mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=2048)
    args = parser.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=4096,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 11 // 4,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 128,
        num_key_value_heads=args.hidden // 256,
        max_position_embeddings=2048,
        eos_token_id=2,
        pad_token_id=0,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    with torch.device(args.device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(args.folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (BUNDLED / name).exists():
            shutil.copy(BUNDLED / name, args.folder / name)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters in {args.folder}")


if __name__ == "__main__":
    main()
