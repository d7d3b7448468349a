"""Writes the shipped workflows (``workflows/*.json``) from the node definitions of a real ComfyUI.

    COMFYUI_PATH=/path/to/ComfyUI python tests/realign_testkit/author_workflows.py [NAME ...] [--thumbnails]

``--thumbnails`` also loads each workflow in ComfyUI's web UI (headless Chromium) and saves a picture of the
graph as ``workflows/NAME.jpg``: the template browser shows it as the workflow's card. ``--docs`` also
writes a larger one as ``docs/workflow_NAME.jpg`` for the README.

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

GREEN, BLUE, PURPLE, BROWN, TEAL = "#2f5d3a", "#2d4a6b", "#4a3561", "#5a4631", "#2f5a5a"

MODELS_NOTE_CHECKPOINT = f"""## Models
**SD-1.5 checkpoint** → `models/checkpoints/`
Any SD-1.5 single-file checkpoint, e.g. `{CHECKPOINT}`, or the ReFL fine-tune from
`python training/refl.py` (the coarse stage of RealignDiff).
"""

# --- SDXL (issue 11): the two-pass graph of two_pass() at 1024 px on SDXL base -----------------------------
SDXL_CHECKPOINT = "sd_xl_base_1.0.safetensors"
SDXL_SIZE = 1024
MODELS_NOTE_SDXL = f"""## Models
**SDXL checkpoint** → `models/checkpoints/`
SDXL base `{SDXL_CHECKPOINT}` or an SDXL fine-tune (Pony, Illustrious, NoobAI, ...), not the refiner.
The coarse pass is plain SDXL (the ReFL trainer is SD-1.5 only); the realigned pass is patched.
Any size SDXL samples (multiples of 8, e.g. 832x1216) works: set both in Empty Latent Image.
"""
MODELS_NOTE_EITHER = f"""## Models
**Checkpoint** → `models/checkpoints/`
SD-1.5 (e.g. `{CHECKPOINT}`, or the ReFL fine-tune from `python training/refl.py`), SD 2.x or SDXL
(e.g. `{SDXL_CHECKPOINT}`; then set Empty Latent Image to 1024x1024).
"""

MODELS_NOTE_CAPTIONER = f"""## Captioner models
- **RAM** → `models/ram/{RAM_FILE}` (Recognize Anything; or ram_plus_swin_large_14m.pth), with
  `ram_tag_list.txt` and `ram_tag_list_threshold.txt` beside it (see the pack's README).
- **GroundingDINO** → `models/grounding-dino/{GROUNDING_DINO_FILE}`
- **bert-base-uncased** (GroundingDINO's text encoder) → the folder `models/bert-base-uncased/`
  (config.json, weights, vocab.txt).
- **SAM** → `models/sams/{SAM_FILE}` (or sam_vit_l / sam_vit_h).

Scores and local captions come **offline** by default (from the prompt's own words). For an LLM
(OpenAI, Ollama, llama.cpp, vLLM...): set `scorer` to the LLM and the model / base URL here or in
`REALIGN_DIFF_LLM_MODEL` / `OPENAI_BASE_URL` / `realign_diff_llm.json`; the key comes from
`REALIGN_DIFF_LLM_API_KEY` or `OPENAI_API_KEY`, never from the workflow. If the LLM fails, the offline
scorer answers and the `json` output says why.
"""

MODELS_NOTE_BLIP2 = f"""## Caption reward models (BLIP-2, Hugging Face folders)
- captioner → `models/blip2/{BLIP2_CAPTIONER}/` (Salesforce/blip2-opt-2.7b, or blip2-flan-t5-xl)
- text encoder → `models/blip2/{BLIP2_TEXT_ENCODER}/` (Salesforce/blip2-itm-vit-g)

The reward is the cosine of BLIP-2 text embeddings of the image's caption and the prompt: higher means
the image says what the prompt says.
"""

CLIP_SCORE_MODEL = "clip-vit-large-patch14"
MODELS_NOTE_CLIP = f"""
## CLIP score model (Hugging Face folder)
- CLIP ViT-L/14 → `models/clip_score/{CLIP_SCORE_MODEL}/` (openai/clip-vit-large-patch14, the whole folder)

CLIP score = 100·max(cos, 0) of CLIP's image and prompt embeddings, as the paper reports it.
"""


def _node(nodes, name: str) -> str:
    node_type = f"RealignDiff{name}"
    if node_type not in nodes:
        raise KeyError(f"{node_type} is not registered in this ComfyUI: has its branch landed?")
    return node_type


def _wire(g: GraphBuilder, *links) -> None:
    for source, output, target, name in links:
        g.connect(source, output, target, name)


class Layout:
    """A workflow's nodes in columns, and its groups: placed once the web UI has measured the nodes."""

    def __init__(self, g: GraphBuilder):
        self.g = g
        self.bands: list[tuple[float, list[list]]] = [(0.0, [])]  # rows of columns, each with its left edge
        self.groups: list[tuple[str, list, str]] = []

    def column(self, *refs) -> None:
        self.bands[-1][1].append(list(refs))

    def band(self, indent: float = 0.0) -> None:
        """Start a new row of columns below the previous one."""
        self.bands.append((indent, []))

    def group(self, title: str, color: str, *refs) -> None:
        self.groups.append((title, list(refs), color))

    def finish(self, measure) -> dict:
        if measure is not None:
            self.g.apply_sizes(measure(self.g.to_json()))
        top = 0.0
        for indent, columns in self.bands:
            top = self.g.layout(columns, origin=(indent, top), gap=(70.0, 50.0)) + 90.0
        for title, refs, color in self.groups:
            self.g.group_around(title, refs, color)
        return self.g.to_json()


def _sampler(g, title):
    return g.add(
        "KSampler", (0, 0), steps=STEPS, cfg=7.5, sampler_name="euler_ancestral", scheduler="normal", title=title
    )


def _coarse_pass(g, model=None):
    """Prompt, seed, checkpoint, both text encodes, latent, the coarse sampler and its decode, wired.

    ``model``: (node, output) feeding the coarse sampler's model instead of the checkpoint's (wire its inputs after).
    """
    prompt = g.add("PrimitiveStringMultiline", (0, 0), size=(400, 150), value=PROMPT, title="Prompt")
    seed = g.add("PrimitiveInt", (0, 0), value=SEED, control_after_generate="fixed", title="Seed (both passes)")
    ckpt = g.add("CheckpointLoaderSimple", (0, 0), ckpt_name=CHECKPOINT)
    positive = g.add("CLIPTextEncode", (0, 0), size=(360, 90), title="Prompt (coarse pass)")
    negative = g.add("CLIPTextEncode", (0, 0), size=(360, 110), text=NEGATIVE, title="Negative")
    latent = g.add("EmptyLatentImage", (0, 0), width=SIZE, height=SIZE, batch_size=1)
    coarse = _sampler(g, "Coarse pass")
    coarse_decode = g.add("VAEDecode", (0, 0), title="Coarse image")
    _wire(
        g,
        (ckpt, "CLIP", positive, "clip"),
        (ckpt, "CLIP", negative, "clip"),
        (prompt, 0, positive, "text"),
        (*(model or (ckpt, "MODEL")), coarse, "model"),
        (positive, 0, coarse, "positive"),
        (negative, 0, coarse, "negative"),
        (latent, 0, coarse, "latent_image"),
        (seed, 0, coarse, "seed"),
        (coarse, 0, coarse_decode, "samples"),
        (ckpt, "VAE", coarse_decode, "vae"),
    )
    return prompt, seed, ckpt, positive, negative, latent, coarse, coarse_decode


def _attention_maps(g, nodes, ckpt, patch, fine, sources, captioner) -> list:
    """The realigned pass records its attention too; both passes' maps and inside-mask shares, side by side.
    ``sources``: the coarse pass's recorder, the coarse and the realigned decode."""
    record_coarse, coarse_decode, fine_decode = sources
    record = g.add(_node(nodes, "AttentionMaps"), (0, 0), size=(320, 170), title="Record attention (realigned)")
    heat_coarse = g.add(_node(nodes, "AttentionHeatmaps"), (0, 0), label="coarse", title="Attention maps: coarse")
    heat_fine = g.add(_node(nodes, "AttentionHeatmaps"), (0, 0), label="realigned", title="Attention maps: realigned")
    shares = g.add("PreviewAny", (0, 0), size=(520, 260), title="Attention inside each mask: coarse vs realigned")
    side = g.add(
        "ImageStitch",
        (0, 0),
        direction="right",
        match_image_size=True,
        spacing_width=8,
        title="attention: coarse | realigned",
    )
    save = g.add("SaveImage", (0, 0), size=(640, 300), filename_prefix="RealignDiff/two_pass_attention")
    _wire(
        g,
        (patch, "model", record, "model"),
        (ckpt, "CLIP", record, "clip"),
        (record, "model", fine, "model"),
        (record_coarse, "maps", heat_coarse, "maps"),
        (coarse_decode, 0, heat_coarse, "image"),
        (captioner, "guidance", heat_coarse, "guidance"),
        (record, "maps", heat_fine, "maps"),
        (fine_decode, 0, heat_fine, "image"),
        (captioner, "guidance", heat_fine, "guidance"),
        (heat_coarse, "json", heat_fine, "compare_with"),
        (heat_fine, "summary", shares, "source"),
        (heat_coarse, "heatmaps", side, "image1"),
        (heat_fine, "heatmaps", side, "image2"),
        (side, 0, save, "images"),
    )
    return [record, heat_coarse, heat_fine, shares, side, save]


def two_pass(nodes, measure=None) -> dict:
    """(1) The whole method: coarse pass, dense captions, patched second pass, reward on both."""
    g = GraphBuilder(nodes)
    lay = Layout(g)
    note_ckpt = g.note(MODELS_NOTE_CHECKPOINT, (0, 0), (400, 170))
    # the coarse pass records every word of the prompt: its objects are only known once the captioner has run
    record_coarse = g.add(_node(nodes, "AttentionMaps"), (0, 0), size=(320, 170), title="Record attention (coarse)")
    prompt, seed, ckpt, positive, negative, latent, coarse, coarse_decode = _coarse_pass(g, (record_coarse, "model"))
    _wire(
        g,
        (ckpt, "MODEL", record_coarse, "model"),
        (ckpt, "CLIP", record_coarse, "clip"),
        (prompt, 0, record_coarse, "text"),
    )

    note_captioner = g.note(MODELS_NOTE_CAPTIONER, (0, 0), (460, 330))
    ram = g.add(_node(nodes, "RamLoader"), (0, 0), ckpt_name=RAM_FILE)
    dino = g.add(_node(nodes, "GroundingDinoLoader"), (0, 0), model_name=GROUNDING_DINO_FILE, bert=BERT_FOLDER)
    sam = g.add(_node(nodes, "SamLoader"), (0, 0), model_name=SAM_FILE)
    captioner = g.add(_node(nodes, "LocalDenseCaptioner"), (0, 0))
    _wire(
        g,
        (coarse_decode, 0, captioner, "image"),
        (prompt, 0, captioner, "prompt"),
        (ram, 0, captioner, "ram"),
        (dino, 0, captioner, "grounding_dino"),
        (sam, 0, captioner, "sam"),
    )

    patch = g.add(_node(nodes, "AttentionPatch"), (0, 0))
    fine = _sampler(g, "Realigned pass (same seed)")
    fine_decode = g.add("VAEDecode", (0, 0), title="Realigned image")
    report = g.add("PreviewAny", (0, 0), size=(340, 200), title="Token report")
    _wire(
        g,
        (ckpt, "MODEL", patch, "model"),
        (ckpt, "CLIP", patch, "clip"),
        (captioner, "guidance", patch, "guidance"),
        (patch, "positive", fine, "positive"),
        (negative, 0, fine, "negative"),
        (latent, 0, fine, "latent_image"),
        (seed, 0, fine, "seed"),
        (fine, 0, fine_decode, "samples"),
        (ckpt, "VAE", fine_decode, "vae"),
        (patch, "report", report, "source"),
    )
    record_fine, *read_out = _attention_maps(
        g, nodes, ckpt, patch, fine, (record_coarse, coarse_decode, fine_decode), captioner
    )

    note_blip2 = g.note(MODELS_NOTE_BLIP2 + MODELS_NOTE_CLIP, (0, 0), (440, 300))
    blip2 = g.add(_node(nodes, "Blip2RewardLoader"), (0, 0), captioner=BLIP2_CAPTIONER, text_encoder=BLIP2_TEXT_ENCODER)
    both = g.add("ImageBatch", (0, 0), title="coarse, realigned")
    scorer = g.add(_node(nodes, "CaptionRewardScorer"), (0, 0))
    summary = g.add("PreviewAny", (0, 0), size=(420, 240), title="Caption reward: coarse vs realigned")
    clip_loader = g.add(_node(nodes, "ClipScoreLoader"), (0, 0), model=CLIP_SCORE_MODEL)
    clip_scorer = g.add(_node(nodes, "ClipScoreScorer"), (0, 0))
    clip_summary = g.add("PreviewAny", (0, 0), size=(420, 140), title="CLIP score: coarse vs realigned")
    _wire(
        g,
        (clip_loader, 0, clip_scorer, "clip_score"),
        (both, 0, clip_scorer, "images"),
        (prompt, 0, clip_scorer, "prompt"),
        (clip_scorer, "summary", clip_summary, "source"),
    )
    side = g.add(
        "ImageStitch", (0, 0), direction="right", match_image_size=True, spacing_width=8, title="coarse | realigned"
    )
    with_masks = g.add(
        "ImageStitch", (0, 0), direction="right", match_image_size=True, spacing_width=8, title="... | masks"
    )
    save = g.add("SaveImage", (0, 0), size=(640, 300), filename_prefix="RealignDiff/two_pass")
    _wire(
        g,
        (coarse_decode, 0, both, "image1"),
        (fine_decode, 0, both, "image2"),
        (blip2, 0, scorer, "caption_reward"),
        (both, 0, scorer, "images"),
        (prompt, 0, scorer, "prompt"),
        (scorer, "summary", summary, "source"),
        (coarse_decode, 0, side, "image1"),
        (fine_decode, 0, side, "image2"),
        (side, 0, with_masks, "image1"),
        (captioner, "preview", with_masks, "image2"),
        (with_masks, 0, save, "images"),
    )

    lay.column(note_ckpt, note_captioner)
    lay.column(prompt, seed, ckpt)
    lay.column(positive, negative, latent)
    lay.column(record_coarse, coarse, coarse_decode)
    lay.column(ram, dino, sam)
    lay.column(captioner)
    lay.band()
    lay.column(note_blip2)
    lay.column(patch, report)
    lay.column(record_fine, fine, fine_decode)
    lay.column(blip2, clip_loader, both, scorer, clip_scorer)
    lay.column(summary, clip_summary, side, with_masks)
    lay.column(save)
    lay.band()
    lay.column(*read_out[:2])
    lay.column(*read_out[2:])
    lay.group(
        "1. Coarse pass", GREEN, prompt, seed, ckpt, positive, negative, latent, coarse, coarse_decode, record_coarse
    )
    lay.group("2. Local dense captions (RAM + LLM + Grounded-SAM)", BLUE, ram, dino, sam, captioner)
    lay.group("3. Realigned pass", PURPLE, patch, fine, fine_decode, report, record_fine)
    lay.group(
        "4. Compare: caption reward and CLIP score, side by side with the masks",
        BROWN,
        blip2,
        both,
        scorer,
        summary,
        clip_loader,
        clip_scorer,
        clip_summary,
        side,
        with_masks,
        save,
    )
    lay.group("5. Attention inside the masks: coarse vs realigned", TEAL, *read_out)
    return lay.finish(measure)


def reward_scoring(nodes, measure=None) -> dict:
    """(2) Caption reward of loaded images against a prompt."""
    g = GraphBuilder(nodes)
    lay = Layout(g)
    note = g.note(
        MODELS_NOTE_BLIP2 + "\nLoad the images to score (batch more with more Image Batch nodes) and "
        "write the prompt they should show.",
        (0, 0),
        (440, 170),
    )
    image_a = g.add("LoadImage", (0, 0), size=(320, 340), image="example.png", title="Image A")
    image_b = g.add("LoadImage", (0, 0), size=(320, 340), image="example.png", title="Image B")
    batch = g.add("ImageBatch", (0, 0))
    blip2 = g.add(_node(nodes, "Blip2RewardLoader"), (0, 0), captioner=BLIP2_CAPTIONER, text_encoder=BLIP2_TEXT_ENCODER)
    scorer = g.add(_node(nodes, "CaptionRewardScorer"), (0, 0), prompt=PROMPT)
    summary = g.add("PreviewAny", (0, 0), size=(420, 260), title="Rewards and captions")
    preview = g.add("PreviewImage", (0, 0), size=(420, 320))
    _wire(
        g,
        (image_a, "IMAGE", batch, "image1"),
        (image_b, "IMAGE", batch, "image2"),
        (blip2, 0, scorer, "caption_reward"),
        (batch, 0, scorer, "images"),
        (scorer, "summary", summary, "source"),
        (batch, 0, preview, "images"),
    )
    lay.column(note)
    lay.column(image_a, image_b)
    lay.column(blip2, batch, scorer)
    lay.column(summary, preview)
    return lay.finish(measure)


def hand_masks(nodes, measure=None) -> dict:
    """(3) The attention patch alone, with masks painted by hand: no captioner models."""
    g = GraphBuilder(nodes)
    lay = Layout(g)
    note = g.note(
        MODELS_NOTE_EITHER
        + """
## Masks, by hand
1. Queue once: the coarse image appears on the right.
2. In each **Load Image** node, load that image (or any image of the same shape), right-click the node →
   **Open in MaskEditor**, paint where the object should be, *Save*.
3. Give each object its caption (as the prompt says it) and a score: 2 = certainly there (pushes hard),
   0.5 = maybe. Chain one **Realign Guidance From Mask** per object.
4. Queue again: same seed, the patched model, the realigned image.
""",
        (0, 0),
        (440, 380),
    )
    prompt, seed, ckpt, positive, negative, latent, coarse, coarse_decode = _coarse_pass(g)

    mask_book = g.add("LoadImage", (0, 0), size=(320, 340), image="example.png", title="Mask: the book")
    mask_pen = g.add("LoadImage", (0, 0), size=(320, 340), image="example.png", title="Mask: the pen")
    book = g.add(
        _node(nodes, "GuidanceFromMask"),
        (0, 0),
        caption="a red book",
        tag="book",
        score=2.0,
        title="Object 1: a red book",
    )
    pen = g.add(
        _node(nodes, "GuidanceFromMask"),
        (0, 0),
        caption="a yellow pen",
        tag="pen",
        score=2.0,
        title="Object 2: a yellow pen",
    )
    _wire(
        g,
        (mask_book, "MASK", book, "mask"),
        (prompt, 0, book, "prompt"),
        (mask_pen, "MASK", pen, "mask"),
        (book, 0, pen, "guidance"),
    )

    patch = g.add(_node(nodes, "AttentionPatch"), (0, 0))
    fine = _sampler(g, "Realigned pass (same seed)")
    fine_decode = g.add("VAEDecode", (0, 0), title="Realigned image")
    report = g.add("PreviewAny", (0, 0), size=(340, 200), title="Token report")
    side = g.add(
        "ImageStitch", (0, 0), direction="right", match_image_size=True, spacing_width=8, title="coarse | realigned"
    )
    save = g.add("SaveImage", (0, 0), size=(640, 340), filename_prefix="RealignDiff/hand_masks")
    _wire(
        g,
        (ckpt, "MODEL", patch, "model"),
        (ckpt, "CLIP", patch, "clip"),
        (pen, 0, patch, "guidance"),
        (patch, "model", fine, "model"),
        (patch, "positive", fine, "positive"),
        (negative, 0, fine, "negative"),
        (latent, 0, fine, "latent_image"),
        (seed, 0, fine, "seed"),
        (fine, 0, fine_decode, "samples"),
        (ckpt, "VAE", fine_decode, "vae"),
        (patch, "report", report, "source"),
        (coarse_decode, 0, side, "image1"),
        (fine_decode, 0, side, "image2"),
        (side, 0, save, "images"),
    )

    lay.column(note)
    lay.column(prompt, seed, ckpt)
    lay.column(positive, negative, latent)
    lay.column(coarse, coarse_decode)
    lay.column(mask_book, mask_pen)
    lay.column(book, pen)
    lay.column(patch, fine, fine_decode, report)
    lay.column(side, save)
    lay.group("1. Coarse pass", GREEN, prompt, seed, ckpt, positive, negative, latent, coarse, coarse_decode)
    lay.group("2. Hand-drawn masks, one Guidance From Mask per object", BLUE, mask_book, mask_pen, book, pen)
    lay.group("3. Realigned pass", PURPLE, patch, fine, fine_decode, report, side, save)
    return lay.finish(measure)


def two_pass_sdxl(nodes, measure=None) -> dict:
    """(4) two_pass() on SDXL base at 1024 px: the same graph, captioner and reward chain; only the checkpoint,
    the latent size, the models note and the file prefixes differ."""
    workflow = two_pass(nodes, measure)
    noted = False
    for node in workflow["nodes"]:
        values = node.get("widgets_values")
        if node["type"] == "CheckpointLoaderSimple":
            values[0] = SDXL_CHECKPOINT
        elif node["type"] == "EmptyLatentImage":
            values[0] = values[1] = SDXL_SIZE
        elif node["type"] in ("Note", "MarkdownNote") and values and values[0] == MODELS_NOTE_CHECKPOINT:
            values[0], noted = MODELS_NOTE_SDXL, True
        elif node["type"] == "SaveImage":
            values[0] = values[0].replace("RealignDiff/two_pass", "RealignDiff/two_pass_sdxl")
    if not noted:
        raise RuntimeError("two_pass() has no SD-1.5 models note any more: update two_pass_sdxl")
    return workflow


WORKFLOWS = {
    "realigndiff_two_pass": two_pass,
    "caption_reward_scoring": reward_scoring,
    "attention_patch_hand_masks": hand_masks,
    "realigndiff_two_pass_sdxl": two_pass_sdxl,
}


def write_all(nodes, folder: Path, only: list[str] | None = None, measure=None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in WORKFLOWS.items():
        if only and name not in only:
            continue
        path = folder / f"{name}.json"
        path.write_text(json.dumps(build(nodes, measure), indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def thumbnails(
    paths: list[Path], ui, base: Path, width: int = 640, height: int = 360, docs: Path | None = None
) -> None:
    """A JPEG of each workflow's graph as the web UI draws it, for the template browser's cards (and, with
    ``docs``, a larger one per workflow for the README)."""
    from PIL import Image, ImageChops

    for path in paths:
        result = ui.load_workflow(json.loads(path.read_text(encoding="utf-8")))
        if result.dialogs or result.error:
            raise RuntimeError(f"{path.name} did not load cleanly: {result.dialogs} {result.error}")
        ui.fit_view()
        shot = base / f"{path.stem}.png"
        ui.screenshot(shot)
        image = Image.open(shot).convert("RGB")
        image = image.crop((70, 85, image.width, image.height - 100))  # without the sidebar, the bars, the stats
        background = image.getpixel((5, 5))
        difference = ImageChops.difference(image, Image.new("RGB", image.size, background)).convert("L")
        bbox = difference.point(lambda v: 255 if v > 12 else 0).getbbox()
        if bbox:  # the graph itself, with a margin
            image = image.crop(
                (
                    max(bbox[0] - 20, 0),
                    max(bbox[1] - 20, 0),
                    min(bbox[2] + 20, image.width),
                    min(bbox[3] + 20, image.height),
                )
            )
        if docs is not None:
            large = image.resize((1600, round(image.height * 1600 / image.width)), Image.LANCZOS)
            large.save(docs / f"workflow_{path.stem}.jpg", quality=80, optimize=True)
            print("wrote", docs / f"workflow_{path.stem}.jpg")
        scale = min(width / image.width, height / image.height)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
        card = Image.new("RGB", (width, height), background)
        card.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
        card.save(path.with_suffix(".jpg"), quality=85, optimize=True)
        print("wrote", path.with_suffix(".jpg"))


def main(argv: list[str]) -> None:
    import tempfile

    from realign_testkit.browser import WebUI
    from realign_testkit.comfyui import find_comfyui, start_comfyui
    from realign_testkit.comfyui_server import ComfyUIServer
    from realign_testkit.pack import PACK_ROOT

    names = [a for a in argv if not a.startswith("--")]
    comfyui = start_comfyui(Path(tempfile.mkdtemp(prefix="realign-author-")))
    base = Path(tempfile.mkdtemp(prefix="realign-author-ui-"))
    with (
        ComfyUIServer(find_comfyui()[0], base, settings={"Comfy.Minimap.Visible": False}) as server,
        WebUI(server.url) as ui,
    ):
        written = write_all(comfyui.nodes.NODE_CLASS_MAPPINGS, PACK_ROOT / "workflows", names or None, ui.measure)
        for path in written:
            print("wrote", path)
        if "--thumbnails" in argv or "--docs" in argv:
            thumbnails(written, ui, base, docs=PACK_ROOT / "docs" if "--docs" in argv else None)


if __name__ == "__main__":
    main(sys.argv[1:])
