"""The manual says what the code does: every number or output a page states that can be
computed is recomputed here from the code."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import dask.config
import distributed
import pytest
import yaml
from dask.utils import parse_bytes

import dask_jobqueue
import dask_jobqueue.runner
from dask_jobqueue import PBSCluster, SLURMCluster, registry
from dask_jobqueue.cli import build_parser

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
MIB = 2**20


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, content)`` of every ``.. code-block::`` in a page, in order."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"\.\. code-block:: (\w+)", lines[i])
        if not match:
            i += 1
            continue
        i += 1
        body = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
            body.append(lines[i][4:])
            i += 1
        blocks.append((match.group(1), "\n".join(body).strip("\n")))
    return blocks


def script_of(cluster_cls: type, **kwargs) -> str:
    cluster = cluster_cls(**kwargs)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def worker_line(script: str) -> str:
    return next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)


def normalize(script: str) -> list[str]:
    """Lines of a job script without what differs between machines: the scheduler address,
    the Python path and ``--interface`` (which must exist on the machine building it)."""
    script = re.sub(r"tcp://[^\s']+", "tcp://SCHEDULER", script)
    script = re.sub(r"\S*python\S* -m distributed", "PYTHON -m distributed", script)
    script = re.sub(r"\S*python\S* -S (-c|-) ", r"PYTHON -S \1 ", script)
    script = re.sub(r" --interface \S+", "", script)
    return [line.rstrip() for line in script.strip().splitlines()]


# ---------------------------------------------------------------------- site examples


def site_examples() -> list[tuple[str, dict, str, str, str]]:
    """(title, yaml config, cluster class, config_name, job script) per site example."""
    text = page("sites.rst")
    examples = []
    sections = re.split(r"\n([^\n]+)\n-{3,}\n", text)
    for title, body in zip(sections[1::2], sections[2::2], strict=True):
        blocks = code_blocks(body)
        config = next(yaml.safe_load(c) for lang, c in blocks if lang == "yaml")
        usage = next(c for lang, c in blocks if lang == "python")
        script = next(c for lang, c in blocks if lang == "bash")
        match = re.search(r"(\w+Cluster)\((?:config_name=\"([\w-]+)\")?\)", usage)
        assert match, f"{title}: no cluster construction in the example"
        section = match.group(2) or next(iter(config["jobqueue"]))
        examples.append((title, config, match.group(1), section, script))
    return examples


#: What the site examples show for the parts that differ between machines.
SITE_SCHEDULER = "tcp://10.0.0.1:38253"
SITE_PYTHON = "/home/me/venvs/dask/bin/python"


def site_script(config: dict, cls_name: str, section: str) -> str:
    """The job script of a site example, as its job class writes it (the class, not a
    cluster: no scheduler is started, so ``interface: ib0`` need not exist here), with the
    page's scheduler address and Python."""
    job_cls = getattr(dask_jobqueue, cls_name).job_cls
    merged = dask.config.merge(dask.config.get("jobqueue"), config["jobqueue"])
    with dask.config.set({"jobqueue": merged}):
        python = dask.config.get(f"jobqueue.{section}.python", default=None)
        job = job_cls(SITE_SCHEDULER, name="dummy-name", config_name=section,
                      python=python or SITE_PYTHON)  # fmt: skip
        return job.job_script()


def regenerated_sites_page() -> str:
    """docs/sites.rst with every job script block replaced by what the code writes."""
    text = page("sites.rst")
    out = []
    sections = re.split(r"(\n[^\n]+\n-{3,}\n)", text)
    out.append(sections[0])
    for title, body in zip(sections[1::2], sections[2::2], strict=True):
        blocks = code_blocks(body)
        config = next(yaml.safe_load(c) for lang, c in blocks if lang == "yaml")
        usage = next(c for lang, c in blocks if lang == "python")
        match = re.search(r"(\w+Cluster)\((?:config_name=\"([\w-]+)\")?\)", usage)
        assert match, title
        section = match.group(2) or next(iter(config["jobqueue"]))
        script = site_script(config, match.group(1), section)
        start = body.index(".. code-block:: bash\n\n") + len(".. code-block:: bash\n\n")
        lines = body[start:].split("\n")
        taken = 0
        for line in lines:
            if line and not line.startswith("    "):
                break
            taken += len(line) + 1
        end = start + taken
        indented = "".join(f"    {line}\n" if line else "\n" for line in script.splitlines())
        rest = body[end:].lstrip("\n")
        out.append(title + body[:start] + indented + ("\n" + rest if rest else ""))
    return "".join(out)


def test_sites_page_scripts_are_regenerated_from_the_code():
    """Every job script on the page is, byte for byte, what the job class writes for the
    example's YAML (``python tests/test_docs.py`` rewrites the page)."""
    assert page("sites.rst") == regenerated_sites_page()


def test_sites_page_has_the_eight_examples():
    titles = [example[0] for example in site_examples()]
    assert titles == [
        "Slurm with GPUs",
        "PBS Pro select statements",
        "SGE with a parallel environment",
        "LSF",
        "HTCondor",
        "OAR",
        "An interactive notebook on a login node",
        "A batch script",
    ]


@pytest.mark.parametrize("example", site_examples(), ids=lambda e: e[0])
def test_site_example_job_script_is_what_the_code_writes(example):
    title, config, cls_name, section, documented = example
    assert section in config["jobqueue"], title
    config = yaml.safe_load(yaml.safe_dump(config))
    for values in config["jobqueue"].values():
        values.pop("interface", None)  # the header does not depend on it (see normalize)
    # merged into the built-in defaults, as dask merges a YAML file (dask.config.set with
    # the whole "jobqueue" mapping would replace them: no walltime, no --death-timeout)
    merged = dask.config.merge(dask.config.get("jobqueue"), config["jobqueue"])
    with dask.config.set({"jobqueue": merged}):
        actual = script_of(getattr(dask_jobqueue, cls_name), config_name=section)
    assert normalize(documented) == normalize(actual), title


def test_sites_page_unit_statements():
    text = page("sites.rst")
    # "Slurm ``--mem=56G`` is 56 GiB for 60 GB"
    assert "``--mem=56G`` is 56 GiB for 60 GB" in text
    script = script_of(SLURMCluster, cores=1, memory="60GB")
    assert "#SBATCH --mem=56G" in script
    assert (56 - 1) * 2**30 < 60e9 <= 56 * 2**30
    # SGE: "8 slots of ``4G`` is 32G for the job"
    assert "8 slots of ``4G`` is 32G" in text and 8 * 4 == 32


# ---------------------------------------------------------------------- numbers in pages


def test_compatibility_memory_example():
    text = " ".join(page("compatibility.rst").split())
    assert (
        '``memory="28GB", processes=4`` gives each worker ``--memory-limit 6675MiB`` '
        "(7,000,000,000 bytes floored to 6675 MiB = 6,999,244,800 bytes), where "
        "dask-jobqueue writes ``6.52GiB`` (7,000,796,692 bytes" in text
    )
    line = worker_line(script_of(SLURMCluster, cores=4, memory="28GB", processes=4))
    assert "--memory-limit 6675MiB" in line
    assert 28_000_000_000 // 4 == 7_000_000_000
    assert 7_000_000_000 // MIB == 6675 and 6675 * MIB == 6_999_244_800
    assert parse_bytes("6.52GiB") == 7_000_796_692 > 7_000_000_000
    migrating = " ".join(page("migrating.rst").split())
    assert "(``6675MiB`` instead of ``6.52GiB`` for 7 GB per worker)" in migrating


def test_quickstart_sizes():
    text = page("quickstart.rst")
    assert "processes=2,          # Dask workers per job: 2 workers of 4 threads and 16 GB" in text
    assert "cluster.scale(jobs=4)         # 4 jobs = 8 workers" in text
    line = worker_line(script_of(SLURMCluster, cores=8, memory="32GB", processes=2))
    assert "--nthreads 4" in line and "--nworkers 2" in line
    limit = parse_bytes(re.search(r"--memory-limit (\S+)", line).group(1))
    assert 16e9 - MIB < limit <= 16e9
    assert 4 * 2 == 8


def test_how_it_works_whole_gib_stay_gib():
    assert "floored to MiB\n(whole GiB stay GiB)" in page("how-it-works.rst")
    line = worker_line(script_of(SLURMCluster, cores=2, memory="8GiB", processes=2))
    assert "--memory-limit 4GiB" in line


def test_usage_page_statements():
    text = page("usage.rst")
    assert "cluster.scale(jobs=4)              # 4 batch jobs of 6 workers = 24 workers" in text
    cluster = PBSCluster(cores=24, memory="100GB", processes=6, walltime="02:00:00")
    try:
        assert cluster.processes == 6 and 4 * cluster.processes == 24
        assert "--nworkers 6" in cluster.job_script()
    finally:
        cluster.close()
    flat = " ".join(text.split())
    assert '``queue="a;b"`` is refused' in flat
    with pytest.raises(ValueError, match="queue"):
        PBSCluster(cores=1, memory="1GB", queue="a;b")
    assert "#PBS -q workq@server1" in script_of(
        PBSCluster, cores=1, memory="1GB", queue="workq@server1"
    )
    with pytest.raises(ValueError, match="queue"):
        PBSCluster(cores=1, memory="1GB", queue="a\nb")


def test_readme_scaling_numbers():
    text = (ROOT / "README.rst").read_text()
    assert "processes=6" in text
    assert "cluster.scale(jobs=2)            # or cluster.scale(12) workers" in text
    cluster = SLURMCluster(cores=24, memory="100GB", processes=6)
    try:
        assert cluster.processes == 6 and 12 / cluster.processes == 2
    finally:
        cluster.close()


# ---------------------------------------------------------------------- configuration keys


def _keyword_parameters(cluster_cls: type) -> set[str]:
    from dask_jobqueue.options import CLUSTER_OPTIONS, accepted_keywords

    return accepted_keywords(cluster_cls.job_cls) | {o.name for o in CLUSTER_OPTIONS}


def _keys_without_keyword() -> set[str]:
    defaults = yaml.safe_load((ROOT / "dask_jobqueue" / "jobqueue.yaml").read_text())
    found = set()
    for scheduler in registry.SCHEDULERS:
        name, cls = scheduler.name, scheduler.cluster_class()
        accepted = _keyword_parameters(cls)
        found |= {k for k in defaults["jobqueue"][name] if k.replace("-", "_") not in accepted}
    return found


def test_yaml_header_names_the_keys_without_keyword():
    header = " ".join(
        line.lstrip("# ")
        for line in (ROOT / "dask_jobqueue" / "jobqueue.yaml").read_text().splitlines()
        if line.startswith("#")
    ).split("jobqueue:")[0]
    match = re.search(r"The job-state keys (.*?) have no keyword", header)
    assert match, header
    listed = set(re.split(r",\s*|\s+and\s+", match.group(1)))
    assert listed == _keys_without_keyword()


def test_configuration_table_matches_defaults():
    text = page("configuration.rst")
    rows = re.findall(r"^``([a-z-]+)``\s+``([^`]+)``\s+\S", text, re.MULTILINE)
    table = dict(rows)
    assert set(table) == _keys_without_keyword()
    slurm = yaml.safe_load((ROOT / "dask_jobqueue" / "jobqueue.yaml").read_text())["jobqueue"][
        "slurm"
    ]
    for key, value in table.items():
        assert str(slurm[key]) == value, key


# ---------------------------------------------------------------------- messages


def _sources(package: str) -> str:
    """Every string literal of a package, implicit concatenations joined and f-string
    fields replaced by a NUL, one per line."""
    module = {"dask_jobqueue": dask_jobqueue, "distributed": distributed}[package]
    root = Path(module.__file__).parent
    literals = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                literals.append(
                    "".join(v.value if isinstance(v, ast.Constant) else "\0" for v in node.values)
                )
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.append(node.value)
    return "\n".join(literals)


def test_troubleshooting_messages_exist_in_the_code():
    text = page("troubleshooting.rst")
    checked = re.findall(r"^\.\. checked-message: (\w+): (.+)$", text, re.MULTILINE)
    assert len(checked) >= 15
    visible = re.sub(r"^\.\. checked-message: .*$", "", text, flags=re.MULTILINE)
    visible = " ".join(visible.split())
    sources = {name: _sources(name) for name in {package for package, _ in checked}}
    for package, fragment in checked:
        assert fragment in sources[package], (package, fragment)
        assert fragment in visible, fragment


def test_runner_page_quotes_the_real_error():
    from dask_jobqueue.runner import SLURMRunner, WorldTooSmallException

    with pytest.raises(WorldTooSmallException) as info:
        SLURMRunner(environ={"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "1"})
    assert str(info.value) in " ".join(page("runner.rst").split())


# ---------------------------------------------------------------------- reference pages


def test_api_page_documents_every_public_name():
    text = page("api.rst")
    documented = set(re.findall(r"^\.\. auto(?:class|exception|function):: (\S+)", text, re.M))
    for name in dask_jobqueue.__all__:
        assert f"dask_jobqueue.{name}" in documented, name
    for name in dask_jobqueue.runner.__all__:
        assert f"dask_jobqueue.runner.{name}" in documented, name


def test_cli_page_lists_every_option():
    text = page("cli.rst")
    parser = build_parser()
    subparsers = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    for name, sub in subparsers.items():
        assert f"``dask-jobqueue {name}``" in text, name
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in text, (name, option)


def test_how_it_works_poll_intervals():
    text = " ".join(page("how-it-works.rst").split())
    defaults = yaml.safe_load((ROOT / "dask_jobqueue" / "jobqueue.yaml").read_text())["jobqueue"]
    for key in ("poll-interval", "poll-interval-max"):
        stated = re.search(rf"``{key}`` \((\d+) s\)", text)
        assert stated, key
        for section in defaults.values():
            assert section[key] == f"{stated.group(1)}s", key


def test_sites_page_mem_per_gpu_advice():
    text = " ".join(page("sites.rst").split())
    assert 'can drop the generated line with ``job-directives-skip: ["--mem"]``' in text
    cluster = SLURMCluster(
        cores=1,
        memory="1GB",
        job_directives_skip=["--mem"],
        job_extra_directives=["--mem-per-gpu=10G"],
    )
    try:
        header = cluster.job_header.splitlines()
    finally:
        cluster.close()
    assert not any(line.startswith("#SBATCH --mem=") for line in header)
    assert "#SBATCH --mem-per-gpu=10G" in header


# ---------------------------------------------------------------------- issue 20, item 9


def test_no_page_says_a_killed_client_cannot_cancel_its_jobs():
    # the watchdog does (cli.rst); one page used to say the opposite
    for path in DOCS.glob("*.rst"):
        text = " ".join(path.read_text(encoding="utf-8").split())
        assert not re.search(r"kill -9``\W*cannot", text), path.name
    assert "cancels every job; so does a kernel killed with ``kill -9``" in " ".join(
        page("sites.rst").split()
    )


def test_compatibility_page_lists_what_the_code_adds():
    text = " ".join(page("compatibility.rst").split())
    subparsers = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    listed = re.search(r"A ``dask-jobqueue`` command \(([^)]*)\)", text)
    assert listed
    assert set(re.findall(r"``([\w-]+)``", listed.group(1))) == set(subparsers)
    script = dask_jobqueue.slurm.SLURMJob(cores=1, memory="1GB").job_script()
    assert "#SBATCH -N 1" in script.splitlines() and "``#SBATCH -N 1``" in text
    assert "<<'DASK_JOBQUEUE_CHECK'" in script and "<<'DASK_JOBQUEUE_CHECK'``" in text
    assert "``scheduler_check=False`` removes it" in text


def test_long_code_lines_scroll_in_the_html():
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    assert 'html_static_path = ["_static"]' in conf and 'html_css_files = ["custom.css"]' in conf
    css = (DOCS / "_static" / "custom.css").read_text(encoding="utf-8")
    assert re.search(r"div\.highlight pre,\s*pre\.literal-block \{[^}]*overflow-x: auto;", css)


def test_docs_build_runs_with_warnings_as_errors_in_ci():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"-m sphinx -W .*-b html docs", ci)


if __name__ == "__main__":
    from dask_jobqueue.config import reconfigure

    reconfigure()
    (DOCS / "sites.rst").write_text(regenerated_sites_page(), encoding="utf-8")
