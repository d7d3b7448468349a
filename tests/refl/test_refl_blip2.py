"""The trainer with the real BLIP-2 caption reward (tiny random BLIP-2 folders): the gradient path and the CLI."""

import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from realign_diff import sd15_keys
from realign_diff.refl.scorer import load_caption_reward
from realign_diff.refl.trainer import ReFLTrainer
from realign_testkit.refl import cli_args, tiny_config

ROOT = Path(__file__).resolve().parents[2]


def test_reward_term_alone_reaches_unet_weights_through_blip2(tmp_path, tiny_base, prompts_file, blip2_dirs):
    captioner, text_encoder = blip2_dirs
    config = tiny_config(
        tiny_base,
        prompts_file,
        tmp_path / "o.safetensors",
        captioner=str(captioner),
        text_encoder=str(text_encoder),
        pre_loss_weight=0.0,
        baseline="none",
        reward_margin=1.0,
    )
    trainer = ReFLTrainer(config)  # loads the reward from the folders, as the CLI does
    assert all(not p.requires_grad for p in trainer.scorer.parameters())
    out = trainer.reward_step(["a red book and a yellow pen"])
    assert len(out.captions) == 1 and -1.0 <= out.rewards.item() <= 1.0
    assert out.cost.item() > 0  # a random captioner does not reproduce the prompt: the hinge is active
    out.loss.backward()
    grads = [p.grad for p in trainer.unet.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    assert all(p.grad is None for p in trainer.scorer.parameters())  # BLIP-2 stays frozen


def test_prompt_likelihood_term_alone_also_reaches_the_unet(tmp_path, tiny_base, prompts_file, blip2_dirs):
    captioner, text_encoder = blip2_dirs
    config = tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors", pre_loss_weight=0.0)
    trainer = ReFLTrainer(config, load_caption_reward(str(captioner), str(text_encoder), "cpu", torch.float32))
    trainer.config.prompt_likelihood_weight = 1.0
    trainer.baseline.kind = "batch"  # with one image the score-function term is then exactly zero
    out = trainer.reward_step(["a photo of a cat sitting on a sofa"])
    out.loss.backward()
    assert sum(p.grad.abs().sum().item() for p in trainer.unet.parameters() if p.grad is not None) > 0


def test_cli_trains_two_steps_with_blip2_folders(tmp_path, tiny_base, prompts_file, blip2_dirs):
    out = tmp_path / "refl.safetensors"
    flags = dict(gradient_accumulation_steps=1, max_steps=2, validation_split=0.25, validation_steps=1)
    args = cli_args(tiny_base, prompts_file, blip2_dirs, out, validation_batch_size=2, checkpointing_steps=1, **flags)
    command = [sys.executable, str(ROOT / "training" / "refl.py"), *args, "--gradient-checkpointing"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "***** Running training *****" in result.stderr and "done: 2 steps" in result.stdout
    base, trained = load_file(str(tiny_base)), load_file(str(out))
    assert any(not torch.equal(base[k], trained[k]) for k in base if k.startswith(sd15_keys.UNET_PREFIX))
    assert all(torch.equal(base[k], trained[k]) for k in base if not k.startswith(sd15_keys.UNET_PREFIX))
    run = tmp_path / "refl-run"
    assert (run / "checkpoint-2" / "state.pt").is_file() and (run / "metrics.csv").is_file()
