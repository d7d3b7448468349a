"""The shipped workflow files themselves, without ComfyUI (the runs and the browser check are in
tests/comfyui/workflows/test_shipped.py)."""

import re

import pytest

from realign_testkit.pack import PACK_ROOT
from realign_testkit.shipped import shipped_workflows
from realign_testkit.workflows import load_workflow, structure_errors

WORKFLOWS = shipped_workflows()


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_bookkeeping_is_consistent(path):
    workflow = load_workflow(path)
    assert structure_errors(workflow) == []
    assert workflow.get("version") is not None and workflow["nodes"] and workflow["links"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_has_a_template_browser_thumbnail(path):
    assert path.with_suffix(".jpg").is_file()


def test_readme_lists_exactly_the_shipped_workflows():
    readme = (PACK_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Workflows", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"`([\w.-]+\.json)`", section)) == {p.name for p in WORKFLOWS}


def test_structure_check_catches_a_dangling_link():
    workflow = load_workflow(WORKFLOWS[0]) if WORKFLOWS else None
    if workflow is None:
        pytest.skip("no workflow shipped")
    workflow["links"].pop()
    assert structure_errors(workflow)
