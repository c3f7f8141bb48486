"""Register dask_jobqueue's configuration defaults with dask's config system.

Dask reads every YAML file of its config directories when it is first imported; a file that
is not valid YAML makes that import raise. Importing this package does not: it warns, naming
the file and the line, and building a cluster raises :class:`ConfigFileError` (a
``ValueError``) with the same one line, until the file is fixed.
"""

from __future__ import annotations

import copy
import functools
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

DEFAULTS_FILE = Path(__file__).with_name("jobqueue.yaml")

__all__ = [
    "ConfigFileError",
    "DEFAULTS_FILE",
    "dask_config",
    "packaged_defaults",
    "packaged_section",
    "reconfigure",
    "sources_of",
]


class ConfigFileError(ValueError):
    """A dask configuration file that cannot be read (not valid YAML)."""


@functools.cache
def _parsed_defaults() -> dict[str, Any]:
    with open(DEFAULTS_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def packaged_defaults() -> dict[str, Any]:
    """The packaged ``jobqueue.yaml`` as a dict: a fresh copy, the file parsed once per process."""
    return copy.deepcopy(_parsed_defaults())


def packaged_section(name: str) -> Mapping[str, Any]:
    """The packaged ``jobqueue.<name>`` section (read-only; empty for a name it lacks)."""
    section = (_parsed_defaults().get("jobqueue") or {}).get(name)
    return section if isinstance(section, Mapping) else {}


def _malformed_file_error(error: ValueError) -> ConfigFileError:
    """Dask's multi-line "A dask config file at ... is malformed" as one line naming the file
    and the place YAML stopped."""
    match = re.search(r"config file at '([^']+)'", str(error))
    if match is None:
        return ConfigFileError(" ".join(str(error).split()))
    path = match.group(1)
    where = ""
    try:
        with open(path, encoding="utf-8") as f:
            yaml.safe_load(f)
    except yaml.MarkedYAMLError as yaml_error:
        mark = yaml_error.problem_mark
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        where += f" ({yaml_error.problem})" if yaml_error.problem else ""
    except (OSError, yaml.YAMLError):
        pass
    problem = (
        f"is not valid YAML{where}"
        if where
        else "does not hold a mapping of settings (dask: "
        + " ".join(str(error).split(" - ", 1)[-1].split())
        + ")"
    )
    return ConfigFileError(
        f"dask configuration file {path} {problem}: fix or remove it (dask reads every file "
        "of its config directories)"
    )


def dask_config(register: bool = True) -> Any:
    """``dask.config``, imported; :class:`ConfigFileError` (one line naming the file) when a
    configuration file dask reads is not valid YAML. With ``register``, registers the packaged
    defaults if the import failed when this package was imported and works now."""
    try:
        import dask.config
    except ValueError as error:
        if "config file" not in str(error):
            raise
        raise _malformed_file_error(error) from None
    if register and not any(
        isinstance(d, Mapping) and "jobqueue" in d for d in dask.config.defaults
    ):
        _register(dask.config)
    return dask.config


def _register(config: Any) -> None:
    # dask replaces a section given as a plain value (``slurm: "cores=4"``) with the
    # defaults' mapping, and dask.config.refresh() would put the value back: keep it, so
    # the section is refused with its name instead of being silently ignored
    jobqueue = config.config.get("jobqueue")
    plain = (
        {k: v for k, v in jobqueue.items() if v is not None and not isinstance(v, Mapping)}
        if isinstance(jobqueue, Mapping)
        else {}
    )
    config.update_defaults(packaged_defaults())
    config.config["jobqueue"].update(plain)


def sources_of(key: str) -> Iterator[str]:
    """The configuration files that set ``key`` (dotted, e.g. ``jobqueue.slurm``)."""
    config = dask_config()
    for path, content in config.collect_yaml(config.paths, return_paths=True):
        node: Any = content
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None:
            yield str(path)


def reconfigure() -> None:
    """Merge the packaged defaults into ``dask.config`` and offer the user a template file.

    The template is a fully commented copy of the defaults written to the user's dask config
    directory only when no ``jobqueue.yaml`` exists there. A read-only or missing home directory
    is not an error: the defaults still apply. A configuration file that is not valid YAML is
    a warning here (the package still imports) and an error when a cluster is built.
    """
    try:
        config = dask_config(register=False)
    except ConfigFileError as error:
        warnings.warn(str(error), UserWarning, stacklevel=2)
        return
    try:
        config.ensure_file(source=str(DEFAULTS_FILE), comment=True)
    except OSError:
        pass
    _register(config)


reconfigure()
