"""Command-line options shared by ``python -m inference.training`` and ``train_demo_model``."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from inference.training.train import DEFAULT_OUT, DEFAULT_SCRATCH, TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder to write the model to (default: {DEFAULT_OUT}; "
        f"with --quick: {DEFAULT_SCRATCH / 'quick'})",
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        default=DEFAULT_SCRATCH,
        help="folder for intermediate files (default: %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny smoke-test run (a minute or two); not a usable model",
    )
    parser.add_argument(
        "--card-only",
        action="store_true",
        help="only rewrite the model card from the last run's results (after editing card.py)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: 1234)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps")
    parser.add_argument(
        "--dialogues", type=int, default=None, help="number of generated training conversations"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 2)")


def config_from(options: dict[str, Any]) -> TrainConfig:
    cfg = TrainConfig.quick_run() if options.get("quick") else TrainConfig()
    overrides = {
        name: options[name]
        for name in ("seed", "steps", "dialogues", "threads")
        if options.get(name) is not None
    }
    return replace(cfg, **overrides)


def out_from(options: dict[str, Any]) -> Path:
    """Where to write: a smoke test never replaces the shipped model unless asked to."""
    if options.get("out") is not None:
        return Path(options["out"])
    return Path(options["scratch"]) / "quick" if options.get("quick") else DEFAULT_OUT
