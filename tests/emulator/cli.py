"""Entry point of every emulated command: ``main(tool, argv)``."""

from __future__ import annotations

import sys
from collections.abc import Callable

from .common import UsageError
from .store import Store

Handler = Callable[[Store, list[str]], int]


def _handlers() -> dict[str, Handler]:
    from . import htcondor, lsf, moab, pbs

    return {
        "qsub": pbs.qsub,
        "qstat": pbs.qstat,
        "qdel": pbs.qdel,
        "qhold": lambda s, a: pbs.qhold_qrls(s, "qhold", a),
        "qrls": lambda s, a: pbs.qhold_qrls(s, "qrls", a),
        "qmgr": pbs.qmgr,
        "msub": moab.msub,
        "showq": moab.showq,
        "checkjob": moab.checkjob,
        "canceljob": moab.canceljob,
        "releasehold": moab.releasehold,
        "bsub": lsf.bsub,
        "bjobs": lsf.bjobs,
        "bkill": lsf.bkill,
        "bresume": lsf.bresume,
        "bparams": lsf.bparams,
        "condor_submit": htcondor.condor_submit,
        "condor_q": lambda s, a: htcondor.condor_q(s, a, history=False),
        "condor_history": lambda s, a: htcondor.condor_q(s, a, history=True),
        "condor_rm": htcondor.condor_rm,
        "condor_release": lambda s, a: htcondor.condor_hold_release(s, a, release_jobs=True),
        "condor_hold": lambda s, a: htcondor.condor_hold_release(s, a, release_jobs=False),
        "condor_config_val": htcondor.condor_config_val,
    }


def main(tool: str, argv: list[str]) -> int:
    """Run emulated command ``tool`` with arguments ``argv``; returns the exit code."""
    if tool == "_runner":
        from .runner import run

        return run(argv[0])
    store = Store.from_env()
    handler = _handlers().get(tool)
    if handler is None:
        print(f"{tool}: not emulated", file=sys.stderr)
        return 127
    try:
        code = handler(store, argv)
    except UsageError as exc:
        if exc.stdout:
            sys.stdout.write(exc.stdout)
        sys.stdout.flush()
        print(exc.message, file=sys.stderr)
        return exc.code
    sys.stdout.flush()
    return code
