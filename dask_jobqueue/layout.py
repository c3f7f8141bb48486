"""Where a job's workers run: one worker per GPU, and jobs over several nodes.

A job of ``gpus=N`` starts N worker processes, each with ``CUDA_VISIBLE_DEVICES`` set to one
device of the job's allocation (read from the ``CUDA_VISIBLE_DEVICES`` the batch system set,
or ``0..N-1`` where it set none) and the worker resource ``GPU=1``. ``--nworkers`` cannot do
that: it starts all workers with one environment, so the script starts one worker command per
GPU, and when one of them ends it stops the others, so the job ends whole.

A job of ``nodes=N`` runs the workers of every node through a :class:`Launcher` (Slurm's
``srun``): one task per node, each starting that node's workers, named after the node's index
(``<job>-<node>`` or ``<job>-<node>-<i>``) so that worker names stay distinct and name their
job (:func:`worker_suffixes`).

Everything here is pure: it writes shell lines and names, it runs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._shell import join_command, quote

__all__ = [
    "GPU_TYPE_REFUSALS",
    "Launcher",
    "check_layout",
    "gpu_worker_lines",
    "node_script_lines",
    "one_line",
    "worker_suffixes",
    "workers_per_job",
]

#: Shell variable holding the job's worker name inside a node's script.
NAME_VAR = "dask_jobqueue_name"
#: Shell variable holding the node's index inside a node's script.
NODE_VAR = "dask_jobqueue_node"
#: Shell variable holding the job's name in the job script (nodes > 1).
JOB_VAR = "dask_jobqueue_job"
#: Shell array of the job's hosts, and the loop's node index (per-node launchers).
HOSTS_VAR = "dask_jobqueue_hosts"
INDEX_VAR = "dask_jobqueue_i"
#: Shell variable holding the exit status of the first worker that ended.
STATUS_VAR = "dask_jobqueue_status"
#: Shell array holding the GPUs of the job (of the node) inside the script.
GPU_VAR = "dask_jobqueue_gpus"


#: What a job class without a standard GPU-model form tells a user of ``gpu_type`` (its
#: ``gpu_type_refusal``), by batch system: the site-specific way instead.
GPU_TYPE_REFUSALS = {
    "pbs": "PBS has no standard GPU-model resource (ngpus counts GPUs only); ask for the "
    "site's own one in the select statement, e.g. "
    "resource_spec='select=1:ncpus=8:ngpus=2:gpu_model=a100' (the name is the site's), or "
    "through job_extra_directives",
    "sge": "Grid Engine GPU consumables are site-defined; request the site's complex for "
    "that model, e.g. gpu_resource_name='a100' if the site counts each model in its own "
    "complex, or job_extra_directives=['-l gpu_model=a100'] with the site's name",
    "oar": "OAR has no standard GPU-model property (gpu_model and the like are site "
    "properties); add the site's property as a constraint, e.g. "
    "job_extra_directives=[\"-p gpu_model='A100'\"] with the site's name",
    "local": "the local backend runs on this machine's GPUs; choose them with "
    "CUDA_VISIBLE_DEVICES (each worker gets one of its devices)",
    "generic": "this batch system has no standard way to ask for a GPU model; use the "
    "site's resource through job_extra_directives",
}


@dataclass(frozen=True)
class Launcher:
    """A batch system's way to run the workers of every node of a job, from its script.

    Two kinds: a launcher that runs one command on all nodes at once (Slurm's ``srun``:
    ``node_index`` tells each copy its node), or one started once per node (``hosts`` set:
    ``pbsdsh -n``, ``blaunch``, ``oarsh``), the job script starting one per node and
    ending them all when one ends.

    Parameters
    ----------
    name : str
        The ``launcher=`` keyword that selects it (``"srun"``).
    argv : callable
        ``argv(job)``: the launcher's arguments; ``/bin/bash -c SCRIPT`` and its arguments
        are appended. In the per-node kind, the words ``{node}`` and ``{host}`` stand for
        the node's index (0..nodes-1) and host name.
    node_index : str
        Shell expression for the node's index inside a launched command (``$SLURM_NODEID``;
        per-node kind: the script's second argument).
    hosts : str, optional
        Per-node kind: shell command printing the job's hosts (or, for a ``{node}``
        launcher, its vnodes), one per line, in order.
    remote_shell : bool
        Per-node kind: the launcher hands its command to a remote shell as one string (as
        ``ssh`` does), so the command line is passed quoted, as one argument.
    """

    name: str
    argv: Callable[[Any], list[str]]
    node_index: str = '"$2"'
    hosts: str | None = None
    remote_shell: bool = False


def workers_per_job(processes: int, nodes: int) -> int:
    """Dask workers one job runs: ``processes`` on each of its ``nodes``."""
    return processes * nodes


def worker_suffixes(processes: int, nodes: int) -> list[str]:
    """The suffixes the workers of one job add to its name: ``-<i>`` for several processes,
    ``-<node>`` for several nodes, ``-<node>-<i>`` for both; none for a one-worker job.
    (A GPU job names its workers as ``--nworkers`` does.)"""
    if nodes > 1 and processes > 1:
        return [f"-{n}-{i}" for n in range(nodes) for i in range(processes)]
    if nodes > 1:
        return [f"-{n}" for n in range(nodes)]
    if processes > 1:
        return [f"-{i}" for i in range(processes)]
    return []


def check_layout(
    job_cls_name: str,
    gpus: int | None,
    processes: int,
    nodes: int,
    launcher: str | None,
    launchers: Sequence[Launcher],
    gpus_supported: bool,
    gpu_type: str | None = None,
    gpu_type_refusal: str | None = None,
) -> Launcher | None:
    """Check the GPU and node keywords of a job; return the launcher for ``nodes > 1``.

    Raises ``ValueError`` naming the keyword: ``gpus`` on a job class that cannot request
    GPUs, ``processes`` other than ``gpus`` (each worker has one GPU), ``gpu_type`` without
    ``gpus`` or where the batch system has no standard form (``gpu_type_refusal``: what to
    do instead; ``None``: the header writes the model), ``nodes`` or ``launcher`` where the
    batch system has no launcher of that name.
    """
    if gpu_type is not None:
        if gpus is None:
            raise ValueError(
                f"gpu_type={gpu_type!r} needs gpus= (the number of GPUs per job of that model)"
            )
        if gpu_type_refusal is not None:
            raise ValueError(
                f"gpu_type={gpu_type!r}: {job_cls_name} cannot request a GPU model: "
                f"{gpu_type_refusal}"
            )
    if gpus is not None:
        if not gpus_supported:
            raise ValueError(
                f"gpus={gpus}: {job_cls_name} cannot request GPUs from its batch system; "
                "request them with job_extra_directives instead"
            )
        if processes != gpus:
            raise ValueError(
                f"processes={processes} with gpus={gpus}: a job runs one worker per GPU; "
                f"leave processes out (it defaults to gpus) or set processes={gpus}"
            )
    names = [launcher_.name for launcher_ in launchers]
    if launcher is not None and launcher not in names:
        known = f"one of {', '.join(map(repr, names))}" if names else "none"
        raise ValueError(
            f"launcher={launcher!r}: {job_cls_name} knows no launcher of that name (known: {known})"
        )
    if nodes == 1:
        return None
    if not launchers:
        raise ValueError(
            f"nodes={nodes}: {job_cls_name} cannot start workers on several nodes of one job "
            "(no launcher for this batch system here); use nodes=1 and more jobs"
        )
    wanted = launcher or names[0]
    return next(launcher_ for launcher_ in launchers if launcher_.name == wanted)


def gpu_worker_lines(gpus: int, command_for: Callable[[int], str]) -> list[str]:
    """Shell lines starting one worker per GPU, each seeing one device, then waiting: when
    one worker ends the others are stopped (the job ends whole, and is replaced whole).

    ``command_for(i)`` is the command line (quoted) of the job's ``i``-th worker.
    """
    default = ",".join(str(i) for i in range(gpus))
    lines = [
        "# One Dask worker per GPU, each seeing one device of the job's allocation (the batch",
        "# system's CUDA_VISIBLE_DEVICES, else devices 0..gpus-1)",
        f'IFS=, read -r -a {GPU_VAR} <<< "${{CUDA_VISIBLE_DEVICES:-{default}}}"',
        f'if [ "${{#{GPU_VAR}[@]}}" -lt {gpus} ]; then',
        f'  echo "dask-jobqueue: gpus={gpus} but CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES '
        'lists fewer devices" >&2',
        "  exit 1",
        "fi",
    ]
    for i in range(gpus):
        lines.append(f'CUDA_VISIBLE_DEVICES="${{{GPU_VAR}[{i}]}}" {command_for(i)} &')
    lines += [
        "# when one worker ends, stop the others: the job ends whole",
        "wait -n",
        f"{STATUS_VAR}=$?",
        "kill $(jobs -p) 2>/dev/null",
        "wait",
    ]
    return lines


def node_script_lines(
    job: Any, launcher: Launcher, node_lines: Sequence[str], nodes: int, name: str
) -> list[str]:
    """The job script's lines running ``node_lines`` (a bash script with the job's worker
    name in ``$dask_jobqueue_name`` and the node's index in ``$dask_jobqueue_node``) on every
    one of ``nodes`` nodes through ``launcher``. The name is an argument of the launched
    script, so it stays a word of the job script (job arrays replace it there)."""
    script = "\n".join([f'{NAME_VAR}="$1"', f"{NODE_VAR}={launcher.node_index}", *node_lines])
    comment = [
        f"# The workers of each of the {nodes} nodes, started by {launcher.name}; when one "
        "node's workers end, the",
        "# others are ended and the job ends (a lost node never leaves a partial job)",
    ]
    # the name on a line of its own, before the launcher's (a job array's script sets it
    # there: the launcher's command spans several lines)
    comment.append(f"{JOB_VAR}={quote(name)}")
    job_word = f'"${JOB_VAR}"'
    if launcher.hosts is None:
        argv = [*launcher.argv(job), "bash", "-c", script, "dask-jobqueue-node"]
        return [*comment, f"{join_command(argv, keep_env=False)} {job_word}"]
    index = f'"${INDEX_VAR}"'
    host = f'"${{{HOSTS_VAR}[${INDEX_VAR}]}}"'
    remote = [quote(word) for word in ("/bin/bash", "-c", script, "dask-jobqueue-node")]
    if launcher.remote_shell:
        # one argument: the command line the remote shell reads, with the name quoted for
        # it (printf %q) and the index spliced in here
        remote = [
            '"' + _in_double_quotes(" ".join(remote)) + f' $(printf %q {job_word}) ${INDEX_VAR}"'
        ]
    else:
        remote += [job_word, index]
    words = [
        index if w == "{node}" else host if w == "{host}" else quote(w) for w in launcher.argv(job)
    ]
    return [
        *comment,
        f"mapfile -t {HOSTS_VAR} < <({launcher.hosts})",
        f'if [ "${{#{HOSTS_VAR}[@]}}" -lt {nodes} ]; then',
        f'  echo "dask-jobqueue: nodes={nodes} but the job has ${{#{HOSTS_VAR}[@]}} host(s)" >&2',
        "  exit 1",
        "fi",
        f"for {INDEX_VAR} in $(seq 0 {nodes - 1}); do",
        f"  {' '.join(words)} {' '.join(remote)} &",
        "done",
        "wait -n",
        "kill $(jobs -p) 2>/dev/null",
        "wait",
    ]


def _in_double_quotes(text: str) -> str:
    """``text`` escaped for the inside of a double-quoted shell word."""
    return re.sub(r'([\\"`$])', r"\\\1", text)


#: A worker's name on one node of a job of several nodes, as a word of the node's script.
NODE_WORKER_NAME = f"${{{NAME_VAR}}}-${{{NODE_VAR}}}"


def one_line(lines: Sequence[str]) -> str:
    """Shell ``lines`` (as :func:`gpu_worker_lines` writes them) as one line, for commands
    that must fit one line (HTCondor's ``Arguments``): comments dropped, a line ending in
    ``&``, ``then`` or ``do`` continued with a blank, the others ended with ``;``."""
    out = ""
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        if out:
            out += " " if out.endswith(("&", "then", "do")) else "; "
        out += line
    return out
