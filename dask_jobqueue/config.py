"""Register dask_jobqueue's configuration defaults with dask's config system."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import dask.config
import yaml

DEFAULTS_FILE = Path(__file__).with_name("jobqueue.yaml")


@functools.cache
def _parsed_defaults() -> dict[str, Any]:
    with open(DEFAULTS_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def packaged_defaults() -> dict[str, Any]:
    """The packaged ``jobqueue.yaml`` as a dict: a fresh copy, the file parsed once per process."""
    return copy.deepcopy(_parsed_defaults())


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
    dask.config.update_defaults(packaged_defaults())


reconfigure()
