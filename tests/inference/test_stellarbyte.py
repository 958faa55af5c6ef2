"""import_stellarbyte: fake StellarByte checkpoints in, plain transformers folders out.

The proof is a small reference forward pass below, written from the original source
(HxCodeWarrior/StellarByte, model/{RMSNorm,RoPE,Attention,FFN,StellarByteBlock,StellarByteModel,
StellarByteLm}.py at 93a82cd) over the raw state dict and raw config. The imported folder,
loaded by plain ``AutoModelForCausalLM``, must give the same logits.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from django.core.management import CommandError, call_command
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
from transformers.activations import ACT2FN

from inference.stellarbyte import parse_config, rope_parameters, strip_wrapper_prefixes

REPO_ROOT = Path(__file__).resolve().parents[2]

BASE_CONFIG: dict[str, Any] = {
    "model_type": "stellarbytecasualmodel",
    "vocab_size": 320,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 48,
    "rope_theta": 1e6,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "use_moe": False,
    "inference_rope_scaling": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "dropout": 0.0,
    "flash_attn": True,
}


# --- the original forward pass, in plain torch ---------------------------------------------


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.type_as(x)


def _rope_freqs(
    dim: int, end: int, rope_base: float, rope_scaling: dict[str, Any] | None
) -> torch.Tensor:
    """The first half of the original precompute_freqs_cis: the (YaRN-scaled) frequencies."""
    freqs = 1.0 / (rope_base ** (torch.arange(0, dim, 2).float() / dim))
    if rope_scaling is not None:
        orig_max = rope_scaling.get("original_max_position_embeddings", 2048)
        factor = rope_scaling.get("factor", 4)
        beta_fast = rope_scaling.get("beta_fast", 4.0)
        beta_slow = rope_scaling.get("beta_slow", 1.0)
        if end / orig_max > 1.0:
            corr_dim = next(
                (i for i in range(dim // 2) if 2 * math.pi / freqs[i] > orig_max), dim // 2
            )
            power = torch.arange(0, dim // 2).float() / max(dim // 2 - 1, 1)
            beta = beta_slow + (beta_fast - beta_slow) * power
            scale = torch.where(
                torch.arange(dim // 2) < corr_dim,
                (beta * factor - beta + 1) / (beta * factor),
                1.0 / factor,
            )
            freqs = freqs * scale
    return freqs


def _precompute_freqs_cis(
    dim: int, end: int, rope_base: float, rope_scaling: dict[str, Any] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = _rope_freqs(dim, end, rope_base, rope_scaling)
    angles = torch.outer(torch.arange(end), freqs).float()
    return torch.cat([angles.cos(), angles.cos()], -1), torch.cat([angles.sin(), angles.sin()], -1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    return torch.cat((-x[..., x.shape[-1] // 2 :], x[..., : x.shape[-1] // 2]), dim=-1)


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    bs, slen, heads, head_dim = x.shape
    return (
        x[:, :, :, None, :]
        .expand(bs, slen, heads, n_rep, head_dim)
        .reshape(bs, slen, heads * n_rep, head_dim)
    )


def _original_rope_scaling(config: dict[str, Any]) -> dict[str, Any] | None:
    # StellarByteConfig: inference_rope_scaling switches on this fixed dict.
    if not config.get("inference_rope_scaling"):
        return None
    return {"beta_fast": 4, "beta_slow": 1, "factor": 4, "original_max_position_embeddings": 2048}


def reference_logits(
    raw_state: dict[str, torch.Tensor], config: dict[str, Any], ids: torch.Tensor, start: int = 0
) -> torch.Tensor:
    """StellarByteForCausalLM.forward (eval, no cache) from the raw state dict and raw config."""
    state = {}
    for key, value in raw_state.items():
        while key.startswith(("module.", "_orig_mod.")):
            key = key.split(".", 1)[1]
        state[key] = value
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = hidden // heads
    eps = config["rms_norm_eps"]
    act = ACT2FN[config["hidden_act"]]
    cos, sin = _precompute_freqs_cis(
        head_dim,
        config["max_position_embeddings"],
        config["rope_theta"],
        _original_rope_scaling(config),
    )
    bsz, seq_len = ids.shape
    cos, sin = cos[start : start + seq_len], sin[start : start + seq_len]
    x = state["model.embed_tokens.weight"][ids]
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = _rms_norm(x, state[p + "input_layernorm.weight"], eps)
        q = (h @ state[p + "self_attn.q_proj.weight"].T).view(bsz, seq_len, heads, head_dim)
        kv_heads = state[p + "self_attn.k_proj.weight"].shape[0] // head_dim
        k = (h @ state[p + "self_attn.k_proj.weight"].T).view(bsz, seq_len, kv_heads, head_dim)
        v = (h @ state[p + "self_attn.v_proj.weight"].T).view(bsz, seq_len, kv_heads, head_dim)
        q = q * cos.unsqueeze(1) + _rotate_half(q) * sin.unsqueeze(1)
        k = k * cos.unsqueeze(1) + _rotate_half(k) * sin.unsqueeze(1)
        q = q.transpose(1, 2)
        k = _repeat_kv(k, heads // kv_heads).transpose(1, 2)
        v = _repeat_kv(v, heads // kv_heads).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(head_dim)
        scores = scores + torch.triu(torch.full((seq_len, seq_len), float("-inf")), diagonal=1)
        attn = F.softmax(scores.float(), dim=-1).type_as(q) @ v
        attn = attn.transpose(1, 2).reshape(bsz, seq_len, -1)
        x = x + attn @ state[p + "self_attn.o_proj.weight"].T
        h = _rms_norm(x, state[p + "post_attention_layernorm.weight"], eps)
        gate = act(h @ state[p + "mlp.gate_proj.weight"].T)
        up = h @ state[p + "mlp.up_proj.weight"].T
        x = x + (gate * up) @ state[p + "mlp.down_proj.weight"].T
    x = _rms_norm(x, state["model.norm.weight"], eps)
    head = state.get("lm_head.weight", state["model.embed_tokens.weight"])
    return x @ head.T


# --- fake checkpoints ------------------------------------------------------------------------


def random_state_dict(config: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """What StellarByteForCausalLM.state_dict() holds for this config, with random values."""
    gen = torch.Generator().manual_seed(seed)
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    head_dim = hidden // config["num_attention_heads"]
    kv = (config["num_key_value_heads"] or 1) * head_dim
    inter = config["intermediate_size"] or 40

    def rand(*shape: int, std: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    state = {"model.embed_tokens.weight": rand(vocab, hidden, std=1.0)}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        state[p + "self_attn.q_proj.weight"] = rand(hidden, hidden)
        state[p + "self_attn.k_proj.weight"] = rand(kv, hidden)
        state[p + "self_attn.v_proj.weight"] = rand(kv, hidden)
        state[p + "self_attn.o_proj.weight"] = rand(hidden, hidden)
        state[p + "input_layernorm.weight"] = 1 + rand(hidden, std=0.1)
        state[p + "post_attention_layernorm.weight"] = 1 + rand(hidden, std=0.1)
        state[p + "mlp.gate_proj.weight"] = rand(inter, hidden)
        state[p + "mlp.up_proj.weight"] = rand(inter, hidden)
        state[p + "mlp.down_proj.weight"] = rand(hidden, inter)
    state["model.norm.weight"] = 1 + rand(hidden, std=0.1)
    if config.get("tie_word_embeddings"):
        state["lm_head.weight"] = state["model.embed_tokens.weight"]  # one shared tensor
    else:
        state["lm_head.weight"] = rand(vocab, hidden)
    return state


def write_checkpoint(
    tmp_path: Path, config: dict[str, Any], state: dict[str, Any]
) -> tuple[Path, Path]:
    checkpoint, config_path = tmp_path / "pretrain_32.pth", tmp_path / "config.json"
    torch.save(state, checkpoint)
    config_path.write_text(json.dumps(config))
    return checkpoint, config_path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE trained on three sentences: 300 ids, <pad>=0, <s>=1, </s>=2."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    sentences = [
        "The quick brown fox jumps over the lazy dog.",
        "StellarChat runs language models on your own machine.",
        "Hello, world! Bonjour le monde, 你好世界.",
    ]
    tokenizer.train_from_iterator(sentences, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    path = tmp_path_factory.mktemp("tokenizer")
    wrapped.save_pretrained(str(path))
    return path


def run_import(
    checkpoint: Path, config_path: Path, tokenizer: Path, out: Path, *extra: str
) -> None:
    call_command(
        "import_stellarbyte",
        str(checkpoint),
        "--config",
        str(config_path),
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(out),
        *extra,
    )


def hf_logits(out: Path, ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    with torch.no_grad():
        return model(ids, **kwargs).logits


def sample_ids(seq_len: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 300, (2, seq_len), generator=torch.Generator().manual_seed(seed))


def assert_same_logits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


# --- it works --------------------------------------------------------------------------------


VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "plain": ({}, ""),
    "multi-head (kv heads == heads)": ({"num_key_value_heads": 4}, ""),
    "grouped-query, one kv head": ({"num_key_value_heads": 1}, ""),
    "ddp prefix": ({}, "module."),
    "stacked compile + ddp prefixes": ({}, "_orig_mod.module."),
    "null intermediate_size": ({"intermediate_size": None}, ""),
    "null num_key_value_heads": ({"num_key_value_heads": None}, ""),
    "gelu activation": ({"hidden_act": "gelu_pytorch_tanh"}, ""),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_it_gives_the_original_logits(name: str, tmp_path: Path, tokenizer_dir: Path) -> None:
    overrides, prefix = VARIANTS[name]
    config = {**BASE_CONFIG, **overrides}
    state = random_state_dict(config)
    raw = {prefix + key: value for key, value in state.items()}
    checkpoint, config_path = write_checkpoint(tmp_path, config, raw)

    run_import(checkpoint, config_path, tokenizer_dir, tmp_path / "out")

    ids = sample_ids()
    assert_same_logits(hf_logits(tmp_path / "out", ids), reference_logits(raw, config, ids))


def test_it_writes_a_standard_llama_folder(tmp_path: Path, tokenizer_dir: Path) -> None:
    config = {**BASE_CONFIG, "intermediate_size": None}
    checkpoint, config_path = write_checkpoint(tmp_path, config, random_state_dict(config))
    out = tmp_path / "out"

    run_import(checkpoint, config_path, tokenizer_dir, out)

    written = json.loads((out / "config.json").read_text())
    assert written["model_type"] == "llama"
    assert written["architectures"] == ["LlamaForCausalLM"]
    assert written["intermediate_size"] == 40  # read off mlp.gate_proj.weight
    assert written["head_dim"] == 8
    assert written["rope_parameters"] == {"rope_type": "default", "rope_theta": 1e6}
    generation = json.loads((out / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (1, 2)
    assert (out / "model.safetensors").is_file()
    original = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    copied = AutoTokenizer.from_pretrained(str(out))
    text = "Hello, StellarChat!"
    assert copied(text).input_ids == original(text).input_ids
    assert not list(tmp_path.glob(".stellarbyte-import-*"))


def test_it_keeps_half_precision_weights(tmp_path: Path, tokenizer_dir: Path) -> None:
    # The original trainer saves its .pth in float16.
    state = {key: value.half() for key, value in random_state_dict(BASE_CONFIG).items()}
    checkpoint, config_path = write_checkpoint(tmp_path, BASE_CONFIG, state)

    run_import(checkpoint, config_path, tokenizer_dir, tmp_path / "out")

    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "float16"
    ids = sample_ids()
    upcast = {key: value.float() for key, value in state.items()}
    assert_same_logits(hf_logits(tmp_path / "out", ids), reference_logits(upcast, BASE_CONFIG, ids))


def test_it_imports_tied_embeddings_without_lm_head(tmp_path: Path, tokenizer_dir: Path) -> None:
    config = {**BASE_CONFIG, "tie_word_embeddings": True}
    state = random_state_dict(config)
    del state["lm_head.weight"]
    checkpoint, config_path = write_checkpoint(tmp_path, config, state)

    run_import(checkpoint, config_path, tokenizer_dir, tmp_path / "out")

    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"]
    ids = sample_ids()
    assert_same_logits(hf_logits(tmp_path / "out", ids), reference_logits(state, config, ids))


def test_it_imports_tied_embeddings_saved_under_both_names(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    config = {**BASE_CONFIG, "tie_word_embeddings": True}
    del config["tie_word_embeddings"]  # absent from the JSON: the shared tensor tells
    state = random_state_dict({**config, "tie_word_embeddings": True})
    checkpoint, config_path = write_checkpoint(tmp_path, config, state)

    run_import(checkpoint, config_path, tokenizer_dir, tmp_path / "out")

    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"]
    ids = sample_ids()
    assert_same_logits(hf_logits(tmp_path / "out", ids), reference_logits(state, config, ids))


def test_it_maps_inference_rope_scaling(tmp_path: Path, tokenizer_dir: Path) -> None:
    config = {**BASE_CONFIG, "inference_rope_scaling": True, "max_position_embeddings": 8192}
    state = random_state_dict(config)
    checkpoint, config_path = write_checkpoint(tmp_path, config, state)
    out = tmp_path / "out"

    run_import(checkpoint, config_path, tokenizer_dir, out)

    rope = json.loads((out / "config.json").read_text())["rope_parameters"]
    assert rope["rope_type"] == "longrope"
    assert rope["factor"] == 4.0
    assert rope["original_max_position_embeddings"] == 2048
    assert rope["attention_factor"] == 1.0
    assert rope["short_factor"] == rope["long_factor"]
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    rotary = model.model.rotary_emb
    assert rotary.attention_scaling == 1.0
    original_freqs = _rope_freqs(8, 8192, 1e6, _original_rope_scaling(config))
    assert not torch.equal(original_freqs, _rope_freqs(8, 8192, 1e6, None))  # it does scale
    torch.testing.assert_close(rotary.inv_freq, original_freqs, rtol=3e-7, atol=0)
    ids = sample_ids(seq_len=40)
    with torch.no_grad():
        short = model(ids).logits
        positions = torch.arange(2030, 2070).expand(2, -1)  # crosses 2048
        far = model(ids, position_ids=positions).logits
    assert_same_logits(short, reference_logits(state, config, ids))
    assert_same_logits(far, reference_logits(state, config, ids, start=2030))


def test_it_keeps_plain_rope_when_scaling_cannot_apply() -> None:
    # The original only scales when max_position_embeddings exceeds the original 2048.
    config = parse_config(
        {**BASE_CONFIG, "inference_rope_scaling": True, "max_position_embeddings": 2048}
    )
    assert rope_parameters(config) == {"rope_type": "default", "rope_theta": 1e6}


def test_it_strips_stacked_wrapper_prefixes() -> None:
    tensor = torch.zeros(1)
    state = {"_orig_mod.module.a": tensor, "module._orig_mod.module.b": tensor, "c": tensor}
    assert list(strip_wrapper_prefixes(state)) == ["a", "b", "c"]


# --- it refuses --------------------------------------------------------------------------------


def moe_checkpoint(tmp_path: Path, *, flag: bool) -> tuple[Path, Path]:
    config = {**BASE_CONFIG, "use_moe": flag}
    state = random_state_dict(config)
    for layer in range(2):
        p = f"model.layers.{layer}.mlp."
        for proj in ("gate_proj", "up_proj", "down_proj"):
            weight = state.pop(p + proj + ".weight")
            for expert in range(2):
                state[f"{p}experts.{expert}.{proj}.weight"] = weight.clone()
        state[p + "gate.weight"] = torch.zeros(2, 32)
    return write_checkpoint(tmp_path, config, state)


@pytest.mark.parametrize("flag", [True, False], ids=["use_moe flag", "expert keys only"])
def test_it_refuses_moe_checkpoints(flag: bool, tmp_path: Path, tokenizer_dir: Path) -> None:
    checkpoint, config_path = moe_checkpoint(tmp_path, flag=flag)
    with pytest.raises(CommandError, match="mixture-of-experts .* not supported yet"):
        run_import(checkpoint, config_path, tokenizer_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_it_refuses_moe_in_one_line_from_the_shell(tmp_path: Path, tokenizer_dir: Path) -> None:
    checkpoint, config_path = moe_checkpoint(tmp_path, flag=True)
    env = {**os.environ, "DJANGO_DEBUG": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the real settings, as a user runs it
    args = [str(checkpoint), "--config", str(config_path), "--tokenizer", str(tokenizer_dir)]
    result = subprocess.run(
        [sys.executable, "manage.py", "import_stellarbyte", *args, "--out", str(tmp_path / "o")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "not supported yet" in lines[0]


class NotATensor:
    pass


def _config_edit(**changes: Any) -> dict[str, Any]:
    return {**BASE_CONFIG, **changes}


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in BASE_CONFIG.items() if k != key}


CONFIG_FAILURES: dict[str, tuple[Any, str]] = {
    "unknown model_type": (_config_edit(model_type="llama"), "model_type is 'llama'"),
    "no model_type": (_without("model_type"), "not a StellarByte config"),
    "not an object": ([1, 2], "expected a JSON object"),
    "missing field": (_without("hidden_size"), "missing required field.*hidden_size"),
    "bad head split": (_config_edit(num_attention_heads=5), "not divisible"),
    "bad kv heads": (_config_edit(num_key_value_heads=3), "not a multiple"),
    "bad bool": (_config_edit(inference_rope_scaling="yes"), "must be true or false"),
    "bad activation": (_config_edit(hidden_act="swish2"), "unknown hidden_act"),
    "string size": (_config_edit(vocab_size="320"), "vocab_size must be an integer"),
    "wrong intermediate_size": (_config_edit(intermediate_size=64), "shape mismatch"),
    "wrong vocab_size": (_config_edit(vocab_size=400), "shape mismatch"),
}


@pytest.mark.parametrize("name", list(CONFIG_FAILURES))
def test_it_rejects_bad_configs(name: str, tmp_path: Path, tokenizer_dir: Path) -> None:
    config, message = CONFIG_FAILURES[name]
    checkpoint, config_path = write_checkpoint(tmp_path, config, random_state_dict(BASE_CONFIG))
    with pytest.raises(CommandError, match=message):
        run_import(checkpoint, config_path, tokenizer_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _drop(key: str) -> Any:
    return lambda state: {k: v for k, v in state.items() if k != key}


def _add(key: str, value: torch.Tensor) -> Any:
    return lambda state: {**state, key: value}


STATE_FAILURES: dict[str, tuple[Any, str]] = {
    "missing key": (_drop("model.layers.1.mlp.up_proj.weight"), "missing keys: model.layers.1"),
    "untied without lm_head": (_drop("lm_head.weight"), "missing keys: lm_head.weight"),
    "unexpected key": (
        _add("model.layers.0.self_attn.q_proj.bias", torch.zeros(32)),
        "unexpected keys: model.layers.0.self_attn.q_proj.bias",
    ),
    "shape mismatch": (
        _add("model.norm.weight", torch.ones(33)),
        r"shape mismatch for model.norm.weight: checkpoint has \(33,\)",
    ),
    "integer weights": (
        _add("model.norm.weight", torch.ones(32, dtype=torch.int64)),
        "expected floating point",
    ),
    "a list": (lambda state: list(state.values()), "holds a list, not a state dict"),
    "a value that is no tensor": (_add("step", 12), "entry 'step' is not a named tensor"),
    "a resume file": (
        lambda state: {"model": state, "epoch": 1},
        "a training resume file",
    ),
    "empty": (lambda state: {}, "empty state dict"),
    "a pickled object": (
        lambda state: NotATensor(),
        "not a plain tensor file .*NotATensor.*; pickled objects are refused",
    ),
    "duplicate after prefixes": (
        lambda state: {**state, "module.model.norm.weight": state["model.norm.weight"]},
        "'model.norm.weight' twice",
    ),
}


@pytest.mark.parametrize("name", list(STATE_FAILURES))
def test_it_rejects_bad_checkpoints(name: str, tmp_path: Path, tokenizer_dir: Path) -> None:
    edit, message = STATE_FAILURES[name]
    checkpoint, config_path = write_checkpoint(
        tmp_path, BASE_CONFIG, edit(random_state_dict(BASE_CONFIG))
    )
    with pytest.raises(CommandError, match=message):
        run_import(checkpoint, config_path, tokenizer_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_it_rejects_tied_config_with_a_different_lm_head(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    state = random_state_dict(BASE_CONFIG)  # untied: lm_head differs from the embedding
    checkpoint, config_path = write_checkpoint(
        tmp_path, {**BASE_CONFIG, "tie_word_embeddings": True}, state
    )
    with pytest.raises(CommandError, match="lm_head.weight differs"):
        run_import(checkpoint, config_path, tokenizer_dir, tmp_path / "out")


def test_it_rejects_missing_files(tmp_path: Path, tokenizer_dir: Path) -> None:
    checkpoint, config_path = write_checkpoint(
        tmp_path, BASE_CONFIG, random_state_dict(BASE_CONFIG)
    )
    out = tmp_path / "out"
    with pytest.raises(CommandError, match="checkpoint not found"):
        run_import(tmp_path / "nope.pth", config_path, tokenizer_dir, out)
    with pytest.raises(CommandError, match="config file not found"):
        run_import(checkpoint, tmp_path / "nope.json", tokenizer_dir, out)
    with pytest.raises(CommandError, match="tokenizer directory not found"):
        run_import(checkpoint, config_path, tmp_path / "no-tokenizer", out)
    with pytest.raises(CommandError, match="cannot load a tokenizer"):
        run_import(checkpoint, config_path, tmp_path, out)  # a directory, but no tokenizer
    assert not out.exists()
    assert not list(tmp_path.glob(".stellarbyte-import-*"))


def test_it_rejects_a_tokenizer_larger_than_the_vocabulary(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    config = {**BASE_CONFIG, "vocab_size": 280}  # the tokenizer has 300 ids
    checkpoint, config_path = write_checkpoint(tmp_path, config, random_state_dict(config))
    with pytest.raises(CommandError, match="tokenizer has 300 tokens but .* vocab_size is 280"):
        run_import(checkpoint, config_path, tokenizer_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_it_rejects_unreadable_files(tmp_path: Path, tokenizer_dir: Path) -> None:
    checkpoint, config_path = write_checkpoint(
        tmp_path, BASE_CONFIG, random_state_dict(BASE_CONFIG)
    )
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a torch file at all" * 10)
    with pytest.raises(CommandError, match="cannot load checkpoint .*not a plain tensor file"):
        run_import(garbage, config_path, tokenizer_dir, tmp_path / "out")
    garbage.write_bytes(b"")
    with pytest.raises(CommandError, match="cannot load checkpoint .*truncated"):
        run_import(garbage, config_path, tokenizer_dir, tmp_path / "out")
    config_path.write_text("{not json")
    with pytest.raises(CommandError, match="not valid JSON"):
        run_import(checkpoint, config_path, tokenizer_dir, tmp_path / "out")


def test_it_refuses_a_non_empty_out_unless_forced(tmp_path: Path, tokenizer_dir: Path) -> None:
    checkpoint, config_path = write_checkpoint(
        tmp_path, BASE_CONFIG, random_state_dict(BASE_CONFIG)
    )
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "model-00001-of-00002.safetensors").write_text("stale shard")

    with pytest.raises(CommandError, match="not empty .*--force"):
        run_import(checkpoint, config_path, tokenizer_dir, out)
    run_import(checkpoint, config_path, tokenizer_dir, out, "--force")

    assert (out / "notes.txt").read_text() == "keep me"
    assert not (out / "model-00001-of-00002.safetensors").exists()
    ids = sample_ids()
    state = random_state_dict(BASE_CONFIG)
    assert_same_logits(hf_logits(out, ids), reference_logits(state, BASE_CONFIG, ids))
