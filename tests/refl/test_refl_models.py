"""Building the trainer's models from a single-file checkpoint: shapes from the file, SD-1 only, exact keys."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from realign_diff import sd15_configs, sd15_keys
from realign_diff.refl import models
from realign_diff.refl.models import BaseCheckpointError
from realign_testkit.refl import TINY_UNET


def test_tiny_checkpoint_shapes_are_read_from_the_file(tiny_base):
    base = models.load_base(tiny_base)
    assert base.unet_config["block_out_channels"] == TINY_UNET["block_out_channels"]
    assert base.unet_config["down_block_types"] == ["CrossAttnDownBlock2D", "DownBlock2D"]
    assert base.unet_config["up_block_types"] == ["UpBlock2D", "CrossAttnUpBlock2D"]
    assert base.unet_config["layers_per_block"] == 1
    assert base.unet_config["cross_attention_dim"] == 32
    assert base.vae_config["block_out_channels"] == [32, 32]
    assert base.clip_config["hidden_size"] == 32 and base.clip_config["num_hidden_layers"] == 2
    assert base.vae_scale_factor == 2 and base.latent_multiple == 4


def test_loaded_weights_round_trip_to_the_files_tensors_exactly(tiny_base):
    state = load_file(str(tiny_base))
    base = models.build_models(state)
    unet = sd15_keys.unet_to_ldm(base.unet.state_dict(), base.unet_config)
    vae = sd15_keys.vae_to_ldm(base.vae.state_dict(), base.vae_config)
    clip = sd15_keys.clip_to_ldm(base.text_encoder.state_dict())
    for part in (unet, vae):
        for key, value in part.items():
            assert torch.equal(value.to(state[key].dtype), state[key]), key
    assert set(unet) == {k for k in state if k.startswith(sd15_keys.UNET_PREFIX)}
    assert set(vae) == {k for k in state if k.startswith(sd15_keys.VAE_PREFIX)}
    assert {k for k in clip if not k.endswith("position_ids")} == {
        k for k in state if k.startswith(sd15_keys.CLIP_PREFIX)
    }


def _full_sd15_shapes():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd15_configs.UNET)
    state = sd15_keys.unet_to_ldm(unet.state_dict(), unet.config)
    state[sd15_keys.CLIP_PREFIX + "embeddings.token_embedding.weight"] = torch.empty(49408, 768, device="meta")
    state[sd15_keys.VAE_PREFIX + "quant_conv.weight"] = torch.empty(8, 8, 1, 1, device="meta")
    return state


def test_full_sd15_config_is_recognised_from_shapes():
    state = _full_sd15_shapes()
    models.check_sd1(state)
    config = models.infer_unet_config(state)
    for key in ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types", "cross_attention_dim"):
        assert config[key] == sd15_configs.UNET[key], key
    assert config["mid_block_type"] == "UNetMidBlock2DCrossAttn" and not config["use_linear_projection"]
    assert models.is_full_sd15(config)
    assert models.clip_heads(768) == 12


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.update({"conditioner.embedders.0.transformer.text_model.x": torch.zeros(1)}), "SDXL"),
        (lambda s: s.update({"model.diffusion_model.label_emb.0.0.weight": torch.zeros(1)}), "SDXL"),
        (lambda s: s.update({"cond_stage_model.model.token_embedding.weight": torch.zeros(1)}), "SD-2.x"),
        (
            lambda s: s.update(
                {
                    k: torch.empty(v.shape[0], 1024, device="meta")
                    for k, v in list(s.items())
                    if k.endswith("attn2.to_k.weight")
                }
            ),
            "1024 wide",
        ),
        (
            lambda s: s.update(
                {"model.diffusion_model.input_blocks.0.0.weight": torch.empty(320, 9, 3, 3, device="meta")}
            ),
            "9 input channels",
        ),
        (lambda s: [s.pop(k) for k in list(s) if k.startswith("model.diffusion_model.")], "no UNet tensors"),
        (lambda s: [s.pop(k) for k in list(s) if k.startswith("cond_stage_model.")], "no CLIP text encoder"),
        (
            lambda s: s.update(
                {
                    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.empty(
                        49408, 512, device="meta"
                    )
                }
            ),
            "768-wide text features",
        ),
    ],
)
def test_non_sd15_files_are_refused_with_a_message(edit, message):
    state = _full_sd15_shapes()
    edit(state)
    with pytest.raises(BaseCheckpointError, match=message):
        models.check_sd1(state, "model.safetensors")


def test_read_checkpoint_accepts_ckpt_and_names_bad_files(tmp_path, tiny_base):
    state = {k: v for k, v in list(load_file(str(tiny_base)).items())[:3]}
    torch.save({"state_dict": state}, tmp_path / "m.ckpt")
    assert models.read_checkpoint(tmp_path / "m.ckpt").keys() == state.keys()
    with pytest.raises(BaseCheckpointError, match="not found"):
        models.read_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BaseCheckpointError, match="not a readable"):
        models.read_checkpoint(tmp_path / "junk.safetensors")
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 2)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(BaseCheckpointError, match="no UNet tensors"):
        models.load_base(tmp_path / "lora.safetensors")
