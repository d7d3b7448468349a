"""Realign Attention Maps / Heatmaps inside a real ComfyUI, sampling a random-weight SD-1.5 checkpoint."""

import json

import pytest
import torch

from realign_testkit.pack import load_pack

pytestmark = pytest.mark.comfyui
load_pack()  # nodes' helpers are imported as ``realign_pack.nodes...`` below

PROMPT = "a red book and a yellow pen"
SIZE = 64  # pixels: an 8x8 latent


def sample_graph(ckpt, record: bool):
    """API prompt: KSampler on the plain model, or on the model Realign Attention Maps returns; then heatmaps."""
    nodes = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["ckpt", 1]}},
        "record": {
            "class_type": "RealignDiffAttentionMaps",
            "inputs": {
                "model": ["ckpt", 0],
                "clip": ["ckpt", 1],
                "text": PROMPT,
                "start_percent": 0.0,
                "end_percent": 1.0,
            },
        },
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "sample": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["record", 0] if record else ["ckpt", 0],
                "positive": ["pos", 0],
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
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "heatmaps": {
            "class_type": "RealignDiffAttentionHeatmaps",
            "inputs": {"maps": ["record", 1], "image": ["decode", 0], "label": "plain", "words": "red book, pen"},
        },
        "show": {"class_type": "PreviewImage", "inputs": {"images": ["heatmaps", 0]}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "maps_test"}},
    }
    if not record:
        del nodes["record"], nodes["heatmaps"], nodes["show"]
    return nodes


def cached(comfyui, node):
    entry = comfyui.executor.caches.outputs.get(node)
    return entry.outputs if hasattr(entry, "outputs") else entry


def test_recording_a_plain_model_changes_no_latent_and_maps_come_in_the_images_size(comfyui, sd15_checkpoint):
    plain = comfyui.output_of(sample_graph(sd15_checkpoint, record=False), "sample")[0][0]["samples"]
    prompt = sample_graph(sd15_checkpoint, record=True)
    recorded = comfyui.output_of(prompt, "sample")[0][0]["samples"]
    assert torch.equal(plain, recorded)
    heatmaps, text, summary = cached(comfyui, "heatmaps")
    image = cached(comfyui, "decode")[0][0]
    assert heatmaps[0].shape == (2, SIZE, SIZE, 3) == (2, *image.shape[1:])  # one per phrase, in the image's size
    data = json.loads(text[0])
    assert [o["tag"] for o in data["images"][0]] == ["red book", "pen"] and data["model_calls"] == 2
    assert data["images"][0][0]["tokens"] == ["red", "book"] and "plain:" in summary[0]


def guidance(width=SIZE, height=SIZE):
    from realign_pack.realign_diff.guidance import GuidedObject, RealignGuidance

    left, right = torch.zeros(height, width), torch.zeros(height, width)
    left[:, : width // 2] = 1
    right[:, width // 2 :] = 1
    objects = [GuidedObject("book", 2.0, "a red book", left), GuidedObject("pen", 2.0, "a yellow pen", right)]
    return [RealignGuidance(PROMPT, width, height, objects)]


def shares(comfyui, model, clip, vae, positive, text="", recording=None):
    """Sample (seed 5, 3 steps) with a recording of ``model`` (or ``model`` itself, already recording into
    ``recording``); the read-out's json per object, and the latent."""
    from realign_pack.nodes.attention_maps import record_attention, show_attention

    recording_model, recording = (model, recording) if recording else record_attention(model, clip, text, 0.0, 1.0)
    negative = comfyui.nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = {"samples": torch.zeros(1, 4, SIZE // 8, SIZE // 8)}
    out = comfyui.nodes.common_ksampler(recording_model, 5, 3, 5.0, "euler", "normal", positive, negative, latent)[0]
    image = comfyui.nodes.VAEDecode().decode(vae, out)[0]
    heatmaps, text, _ = show_attention(recording, image, "pass", guidance())
    assert heatmaps.shape == (2, SIZE, SIZE, 3)
    return {o["tag"]: o for o in json.loads(text)["images"][0]}, out["samples"]


def test_the_patch_raises_the_inside_mask_share_of_every_score_2_object(comfyui, sd15_checkpoint):
    from realign_pack.nodes.attention_patch import apply_realign_patch

    model, clip, vae = comfyui.nodes.CheckpointLoaderSimple().load_checkpoint(sd15_checkpoint)[:3]
    off, positive, _ = apply_realign_patch(model, clip, guidance(), 0.0, "paper", 1.0, "prompt only")
    on, positive_on, _ = apply_realign_patch(model, clip, guidance(), 2.0, "paper", 1.0, "prompt only")
    before, _ = shares(comfyui, off, clip, vae, positive)
    after, _ = shares(comfyui, on, clip, vae, positive_on)
    for tag in ("book", "pen"):
        assert after[tag]["inside"] > before[tag]["inside"], (tag, before[tag], after[tag])
        assert set(after[tag]["inside_by_resolution"]) == {"8x8"}
    typed, _ = shares(comfyui, on, clip, vae, positive_on, text=PROMPT)  # the text path finds the same tokens
    assert {t: typed[t]["positions"] for t in typed} == {t: after[t]["positions"] for t in after}
    assert typed["book"]["inside"] == pytest.approx(after["book"]["inside"], abs=1e-4)


def test_recording_composes_with_the_patch_in_either_order_and_with_another_packs_patch(comfyui, sd15_checkpoint):
    from realign_pack.nodes.attention_maps import record_attention
    from realign_pack.nodes.attention_patch import apply_realign_patch, comfy_attention, cross_attention_blocks

    model, clip, vae = comfyui.nodes.CheckpointLoaderSimple().load_checkpoint(sd15_checkpoint)[:3]
    calls = []

    def other_pack(q, k, v, extra_options):
        calls.append(1)
        return comfy_attention(q, k, v, extra_options)

    other = model.clone()
    for name, number, index in cross_attention_blocks(model.model.diffusion_model):
        other.set_model_attn2_replace(other_pack, name, number, index)
    patched, positive, _ = apply_realign_patch(other, clip, guidance(), 2.0, "paper", 1.0, "prompt only")
    after, latent_after = shares(comfyui, patched, clip, vae, positive)  # recorder above the patch
    assert calls
    calls.clear()
    recording_model, recording = record_attention(other, clip, PROMPT, 0.0, 1.0)
    patched_last, positive_last, _ = apply_realign_patch(
        recording_model, clip, guidance(), 2.0, "paper", 1.0, "prompt only"
    )
    below, latent_below = shares(comfyui, patched_last, clip, vae, positive_last, recording=recording)  # patch above
    assert calls and torch.equal(latent_after, latent_below)
    assert recording.above is not None and recording.realign is None
    for tag in ("book", "pen"):
        assert below[tag]["inside"] == pytest.approx(after[tag]["inside"], abs=1e-4)


def test_recording_a_reduced_sdxl_unet_sees_every_layer_and_changes_nothing(comfyui):
    """The recorder is family-blind: SDXL's 2048-wide context, 64-wide heads, two layer sizes."""
    import comfy.model_patcher

    from realign_pack.nodes.attention_maps import Recording, _recording_replace
    from realign_pack.nodes.attention_patch import cross_attention_blocks
    from realign_pack.realign_diff.attention_maps import AttentionRecorder
    from realign_testkit.family_checkpoints import build_model

    model = comfy.model_patcher.ModelPatcher(build_model("sdxl"), "cpu", "cpu")
    recording = Recording(AttentionRecorder(range(1, 6), 77), clip=None)
    recorded = model.clone()
    blocks = cross_attention_blocks(model.model.diffusion_model)
    for name, number, index in blocks:
        recorded.set_model_attn2_replace(_recording_replace(recording, None), name, number, index)
    g = torch.Generator().manual_seed(0)
    x, context, y = torch.randn(1, 4, 8, 12, generator=g), torch.randn(1, 77, 2048, generator=g), torch.randn(1, 2816)
    outputs = [
        patcher.model.apply_model(
            x,
            torch.tensor([3.0]),
            c_crossattn=context,
            y=y,
            transformer_options=patcher.model_options["transformer_options"],
        )
        for patcher in (model, recorded)
    ]
    assert torch.equal(*outputs)
    recorder = recording.recorder
    assert recorder.resolutions == [(4, 6), (2, 3)] and sum(recorder.calls.values()) == len(blocks)
    assert recorder.maps().shape == (1, 5, 4, 6)
