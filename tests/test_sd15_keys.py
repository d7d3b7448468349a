import torch

from realign_diff import sd15_configs, sd15_keys


def _numbered(module):
    return {k: torch.full((1,), float(i)) for i, k in enumerate(module.state_dict())}


def _unet(config):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**config)


def test_unet_keys_match_diffusers_own_converter_for_full_sd15():
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = _unet(sd15_configs.UNET)
    state = _numbered(unet)
    ldm = sd15_keys.unet_to_ldm(state, unet.config)
    assert all(k.startswith(sd15_keys.UNET_PREFIX) for k in ldm)
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in ldm  # upsampler of the deepest level
    assert "model.diffusion_model.input_blocks.1.0.in_layers.0.weight" in ldm
    back = convert_ldm_unet_checkpoint(ldm, unet.config)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_unet_round_trip_is_exact_for_small_unet():
    unet = _unet(sd15_configs.UNET_SMALL)
    state = _numbered(unet)
    back = sd15_keys.ldm_to_unet(sd15_keys.unet_to_ldm(state, unet.config), unet.config)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_vae_keys_match_diffusers_and_round_trip():
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    with torch.device("meta"):
        vae = AutoencoderKL(**sd15_configs.VAE)
    state = {k: torch.full(tuple(v.shape), float(i)) for i, (k, v) in enumerate(vae.state_dict().items())}
    ldm = sd15_keys.vae_to_ldm(state, vae.config)
    assert ldm["first_stage_model.encoder.mid.attn_1.q.weight"].dim() == 4  # LDM keeps 1x1 convs
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in ldm
    back = convert_ldm_vae_checkpoint(ldm, vae.config)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    again = sd15_keys.ldm_to_vae(ldm, vae.config)
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)


def test_clip_keys_take_the_single_file_prefix_with_or_without_text_model():
    state = {"embeddings.token_embedding.weight": torch.zeros(1), "text_model.final_layer_norm.bias": torch.ones(1)}
    ldm = sd15_keys.clip_to_ldm(state)
    assert set(ldm) == {
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.bias",
    }
    assert set(sd15_keys.ldm_to_clip(ldm)) == {"embeddings.token_embedding.weight", "final_layer_norm.bias"}
