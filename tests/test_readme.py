"""The documentation's Python snippets run as written, offline, and print what their comments say.

The pages are README.md (the front page) and every docs/*.md. On each page every ```python
block runs, in order, in one namespace per `##` section (a section's snippets build on each
other), in a fresh folder, with sockets closed: a snippet that needs the network fails here.
An expression followed by a comment line holding a Python literal (`# (8, 10)`) must
evaluate to it. The pages' relative links must lead to files and headings that exist, the
README must stay a front page (at most 350 lines, linking every docs page), and its test
command must be the one `.ci/run` runs.
"""

import ast
import glob
import os
import re
import socket

import keras
import pytest

from conftest import REPO

README = os.path.join(REPO, "README.md")
PAGES = [README] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
README_MAX_LINES = 350


def page_name(path):
    return os.path.relpath(path, REPO).replace(os.sep, "/")


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def python_snippets(path):
    """[(section title, [(line number, code)])] for the page's sections that have Python snippets."""
    sections, title, code, start = {}, None, None, 0
    for number, line in enumerate(read_lines(path), 1):
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


SECTIONS = [(page_name(path), title, snippets) for path in PAGES for title, snippets in python_snippets(path)]


def test_every_page_has_its_snippets_to_run():
    titles = {(page, title) for page, title, _ in SECTIONS}
    for expected in [
        ("README.md", "Quick start"),
        ("docs/backbones.md", "Feature taps and detection backbones"),
        ("docs/backbones.md", "The predecessor project's API"),
        ("docs/heads.md", "Pretrained detection and segmentation"),
    ]:
        assert expected in titles, sorted(titles)
    # The nine blocks the README held before the docs pages were split off all still run.
    assert sum(len(snippets) for _, _, snippets in SECTIONS) >= 9
    assert any(expected_values(code) for _, _, snippets in SECTIONS for _, code in snippets)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("tests run offline: a documentation snippet tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("MNET_BACKBONES_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the snippets' data loaders are TensorFlow pipelines"
)
@pytest.mark.parametrize(
    "page, title, snippets", SECTIONS, ids=[re.sub(r"\W+", "_", f"{p}_{t}") for p, t, _ in SECTIONS]
)
def test_section_snippets_run_as_written(page, title, snippets, offline):
    namespace = {"__name__": "readme"}
    for line, code in snippets:
        try:
            exec(compile(code, f"{page}:{line}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{page} snippet at line {line} ({title}) failed: {error!r}") from error
        for expression, literal in expected_values(code):
            value = eval(expression, namespace)
            assert value == literal, f"{page} line {line}: {expression} gives {value!r}, the page says {literal!r}"


def heading_anchors(path):
    """GitHub's anchors for the page's headings (outside code blocks)."""
    anchors, in_code = set(), False
    for line in read_lines(path):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def relative_links(path):
    """[(line number, target)] for the page's markdown links and images that are not URLs."""
    links, in_code = [], False
    for number, line in enumerate(read_lines(path), 1):
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line)):
            if not re.match(r"[a-z]+://|mailto:", target):
                links.append((number, target))
    return links


@pytest.mark.parametrize("path", PAGES, ids=[page_name(p) for p in PAGES])
def test_relative_links_lead_somewhere(path):
    for number, target in relative_links(path):
        file, _, anchor = target.partition("#")
        destination = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        assert os.path.exists(destination), f"{page_name(path)}:{number}: {target} does not exist"
        if anchor and destination.endswith(".md"):
            assert anchor in heading_anchors(destination), f"{page_name(path)}:{number}: no heading #{anchor}"


def test_the_readme_is_a_front_page_that_maps_every_docs_page():
    lines = read_lines(README)
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    linked = {os.path.normpath(os.path.join(REPO, target.partition("#")[0])) for _, target in relative_links(README)}
    for page in PAGES[1:]:
        assert page in linked, f"README.md does not link {page_name(page)}"


def test_the_readme_test_command_is_what_ci_runs():
    ci = read_lines(os.path.join(REPO, ".ci", "run"))
    marker = next(i for i, line in enumerate(ci) if "README's test command (keep the two in sync)" in line)
    command = next(line for line in ci[marker + 1 :] if line.strip() and not line.startswith("#"))
    command = " ".join(word for word in command.split() if word != "-q")  # CI installs quietly
    readme = "\n".join(read_lines(README))
    assert command in readme, f".ci/run runs `{command}`; README's test command differs"
