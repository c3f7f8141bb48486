"""Expand a submit description per proc with the real HTCondor submit-language library.

Needs the ``htcondor`` wheel from PyPI (``htcondor2`` bindings; no daemons). Usage:
``python expand_with_htcondor2.py array_description.sub > array_expanded_htcondor2.txt``.
"""

import sys

import htcondor2

lines = open(sys.argv[1]).read().rstrip("\n").split("\n")
count = int(lines[-1].split()[1])
sub = htcondor2.Submit("\n".join(line for line in lines[:-1] if not line.startswith("#!")))
print(f"# htcondor2 {htcondor2.version()}")
for proc in range(count):
    sub["ClusterId"] = sub["Cluster"] = "12"
    sub["ProcId"] = sub["Process"] = str(proc)
    print(f"## proc {proc}")
    for key in ("MY.DaskWorkerName", "batch_name", "Output", "Error", "Log", "Arguments"):
        print(f"{key} = {sub.expand(key)}")
