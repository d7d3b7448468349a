"""UI-format workflows (what ComfyUI's web UI saves and loads by drag-and-drop) to API-format prompts
(what ``POST /prompt`` takes), with the node definitions a running ComfyUI gives at ``GET /object_info``.

The conversion follows the web UI's own rules (ComfyUI frontend 1.2x, ``graphToPrompt`` and the node
classes it builds from ``/object_info``), checked against the real frontend by the pack's browser tests:

- A node's widgets are its inputs, in ``input_order`` (required, then optional), whose type has a
  widget (INT, FLOAT, BOOLEAN, STRING, COMBO, ...) and that do not say ``forceInput``; every other
  input is a socket only. ``widgets_values`` holds one value per widget, in that order, whether or
  not the widget's input is linked.
- An INT input named ``seed``/``noise_seed`` (unless it says ``control_after_generate: False``), and
  any INT or COMBO saying ``control_after_generate``, is followed by a control widget ("fixed",
  "randomize", ...) whose value is saved but never sent.
- A COMBO with ``image_upload`` (or video/animated upload) in the required inputs gets an ``upload``
  button widget after all the inputs; its value ("image") is saved but never sent.
- Links are read from each input's ``link``; ``Reroute`` nodes are followed, a ``PrimitiveNode``
  gives its value to the widget it feeds, bypassed nodes (mode 4) pass their input of the same type
  through, muted nodes (mode 2) and frontend-only nodes (Note, MarkdownNote, groups) are left out.

What the web UI forgives silently, this fails on, loudly: a node type ComfyUI does not have
(``MissingNodeTypes``, all of them at once), a ``widgets_values`` list whose length is not the
node's widget count, a link into an input the node does not have, or out of an output it does not
have (``StaleWorkflow``): that is a workflow saved against another version of a node, whose values
the web UI would shift into the wrong widgets.

Pure Python, no ComfyUI import: used by ``evaluation/evaluate.py`` against a server and by the test kit
against node classes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Types the frontend draws as widgets (ComfyWidgets in the frontend); anything else is a socket.
WIDGET_TYPES = frozenset(
    {
        "INT",
        "FLOAT",
        "BOOLEAN",
        "STRING",
        "COMBO",
        "MARKDOWN",
        "IMAGEUPLOAD",
        "FILEUPLOAD",
        "COLOR",
        "IMAGECOMPARE",
        "TREESELECT",
        "MULTISELECT",
        "CHART",
        "GALLERIA",
        "SELECTBUTTON",
        "TEXTAREA",
    }
)
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
# Nodes that exist only in the web UI: never sent to the server.
FRONTEND_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


class WorkflowError(ValueError):
    """A workflow that cannot be turned into a prompt."""


class MissingNodeTypes(WorkflowError):
    def __init__(self, missing: dict[str, list[str]]):
        self.missing = missing
        lines = [f"  {node_type}: node(s) {', '.join(ids)}" for node_type, ids in sorted(missing.items())]
        super().__init__(
            "node types not registered in this ComfyUI (a custom node pack is missing or failed "
            "to import):\n" + "\n".join(lines)
        )


class StaleWorkflow(WorkflowError):
    """The workflow was saved against another version of a node."""


@dataclass(frozen=True)
class Widget:
    name: str
    kind: str  # "value" (sent to the server), "control" (after-generate mode) or "upload" (button)
    type: str


def _spec_type(spec) -> str:
    kind = spec[0]
    if isinstance(kind, (list, tuple)):
        return "COMBO"
    return str(kind)


def _spec_options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def ordered_inputs(info: dict) -> list[tuple[str, tuple, bool]]:
    """(name, spec, optional) for the required then optional inputs, in the frontend's order."""
    inputs, order = info.get("input", {}), info.get("input_order", {})
    result, seen = [], set()
    for section, optional in (("required", False), ("optional", True)):
        specs = inputs.get(section) or {}
        for name in order.get(section, list(specs)):
            if name in specs and name not in seen:
                result.append((name, tuple(specs[name]), optional))
                seen.add(name)
    return result


def is_widget(spec) -> bool:
    return _spec_type(spec) in WIDGET_TYPES and not _spec_options(spec).get("forceInput", False)


def has_control_widget(name: str, spec) -> bool:
    kind, options = _spec_type(spec), _spec_options(spec)
    if kind == "INT":
        control = options.get("control_after_generate")
        return bool(control) if control is not None else name in SEED_NAMES
    return kind == "COMBO" and bool(options.get("control_after_generate"))


def widget_layout(info: dict) -> list[Widget]:
    """The node's widgets in the order the web UI creates (and saves) them."""
    widgets: list[Widget] = []
    upload = None
    for name, spec, optional in ordered_inputs(info):
        if not is_widget(spec):
            continue
        widgets.append(Widget(name, "value", _spec_type(spec)))
        if has_control_widget(name, spec):
            widgets.append(Widget("control_after_generate", "control", "COMBO"))
        if not optional and _spec_type(spec) == "COMBO" and any(_spec_options(spec).get(o) for o in UPLOAD_OPTIONS):
            upload = upload or Widget("upload", "upload", "IMAGEUPLOAD")
    if upload:
        widgets.append(upload)  # added by the frontend under a name outside input_order: after every input
    return widgets


def _links(workflow: dict) -> dict[int, dict]:
    links = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            entry = {k: link[k] for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")}
        else:
            entry = dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), link))
        links[entry["id"]] = entry
    return links


def _compatible(a, b) -> bool:
    """LiteGraph's isValidConnection: equal, a wildcard, or overlapping comma-separated types."""
    if a in (None, "", "*", 0) or b in (None, "", "*", 0):
        return True
    a, b = str(a).upper(), str(b).upper()
    return a == b or bool(set(a.split(",")) & set(b.split(",")))


def _describe(node: dict) -> str:
    title = node.get("title")
    return f"node {node['id']} ({node['type']}{', ' + repr(title) if title else ''})"


class _Converter:
    def __init__(self, workflow: dict, object_info: Mapping[str, dict]):
        if (workflow.get("definitions") or {}).get("subgraphs"):
            raise WorkflowError("workflows with subgraphs are not supported by this converter")
        if (workflow.get("extra") or {}).get("groupNodes"):
            raise WorkflowError("workflows with (legacy) group nodes are not supported by this converter")
        self.nodes = {node["id"]: node for node in workflow.get("nodes", [])}
        self.links = _links(workflow)
        self.object_info = object_info

    def info(self, node_type: str) -> dict:
        return self.object_info[node_type]

    def check_types(self):
        missing: dict[str, list[str]] = {}
        for node in self.nodes.values():
            if node["type"] not in FRONTEND_ONLY and node["type"] not in self.object_info:
                missing.setdefault(node["type"], []).append(str(node["id"]))
        if missing:
            raise MissingNodeTypes(missing)

    def widget_values(self, node: dict) -> dict[str, object]:
        """{input name: value} for the node's value widgets; raises on a count mismatch."""
        layout = widget_layout(self.info(node["type"]))
        saved = node.get("widgets_values")
        if saved is None:
            saved = []
        if isinstance(saved, dict):  # some packs save widgets by name
            unknown = set(saved) - {w.name for w in layout}
            if unknown:
                raise StaleWorkflow(f"{_describe(node)} saves widgets this node does not have: {sorted(unknown)}")
            return {w.name: saved[w.name] for w in layout if w.kind == "value" and w.name in saved}
        saved = list(saved)
        # serialize() leaves holes (null) for widgets that are never saved, e.g. image previews
        while len(saved) > len(layout) and saved[-1] is None:
            saved.pop()
        if len(saved) != len(layout):
            names = [w.name for w in layout]
            raise StaleWorkflow(
                f"{_describe(node)} has {len(saved)} widget values {saved!r} but this ComfyUI's node has "
                f"{len(layout)} widgets {names}: the workflow was saved with another version of the node, and "
                "loading it would put values into the wrong widgets"
            )
        return {w.name: value for w, value in zip(layout, saved) if w.kind == "value"}

    def resolve(self, link_id, want_type, seen=()):
        """Follow a link upstream through reroutes and bypassed nodes, as the frontend's ``resolveInput``.

        Returns ("link", node_id, slot), ("value", value) for a primitive, or None (nothing connected)."""
        link = self.links.get(link_id)
        if link is None:
            raise StaleWorkflow(f"link {link_id} is used by an input but missing from the workflow's links")
        origin = self.nodes.get(link["origin_id"])
        if origin is None:
            raise StaleWorkflow(f"link {link_id} comes from node {link['origin_id']}, which is not in the workflow")
        if (origin["id"], link["origin_slot"]) in seen:
            raise WorkflowError(f"circular links through {_describe(origin)}")
        seen = (*seen, (origin["id"], link["origin_slot"]))
        slot = int(link["origin_slot"])
        if origin["type"] == "PrimitiveNode":
            values = origin.get("widgets_values") or []
            return ("value", values[0]) if values else None
        if origin["type"] == "Reroute" or origin.get("mode", MODE_ALWAYS) == MODE_BYPASS:
            inputs = origin.get("inputs") or []
            index = 0 if origin["type"] == "Reroute" else self.bypass_input(origin, slot, want_type)
            if index is None or index >= len(inputs) or inputs[index].get("link") is None:
                return None
            return self.resolve(inputs[index]["link"], want_type, seen)
        if origin["type"] in FRONTEND_ONLY:
            return None
        outputs = self.info(origin["type"]).get("output", [])
        if not 0 <= slot < len(outputs):
            raise StaleWorkflow(
                f"link {link_id} leaves output {slot} of {_describe(origin)}, which has only "
                f"{len(outputs)} outputs {list(outputs)}"
            )
        # a muted origin is sent as a link here and dropped with the whole input at the end, as the frontend does
        return ("link", str(origin["id"]), slot)

    def bypass_input(self, node: dict, slot: int, want_type) -> int | None:
        """The input a bypassed node passes to its output ``slot`` (the frontend's getBypassSlotIndex)."""
        inputs = node.get("inputs") or []
        outputs = node.get("outputs") or []
        out_type = outputs[slot].get("type") if slot < len(outputs) else want_type
        if want_type in ("*", "", None):
            return slot if len(inputs) > slot else 0
        if (
            slot < len(inputs)
            and _compatible(inputs[slot].get("type"), out_type)
            and _compatible(inputs[slot].get("type"), want_type)
        ):
            return slot
        for index, entry in enumerate(inputs):
            if entry.get("type") == want_type:
                return index
        for index, entry in enumerate(inputs):
            if _compatible(entry.get("type"), out_type) and _compatible(entry.get("type"), want_type):
                return index
        return None

    def convert_node(self, node: dict) -> dict:
        info = self.info(node["type"])
        inputs: dict[str, object] = {}
        for name, value in self.widget_values(node).items():
            inputs[name] = {"__value__": value} if isinstance(value, list) else value
        known = {name for name, _spec, _opt in ordered_inputs(info)}
        for slot in node.get("inputs") or []:
            link_id = slot.get("link")
            name = (slot.get("widget") or {}).get("name") or slot["name"]
            if link_id is None:
                continue
            if name not in known:
                raise StaleWorkflow(
                    f"{_describe(node)} has a link into input {name!r}, which this node does not have "
                    f"(inputs: {sorted(known)})"
                )
            resolved = self.resolve(link_id, slot.get("type"))
            if resolved is None:  # nothing behind the link: a widget keeps its own value
                continue
            if resolved[0] == "value":
                inputs[name] = {"__value__": resolved[1]} if isinstance(resolved[1], list) else resolved[1]
            else:
                inputs[name] = [resolved[1], resolved[2]]
        entry = {"class_type": node["type"], "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        return entry

    def convert(self) -> dict:
        self.check_types()
        prompt = {}
        for node in sorted(self.nodes.values(), key=lambda n: n["id"]):
            if node["type"] in FRONTEND_ONLY or node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS):
                continue
            prompt[str(node["id"])] = self.convert_node(node)
        for entry in prompt.values():  # the frontend drops links from nodes that are not sent
            for name, value in list(entry["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] not in prompt:
                    del entry["inputs"][name]
        return prompt


def workflow_to_api(workflow: dict, object_info: Mapping[str, dict]) -> dict:
    """The API-format prompt the web UI would queue for this UI-format workflow.

    ``object_info``: node type -> what ComfyUI's ``GET /object_info`` says about it (its ``input``,
    ``input_order``, ``output``, ``output_node``), from a running server or built from the node classes."""
    return _Converter(workflow, object_info).convert()


def api_output_nodes(prompt: dict, object_info: Mapping[str, dict]) -> list[str]:
    """The prompt's output nodes (``output_node``): what ComfyUI runs the graph for."""
    return [node_id for node_id, entry in prompt.items() if object_info[entry["class_type"]].get("output_node")]


def structure_errors(workflow: dict) -> list[str]:
    """What is inconsistent in a UI-format workflow's own bookkeeping (no node definitions needed):
    duplicate ids, links to missing nodes or slots, inputs and outputs that disagree with the link list."""
    errors = []
    nodes = workflow.get("nodes") or []
    by_id = {}
    for node in nodes:
        if node.get("id") in by_id:
            errors.append(f"duplicate node id {node.get('id')}")
        by_id[node.get("id")] = node
    links = _links(workflow)
    if len(links) != len(workflow.get("links") or []):
        errors.append("duplicate link ids")
    if by_id and workflow.get("last_node_id", 0) < max(by_id):
        errors.append("last_node_id is below the largest node id")
    if links and workflow.get("last_link_id", 0) < max(links):
        errors.append("last_link_id is below the largest link id")
    for link_id, link in links.items():
        origin, target = by_id.get(link["origin_id"]), by_id.get(link["target_id"])
        if origin is None or target is None:
            errors.append(f"link {link_id} joins a missing node")
            continue
        outputs, inputs = origin.get("outputs") or [], target.get("inputs") or []
        if not 0 <= link["origin_slot"] < len(outputs) or link_id not in (
            outputs[link["origin_slot"]].get("links") or []
        ):
            errors.append(f"link {link_id} is not listed on output {link['origin_slot']} of node {origin['id']}")
        if not any(slot.get("link") == link_id for slot in inputs):
            errors.append(f"link {link_id} is not the link of any input of node {target['id']}")
    for node in nodes:
        for slot in node.get("inputs") or []:
            if slot.get("link") is not None and slot["link"] not in links:
                errors.append(f"node {node['id']} input {slot.get('name')!r} uses missing link {slot['link']}")
        for index, slot in enumerate(node.get("outputs") or []):
            for link_id in slot.get("links") or []:
                if link_id not in links or links[link_id]["origin_id"] != node["id"]:
                    errors.append(f"node {node['id']} output {index} lists link {link_id} that does not leave it")
    return errors


def load_workflow(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
