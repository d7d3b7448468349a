"""Local dense captions: tagging (RAM), scoring and local captions, grounding and masks."""
