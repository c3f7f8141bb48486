"""The job-script headers, rendered from the dialects' directive tables, are byte for byte
those of the hand-written header code they replaced (``tests/data/headers/golden.txt``, made
by that code from the configurations of ``tests/header_cases.py``)."""

from __future__ import annotations

from pathlib import Path

from .header_cases import render

GOLDEN = Path(__file__).parent / "data" / "headers" / "golden.txt"


def _blocks(text: str) -> dict[str, str]:
    body = text[text.index("### ") :]
    blocks = {}
    for block in body.split("### ")[1:]:
        label, _, header = block.partition("\n")
        blocks[label] = header
    return blocks


def test_headers_are_those_of_the_code_before_the_tables(tmp_path, monkeypatch):
    monkeypatch.delenv("PBS_ACCOUNT", raising=False)
    monkeypatch.chdir(tmp_path)
    expected = _blocks(GOLDEN.read_text())
    rendered = _blocks(render())
    assert len(expected) > 200
    assert rendered.keys() == expected.keys()
    different = [label for label in expected if rendered[label] != expected[label]]
    assert different == [], "\n".join(
        f"### {label}\nexpected:\n{expected[label]}rendered:\n{rendered[label]}"
        for label in different[:3]
    )
