"""A running ComfyUI, through the HTTP API its web UI and batch scripts use: ``GET /object_info``,
``POST /prompt``, ``GET /history/<id>``, ``GET /view``. Standard library only."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


class ComfyError(RuntimeError):
    """Something a ComfyUI server refused or could not do, said so the user can act on it."""


class ServerUnreachable(ComfyError):
    pass


class RunFailed(ComfyError):
    """One prompt failed (refused at queueing, or an error while it ran); the evaluation records it and goes on."""


def _node_errors(node_errors: dict, prompt: dict) -> str:
    lines = []
    for node_id, entry in (node_errors or {}).items():
        title = ((prompt.get(node_id) or {}).get("_meta") or {}).get("title") or entry.get("class_type", "")
        for error in entry.get("errors") or []:
            detail = error.get("details") or error.get("message") or ""
            lines.append(f"node {node_id} ({title}): {error.get('message', '')}{': ' + detail if detail else ''}")
    return "; ".join(lines)


class ComfyClient:
    def __init__(self, url: str, timeout: float = 3600.0, poll: float = 0.25):
        url = url.strip().rstrip("/")
        self.url = url if "://" in url else "http://" + url
        self.timeout, self.poll = timeout, poll
        self.client_id = uuid.uuid4().hex

    def _request(self, path: str, body: dict | None = None, timeout: float = 60.0) -> bytes:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServerUnreachable(
                f"ComfyUI at {self.url} is not reachable ({reason}). Start it (python main.py --listen 127.0.0.1 "
                "--port 8188) or pass its address with --server http://HOST:PORT."
            ) from None

    def get_json(self, path: str):
        try:
            return json.loads(self._request(path).decode("utf-8"))
        except urllib.error.HTTPError as error:
            raise ComfyError(f"{self.url}{path} answered HTTP {error.code}: is this a ComfyUI server?") from None

    def object_info(self) -> dict:
        """Every node type this server has, with its inputs and outputs."""
        return self.get_json("/object_info")

    def queue(self, prompt: dict) -> str:
        try:
            answer = self._request("/prompt", {"prompt": prompt, "client_id": self.client_id})
        except urllib.error.HTTPError as error:
            raise RunFailed(self._refusal(error, prompt)) from None
        answer = json.loads(answer.decode("utf-8"))
        if answer.get("node_errors"):  # queued, but only the outputs that passed validation would run
            details = _node_errors(answer["node_errors"], prompt)
            raise RunFailed(f"ComfyUI refused part of the prompt: {details}")
        return answer["prompt_id"]

    @staticmethod
    def _refusal(error: urllib.error.HTTPError, prompt: dict) -> str:
        try:
            body = json.loads(error.read().decode("utf-8"))
        except (ValueError, OSError):
            return f"ComfyUI refused the prompt (HTTP {error.code})"
        message = (body.get("error") or {}).get("message") or f"HTTP {error.code}"
        details = _node_errors(body.get("node_errors") or {}, prompt)
        return f"ComfyUI refused the prompt: {message}" + (f" ({details})" if details else "")

    def wait(self, prompt_id: str, prompt: dict) -> dict:
        """The finished prompt's outputs ``{node id: ui output}``; raises :class:`RunFailed` on an execution error."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            status = (entry or {}).get("status") or {}
            if entry and (status.get("completed") or status.get("status_str") in ("success", "error")):
                if status.get("status_str") == "error":
                    raise RunFailed(self._execution_error(status, prompt))
                return entry.get("outputs") or {}
            time.sleep(self.poll)
        raise RunFailed(f"prompt {prompt_id} did not finish within {self.timeout:.0f} s on {self.url}")

    @staticmethod
    def _execution_error(status: dict, prompt: dict) -> str:
        for event, data in status.get("messages") or []:
            if event == "execution_error":
                node = data.get("node_id")
                title = ((prompt.get(str(node)) or {}).get("_meta") or {}).get("title") or data.get("node_type")
                kind = str(data.get("exception_type", "")).rsplit(".", 1)[-1]  # the class, not its module path
                error = f"{kind}: {str(data.get('exception_message', '')).strip()}"
                return f"node {node} ({title}) failed: {error}"
            if event == "execution_interrupted":
                return "the run was interrupted on the server (Cancel pressed, or the server stopped)"
        return "the run failed on the server (no error message in its history)"

    def run(self, prompt: dict) -> dict:
        return self.wait(self.queue(prompt), prompt)

    def image(self, ref: dict) -> bytes:
        """The file of one image output (``{"filename", "subfolder", "type"}``), as the server saved it."""
        query = urllib.parse.urlencode(
            {"filename": ref["filename"], "subfolder": ref.get("subfolder", ""), "type": ref.get("type", "output")}
        )
        try:
            return self._request(f"/view?{query}")
        except urllib.error.HTTPError as error:
            raise RunFailed(f"could not download {ref['filename']} from {self.url} (HTTP {error.code})") from None
