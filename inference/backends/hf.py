"""The local-model backend: any Hugging Face causal LM, through transformers and torch.

Loaded lazily, once per process, behind a lock: never at import and never in
``AppConfig.ready()``, so management commands and web processes that do not generate pay
nothing. Generation is our own decode loop over the model's KV cache rather than
``model.generate`` with a streamer thread: it is one generator on the caller's thread, checks
the cancel signal before every decode step, and holds the incremental-detokenization and
stop-string logic in one place (``TextAssembler``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.backends.base import (
    BackendError,
    CallbackStreams,
    Result,
    Turn,
    validate_turns,
)
from inference.batching import Request, Scheduler
from inference.options import GenerationOptions
from inference.prompt import FALLBACK_CHAT_TEMPLATE

logger = logging.getLogger(__name__)

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LOAD_RETRY_SECONDS = 30.0


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    device: Any
    eos_ids: frozenset[int]
    context_length: int
    template: str | None  # None: the tokenizer's own
    name: str
    load_seconds: float
    mixed: bool = False  # takes mixed steps (inference.mixed): checked once, at load


def cpu_threads() -> int:
    """torch threads for CPU generation: STELLARCHAT_TORCH_THREADS, or one fewer than the
    cores this process may use (at least 1), so the event loop keeps a core."""
    from django.conf import settings

    if settings.STELLARCHAT_TORCH_THREADS:
        return int(settings.STELLARCHAT_TORCH_THREADS)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def display_name(ref: str) -> str:
    """A model's name for people: a folder's own name, or the hub id."""
    ref = ref.rstrip("/")
    return Path(ref).name if os.path.isdir(ref) else ref


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit]


def pick_device_and_dtype(device: str, dtype: str) -> tuple[str, Any, bool]:
    """(device, torch dtype, use accelerate's device_map) from the settings' choices.

    auto: CUDA (bf16 where supported, else fp16; all GPUs through device_map when there are
    several), then Apple MPS (fp16), else CPU (fp32).
    """
    import torch

    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(
            f"STELLARCHAT_DEVICE={device} but no CUDA GPU is visible; use cpu or auto"
        )
    if dtype != "auto":
        chosen = names[dtype]
    elif device.startswith("cuda"):
        chosen = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif device == "mps":
        chosen = torch.float16
    else:
        chosen = torch.float32
    multi_gpu = device == "cuda" and torch.cuda.device_count() > 1
    return device, chosen, multi_gpu


class TransformersBackend(CallbackStreams):
    """Streams replies from a local (or hub) causal LM."""

    name = "transformers"
    reports_start = True  # astream takes on_start: called when a request joins the batch

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool | None = None,
        max_batch: int | None = None,
        after_step: Any = None,
        mixed: bool = True,
    ) -> None:
        from django.conf import settings

        self.model_ref = model or settings.STELLARCHAT_MODEL
        self.device_choice = device or settings.STELLARCHAT_DEVICE
        self.dtype_choice = dtype or settings.STELLARCHAT_DTYPE
        self.trust_remote_code = (
            settings.STELLARCHAT_TRUST_REMOTE_CODE
            if trust_remote_code is None
            else trust_remote_code
        )
        self._loaded: Loaded | None = None
        self._load_error: tuple[float, BackendError] | None = None
        self._load_lock = threading.Lock()
        # Every reply of the process goes through one scheduler, which batches decode steps.
        self._batcher: Scheduler | None = None
        self.max_batch = settings.STELLARCHAT_MAX_BATCH if max_batch is None else max_batch
        self.after_step = after_step  # called on the inference thread after every step
        self.mixed = mixed  # new prompts join inside decode steps, where the model allows

    # --- loading -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Loaded and able to generate (for readiness checks)."""
        return self._loaded is not None

    @property
    def display_name(self) -> str:
        return display_name(self.model_ref)

    def load(self) -> Loaded:
        """Load once; a failure is remembered briefly so a broken model fails fast."""
        if self._loaded is not None:
            return self._loaded
        with self._load_lock:
            if self._loaded is not None:
                return self._loaded
            if self._load_error and time.monotonic() - self._load_error[0] < LOAD_RETRY_SECONDS:
                raise self._load_error[1]
            try:
                self._loaded = self._load()
            except BackendError as exc:
                self._load_error = (time.monotonic(), exc)
                logger.error("model load failed: %s", exc)
                raise
            self._load_error = None
            return self._loaded

    def _check_reference(self) -> None:
        ref = self.model_ref
        path = Path(ref).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise BackendError(
                    f"STELLARCHAT_MODEL={ref} is not a model folder (no config.json); point it "
                    "at a folder saved with save_pretrained, or a hub id like "
                    "Qwen/Qwen2.5-0.5B-Instruct"
                )
            self._check_custom_code(path)
            return
        if path.exists() or ref.startswith(("/", ".", "~")) or not HUB_ID_RE.match(ref):
            raise BackendError(
                f"STELLARCHAT_MODEL={ref}: no such model folder; point it at a folder with "
                "config.json and weights, or a hub id like Qwen/Qwen2.5-0.5B-Instruct"
            )

    def _check_custom_code(self, path: Path) -> None:
        """A folder whose config maps to its own Python code runs that code when loaded."""
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BackendError(f"{path}/config.json cannot be read: {_one_line(exc)}") from None
        if isinstance(config, dict) and config.get("auto_map") and not self.trust_remote_code:
            raise BackendError(
                f"{path} needs its own Python code to load; set STELLARCHAT_TRUST_REMOTE_CODE=1 "
                "only if you trust its authors"
            )

    def _load(self) -> Loaded:
        started = time.monotonic()
        self._check_reference()
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - requirements pin both
            raise BackendError(f"transformers/torch are not installed: {exc}") from None

        device, dtype, multi_gpu = pick_device_and_dtype(self.device_choice, self.dtype_choice)
        if device == "cpu":
            torch.set_num_threads(cpu_threads())
        ref = self.model_ref
        if not Path(ref).expanduser().is_dir():
            logger.info("model %s is a hub id: downloading if not cached (progress below)", ref)
        try:
            tokenizer = AutoTokenizer.from_pretrained(ref, trust_remote_code=self.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                ref,
                dtype=dtype,
                trust_remote_code=self.trust_remote_code,
                device_map="auto" if multi_gpu else None,
                low_cpu_mem_usage=True,
            )
        except (torch.OutOfMemoryError, MemoryError):
            raise BackendError(
                f"not enough memory to load {ref} on {device}; try a smaller model or "
                "STELLARCHAT_DTYPE=bfloat16 / float16"
            ) from None
        except Exception as exc:
            raise BackendError(self._explain_load_error(ref, exc)) from None
        if not multi_gpu:
            model.to(device)
        model.eval()
        from inference import kernels

        kernels.install(model)  # CPU float32 layers only; measures: oneDNN where it beats MKL

        if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        template = None
        if not getattr(tokenizer, "chat_template", None):
            if tokenizer.eos_token is None:
                raise BackendError(
                    f"{ref} has no chat template and no end-of-sequence token, so replies could "
                    "never end; add a chat_template to its tokenizer_config.json"
                )
            logger.warning("%s has no chat template; using StellarChat's plain-text fallback", ref)
            template = FALLBACK_CHAT_TEMPLATE

        eos_ids = _eos_ids(model, tokenizer)
        if not eos_ids:
            raise BackendError(f"{ref} defines no end-of-sequence token; replies could never end")
        # Part of loading (its self-check runs the model a few times): not on the first
        # reply's time to first token.
        mixed = self.mixed and _mixed_steps(model, tokenizer)
        loaded = Loaded(
            model=model,
            tokenizer=tokenizer,
            device=model.device if multi_gpu else torch.device(device),
            eos_ids=eos_ids,
            context_length=_context_length(model, tokenizer),
            template=template,
            name=self.display_name,
            load_seconds=time.monotonic() - started,
            mixed=mixed,
        )
        from stellarchat import metrics  # Django-side, so not at this module's import

        metrics.model_loaded(loaded.load_seconds)
        logger.info(
            "loaded %s on %s (%s) in %.1f s, context %d",
            ref,
            device,
            dtype,
            loaded.load_seconds,
            loaded.context_length,
        )
        return loaded

    @staticmethod
    def _explain_load_error(ref: str, exc: Exception) -> str:
        text = _one_line(exc)
        lowered = text.lower()
        if "trust_remote_code" in lowered:
            return (
                f"{ref} needs custom code to load; set STELLARCHAT_TRUST_REMOTE_CODE=1 only if you "
                "trust its authors"
            )
        if any(k in lowered for k in ("deserializ", "header", "safetensor", "unpickl", "corrupt")):
            return f"the weights of {ref} could not be read ({text}); re-download or re-export them"
        if any(k in lowered for k in ("offline", "connection", "resolve", "couldn't connect")):
            return (
                f"{ref} is not in the local cache and the model hub cannot be reached ({text}); "
                "download it once with internet access, or point STELLARCHAT_MODEL at a folder"
            )
        return f"could not load {ref}: {text}"

    # --- generation ----------------------------------------------------------------------

    async def _before_submit(self) -> None:
        if self._loaded is None:
            # Load on the inference thread, so torch state stays there; a failure is
            # reported by _submit, as the stream's ending.
            from inference.runner import run_on_inference_thread

            with contextlib.suppress(BackendError):
                await run_on_inference_thread(self.load)

    def _submit(
        self,
        turns: Sequence[Turn],
        options: GenerationOptions,
        cancel: threading.Event,
        emit: Any,
        *,
        on_start: Any = None,
        inline: bool = True,
    ) -> None:
        """Hand a request to the scheduler, starting its loop on the inference thread if idle.
        A model that cannot load ends the request at once (its Result emitted).

        Called on the inference thread itself, the loop runs right here when ``inline`` (a
        blocking ``stream`` there would otherwise wait for itself); else it is queued."""
        started = time.monotonic()
        try:
            validate_turns(turns)
            loaded = self.load()
        except BackendError as exc:
            emit(Result(finish_reason="error", error_code=exc.code, error=str(exc)))
            return
        scheduler = self._scheduler(loaded)
        request = Request(
            turns=turns,
            options=options,
            cancel=cancel,
            emit=emit,
            started=started,
            on_start=on_start,
        )
        if scheduler.submit(request):
            from inference.runner import submit_to_inference_thread

            if inline and threading.current_thread().name.startswith("inference"):
                scheduler.run_until_idle()
            else:
                submit_to_inference_thread(scheduler.run_until_idle)

    def _scheduler(self, loaded: Loaded) -> Scheduler:
        with self._load_lock:
            if self._batcher is None or self._batcher.loaded is not loaded:
                self._batcher = Scheduler(
                    loaded,
                    max_batch=self.max_batch,
                    after_step=self.after_step,
                    mixed=self.mixed and loaded.mixed,
                )
            return self._batcher


def _mixed_steps(model: Any, tokenizer: Any) -> bool:
    from inference import mixed

    try:
        return mixed.install(model, tokenizer)
    except Exception:  # never worse than the model's own forward
        logger.exception("mixed steps could not be set up; separate prefill steps")
        return False


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, list | tuple):
        ids.update(int(i) for i in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _context_length(model: Any, tokenizer: Any) -> int:
    config = model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            break
    else:
        value = 2048
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < value:
        value = tok_max
    return int(value)
