"""Smoke test for the local Slurm cluster started by ci/slurm/run.sh.

Submits a few jobs (as the current user, and as ``nobody`` when run as root),
including one that connects back over TCP to a server in this process, and
checks their final states.  Usage: python3 ci/slurm/smoke.py
"""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

TIMEOUT = 60.0


def sbatch(args, user=None, cwd=None):
    cmd = ["sbatch", "--parsable", *args]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=cwd, timeout=30)
    return out.stdout.strip().split(";")[0]


def state(job_id):
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
        capture_output=True, text=True, timeout=30,
    )
    return out.stdout.strip()


def wait_final(job_id, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = state(job_id)
        if st and st not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return st
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not finish within {timeout}s (state {state(job_id)!r})")


def main():
    t0 = time.monotonic()
    results = {}
    workdir = tempfile.mkdtemp(prefix="slurm-smoke-")
    os.chmod(workdir, 0o777)

    # 1. plain job, current user
    jid = sbatch(["-J", "smoke-true", "-o", "/dev/null", "--wrap", "true"], cwd=workdir)
    results["true"] = (jid, wait_final(jid), "COMPLETED")

    # 2. failing job
    jid = sbatch(["-J", "smoke-fail", "-o", "/dev/null", "--wrap", "exit 3"], cwd=workdir)
    results["exit 3"] = (jid, wait_final(jid), "FAILED")

    # 3. TCP connect-back to a server in this process
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(TIMEOUT)
    port = server.getsockname()[1]
    received = {}

    def serve():
        conn, _ = server.accept()
        with conn:
            received["msg"] = conn.recv(1024).decode()
            received["t"] = time.monotonic()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    script = (
        "import os, socket; "
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=10); "
        "s.sendall(('hello from job ' + os.environ['SLURM_JOB_ID']).encode()); s.close()"
    )
    t_sub = time.monotonic()
    jid = sbatch(["-J", "smoke-tcp", "-o", "/dev/null",
                  "--wrap", f"{sys.executable} -c \"{script}\""], cwd=workdir)
    results["tcp"] = (jid, wait_final(jid), "COMPLETED")
    thread.join(TIMEOUT)
    assert received.get("msg") == f"hello from job {jid}", received
    print(f"tcp connect-back: {received['msg']!r} {received['t'] - t_sub:.2f}s after sbatch")

    # 4. job array
    jid = sbatch(["-J", "smoke-array", "-o", "/dev/null", "--array=0-3", "--wrap", "true"], cwd=workdir)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", jid, "-o", "%T"],
                             capture_output=True, text=True, timeout=30).stdout.split()
        if len(out) == 4 and all(s == "COMPLETED" for s in out):
            break
        time.sleep(0.1)
    results["array"] = (jid, ",".join(out), "COMPLETED,COMPLETED,COMPLETED,COMPLETED")

    # 5. as a normal user
    if os.geteuid() == 0:
        jid = sbatch(["-J", "smoke-nobody", "-o", "/dev/null", "--wrap", "test $(id -u) = 65534"],
                     user="nobody", cwd=workdir)
        results["nobody"] = (jid, wait_final(jid), "COMPLETED")

    ok = True
    for name, (jid, got, want) in results.items():
        flag = "ok" if got == want else "FAIL"
        ok &= got == want
        print(f"{flag:4} {name:8} job {jid}: {got}")
    print(f"smoke test {'passed' if ok else 'FAILED'} in {time.monotonic() - t0:.2f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
