"""The pack inside a real ComfyUI: loaded by ComfyUI's own loader, and the test checkpoint is SD-1.5."""

import pytest

pytestmark = pytest.mark.comfyui


def test_pack_loads_through_comfyuis_loader_without_import_failure(comfyui, pack):
    assert comfyui.import_failures == []
    assert comfyui.pack_module_loaded()
    for node_id in pack.NODE_CLASS_MAPPINGS:
        assert node_id in comfyui.nodes.NODE_CLASS_MAPPINGS


def test_random_checkpoint_is_detected_as_sd15_and_samples(comfyui, sd15_checkpoint):
    loader = comfyui.nodes.CheckpointLoaderSimple()
    model, clip, vae = loader.load_checkpoint(sd15_checkpoint)[:3]
    assert type(model.model.model_config).__name__ == "SD15"
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sd15_checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red book", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "seed": 1,
                "steps": 2,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "realign_smoke"}},
    }
    outputs = comfyui.run(prompt)
    assert outputs["7"]["images"][0]["filename"].startswith("realign_smoke")
