"""The limner home folder: models/, outputs/, cache/ and the database, nowhere else.

`LIMNER_HOME` overrides the default, which is the user's data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def home_dir() -> Path:
    """The home folder (created on first use)."""
    env = os.environ.get("LIMNER_HOME")
    path = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("limner"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    path = home_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def outputs_dir() -> Path:
    path = home_dir() / "outputs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    path = home_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
