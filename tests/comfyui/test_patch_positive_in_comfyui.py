"""A patched model sampled with another positive than the patch's own: warned once per run, on the node too."""

import functools
import logging
import struct

import pytest

pytestmark = pytest.mark.comfyui

PROMPT = "a red book on a desk"
NOT_SAMPLED = "never used the Realign Attention Patch's positive CONDITIONING"


def graph(ckpt, positive_from_patch: bool) -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "own": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["ckpt", 1]}},
        "mask": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}},
        "book": {
            "class_type": "RealignDiffGuidanceFromMask",
            "inputs": {"mask": ["mask", 0], "caption": "a red book", "tag": "book", "score": 2.0, "prompt": PROMPT},
        },
        "patch": {
            "class_type": "RealignDiffAttentionPatch",
            "inputs": {
                "model": ["ckpt", 0],
                "clip": ["ckpt", 1],
                "guidance": ["book", 0],
                "strength": 1.0,
                "schedule": "paper",
                "end_percent": 1.0,
                "conditioning": "prompt only",
            },
        },
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["patch", 0],
                "positive": ["patch", 1] if positive_from_patch else ["own", 0],
                "negative": ["neg", 0],
                "latent_image": ["latent", 0],
                "seed": 3,
                "steps": 2,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "positive"}},
    }


def _node_texts(sent) -> list[tuple[str, str]]:
    texts = []
    for _event, data in sent:
        (length,) = struct.unpack(">I", data[:4])
        texts.append((data[4 : 4 + length].decode(), data[4 + length :].decode()))
    return texts


def test_another_positive_is_warned_once_per_run_on_the_node_and_in_the_log(
    comfyui, sd15_checkpoint, caplog, monkeypatch
):
    import server

    sent = []
    channel = type("Channel", (), {})()
    channel.send_sync = lambda event, data, sid=None: sent.append((event, data))
    channel.send_progress_text = functools.partial(server.PromptServer.send_progress_text, channel)  # ComfyUI's own
    monkeypatch.setattr(server.PromptServer, "instance", channel, raising=False)
    prompt = graph(sd15_checkpoint, positive_from_patch=False)
    with caplog.at_level(logging.WARNING):
        comfyui.run(prompt)
    assert caplog.text.count(NOT_SAMPLED) == 1  # once for the run, not once per step
    assert any(node == "patch" and NOT_SAMPLED in text for node, text in _node_texts(sent))

    caplog.clear()
    prompt["sample"]["inputs"]["seed"] = 4  # the same patched model (cached), sampled again: warned again
    with caplog.at_level(logging.WARNING):
        comfyui.run(prompt, reset_cache=False)
    assert caplog.text.count(NOT_SAMPLED) == 1


def test_the_patchs_own_positive_gives_no_warning_and_the_report_says_which_to_use(comfyui, sd15_checkpoint, caplog):
    prompt = graph(sd15_checkpoint, positive_from_patch=True)
    with caplog.at_level(logging.WARNING):
        comfyui.run(prompt)
    assert NOT_SAMPLED not in caplog.text
    report = comfyui.output_of(prompt, "patch")[2][0]
    assert "sample with this node's 'positive' output" in report
