"""Errors users see. Each names the file and the problem, never a deep numpy/torch traceback."""

from __future__ import annotations

from pathlib import Path


class Sas3dError(Exception):
    """Base class for errors caused by user input; the CLI prints them without a traceback."""


class InputError(Sas3dError):
    """Bad input: ``InputError(path, problem)`` renders as ``<path>: <problem>``."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class ConfigError(Sas3dError):
    """A config value or recipe is invalid."""
