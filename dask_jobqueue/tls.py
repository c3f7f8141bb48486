"""TLS credentials for workers: in-memory certificates written to private files they can read."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings

from distributed.security import Security

__all__ = ["write_worker_tls_files", "remove_files"]


def write_worker_tls_files(
    security: Security, directory: str | None, written: list[str]
) -> Security:
    """The worker side of ``security``, with in-memory credentials written to files.

    Files are created mode 0600 in ``directory`` (which the workers must see), and their paths
    appended to ``written`` so the cluster removes them at close.
    """
    tls = security.get_tls_config_for_role("worker")
    if not any(v and "\n" in str(v) for v in tls.values()):
        return security
    if directory is None:
        warnings.warn(
            "Using a temporary security object without shared_temp_directory: the TLS "
            "credentials are written to the current working directory, which must be "
            "visible from the workers.",
            UserWarning,
            stacklevel=4,
        )
        directory = os.getcwd()
    directory = os.path.expanduser(os.path.expandvars(directory))
    files = {}
    for key in ("ca_file", "cert", "key"):
        value = tls.get(key)
        if value and "\n" in value:
            fd, path = tempfile.mkstemp(prefix=f".dask-jobqueue.worker.{key}.", dir=directory)
            with os.fdopen(fd, "w") as f:
                f.write(value)
            os.chmod(path, 0o600)
            written.append(path)
            files[key] = path
    return Security(
        require_encryption=security.require_encryption,
        tls_ca_file=files.get("ca_file", tls.get("ca_file")),
        tls_worker_cert=files.get("cert", tls.get("cert")),
        tls_worker_key=files.get("key", tls.get("key")),
    )


def remove_files(paths: list[str]) -> None:
    """Remove ``paths`` (ignoring those already gone) and empty the list."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.remove(path)
    paths.clear()
