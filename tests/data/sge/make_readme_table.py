"""Rewrite the generated part of README.md from manifest.tsv and mixed_jobs.tsv."""

import pathlib

here = pathlib.Path(__file__).resolve().parent
rows = ["| file | user | command line (run in /tmp/sgerec) | exit code |", "|---|---|---|---|"]
for line in (here / "manifest.tsv").read_text().splitlines():
    name, user, cmd, rc = line.split("\t")
    files = [f"`{name}.txt`"]
    if (here / f"{name}.stderr.txt").exists():
        files.append(f"`{name}.stderr.txt`")
    rows.append(f"| {' + '.join(files)} | {user} | `{cmd}` | {rc} |")
jobs = ["| role in the mixed-state snapshot | job id |", "|---|---|"]
for line in (here / "mixed_jobs.tsv").read_text().splitlines()[1:]:
    role, ids = line.split("\t")
    jobs.append(f"| {role} | {ids} |")
generated = "\n".join(rows) + "\n\n" + "\n".join(jobs) + "\n"
readme = here / "README.md"
text = readme.read_text()
start, end = "<!-- generated: start -->\n", "<!-- generated: end -->"
head, rest = text.split(start, 1)
tail = rest.split(end, 1)[1]
readme.write_text(head + start + generated + end + tail)
