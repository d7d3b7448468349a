"""A real ComfyUI, in this process: find it, start it on a temp base directory, run prompts.

ComfyUI is found through ``COMFYUI_PATH`` or, when this pack sits in ``ComfyUI/custom_nodes/``,
two folders up. It is started as ``main.py --cpu --base-directory <tmp>`` would start it (models,
input, output and custom_nodes under that temp folder), the pack is linked into
``<tmp>/custom_nodes/`` and loaded by ComfyUI's own custom-node loader, and API-format prompts
run through ``execution.PromptExecutor``. One ComfyUI per process: its modules are global.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from pathlib import Path

from .pack import PACK_ROOT

PACK_FOLDER_NAME = "ComfyUI-RealignDiff"


def find_comfyui() -> tuple[Path | None, str]:
    """(path, reason): the ComfyUI checkout, or None and why it was not found."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).expanduser().resolve()
        if (path / "comfy").is_dir() and (path / "nodes.py").is_file():
            return path, ""
        return None, f"COMFYUI_PATH={env} is not a ComfyUI checkout (no comfy/ and nodes.py there)"
    parent = PACK_ROOT.parent
    if parent.name == "custom_nodes" and (parent.parent / "comfy").is_dir():
        return parent.parent, ""
    return None, "ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout, or put this pack in ComfyUI/custom_nodes/"


class ExecutionFailed(RuntimeError):
    """A prompt failed inside ComfyUI; the message is ComfyUI's own error for the node."""


class _Server:
    """What PromptExecutor needs of the server: somewhere to send its messages."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list[tuple[str, dict]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


class _ImportFailures(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if "IMPORT FAILED" in message or "Cannot import" in message:
            self.records.append(message)


class ComfyUI:
    def __init__(self, comfy_path: Path, base_dir: Path, cpu: bool = True, extra_args: tuple[str, ...] = ()):
        self.path = comfy_path
        self.base_dir = base_dir
        for sub in ("models", "input", "output", "temp", "custom_nodes", "user"):
            (base_dir / sub).mkdir(parents=True, exist_ok=True)
        link = base_dir / "custom_nodes" / PACK_FOLDER_NAME
        if not link.exists():
            link.symlink_to(PACK_ROOT, target_is_directory=True)
        self.pack_dir = link

        from realign_diff.compat.torchvision_ops import ensure_torchvision_importable

        ensure_torchvision_importable()  # ComfyUI imports torchvision at start
        sys.path.insert(0, str(comfy_path))
        sys.argv = [str(comfy_path / "main.py"), "--base-directory", str(base_dir), "--disable-api-nodes"]
        if cpu:
            sys.argv.append("--cpu")
        sys.argv += list(extra_args)
        import comfy.options

        comfy.options.enable_args_parsing()
        # isort: off
        import utils.extra_config  # noqa: F401 - must precede ``nodes``, which ``execution`` imports
        import execution
        import folder_paths
        import nodes
        # isort: on

        self.nodes, self.execution, self.folder_paths = nodes, execution, folder_paths
        failures = _ImportFailures()
        logging.getLogger().addHandler(failures)
        try:
            asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        finally:
            logging.getLogger().removeHandler(failures)
        # ComfyUI's own optional nodes may fail here (torchaudio...); only this pack's failures count
        self.import_failures = [m for m in failures.records if PACK_FOLDER_NAME in m or str(PACK_ROOT) in m]
        self.server = _Server()
        self.executor = execution.PromptExecutor(self.server, cache_type=execution.CacheType.CLASSIC)

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    def pack_module_loaded(self) -> bool:
        return os.path.abspath(self.pack_dir) in {os.path.abspath(p) for p in self.nodes.LOADED_MODULE_DIRS.values()}

    def run(self, prompt: dict, reset_cache: bool = True) -> dict:
        """Validate and execute an API-format prompt; returns {node_id: ui output}."""
        if reset_cache:
            self.executor.reset()
        prompt_id = str(uuid.uuid4())
        valid = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0]:
            raise ExecutionFailed(f"prompt rejected: {valid[1]} {valid[3]}")
        self.executor.execute(prompt, prompt_id, {}, valid[2])
        if not self.executor.success:
            errors = [d for e, d in self.executor.status_messages if e == "execution_error"]
            detail = errors[-1] if errors else {}
            raise ExecutionFailed(
                f"{detail.get('node_type')} (node {detail.get('node_id')}): {detail.get('exception_type')}: "
                f"{detail.get('exception_message')}\n{''.join(detail.get('traceback', []))}"
            )
        return self.executor.history_result["outputs"]

    def output_of(self, prompt: dict, node_id: str):
        """Execute the prompt and return the cached Python outputs of one node.

        ComfyUI only executes what some output node depends on: the prompt needs one downstream of ``node_id``.
        """
        self.run(prompt)
        entry = self.executor.caches.outputs.get(node_id)
        if entry is None:
            raise KeyError(f"node {node_id} produced no cached output")
        return entry.outputs if hasattr(entry, "outputs") else entry


_instance: ComfyUI | None = None


def start_comfyui(base_dir: Path, cpu: bool = True, extra_args: tuple[str, ...] = ()) -> ComfyUI:
    global _instance
    if _instance is None:
        path, reason = find_comfyui()
        if path is None:
            raise RuntimeError(reason)
        _instance = ComfyUI(path, base_dir, cpu=cpu, extra_args=extra_args)
    return _instance
