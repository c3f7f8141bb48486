"""Register dask_jobqueue's configuration defaults with dask's config system."""

from __future__ import annotations

import os
from pathlib import Path

import dask.config
import yaml

DEFAULTS_FILE = Path(__file__).with_name("jobqueue.yaml")


def reconfigure() -> None:
    """Merge the packaged defaults into ``dask.config`` and offer the user a template file.

    The template is a fully commented copy of the defaults written to the user's dask config
    directory only when no ``jobqueue.yaml`` exists there. A read-only or missing home directory
    is not an error: the defaults still apply.
    """
    try:
        dask.config.ensure_file(source=str(DEFAULTS_FILE), comment=True)
    except OSError:
        pass
    with open(DEFAULTS_FILE, encoding="utf-8") as f:
        defaults = yaml.safe_load(f)
    dask.config.update_defaults(defaults)


def user_config_path() -> str:
    """Where the commented template is written (``$DASK_CONFIG`` or ``~/.config/dask``)."""
    return os.path.join(dask.config.PATH, "jobqueue.yaml")


reconfigure()
