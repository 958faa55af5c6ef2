"""Generation options: one validated, immutable shape shared by every backend and entry point.

Validation is strict on purpose: a value that is out of range or of the wrong type is an error
that names the field, never something silently clamped (a client asking for temperature 5 has a
bug they deserve to hear about).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 200
MAX_SEED = 2**63 - 1


class OptionError(ValueError):
    """An option is invalid; ``field`` names it for the client."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class GenerationOptions:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0  # 0 = no top-k cut
    max_new_tokens: int = 512
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data


FIELDS = ("temperature", "top_p", "top_k", "max_new_tokens", "stop", "seed")


def _number(name: str, value: Any) -> float:
    # bool is an int subclass: True must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OptionError(name, "must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise OptionError(name, "must be a finite number")
    return number


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise OptionError(name, "must be a whole number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise OptionError(name, "must be a whole number")
    return value


def _is_text(value: str) -> bool:
    """Whether ``value`` is text a model can produce: encodable (no lone surrogate), no NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def parse_options(
    data: Mapping[str, Any] | None,
    *,
    max_new_tokens_limit: int,
    defaults: GenerationOptions | None = None,
) -> GenerationOptions:
    """Validate a client's options (JSON-decoded) on top of ``defaults``."""
    base = defaults or GenerationOptions(max_new_tokens=min(512, max_new_tokens_limit))
    if data is None:
        return base
    if not isinstance(data, Mapping):
        raise OptionError("options", "must be an object")
    unknown = sorted(str(k) for k in data if k not in FIELDS)
    if unknown:
        raise OptionError(unknown[0], f"is not an option; known options: {', '.join(FIELDS)}")
    values: dict[str, Any] = {}

    if data.get("temperature") is not None:
        t = _number("temperature", data["temperature"])
        if not 0.0 <= t <= 2.0:
            raise OptionError("temperature", "must be between 0 and 2 (0 = greedy)")
        values["temperature"] = t
    if data.get("top_p") is not None:
        p = _number("top_p", data["top_p"])
        if not 0.0 < p <= 1.0:
            raise OptionError("top_p", "must be greater than 0 and at most 1")
        values["top_p"] = p
    if data.get("top_k") is not None:
        k = _integer("top_k", data["top_k"])
        if k < 0:
            raise OptionError("top_k", "must be 0 (off) or more")
        values["top_k"] = k
    if data.get("max_new_tokens") is not None:
        n = _integer("max_new_tokens", data["max_new_tokens"])
        if not 1 <= n <= max_new_tokens_limit:
            raise OptionError("max_new_tokens", f"must be between 1 and {max_new_tokens_limit}")
        values["max_new_tokens"] = n
    if data.get("stop") is not None:
        stop = data["stop"]
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop):
            raise OptionError("stop", "must be a string or a list of strings")
        if len(stop) > MAX_STOP_STRINGS:
            raise OptionError("stop", f"at most {MAX_STOP_STRINGS} stop strings")
        if any(not s or len(s) > MAX_STOP_CHARS for s in stop):
            raise OptionError("stop", f"each stop string must be 1 to {MAX_STOP_CHARS} characters")
        if any(not _is_text(s) for s in stop):
            # No decoded text holds either, and a lone surrogate cannot even cross Redis.
            raise OptionError("stop", "stop strings must be valid Unicode without NUL characters")
        values["stop"] = tuple(dict.fromkeys(stop))
    if data.get("seed") is not None:
        seed = _integer("seed", data["seed"])
        if not 0 <= seed <= MAX_SEED:
            raise OptionError("seed", f"must be between 0 and {MAX_SEED}")
        values["seed"] = seed

    return GenerationOptions(**{**asdict(base), "stop": base.stop, **values})
