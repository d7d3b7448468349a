"""LoadImage -> RAM / GroundingDINO / SAM loaders -> Local Dense Captioner inside a real ComfyUI, on tiny
random-weight files in the registered model folders; then the guidance into the Realign Attention Patch."""

from __future__ import annotations

import json

import pytest
import torch

from realign_testkit.grounding import install_in_comfyui
from realign_testkit.llm_stub import Reply, StubLLMServer, answer
from realign_testkit.ram import synthetic_image, write_tiny_ram

pytestmark = pytest.mark.comfyui

CAPTIONER = "RealignDiffLocalDenseCaptioner"
PROMPT = "a red book and a yellow pen"
SECRET = "sk-test-COMFYSECRET0123456789"


@pytest.fixture(scope="module")
def files(comfyui):
    """Names of the tiny models (RAM in its own sub-folder: its tag files sit beside it) and the input image."""
    from PIL import Image

    models = install_in_comfyui(comfyui)
    ram = write_tiny_ram(
        comfyui.models_dir / "ram" / "captioner",
        "ram",
        present=("book", "desk", "banana"),
        file_name="realign_ram_captioner",
    )
    models["ram"] = f"captioner/{ram.name}"
    pixels = (synthetic_image(72, 112)[0] * 255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels).save(comfyui.base_dir / "input" / "realign_captioner.png")
    models["image"] = "realign_captioner.png"
    return models


def graph(files, box_threshold=0.0, **captioner_inputs):
    inputs = {
        "image": ["2", 0],
        "prompt": PROMPT,
        "ram": ["3", 0],
        "grounding_dino": ["4", 0],
        "sam": ["5", 0],
        "scorer": "offline",
        "ram_threshold": 0.0,
        "ram_top_k": 20,
        "box_threshold": box_threshold,
        "text_threshold": 0.0,
        "nms_threshold": 0.5,
        "add_prompt_objects": True,
        **captioner_inputs,
    }
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": files["image"]}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 2}},
        "3": {"class_type": "RealignDiffRamLoader", "inputs": {"ckpt_name": files["ram"], "precision": "auto"}},
        "4": {
            "class_type": "RealignDiffGroundingDinoLoader",
            "inputs": {"model_name": files["grounding_dino"], "bert": files["bert"], "config": "auto"},
        },
        "5": {"class_type": "RealignDiffSamLoader", "inputs": {"model_name": files["sam"], "model_type": "auto"}},
        "6": {"class_type": CAPTIONER, "inputs": inputs},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 2]}},
        "8": {"class_type": "MaskToImage", "inputs": {"mask": ["6", 1]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
        "10": {"class_type": "PreviewAny", "inputs": {"source": ["6", 3]}},
    }


@pytest.fixture(scope="module")
def offline(comfyui, files):
    return comfyui.output_of(graph(files), "6")


def _pack_module(comfyui, name):
    """A module of the pack as ComfyUI imported it (under the folder's name)."""
    import importlib

    package = comfyui.nodes.NODE_CLASS_MAPPINGS[CAPTIONER].__module__.rsplit(".nodes.", 1)[0]
    return importlib.import_module(f"{package}.{name}")


def test_every_output_of_the_offline_captioner(comfyui, offline):
    RealignGuidance = _pack_module(comfyui, "realign_diff.guidance").RealignGuidance  # the class the patch checks

    (guidances,), (masks,), (preview,), (text,) = offline
    assert len(guidances) == 2 and all(isinstance(g, RealignGuidance) for g in guidances)
    for g in guidances:
        assert (g.prompt, g.width, g.height, g.source) == (PROMPT, 112, 72, "offline")
        assert g.objects, "thresholds at 0 keep GroundingDINO's boxes"
        by_tag = {o.tag: o for o in g.objects}
        assert set(by_tag) <= {"book", "desk", "pen"}  # banana scores 0 and is not grounded
        if "book" in by_tag:
            assert (by_tag["book"].score, by_tag["book"].caption) == (2.0, "a red book")
        for obj in g.objects:
            assert obj.mask.shape == (72, 112) and obj.box is not None and obj.confidence is not None
    assert masks.shape == (sum(len(g.objects) for g in guidances), 72, 112)
    assert torch.equal(masks[0], guidances[0].objects[0].mask)
    assert preview.shape == (2, 72, 112, 3) and preview.dtype == torch.float32
    data = json.loads(text)
    assert data["format"] == "realign-guidance/1" and len(data["images"]) == 2
    image = data["images"][0]
    assert image["source"] == "offline" and image["scoring"]["status"].startswith("offline scorer")
    tags = {t["tag"]: t for t in image["tags"]}
    assert set(tags) == {"book", "desk", "banana", "pen"}
    assert (tags["pen"]["origin"], tags["pen"]["score"], tags["pen"]["caption"]) == ("prompt", 2.0, "a yellow pen")
    assert tags["desk"]["score"] == 0.5 and tags["banana"]["score"] == 0.0 and not tags["banana"]["grounded"]
    # the UI outputs: the preview and the masks were saved, the JSON shown
    outputs = comfyui.executor.history_result["outputs"]
    assert outputs["7"]["images"] and outputs["9"]["images"]


def test_nothing_found_is_an_empty_guidance_not_an_error(comfyui, files):
    (guidances,), (masks,), (preview,), (text,) = comfyui.output_of(graph(files, box_threshold=1.0), "6")
    assert [g.objects for g in guidances] == [[], []]
    assert masks.shape == (1, 72, 112) and masks.sum() == 0
    assert preview.shape == (2, 72, 112, 3)
    assert all(i["objects"] == [] for i in json.loads(text)["images"])


def test_the_guidance_drives_the_realign_attention_patch(comfyui, files, sd15_checkpoint):
    prompt = graph(files)
    prompt["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sd15_checkpoint}}
    prompt["21"] = {
        "class_type": "RealignDiffAttentionPatch",
        "inputs": {
            "model": ["20", 0],
            "clip": ["20", 1],
            "guidance": ["6", 0],
            "strength": 1.0,
            "schedule": "paper",
            "end_percent": 1.0,
            "conditioning": "prompt only",
        },
    }
    prompt["22"] = {"class_type": "PreviewAny", "inputs": {"source": ["21", 2]}}
    outputs = comfyui.output_of(prompt, "21")
    report = outputs[2][0]
    guidances = comfyui.executor.caches.outputs.get("6")
    guidances = (guidances.outputs if hasattr(guidances, "outputs") else guidances)[0][0]
    for obj in guidances[0].objects:
        assert obj.tag in report


def test_llm_path_in_comfyui_never_shows_the_key(comfyui, files, monkeypatch):
    reply = answer(
        [("book", 2, "a crimson book"), ("desk", 0.5, "a desk"), ("banana", 0, "a banana"), ("pen", 2, "a yellow pen")]
    )
    with StubLLMServer() as server:
        server.default = Reply(content=reply)
        monkeypatch.setenv("REALIGN_DIFF_LLM_BASE_URL", server.url)
        monkeypatch.setenv("REALIGN_DIFF_LLM_API_KEY", SECRET)
        monkeypatch.setenv("REALIGN_DIFF_LLM_CONFIG", str(comfyui.base_dir / "no-such-config.json"))
        prompt = graph(files, scorer="openai-compatible", llm_model="stub-model", llm_base_url="")
        outputs = comfyui.output_of(prompt, "6")
    assert server.requests and server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    (guidances,), _, _, (text,) = outputs
    data = json.loads(text)
    assert data["images"][0]["source"] == "llm:stub-model"
    assert {t["tag"]: t["caption"] for t in data["images"][0]["tags"]}["book"] == "a crimson book"
    assert len(server.requests) == 1  # the second image asks the same question: answered from the cache
    assert data["images"][1]["scoring"]["cached"] is True
    everything = text + json.dumps(prompt) + repr(guidances) + json.dumps(comfyui.executor.history_result, default=str)
    assert SECRET not in everything and "COMFYSECRET" not in everything


def test_cancel_while_the_llm_is_waited_on_stops_the_prompt_within_seconds(comfyui, files, monkeypatch, tmp_path):
    """ComfyUI's own Cancel (interrupt_current_processing) reaches the LLM wait: no timeout waited out, no fallback."""
    import threading
    import time

    import comfy.model_management as mm

    from realign_testkit.comfyui import ExecutionFailed

    config = tmp_path / "realign_diff_llm.json"
    config.write_text(json.dumps({"timeout": 20, "retries": 2, "backoff": 1}))
    asked, pressed = threading.Event(), []

    def slow_answer(request):
        asked.set()
        return Reply(delay=25.0, content=answer([("book", 2, "a red book")]))

    def press_cancel():
        asked.wait(120)
        time.sleep(0.3)
        pressed.append(time.perf_counter())
        mm.interrupt_current_processing(True)

    with StubLLMServer() as server:
        server.default = slow_answer
        monkeypatch.setenv("REALIGN_DIFF_LLM_BASE_URL", server.url)
        monkeypatch.setenv("REALIGN_DIFF_LLM_CONFIG", str(config))
        threading.Thread(target=press_cancel, daemon=True).start()
        with pytest.raises(ExecutionFailed):
            comfyui.run(graph(files, scorer="openai-compatible", llm_model="stub-model", llm_base_url=""))
        stopped = time.perf_counter() - pressed[0]
    print(f"\nCancel in ComfyUI during an LLM request: the prompt stopped {stopped:.2f} s after the interrupt")
    assert stopped < 3.0 and len(server.requests) == 1
    assert any(event == "execution_interrupted" for event, _ in comfyui.executor.status_messages)
    assert comfyui.executor.caches.outputs.get("6") is None  # no offline fallback result was produced


def test_cancel_inside_grounding_dino_stops_the_prompt_before_its_next_layer(comfyui, files):
    """ComfyUI's Cancel pressed while GroundingDINO runs: the captioner stops at the next module, not after it."""
    import time

    import comfy.model_management as mm

    from realign_testkit.comfyui import ExecutionFailed

    pressed, after = [], []

    def press_inside(module, args):
        if type(module).__name__ == "GroundingDINO" and not pressed:
            pressed.append(time.perf_counter())
            mm.interrupt_current_processing(True)
        elif pressed:
            after.append(type(module).__name__)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(press_inside)
    try:
        with pytest.raises(ExecutionFailed):
            comfyui.run(graph(files, scorer="offline"))
        stopped = time.perf_counter() - pressed[0]
    finally:
        handle.remove()
    print(
        f"\nCancel in ComfyUI inside GroundingDINO: the prompt stopped {stopped:.3f} s after the interrupt, "
        f"{len(after)} module call(s) later"
    )
    assert stopped < 3.0 and len(after) <= 1
    assert any(event == "execution_interrupted" for event, _ in comfyui.executor.status_messages)
