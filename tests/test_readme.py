"""README's Python snippets run as written, offline, and print what their comments say.

Every ```python block runs, in order, in one namespace per `##` section (a
section's snippets build on each other), in a fresh folder, with sockets
closed: a snippet that needs the network fails here. An expression followed
by a comment line holding a Python literal (`# (8, 10)`) must evaluate to it.
"""

import ast
import os
import re
import socket

import keras
import pytest

from conftest import REPO

README = os.path.join(REPO, "README.md")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the snippets' data loaders are TensorFlow pipelines"
)


def python_snippets():
    """[(section title, [(line number, code)])] for the sections that have Python snippets."""
    with open(README, encoding="utf-8") as f:
        lines = f.read().splitlines()
    sections, title, code, start = {}, None, None, 0
    for number, line in enumerate(lines, 1):
        if code is not None:
            if line.startswith("```"):
                sections.setdefault(title, []).append((start, "\n".join(code)))
                code = None
            else:
                code.append(line)
        elif line.startswith("## "):
            title = line[3:].strip()
        elif line.strip() == "```python":
            code, start = [], number + 1
    return list(sections.items())


def expected_values(code):
    """[(expression source, literal)] for each expression statement followed by a `# <literal>` line."""
    lines = code.splitlines()
    checks = []
    for node in ast.parse(code).body:
        if not isinstance(node, ast.Expr) or node.end_lineno >= len(lines):
            continue
        comment = lines[node.end_lineno].strip()
        if not comment.startswith("# "):
            continue
        try:
            literal = ast.literal_eval(comment[2:])
        except (ValueError, SyntaxError):
            continue
        checks.append((ast.get_source_segment(code, node), literal))
    return checks


SECTIONS = python_snippets()


def test_the_readme_has_snippets_to_run():
    titles = [title for title, _ in SECTIONS]
    assert "Quick start" in titles and "Detection and segmentation heads" in titles, titles
    assert any(expected_values(code) for _, snippets in SECTIONS for _, code in snippets)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("tests run offline: a README snippet tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("MNET_BACKBONES_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("title, snippets", SECTIONS, ids=[re.sub(r"\W+", "_", t) for t, _ in SECTIONS])
def test_section_snippets_run_as_written(title, snippets, offline):
    namespace = {"__name__": "readme"}
    for line, code in snippets:
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"README.md snippet at line {line} ({title}) failed: {error!r}") from error
        for expression, literal in expected_values(code):
            value = eval(expression, namespace)
            assert value == literal, f"README.md line {line}: {expression} gives {value!r}, the README says {literal!r}"
