"""What users install: requirements, registry metadata, the published file set, a fast and lazy import."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from realign_testkit.pack import PACK_ROOT

TORCH_FAMILY = {"torch", "torchvision", "torchaudio", "xformers", "triton"}
HEAVY = ("transformers", "diffusers", "segment_anything", "groundingdino", "openai", "open_clip", "timm")


def _pyproject() -> dict:
    return tomllib.loads((PACK_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirements(path: Path) -> list[str]:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_txt_and_pyproject_dependencies_are_the_same_list():
    assert sorted(_requirements(PACK_ROOT / "requirements.txt")) == sorted(_pyproject()["project"]["dependencies"])


def test_no_torch_family_and_lower_bounds_only():
    for requirement in _requirements(PACK_ROOT / "requirements.txt"):
        assert _name(requirement) not in TORCH_FAMILY, f"{requirement}: torch comes from the user's ComfyUI"
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[\w,-]+\])?>=[0-9][0-9A-Za-z.]*", requirement), (
            f"{requirement}: give a lower bound only (>=X); pins and caps break users' ComfyUI environments"
        )


def test_dev_install_is_one_command_with_torch_pinned_to_the_cpu_build():
    # requirements.txt stays torch-free for ComfyUI users; a fresh dev venv gets torch from requirements-dev.txt
    assert "torch" in {_name(r) for r in _requirements(PACK_ROOT / "requirements-dev.txt")}
    pins = {_name(r): r for r in _requirements(PACK_ROOT / "constraints-dev.txt")}
    assert re.fullmatch(r"torch==[0-9.]+\+cpu", pins["torch"]), pins.get("torch")


def test_registry_metadata():
    data = _pyproject()
    project, comfy = data["project"], data["tool"]["comfy"]
    name = project["name"]
    # registry rules: < 100 chars, alphanumerics and - _ . without doubles, starts with a letter, no "ComfyUI"
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", name)
    assert "comfyui" not in name.lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert (PACK_ROOT / project["license"]["file"]).is_file()
    assert project["urls"]["Repository"].startswith("https://")
    assert comfy["PublisherId"] and comfy["DisplayName"]
    icon = comfy["Icon"]
    assert icon.endswith(".svg") and (PACK_ROOT / icon.split("/main/", 1)[1]).is_file()
    for classifier in project.get("classifiers", []):
        if classifier.startswith("Operating System :: "):
            assert classifier.split(" :: ", 1)[1].split(" :: ")[0] in {"Microsoft", "POSIX", "MacOS", "OS Independent"}


def _git(*args, stdin=None) -> str:
    return subprocess.run(["git", *args], cwd=PACK_ROOT, input=stdin, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_comfyignore_leaves_tests_and_dev_files_out_of_the_published_pack():
    if not _git("rev-parse", "--is-inside-work-tree").strip() == "true":
        pytest.skip("not a git checkout")
    files = [
        f
        for f in _git("ls-files", "--cached", "--others", "--exclude-standard").splitlines()
        if (PACK_ROOT / f).exists()
    ]
    ignore = str(PACK_ROOT / ".comfyignore")
    # git's own gitignore matcher, the syntax the registry's packer reads .comfyignore with
    ignored = set(
        _git(
            "-c", f"core.excludesFile={ignore}", "check-ignore", "--no-index", "--stdin", stdin="\n".join(files)
        ).splitlines()
    )
    published = {f for f in files if f not in ignored}
    assert not any(f.startswith(("tests/", "bench/", ".ci/")) for f in published)
    assert "requirements-dev.txt" not in published
    for needed in (
        "__init__.py",
        "nodes/__init__.py",
        "realign_diff/__init__.py",
        "LICENSE",
        "README.md",
        "pyproject.toml",
        "requirements.txt",
    ):
        assert needed in published, needed
    shipped = {f for f in files if f.startswith("workflows/") and f.endswith(".json")}
    assert shipped <= published


def test_importing_the_pack_imports_no_heavy_library():
    """ComfyUI imports every pack at start: ours must not pull transformers & co. in until a node runs."""
    code = (
        "import sys, json\n"
        f"sys.path[:0] = [{str(PACK_ROOT)!r}, {str(PACK_ROOT / 'tests')!r}]\n"
        "from realign_testkit.pack import load_pack\n"
        "load_pack()\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_missing_requirements_names_what_to_install(pack):
    from realign_pack.nodes import missing_requirements

    assert missing_requirements({"json": "json", "realign_surely_absent_pkg": "realign-absent>=1.0"}) == [
        "realign-absent>=1.0"
    ]


def test_every_node_module_declares_its_optional_packages_as_requirements(pack):
    """REQUIRES (what hides a module's nodes when missing) names packages that requirements.txt installs."""
    import importlib

    from realign_pack import nodes

    installable = {_name(r) for r in _requirements(PACK_ROOT / "requirements.txt")}
    for module_name in nodes.NODE_MODULES:
        module = importlib.import_module(f"realign_pack.nodes.{module_name}")
        for requirement in getattr(module, "REQUIRES", {}).values():
            assert _name(requirement) in installable, f"{module_name}: {requirement} not in requirements.txt"
