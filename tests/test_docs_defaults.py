"""Every default the docs quote is the code's default, and every node input and CLI flag is documented.

The docs quote defaults in two kinds of tables (README.md and docs/*.md):

- under a heading ``### Display Name (`RealignDiffNodeId`)``, a table ``| Input | Default | ... |``;
- under a heading naming a script in backticks (``python training/refl.py``), tables ``| Flag | Default | ... |``.

A Default cell holds the value in backticks, or ``—`` (no default), ``required``, ``on`` / ``off`` (a switch).
Loader nodes list model files through ComfyUI's folder_paths: they are checked in a real ComfyUI (marker).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from realign_testkit.pack import load_pack

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = {  # script named in a heading -> the function that builds its argument parser
    "training/refl.py": "realign_diff.refl.config:build_arg_parser",
    "evaluation/evaluate.py": "realign_diff.evaluation.config:build_arg_parser",
}
NODE_HEADING = re.compile(r"^#+ .*\(`(RealignDiff\w+)`\)\s*$")
SCRIPT_HEADING = re.compile(r"`(?:python )?([\w./-]+\.py)`")
CODE = re.compile(r"`([^`]*)`")


@dataclass
class Table:
    path: Path
    heading: str
    script: str | None
    header: list[str]
    rows: list[list[str]]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def doc_tables(path: Path) -> list[Table]:
    tables, heading, script, in_code = [], "", None, False
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            heading = line
            if found := SCRIPT_HEADING.search(line):
                script = found.group(1)
        elif not in_code and line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: "):
            header, rows = _cells(line), []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            tables.append(Table(path, heading, script, header, rows))
            continue
        i += 1
    return tables


def _tables(kind: str) -> list[Table]:
    return [t for path in DOCS for t in doc_tables(path) if t.header[:2] == [kind, "Default"]]


def same_value(text: str, value) -> bool:
    if isinstance(value, bool):
        return text == str(value)
    if isinstance(value, (int, float)):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return text == value or (value == "" and text == '""')


def _documented_default(cell: str) -> str | None:
    """The quoted value of a Default cell; None for "—" (no default)."""
    if cell.startswith("—"):
        return None
    code = CODE.search(cell)
    assert code, f"Default cell {cell!r}: quote the value in backticks, or write —"
    return code.group(1)


def node_doc_problems(node_id: str, node_class, table: Table) -> list[str]:
    inputs = {}
    for section in ("required", "optional"):
        inputs |= node_class.INPUT_TYPES().get(section, {})
    where = f"{table.path.name} {node_id}"
    problems, seen = [], set()
    for row in table.rows:
        name = CODE.search(row[0]).group(1)
        seen.add(name)
        if name not in inputs:
            problems.append(f"{where}: documents an input {name!r} the node does not have")
            continue
        spec = inputs[name]
        options = spec[1] if len(spec) > 1 else {}
        if "default" in options:
            default = options["default"]
        elif isinstance(spec[0], (list, tuple)):
            default = None  # a list of files or choices; ComfyUI selects the first
        else:
            default = None
        quoted = _documented_default(row[1])
        if quoted is None:
            if "default" in options:
                problems.append(f"{where}.{name}: the docs say no default, the code says {default!r}")
        elif default is None or not same_value(quoted, default):
            problems.append(f"{where}.{name}: the docs say {quoted!r}, the code says {default!r}")
    for name in inputs.keys() - seen:
        problems.append(f"{where}: input {name!r} is not documented")
    return problems


def _node_tables() -> dict[str, Table]:
    found = {}
    for table in _tables("Input"):
        match = NODE_HEADING.match(table.heading)
        assert match, f"{table.path.name}: an Input/Default table under {table.heading!r}, which names no node id"
        assert match.group(1) not in found, f"{match.group(1)} is documented twice"
        found[match.group(1)] = table
    return found


def _check_nodes(classes: dict) -> None:
    tables = _node_tables()
    undocumented = sorted(set(classes) - set(tables))
    assert not undocumented, f"nodes without an Input/Default table in the docs: {undocumented}"
    assert not set(tables) - set(classes), f"docs describe unknown nodes: {sorted(set(tables) - set(classes))}"
    problems = [p for node_id, cls in classes.items() for p in node_doc_problems(node_id, cls, tables[node_id])]
    assert not problems, "\n".join(problems)


def _needs_comfyui(node_class) -> bool:
    try:
        node_class.INPUT_TYPES()
    except ModuleNotFoundError as error:  # folder_paths / comfy: only inside ComfyUI
        return error.name in {"folder_paths", "comfy"} or str(error.name).startswith("comfy.")
    return False


def test_node_defaults_in_the_docs_are_the_widget_defaults():
    classes = load_pack().NODE_CLASS_MAPPINGS
    tables = _node_tables()
    assert not set(classes) - set(tables), f"undocumented nodes: {sorted(set(classes) - set(tables))}"
    checkable = {node_id: cls for node_id, cls in classes.items() if not _needs_comfyui(cls)}
    assert len(checkable) >= 5
    problems = [p for node_id, cls in checkable.items() for p in node_doc_problems(node_id, cls, tables[node_id])]
    assert not problems, "\n".join(problems)


@pytest.mark.comfyui
def test_every_node_default_in_the_docs_inside_comfyui(comfyui):
    ids = load_pack().NODE_CLASS_MAPPINGS
    _check_nodes({node_id: comfyui.nodes.NODE_CLASS_MAPPINGS[node_id] for node_id in ids})


def _parser(script: str):
    module, function = SCRIPTS[script].split(":")
    return getattr(importlib.import_module(module), function)()


def test_cli_defaults_in_the_docs_are_the_parsers_defaults():
    by_script: dict[str, list[Table]] = {}
    for table in _tables("Flag"):
        assert table.script in SCRIPTS, f"{table.path.name}: a Flag table under no known script ({table.heading!r})"
        by_script.setdefault(table.script, []).append(table)
    assert set(by_script) == set(SCRIPTS), f"scripts without a flag table: {set(SCRIPTS) - set(by_script)}"
    problems = []
    for script, tables in by_script.items():
        actions = {a.option_strings[0]: a for a in _parser(script)._actions if a.option_strings and a.dest != "help"}
        seen = set()
        for table in tables:
            for row in table.rows:
                flag = CODE.search(row[0]).group(1).split()[0]
                seen.add(flag)
                action = actions.get(flag)
                if action is None:
                    problems.append(f"{table.path.name}: {script} has no flag {flag}")
                    continue
                cell = row[1]
                if cell == "required":
                    ok = action.required
                elif cell in ("on", "off"):
                    ok = action.default is (cell == "on")
                elif (quoted := _documented_default(cell)) is None:
                    ok = action.default is None and not action.required
                else:
                    ok = same_value(quoted, action.default)
                if not ok:
                    problems.append(
                        f"{table.path.name}: {script} {flag}: the docs say {cell!r}, the code says "
                        f"{'required' if action.required else repr(action.default)}"
                    )
        problems += [f"{script} {flag} is not documented" for flag in sorted(actions.keys() - seen)]
    assert not problems, "\n".join(problems)


def test_a_drifted_default_is_caught(tmp_path):
    doc = tmp_path / "nodes.md"
    doc.write_text(
        "### Realign Attention Patch (`RealignDiffAttentionPatch`)\n\n| Input | Default | What |\n|---|---|---|\n"
        "| `strength` | `0.8` | λ |\n"
    )
    (table,) = doc_tables(doc)
    from realign_pack.nodes.attention_patch import RealignAttentionPatch

    problems = node_doc_problems("RealignDiffAttentionPatch", RealignAttentionPatch, table)
    assert "nodes.md RealignDiffAttentionPatch.strength: the docs say '0.8', the code says 1.0" in problems
    assert any("input 'guidance' is not documented" in p for p in problems)
