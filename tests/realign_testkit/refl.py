"""Helpers for trainer tests: a tiny differentiable caption scorer and small training setups.

``ToyCaptionScorer`` has the caption reward's interface (``score``, ``caption_log_prob``, ``reward_terms``) on a few
thousand parameters: its "caption" is the top words of a linear read-out of pooled pixels, its reward the
cosine of that read-out's word distribution with the prompt's bag of words, and its log-probability a
teacher-forced sum of word log-softmaxes. It lets the trainer's step be tested on any scorer, as the trainer
promises; the real BLIP-2 reward is tested through the same trainer with tiny BLIP-2 folders.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

VOCAB = ["a", "red", "blue", "yellow", "green", "cat", "dog", "book", "pen", "cup", "on", "table", "two", "small"]


class ToyCaptionScorer:
    def __init__(self, seed: int = 0, words: int = 3, nan: bool = False):
        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(len(VOCAB), 3 * 4 * 4, generator=gen)
        self.words, self.nan = words, nan
        self.calls = {"score": 0, "caption_log_prob": 0, "reward_terms": 0}

    def _logits(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(pixels.float(), 4).flatten(1)
        return 20 * (pooled - 0.5) @ self.weight.to(pixels.device).T

    def _bag(self, text: str) -> torch.Tensor:
        bag = torch.zeros(len(VOCAB))
        for word in text.lower().split():
            if word in VOCAB:
                bag[VOCAB.index(word)] += 1
        return bag

    def _captions(self, word_ids) -> list[str]:
        return [" ".join(VOCAB[i] for i in sorted(row.tolist())) for row in word_ids]

    def _rewards(self, logits: torch.Tensor, prompts) -> torch.Tensor:
        # a continuous reward (cosine of the word distribution with the prompt's words), so it varies image to image
        probs = logits.detach().cpu().softmax(-1)
        rewards = torch.stack([F.cosine_similarity(q, self._bag(p), dim=0) for q, p in zip(probs, prompts)])
        return torch.full_like(rewards, float("nan")) if self.nan else rewards

    def _bag_log_prob(self, log_p: torch.Tensor, texts) -> torch.Tensor:
        return (log_p * torch.stack([self._bag(t) for t in texts]).to(log_p.device)).sum(-1)

    def score(self, images: torch.Tensor, prompts, max_new_tokens: int = 30, num_beams: int = 1):
        self.calls["score"] += 1
        assert images.dim() == 4 and images.shape[-1] == 3, "images must be [B, H, W, 3]"
        logits = self._logits(images.permute(0, 3, 1, 2)).cpu()
        captions = self._captions(logits.topk(self.words, dim=-1).indices)
        return SimpleNamespace(rewards=self._rewards(logits, prompts), captions=captions)

    def caption_log_prob(self, pixels: torch.Tensor, texts) -> torch.Tensor:
        self.calls["caption_log_prob"] += 1
        assert pixels.dim() == 4 and pixels.shape[1] == 3, "pixels must be [B, 3, H, W]"
        return self._bag_log_prob(F.log_softmax(self._logits(pixels), dim=-1), texts)

    def reward_terms(
        self,
        pixels: torch.Tensor,
        prompts,
        *,
        max_new_tokens: int = 30,
        num_beams: int = 1,
        sampling: bool = False,
        seeds=None,
        prompt_log_prob: bool = False,
    ):
        """``score`` + ``caption_log_prob`` (+ of the prompts) from one ``_logits`` pass, like ``CaptionReward``'s.

        ``sampling``: image i's words are drawn (with replacement) from its word distribution by a generator
        seeded with ``seeds[i]``; otherwise its top words, as ``score``. Its log-probability is that of the
        words drawn (their bag), so it equals ``caption_log_prob`` of the caption.
        """
        self.calls["reward_terms"] += 1
        assert pixels.dim() == 4 and pixels.shape[1] == 3, "pixels must be [B, 3, H, W]"
        logits = self._logits(pixels)
        log_p = F.log_softmax(logits, dim=-1)
        if sampling:
            seeds = torch.randint(0, 2**62, (len(pixels),)).tolist() if seeds is None else list(seeds)
            assert len(seeds) == len(pixels), "one seed per image"
            probs = log_p.detach().exp().cpu()
            word_ids = [
                torch.multinomial(
                    probs[i], self.words, replacement=True, generator=torch.Generator().manual_seed(int(seed))
                )
                for i, seed in enumerate(seeds)
            ]
        else:
            word_ids = logits.detach().cpu().topk(self.words, dim=-1).indices
        captions = self._captions(word_ids)
        return SimpleNamespace(
            rewards=self._rewards(logits, prompts),
            captions=captions,
            log_p_caption=self._bag_log_prob(log_p, captions),
            log_p_prompt=self._bag_log_prob(log_p, prompts) if prompt_log_prob else None,
        )


PROMPTS = [
    "a red book",
    "a blue cup on a table",
    "two small dogs",
    "a yellow pen",
    "a green cat",
    "a red cup",
    "a blue book on a table",
    "two cats",
]


def write_prompts(path: str | Path, prompts=PROMPTS) -> Path:
    path = Path(path)
    path.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return path


def tiny_config(base: Path, prompts: Path, output: Path, **overrides):
    """A TrainConfig that trains the tiny test checkpoint in seconds on CPU."""
    from realign_diff.refl.config import TrainConfig

    settings = dict(
        base=str(base),
        prompts=str(prompts),
        output=str(output),
        resolution=16,
        num_inference_steps=4,
        refl_step_min=2,
        refl_step_max=3,
        guidance_scale=2.0,
        train_batch_size=1,
        gradient_accumulation_steps=1,
        max_steps=2,
        learning_rate=1e-3,
        reward_weight=1.0,
        baseline="none",
        validation_split=0.0,
        validation_steps=0,
        checkpointing_steps=0,
        progress_bar=False,
        tensorboard=False,
        device="cpu",
        seed=0,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


# A UNet with SD-1.5's structure (a cross-attention level, then a plain level, a mid block) at a tiny width:
# the trainer reads every shape from the file, so its tests need not pay for 320 channels.
TINY_UNET = {
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
}


def cli_args(base, prompts, blip2_dirs, output, **flags) -> list[str]:
    """``training/refl.py`` arguments for a tiny run: the test models, 16 px, 4 rollout steps, a large learning rate
    and reward weight (so a few steps move the weights), on the CPU; ``flags`` (``max_steps=2``,
    ``keep_best=False`` for ``--no-keep-best``) add to or override them."""
    captioner, text_encoder = blip2_dirs
    flags = {
        "base": base,
        "prompts": prompts,
        "output": output,
        "captioner": captioner,
        "text_encoder": text_encoder,
        "resolution": 16,
        "num_inference_steps": 4,
        "refl_step_min": 2,
        "refl_step_max": 3,
        "learning_rate": "1e-3",
        "reward_weight": 1,
        "device": "cpu",
        "progress_bar": False,
    } | flags
    args = []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is True or value is False:
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def write_tiny_sd1_checkpoint(path: str | Path, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """A random SD-1-layout checkpoint with a tiny UNet, CLIP and VAE (a few MB; not loadable by ComfyUI)."""
    import copy

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from realign_diff import sd15_configs
    from realign_testkit.sd15_checkpoint import TINY_CLIP, TINY_VAE, ldm_state_dict

    torch.manual_seed(seed)
    unet_config = {**copy.deepcopy(sd15_configs.UNET), **TINY_UNET, "cross_attention_dim": TINY_CLIP["hidden_size"]}
    unet = UNet2DConditionModel(**unet_config)
    vae = AutoencoderKL(**{**sd15_configs.VAE, **TINY_VAE})
    text_encoder = CLIPTextModel(CLIPTextConfig(**{**sd15_configs.CLIP_TEXT, **TINY_CLIP}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(unet, vae, text_encoder, dtype), str(path))
    return path


def assert_same_run(expected_output: Path, got_output: Path, expected_run_dir: Path, got_run_dir: Path) -> None:
    """Two runs that must be one: bit-identical output files and the same metrics.csv (timing column aside)."""
    from safetensors.torch import load_file

    expected, got = load_file(str(expected_output)), load_file(str(got_output))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key

    def strip(path):
        return [row.rsplit(",", 1)[0] for row in (path / "metrics.csv").read_text().splitlines()]

    assert strip(got_run_dir) == strip(expected_run_dir)
