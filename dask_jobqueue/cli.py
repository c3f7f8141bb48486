"""The ``dask-jobqueue`` command (also ``python -m dask_jobqueue``).

Subcommands: ``demo``, ``job-script``, ``config``, ``check``, ``status`` and ``cleanup``. Bad
input is reported as one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import registry

if TYPE_CHECKING:
    from .cluster import JobQueueCluster
    from .job import Job

PROG = "dask-jobqueue"

#: Scheduler names accepted on the command line (the registry's list).
SCHEDULERS = tuple(registry.names())

#: Command-line flag -> cluster keyword, for the job options shared by job-script and check.
JOB_FLAGS = {
    "cores": "cores",
    "memory": "memory",
    "processes": "processes",
    "queue": "queue",
    "walltime": "walltime",
    "account": "account",
    "project": "project",
    "job_name": "job_name",
    "python": "python",
    "interface": "interface",
    "log_directory": "log_directory",
    "disk": "disk",
    "job_extra_directive": "job_extra_directives",
    "job_script_prologue": "job_script_prologue",
    "worker_extra_arg": "worker_extra_args",
}


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


class StartError(Exception):
    """The local scheduler could not start (e.g. an unknown interface): exit status 1."""


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _positive_seconds(text: str) -> float:
    from dask.utils import parse_timedelta

    try:
        value = parse_timedelta(text, "seconds")
    except (ValueError, KeyError, TypeError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (e.g. 300, 300s, 5m)"
        ) from None
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive duration")
    return float(value)


def _scheduler(scheduler: str) -> registry.Scheduler:
    try:
        return registry.get(scheduler)
    except ValueError as error:
        raise UsageError(str(error)) from None


def cluster_class(scheduler: str) -> type[JobQueueCluster]:
    """The cluster class for a scheduler name such as ``"slurm"``."""
    return _scheduler(scheduler).cluster_class()


def job_class(scheduler: str) -> type[Job]:
    """The job class for a scheduler name such as ``"slurm"`` (its cluster's ``job_cls``)."""
    return _scheduler(scheduler).job_class()


def job_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Cluster keywords from the job flags the user gave (flags not given are left out)."""
    kwargs: dict[str, Any] = {}
    for flag, keyword in JOB_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            kwargs[keyword] = value
    if args.config_name is not None:
        kwargs["config_name"] = args.config_name
    return kwargs


def _flag(keyword: str) -> str:
    flag = next((f for f, k in JOB_FLAGS.items() if k == keyword), keyword)
    return "--" + flag.replace("_", "-")


#: ``keyword=value`` in a message of the cluster classes, for a keyword that has a flag.
_KEYWORD_IN_MESSAGE = re.compile(
    r"(?<![\w.\[-])(" + "|".join(sorted(set(JOB_FLAGS.values()), key=len, reverse=True)) + r")="
)


def in_flag_terms(message: str) -> str:
    """A message of the cluster classes as a command-line user needs it: ``cores=8``
    becomes ``--cores 8`` (for the keywords that have a flag)."""
    return _KEYWORD_IN_MESSAGE.sub(lambda m: _flag(m.group(1)) + " ", message)


def missing_sizes(scheduler: str, kwargs: Mapping[str, Any]) -> list[str]:
    """The required job sizes (cores, memory, HTCondor's disk) neither a flag nor the
    configuration sets, as keywords."""
    from .config import dask_config

    config = dask_config()
    job_cls = job_class(scheduler)
    section = kwargs.get("config_name") or job_cls.default_config_name()
    required = ["cores", "memory"] + (["disk"] if "disk" in job_cls.accepted_keywords() else [])
    return [
        keyword
        for keyword in required
        if kwargs.get(keyword) is None
        and config.get(f"jobqueue.{section}.{keyword}", default=None) is None
    ]


def check_disk_flag(scheduler: str, kwargs: Mapping[str, Any]) -> None:
    """``--disk`` only where jobs ask for disk space (HTCondor)."""
    if "disk" in kwargs and "disk" not in job_class(scheduler).accepted_keywords():
        raise UsageError(f"--disk is for htcondor only ({scheduler} jobs ask for no disk space)")


def make_cluster(scheduler: str, kwargs: Mapping[str, Any]) -> Any:
    """Build the cluster; a bad keyword value becomes a :class:`UsageError` in flag terms."""
    cls = cluster_class(scheduler)
    job_cls = cls.job_cls
    check_disk_flag(scheduler, kwargs)
    missing = missing_sizes(scheduler, kwargs)
    if missing:
        section = kwargs.get("config_name") or (job_cls.default_config_name() if job_cls else "")
        raise UsageError(
            f"no {' or '.join(missing)} per job: give "
            + " ".join(f"{_flag(k)} {_SIZE_EXAMPLES[k]}" for k in missing)
            + f" (your values), or set {', '.join(f'jobqueue.{section}.{k}' for k in missing)}"
            " in jobqueue.yaml"
        )
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        raise UsageError(in_flag_terms(_one_line(error))) from None
    except (RuntimeError, OSError) as error:
        message = _one_line(error)
        if "not a valid network interface" in message:
            # the flag's value (or jobqueue.yaml's interface) is bad input: exit status 2
            message = message.removeprefix("Cluster failed to start: ")
            if kwargs.get("interface") is not None:
                message = f"--interface {kwargs['interface']}: {message}"
            raise UsageError(message) from None
        raise StartError(message) from None


#: Example values shown when a required size is missing.
_SIZE_EXAMPLES = {"cores": "8", "memory": "24GB", "disk": "10GB"}

#: What ``job-script`` shows when no size is set anywhere: nothing is submitted, so a small
#: job stands in (and says so on stderr).
JOB_SCRIPT_SIZES = {"cores": 1, "memory": "2GB", "disk": "1GB"}


# ---------------------------------------------------------------------- demo


def _square_where(x: int) -> tuple[int, str]:
    from distributed import get_worker

    return x * x, get_worker().address


def _sum_of_firsts(pairs: list[tuple[int, str]]) -> int:
    return sum(first for first, _ in pairs)


def demo(jobs: int, processes: int) -> int:
    """Start a local cluster, sum squares on its workers with futures, close everything.

    Needs nothing beyond the package's own dependencies (no numpy).
    """
    from distributed import Client

    from .local import LocalCluster

    started = time.perf_counter()
    n = 1000
    with LocalCluster(cores=processes, memory=f"{processes}GiB", processes=processes) as cluster:
        print(cluster.job_script())
        cluster.scale(jobs=jobs)
        with Client(cluster) as client:
            cluster.wait_for_workers(jobs * processes, timeout=120)
            squares = client.map(_square_where, range(n))
            total = client.submit(_sum_of_firsts, squares).result()
            # the workers that did the work, not those connected at some later moment
            workers = len({where for _, where in client.gather(squares)})
        print(cluster.jobs)
    expected = sum(i * i for i in range(n))
    print(
        f"sum of squares of 0..{n - 1} on {workers} workers in {jobs} jobs = {total} "
        f"({'OK' if total == expected else 'WRONG'}, {time.perf_counter() - started:.1f}s)"
    )
    return 0 if total == expected else 1


# ---------------------------------------------------------------------- job-script


def job_script(scheduler: str, kwargs: Mapping[str, Any]) -> int:
    """Print the job script a cluster built from config plus ``kwargs`` would submit.

    Sizes set nowhere (a fresh install) are shown as a small job (:data:`JOB_SCRIPT_SIZES`),
    with a note on stderr naming the flags that set them.
    """
    check_disk_flag(scheduler, kwargs)
    missing = missing_sizes(scheduler, kwargs)
    if missing:
        filled = {k: JOB_SCRIPT_SIZES[k] for k in missing}
        print(
            f"{PROG} job-script: no {' or '.join(missing)} set (flags or jobqueue.yaml): "
            f"showing {' '.join(f'{_flag(k)} {v}' for k, v in filled.items())}",
            file=sys.stderr,
        )
        kwargs = {**kwargs, **filled}
    cluster = make_cluster(scheduler, kwargs)
    try:
        print(cluster.job_script(), end="")
    finally:
        cluster.close()
    return 0


# ---------------------------------------------------------------------- config


def _normalize(key: str) -> str:
    return key.replace("_", "-")


def _flatten_section(section: Any) -> dict[str, Any]:
    if not isinstance(section, Mapping):
        return {}
    return {_normalize(str(k)): v for k, v in section.items()}


def _jobqueue_sections(config: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(config, Mapping):
        return {}
    jobqueue = config.get("jobqueue")
    if not isinstance(jobqueue, Mapping):
        return {}
    return {str(name): _flatten_section(section) for name, section in jobqueue.items()}


def config_sources(
    paths: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    """Each source of ``jobqueue`` settings, lowest priority first.

    Yields ``(description, {section: {key: value}})``: the packaged defaults, then every YAML
    or JSON file dask reads (in dask's order: a later file wins), then each ``DASK_...``
    environment variable that sets something under ``jobqueue``.
    """
    import dask.config

    from .config import DEFAULTS_FILE, packaged_defaults

    yield f"built-in default ({DEFAULTS_FILE})", _jobqueue_sections(packaged_defaults())
    search = dask.config.paths if paths is None else paths
    for path, config in dask.config.collect_yaml(search, return_paths=True):
        sections = _jobqueue_sections(config)
        if sections:
            yield str(path), sections
    environ = os.environ if environ is None else environ
    for name in sorted(environ):
        if not name.startswith("DASK_") or name == "DASK_INTERNAL_INHERIT_CONFIG":
            continue
        sections = _jobqueue_sections(dask.config.collect_env({name: environ[name]}))
        if sections:
            yield f"environment variable {name}", sections
    if "DASK_INTERNAL_INHERIT_CONFIG" in environ:
        inherited = dask.config.collect_env(
            {"DASK_INTERNAL_INHERIT_CONFIG": environ["DASK_INTERNAL_INHERIT_CONFIG"]}
        )
        sections = _jobqueue_sections(inherited)
        if sections:
            yield "environment variable DASK_INTERNAL_INHERIT_CONFIG", sections


def effective_settings(
    section: str,
    paths: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, tuple[Any, str]]:
    """``{key: (value, source)}`` for ``jobqueue.<section>``: the last source that sets a key
    wins, as in dask's own merge."""
    settings: dict[str, tuple[Any, str]] = {}
    for source, sections in config_sources(paths, environ):
        for key, value in sections.get(section, {}).items():
            settings[key] = (value, source)
    return settings


def _render(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def show_config(section: str | None) -> int:
    """Print the effective ``jobqueue`` settings and where each comes from."""
    import dask.config

    from . import config as _config  # noqa: F401  (the packaged defaults are registered)

    sources = list(config_sources())
    known = []
    for _, sections in sources:
        known += [name for name in sections if name not in known]
    if section is None:
        print("Configuration files read (later ones win), then DASK_* environment variables:")
        for path in dask.config.paths:
            print(f"  {path}{'' if os.path.exists(path) else '  (does not exist)'}")
        print("Sections (pass one as SCHEDULER for its settings):")
        for name in known:
            changed = sorted(
                key
                for key, (_, source) in effective_settings(name).items()
                if not source.startswith("built-in default")
            )
            print(f"  {name}: " + (f"set here: {', '.join(changed)}" if changed else "defaults"))
        return 0
    if section not in known:
        raise UsageError(
            f"there is no section 'jobqueue.{section}' in the configuration; "
            f"known sections: {', '.join(known)}"
        )
    from .config import DEFAULTS_FILE

    settings = effective_settings(section)
    effective = dask.config.get(f"jobqueue.{section}", default={}) or {}
    rows = []
    for key in sorted(settings):
        value, source = settings[key]
        current = effective.get(key, effective.get(key.replace("-", "_"), value))
        if current != value:
            source = "set in this process"
        elif source.startswith("built-in default"):
            source = "default"
        rows.append((key, _render(current), source))
    print(f"jobqueue.{section}  (default = built-in, from {DEFAULTS_FILE})")
    if section not in SCHEDULERS:
        print(
            f"  (a section of your own: the cluster class you use it with fills in the keys it "
            f"does not set from its built-in section, e.g. SLURMCluster(config_name="
            f"{section!r}) from `{PROG} config slurm`'s defaults)"
        )
    key_width = max((len(r[0]) for r in rows), default=0)
    value_width = min(max((len(r[1]) for r in rows), default=0), 40)
    for key, value, source in rows:
        print(f"  {key.ljust(key_width)}  {value.ljust(value_width)}  # {source}")
    return 0


# ---------------------------------------------------------------------- check


def _job_record(cluster: Any) -> Any:
    records = list(cluster.jobs)
    return records[-1] if records else None


def _interface_tried(cluster: Any, kwargs: Mapping[str, Any]) -> str:
    import dask.config

    interface = kwargs.get("interface") or dask.config.get(
        f"jobqueue.{cluster.config_name}.interface", default=None
    )
    if interface:
        return f"interface {interface!r}"
    return "no interface set (the worker used the address it resolved for the scheduler)"


_UNREACHABLE = re.compile(r"cannot reach the Dask scheduler at|its scheduler check could not reach")

_CONNECT_FAILURE = re.compile(
    r"trying to connect|could not connect|connection refused|no route to host", re.IGNORECASE
)


def _not_connected_advice(cluster: Any, kwargs: Mapping[str, Any]) -> str:
    return (
        f"The worker was told to connect to the scheduler at {cluster.scheduler_address}, "
        f"{_interface_tried(cluster, kwargs)}. If compute nodes cannot reach that address, set "
        "interface (e.g. --interface ib0) to a network both the login node and the compute "
        "nodes share, or scheduler-options' contact_address or host in jobqueue.yaml."
    )


def check(scheduler: str, kwargs: Mapping[str, Any], timeout: float) -> int:
    """Submit one job, wait for its worker, report the timings, cancel it.

    Returns 0 when the worker connected, 1 otherwise (with one paragraph saying why).
    """
    import dask.config

    from ._shell import CommandError
    from .job import JobFailedError

    config_name = kwargs.get("config_name") or job_class(scheduler).config_name
    if dask.config.get(f"jobqueue.{config_name}", default=None) is None:
        # Checked here: setting the keys below would otherwise create the section.
        raise UsageError(f"there is no section 'jobqueue.{config_name}' in the configuration")
    # One death is enough to explain: do not resubmit a job that cannot start.
    # Poll often so the queue wait is measured to about half a second.
    settings = {
        f"jobqueue.{config_name}.max-consecutive-failures": 1,
        f"jobqueue.{config_name}.poll-interval": "0.5s",
    }
    with dask.config.set(settings):
        cluster = make_cluster(scheduler, kwargs)
    # The outcome is reported below in one paragraph; the cluster's own log lines would
    # repeat it.
    library_logger = logging.getLogger("dask_jobqueue")
    level = library_logger.level
    library_logger.setLevel(logging.CRITICAL)
    try:
        print(f"Scheduler running at {cluster.scheduler_address}; submitting one job...")
        submitted = time.time()
        cluster.scale(jobs=1)
        try:
            cluster.wait_for_workers(1, timeout=timeout)
        except CommandError as error:
            if error.returncode is None:  # the command never ran, or never finished
                print(
                    f"FAILED: could not submit: `{' '.join(error.argv)}` {error.reason}. Run "
                    "this on a machine where the batch system's commands work (a login node, "
                    "after any `module load` your site needs).",
                    file=sys.stderr,
                )
                return 1
            said = " ".join((error.stderr or error.stdout or "").split())
            what = error.reason or f"exited with code {error.returncode}"
            print(
                f"FAILED: the batch system rejected the job. `{' '.join(error.argv)}` {what}"
                + (f": {said}" if said else "")
                + ". Check queue/partition, account, walltime and resource requests (see "
                "`dask-jobqueue job-script` for the script sent).",
                file=sys.stderr,
            )
            return 1
        except JobFailedError as error:
            explanation = error.records[-1].error if error.records else None
            explanation = explanation or str(error)
            if _UNREACHABLE.search(explanation):
                text = (
                    "FAILED: the job could not reach the scheduler and ended without starting "
                    f"its worker. {explanation}\nThe scheduler listens at "
                    f"{cluster.scheduler_address}; {_interface_tried(cluster, kwargs)}."
                )
                print(text, file=sys.stderr)
                return 1
            text = (
                "FAILED: the job ended before its worker connected. "
                f"{explanation}\nCommon causes: a `python` that does not exist on the compute "
                "nodes (set --python or `python:` in jobqueue.yaml), a module not loaded (add "
                "it to job-script-prologue), or a resource request the job cannot satisfy."
            )
            if _CONNECT_FAILURE.search(explanation):
                text += "\n" + _not_connected_advice(cluster, kwargs)
            print(text, file=sys.stderr)
            return 1
        except TimeoutError:
            record = _job_record(cluster)
            if record is None:
                print(
                    f"FAILED: no job id after {timeout:g}s: the submit command did not return.",
                    file=sys.stderr,
                )
            elif record.state.value == "held":
                print(
                    f"FAILED: job {record.job_id} is still held after {timeout:g}s; the batch "
                    f"system's reason: {record.reason or 'none given'}. The job was cancelled. "
                    "Remove the hold from your directives, or ask your admins why jobs are held.",
                    file=sys.stderr,
                )
            elif record.state.is_waiting:
                print(
                    f"FAILED: job {record.job_id} is still {record.state.value} after "
                    f"{timeout:g}s; the batch system's reason: {record.reason or 'none given'}. "
                    "The job was cancelled. Try a queue with free nodes, a shorter walltime or "
                    "smaller resources, or a longer --timeout.",
                    file=sys.stderr,
                )
            else:
                running = (
                    f"has been running for {time.time() - record.started_at:.0f}s"
                    if record.started_at
                    else f"is {record.state.value}"
                )
                print(
                    f"FAILED: job {record.job_id} {running}, but its "
                    f"worker did not connect within {timeout:g}s. "
                    + _not_connected_advice(cluster, kwargs),
                    file=sys.stderr,
                )
            return 1
        connected = time.time()
        record = _job_record(cluster)
        started = record.started_at if record and record.started_at else connected
        print(
            f"OK: job {record.job_id if record else '?'} on {scheduler}: "
            f"queue wait {max(0.0, started - submitted):.1f}s, "
            f"worker connected {max(0.0, connected - started):.1f}s after the job started "
            f"({connected - submitted:.1f}s in total). Cancelling it."
        )
        return 0
    finally:
        # Cancelling a job cuts its worker's connection, which the scheduler logs as an error
        # with a traceback: expected here, so not shown.
        distributed_logger = logging.getLogger("distributed")
        distributed_level = distributed_logger.level
        distributed_logger.setLevel(logging.CRITICAL)
        try:
            cluster.close()
        finally:
            distributed_logger.setLevel(distributed_level)
            library_logger.setLevel(level)


# ---------------------------------------------------------------------- status / cleanup


def detect_scheduler(which: Any = None) -> str:
    """The batch system whose commands are on ``PATH``; :class:`UsageError` if none or
    several are (then the user names one)."""
    import shutil

    which = which or shutil.which
    # a command only that batch system installs tells which one this machine has
    found = [s.name for s in registry.BATCH_SCHEDULERS if s.probe and which(s.probe)]
    if not found:
        raise UsageError(
            "no batch system found on PATH (sbatch, qsub, bsub, ...): name one, e.g. "
            f"`{PROG} status slurm`"
        )
    if len(found) > 1:
        raise UsageError(f"several batch systems found ({', '.join(found)}): name one")
    return found[0]


def _batch_system(scheduler: str) -> Any:
    """An engine for ``scheduler`` (its listing and cancel commands come from the config)."""
    import warnings

    job_cls = job_class(scheduler)
    if job_cls.tagging is None:
        raise UsageError(f"{scheduler} jobs carry no dask-jobqueue tag: nothing to list")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # the least a job of any scheduler needs (HTCondor's also asks for disk space)
            sizes: dict[str, Any] = {"cores": 1, "memory": "1GB"}
            if "disk" in job_cls.accepted_keywords():
                sizes["disk"] = "1GB"
            template = job_cls(**sizes)
        except (ValueError, TypeError) as error:
            raise UsageError(_one_line(error)) from None
    return template.batch_system()


def _running_watchdogs() -> set[str]:
    """Cluster ids of the watchdogs running on this host (any user we can see)."""
    from .watchdog import is_watchdog_command

    found = set()
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        entries = []
    for entry in entries:
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if is_watchdog_command(argv) and "--cluster-id" in argv:
            i = argv.index("--cluster-id")
            if i + 1 < len(argv):
                found.add(argv[i + 1])
    return found


def tagged_jobs(scheduler: str) -> tuple[Any, list[dict[str, Any]]]:
    """The engine and one row per tagged job of this user: id, tag, owner and watchdog
    state (``alive``/``gone`` on this host, ``unknown`` for another host)."""
    import asyncio
    import socket

    from ._shell import CommandError
    from .tags import safe_host
    from .watchdog import pid_alive

    engine = _batch_system(scheduler)
    try:
        tagged = asyncio.run(engine.list_tagged())
    except CommandError as error:
        raise StartError(_one_line(error)) from None
    here = safe_host(socket.gethostname())
    watchdogs = _running_watchdogs()
    rows = []
    for job_id, tag in sorted(
        tagged.items(), key=lambda item: (item[1].cluster_id, item[1].serial)
    ):
        local = tag.host == here
        rows.append(
            {
                "job_id": job_id,
                "tag": tag,
                "local": local,
                "owner": ("alive" if pid_alive(tag.pid) else "gone") if local else "unknown",
                "watchdog": ("alive" if tag.cluster_id in watchdogs else "gone")
                if local
                else "unknown",
            }
        )
    return engine, rows


def _print_rows(rows: Sequence[Mapping[str, Any]]) -> None:
    header = ("JOB ID", "CLUSTER", "SERIAL", "OWNER", "OWNER STATE", "WATCHDOG")
    table = [header] + [
        (
            r["job_id"],
            r["tag"].cluster_id,
            str(r["tag"].serial),
            f"{r['tag'].pid}@{r['tag'].host}",
            r["owner"],
            r["watchdog"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def status(scheduler: str | None) -> int:
    """List this user's tagged jobs with their owner and whether it is alive."""
    scheduler = scheduler or detect_scheduler()
    _, rows = tagged_jobs(scheduler)
    if not rows:
        print(f"No dask-jobqueue jobs of yours on {scheduler}.")
        return 0
    _print_rows(rows)
    return 0


def orphans(rows: Sequence[Mapping[str, Any]], include_other_hosts: bool) -> list[Mapping]:
    """Rows whose owner is gone and whose watchdog is gone too (another host's rows, whose
    owner cannot be checked from here, only with ``include_other_hosts``)."""
    return [
        r
        for r in rows
        if (r["owner"] == "gone" and r["watchdog"] == "gone")
        or (include_other_hosts and not r["local"])
    ]


def cleanup(scheduler: str | None, dry_run: bool, yes: bool, include_other_hosts: bool) -> int:
    """Cancel this user's tagged jobs whose owner (and its watchdog) is gone."""
    scheduler = scheduler or detect_scheduler()
    engine, rows = tagged_jobs(scheduler)
    chosen = orphans(rows, include_other_hosts)
    skipped = len(rows) - len(chosen)
    if not chosen:
        print(
            f"No orphaned dask-jobqueue jobs of yours on {scheduler}"
            + (f" ({skipped} job(s) with a live or unknown owner left alone)." if skipped else ".")
        )
        return 0
    _print_rows(chosen)
    if skipped:
        print(f"({skipped} job(s) with a live or unknown owner left alone)")
    if dry_run:
        print(f"Dry run: would cancel {len(chosen)} job(s).")
        return 0
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("not cancelling without --yes (stdin is not a terminal)")
        answer = input(f"Cancel these {len(chosen)} job(s)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing cancelled.")
            return 1
    import asyncio

    left = asyncio.run(engine.cancel([r["job_id"] for r in chosen]))
    print(f"Cancelled {len(chosen) - len(left)} job(s).")
    if left:
        print(f"Could not cancel: {' '.join(left)}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------- parser


def _add_job_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scheduler",
        metavar="SCHEDULER",
        choices=list(SCHEDULERS),
        help=f"batch system: {', '.join(SCHEDULERS)}",
    )
    group = parser.add_argument_group(
        "job options (default: jobqueue.yaml, then the built-in defaults)"
    )
    group.add_argument("--config-name", metavar="NAME", help="section of jobqueue.yaml to use")
    group.add_argument("--cores", type=_positive_int, metavar="N", help="cores per job")
    group.add_argument("--memory", metavar="M", help="memory per job, e.g. 8GB")
    group.add_argument("--processes", type=_positive_int, metavar="P", help="workers per job")
    group.add_argument("--queue", metavar="Q", help="queue or partition")
    group.add_argument("--walltime", metavar="W", help="e.g. 00:30:00")
    group.add_argument("--account", metavar="A", help="account (PBS, Moab, Slurm)")
    group.add_argument("--project", metavar="P", help="project (SGE, LSF, OAR)")
    group.add_argument("--job-name", metavar="NAME", help="batch job name")
    group.add_argument("--python", metavar="PATH", help="Python executable on the nodes")
    group.add_argument("--interface", metavar="IFACE", help="network interface, e.g. ib0")
    group.add_argument("--log-directory", metavar="DIR", help="where jobs write their output")
    group.add_argument("--disk", metavar="D", help="disk space per job, e.g. 10GB (htcondor)")
    group.add_argument(
        "--job-extra-directive",
        action="append",
        metavar="D",
        help="extra header directive without its prefix (repeatable), e.g. --gres=gpu:1",
    )
    group.add_argument(
        "--job-script-prologue",
        action="append",
        metavar="LINE",
        help="shell line run before the workers (repeatable)",
    )
    group.add_argument(
        "--worker-extra-arg",
        action="append",
        metavar="ARG",
        help="extra argument for the worker command (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dask-jobqueue``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Deploy Dask on job-queuing systems: try, inspect and check."
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="run a small computation on local job processes",
        description="Start jobs as local processes from the same job script a batch system "
        "would get, compute on their workers, and close everything.",
    )
    p.add_argument("--jobs", type=_positive_int, default=2, help="jobs to start (default 2)")
    p.add_argument("--processes", type=_positive_int, default=1, help="workers per job (default 1)")

    p = sub.add_parser(
        "job-script",
        help="print the job script a cluster would submit",
        description="Print the job script built from jobqueue.yaml plus the flags given. "
        "Nothing is submitted.",
    )
    _add_job_flags(p)

    p = sub.add_parser(
        "config",
        help="show the effective settings and where each comes from",
        description="Show the settings of jobqueue.SCHEDULER and, for each, whether it is the "
        "built-in default, which YAML file set it, or which environment variable.",
    )
    p.add_argument(
        "scheduler",
        metavar="SCHEDULER",
        nargs="?",
        help="section of jobqueue.yaml (slurm, pbs, ... or your own); omit for a summary",
    )

    p = sub.add_parser(
        "check",
        help="submit one small job and check that its worker connects",
        description="Submit one job with your settings, wait for its Dask worker to connect, "
        "print the queue wait and start time, then cancel it. Exit status 0 if the worker "
        "connected, 1 if not (with the reason).",
    )
    _add_job_flags(p)
    p.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=300.0,
        metavar="S",
        help="give up after this long (seconds or e.g. 10m; default 300)",
    )

    p = sub.add_parser(
        "status",
        help="list your jobs started by dask-jobqueue, with their owner",
        description="List your jobs that carry a dask-jobqueue tag on the batch system, with "
        "the cluster, the owner process and host, and whether the owner and its watchdog are "
        'alive ("unknown" for an owner on another host).',
    )
    p.add_argument(
        "scheduler",
        metavar="SCHEDULER",
        nargs="?",
        choices=sorted(SCHEDULERS),
        help="batch system (default: the one whose commands are on PATH)",
    )

    p = sub.add_parser(
        "cleanup",
        help="cancel your dask-jobqueue jobs whose owner is gone",
        description="Cancel your tagged jobs whose owner process and its watchdog are gone "
        "(owners on another host are left alone unless --include-other-hosts).",
    )
    p.add_argument(
        "scheduler",
        metavar="SCHEDULER",
        nargs="?",
        choices=sorted(SCHEDULERS),
        help="batch system (default: the one whose commands are on PATH)",
    )
    p.add_argument("--dry-run", action="store_true", help="only list what would be cancelled")
    p.add_argument("--yes", action="store_true", help="do not ask before cancelling")
    p.add_argument(
        "--include-other-hosts",
        action="store_true",
        help="also cancel jobs whose owner runs on another host (cannot be checked)",
    )
    for command, help_text in (
        ("list", "list your clusters started with scheduler_in_job=True"),
        ("attach", "print how to connect to the cluster NAME"),
        ("close", "end the cluster NAME (its jobs and its scheduler)"),
    ):
        p = sub.add_parser(
            command, help=help_text, description=help_text[0].upper() + help_text[1:] + "."
        )
        if command != "list":
            p.add_argument("name", metavar="NAME", help="the cluster's cluster_name")
        p.add_argument(
            "--record-directory",
            metavar="DIR",
            default=None,
            help="where the cluster records are (default: ~/.config/dask-jobqueue/clusters)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dask-jobqueue`` command line; returns the exit status."""
    from .config import ConfigFileError, dask_config

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        try:
            dask_config()
        except ConfigFileError as error:
            raise UsageError(str(error)) from None
        if args.command == "demo":
            return demo(args.jobs, args.processes)
        if args.command == "job-script":
            return job_script(args.scheduler, job_kwargs(args))
        if args.command == "config":
            return show_config(args.scheduler)
        if args.command == "check":
            return check(args.scheduler, job_kwargs(args), args.timeout)
        if args.command == "status":
            return status(args.scheduler)
        if args.command == "cleanup":
            return cleanup(args.scheduler, args.dry_run, args.yes, args.include_other_hosts)
        if args.command in ("list", "attach", "close"):
            from . import records_cli

            try:
                if args.command == "list":
                    return records_cli.list_clusters(args.record_directory)
                if args.command == "attach":
                    return records_cli.attach_help(args.name, args.record_directory)
                return records_cli.close_cluster(args.name, args.record_directory)
            except ValueError as error:
                raise StartError(str(error)) from None
    except UsageError as error:
        parser.exit(2, f"{PROG} {args.command}: error: {error}\n")
    except StartError as error:
        parser.exit(1, f"{PROG} {args.command}: error: {error}\n")
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2


__all__ = ["main", "build_parser", "effective_settings", "config_sources", "SCHEDULERS"]
