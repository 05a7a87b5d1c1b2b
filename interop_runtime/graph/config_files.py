"""Config files: reading YAML, and the one error every config problem becomes.

Apart from graph/pipeline.py (which validates with pydantic) so that a daemon reading its
own config file (``worker start --config``) loads neither pydantic nor the models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file that cannot be used: ``FILE: KEY: problem`` (or ``FILE:LINE: ...``)."""

    def __init__(self, path: str | Path, problem: str, key: str | None = None) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


def read_yaml(path: str | Path) -> Any:
    """A YAML file's data; a missing file or a syntax error is a ConfigError naming it."""
    import yaml  # here: a daemon started without a config file does not load it

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(path, "no such file") from None
    except OSError as exc:
        raise ConfigError(path, exc.strerror or str(exc)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(where, f"YAML syntax: {getattr(exc, 'problem', None) or exc}"
                          ) from None
