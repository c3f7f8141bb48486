"""Security for the cluster: TLS credentials written privately for workers, the scheduler spec."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings

from distributed.security import Security

__all__ = ["prepare_security", "remove_files", "scheduler_spec", "write_worker_tls_files"]


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


def prepare_security(
    security: Security | bool | None,
    protocol: str | None,
    shared_temp_directory: str | None,
    written: list[str],
) -> tuple[Security | None, Security | None, str | None]:
    """The scheduler's security, the workers' (credentials in files) and the protocol.

    ``security=True`` creates temporary credentials (needs ``cryptography``); with security
    and no protocol, the protocol is ``tls://``.
    """
    if security is True:
        try:
            security = Security.temporary()
        except ImportError:
            raise ImportError(
                "security=True needs the 'cryptography' package: pip install cryptography"
            ) from None
    if not isinstance(security, Security):  # None or False
        return None, None, protocol
    if protocol is None:
        protocol = "tls://"
    return security, write_worker_tls_files(security, shared_temp_directory, written), protocol


def scheduler_spec(
    scheduler_cls: type,
    protocol: str | None,
    security: Security | None,
    interface: str | None,
    scheduler_options: dict,
) -> dict:
    """The ``SpecCluster`` scheduler spec: our defaults, then the user's options."""
    defaults: dict = {"protocol": protocol, "dashboard_address": ":8787", "security": security}
    if interface and "host" not in scheduler_options and "interface" not in scheduler_options:
        defaults["interface"] = interface
    return {"cls": scheduler_cls, "options": {**defaults, **scheduler_options}}
