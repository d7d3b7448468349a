"""Realign Attention Patch inside a real ComfyUI, sampling a random-weight SD-1.5 checkpoint."""

import pytest
import torch

from realign_testkit.pack import load_pack

pytestmark = pytest.mark.comfyui
load_pack()  # nodes' helpers are imported as ``realign_pack.nodes...`` below

PROMPT = "a red book and a yellow pen"


def graph(ckpt, strength, conditioning="prompt only", patched=True, width=16, height=12, batch=2):
    """API prompt: two hand-made objects (left/right half masks) -> patch -> KSampler."""
    nodes = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["ckpt", 1]}},
        "empty": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": width * 8, "height": height * 8}},
        "half": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": width * 4, "height": height * 8}},
        "left": {
            "class_type": "MaskComposite",
            "inputs": {"destination": ["empty", 0], "source": ["half", 0], "x": 0, "y": 0, "operation": "add"},
        },
        "right": {
            "class_type": "MaskComposite",
            "inputs": {"destination": ["empty", 0], "source": ["half", 0], "x": width * 4, "y": 0, "operation": "add"},
        },
        "book": {
            "class_type": "RealignDiffGuidanceFromMask",
            "inputs": {"mask": ["left", 0], "caption": "a red book", "tag": "book", "score": 2.0, "prompt": PROMPT},
        },
        "pen": {
            "class_type": "RealignDiffGuidanceFromMask",
            "inputs": {
                "mask": ["right", 0],
                "caption": "a yellow pen",
                "tag": "pen",
                "score": 0.5,
                "prompt": "",
                "guidance": ["book", 0],
            },
        },
        "patch": {
            "class_type": "RealignDiffAttentionPatch",
            "inputs": {
                "model": ["ckpt", 0],
                "clip": ["ckpt", 1],
                "guidance": ["pen", 0],
                "strength": strength,
                "schedule": "paper",
                "end_percent": 1.0,
                "conditioning": conditioning,
            },
        },
        "latent": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width * 8, "height": height * 8, "batch_size": batch},
        },
        "sample": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["patch", 0] if patched else ["ckpt", 0],
                "positive": ["patch", 1] if patched else ["pos", 0],
                "negative": ["neg", 0],
                "latent_image": ["latent", 0],
                "seed": 7,
                "steps": 3,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "realign_test"}},
        "report": {"class_type": "PreviewAny", "inputs": {"source": ["patch", 2]}},
    }
    if not patched:
        del nodes["report"], nodes["patch"], nodes["book"], nodes["pen"]
    return nodes


def latents(comfyui, prompt):
    return comfyui.output_of(prompt, "sample")[0][0]["samples"]


def realign_of(comfyui, prompt):
    model = comfyui.executor.caches.outputs.get("patch")[0][0]
    replaces = model.model_options["transformer_options"]["patches_replace"]["attn2"]
    return model, next(iter(replaces.values())).realign


def test_strength_zero_samples_exactly_like_the_unpatched_model(comfyui, sd15_checkpoint):
    plain = latents(comfyui, graph(sd15_checkpoint, 0.0, patched=False))
    zero = latents(comfyui, graph(sd15_checkpoint, 0.0))
    assert torch.equal(plain, zero)


def test_strength_changes_the_sample_and_reaches_every_cross_attention_block(comfyui, sd15_checkpoint):
    from realign_pack.nodes.attention_patch import cross_attention_blocks

    plain = latents(comfyui, graph(sd15_checkpoint, 0.0, patched=False))
    prompt = graph(sd15_checkpoint, 2.0, conditioning="prompt + local captions")
    strong = latents(comfyui, prompt)
    assert strong.shape == plain.shape == (2, 4, 12, 16)
    assert not torch.allclose(strong, plain)
    model, realign = realign_of(comfyui, prompt)
    blocks = set(cross_attention_blocks(model.model.diffusion_model))
    assert blocks and realign.called_blocks == blocks
    assert realign.modulated_calls > 0


def test_report_names_each_objects_tokens(comfyui, sd15_checkpoint):
    prompt = graph(sd15_checkpoint, 1.0)
    report = comfyui.output_of(prompt, "patch")[2][0]
    assert "book (score 2" in report and "'red book' (by caption)" in report
    assert "pen (score 0.5" in report and "'yellow pen' (by caption)" in report


def test_full_size_sd15_unet_has_sixteen_cross_attention_blocks(comfyui):
    import comfy.model_detection
    import comfy.ops
    from diffusers import UNet2DConditionModel

    from realign_pack.nodes.attention_patch import cross_attention_blocks
    from realign_pack.realign_diff import sd15_configs, sd15_keys

    with torch.device("meta"):
        diffusers_unet = UNet2DConditionModel(**sd15_configs.UNET)
    ldm = sd15_keys.unet_to_ldm(diffusers_unet.state_dict(), diffusers_unet.config)
    model_config = comfy.model_detection.model_config_from_unet(ldm, sd15_keys.UNET_PREFIX)
    assert type(model_config).__name__ == "SD15"  # ComfyUI reads our full-size key layout as SD-1.5
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(**model_config.unet_config, device="meta", operations=comfy.ops.disable_weight_init)
    blocks = cross_attention_blocks(unet)
    assert len(blocks) == 16
    assert ("middle", 0, 0) in blocks and ("input", 1, 0) in blocks and ("output", 11, 0) in blocks


def test_another_packs_patch_on_the_same_block_is_wrapped(comfyui, sd15_checkpoint):
    from realign_pack.nodes.attention_patch import apply_realign_patch, comfy_attention, cross_attention_blocks
    from realign_pack.realign_diff.guidance import GuidedObject, RealignGuidance

    model, clip = comfyui.nodes.CheckpointLoaderSimple().load_checkpoint(sd15_checkpoint)[:2]
    calls = []

    def other_pack(q, k, v, extra_options):  # adds its own term, as image-prompt packs do
        calls.append(extra_options["block"])
        return comfy_attention(q, k, v, extra_options) + 0.01

    first_block = cross_attention_blocks(model.model.diffusion_model)[0]
    other = model.clone()
    other.set_model_attn2_replace(other_pack, first_block[0], first_block[1])  # keyed without an index
    mask = torch.zeros(64, 64)
    mask[:, :32] = 1
    guidance = [RealignGuidance(PROMPT, 64, 64, [GuidedObject("book", 2.0, "a red book", mask)])]
    patched, positive, report = apply_realign_patch(other, clip, guidance, 1.0, "paper", 1.0, "prompt only")
    assert "wrapped another pack's attention patch" in report
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    negative = comfyui.nodes.CLIPTextEncode().encode(clip, "")[0]
    comfyui.nodes.common_ksampler(patched, 1, 2, 5.0, "euler", "normal", positive, negative, latent)
    assert calls and all(tuple(c) == tuple(first_block[:2]) for c in calls)
    again, positive_again, report = apply_realign_patch(patched, clip, guidance, 1.0, "paper", 1.0, "prompt only")
    assert "replaced an earlier Realign Attention Patch" in report and "wrapped another pack's" in report
    calls.clear()
    comfyui.nodes.common_ksampler(again, 1, 2, 5.0, "euler", "normal", positive_again, negative, latent)
    assert calls  # the other pack's patch survives a second Realign patch


def test_only_our_positive_is_modulated_when_another_positive_is_combined(comfyui, sd15_checkpoint):
    from realign_pack.nodes.attention_patch import apply_realign_patch
    from realign_pack.realign_diff.guidance import GuidedObject, RealignGuidance

    model, clip = comfyui.nodes.CheckpointLoaderSimple().load_checkpoint(sd15_checkpoint)[:2]
    mask = torch.zeros(64, 64)
    mask[:, :32] = 1
    guidance = [RealignGuidance(PROMPT, 64, 64, [GuidedObject("book", 2.0, "a red book", mask)])]
    patched, positive, _ = apply_realign_patch(model, clip, guidance, 1.0, "paper", 1.0, "prompt only")
    realign = next(iter(patched.model_options["transformer_options"]["patches_replace"]["attn2"].values())).realign
    other = comfyui.nodes.CLIPTextEncode().encode(clip, "a blue car on a street")[
        0
    ]  # same length, flagged positive too
    combined = comfyui.nodes.ConditioningCombine().combine(positive, other)[0]
    negative = comfyui.nodes.CLIPTextEncode().encode(clip, "")[0]
    comfyui.nodes.common_ksampler(
        patched, 1, 2, 5.0, "euler", "normal", combined, negative, {"samples": torch.zeros(1, 4, 8, 8)}
    )
    assert realign.modulated_calls > 0 and len(realign.positive_uuids) == 1
    assert realign.modulated_rows == realign.modulated_calls  # one row (ours) per call, never the other positive


@pytest.fixture(scope="module")
def two_level_checkpoint(comfyui):
    from realign_testkit.sd15_checkpoint import write_sd15_checkpoint

    name = "realign_sd15_two_level.safetensors"
    path = comfyui.models_dir / "checkpoints" / name
    if not path.exists():
        write_sd15_checkpoint(
            path,
            unet_overrides={
                "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                "block_out_channels": [320, 640],
            },
        )
    return name


def test_every_block_is_modulated_at_every_layer_size_of_an_odd_latent(comfyui, two_level_checkpoint):
    from realign_pack.nodes.attention_patch import apply_realign_patch, cross_attention_blocks
    from realign_pack.realign_diff.guidance import GuidedObject, RealignGuidance

    model, clip = comfyui.nodes.CheckpointLoaderSimple().load_checkpoint(two_level_checkpoint)[:2]
    assert type(model.model.model_config).__name__ == "SD15"
    mask = torch.zeros(13 * 8, 17 * 8)
    mask[:, : 9 * 8] = 1
    guidance = [RealignGuidance(PROMPT, 17 * 8, 13 * 8, [GuidedObject("book", 2.0, "a red book", mask)])]
    patched, positive, _ = apply_realign_patch(model, clip, guidance, 1.0, "paper", 1.0, "prompt only")
    realign = next(iter(patched.model_options["transformer_options"]["patches_replace"]["attn2"].values())).realign
    negative = comfyui.nodes.CLIPTextEncode().encode(clip, "")[0]
    out = comfyui.nodes.common_ksampler(
        patched, 1, 2, 5.0, "euler", "normal", positive, negative, {"samples": torch.zeros(1, 4, 13, 17)}
    )[0]["samples"]
    assert out.shape == (1, 4, 13, 17)
    blocks = set(cross_attention_blocks(patched.model.diffusion_model))
    assert len(blocks) > 4 and realign.modulated_blocks == blocks
    assert {key[:2] for key in realign._maps} == {(13, 17), (7, 9)}  # both resolutions, odd sizes rounded up


def test_sd15_and_a_full_size_sd2_unet_are_told_apart_and_both_accepted(comfyui, sd15_checkpoint):
    """SD 2.x used to be refused; it is a supported family now (tests/comfyui/test_patch_families_in_comfyui.py
    samples it, and tests what is still refused)."""
    import comfy.model_detection
    import comfy.model_patcher
    from diffusers import UNet2DConditionModel

    from realign_pack.nodes.attention_patch import cross_attention_blocks
    from realign_pack.nodes.patch_families import model_family
    from realign_pack.realign_diff import sd15_configs, sd15_keys

    assert model_family(comfyui.nodes.CheckpointLoaderSimple().load_checkpoint(sd15_checkpoint)[0]).name == "SD-1.x"
    sd2 = dict(
        sd15_configs.UNET, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True
    )
    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd2)
    ldm = sd15_keys.unet_to_ldm(unet.state_dict(), unet.config)
    model_config = comfy.model_detection.model_config_from_unet(ldm, sd15_keys.UNET_PREFIX)
    with torch.device("meta"):
        model = comfy.model_patcher.ModelPatcher(
            model_config.get_model({}, sd15_keys.UNET_PREFIX, device="meta"), "cpu", "cpu"
        )
    assert type(model_config).__name__ == "SD20" and model_family(model).name == "SD 2.x"
    assert len(cross_attention_blocks(model.model.diffusion_model)) == 16


@pytest.mark.parametrize("long_side", ["positive", "negative"])
def test_prompts_of_several_chunks_and_cond_uncond_of_different_lengths(comfyui, sd15_checkpoint, long_side, caplog):
    from realign_pack.nodes.attention_patch import apply_realign_patch
    from realign_pack.realign_diff.guidance import GuidedObject, RealignGuidance

    filler = ", ".join(["a beautiful detailed landscape painting"] * 14)
    prompt = f"{filler}, a red book and a yellow pen" if long_side == "positive" else PROMPT
    negative_text = filler if long_side == "negative" else ""
    model, clip = comfyui.nodes.CheckpointLoaderSimple().load_checkpoint(sd15_checkpoint)[:2]
    mask = torch.zeros(96, 128)
    mask[:, :64] = 1
    guidance = [RealignGuidance(prompt, 128, 96, [GuidedObject("pen", 2.0, "a yellow pen", mask)])]
    patched, positive, report = apply_realign_patch(model, clip, guidance, 2.0, "paper", 1.0, "prompt only")
    realign = next(iter(patched.model_options["transformer_options"]["patches_replace"]["attn2"].values())).realign
    pen = realign.objects_per_image[0][0].positions
    assert positive[0][0].shape[1] == (154 if long_side == "positive" else 77)
    assert (pen.min() > 77) == (long_side == "positive")  # the pen sits in the second chunk
    negative = comfyui.nodes.CLIPTextEncode().encode(clip, negative_text)[0]
    latent = {"samples": torch.zeros(1, 4, 12, 16)}
    modulated = comfyui.nodes.common_ksampler(patched, 3, 2, 5.0, "euler", "normal", positive, negative, latent)[0][
        "samples"
    ]
    assert realign.modulated_calls > 0 and "not a multiple" not in caplog.text
    off, positive_off, _ = apply_realign_patch(model, clip, guidance, 0.0, "paper", 1.0, "prompt only")
    plain = comfyui.nodes.common_ksampler(off, 3, 2, 5.0, "euler", "normal", positive_off, negative, latent)[0][
        "samples"
    ]
    assert not torch.allclose(modulated, plain)


def test_a_warning_raised_while_sampling_is_shown_on_the_patch_node(comfyui, sd15_checkpoint, monkeypatch):
    """Masks drawn for a landscape image, sampled portrait: the stretch is seen on the node, not only in the console."""
    import functools
    import struct

    import server

    sent = []
    channel = type("Channel", (), {})()
    channel.send_sync = lambda event, data, sid=None: sent.append((event, data))
    channel.send_progress_text = functools.partial(server.PromptServer.send_progress_text, channel)  # ComfyUI's own
    monkeypatch.setattr(server.PromptServer, "instance", channel, raising=False)
    prompt = graph(sd15_checkpoint, strength=1.0, width=16, height=12, batch=1)
    prompt["latent"]["inputs"].update(width=12 * 8, height=16 * 8)
    comfyui.run(prompt)
    texts = []
    for _event, data in sent:
        (length,) = struct.unpack(">I", data[:4])
        texts.append((data[4 : 4 + length].decode(), data[4 + length :].decode()))
    assert any(node == "patch" and "the masks are stretched to fit" in text for node, text in texts), texts
