"""Names every node module shares."""

CATEGORY = "RealignDiff"
GUIDANCE = "REALIGN_GUIDANCE"  # a list of realign_diff.guidance.RealignGuidance, one per image
# ComfyUI ModelPatchers around the captioner's models (see nodes/comfy_runtime.managed)
RAM = "REALIGN_RAM"  # realign_diff.dense_captioner.ram.RamTagger
GROUNDING_DINO = "REALIGN_GROUNDING_DINO"  # realign_diff.dense_captioner.grounding.GroundingDinoDetector
SAM = "REALIGN_SAM"  # realign_diff.dense_captioner.sam.SamSegmenter
# the prompt input of the scorers: one line for every image, or one line per image
PER_IMAGE_PROMPT = (
    "STRING",
    {
        "multiline": True,
        "default": "",
        "tooltip": "The prompt the images should show. One line: used for every image. Several lines: "
        "exactly one per image, in batch order (empty lines are ignored).",
    },
)


def node_id(name: str) -> str:
    """Stable node IDs: never rename one once shipped, or saved workflows stop loading."""
    return f"RealignDiff{name}"
