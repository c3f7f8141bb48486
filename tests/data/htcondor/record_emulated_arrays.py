"""Re-make the emulated array outputs of this directory (``python -m
tests.data.htcondor.record_emulated_arrays`` from the repository root): runs this repository's
HTCondor emulator, NOT HTCondor."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from tests.emulator import emulated_scheduler, kill_all, wait_for_job

HERE = Path(__file__).parent
ATTRS = "ClusterId,ProcId,JobStatus,ExitCode,ExitBySignal,ExitSignal,HoldReason,HoldReasonCode,RemoveReason"


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="condor-arrays-"))
    env = emulated_scheduler("htcondor", home, slots=2, max_jobs_per_submission=4, kill_delay=0.5)

    def run(*argv: str, name: str | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if name:
            (HERE / f"{name}.txt").write_text(done.stdout)
            if done.stderr:
                (HERE / f"{name}.stderr.txt").write_text(done.stderr)
        return done

    try:
        sub = home / "procs.sub"
        # 2 slots: proc 0 runs, 1 exits 3, then 2 runs and is removed; 3 waits and is held
        sub.write_text(
            "Names = p-0, p-1, p-2, p-3\n"
            "executable = /bin/sh\n"
            "arguments = \"-c 'case $(Process) in 1) exit 3;; *) sleep 60;; esac'\"\n"
            'MY.DaskWorkerName = "$CHOICE(Process, Names)"\n'
            "queue 4\n"
        )
        run("condor_submit", str(sub), name="condor_submit_queue_4")
        run("condor_config_val", "MAX_JOBS_PER_SUBMISSION", name="condor_config_val_max_jobs")
        wait_for_job(home, "1.1")
        wait_for_job(home, "1.2", states=("running",))
        run("condor_hold", "1.3")
        run("condor_rm", "1.2", name="condor_rm_one_proc")
        time.sleep(1.5)
        run(
            "condor_q",
            "1.0",
            "1.1",
            "1.2",
            "1.3",
            "-json",
            "-attributes",
            ATTRS,
            name="condor_q_json_array_procs",
        )
        run(
            "condor_history",
            "1.1",
            "1.2",
            "-json",
            "-attributes",
            ATTRS,
            name="condor_history_json_array_procs",
        )
        run("condor_rm", "1.0", "1.3", "1.2", name="condor_rm_several_procs")
        big = home / "big.sub"
        big.write_text("executable = /bin/true\nqueue 5\n")
        run("condor_submit", str(big), name="condor_submit_over_max_jobs")
        small = home / "small.sub"
        small.write_text("executable = /bin/sleep\narguments = 60\nqueue 2\n")
        run("condor_submit", str(small))
        run("condor_rm", "3", name="condor_rm_cluster")
    finally:
        kill_all(home)


if __name__ == "__main__":
    main()
