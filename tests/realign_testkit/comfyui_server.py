"""ComfyUI's real HTTP server (``main.py``) in a subprocess, for the web UI and HTTP endpoints.

Run as a script it is the launcher: it makes ``import torchvision`` survivable (ComfyUI imports it at
start, and a torchvision built for another torch dies on import, see realign_diff.compat) and then runs
ComfyUI's ``main.py`` exactly as ``python main.py ARGS`` would::

    python tests/realign_testkit/comfyui_server.py /path/to/ComfyUI --cpu --listen 127.0.0.1 --port 8188

``ComfyUIServer`` starts it on a free port of 127.0.0.1 with a temp base directory (models, input,
output, user, custom_nodes with this pack linked in) and stops it again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]
PACK_FOLDER_NAME = "ComfyUI-RealignDiff"


def _guard_torchvision() -> None:
    """Load the pack's torchvision guard by file path: putting the pack root on sys.path would let its
    ``nodes/`` package shadow ComfyUI's ``nodes.py``."""
    path = PACK_ROOT / "realign_diff" / "compat" / "torchvision_ops.py"
    spec = importlib.util.spec_from_file_location("_realign_torchvision_guard", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ensure_torchvision_importable()


class _HidePackages:
    """A meta-path finder that makes packages look uninstalled (the optional-dependency tests)."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden by the test)", name=fullname)
        return None


HIDE_ENV = "REALIGN_TEST_HIDE_PACKAGES"  # comma-separated top-level import names


def launch(comfy_path: str, args: list[str]) -> None:
    hidden = [n for n in os.environ.get(HIDE_ENV, "").split(",") if n]
    if hidden:
        sys.meta_path.insert(0, _HidePackages(hidden))
    _guard_torchvision()
    comfy_path = os.path.abspath(comfy_path)
    os.chdir(comfy_path)
    sys.path.insert(0, comfy_path)
    sys.argv = [os.path.join(comfy_path, "main.py"), *args]
    runpy.run_path(sys.argv[0], run_name="__main__")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyUIServer:
    """``with ComfyUIServer(comfy_path, base_dir) as server: server.url``; the log is ``server.log_path``."""

    def __init__(
        self,
        comfy_path: Path,
        base_dir: Path,
        extra_args: tuple[str, ...] = (),
        env: dict | None = None,
        link_pack: bool = True,
        settings: dict | None = None,
        startup_timeout: float = 240.0,
    ):
        self.comfy_path, self.base_dir = Path(comfy_path), Path(base_dir)
        self.extra_args, self.env, self.startup_timeout = tuple(extra_args), env, startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base_dir / "comfyui-server.log"
        self.process: subprocess.Popen | None = None
        for sub in ("models", "input", "output", "temp", "custom_nodes", "user/default"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        if link_pack:
            link = self.base_dir / "custom_nodes" / PACK_FOLDER_NAME
            if not link.exists():
                link.symlink_to(PACK_ROOT, target_is_directory=True)
        # first-run tours and the template browser would cover the canvas
        defaults = {
            "Comfy.TutorialCompleted": True,
            "Comfy.InstalledVersion": "99.0.0",
            "Comfy.Release.Version": "99.0.0",
            "Comfy.Release.Status": "skipped",
            "Comfy.Release.Timestamp": 4102444800000,
            "Comfy.Workflow.ShowMissingNodesWarning": True,
        }
        (self.base_dir / "user" / "default" / "comfy.settings.json").write_text(
            json.dumps({**defaults, **(settings or {})}), encoding="utf-8"
        )

    def command(self) -> list[str]:
        return [
            sys.executable,
            str(Path(__file__).resolve()),
            str(self.comfy_path),
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--base-directory",
            str(self.base_dir),
            "--disable-api-nodes",
            "--disable-auto-launch",
            "--database-url",
            "sqlite:///:memory:",
            *self.extra_args,
        ]

    def start(self) -> ComfyUIServer:
        log = open(self.log_path, "wb")
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(self.comfy_path),
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} at start:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {self.startup_timeout:.0f} s:\n{self.log()[-4000:]}")

    def get_json(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read().decode("utf-8"))

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and nothing else
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: comfyui_server.py COMFYUI_PATH [main.py arguments]")
    launch(sys.argv[1], sys.argv[2:])
