"""`callsense` command line: one module per command family, all driving the same pipeline."""

from callsense.cli.main import main

__all__ = ["main"]
