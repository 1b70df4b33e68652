"""What every command module shares: the command table and settings from the common options."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from callsense.config import Settings, load_settings

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn

    return register


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "language", None) and args.language != "auto":
        overrides.setdefault("asr", {})["language"] = args.language
    if getattr(args, "channels", None):
        overrides["channels"] = args.channels.split(",")
    if getattr(args, "num_speakers", None):
        overrides.setdefault("diarization", {})["num_speakers"] = args.num_speakers
    return load_settings(args.config, overrides)
