"""Writes the shipped workflows (``workflows/*.json``) from the node definitions of a real ComfyUI.

    COMFYUI_PATH=/path/to/ComfyUI python tests/realign_testkit/author_workflows.py [NAME ...] [--thumbnails]

``--thumbnails`` also loads each workflow in ComfyUI's web UI (headless Chromium) and saves a picture of the
graph as ``workflows/NAME.jpg``: the template browser shows it as the workflow's card.

The files are ordinary UI-format workflows: edit them in the web UI and save over them if you prefer;
the tests (tests/comfyui/workflows/test_shipped.py) check whatever is in ``workflows/``, not this script.
Widget values not given here are the nodes' own defaults, so a workflow is never hand-counted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the testkit and the core importable
    _root = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(_root), str(_root / "tests")]

from realign_testkit.workflow_builder import GraphBuilder  # noqa: E402

PROMPT = "a red book and a yellow pen on a wooden desk, photo"
NEGATIVE = "blurry, low quality, deformed"
CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
SEED = 42
SIZE = 512
STEPS = 30

# model file and folder names as the loaders list them (README's models table)
RAM_FILE = "ram_swin_large_14m.pth"
GROUNDING_DINO_FILE = "groundingdino_swint_ogc.pth"
BERT_FOLDER = "bert-base-uncased"
SAM_FILE = "sam_vit_b_01ec64.pth"
BLIP2_CAPTIONER = "blip2-opt-2.7b"
BLIP2_TEXT_ENCODER = "blip2-itm-vit-g"

GREEN, BLUE, PURPLE, BROWN = "#2f5d3a", "#2d4a6b", "#4a3561", "#5a4631"

MODELS_NOTE_CHECKPOINT = f"""## Models
**SD-1.5 checkpoint** → `models/checkpoints/`
Any SD-1.5 single-file checkpoint, e.g. `{CHECKPOINT}`, or the ReFL fine-tune from
`python training/refl.py` (the coarse stage of RealignDiff).
"""

MODELS_NOTE_CAPTIONER = f"""## Captioner models
- **RAM** → `models/ram/{RAM_FILE}` (Recognize Anything), plus its tag list and class thresholds beside it
  (see the pack's README).
- **GroundingDINO** → `models/grounding-dino/{GROUNDING_DINO_FILE}`
- **bert-base-uncased** (GroundingDINO's text encoder) → the folder `models/bert-base-uncased/`
  (config.json, weights, vocab.txt).
- **SAM** → `models/sams/{SAM_FILE}` (or sam_vit_l / sam_vit_h).

The LLM step runs **offline** by default (scores and local captions from the prompt's own words). To use an
OpenAI-compatible server (OpenAI, Ollama, llama.cpp, vLLM), choose the llm scorer and set the model and base
URL; the API key comes from `OPENAI_API_KEY`, never from the workflow.
"""

MODELS_NOTE_BLIP2 = f"""## Caption reward models (BLIP-2, Hugging Face folders)
- captioner → `models/blip2/{BLIP2_CAPTIONER}/` (Salesforce/blip2-opt-2.7b, or blip2-flan-t5-xl)
- text encoder → `models/blip2/{BLIP2_TEXT_ENCODER}/` (Salesforce/blip2-itm-vit-g)

The reward is the cosine of BLIP-2 text embeddings of the image's caption and the prompt: higher means
the image says what the prompt says.
"""


def _node(nodes, name: str) -> str:
    node_type = f"RealignDiff{name}"
    if node_type not in nodes:
        raise KeyError(f"{node_type} is not registered in this ComfyUI: has its branch landed?")
    return node_type


def _sd15_front(g: GraphBuilder, x: float, y: float, prompt_node):
    """Checkpoint, encoders, empty latent: returns (ckpt, positive, negative, latent)."""
    ckpt = g.add("CheckpointLoaderSimple", (x, y), ckpt_name=CHECKPOINT)
    positive = g.add("CLIPTextEncode", (x + 360, y - 150), size=(340, 120), title="Prompt (coarse pass)")
    negative = g.add("CLIPTextEncode", (x + 360, y + 20), size=(340, 120), text=NEGATIVE, title="Negative")
    latent = g.add("EmptyLatentImage", (x + 360, y + 190), width=SIZE, height=SIZE, batch_size=1)
    g.connect(ckpt, "CLIP", positive, "clip")
    g.connect(ckpt, "CLIP", negative, "clip")
    g.connect(prompt_node, 0, positive, "text")
    return ckpt, positive, negative, latent


def two_pass(nodes) -> dict:
    """(1) The whole method: coarse pass, dense captions, patched second pass, reward on both."""
    g = GraphBuilder(nodes)
    g.note(MODELS_NOTE_CHECKPOINT, (0, -330), (380, 170))
    g.note(MODELS_NOTE_CAPTIONER, (1160, -520), (520, 330))
    g.note(MODELS_NOTE_BLIP2, (2540, -330), (460, 190))

    prompt = g.add("PrimitiveStringMultiline", (0, -120), size=(380, 140), value=PROMPT, title="Prompt")
    seed = g.add("PrimitiveInt", (0, 60), size=(380, 82), value=SEED, control_after_generate="fixed",
                 title="Seed (same for both passes)")
    ckpt, positive, negative, latent = _sd15_front(g, 0, 210, prompt)
    coarse = g.add("KSampler", (760, -120), steps=STEPS, cfg=7.5, sampler_name="euler_ancestral",
                   scheduler="normal", title="Coarse pass")
    coarse_decode = g.add("VAEDecode", (760, 180), title="Coarse image")
    for a, out, b, inp in [(ckpt, "MODEL", coarse, "model"), (positive, 0, coarse, "positive"),
                           (negative, 0, coarse, "negative"), (latent, 0, coarse, "latent_image"),
                           (seed, 0, coarse, "seed"), (coarse, 0, coarse_decode, "samples"),
                           (ckpt, "VAE", coarse_decode, "vae")]:
        g.connect(a, out, b, inp)
    g.group("1. Coarse pass", (-20, -180, 1120, 680), GREEN)

    ram = g.add(_node(nodes, "RamLoader"), (1160, -150), ckpt_name=RAM_FILE)
    dino = g.add(_node(nodes, "GroundingDinoLoader"), (1160, 0), model_name=GROUNDING_DINO_FILE, bert=BERT_FOLDER)
    sam = g.add(_node(nodes, "SamLoader"), (1160, 190), model_name=SAM_FILE)
    captioner = g.add(_node(nodes, "LocalDenseCaptioner"), (1540, -150), size=(380, 520))
    for a, out, b, inp in [(coarse_decode, 0, captioner, "image"), (prompt, 0, captioner, "prompt"),
                           (ram, 0, captioner, "ram"), (dino, 0, captioner, "grounding_dino"),
                           (sam, 0, captioner, "sam")]:
        g.connect(a, out, b, inp)
    g.group("2. Local dense captions (RAM + LLM + Grounded-SAM)", (1140, -180, 800, 680), BLUE)

    patch = g.add(_node(nodes, "AttentionPatch"), (1980, -150), size=(360, 230))
    fine = g.add("KSampler", (1980, 120), steps=STEPS, cfg=7.5, sampler_name="euler_ancestral",
                 scheduler="normal", title="Realigned pass (same seed)")
    fine_decode = g.add("VAEDecode", (1980, 420), title="Realigned image")
    report = g.add("PreviewAny", (2360, -150), size=(320, 230), title="Token report")
    for a, out, b, inp in [(ckpt, "MODEL", patch, "model"), (ckpt, "CLIP", patch, "clip"),
                           (captioner, "guidance", patch, "guidance"), (patch, "model", fine, "model"),
                           (patch, "positive", fine, "positive"), (negative, 0, fine, "negative"),
                           (latent, 0, fine, "latent_image"), (seed, 0, fine, "seed"),
                           (fine, 0, fine_decode, "samples"), (ckpt, "VAE", fine_decode, "vae"),
                           (patch, "report", report, "source")]:
        g.connect(a, out, b, inp)
    g.group("3. Realigned pass", (1960, -180, 740, 680), PURPLE)

    blip2 = g.add(_node(nodes, "Blip2RewardLoader"), (2740, -100), captioner=BLIP2_CAPTIONER,
                  text_encoder=BLIP2_TEXT_ENCODER)
    both = g.add("ImageBatch", (2740, 80), title="coarse, realigned")
    scorer = g.add(_node(nodes, "CaptionRewardScorer"), (2740, 200), size=(360, 230))
    summary = g.add("PreviewAny", (3140, -100), size=(380, 250), title="Caption reward: coarse vs realigned")
    side = g.add("ImageStitch", (3140, 190), direction="right", match_image_size=True, spacing_width=8,
                 title="coarse | realigned")
    with_masks = g.add("ImageStitch", (3140, 420), direction="right", match_image_size=True, spacing_width=8,
                       title="... | masks")
    save = g.add("SaveImage", (3540, -100), size=(620, 420), filename_prefix="RealignDiff/two_pass")
    for a, out, b, inp in [(coarse_decode, 0, both, "image1"), (fine_decode, 0, both, "image2"),
                           (blip2, 0, scorer, "caption_reward"), (both, 0, scorer, "images"),
                           (prompt, 0, scorer, "prompt"), (scorer, "summary", summary, "source"),
                           (coarse_decode, 0, side, "image1"), (fine_decode, 0, side, "image2"),
                           (side, 0, with_masks, "image1"), (captioner, "preview", with_masks, "image2"),
                           (with_masks, 0, save, "images")]:
        g.connect(a, out, b, inp)
    g.group("4. Compare: caption reward, side by side with the masks", (2720, -180, 1460, 800), BROWN)
    return g.to_json()


def reward_scoring(nodes) -> dict:
    """(2) Caption reward of loaded images against a prompt."""
    g = GraphBuilder(nodes)
    g.note(MODELS_NOTE_BLIP2 + "\nLoad the images to score (one or more Load Image nodes batched together); "
           "write the prompt they should show.", (0, -260), (460, 230))
    image_a = g.add("LoadImage", (0, 0), size=(320, 360), image="example.png", title="Image A")
    image_b = g.add("LoadImage", (0, 400), size=(320, 360), image="example.png", title="Image B")
    batch = g.add("ImageBatch", (380, 200))
    blip2 = g.add(_node(nodes, "Blip2RewardLoader"), (380, 20), captioner=BLIP2_CAPTIONER,
                  text_encoder=BLIP2_TEXT_ENCODER)
    scorer = g.add(_node(nodes, "CaptionRewardScorer"), (760, 20), size=(380, 300), prompt=PROMPT)
    summary = g.add("PreviewAny", (1180, 20), size=(380, 260), title="Rewards and captions")
    preview = g.add("PreviewImage", (1180, 320), size=(380, 320))
    for a, out, b, inp in [(image_a, "IMAGE", batch, "image1"), (image_b, "IMAGE", batch, "image2"),
                           (blip2, 0, scorer, "caption_reward"), (batch, 0, scorer, "images"),
                           (scorer, "summary", summary, "source"), (batch, 0, preview, "images")]:
        g.connect(a, out, b, inp)
    return g.to_json()


def hand_masks(nodes) -> dict:
    """(3) The attention patch alone, with masks painted by hand: no captioner models."""
    g = GraphBuilder(nodes)
    g.note(MODELS_NOTE_CHECKPOINT + """
## Masks, by hand
1. Queue once: the coarse image appears on the right.
2. In each **Load Image** node, load that image (or any image of the same shape), right-click the node →
   **Open in MaskEditor**, paint where the object should be, *Save*.
3. Give each object its caption (as the prompt says it) and a score: 2 = certainly there (pushes hard),
   0.5 = maybe. Chain one **Realign Guidance From Mask** per object.
4. Queue again: same seed, the patched model, the realigned image.
""", (0, -420), (440, 380))
    prompt = g.add("PrimitiveStringMultiline", (0, -20), size=(380, 140), value=PROMPT, title="Prompt")
    seed = g.add("PrimitiveInt", (0, 160), size=(380, 82), value=SEED, control_after_generate="fixed",
                 title="Seed (same for both passes)")
    ckpt, positive, negative, latent = _sd15_front(g, 0, 310, prompt)
    coarse = g.add("KSampler", (760, -20), steps=STEPS, cfg=7.5, sampler_name="euler_ancestral",
                   scheduler="normal", title="Coarse pass")
    coarse_decode = g.add("VAEDecode", (760, 280), title="Coarse image")
    for a, out, b, inp in [(ckpt, "MODEL", coarse, "model"), (positive, 0, coarse, "positive"),
                           (negative, 0, coarse, "negative"), (latent, 0, coarse, "latent_image"),
                           (seed, 0, coarse, "seed"), (coarse, 0, coarse_decode, "samples"),
                           (ckpt, "VAE", coarse_decode, "vae")]:
        g.connect(a, out, b, inp)

    mask_book = g.add("LoadImage", (1140, -420), size=(320, 360), image="example.png", title="Mask: the book")
    mask_pen = g.add("LoadImage", (1140, -20), size=(320, 360), image="example.png", title="Mask: the pen")
    book = g.add(_node(nodes, "GuidanceFromMask"), (1500, -420), size=(360, 260), caption="a red book",
                 tag="book", score=2.0, title="Object 1: a red book")
    pen = g.add(_node(nodes, "GuidanceFromMask"), (1500, -120), size=(360, 260), caption="a yellow pen",
                tag="pen", score=2.0, title="Object 2: a yellow pen")
    for a, out, b, inp in [(mask_book, "MASK", book, "mask"), (prompt, 0, book, "prompt"),
                           (mask_pen, "MASK", pen, "mask"), (book, 0, pen, "guidance")]:
        g.connect(a, out, b, inp)
    g.group("Hand-drawn masks, one node per object", (1120, -480, 760, 800), BLUE)

    patch = g.add(_node(nodes, "AttentionPatch"), (1920, -420), size=(360, 230))
    fine = g.add("KSampler", (1920, -150), steps=STEPS, cfg=7.5, sampler_name="euler_ancestral",
                 scheduler="normal", title="Realigned pass (same seed)")
    fine_decode = g.add("VAEDecode", (1920, 150), title="Realigned image")
    report = g.add("PreviewAny", (1920, 260), size=(360, 200), title="Token report")
    side = g.add("ImageStitch", (2320, -420), direction="right", match_image_size=True, spacing_width=8,
                 title="coarse | realigned")
    save = g.add("SaveImage", (2320, -250), size=(620, 420), filename_prefix="RealignDiff/hand_masks")
    for a, out, b, inp in [(ckpt, "MODEL", patch, "model"), (ckpt, "CLIP", patch, "clip"),
                           (pen, 0, patch, "guidance"), (patch, "model", fine, "model"),
                           (patch, "positive", fine, "positive"), (negative, 0, fine, "negative"),
                           (latent, 0, fine, "latent_image"), (seed, 0, fine, "seed"),
                           (fine, 0, fine_decode, "samples"), (ckpt, "VAE", fine_decode, "vae"),
                           (patch, "report", report, "source"), (coarse_decode, 0, side, "image1"),
                           (fine_decode, 0, side, "image2"), (side, 0, save, "images")]:
        g.connect(a, out, b, inp)
    return g.to_json()


WORKFLOWS = {
    "realigndiff_two_pass": two_pass,
    "caption_reward_scoring": reward_scoring,
    "attention_patch_hand_masks": hand_masks,
}


def write_all(nodes, folder: Path, only: list[str] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in WORKFLOWS.items():
        if only and name not in only:
            continue
        path = folder / f"{name}.json"
        path.write_text(json.dumps(build(nodes), indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def thumbnails(paths: list[Path], comfy_path: Path, width: int = 640, height: int = 360) -> None:
    """A JPEG of each workflow's graph as the web UI draws it, for the template browser's cards."""
    import tempfile

    from PIL import Image

    from realign_testkit.browser import WebUI
    from realign_testkit.comfyui_server import ComfyUIServer

    base = Path(tempfile.mkdtemp(prefix="realign-thumbs-"))
    with ComfyUIServer(comfy_path, base, settings={"Comfy.Minimap.Visible": False}) as server, WebUI(server.url) as ui:
        for path in paths:
            result = ui.load_workflow(json.loads(path.read_text(encoding="utf-8")))
            if result.dialogs or result.error:
                raise RuntimeError(f"{path.name} did not load cleanly: {result.dialogs} {result.error}")
            ui.fit_view()
            shot = base / f"{path.stem}.png"
            ui.screenshot(shot)
            image = Image.open(shot).convert("RGB")
            left = 70  # the sidebar
            image = image.crop((left, 80, image.width, image.height - 10))
            scale = max(width / image.width, height / image.height)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
            x, y = (image.width - width) // 2, (image.height - height) // 2
            image.crop((x, y, x + width, y + height)).save(path.with_suffix(".jpg"), quality=82, optimize=True)
            print("wrote", path.with_suffix(".jpg"))


def main(argv: list[str]) -> None:
    import tempfile

    from realign_testkit.comfyui import find_comfyui, start_comfyui
    from realign_testkit.pack import PACK_ROOT

    names = [a for a in argv if not a.startswith("--")]
    comfyui = start_comfyui(Path(tempfile.mkdtemp(prefix="realign-author-")))
    written = write_all(comfyui.nodes.NODE_CLASS_MAPPINGS, PACK_ROOT / "workflows", names or None)
    for path in written:
        print("wrote", path)
    if "--thumbnails" in argv:
        thumbnails(written, find_comfyui()[0])


if __name__ == "__main__":
    main(sys.argv[1:])
