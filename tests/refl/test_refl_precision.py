"""Precision that keeps the reward gradient: the 'auto' choices, and the reward gradient each one gives.

A GPU's 'auto' is bf16 autocast with bf16 frozen models (bf16 GPUs) or fp16 autocast with loss scaling and
fp16 frozen models (older GPUs); the CPU's is fp32. Each is emulated here on the CPU, whose autocast and
kernels take both half types, with the tiny BLIP-2 reward: the UNet's gradient of the reward term alone must
be non-zero and point where the fp32 gradient points.
"""

import pytest
import torch

from realign_diff.dtypes import name_of
from realign_diff.refl import precision
from realign_diff.refl.trainer import ReFLTrainer
from realign_testkit.refl import tiny_config

# cosine between the half-precision and the fp32 reward gradient of the UNet, over all its weights: bf16 keeps
# 8 bits of mantissa, so the gradients agree in direction but not to many digits
MIN_COSINE = 0.9


def test_auto_follows_the_autocast_and_never_runs_t5_in_fp16():
    bf16_gpu = precision.resolve("auto", "auto", "cuda", bf16_supported=True)
    assert (bf16_gpu.mixed, bf16_gpu.frozen, bf16_gpu.loss_scaling) == ("bf16", torch.bfloat16, False)
    fp16_gpu = precision.resolve("auto", "auto", "cuda", bf16_supported=False)
    assert (fp16_gpu.mixed, fp16_gpu.frozen, fp16_gpu.loss_scaling) == ("fp16", torch.float16, True)
    cpu = precision.resolve("auto", "auto", "cpu", bf16_supported=False)
    assert (cpu.mixed, cpu.frozen, cpu.captioner) == ("no", torch.float32, torch.float32)
    t5 = precision.resolve("auto", "auto", "cuda", bf16_supported=False, t5_captioner=True)
    assert (t5.frozen, t5.captioner) == (torch.float16, torch.float32) and "Flan-T5" in t5.notes[0]
    assert precision.resolve("fp16", "auto", "cuda", True, t5_captioner=True).captioner == torch.bfloat16
    unscaled = precision.resolve("bf16", "fp16", "cuda", True)
    assert unscaled.frozen == torch.float16 and "may underflow" in unscaled.notes[0]


def test_t5_captioner_is_read_from_the_folder(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "blip-2", "text_config": {"model_type": "t5"}}')
    assert precision.is_t5_captioner(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "blip-2", "text_config": {"model_type": "opt"}}')
    assert not precision.is_t5_captioner(tmp_path) and not precision.is_t5_captioner(None)


def _reward_gradient(config) -> torch.Tensor:
    trainer = ReFLTrainer(config)
    out = trainer.reward_step(["a red book and a yellow pen", "two small dogs on a table"])
    assert out.cost.sum() > 0  # the hinge is active: there is a reward gradient to keep
    trainer.scaler.scale(out.loss).backward()
    trainer.scaler.unscale_(trainer.optimizer)
    grads = [p.grad.flatten() for p in trainer.params if p.grad is not None]
    return torch.cat(grads).double()


@pytest.mark.parametrize("gpu", ["bf16-gpu", "fp16-gpu"])
def test_the_auto_precision_of_each_gpu_keeps_the_reward_gradient(tmp_path, tiny_base, prompts_file, blip2_dirs, gpu):
    chosen = precision.resolve("auto", "auto", "cuda", bf16_supported=gpu == "bf16-gpu")
    captioner, text_encoder = blip2_dirs
    common = dict(
        captioner=str(captioner),
        text_encoder=str(text_encoder),
        pre_loss_weight=0.0,
        baseline="none",
        reward_weight=1e-3,
        train_batch_size=2,
    )
    reference = _reward_gradient(tiny_config(tiny_base, prompts_file, tmp_path / "a.safetensors", **common))
    half = _reward_gradient(
        tiny_config(
            tiny_base,
            prompts_file,
            tmp_path / "b.safetensors",
            **common,
            mixed_precision=chosen.mixed,
            frozen_dtype=name_of(chosen.frozen),
        )
    )
    assert torch.isfinite(half).all() and half.abs().sum() > 0
    assert (half != 0).float().mean() > 0.5  # most of the gradient survived, not just a few large entries
    cosine = torch.nn.functional.cosine_similarity(half, reference, dim=0).item()
    assert cosine >= MIN_COSINE, f"{gpu}: cosine {cosine:.4f} with the fp32 reward gradient"
