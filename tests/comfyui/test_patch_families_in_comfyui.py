"""Realign Attention Patch on SDXL and SD 2.x inside a real ComfyUI.

Models: random-weight checkpoints in the original key layout that CheckpointLoaderSimple itself detects as
SDXL / SD20 (realign_testkit.family_checkpoints: ComfyUI's own model and CLIP classes with a reduced UNet,
full text encoders, written by ComfyUI's saving code). fp8 goes through UNETLoader (Load Diffusion Model)
with weight_dtype fp8_e4m3fn on the same file.
"""

import math

import pytest
import torch

from realign_testkit.pack import PACK_ROOT, load_pack

pytestmark = pytest.mark.comfyui
load_pack()

PROMPT = "a red book and a yellow pen"


@pytest.fixture(scope="module")
def loaded(comfyui):
    """family -> (model, clip) from CheckpointLoaderSimple, loaded once."""
    from realign_testkit.family_checkpoints import link_checkpoint

    cache = {}

    def load(family):
        if family not in cache:
            name = link_checkpoint(comfyui.models_dir / "checkpoints", f"realign_{family}.safetensors", family)
            model, clip, vae = comfyui.nodes.CheckpointLoaderSimple().load_checkpoint(name)[:3]
            assert clip is not None and vae is not None, f"the {family} checkpoint lacks a CLIP or a VAE"
            cache[family] = model, clip
        return cache[family]

    return load


def halves(width, height, prompt=PROMPT, book=2.0):
    from realign_pack.realign_diff.guidance import GuidedObject, RealignGuidance

    left = torch.zeros(height, width)
    left[:, : width // 2] = 1
    objects = [GuidedObject("book", book, "a red book", left), GuidedObject("pen", 0.5, "a yellow pen", 1 - left)]
    return RealignGuidance(prompt, width, height, objects)


def patch(model, clip, guidance, strength, **kwargs):
    from realign_pack.nodes.attention_patch import apply_realign_patch

    guidance = guidance if isinstance(guidance, list) else [guidance]
    patched, positive, report = apply_realign_patch(
        model, clip, guidance, strength, "paper", 1.0, "prompt only", **kwargs
    )
    realign = next(iter(patched.model_options["transformer_options"]["patches_replace"]["attn2"].values())).realign
    return patched, positive, report, realign


_NEGATIVES = {}  # CLIP-G is most of a small model's step time: encode the empty negative once per CLIP


def sample(comfyui, model, positive, clip, latent_shape, steps=2, seed=3):
    if id(clip) not in _NEGATIVES:
        _NEGATIVES[id(clip)] = (clip, comfyui.nodes.CLIPTextEncode().encode(clip, "")[0])
    negative = _NEGATIVES[id(clip)][1]
    latent = {"samples": torch.zeros(latent_shape)}
    return comfyui.nodes.common_ksampler(model, seed, steps, 5.0, "euler", "normal", positive, negative, latent)[0][
        "samples"
    ]


@pytest.mark.parametrize("family, detected", [("sdxl", "SDXL"), ("sd2", "SD20")])
def test_strength_zero_is_unpatched_and_strength_reaches_every_cross_attention_block(comfyui, loaded, family, detected):
    from realign_pack.nodes.attention_patch import cross_attention_blocks

    model, clip = loaded(family)
    assert type(model.model.model_config).__name__ == detected
    plain = sample(comfyui, model, comfyui.nodes.CLIPTextEncode().encode(clip, PROMPT)[0], clip, (1, 4, 8, 8))
    off, positive_off, report, _ = patch(model, clip, halves(64, 64), 0.0)
    assert report.startswith(f"model: {'SDXL' if family == 'sdxl' else 'SD 2.x'}")
    assert torch.equal(sample(comfyui, off, positive_off, clip, (1, 4, 8, 8)), plain)
    on, positive, _, realign = patch(model, clip, halves(64, 64), 2.0)
    strong = sample(comfyui, on, positive, clip, (1, 4, 8, 8))
    assert torch.isfinite(strong).all() and not torch.allclose(strong, plain)
    blocks = set(cross_attention_blocks(model.model.diffusion_model))
    assert len(blocks) == (31 if family == "sdxl" else 4)
    assert realign.called_blocks == blocks and realign.modulated_blocks == blocks


def test_sdxl_keeps_the_pooled_output_and_the_size_conditioning_of_clip_text_encode_sdxl(comfyui, loaded):
    model, clip = loaded("sdxl")
    sizes = comfyui.nodes.NODE_CLASS_MAPPINGS["CLIPTextEncodeSDXL"].execute(
        clip, 1216, 832, 16, 8, 1024, 768, PROMPT, PROMPT
    )[0]
    _, positive, report, _ = patch(model, clip, halves(64, 64), 1.0, size_from=sizes)
    options = positive[0][1]
    assert options["pooled_output"].shape == (1, 1280)
    expected = {"width": 1216, "height": 832, "crop_w": 16, "crop_h": 8, "target_width": 1024, "target_height": 768}
    assert {k: options[k] for k in expected} == expected
    assert "SDXL size conditioning kept: width=1216" in report
    plain = comfyui.nodes.CLIPTextEncode().encode(clip, PROMPT)[0][0][1]["pooled_output"]
    assert torch.equal(options["pooled_output"], plain)  # the same text gives the same pooled output
    adm = model.model.encode_adm(**options, prompt_type="positive")
    assert adm.shape == (1, 2816)


def test_sdxl_non_square_batch_of_two_with_one_guidance_per_image_and_one_for_all(comfyui, loaded):
    """832x1216 scaled down by 4: 208x304 px, a 26x38 latent, layers of 26x38, 13x19 and 7x10."""
    model, clip = loaded("sdxl")
    per_image = [halves(208, 304), halves(208, 304, book=0.5)]
    patched, positive, report, realign = patch(model, clip, per_image, 2.0)
    out = sample(comfyui, patched, positive, clip, (2, 4, 38, 26), steps=1)
    assert out.shape == (2, 4, 38, 26) and torch.isfinite(out).all()
    assert {key[:2] for key in realign._maps} == {(19, 13), (10, 7)}  # the two SDXL cross-attention resolutions
    assert realign.modulated_rows == 2 * realign.modulated_calls  # both images of the positive chunk, every call
    assert not realign._warned
    shared, positive_shared, _, realign_shared = patch(model, clip, halves(208, 304), 2.0)
    assert torch.isfinite(sample(comfyui, shared, positive_shared, clip, (2, 4, 38, 26), steps=1)).all()
    assert "batch" not in realign_shared._warned  # one guidance for all images is not a mismatch


def test_a_hires_pass_at_another_size_resizes_the_masks(comfyui, loaded):
    model, clip = loaded("sdxl")
    patched, positive, report, realign = patch(model, clip, halves(64, 96), 2.0)
    assert "a hires pass" in report and "resized" in report
    sample(comfyui, patched, positive, clip, (1, 4, 24, 16), steps=1)  # 2x the guidance's 64x96
    assert realign.modulated_calls > 0 and {key[:2] for key in realign._maps} == {(12, 8), (6, 4)}
    assert "aspect" not in realign._warned


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "default"])
def test_unet_weights_stored_in_fp8_or_as_loaded(comfyui, loaded, weight_dtype):
    """Load Diffusion Model with weight_dtype fp8_e4m3fn: weights stay fp8, ComfyUI computes in a cast dtype, the
    modulation in float32."""
    from realign_testkit.family_checkpoints import cached_checkpoint

    _, clip = loaded("sdxl")
    target = comfyui.models_dir / "diffusion_models" / "realign_sdxl_unet.safetensors"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(cached_checkpoint("sdxl"))
    model = comfyui.nodes.UNETLoader().load_unet(target.name, weight_dtype)[0]
    weight = model.model.diffusion_model.input_blocks[4][1].transformer_blocks[0].attn2.to_k.weight
    assert weight.dtype == (torch.float8_e4m3fn if weight_dtype == "fp8_e4m3fn" else model.model.get_dtype())
    off, positive_off, _, _ = patch(model, clip, halves(64, 64), 0.0)
    on, positive, _, realign = patch(model, clip, halves(64, 64), 2.0)
    plain = sample(comfyui, off, positive_off, clip, (1, 4, 8, 8), steps=1)
    strong = sample(comfyui, on, positive, clip, (1, 4, 8, 8), steps=1)
    assert torch.isfinite(strong).all() and not torch.allclose(strong, plain)
    assert realign.modulated_calls > 0
    assert all(m.weight.dtype == torch.float32 for m in realign._maps.values())


def _discrete_t(sigma: float, zsnr: bool) -> float:
    """t from σ, independently: SD's scaled-linear β schedule (float64), optionally rescaled to zero terminal SNR
    (Lin et al. 2023), then the nearest of the 1000 σ's in log space."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_bar = torch.cumprod(1 - betas, 0)
    if zsnr:
        root = alphas_bar.sqrt()
        first, last = root[0].clone(), root[-1].clone()
        root = (root - last) * first / (first - last)
        alphas_bar = root**2
        alphas_bar[-1] = 4.8973451890853435e-08  # ComfyUI's finite stand-in for σ = ∞ (σ_max 4096)
    sigmas = ((1 - alphas_bar) / alphas_bar).sqrt()
    return float((sigmas.log() - math.log(sigma)).abs().argmin())


@pytest.mark.parametrize(
    "sampling",
    [
        ("plain", None),
        ("v_prediction", ("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": False})),
        ("v_prediction zsnr", ("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": True})),
        ("edm", ("ModelSamplingContinuousEDM", {"sampling": "v_prediction", "sigma_max": 120.0, "sigma_min": 0.002})),
    ],
    ids=lambda s: s[0],
)
@pytest.mark.parametrize("where", ["before", "after"])
def test_lambda_t_follows_the_models_own_sampling(comfyui, loaded, sampling, where):
    name, node = sampling
    model, clip = loaded("sd2")

    def resample(m):
        return m if node is None else comfyui.nodes.NODE_CLASS_MAPPINGS[node[0]]().patch(m, **node[1])[0]

    patched, positive, _, realign = patch(resample(model) if where == "before" else model, clip, halves(64, 64), 1.0)
    sample(comfyui, resample(patched) if where == "after" else patched, positive, clip, (1, 4, 8, 8), steps=4)
    assert len(realign.strengths) >= 4
    for sigma, strength in realign.strengths:
        if name == "edm":
            expected = 1000 * (math.log(sigma) - math.log(0.002)) / (math.log(120.0) - math.log(0.002))
        else:
            expected = _discrete_t(sigma, zsnr="zsnr" in name)
        assert strength == pytest.approx(min(expected, 1000.0) / 1000.0, abs=2e-3), (sigma, strength, expected)
    if "zsnr" in name:
        assert realign.strengths[0][0] > 1000 and realign.strengths[0][1] == pytest.approx(0.999)


def test_full_size_sdxl_has_seventy_cross_attention_blocks(comfyui):
    import comfy.ops
    import comfy.supported_models
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    from realign_pack.nodes.attention_patch import cross_attention_blocks
    from realign_testkit.family_checkpoints import full_unet_config

    config = full_unet_config("sdxl")
    model_config = comfy.supported_models.SDXL(config)
    unet = UNetModel(**model_config.unet_config, device="meta", operations=comfy.ops.disable_weight_init)
    assert sum(p.numel() for p in unet.parameters()) > 2.5e9
    assert len(cross_attention_blocks(unet)) == 70


def _meta_model(config_class, unet_config):
    import comfy.model_patcher

    with torch.device("meta"):
        return comfy.model_patcher.ModelPatcher(config_class(unet_config).get_model({}, device="meta"), "cpu", "cpu")


@pytest.mark.parametrize("which", ["SDXLRefiner", "SD3", "Flux"])
def test_unsupported_families_are_refused_with_what_is_supported(comfyui, which):
    import comfy.supported_models

    from realign_pack.nodes.patch_families import model_family
    from realign_testkit.family_checkpoints import full_unet_config

    configs = {
        "SDXLRefiner": full_unet_config("refiner"),
        "SD3": {
            "in_channels": 16,
            "patch_size": 2,
            "depth": 2,
            "adm_in_channels": 2048,
            "pos_embed_max_size": 8,
            "context_embedder_config": {
                "target": "torch.nn.Linear",
                "params": {"in_features": 4096, "out_features": 128},
            },
        },
        "Flux": {
            "image_model": "flux",
            "in_channels": 16,
            "patch_size": 2,
            "out_channels": 16,
            "vec_in_dim": 768,
            "context_in_dim": 4096,
            "hidden_size": 128,
            "mlp_ratio": 4.0,
            "num_heads": 2,
            "depth": 1,
            "depth_single_blocks": 1,
            "axes_dim": [16, 24, 24],
            "theta": 10000,
            "qkv_bias": True,
            "guidance_embed": False,
        },
    }
    model = _meta_model(getattr(comfy.supported_models, which), configs[which])
    with pytest.raises(ValueError) as error:
        model_family(model)
    message = str(error.value)
    assert f"this model is {which}" in message and "SD-1.x" in message and "SDXL base" in message
    assert ("refiner" in message) == (which == "SDXLRefiner")


def test_a_clip_of_another_family_is_refused_naming_what_to_load(comfyui, loaded, sd15_checkpoint):
    sdxl_model, sdxl_clip = loaded("sdxl")
    sd15_model, sd15_clip = comfyui.nodes.CheckpointLoaderSimple().load_checkpoint(sd15_checkpoint)[:2]
    with pytest.raises(ValueError, match=r"is SD-1.x CLIP-L \(768 wide\), but the MODEL is SDXL.*DualCLIPLoader"):
        patch(sdxl_model, sd15_clip, halves(64, 64), 1.0)
    with pytest.raises(ValueError, match=r"is SDXL CLIP-L \+ CLIP-G \(2048 wide\), but the MODEL is SD-1.x"):
        patch(sd15_model, sdxl_clip, halves(64, 64), 1.0)


def test_the_hand_mask_workflow_runs_on_an_sdxl_checkpoint(comfyui):
    """workflows/attention_patch_hand_masks.json as shipped, its checkpoint swapped for an SDXL one."""
    from realign_testkit.shipped import fast_settings, prepare_inputs
    from realign_testkit.workflows import load_workflow, workflow_to_prompt

    nodes = comfyui.nodes.NODE_CLASS_MAPPINGS
    prompt = fast_settings(
        workflow_to_prompt(load_workflow(PACK_ROOT / "workflows/attention_patch_hand_masks.json"), nodes)
    )
    loaders = [entry for entry in prompt.values() if entry["class_type"] == "CheckpointLoaderSimple"]
    assert len(loaders) == 1
    loaders[0]["inputs"]["ckpt_name"] = "sd_xl_base_1.0.safetensors"
    prepare_inputs(prompt, comfyui)
    outputs = comfyui.run(prompt)
    patch_id = next(i for i, e in prompt.items() if e["class_type"] == "RealignDiffAttentionPatch")
    report = comfyui.executor.caches.outputs.get(patch_id)
    report = (report.outputs if hasattr(report, "outputs") else report)[2][0]
    assert report.startswith("model: SDXL") and outputs
