"""The caption reward: BLIP-2 captions an image; the reward is the cosine of the caption's and the prompt's
BLIP-2 text embeddings (the paper's eq. 4; docs/method.md), plus its differentiable surrogate for ReFL.

Text embedding ``f``: the Q-Former text tower of an image-text retrieval checkpoint (``blip2-itm-vit-g``)
run on the text alone ([CLS] text [SEP], BERT tokenizer of that folder, truncated to the Q-Former's position
limit), its output at the [CLS] token (position 0) through ``text_projection``, L2-normalized: exactly the text
feature BLIP-2's image-text contrastive (ITC) head uses (``Blip2ForImageTextRetrieval`` with
``use_image_text_matching_head=False``). ``R = cos(f(caption), f(prompt))`` lies in [-1, 1].

Gradient path (for the trainer): :meth:`CaptionReward.reward_terms` captions the images and gives the reward, the
log-probability of the generated caption and (optionally) the teacher-forced ``log p_BLIP2(prompt | image)``, all
from one vision pass, the log-probabilities with gradients to the pixels; the trainer combines them, e.g.
``(R - baseline) * log p(caption | x0')``. :meth:`CaptionReward.caption_log_prob` is the teacher-forced
log-probability of any text.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint_file import code_problem, pickled_code
from .blip2_files import Blip2FolderError, check_blip2_dir, download_command, redownload_hint
from .image_prep import ImageStats, preprocess, to_bchw
from .prompts import match_prompts


@dataclass
class RewardTerms:
    """What a ReFL micro-step needs of the reward, from one vision pass (:meth:`CaptionReward.reward_terms`)."""

    rewards: torch.Tensor  # [B] float32 on the CPU, no grad: cos(f(caption), f(prompt))
    captions: list[str]
    log_p_caption: torch.Tensor  # [B] float32, differentiable w.r.t. the pixels: log p(generated ids | image)
    log_p_prompt: torch.Tensor | None  # [B] teacher-forced log p(prompt | image) when asked, else None


@dataclass
class RewardResult:
    rewards: torch.Tensor  # [B] float32, on the CPU
    captions: list[str]  # one per image

    def summary(self, prompts: str | Sequence[str]) -> str:
        """A readable report: the mean, then per image its reward, caption and (when they differ) prompt."""
        prompts = match_prompts(prompts, len(self.captions))
        values = [float(r) for r in self.rewards]
        count = len(values)
        lines = [
            f"Caption reward (BLIP-2): mean {sum(values) / max(count, 1):.4f} over {count} image{'s' * (count != 1)}"
        ]
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


class _SeededSampler:
    """A logits processor that draws each row's next token from its softmax (temperature 1, no truncation) with
    that row's own generator, and leaves only the drawn token: greedy decoding then takes it.

    Sampling inside a batched greedy ``generate`` rather than ``do_sample`` under a seeded global RNG: one batched
    call (per-image calls cost ~20-35% more at 4 images on CPU), row i's draws depend on ``seeds[i]`` and its own
    distribution only, and the global RNG is never touched. Runs after generate's own processors
    (``min_new_tokens`` barring the end-of-text token first).
    """

    def __init__(self, seeds: Sequence[int], device: torch.device):
        self.generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores.float(), dim=-1)
        drawn = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])
        return torch.full_like(scores, float("-inf")).scatter(-1, drawn.unsqueeze(-1), 0.0)


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
    from safetensors import SafetensorError

    kind = "text_encoder" if text_tower else "captioner"
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
    except pickle.UnpicklingError as error:  # torch's own text suggests weights_only=False: not passed on
        code, name = pickled_code(error), f"A .bin weights file in {folder}"
        if code is None:
            raise Blip2FolderError(f"{name} is damaged. {redownload_hint(folder, kind)}") from None
        raise Blip2FolderError(
            f"{code_problem(name, code)} Get the official weights: {download_command(folder, kind)}"
        ) from None
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as error:
        raise Blip2FolderError(
            f"Could not load the {what} from {folder}: {error}. {redownload_hint(folder, kind)}"
        ) from error
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
        self.image_token = int(image_token)
        self.prefix_ids: list[int] = [self.image_token] * int(config.num_query_tokens) + list(empty)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        eos = getattr(captioner.generation_config, "eos_token_id", None) or self.tokenizer.eos_token_id
        self.eos_id = int(eos[0] if isinstance(eos, (list, tuple)) else eos) if eos is not None else None
        # what the language model's own generate stops at (captioner.generate delegates to it), and, with
        # min_new_tokens=1, keeps out of the first step
        stop = getattr(captioner.language_model.generation_config, "eos_token_id", None)
        stop = self.eos_id if stop is None else stop
        stop = [] if stop is None else stop if isinstance(stop, (list, tuple)) else [stop]
        self.stop_ids: list[int] = [int(token) for token in stop]

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
    ) -> CaptionReward:
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
        from transformers import (
            AutoTokenizer,
            Blip2ForConditionalGeneration,
            Blip2Processor,
            Blip2TextModelWithProjection,
        )

        with _quiet_transformers():
            captioner = _load_weights(Blip2ForConditionalGeneration, captioner_dir, dtype, "BLIP-2 captioner")
            text_encoder = _load_weights(
                Blip2TextModelWithProjection,
                text_encoder_dir,
                dtype,
                "BLIP-2 text encoder (Q-Former text tower)",
                text_tower=True,
            )
            try:
                processor = Blip2Processor.from_pretrained(str(captioner_dir))
                text_tokenizer = AutoTokenizer.from_pretrained(str(text_encoder_dir))
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise Blip2FolderError(f"Could not load the tokenizer or image processor: {error}") from error
        return cls(captioner, processor, text_encoder, text_tokenizer).to(device)

    def train(self, mode: bool = True) -> CaptionReward:
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
        """``f(texts)``: [N, D] float32 on the CPU, L2-normalized ([CLS] output of the Q-Former text tower,
        projected)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        device = self.text_encoder.text_projection.weight.device
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.text_tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_text_tokens,
                return_tensors="pt",
            )
            hidden = self.text_encoder(
                input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
            ).text_embeds
            out.append(torch.nn.functional.normalize(hidden[:, 0, :].float(), dim=-1).cpu())
        if not out:
            return torch.zeros(0, self.text_encoder.text_projection.out_features)
        return torch.cat(out)

    def similarity(self, captions: Sequence[str], prompts: str | Sequence[str]) -> torch.Tensor:
        """``cos(f(caption_i), f(prompt_i))`` for given texts: [B] float32 on the CPU. Each distinct text embedded
        once."""
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
    def _generate(
        self, pixels: torch.Tensor, max_new_tokens: int, num_beams: int, text: str = "", **generate_kwargs
    ) -> list[str]:
        """Greedy or beam-searched text for each image; ``text`` (e.g. a VQA question) follows the image tokens."""
        pixel_values = self._pixel_values(pixels)
        prefix = self.prefix_ids
        if text:
            queries = [self.image_token] * int(self.captioner.config.num_query_tokens)
            prefix = queries + list(self.tokenizer(text)["input_ids"])
        input_ids = torch.tensor([prefix] * pixel_values.shape[0], dtype=torch.long, device=pixel_values.device)
        generate_kwargs.setdefault("min_new_tokens", 1)
        out = self.captioner.generate(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            **generate_kwargs,
        )
        if not self.is_encoder_decoder and out.shape[1] >= input_ids.shape[1]:
            out = out[:, input_ids.shape[1] :]  # decoder-only generate returns the prefix too
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
            chunk = pixels[start : start + batch_size]
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
        captions = self.caption(
            pixels,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            batch_size=batch_size,
            on_step=on_step,
            **generate_kwargs,
        )
        rewards = (self.embed_texts(captions) * prompt_embeds[index]).sum(-1)
        return RewardResult(rewards=rewards, captions=captions)

    def forward(self, images: torch.Tensor, prompts: str | Sequence[str], **kwargs) -> torch.Tensor:
        """The plain callable form ``reward(images, prompts) -> rewards`` ([B] float32, CPU): :meth:`score`'s
        rewards."""
        return self.score(images, prompts, **kwargs).rewards

    # ------------------------------------------------------------------ differentiable surrogate
    def reward_terms(
        self,
        pixels: torch.Tensor,
        prompts: str | Sequence[str],
        *,
        max_new_tokens: int = 30,
        num_beams: int = 1,
        sampling: bool = False,
        seeds: Sequence[int] | None = None,
        prompt_log_prob: bool = False,
    ) -> RewardTerms:
        """Caption, reward and log-probabilities for a ReFL micro-step, from ONE vision pass (ViT, Q-Former,
        projection).

        ``pixels``: [B, 3, H, W] (or [B, H, W, 3]) float in [0, 1], usually requiring grad. The image prefix is
        computed once with gradient; captions are generated from its detached copy; the teacher-forced
        log-probabilities reuse it, so their gradients reach ``pixels`` (never BLIP-2's frozen weights).

        Decoding (``min_new_tokens=1``, as :meth:`score`): ``sampling=False`` is greedy (``num_beams=1``) or beam
        search, the captions and rewards :meth:`score` gives; ``seeds`` is ignored. ``sampling=True`` draws each
        caption from the captioner's own distribution (temperature 1, no top-k / top-p truncation, one beam,
        ``num_beams`` ignored), image i's tokens with a ``torch.Generator`` seeded by ``seeds[i]`` (see
        :class:`_SeededSampler`), so its caption depends on that seed and that image only, not on the rest of the
        batch or on how a batch is split over processes (up to the floating-point difference between a batched
        and a single forward), and the global RNG is left alone (``seeds=None``: seeds drawn from it).

        ``log_p_caption[i]`` is the log-probability of the generated token ids themselves (not of the decoded text
        re-tokenized), end-of-text token INCLUDED when it was generated (a caption cut at ``max_new_tokens`` has
        none), padding after it excluded, under the distribution the caption was decoded from: the first step
        renormalized without the end-of-text token, which ``min_new_tokens=1`` bars there. For sampled captions
        it is thus exactly the log-probability of the sample, and ``(R - b) * grad log_p_caption`` the unbiased
        score-function estimator. A caption without tokens contributes 0 (and when every caption is empty the
        result has no graph). ``log_p_prompt`` (``prompt_log_prob=True``): :meth:`caption_log_prob` of the
        prompts (no end-of-text token), from the same prefix. ``rewards``: :meth:`similarity` of the captions.
        """
        pixels = to_bchw(pixels)
        prompts = match_prompts(prompts, pixels.shape[0])
        prefix = self._image_prefix(pixels)
        sequences = self._decode(prefix.detach(), max_new_tokens, num_beams, sampling, seeds)
        captions = [text.strip() for text in self.tokenizer.batch_decode(sequences, skip_special_tokens=True)]
        log_p_caption = self._sequence_log_prob(prefix, sequences, barred_first=self.stop_ids)
        log_p_prompt = self._sequence_log_prob(prefix, self._text_tokens(prompts)) if prompt_log_prob else None
        return RewardTerms(self.similarity(captions, prompts), captions, log_p_caption, log_p_prompt)

    def caption_log_prob(
        self, pixels: torch.Tensor, texts: str | Sequence[str], *, include_eos: bool = False
    ) -> torch.Tensor:
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
        if include_eos and self.eos_id is None:
            raise ValueError("include_eos=True, but the captioner's tokenizer has no end-of-text token")
        token_lists = self._text_tokens(texts, include_eos)
        if not any(token_lists):
            return torch.zeros(batch, device=self.model_device)
        return self._sequence_log_prob(self._image_prefix(pixels), token_lists)

    def _text_tokens(self, texts: Sequence[str], include_eos: bool = False) -> list[list[int]]:
        token_lists = [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
        return [ids + [self.eos_id] for ids in token_lists] if include_eos else token_lists

    def _prefix_ids(self, batch: int) -> torch.Tensor:
        return torch.tensor([self.prefix_ids] * batch, dtype=torch.long, device=self.model_device)

    def _image_prefix(self, pixels: torch.Tensor) -> torch.Tensor:
        """The language model's input embeddings of :attr:`prefix_ids`, image tokens replaced by the projected
        Q-Former output, as BLIP-2's forward and generate build them: [B, len(prefix_ids), D]. The vision pass."""
        model = self.captioner
        image_embeds = model.vision_model(pixel_values=self._pixel_values(pixels), return_dict=True).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        queries = model.qformer(
            query_embeds=model.query_tokens.expand(image_embeds.shape[0], -1, -1),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
            return_dict=True,
        ).last_hidden_state
        features = model.language_projection(queries.to(image_embeds.dtype))  # the Q-Former runs in fp32
        prefix = self._prefix_ids(image_embeds.shape[0])
        embeds = model.get_input_embeddings()(prefix)
        return embeds.masked_scatter((prefix == self.image_token).unsqueeze(-1), features.to(embeds.dtype))

    @torch.no_grad()
    def _decode(
        self, prefix: torch.Tensor, max_new_tokens: int, num_beams: int, sampling: bool, seeds: Sequence[int] | None
    ) -> list[list[int]]:
        """Generated ids per image, up to and including the first end-of-text token."""
        kwargs = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": False}
        if sampling:
            from transformers import LogitsProcessorList

            seeds = torch.randint(0, 2**62, (prefix.shape[0],)).tolist() if seeds is None else list(seeds)
            if len(seeds) != prefix.shape[0]:
                raise ValueError(f"{len(seeds)} seeds for {prefix.shape[0]} images: give one seed per image.")
            kwargs.update(num_beams=1, logits_processor=LogitsProcessorList([_SeededSampler(seeds, prefix.device)]))
        return [self._until_stop(row) for row in self._generate_ids(prefix, **kwargs)]

    def _generate_ids(self, prefix: torch.Tensor, **generate_kwargs) -> list[list[int]]:
        ids = self._prefix_ids(prefix.shape[0])
        inputs = {"inputs_embeds": prefix, "attention_mask": torch.ones_like(ids)}
        if not self.is_encoder_decoder:
            inputs["input_ids"] = ids
        out = self.captioner.language_model.generate(**inputs, min_new_tokens=1, **generate_kwargs)
        start = 1 if self.is_encoder_decoder else ids.shape[1]  # drop the decoder start token / the echoed prefix
        return out[:, start:].tolist()

    def _until_stop(self, row: list[int]) -> list[int]:
        for k, token in enumerate(row):
            if token in self.stop_ids:
                return row[: k + 1]
        return row

    def _sequence_log_prob(
        self, prefix: torch.Tensor, token_lists: list[list[int]], barred_first: Sequence[int] = ()
    ) -> torch.Tensor:
        """``sum_k log p(token_k | image, tokens before k)`` per row, teacher-forced after ``prefix``: [B] float32.
        ``barred_first``: ids taken out of the first step's distribution (renormalized without them)."""
        batch, device = prefix.shape[0], prefix.device
        length = max((len(ids) for ids in token_lists), default=0)
        if length == 0:
            return torch.zeros(batch, device=device)
        text_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        text_mask = torch.zeros(batch, length, dtype=torch.long)
        for i, ids in enumerate(token_lists):
            text_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            text_mask[i, : len(ids)] = 1
        text_ids, text_mask = text_ids.to(device), text_mask.to(device)
        logits = self._text_logits(prefix, text_ids, text_mask).float()
        if barred_first:
            barred = torch.zeros(logits.shape[-1], dtype=torch.bool, device=device)
            barred[list(barred_first)] = True
            logits = torch.cat([logits[:, :1].masked_fill(barred, float("-inf")), logits[:, 1:]], dim=1)
        log_probs = torch.log_softmax(logits, dim=-1).gather(-1, text_ids.unsqueeze(-1)).squeeze(-1)
        # where, not a product: a padded position may hold a barred id (log-prob -inf)
        return torch.where(text_mask.bool(), log_probs, torch.zeros_like(log_probs)).sum(-1)

    def _text_logits(self, prefix: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Language-model logits after ``prefix``, position k predicting ``text_ids[:, k]``: [B, L, vocab]."""
        language_model = self.captioner.language_model
        prefix_mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        if self.is_encoder_decoder:
            start = getattr(self.captioner.config.text_config, "decoder_start_token_id", None)
            start_col = torch.full_like(text_ids[:, :1], self.pad_id if start is None else start)
            decoder_ids = torch.cat([start_col, text_ids[:, :-1]], dim=1)
            decoder_mask = torch.cat([torch.ones_like(start_col), text_mask[:, :-1]], dim=1)
            return language_model(
                inputs_embeds=prefix,
                attention_mask=prefix_mask,
                decoder_input_ids=decoder_ids,
                decoder_attention_mask=decoder_mask,
            ).logits
        text_embeds = language_model.get_input_embeddings()(text_ids)
        logits = language_model(
            inputs_embeds=torch.cat([prefix, text_embeds], dim=1),
            attention_mask=torch.cat([prefix_mask, text_mask], dim=1),
        ).logits
        p = prefix.shape[1]
        return logits[:, p - 1 : p - 1 + text_ids.shape[1]]  # position k predicts token k + 1
