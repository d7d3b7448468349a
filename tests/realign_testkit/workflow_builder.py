"""Write UI-format workflows from the real node definitions, so shipped workflows are never hand-counted.

    g = GraphBuilder(nodes.NODE_CLASS_MAPPINGS)
    ckpt = g.add("CheckpointLoaderSimple", (40, 120), ckpt_name="v1-5-pruned-emaonly.safetensors")
    enc = g.add("CLIPTextEncode", (420, 80), text="a red book")
    g.connect(ckpt, "CLIP", enc, "clip")
    g.note("Put the checkpoint in models/checkpoints", (40, 0), (300, 80))
    workflow = g.to_json()

Widget values are laid out as the web UI saves them (``workflows.widget_layout``): defaults from the
node's spec for widgets not given, the seed's control widget ("fixed" unless given), the upload button.
Inputs are listed the way the frontend builds them (sockets first, then one ``widget`` input per widget).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from .workflows import node_info, ordered_inputs, widget_layout

NODE_WIDTH = 320
TITLE_HEIGHT, SLOT_HEIGHT, WIDGET_HEIGHT = 30, 22, 26
TALL_WIDGET = {"STRING_MULTILINE": 110}


@dataclass
class NodeRef:
    id: int
    type: str
    data: dict = field(repr=False)


class GraphBuilder:
    def __init__(self, node_classes: Mapping[str, type]):
        self.node_classes = node_classes
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []
        self._infos: dict[str, dict] = {}
        self.explicit_sizes: set[int] = set()  # nodes whose size was given, kept if larger than measured

    def info(self, node_type: str) -> dict:
        if node_type not in self._infos:
            self._infos[node_type] = node_info(self.node_classes[node_type])
        return self._infos[node_type]

    def _next_id(self) -> int:
        return len(self.nodes) + 1

    def add(
        self,
        node_type: str,
        pos,
        size=None,
        title: str | None = None,
        mode: int = 0,
        color: str | None = None,
        **widgets,
    ) -> NodeRef:
        info = self.info(node_type)
        layout = widget_layout(info)
        specs = {name: spec for name, spec, _opt in ordered_inputs(info)}
        unknown = set(widgets) - {w.name for w in layout}
        if unknown:
            raise KeyError(f"{node_type} has no widget(s) {sorted(unknown)}; widgets: {[w.name for w in layout]}")
        values = []
        for widget in layout:
            if widget.kind == "control":
                values.append(widgets.get(widget.name, "fixed"))
            elif widget.kind == "upload":
                values.append("image")
            elif widget.name in widgets:
                values.append(widgets[widget.name])
            else:
                values.append(_default(node_type, widget.name, specs[widget.name]))
        sockets, widget_inputs = [], []
        widget_names = {w.name for w in layout if w.kind == "value"}
        for name, spec, optional in ordered_inputs(info):
            kind = "COMBO" if isinstance(spec[0], (list, tuple)) else spec[0]
            entry = {"name": name, "type": kind, "link": None}
            if optional:
                entry["shape"] = 7
            if name in widget_names:
                entry["widget"] = {"name": name}
                widget_inputs.append(entry)
            else:
                sockets.append(entry)
        outputs = [
            {"name": name, "type": kind, "links": []}
            for name, kind in zip(info.get("output_name") or info["output"], info["output"])
        ]
        data = {
            "id": self._next_id(),
            "type": node_type,
            "pos": [float(pos[0]), float(pos[1])],
            "size": list(size) if size else _estimate_size(sockets, outputs, layout, specs),
            "flags": {},
            "order": len(self.nodes),
            "mode": mode,
            "inputs": sockets + widget_inputs,
            "outputs": outputs,
            "properties": {"Node name for S&R": node_type},
            "widgets_values": values,
        }
        if title:
            data["title"] = title
        if color:
            data["color"], data["bgcolor"] = color, _darker(color)
        if size:
            self.explicit_sizes.add(data["id"])
        self.nodes.append(data)
        return NodeRef(data["id"], node_type, data)

    def note(self, text: str, pos, size=(380, 160), markdown: bool = True, title: str | None = None) -> NodeRef:
        node_type = "MarkdownNote" if markdown else "Note"
        data = {
            "id": self._next_id(),
            "type": node_type,
            "pos": [float(pos[0]), float(pos[1])],
            "size": list(size),
            "flags": {},
            "order": len(self.nodes),
            "mode": 0,
            "inputs": [],
            "outputs": [],
            "properties": {},
            "widgets_values": [text],
            "color": "#432",
            "bgcolor": "#653",
        }
        if title:
            data["title"] = title
        self.explicit_sizes.add(data["id"])
        self.nodes.append(data)
        return NodeRef(data["id"], node_type, data)

    def reroute(self, pos) -> NodeRef:
        data = {
            "id": self._next_id(),
            "type": "Reroute",
            "pos": [float(pos[0]), float(pos[1])],
            "size": [75, 26],
            "flags": {},
            "order": len(self.nodes),
            "mode": 0,
            "inputs": [{"name": "", "type": "*", "link": None}],
            "outputs": [{"name": "", "type": "*", "links": []}],
            "properties": {"showOutputText": False, "horizontal": False},
        }
        self.nodes.append(data)
        return NodeRef(data["id"], "Reroute", data)

    def primitive(self, pos, value, control: str | None = None, title: str | None = None) -> NodeRef:
        """A web-UI PrimitiveNode; connect its output 0 to a widget input."""
        data = {
            "id": self._next_id(),
            "type": "PrimitiveNode",
            "pos": [float(pos[0]), float(pos[1])],
            "size": [260, 82],
            "flags": {},
            "order": len(self.nodes),
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": "connect to widget input", "type": "*", "links": []}],
            "properties": {"Run widget replace on values": False},
            "widgets_values": [value] + ([control] if control else []),
        }
        if title:
            data["title"] = title
        self.nodes.append(data)
        return NodeRef(data["id"], "PrimitiveNode", data)

    def connect(self, src: NodeRef, output, dst: NodeRef, input_name: str) -> int:
        outputs = src.data["outputs"]
        if isinstance(output, int):
            slot = output
        else:
            names = [o["name"] for o in outputs]
            slot = names.index(output) if output in names else [o["type"] for o in outputs].index(output)
        inputs = dst.data["inputs"]
        target = next((i for i, entry in enumerate(inputs) if entry["name"] == input_name), None)
        if target is None:
            raise KeyError(f"{dst.type} has no input {input_name!r}: {[e['name'] for e in inputs]}")
        link_type = inputs[target]["type"] if src.type in ("Reroute", "PrimitiveNode") else outputs[slot]["type"]
        link_id = len(self.links) + 1
        self.links.append([link_id, src.id, slot, dst.id, target, link_type])
        outputs[slot]["links"].append(link_id)
        if src.type == "PrimitiveNode":
            outputs[slot]["type"] = link_type
            outputs[slot]["name"] = inputs[target]["type"]
            outputs[slot]["widget"] = {"name": input_name}
            # the web UI copies the primitive's value into the widget it drives
            names = [w.name for w in widget_layout(self.info(dst.type))]
            if input_name in names:
                dst.data["widgets_values"][names.index(input_name)] = src.data["widgets_values"][0]
        if src.type == "Reroute":
            outputs[slot]["type"] = link_type
        inputs[target]["link"] = link_id
        if dst.type == "Reroute":
            inputs[target]["type"] = link_type
            dst.data["outputs"][0]["type"] = link_type
        return link_id

    def group(self, title: str, bounding, color: str = "#3f789e") -> None:
        self.groups.append(
            {
                "id": len(self.groups) + 1,
                "title": title,
                "bounding": [float(v) for v in bounding],
                "color": color,
                "font_size": 24,
                "flags": {},
            }
        )

    def apply_sizes(self, measured: dict[int, list[float]], min_width: float = 300.0) -> None:
        """Sizes as the web UI computes them (``WebUI.measure``), at least ``min_width`` wide so titles and
        combo values are not cut; a given size wins where it is larger."""
        for node in self.nodes:
            if node["id"] not in measured:
                continue
            size = [max(float(measured[node["id"]][0]), min_width), float(measured[node["id"]][1])]
            if node["id"] in self.explicit_sizes:
                size = [max(a, b) for a, b in zip(size, node["size"])]
            node["size"] = [round(v) for v in size]

    def layout(
        self, columns: list[list[NodeRef]], origin=(0.0, 0.0), gap=(60.0, 40.0), offsets: dict[int, float] | None = None
    ) -> float:
        """Place nodes in columns, each stacked top-down in list order; ``offsets`` shifts a column down.
        Returns the bottom of the lowest column."""
        x, bottom = origin[0], origin[1]
        for index, column in enumerate(columns):
            y = origin[1] + (offsets or {}).get(index, 0.0)
            for ref in column:
                ref.data["pos"] = [round(x), round(y + TITLE_HEIGHT)]
                y += ref.data["size"][1] + TITLE_HEIGHT + gap[1]
            bottom = max(bottom, y)
            x += max(ref.data["size"][0] for ref in column) + gap[0]
        return bottom

    def group_around(self, title: str, members: list[NodeRef], color: str = "#3f789e", pad: float = 20.0) -> None:
        left = min(m.data["pos"][0] for m in members) - pad
        top = min(m.data["pos"][1] - TITLE_HEIGHT for m in members) - pad - 40
        right = max(m.data["pos"][0] + m.data["size"][0] for m in members) + pad
        bottom = max(m.data["pos"][1] + m.data["size"][1] for m in members) + pad
        self.group(title, (left, top, right - left, bottom - top), color)

    def to_json(self) -> dict:
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, repr([n["type"] for n in self.nodes]))),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {"ds": {"scale": 0.75, "offset": [0, 0]}},
            "version": 0.4,
        }


def _default(node_type: str, name: str, spec):
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    if isinstance(spec[0], (list, tuple)):
        if spec[0]:
            return spec[0][0]
    elif spec[0] == "COMBO" and options.get("options"):
        return options["options"][0]
    elif spec[0] == "INT":
        return options.get("min", 0)
    elif spec[0] == "FLOAT":
        return options.get("min", 0.0)
    elif spec[0] == "BOOLEAN":
        return False
    elif spec[0] == "STRING":
        return ""
    raise ValueError(f"{node_type}.{name}: no default value; give one")


def _estimate_size(sockets, outputs, layout, specs) -> list[float]:
    height = TITLE_HEIGHT - 10 + SLOT_HEIGHT * max(len(sockets), len(outputs), 0)
    for widget in layout:
        if (
            widget.kind == "value"
            and widget.type == "STRING"
            and (specs[widget.name][1] if len(specs[widget.name]) > 1 else {}).get("multiline")
        ):
            height += TALL_WIDGET["STRING_MULTILINE"]
        else:
            height += WIDGET_HEIGHT
    return [float(NODE_WIDTH), float(max(height, 60))]


def _darker(color: str) -> str:
    value = color.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return f"#{int(r * 0.7):02x}{int(g * 0.7):02x}{int(b * 0.7):02x}"
