"""Which ComfyUI models and CLIPs the Realign Attention Patch works on, and how it reads each one.

The fine stage of RealignDiff (arXiv 2305.19599) re-weights UNet cross-attention between image positions and
prompt tokens; it works on every model whose text reaches the UNet through cross-attention over CLIP tokens:
SD-1.x (CLIP-L, 768 wide), SD 2.x (OpenCLIP ViT-H, 1024 wide) and SDXL base and its fine-tunes (CLIP-L and
CLIP-G side by side, 2048 wide). The SDXL refiner (CLIP-G only, no CLIP-L words to share with the base) and
transformer models (SD3, Flux, ...: joint attention over text and image tokens, no attn2) are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Family:
    name: str
    config_class: str  # ComfyUI's supported_models class (its subclasses are fine-tunes / variants of it)
    context_width: int
    clip_keys: frozenset[str]  # the keys of CLIP.tokenize's output for this family's CLIP
    clip_name: str
    clip_fix: str  # how to load the right CLIP when another one is connected


FAMILIES = (
    Family(
        "SD-1.x",
        "SD15",
        768,
        frozenset({"l"}),
        "CLIP-L",
        "connect the CLIP output of the same checkpoint loader, or load an SD-1.5 CLIP-L with Load CLIP "
        "(type stable_diffusion)",
    ),
    Family(
        "SD 2.x",
        "SD20",
        1024,
        frozenset({"h"}),
        "OpenCLIP ViT-H",
        "connect the CLIP output of the same checkpoint loader, or load SD 2.x's OpenCLIP ViT-H with Load CLIP "
        "(type stable_diffusion)",
    ),
    Family(
        "SDXL",
        "SDXL",
        2048,
        frozenset({"g", "l"}),
        "CLIP-L + CLIP-G",
        "connect the CLIP output of the same checkpoint loader, or load clip_l and clip_g with DualCLIPLoader "
        "(type sdxl)",
    ),
)
SUPPORTED = (
    "SD-1.x (SD-1.5 and its fine-tunes), SD 2.x (512 and 768-v) and SDXL base and its fine-tunes (Pony, "
    "Illustrious, NoobAI, ...)"
)
_WHY_NOT = {
    "SDXLRefiner": "the SDXL refiner conditions on CLIP-G alone; patch the SDXL base pass instead",
    "Stable_Cascade_C": "Stable Cascade is not a CLIP cross-attention UNet",
    "Stable_Cascade_B": "Stable Cascade is not a CLIP cross-attention UNet",
}
_CLIP_KINDS = {
    frozenset({"l"}): "SD-1.x CLIP-L (768 wide)",
    frozenset({"h"}): "SD 2.x OpenCLIP ViT-H (1024 wide)",
    frozenset({"g", "l"}): "SDXL CLIP-L + CLIP-G (2048 wide)",
    frozenset({"g"}): "the SDXL refiner's CLIP-G (1280 wide)",
}


def model_family(model) -> Family:
    """The family of a ComfyUI MODEL, or a ValueError naming what it is and what is supported."""
    config = model.model.model_config
    names = [cls.__name__ for cls in type(config).__mro__]
    for family in FAMILIES:
        if family.config_class in names:
            return family
    found = type(config).__name__
    why = _WHY_NOT.get(
        found,
        "it has no UNet cross-attention over CLIP tokens (a transformer model such as SD3 or "
        "Flux attends jointly over text and image tokens)",
    )
    raise ValueError(
        f"Realign Attention Patch works on {SUPPORTED}; this model is {found}: {why}. Load an SD-1.5, SD 2.x or "
        "SDXL checkpoint for the realigned pass."
    )


def clip_kind(keys) -> str:
    keys = frozenset(keys)
    return _CLIP_KINDS.get(keys, f"a CLIP with text encoders {sorted(keys)}")


def clip_family(clip) -> Family | None:
    """The family whose CLIP this is (by the text encoders its tokenizer feeds), or None."""
    keys = frozenset(clip.tokenize("a")) if hasattr(clip, "tokenize") else frozenset()
    return next((f for f in FAMILIES if f.clip_keys == keys), None)


def sd_tokenizers(clip, family: Family | None = None) -> list:
    """ComfyUI's per-encoder tokenizers of this CLIP (one for SD-1.x/2.x; CLIP-G and CLIP-L for SDXL). A
    ValueError when the CLIP is not of a supported family, or not of ``family`` (the MODEL's)."""
    found_family = clip_family(clip)
    wanted = family or found_family
    if wanted is None or found_family != wanted:
        keys = frozenset(clip.tokenize("a")) if hasattr(clip, "tokenize") else frozenset()
        reads = (
            f"the MODEL is {wanted.name}, whose cross-attention reads {wanted.clip_name} ({wanted.context_width} "
            f"wide): {wanted.clip_fix}"
            if wanted
            else f"the patch works on {SUPPORTED}: connect the CLIP of such a checkpoint"
        )
        raise ValueError(f"The CLIP connected to Realign Attention Patch is {clip_kind(keys)}, but {reads}.")
    tokenizer = clip.tokenizer
    if wanted.name == "SDXL":
        found = [getattr(tokenizer, "clip_g", None), getattr(tokenizer, "clip_l", None)]
    else:
        found = [getattr(tokenizer, getattr(tokenizer, "clip", ""), None)]
    if any(t is None or not hasattr(t, "tokenizer") for t in found):
        raise ValueError(
            f"This {wanted.name} CLIP's tokenizer is not ComfyUI's CLIP tokenizer ({type(tokenizer).__name__}): "
            f"{wanted.clip_fix}."
        )
    return found


CLIP_END = 49407  # <|endoftext|>: every chunk of every supported CLIP ends with it


def token_stream(tokens: dict, end_token: int = CLIP_END) -> list[int | None]:
    """One token id per key position of the encoded conditioning, chunk after chunk; None where no word can
    match (padding after each chunk's end token, embeddings). SDXL's CLIP-L and CLIP-G streams must agree:
    the same words in the same places, only their padding differs (L pads with the end token, G with 0)."""
    streams = []
    for key in sorted(tokens):
        stream = []
        for chunk in tokens[key]:
            ended = False
            for token in chunk:
                value = token[0] if isinstance(token[0], int) else None  # an embedding never matches a word
                stream.append(None if ended else value)
                ended = ended or value == end_token
        streams.append(stream)
    if any(s != streams[0] for s in streams[1:]):
        raise RuntimeError(
            f"the text encoders {sorted(tokens)} tokenised the prompt differently (lengths "
            f"{[len(s) for s in streams]}): please report this with the prompt"
        )
    return streams[0]


def sigma_to_timestep(model_sampling) -> Callable[[torch.Tensor], torch.Tensor]:
    """σ -> the timestep t in [0, 1000] that λ_t = λ·t/1000 reads, from the model's own sampling.

    A discrete schedule (eps, v-prediction, zero-terminal-SNR) gives t as ComfyUI does: the index of σ in the
    model's own σ table. Any other (EDM-style continuous σ, a discrete-EDM or distilled variant) gives t =
    1000·(1 - p), where p is the sampling percent at which ComfyUI's ``percent_to_sigma`` reaches σ: the same
    quantity on a discrete schedule, and the log-σ fraction between σ_min and σ_max on an EDM one.
    """
    import comfy.model_sampling

    if type(model_sampling).timestep is comfy.model_sampling.ModelSamplingDiscrete.timestep:
        return model_sampling.timestep

    def from_percent(sigma: torch.Tensor) -> torch.Tensor:
        return torch.tensor([timestep_from_percent(model_sampling.percent_to_sigma, float(sigma.flatten()[0]))])

    return from_percent


def timestep_from_percent(percent_to_sigma: Callable[[float], float], sigma: float, steps: int = 40) -> float:
    """1000·(1 - p) for the p in [0, 1] where the (decreasing) ``percent_to_sigma(p)`` equals σ, by bisection."""
    low, high = 0.0, 1.0
    for _ in range(steps):
        middle = (low + high) / 2
        if float(percent_to_sigma(middle)) > sigma:
            low = middle
        else:
            high = middle
    return 1000.0 * (1.0 - (low + high) / 2)


def word_tokenizer(sd_tokenizer):
    """A word's token ids alone (no start/end token), as the tokenizer writes them inside a prompt."""
    end = -1 if sd_tokenizer.tokenizer_adds_end_token else None

    def tokenize_word(word: str) -> list[int]:
        return sd_tokenizer.tokenizer(word)["input_ids"][sd_tokenizer.tokens_start : end]

    return tokenize_word
