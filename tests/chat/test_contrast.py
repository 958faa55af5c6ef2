"""WCAG AA contrast (4.5:1 for text) for every theme's colour pairs, read from app.css itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = (Path(__file__).resolve().parents[2] / "static" / "css" / "app.css").read_text()

# (foreground, background) pairs that carry text somewhere in the UI.
PAIRS = [
    ("text", "bg"),
    ("text", "surface"),
    ("text", "surface-2"),
    ("text", "user-bubble"),
    ("muted", "bg"),
    ("muted", "surface"),
    ("muted", "surface-2"),
    ("accent", "bg"),
    ("accent", "surface"),
    ("accent-text", "accent"),
    ("danger", "bg"),
    ("danger", "surface"),
]


def themes() -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for selector, body in re.findall(r"([^{}]+)\{([^{}]*--bg:[^{}]*)\}", CSS):
        name = re.search(r'data-theme="(\w+)"', selector)
        key = (
            name.group(1)
            if name
            else ("system-dark" if "not([data-theme])" in selector else "light")
        )
        found[key] = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", body))
    return found


def luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_every_theme_is_defined() -> None:
    assert {"light", "dark", "stellar", "system-dark"} <= set(themes())


@pytest.mark.parametrize("theme", ["light", "dark", "stellar", "system-dark"])
def test_text_contrast_passes_wcag_aa(theme: str) -> None:
    colours = themes()[theme]
    failures = [
        f"{fg} on {bg}: {contrast(colours[fg], colours[bg]):.2f}"
        for fg, bg in PAIRS
        if contrast(colours[fg], colours[bg]) < 4.5
    ]
    assert failures == []


def test_the_checker_catches_poor_contrast() -> None:
    assert contrast("#777777", "#888888") < 4.5 < contrast("#000000", "#ffffff")
