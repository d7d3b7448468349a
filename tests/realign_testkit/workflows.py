"""UI-format workflows to API-format prompts, with a running ComfyUI's node classes.

The converter itself is the core's (``realign_diff.evaluation.workflow_api``, which works from the
``/object_info`` a server gives); here it reads the same information from ``nodes.NODE_CLASS_MAPPINGS``,
as the server's ``/object_info`` builds it. Checked against the real frontend by
``tests/comfyui/workflows/test_browser_core.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from realign_diff.evaluation.workflow_api import (  # noqa: F401  (the test kit's public names)
    FRONTEND_ONLY,
    MODE_ALWAYS,
    MODE_BYPASS,
    MODE_NEVER,
    SEED_NAMES,
    UPLOAD_OPTIONS,
    WIDGET_TYPES,
    MissingNodeTypes,
    StaleWorkflow,
    Widget,
    WorkflowError,
    api_output_nodes,
    has_control_widget,
    is_widget,
    load_workflow,
    ordered_inputs,
    structure_errors,
    widget_layout,
    workflow_to_api,
)


def node_info(node_class: type) -> dict:
    """What ComfyUI's ``/object_info`` says about a node class (the server's own rules)."""
    if hasattr(node_class, "GET_NODE_INFO_V1"):
        return node_class.GET_NODE_INFO_V1()
    inputs = node_class.INPUT_TYPES()
    return {
        "input": inputs,
        "input_order": {key: list(value.keys()) for key, value in inputs.items()},
        "output": list(node_class.RETURN_TYPES),
        "output_name": list(getattr(node_class, "RETURN_NAMES", None) or node_class.RETURN_TYPES),
        "output_node": bool(getattr(node_class, "OUTPUT_NODE", False)),
    }


class ClassInfos(Mapping):
    """``{node type: node_info(class)}`` over ``NODE_CLASS_MAPPINGS``, computed on first use."""

    def __init__(self, node_classes: Mapping[str, type]):
        self.node_classes, self.cache = node_classes, {}

    def __getitem__(self, node_type: str) -> dict:
        if node_type not in self.cache:
            self.cache[node_type] = node_info(self.node_classes[node_type])
        return self.cache[node_type]

    def __contains__(self, node_type) -> bool:
        return node_type in self.node_classes

    def __iter__(self) -> Iterator[str]:
        return iter(self.node_classes)

    def __len__(self) -> int:
        return len(self.node_classes)


def workflow_to_prompt(workflow: dict, node_classes: Mapping[str, type]) -> dict:
    """The API-format prompt the web UI would queue for this UI-format workflow.

    ``node_classes`` is the running ComfyUI's ``nodes.NODE_CLASS_MAPPINGS``."""
    return workflow_to_api(workflow, ClassInfos(node_classes))


def output_node_ids(prompt: dict, node_classes: Mapping[str, type]) -> list[str]:
    """The prompt's output nodes (``OUTPUT_NODE``): what the executor runs the graph for."""
    return api_output_nodes(prompt, ClassInfos(node_classes))
