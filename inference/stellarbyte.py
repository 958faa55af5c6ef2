"""Convert the original author's StellarByte checkpoints into a plain Hugging Face Llama folder.

StellarByte (github.com/HxCodeWarrior/StellarByte, ``model/`` at commit 93a82cd, derived from
MiniMind) is a Llama-family decoder: RMSNorm ``weight * x / rms(x)``, rotate-half RoPE, GQA with
``head_dim = hidden_size // num_attention_heads``, a SwiGLU MLP ``down(act(gate(x)) * up(x))``,
no biases, and Llama parameter names. So the weights need no permutation, only a config mapping.

The one non-Llama piece is its "YaRN" (``inference_rope_scaling``): a per-frequency multiplier
that Hugging Face's ``yarn`` ramp cannot express. It is written as ``longrope`` with explicit
per-frequency factors (the same for short and long inputs) and ``attention_factor`` 1.0, which
reproduces the original frequencies to float32 rounding (a couple of ulps at most).

Django-free on purpose: the management command is a thin shell around :func:`import_checkpoint`.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MODEL_TYPE = "stellarbytecasualmodel"
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
MOE_MARKERS = (".mlp.experts.", ".mlp.gate.", ".mlp.shared_experts.")
GATE_PROJ_KEY = "model.layers.0.mlp.gate_proj.weight"
K_PROJ_KEY = "model.layers.0.self_attn.k_proj.weight"
EMBED_KEY = "model.embed_tokens.weight"
LM_HEAD_KEY = "lm_head.weight"

# The original's fixed YaRN settings (StellarByteConfig ignores any saved ``rope_scaling``).
YARN_FACTOR = 4.0
YARN_ORIGINAL_MAX_POSITIONS = 2048
YARN_BETA_FAST = 4.0
YARN_BETA_SLOW = 1.0

# Defaults of the original StellarByteConfig for fields a config JSON may omit.
DEFAULTS: dict[str, Any] = {
    "rope_theta": 1e6,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 32768,
    "hidden_act": "silu",
    "inference_rope_scaling": False,
    "use_moe": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": None,
}
REQUIRED_INTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
# Weight files a forced import replaces, so a stale shard never shadows the new weights.
STALE_WEIGHT_PATTERNS = ("model*.safetensors", "model*.safetensors.index.json", "pytorch_model*")


class StellarByteImportError(Exception):
    """A checkpoint or its config cannot be imported; the message is one line for the user."""


@dataclass(frozen=True)
class StellarByteConfig:
    """The fields of a StellarByte config JSON that shape the model, validated."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None  # None: derived from the k_proj weight
    intermediate_size: int | None  # None: derived from the gate_proj weight
    rope_theta: float
    rms_norm_eps: float
    max_position_embeddings: int
    hidden_act: str
    tie_word_embeddings: bool | None  # None: derived from the weights
    inference_rope_scaling: bool
    use_moe: bool
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class ImportResult:
    out: Path
    parameters: int
    tied: bool
    rope_type: str


# --- config -------------------------------------------------------------------------------


def _int(raw: Mapping[str, Any], name: str, *, minimum: int = 1) -> int:
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StellarByteImportError(
            f"config: {name} must be an integer >= {minimum}, got {value!r}"
        )
    return value


def _optional_int(raw: Mapping[str, Any], name: str, *, minimum: int) -> int | None:
    if raw.get(name) is None:
        return None
    return _int(raw, name, minimum=minimum)


def _positive_float(raw: Mapping[str, Any], name: str) -> float:
    value = raw.get(name, DEFAULTS[name])
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise StellarByteImportError(f"config: {name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise StellarByteImportError(f"config: {name} must be finite, got {value!r}")
    return float(value)


def _bool(raw: Mapping[str, Any], name: str, default: bool | None) -> bool | None:
    value = raw.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise StellarByteImportError(f"config: {name} must be true or false, got {value!r}")
    return value


def parse_config(raw: Any) -> StellarByteConfig:
    """Validate a StellarByte config dict; absent optional fields take the original's defaults."""
    if not isinstance(raw, Mapping):
        raise StellarByteImportError("config: expected a JSON object")
    model_type = raw.get("model_type")
    if model_type != MODEL_TYPE:
        raise StellarByteImportError(
            f"config: model_type is {model_type!r}, not {MODEL_TYPE!r} (not a StellarByte config)"
        )
    missing = [name for name in REQUIRED_INTS if raw.get(name) is None]
    if missing:
        raise StellarByteImportError(f"config: missing required field(s): {', '.join(missing)}")
    hidden_size = _int(raw, "hidden_size")
    heads = _int(raw, "num_attention_heads")
    if hidden_size % heads:
        raise StellarByteImportError(
            f"config: hidden_size {hidden_size} is not divisible by num_attention_heads {heads}"
        )
    if (hidden_size // heads) % 2:
        raise StellarByteImportError(f"config: head dimension {hidden_size // heads} must be even")
    kv_heads = _optional_int(raw, "num_key_value_heads", minimum=1)
    if kv_heads is not None and heads % kv_heads:
        raise StellarByteImportError(
            f"config: num_attention_heads {heads} is not a multiple of "
            f"num_key_value_heads {kv_heads}"
        )
    hidden_act = raw.get("hidden_act", DEFAULTS["hidden_act"])
    from transformers.activations import ACT2FN

    if not isinstance(hidden_act, str) or hidden_act not in ACT2FN:
        raise StellarByteImportError(f"config: unknown hidden_act {hidden_act!r}")
    token_ids = {
        name: _optional_int(raw, name, minimum=0) if name in raw else DEFAULTS[name]
        for name in ("bos_token_id", "eos_token_id", "pad_token_id")
    }
    return StellarByteConfig(
        vocab_size=_int(raw, "vocab_size"),
        hidden_size=hidden_size,
        num_hidden_layers=_int(raw, "num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=_optional_int(raw, "intermediate_size", minimum=1),
        rope_theta=_positive_float(raw, "rope_theta"),
        rms_norm_eps=_positive_float(raw, "rms_norm_eps"),
        max_position_embeddings=(
            _int(raw, "max_position_embeddings")
            if raw.get("max_position_embeddings") is not None
            else DEFAULTS["max_position_embeddings"]
        ),
        hidden_act=hidden_act,
        tie_word_embeddings=_bool(raw, "tie_word_embeddings", None),
        inference_rope_scaling=bool(
            _bool(raw, "inference_rope_scaling", DEFAULTS["inference_rope_scaling"])
        ),
        use_moe=bool(_bool(raw, "use_moe", DEFAULTS["use_moe"])),
        **token_ids,
    )


def read_config(path: Path) -> StellarByteConfig:
    """Read and validate the config JSON file."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StellarByteImportError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StellarByteImportError(f"cannot read config {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise StellarByteImportError(f"config {path} is not valid JSON: {exc}") from None
    return parse_config(raw)


# --- weights ------------------------------------------------------------------------------


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a raw ``.pth`` state dict without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise StellarByteImportError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise StellarByteImportError(
            f"cannot load checkpoint {path}: not a plain tensor file ({_unpickling_reason(exc)}); "
            "pickled objects are refused"
        ) from None
    except EOFError:
        raise StellarByteImportError(f"cannot load checkpoint {path}: file is truncated") from None
    except (OSError, RuntimeError, ValueError) as exc:
        raise StellarByteImportError(f"cannot load checkpoint {path}: {_one_line(exc)}") from None
    if not isinstance(data, Mapping):
        raise StellarByteImportError(
            f"checkpoint {path} holds a {type(data).__name__}, not a state dict"
        )
    bad = [key for key, value in data.items() if not isinstance(key, str)]
    bad += [key for key, value in data.items() if not isinstance(value, torch.Tensor)]
    if bad:
        hint = " (a training resume file? pass the weights .pth instead)" if "model" in data else ""
        raise StellarByteImportError(
            f"checkpoint {path} is not a state dict: entry {bad[0]!r} is not a named tensor{hint}"
        )
    if not data:
        raise StellarByteImportError(f"checkpoint {path} is an empty state dict")
    return dict(data)


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``module.`` / ``_orig_mod.`` prefixes (stacked, any order) left by training wrappers."""
    stripped: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        name = key
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if name in stripped:
            raise StellarByteImportError(f"checkpoint has {name!r} twice once prefixes are removed")
        stripped[name] = tensor
    return stripped


def moe_keys(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    return [key for key in state_dict if any(marker in key for marker in MOE_MARKERS)]


def _derive_dims(
    config: StellarByteConfig, state_dict: Mapping[str, torch.Tensor]
) -> tuple[int, int]:
    """Fill ``intermediate_size`` and ``num_key_value_heads`` from the weights when null."""
    intermediate = config.intermediate_size
    if intermediate is None:
        if GATE_PROJ_KEY not in state_dict or state_dict[GATE_PROJ_KEY].dim() != 2:
            raise StellarByteImportError(
                f"intermediate_size is null and the checkpoint has no 2-D {GATE_PROJ_KEY}"
            )
        intermediate = int(state_dict[GATE_PROJ_KEY].shape[0])
    kv_heads = config.num_key_value_heads
    if kv_heads is None:
        k_proj = state_dict.get(K_PROJ_KEY)
        if k_proj is None or k_proj.dim() != 2 or k_proj.shape[0] % config.head_dim:
            raise StellarByteImportError(
                f"num_key_value_heads is null and {K_PROJ_KEY} does not give it"
            )
        kv_heads = int(k_proj.shape[0]) // config.head_dim
        if kv_heads == 0 or config.num_attention_heads % kv_heads:
            raise StellarByteImportError(
                f"{K_PROJ_KEY} implies {kv_heads} key/value heads, which does not divide "
                f"{config.num_attention_heads} attention heads"
            )
    return intermediate, kv_heads


def resolve_tying(config: StellarByteConfig, state_dict: dict[str, torch.Tensor]) -> bool:
    """Decide tying; drops a redundant ``lm_head.weight`` in place (the original shares one)."""
    head = state_dict.get(LM_HEAD_KEY)
    embed = state_dict.get(EMBED_KEY)
    tied = config.tie_word_embeddings
    if tied is None:  # not in the JSON: the weights tell
        tied = head is None or (
            embed is not None and head.shape == embed.shape and torch.equal(head, embed)
        )
    if tied and head is not None:
        if embed is None or head.shape != embed.shape or not torch.equal(head, embed):
            raise StellarByteImportError(
                f"tie_word_embeddings is true but {LM_HEAD_KEY} differs from {EMBED_KEY}"
            )
        del state_dict[LM_HEAD_KEY]
    return tied


# --- rope ---------------------------------------------------------------------------------


def stellarbyte_yarn_scale(
    head_dim: int, rope_theta: float, max_position_embeddings: int
) -> torch.Tensor | None:
    """The original's per-frequency YaRN multipliers, computed exactly as its RoPE.py does.

    None when the original applies no scaling (``max_position_embeddings`` within 2048).
    """
    if max_position_embeddings / YARN_ORIGINAL_MAX_POSITIONS <= 1.0:
        return None
    half = head_dim // 2
    freqs = 1.0 / (rope_theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    corr_dim = next(
        (i for i in range(half) if 2 * math.pi / freqs[i] > YARN_ORIGINAL_MAX_POSITIONS), half
    )
    power = torch.arange(0, half).float() / max(half - 1, 1)
    beta = YARN_BETA_SLOW + (YARN_BETA_FAST - YARN_BETA_SLOW) * power
    return torch.where(
        torch.arange(half) < corr_dim,
        (beta * YARN_FACTOR - beta + 1) / (beta * YARN_FACTOR),
        1.0 / YARN_FACTOR,
    )


def rope_parameters(config: StellarByteConfig) -> dict[str, Any]:
    """Transformers 5 ``rope_parameters`` that reproduce the original rotary frequencies."""
    default = {"rope_type": "default", "rope_theta": config.rope_theta}
    if not config.inference_rope_scaling:
        return default
    scale = stellarbyte_yarn_scale(
        config.head_dim, config.rope_theta, config.max_position_embeddings
    )
    if scale is None:
        return default
    # transformers divides by these: 1 / (factor * theta**(i/d)) == theta**(-i/d) * scale
    factors = (1.0 / scale.double()).tolist()
    return {
        "rope_type": "longrope",
        "rope_theta": config.rope_theta,
        "factor": YARN_FACTOR,
        "original_max_position_embeddings": YARN_ORIGINAL_MAX_POSITIONS,
        "attention_factor": 1.0,  # the original does not rescale cos/sin
        "short_factor": factors,  # same at every length: the original always scales
        "long_factor": factors,
    }


# --- mapping ------------------------------------------------------------------------------


def build_llama_config(
    config: StellarByteConfig, state_dict: Mapping[str, torch.Tensor], *, tied: bool
) -> Any:
    """Map onto a ``LlamaConfig``; null sizes are read off the weights."""
    from transformers import LlamaConfig

    intermediate, kv_heads = _derive_dims(config, state_dict)
    embed = state_dict.get(EMBED_KEY)
    dtype = embed.dtype if embed is not None else torch.float32
    try:
        llama = LlamaConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=intermediate,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=kv_heads,
            head_dim=config.head_dim,
            hidden_act=config.hidden_act,
            max_position_embeddings=config.max_position_embeddings,
            rms_norm_eps=config.rms_norm_eps,
            rope_parameters=rope_parameters(config),
            tie_word_embeddings=tied,
            attention_bias=False,
            mlp_bias=False,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
            architectures=["LlamaForCausalLM"],
            dtype=str(dtype).removeprefix("torch."),
        )
    except (TypeError, ValueError) as exc:
        raise StellarByteImportError(
            f"config cannot be mapped to Llama: {_one_line(exc)}"
        ) from None
    return llama


def expected_shapes(llama_config: Any, tied: bool) -> dict[str, tuple[int, ...]]:
    """Names and shapes transformers expects, read off a weightless (meta) Llama."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config)
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    if tied:
        shapes.pop(LM_HEAD_KEY, None)
    return shapes


def check_weights(
    state_dict: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]]
) -> None:
    """Every expected tensor present with its shape and float dtype, nothing extra."""
    missing = sorted(set(shapes) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(shapes))
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise StellarByteImportError(f"checkpoint is missing keys: {', '.join(missing[:3])}{more}")
    if unexpected:
        more = f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
        raise StellarByteImportError(
            f"checkpoint has unexpected keys: {', '.join(unexpected[:3])}{more}"
        )
    for key, shape in shapes.items():
        tensor = state_dict[key]
        if tuple(tensor.shape) != shape:
            raise StellarByteImportError(
                f"shape mismatch for {key}: checkpoint has {tuple(tensor.shape)}, "
                f"config implies {shape}"
            )
        if not tensor.is_floating_point():
            raise StellarByteImportError(f"{key} has dtype {tensor.dtype}, expected floating point")


# --- output -------------------------------------------------------------------------------


def check_out_dir(out: Path, *, force: bool) -> None:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StellarByteImportError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise StellarByteImportError(f"--out {out} is not empty (use --force to overwrite)")


def _save_weights(state_dict: Mapping[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        tensor = tensor.contiguous()
        if tensor.untyped_storage().data_ptr() in seen:  # safetensors refuses shared storage
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    save_file(tensors, str(path), metadata={"format": "pt"})


def _save_tokenizer(tokenizer_dir: Path, out: Path, vocab_size: int) -> None:
    from transformers import AutoTokenizer

    if not Path(tokenizer_dir).is_dir():
        raise StellarByteImportError(f"tokenizer directory not found: {tokenizer_dir}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except Exception as exc:  # transformers raises many kinds here; all mean "not a tokenizer"
        raise StellarByteImportError(
            f"cannot load a tokenizer from {tokenizer_dir}: {_one_line(exc)}"
        ) from None
    if len(tokenizer) > vocab_size:
        raise StellarByteImportError(
            f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}"
        )
    tokenizer.save_pretrained(str(out))


def _install(staging: Path, out: Path) -> None:
    """Move the finished files into place, so a failed import never leaves half an output."""
    out.mkdir(exist_ok=True)  # made here, not renamed from staging: mkdtemp's mode is 0700
    for pattern in STALE_WEIGHT_PATTERNS:
        for stale in out.glob(pattern):
            if stale.is_file():
                stale.unlink()
    for item in staging.iterdir():
        target = out / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)


def import_checkpoint(
    checkpoint: Path,
    *,
    config_path: Path,
    tokenizer_dir: Path,
    out: Path,
    force: bool = False,
) -> ImportResult:
    """Write a Hugging Face Llama folder (config, safetensors, tokenizer, generation config)."""
    from transformers import GenerationConfig

    out = Path(out)
    check_out_dir(out, force=force)
    config = read_config(config_path)
    if config.use_moe:
        raise StellarByteImportError(
            "mixture-of-experts StellarByte checkpoints (use_moe: true) are not supported yet"
        )
    state_dict = strip_wrapper_prefixes(load_state_dict(checkpoint))
    experts = moe_keys(state_dict)
    if experts:
        raise StellarByteImportError(
            f"mixture-of-experts StellarByte checkpoints are not supported yet (found {experts[0]})"
        )
    tied = resolve_tying(config, state_dict)
    llama_config = build_llama_config(config, state_dict, tied=tied)
    check_weights(state_dict, expected_shapes(llama_config, tied))

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".stellarbyte-import-", dir=out.parent))
    try:
        _save_tokenizer(tokenizer_dir, staging, config.vocab_size)
        llama_config.save_pretrained(str(staging))
        GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        ).save_pretrained(str(staging))
        _save_weights(state_dict, staging / "model.safetensors")
        _install(staging, out)
    except OSError as exc:
        raise StellarByteImportError(f"cannot write {out}: {_one_line(exc)}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ImportResult(
        out=out,
        parameters=sum(tensor.numel() for tensor in state_dict.values()),
        tied=tied,
        rope_type=llama_config.rope_parameters["rope_type"],
    )


def _unpickling_reason(exc: pickle.UnpicklingError) -> str:
    """The useful part of torch's long weights_only message (which also suggests unsafe loading)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    reason = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return reason.split(". ")[0] or type(exc).__name__


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
