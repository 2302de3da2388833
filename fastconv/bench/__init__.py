"""The benchmark CLI (fastconv-bench, python -m fastconv.bench): see cli.py."""

from .cli import main

__all__ = ["main"]
