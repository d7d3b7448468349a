"""The parts of an evaluation test: a small two-pass workflow (64 px, one step per pass) in API format whose nodes
report an attention share, and a TIFA-format question file for three prompts."""

from __future__ import annotations

import json

CHECKPOINT = "realign_sd15_random.safetensors"
SHARES = {"coarse": 0.25, "realigned": 0.75}  # what the workflow reports as its inside-mask attention share
PROMPTS = ["a red book on a desk", "a blue car next to a green tree", "two dogs playing with a ball"]
QUESTIONS = {  # prompt -> (question, choices, answer)
    PROMPTS[0]: [("is there a book?", ["yes", "no"], "yes"), ("what color is the book?", ["red", "blue"], "red")],
    PROMPTS[1]: [("is there a car?", ["yes", "no"], "yes")],
    PROMPTS[2]: [("how many dogs are there?", ["1", "2", "3"], "2"), ("is there a ball?", ["yes", "no"], "yes")],
}


def two_pass_prompt(checkpoint: str = CHECKPOINT, size: int = 64, steps: int = 1) -> dict:
    """An API-format workflow: prompt and seed nodes, a coarse pass, a second pass (same seed, stronger guidance),
    and a node reporting an attention share in the web UI's text output."""
    sampler = {"steps": steps, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a cat"}, "_meta": {"title": "Prompt"}},
        "3": {"class_type": "PrimitiveInt", "inputs": {"value": 0}, "_meta": {"title": "Seed (both passes)"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": ["2", 0], "clip": ["1", 1]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "7": {
            "class_type": "KSampler",
            "inputs": {**sampler, "cfg": 4.0, "model": ["1", 0], "seed": ["3", 0], "positive": ["4", 0]}
            | {"negative": ["5", 0], "latent_image": ["6", 0]},
        },
        "8": {
            "class_type": "VAEDecode",
            "inputs": {"samples": ["7", 0], "vae": ["1", 2]},
            "_meta": {"title": "Coarse image"},
        },
        "9": {
            "class_type": "KSampler",
            "inputs": {**sampler, "cfg": 8.0, "model": ["1", 0], "seed": ["3", 0], "positive": ["4", 0]}
            | {"negative": ["5", 0], "latent_image": ["6", 0]},
        },
        "10": {
            "class_type": "VAEDecode",
            "inputs": {"samples": ["9", 0], "vae": ["1", 2]},
            "_meta": {"title": "Realigned image"},
        },
        "11": {"class_type": "PrimitiveString", "inputs": {"value": json.dumps({"inside_share": SHARES})}},
        "12": {
            "class_type": "PreviewAny",
            "inputs": {"source": ["11", 0]},
            "_meta": {"title": "Attention inside masks"},
        },
    }


def write_tifa_questions(path, prompts=PROMPTS) -> None:
    entries = [
        {
            "id": f"t{i}",
            "caption": prompt,
            "question": q,
            "choices": choices,
            "answer": answer,
            "element_type": "object",
        }
        for i, prompt in enumerate(prompts)
        for q, choices, answer in QUESTIONS[prompt]
    ]
    path.write_text(json.dumps(entries, indent=1), encoding="utf-8")
