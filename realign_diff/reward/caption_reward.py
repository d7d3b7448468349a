"""The caption reward: BLIP-2 captions an image; the reward is the cosine of the caption's and the prompt's
BLIP-2 text embeddings (shared/SPEC.md, "Caption reward"), plus its differentiable surrogate for ReFL.

Text embedding ``f``: the Q-Former text tower of an image-text retrieval checkpoint (``blip2-itm-vit-g``)
run on the text alone ([CLS] text [SEP], BERT tokenizer of that folder, truncated to the Q-Former's position
limit), its output at the [CLS] token (position 0) through ``text_projection``, L2-normalized: exactly the text
feature BLIP-2's image-text contrastive (ITC) head uses (``Blip2ForImageTextRetrieval`` with
``use_image_text_matching_head=False``). ``R = cos(f(caption), f(prompt))`` lies in [-1, 1].

Gradient path (for the trainer): :meth:`CaptionReward.caption_log_prob` gives the teacher-forced
``log p_BLIP2(text | image)`` with gradients to the pixels; the trainer combines it with the (gradient-free)
reward, e.g. ``(R - baseline) * log p(caption | x0')``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from .blip2_files import Blip2FolderError, check_blip2_dir
from .image_prep import ImageStats, preprocess, to_bchw
from .prompts import match_prompts


@dataclass
class RewardResult:
    rewards: torch.Tensor  # [B] float32, on the CPU
    captions: list[str]  # one per image

    def summary(self, prompts: str | Sequence[str]) -> str:
        """A readable report: the mean, then per image its reward, caption and (when they differ) prompt."""
        prompts = match_prompts(prompts, len(self.captions))
        values = [float(r) for r in self.rewards]
        count = len(values)
        lines = [f"Caption reward (BLIP-2): mean {sum(values) / max(count, 1):.4f} over {count} image{'s' * (count != 1)}"]
        if len(set(prompts)) == 1 and prompts:
            lines.append(f"prompt: {prompts[0]}")
        for i, (value, caption) in enumerate(zip(values, self.captions)):
            lines.append(f"#{i + 1}  {value:+.4f}  caption: {caption}")
            if len(set(prompts)) > 1:
                lines.append(f"           prompt:  {prompts[i]}")
        return "\n".join(lines)


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """fp32 on the CPU; on CUDA bf16 where supported (T5 captioners overflow in fp16), else fp16; fp16 elsewhere."""
    device = torch.device(device)
    if device.type == "cpu":
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16


@contextmanager
def _quiet_transformers():
    """No progress bars or 'unexpected keys' reports while loading (the retrieval folder's vision tower is skipped
    on purpose); missing weights are still checked, by us."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _load_weights(model_class, folder: Path, dtype: torch.dtype, what: str, text_tower: bool = False):
    try:
        kwargs = {}
        if text_tower:
            # the Q-Former's text feed-forward layers exist only with this flag; set it whatever the folder's
            # config says, and let the missing-weights check below catch a checkpoint that has no text tower
            from transformers import Blip2Config

            config = Blip2Config.from_pretrained(str(folder))
            config.qformer_config.use_qformer_text_input = True
            kwargs["config"] = config
        model, info = model_class.from_pretrained(str(folder), dtype=dtype, output_loading_info=True, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise Blip2FolderError(f"Could not load the {what} from {folder}: {error}") from error
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise Blip2FolderError(f"{folder} does not hold a complete {what}: weights missing for {shown}.")
    return model.eval().requires_grad_(False)


class CaptionReward(torch.nn.Module):
    """A BLIP-2 captioner and a BLIP-2 text encoder; ``reward(images, prompts) -> rewards`` (see :meth:`score`).

    An ``nn.Module`` so that ``.to()`` moves both models and ComfyUI's ModelPatcher can manage them as one.
    The models stay frozen and in eval mode (``train()`` does not change that).
    """

    def __init__(self, captioner, processor, text_encoder, text_tokenizer):
        super().__init__()
        self.captioner = captioner.eval().requires_grad_(False)
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.processor = processor
        self.tokenizer = processor.tokenizer  # the captioner's
        self.text_tokenizer = text_tokenizer  # the retrieval tower's (BERT)
        self.image_stats = ImageStats.from_image_processor(processor.image_processor)

        config = captioner.config
        image_token = getattr(config, "image_token_index", None)
        if image_token is None:
            raise Blip2FolderError(
                "This BLIP-2 captioner's config.json has no image_token_index (a folder saved before transformers "
                "4.47's image-token format). Download the current revision of the model folder."
            )
        self.is_encoder_decoder = not config.use_decoder_only_language_model
        # what captioning starts from: one image token per query (replaced by the Q-Former output), then the
        # tokenizer's own framing of an empty text ("</s>" as BOS for OPT, "</s>" as EOS for the T5 encoder)
        empty = self.tokenizer("", add_special_tokens=True)["input_ids"]
        self.prefix_ids: list[int] = [int(image_token)] * int(config.num_query_tokens) + list(empty)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        eos = getattr(captioner.generation_config, "eos_token_id", None) or self.tokenizer.eos_token_id
        self.eos_id = int(eos[0] if isinstance(eos, (list, tuple)) else eos) if eos is not None else None

        limits = [getattr(text_encoder.config.qformer_config, "max_position_embeddings", 512)]
        if getattr(text_tokenizer, "model_max_length", None) and text_tokenizer.model_max_length < 100_000:
            limits.append(int(text_tokenizer.model_max_length))
        self.max_text_tokens = int(min(limits))

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        captioner_dir: str | Path,
        text_encoder_dir: str | Path,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> "CaptionReward":
        """Load from local Hugging Face folders (nothing is downloaded).

        ``captioner_dir``: a ``Blip2ForConditionalGeneration`` folder (blip2-opt-2.7b, blip2-flan-t5-xl, ...).
        ``text_encoder_dir``: an image-text retrieval folder (blip2-itm-vit-g); only its text tower is loaded.
        ``device``: default CUDA when available, else CPU. ``dtype``: default :func:`default_dtype` of the device
        (the Q-Formers stay fp32, as transformers keeps them).
        """
        captioner_dir = check_blip2_dir(captioner_dir, "captioner")
        text_encoder_dir = check_blip2_dir(text_encoder_dir, "text_encoder")
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype or default_dtype(device)
        from transformers import AutoTokenizer, Blip2ForConditionalGeneration, Blip2Processor, Blip2TextModelWithProjection

        with _quiet_transformers():
            captioner = _load_weights(Blip2ForConditionalGeneration, captioner_dir, dtype, "BLIP-2 captioner")
            text_encoder = _load_weights(Blip2TextModelWithProjection, text_encoder_dir, dtype,
                                         "BLIP-2 text encoder (Q-Former text tower)", text_tower=True)
            try:
                processor = Blip2Processor.from_pretrained(str(captioner_dir))
                text_tokenizer = AutoTokenizer.from_pretrained(str(text_encoder_dir))
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise Blip2FolderError(f"Could not load the tokenizer or image processor: {error}") from error
        return cls(captioner, processor, text_encoder, text_tokenizer).to(device)

    def train(self, mode: bool = True) -> "CaptionReward":
        return super().train(False)  # a frozen reward model: dropout stays off

    @property
    def model_device(self) -> torch.device:
        """Where the captioner's weights are (ComfyUI may have moved them)."""
        return self.captioner.vision_model.embeddings.patch_embedding.weight.device

    @property
    def model_dtype(self) -> torch.dtype:
        return self.captioner.vision_model.embeddings.patch_embedding.weight.dtype

    # ------------------------------------------------------------------ text embeddings
    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """``f(texts)``: [N, D] float32 on the CPU, L2-normalized ([CLS] output of the Q-Former text tower, projected)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        device = self.text_encoder.text_projection.weight.device
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.text_tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                         max_length=self.max_text_tokens, return_tensors="pt")
            hidden = self.text_encoder(input_ids=tokens["input_ids"].to(device),
                                       attention_mask=tokens["attention_mask"].to(device)).text_embeds
            out.append(torch.nn.functional.normalize(hidden[:, 0, :].float(), dim=-1).cpu())
        if not out:
            return torch.zeros(0, self.text_encoder.text_projection.out_features)
        return torch.cat(out)

    def similarity(self, captions: Sequence[str], prompts: str | Sequence[str]) -> torch.Tensor:
        """``cos(f(caption_i), f(prompt_i))`` for given texts: [B] float32 on the CPU. Each distinct text embedded once."""
        captions = list(captions)
        prompts = match_prompts(prompts, len(captions))
        unique = list(dict.fromkeys(prompts))
        prompt_embeds = self.embed_texts(unique)
        index = torch.tensor([unique.index(p) for p in prompts], dtype=torch.long)
        return (self.embed_texts(captions) * prompt_embeds[index]).sum(-1)

    # ------------------------------------------------------------------ captions and rewards
    def _pixel_values(self, pixels: torch.Tensor) -> torch.Tensor:
        return preprocess(pixels.to(self.model_device), self.image_stats, self.model_dtype)

    @torch.no_grad()
    def _generate(self, pixels: torch.Tensor, max_new_tokens: int, num_beams: int, **generate_kwargs) -> list[str]:
        pixel_values = self._pixel_values(pixels)
        input_ids = torch.tensor([self.prefix_ids] * pixel_values.shape[0], dtype=torch.long, device=pixel_values.device)
        generate_kwargs.setdefault("min_new_tokens", 1)
        out = self.captioner.generate(pixel_values=pixel_values, input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      max_new_tokens=max_new_tokens, num_beams=num_beams, **generate_kwargs)
        if not self.is_encoder_decoder and out.shape[1] >= input_ids.shape[1]:
            out = out[:, input_ids.shape[1]:]  # decoder-only generate returns the prefix too
        return [text.strip() for text in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def caption(
        self,
        images: torch.Tensor,
        *,
        max_new_tokens: int = 30,
        num_beams: int = 1,
        batch_size: int = 8,
        on_step: Callable[[int], None] | None = None,
        **generate_kwargs,
    ) -> list[str]:
        """BLIP-2 captions, one per image. ``images``: [B, H, W, 3] (ComfyUI) or [B, 3, H, W], float in [0, 1]."""
        pixels = to_bchw(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        captions: list[str] = []
        for start in range(0, pixels.shape[0], batch_size):
            chunk = pixels[start:start + batch_size]
            captions += self._generate(chunk, max_new_tokens, num_beams, **generate_kwargs)
            if on_step is not None:
                on_step(chunk.shape[0])
        return captions

    def score(
        self,
        images: torch.Tensor,
        prompts: str | Sequence[str],
        *,
        max_new_tokens: int = 30,
        num_beams: int = 1,
        batch_size: int = 8,
        on_step: Callable[[int], None] | None = None,
        **generate_kwargs,
    ) -> RewardResult:
        """Caption every image and compare the caption with its prompt: ``R = cos(f(caption), f(prompt))``.

        ``images``: [B, H, W, 3] (ComfyUI IMAGE) or [B, 3, H, W], float in [0, 1] (resized and normalized here).
        ``prompts``: one string for every image, or one per image. ``num_beams=1`` is greedy decoding; further
        keyword arguments go to ``generate`` (``do_sample=True``, ``temperature``...). ``on_step(n)`` is called
        after each batch with its number of images (progress, cancel). No gradients: see :meth:`caption_log_prob`.
        """
        pixels = to_bchw(images)
        prompts = match_prompts(prompts, pixels.shape[0])
        unique = list(dict.fromkeys(prompts))
        prompt_embeds = self.embed_texts(unique)  # each distinct prompt once
        index = torch.tensor([unique.index(p) for p in prompts], dtype=torch.long)
        captions = self.caption(pixels, max_new_tokens=max_new_tokens, num_beams=num_beams, batch_size=batch_size,
                                on_step=on_step, **generate_kwargs)
        rewards = (self.embed_texts(captions) * prompt_embeds[index]).sum(-1)
        return RewardResult(rewards=rewards, captions=captions)

    def forward(self, images: torch.Tensor, prompts: str | Sequence[str], **kwargs) -> torch.Tensor:
        """The plain callable form ``reward(images, prompts) -> rewards`` ([B] float32, CPU): :meth:`score`'s rewards."""
        return self.score(images, prompts, **kwargs).rewards

    # ------------------------------------------------------------------ differentiable surrogate
    def caption_log_prob(self, pixels: torch.Tensor, texts: str | Sequence[str], *, include_eos: bool = False) -> torch.Tensor:
        """Teacher-forced ``log p_BLIP2(text_i | image_i)``, summed over the text's tokens: [B] float32.

        ``pixels``: [B, 3, H, W] (or [B, H, W, 3]) float in [0, 1]; gradients flow to it through the torch
        preprocessing (values outside [0, 1] are clamped, so they get no gradient). ``texts``: one per image (or
        one for all), re-tokenized with the captioner's tokenizer; ``include_eos`` adds the end-of-text token's
        log-probability (the probability of the text as a whole caption, not as a prefix). The result is on the
        captioner's device, in the autograd graph when ``pixels`` requires grad.
        """
        pixels = to_bchw(pixels)
        batch = pixels.shape[0]
        texts = [texts] * batch if isinstance(texts, str) else list(texts)
        if len(texts) == 1 and batch > 1:
            texts = texts * batch
        if len(texts) != batch:
            raise ValueError(f"{len(texts)} texts for {batch} images: give one text for all, or one per image.")
        device = self.model_device
        token_lists = [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        if include_eos:
            if self.eos_id is None:
                raise ValueError("include_eos=True, but the captioner's tokenizer has no end-of-text token")
            token_lists = [ids + [self.eos_id] for ids in token_lists]
        length = max(len(ids) for ids in token_lists)
        if length == 0:
            return torch.zeros(batch, device=device)
        text_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        text_mask = torch.zeros(batch, length, dtype=torch.long)
        for i, ids in enumerate(token_lists):
            text_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            text_mask[i, :len(ids)] = 1
        text_ids, text_mask = text_ids.to(device), text_mask.to(device)
        prefix = torch.tensor([self.prefix_ids] * batch, dtype=torch.long, device=device)
        pixel_values = self._pixel_values(pixels)

        if self.is_encoder_decoder:
            config = self.captioner.config.text_config
            start = getattr(config, "decoder_start_token_id", None)
            start = self.pad_id if start is None else start
            start_col = torch.full((batch, 1), start, dtype=torch.long, device=device)
            decoder_ids = torch.cat([start_col, text_ids[:, :-1]], dim=1)
            decoder_mask = torch.cat([torch.ones_like(start_col), text_mask[:, :-1]], dim=1)
            logits = self.captioner(pixel_values=pixel_values, input_ids=prefix, attention_mask=torch.ones_like(prefix),
                                    decoder_input_ids=decoder_ids, decoder_attention_mask=decoder_mask).logits
        else:
            input_ids = torch.cat([prefix, text_ids], dim=1)
            attention_mask = torch.cat([torch.ones_like(prefix), text_mask], dim=1)
            logits = self.captioner(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask).logits
            p = prefix.shape[1]
            logits = logits[:, p - 1:p - 1 + length]  # position k predicts token k + 1
        log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, text_ids.unsqueeze(-1)).squeeze(-1)
        return (log_probs * text_mask).sum(-1)
