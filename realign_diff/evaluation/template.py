"""One evaluation workflow as a template: the API prompt of the workflow with, per run, the prompt text and the
seed substituted, and two ``SaveImage`` nodes added on the coarse and the realigned image so the server keeps
them. Nodes are named by id or by title (the two-pass workflow's "Prompt", "Seed (both passes)", "Coarse image",
"Realigned image")."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass

from .workflow_api import MissingNodeTypes, WorkflowError, workflow_to_api

TEXT_INPUTS = ("value", "text", "prompt", "string", "text_g")
SEED_INPUTS = ("seed", "noise_seed", "value")
KINDS = ("coarse", "realigned")


def _title(entry: dict) -> str:
    return str((entry.get("_meta") or {}).get("title") or "")


def find_node(prompt: dict, spec: str, what: str, flag: str) -> str:
    """The node whose id is ``spec``, or whose title is ``spec`` (case-insensitive), or starts with it."""
    if spec in prompt:
        return spec
    for match in (lambda t: t == spec.lower(), lambda t: t.startswith(spec.lower())):
        found = [node_id for node_id, entry in prompt.items() if match(_title(entry).lower())]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise WorkflowError(f"{len(found)} nodes titled {spec!r} ({', '.join(found)}): pass {flag} with a node id")
    titles = sorted({_title(e) for e in prompt.values() if _title(e)})
    raise WorkflowError(
        f"no node with id or title {spec!r} for the {what} in this workflow: title that node {spec!r} or pass {flag} "
        f"with its id or title (titles here: {', '.join(titles) or 'none'})"
    )


def _literal_input(entry: dict, names, kind: type) -> str | None:
    for name in names:
        value = entry["inputs"].get(name)
        if isinstance(value, kind) and not isinstance(value, bool):
            return name
    return None


@dataclass
class Template:
    prompt: dict  # the API prompt, SaveImage nodes included
    text_target: tuple[str, str]
    seed_targets: list[tuple[str, str]]
    save_nodes: dict[str, str]  # kind -> id of the SaveImage node added

    def for_run(self, text: str, seed: int, name: str) -> dict:
        prompt = copy.deepcopy(self.prompt)
        node, name_in = self.text_target
        prompt[node]["inputs"][name_in] = text
        for node, name_in in self.seed_targets:
            prompt[node]["inputs"][name_in] = int(seed)
        for kind, node in self.save_nodes.items():
            prompt[node]["inputs"]["filename_prefix"] = f"realign_eval/{name}_{kind}"
        return prompt


def _image_slot(prompt: dict, node: str, object_info: dict, what: str) -> int:
    outputs = list(object_info.get(prompt[node]["class_type"], {}).get("output") or [])
    if "IMAGE" not in outputs:
        raise WorkflowError(
            f"node {node} ({_title(prompt[node]) or prompt[node]['class_type']}) for the {what} has no IMAGE output"
        )
    return outputs.index("IMAGE")


def build_template(workflow: dict, object_info: dict, nodes: dict[str, str]) -> Template:
    """``nodes``: {"prompt": spec, "seed": spec, "coarse": spec, "realigned": spec} (ids or titles)."""
    prompt = workflow_to_api(workflow, object_info) if "nodes" in workflow else copy.deepcopy(workflow)
    missing: dict[str, list[str]] = {}
    for node_id, entry in prompt.items():
        if entry.get("class_type") not in object_info:
            missing.setdefault(str(entry.get("class_type")), []).append(str(node_id))
    if missing:
        raise MissingNodeTypes(missing)
    text_node = find_node(prompt, nodes["prompt"], "prompt text", "--prompt-node")
    text_input = _literal_input(prompt[text_node], TEXT_INPUTS, str)
    if text_input is None:
        raise WorkflowError(f"node {text_node} ({_title(prompt[text_node])}) has no text widget to put the prompt in")
    try:
        seed_nodes = [find_node(prompt, nodes["seed"], "seed", "--seed-node")]
    except WorkflowError:  # no seed node: every sampler's own seed
        seed_nodes = [n for n, e in prompt.items() if _literal_input(e, SEED_INPUTS[:2], int)]
    seeds = [(n, _literal_input(prompt[n], SEED_INPUTS, int)) for n in seed_nodes]
    if not seeds or any(name is None for _, name in seeds):
        raise WorkflowError(f"no seed to set: title the seed node {nodes['seed']!r} or pass --seed-node")
    if "SaveImage" not in object_info:
        raise WorkflowError("this ComfyUI has no SaveImage node")
    start = max([int(n) for n in prompt if str(n).isdigit()] or [0]) + 1000
    saves = {}
    for offset, kind in enumerate(KINDS):
        source = find_node(prompt, nodes[kind], f"{kind} image", f"--{kind}-node")
        slot = _image_slot(prompt, source, object_info, f"{kind} image")
        saves[kind] = str(start + offset)
        prompt[saves[kind]] = {
            "class_type": "SaveImage",
            "inputs": {"images": [source, slot], "filename_prefix": f"realign_eval/{kind}"},
            "_meta": {"title": f"evaluation: {kind} image"},
        }
    _show_attention_json(prompt, object_info, start + len(KINDS))
    return Template(prompt, (text_node, text_input), seeds, saves)


def _show_attention_json(prompt: dict, object_info: dict, start: int) -> None:
    """A ``PreviewAny`` on every "json" output of an attention node, so its data (the inside-mask shares) is in the
    run's history, as the other outputs are."""
    if "PreviewAny" not in object_info:
        return
    added = 0
    for node_id, entry in list(prompt.items()):
        names = list(object_info[entry["class_type"]].get("output_name") or [])
        if "attention" not in (entry["class_type"] + _title(entry)).lower() or "json" not in names:
            continue
        prompt[str(start + added)] = {
            "class_type": "PreviewAny",
            "inputs": {"source": [node_id, names.index("json")]},
            "_meta": {"title": f"evaluation: json of {_title(entry) or entry['class_type']}"},
        }
        added += 1


# ---------------------------------------------------------------- the attention share, when the workflow records it
_SHARE_KEY = re.compile(r"inside|share", re.IGNORECASE)
_OVERALL = ("overall", "mean", "all", "total", "share", "inside_share", "inside_mask_share")


def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        for key in _OVERALL:
            if key in value and _number(value[key]) is not None:
                return _number(value[key])
    if isinstance(value, list) and value and all(_number(v) is not None for v in value):
        return sum(_number(v) for v in value) / len(value)
    return None


def _walk(value, path: str, label: str):
    """(path, value, label) of every dict entry under ``value``, JSON text parsed; ``label``: the nearest "label"."""
    if isinstance(value, str) and value.strip()[:1] in "{[":
        try:
            value = json.loads(value)
        except ValueError:
            return
    if isinstance(value, dict):
        label = str(value["label"]) if isinstance(value.get("label"), str) else label
        for key, item in value.items():
            yield f"{path}/{key}", item, label
            yield from _walk(item, f"{path}/{key}", label)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, path, label)


def _kind(text: str) -> str | None:
    text = text.lower()
    if "coarse" in text:
        return "coarse"
    if any(word in text for word in ("realign", "fine", "patched")):
        return "realigned"
    return None


def attention_shares(outputs: dict, prompt: dict) -> dict[str, float]:
    """The inside-mask attention share of each pass, from the run's outputs, when a node reports one: numbers (or
    lists of numbers, or objects with an "overall" entry) under keys naming "inside" or "share", at any depth of its
    output or of JSON text in it; several at the same level (one per object) are averaged. The pass comes from the
    keys, the JSON's "label" or the node's title ("coarse", "realigned"), else it is the realigned one. Empty when
    none."""
    found: dict[str, dict[tuple[int, int], list[float]]] = {}
    for node_id, output in outputs.items():
        title = _title(prompt.get(node_id) or {})
        for path, value, label in _walk(output, "", ""):
            segments = path.strip("/").split("/")
            number = _number(value) if any(_SHARE_KEY.search(s) for s in segments) else None
            if number is None:
                continue
            kind = _kind(path) or _kind(label) or _kind(title) or "realigned"
            leaf = segments[-1].lower()
            rank = (0 if leaf in _OVERALL or _SHARE_KEY.search(leaf) else 1, len(segments))
            found.setdefault(kind, {}).setdefault(rank, []).append(number)
    return {kind: sum(v) / len(v) for kind, ranks in found.items() for v in [ranks[min(ranks)]]}
