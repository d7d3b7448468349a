"""ComfyUI's web UI in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium).

Nothing is downloaded: the browser and its driver are the system's (``/usr/bin/chromium``,
``/usr/bin/chromedriver``, or ``CHROMIUM_PATH`` / ``CHROMEDRIVER_PATH``). ``WebUI.load_workflow`` loads a
UI-format workflow through the frontend's own ``app.loadGraphData`` and reports what a user would see.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=2400,1350",
)


def _find(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if os.path.exists(os.environ[env]) else None
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_available() -> tuple[bool, str]:
    """(available, reason when not)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False, "selenium not installed (pip install selenium)"
    if _find("CHROMIUM_PATH", "chromium", "chromium-browser") is None:
        return False, "chromium not found (apt-get install chromium chromium-driver, or set CHROMIUM_PATH)"
    if _find("CHROMEDRIVER_PATH", "chromedriver") is None:
        return False, "chromedriver not found (apt-get install chromium-driver, or set CHROMEDRIVER_PATH)"
    return True, ""


@dataclass
class LoadResult:
    dialogs: list[str]  # text of every dialog open after the load (missing nodes, errors...)
    nodes: list[dict]  # {id, type, registered, has_errors} of every node in the loaded graph
    prompt: dict  # the frontend's own graphToPrompt output
    widgets_values: dict  # node id -> widgets_values as the frontend saves the loaded graph
    console_errors: list[str] = field(default_factory=list)  # JavaScript errors logged during the load
    error: str | None = None  # an exception thrown by loadGraphData itself


_LOAD_SCRIPT = """
const [workflow, done] = arguments;
(async () => {
  const result = {dialogs: [], nodes: [], prompt: {}, widgets_values: {}, error: null};
  try {
    await window.app.loadGraphData(workflow);
  } catch (e) {
    result.error = String(e && e.stack || e);
  }
  await new Promise(r => setTimeout(r, 800));  // dialogs open asynchronously
  result.dialogs = [...document.querySelectorAll('.p-dialog')]
      .filter(d => d.offsetParent !== null || getComputedStyle(d).display !== 'none')
      .map(d => d.innerText.trim());
  for (const n of window.app.graph.nodes) {
    result.nodes.push({id: n.id, type: n.type, registered: !!LiteGraph.registered_node_types[n.type],
                       has_errors: !!n.has_errors});
  }
  try {
    const p = await window.app.graphToPrompt();
    result.prompt = p.output;
    for (const n of window.app.graph.serialize().nodes) result.widgets_values[String(n.id)] = n.widgets_values ?? null;
  } catch (e) {
    result.error = (result.error || '') + ' graphToPrompt: ' + String(e && e.stack || e);
  }
  done(result);
})();
"""


class WebUI:
    """One headless Chromium on ComfyUI's page: ``with WebUI(server.url) as ui: ui.load_workflow(wf)``."""

    def __init__(self, url: str, timeout: float = 120.0):
        self.url, self.timeout = url, timeout
        self.driver = None

    def __enter__(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = _find("CHROMIUM_PATH", "chromium", "chromium-browser")
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=_find("CHROMEDRIVER_PATH", "chromedriver"))
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_script_timeout(self.timeout)
        self.driver.get(self.url)
        deadline = time.monotonic() + self.timeout
        ready = (
            "return !!(window.app && window.app.graph && window.LiteGraph && window.LiteGraph.registered_node_types"
            " && Object.keys(window.LiteGraph.registered_node_types).length > 50)"
        )
        while not self.driver.execute_script(ready):
            if time.monotonic() > deadline:
                raise TimeoutError(f"ComfyUI's web UI at {self.url} did not finish loading")
            time.sleep(0.3)
        self._console()  # drop what the page logged while starting
        return self

    def __exit__(self, *exc):
        if self.driver is not None:
            self.driver.quit()

    def _console(self) -> list[dict]:
        return self.driver.get_log("browser")

    def registered_types(self) -> set[str]:
        return set(self.driver.execute_script("return Object.keys(LiteGraph.registered_node_types)"))

    def load_workflow(self, workflow: dict) -> LoadResult:
        raw = self.driver.execute_async_script(_LOAD_SCRIPT, workflow)
        errors = [
            entry["message"]
            for entry in self._console()
            if entry.get("level") == "SEVERE" and entry.get("source") == "javascript"
        ]
        return LoadResult(
            dialogs=raw["dialogs"],
            nodes=raw["nodes"],
            prompt=raw["prompt"],
            widgets_values=raw["widgets_values"],
            console_errors=errors,
            error=raw["error"],
        )

    def open_templates(self, section: str | None = None) -> str:
        """Open the web UI's template browser (the sidebar's Templates button), optionally click a section
        of its list by name; returns the dialog's text."""
        self.driver.execute_script(
            "[...document.querySelectorAll('button, .side-bar-button')]"
            ".find(b => b.innerText.trim() == 'Templates').click()"
        )
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            text = self.driver.execute_script(
                "const d = document.querySelector('.p-dialog'); return d ? d.innerText : ''"
            )
            if text and (section is None or section in text):
                break
            time.sleep(0.3)
        if section:
            self.driver.execute_script(
                "const s = arguments[0]; const d = document.querySelector('.p-dialog');"
                "const item = [...d.querySelectorAll('*')].filter(e => e.children.length === 0 && e.innerText && "
                "e.innerText.trim() === s).pop(); if (item) { item.scrollIntoView(); item.click(); }",
                section,
            )
            time.sleep(1.5)
            text = self.driver.execute_script(
                "const d = document.querySelector('.p-dialog'); return d ? d.innerText : ''"
            )
        return text

    def close_dialogs(self) -> None:
        self.driver.execute_script(
            "document.querySelectorAll('.p-dialog-close-button, .p-dialog-header-close').forEach(b => b.click())"
        )
        time.sleep(0.5)

    def measure(self, workflow: dict) -> dict[int, list[float]]:
        """Load a workflow and return each node's smallest size as the web UI computes it (node id -> [w, h])."""
        self.load_workflow(workflow)
        return {
            int(k): v
            for k, v in self.driver.execute_script(
                "const out = {}; for (const n of window.app.graph.nodes) { const s = n.computeSize();"
                " out[String(n.id)] = [s[0], s[1]]; } return out;"
            ).items()
        }

    def fit_view(self) -> None:
        """Zoom so every node and group is in view, with text drawn at any zoom."""
        self.driver.execute_script(
            "const c = window.app.canvas, g = window.app.graph; c.min_font_size_for_lod = 0;"
            " const boxes = g.nodes.map(n => [n.pos[0], n.pos[1] - 30, n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);"
            " for (const gr of (g._groups || g.groups || [])) { const b = gr._bounding || gr.bounding;"
            "   boxes.push([b[0], b[1], b[0] + b[2], b[1] + b[3]]); }"
            " const b = boxes.reduce((a, x) => [Math.min(a[0], x[0]), Math.min(a[1], x[1]), Math.max(a[2], x[2]),"
            "   Math.max(a[3], x[3])], [1e9, 1e9, -1e9, -1e9]);"
            " c.ds.fitToBounds([b[0] - 40, b[1] - 40, b[2] - b[0] + 80, b[3] - b[1] + 80], {zoom: 0.8});"
            " c.setDirty(true, true); c.draw(true, true);"
        )
        time.sleep(0.5)

    def screenshot(self, path) -> None:
        self.driver.save_screenshot(str(path))


def prompt_as_executed(prompt: dict, node_classes) -> dict:
    """The part of a prompt the server reads: class types, and the inputs each node declares.

    The web UI also sends values of display-only widgets that its own extensions add (e.g. PreviewAny's
    ``preview`` text box), which the server ignores."""
    from .workflows import node_info

    result = {}
    for node_id, entry in prompt.items():
        info = node_info(node_classes[entry["class_type"]]) if entry["class_type"] in node_classes else {}
        declared = set()
        for section in ("required", "optional", "hidden"):
            declared |= set((info.get("input") or {}).get(section) or {})
        inputs = {k: v for k, v in entry["inputs"].items() if k in declared} if declared else dict(entry["inputs"])
        result[node_id] = {"class_type": entry["class_type"], "inputs": inputs}
    return result
