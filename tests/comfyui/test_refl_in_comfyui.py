"""The trainer's outputs in a real ComfyUI: Load Checkpoint and LoraLoader read them and sample."""

import logging

import pytest
import torch
from safetensors.torch import load_file

from realign_diff import sd15_keys
from realign_diff.refl.trainer import train
from realign_testkit.refl import ToyCaptionScorer, tiny_config, write_prompts

pytestmark = pytest.mark.comfyui


def _train(comfyui, sd15_checkpoint, tmp_path, output, **overrides):
    base = comfyui.models_dir / "checkpoints" / sd15_checkpoint
    prompts = write_prompts(tmp_path / "prompts.txt")
    # the fixture's UNet is one level deep with a full VAE: 64 px gives 8 x 8 latents
    config = tiny_config(
        base,
        prompts,
        output,
        resolution=64,
        num_inference_steps=2,
        refl_step_min=1,
        refl_step_max=1,
        guidance_scale=1.0,
        max_steps=1,
        run_dir=str(tmp_path / "run"),
        **overrides,
    )
    return train(config, ToyCaptionScorer()).output


def _sample(comfyui, ckpt_name, lora_name=None):
    model = ["1", 0]
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red book", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "refl_smoke"}},
    }
    if lora_name:
        prompt["8"] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": ["1", 0],
                "clip": ["1", 1],
                "lora_name": lora_name,
                "strength_model": 1.0,
                "strength_clip": 1.0,
            },
        }
        model = ["8", 0]
    prompt["5"] = {
        "class_type": "KSampler",
        "inputs": {
            "model": model,
            "positive": ["2", 0],
            "negative": ["3", 0],
            "latent_image": ["4", 0],
            "seed": 1,
            "steps": 1,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
        },
    }
    outputs = comfyui.run(prompt)
    assert outputs["7"]["images"][0]["filename"].startswith("refl_smoke")


def test_trained_checkpoint_loads_with_its_new_unet_and_samples(comfyui, sd15_checkpoint, tmp_path):
    name = "realign_refl_trained.safetensors"
    out = _train(comfyui, sd15_checkpoint, tmp_path, comfyui.models_dir / "checkpoints" / name)
    model, clip, vae = comfyui.nodes.CheckpointLoaderSimple().load_checkpoint(name)[:3]
    assert type(model.model.model_config).__name__ == "SD15"
    trained = load_file(str(out))
    base = load_file(str(comfyui.models_dir / "checkpoints" / sd15_checkpoint))
    key = "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    loaded = model.model.diffusion_model.state_dict()[key]
    assert torch.equal(loaded.to(torch.float16).cpu(), trained[sd15_keys.UNET_PREFIX + key])
    assert not torch.equal(trained[sd15_keys.UNET_PREFIX + key], base[sd15_keys.UNET_PREFIX + key])
    _sample(comfyui, name)


def test_trained_lora_keys_are_all_read_by_loraloader_and_it_samples(comfyui, sd15_checkpoint, tmp_path, caplog):
    import comfy.lora
    import comfy.lora_convert
    import comfy.utils

    name = "realign_refl_lora.safetensors"
    out = _train(comfyui, sd15_checkpoint, tmp_path, comfyui.models_dir / "loras" / name, lora=4)
    model = comfyui.nodes.CheckpointLoaderSimple().load_checkpoint(sd15_checkpoint)[0]
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    lora = comfy.lora_convert.convert_lora(comfy.utils.load_torch_file(str(out), safe_load=True))
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in lora}
    assert modules and modules <= key_map.keys()
    # each kohya name lands on the weight our own diffusers -> LDM conversion names
    from realign_diff.sd15_configs import UNET_SMALL

    config = {**UNET_SMALL, "mid_block_type": "UNetMidBlock2DCrossAttn"}
    for module in modules:
        diffusers_name = next(
            n
            for n in _diffusers_weight_names(config)
            if "lora_unet_" + n[: -len(".weight")].replace(".", "_") == module
        )
        ldm = next(iter(sd15_keys.unet_to_ldm({diffusers_name: torch.zeros(1)}, config)))
        assert key_map[module] == "diffusion_model." + ldm[len(sd15_keys.UNET_PREFIX) :]
    with caplog.at_level(logging.WARNING):
        patches = comfy.lora.load_lora(lora, key_map)
    assert "lora key not loaded" not in caplog.text
    assert len(patches) == len(modules)
    _sample(comfyui, sd15_checkpoint, lora_name=name)


def _diffusers_weight_names(config):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return [k for k in UNet2DConditionModel(**config).state_dict() if k.endswith(".weight")]
