"""UI-format workflows made of ComfyUI's core nodes only, to test the converter and the browser check
independently of this pack's nodes."""

from __future__ import annotations

from .workflow_builder import GraphBuilder


def txt2img(node_classes, ckpt_name: str, size: int = 64, steps: int = 2) -> dict:
    """A plain text-to-image graph as a user would save it from the web UI."""
    g = GraphBuilder(node_classes)
    ckpt = g.add("CheckpointLoaderSimple", (40, 200), ckpt_name=ckpt_name)
    positive = g.add("CLIPTextEncode", (420, 80), text="a red book and a yellow pen on a desk")
    negative = g.add("CLIPTextEncode", (420, 330), text="blurry")
    latent = g.add("EmptyLatentImage", (420, 580), width=size, height=size, batch_size=1)
    sampler = g.add(
        "KSampler",
        (820, 200),
        seed=7,
        control_after_generate="fixed",
        steps=steps,
        cfg=7.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )
    decode = g.add("VAEDecode", (1180, 200))
    save = g.add("SaveImage", (1420, 200), size=(320, 360), filename_prefix="core_txt2img")
    g.connect(ckpt, "MODEL", sampler, "model")
    g.connect(ckpt, "CLIP", positive, "clip")
    g.connect(ckpt, "CLIP", negative, "clip")
    g.connect(positive, "CONDITIONING", sampler, "positive")
    g.connect(negative, "CONDITIONING", sampler, "negative")
    g.connect(latent, "LATENT", sampler, "latent_image")
    g.connect(sampler, "LATENT", decode, "samples")
    g.connect(ckpt, "VAE", decode, "vae")
    g.connect(decode, "IMAGE", save, "images")
    return g.to_json()


def txt2img_with_ui_only_features(node_classes, ckpt_name: str, size: int = 64, steps: int = 2) -> dict:
    """The same graph with what only the web UI knows: a note, a group, two chained reroutes, a primitive
    feeding the seed, a bypassed node in the image path and a muted preview."""
    g = GraphBuilder(node_classes)
    g.note("**Models**: put the checkpoint in `models/checkpoints`.", (40, 0), (340, 120))
    ckpt = g.add("CheckpointLoaderSimple", (40, 200), ckpt_name=ckpt_name)
    reroute_a = g.reroute((420, 20))
    reroute_b = g.reroute((700, 20))
    positive = g.add("CLIPTextEncode", (420, 80), text="a red book and a yellow pen on a desk")
    negative = g.add("CLIPTextEncode", (420, 330), text="blurry")
    latent = g.add("EmptyLatentImage", (420, 580), width=size, height=size, batch_size=1)
    seed = g.primitive((420, 760), 123, control="fixed", title="seed")
    sampler = g.add(
        "KSampler",
        (820, 200),
        seed=0,
        control_after_generate="fixed",
        steps=steps,
        cfg=7.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )
    decode = g.add("VAEDecode", (1180, 200))
    invert = g.add("ImageInvert", (1180, 340), mode=4)  # bypassed: the image passes through unchanged
    save = g.add("SaveImage", (1420, 200), size=(320, 360), filename_prefix="core_ui_features")
    muted = g.add("PreviewImage", (1420, 600), mode=2)
    g.group("Generate", (20, -60, 1140, 920))
    g.connect(ckpt, "MODEL", reroute_a, "")
    g.connect(reroute_a, 0, reroute_b, "")
    g.connect(reroute_b, 0, sampler, "model")
    g.connect(ckpt, "CLIP", positive, "clip")
    g.connect(ckpt, "CLIP", negative, "clip")
    g.connect(positive, "CONDITIONING", sampler, "positive")
    g.connect(negative, "CONDITIONING", sampler, "negative")
    g.connect(latent, "LATENT", sampler, "latent_image")
    g.connect(seed, 0, sampler, "seed")
    g.connect(sampler, "LATENT", decode, "samples")
    g.connect(ckpt, "VAE", decode, "vae")
    g.connect(decode, "IMAGE", invert, "image")
    g.connect(invert, "IMAGE", save, "images")
    g.connect(decode, "IMAGE", muted, "images")
    return g.to_json()
