"""One ReFL micro-step: rollout, x0' prediction, VAE decode, caption-reward surrogate, pre-training loss.

The loss (see ``realign_diff/refl/__init__.py`` and the README for the reasoning)::

    R_b      = cos(f(t_g,b), f(t_p,b))                  caption reward of image b (no gradient)
    c_b      = ReLU(margin - R_b)                        ImageReward-style hinge cost
    A_b      = c_b - baseline                            advantage, in cost units
    S        = lambda * mean_b[ A_b * log p(t_g,b | x0'_b)  -  w_p * 1[R_b < margin] * log p(t_p,b | x0'_b) ]
    L_reward = lambda * mean_b c_b  +  (S - stop_grad(S))   value of the hinge loss, gradient of the surrogate
    L_pre    = || eps - eps_theta(x_s, t_p, s) ||^2         on real pairs, or on the detached x0' latents
    L_total  = L_reward + w_pre * L_pre
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import sd15_configs


class DDIM:
    """Deterministic DDIM (eta = 0) on SD-1.5's training schedule, with SD's 'leading' timestep spacing."""

    def __init__(self, num_inference_steps: int, scheduler_config: dict | None = None):
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler(**(scheduler_config or sd15_configs.SCHEDULER))
        scheduler.set_timesteps(num_inference_steps)
        self.num_train_timesteps = scheduler.config.num_train_timesteps
        self.alphas_cumprod = scheduler.alphas_cumprod.float()
        self.timesteps = scheduler.timesteps.clone()
        self.final_alpha = float(scheduler.final_alpha_cumprod)

    def alpha(self, index) -> torch.Tensor:
        """alpha-bar at rollout step ``index`` (an int, or a [B] tensor of per-sample steps)."""
        return self.alphas_cumprod[self.timesteps[torch.as_tensor(index)]]

    def alpha_prev(self, index) -> torch.Tensor:
        index = torch.as_tensor(index)
        last = index + 1 >= len(self.timesteps)
        following = self.alphas_cumprod[self.timesteps[(index + 1).clamp(max=len(self.timesteps) - 1)]]
        return torch.where(last, torch.tensor(self.final_alpha), following)

    def predict_x0(self, x: torch.Tensor, eps: torch.Tensor, index) -> torch.Tensor:
        a = _per_sample(self.alpha(index), x)
        return (x - (1 - a) ** 0.5 * eps) / a**0.5

    def step(self, x: torch.Tensor, eps: torch.Tensor, index) -> torch.Tensor:
        a_prev = _per_sample(self.alpha_prev(index), x)
        return a_prev**0.5 * self.predict_x0(x, eps, index) + (1 - a_prev) ** 0.5 * eps

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod.to(x0.device)[timesteps].view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    values = values.to(like.device, torch.float32)
    return values.view(-1, *([1] * (like.dim() - 1))) if values.dim() else values


@dataclass
class Conditioning:
    cond: torch.Tensor
    uncond: torch.Tensor | None  # None: no classifier-free guidance
    guidance_scale: float = 1.0

    def select(self, rows: torch.Tensor) -> Conditioning:
        uncond = None if self.uncond is None else self.uncond[rows]
        return Conditioning(self.cond[rows], uncond, self.guidance_scale)


def predict_noise(unet, x: torch.Tensor, timestep, conditioning: Conditioning) -> torch.Tensor:
    """Guided eps; ``timestep`` is one model timestep or one per sample ([B])."""
    t = torch.as_tensor(timestep, device=x.device)
    if conditioning.uncond is None:
        return unet(x, t, encoder_hidden_states=conditioning.cond).sample.float()
    both = unet(
        torch.cat([x, x]),
        t.repeat(2) if t.dim() else t,
        encoder_hidden_states=torch.cat([conditioning.uncond, conditioning.cond]),
    ).sample.float()
    uncond, cond = both.chunk(2)
    return uncond + conditioning.guidance_scale * (cond - uncond)


@torch.no_grad()
def rollout(
    unet, ddim: DDIM, latents: torch.Tensor, conditioning: Conditioning, stop_index, autocast=None, calls: int = 0
) -> torch.Tensor:
    """x at rollout step ``stop_index`` (one for all, or a [B] tensor, one per sample): the DDIM steps before
    it, without gradient. A sample whose stop is reached leaves the UNet's batch.

    ``calls``: call the UNet at least that often (a sharded UNet's processes must all call it alike); a call
    with no sample left runs on the first one and is thrown away."""
    stops = torch.as_tensor(stop_index).expand(latents.shape[0]).cpu()
    x = latents.clone()
    for index in range(max(int(stops.max()) if len(stops) else 0, calls)):
        rows = (stops > index).nonzero().squeeze(1)
        if not len(rows):
            with autocast or contextlib.nullcontext():
                predict_noise(unet, x[:1], ddim.timesteps[index], conditioning.select(torch.zeros(1, dtype=torch.long)))
            continue
        with autocast or contextlib.nullcontext():
            eps = predict_noise(unet, x[rows], ddim.timesteps[index], conditioning.select(rows))
        x[rows] = ddim.step(x[rows], eps, index)
    return x


def decode_pixels(vae, latents: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1]; differentiable w.r.t. ``latents`` (the VAE itself is frozen)."""
    dtype = next(vae.parameters()).dtype
    images = vae.decode((latents / scaling_factor).to(dtype)).sample
    return (images.float() / 2 + 0.5).clamp(0, 1)


class RewardBaseline:
    """Baseline for the score-function surrogate: 'ema' (running mean of the cost over optimizer steps),
    'batch' (mean of the micro-batch), or 'none'.

    Both means are over all processes (the trainer passes them in), so a run's baselines do not depend on how
    its batch is split. The EMA moves once per optimizer step, so every micro-batch of a step sees the same
    value; the very first step, with no history yet, uses its micro-batch's mean.
    """

    def __init__(self, kind: str = "ema", decay: float = 0.9):
        if kind not in ("ema", "batch", "none"):
            raise ValueError(f"unknown baseline {kind!r}")
        self.kind, self.decay, self.value = kind, decay, None

    def __call__(self, cost: torch.Tensor, group_mean: float | None = None) -> torch.Tensor:
        if self.kind == "none":
            return torch.zeros_like(cost)
        if self.kind == "batch" or self.value is None:
            return torch.full_like(cost, float(cost.mean()) if group_mean is None else group_mean)
        return torch.full_like(cost, self.value)

    def update(self, mean_cost: float) -> None:
        if self.kind == "ema" and math.isfinite(mean_cost):
            self.value = mean_cost if self.value is None else self.decay * self.value + (1 - self.decay) * mean_cost

    def state_dict(self) -> dict:
        return {"kind": self.kind, "decay": self.decay, "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


def reward_surrogate(
    rewards: torch.Tensor,
    log_p_caption: torch.Tensor,
    baseline: torch.Tensor,
    weight: float,
    margin: float,
    log_p_prompt: torch.Tensor | None = None,
    prompt_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, cost): loss's value is ``weight * mean ReLU(margin - R)``, its gradient that of the surrogate.

    ``rewards``, ``baseline``: no gradient, [B]. ``log_p_*``: [B], differentiable w.r.t. the image.
    """
    rewards = rewards.detach().float()
    cost = F.relu(margin - rewards)
    advantage = (cost - baseline.detach().float()).to(log_p_caption.device)
    surrogate = (advantage * log_p_caption.float()).mean()
    if log_p_prompt is not None and prompt_weight:
        active = (rewards < margin).float().to(log_p_prompt.device)
        surrogate = surrogate - prompt_weight * (active * log_p_prompt.float()).mean()
    surrogate = weight * surrogate
    value = weight * cost.mean().to(surrogate.device)
    return value + surrogate - surrogate.detach(), cost


def noise_prediction_loss(
    unet,
    ddim: DDIM,
    latents: torch.Tensor,
    cond: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    autocast=None,
) -> torch.Tensor:
    """The pre-training loss: MSE between ``noise`` and the UNet's prediction at ``timesteps`` (one per sample)."""
    noise, timesteps = noise.to(latents.device), timesteps.to(latents.device)
    noisy = ddim.add_noise(latents.float(), noise, timesteps)
    with autocast or contextlib.nullcontext():
        prediction = unet(noisy, timesteps, encoder_hidden_states=cond).sample
    return F.mse_loss(prediction.float(), noise)


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, scaling_factor: float, noise: torch.Tensor) -> torch.Tensor:
    """Latents of [-1, 1] images, sampled from the VAE posterior with the standard-normal ``noise``."""
    dtype = next(vae.parameters()).dtype
    dist = vae.encode(images.to(dtype)).latent_dist
    noise = noise.to(dist.mean.device, dist.mean.dtype)
    return ((dist.mean + dist.std * noise) * scaling_factor).float()


@dataclass
class RewardOutput:
    loss: torch.Tensor  # L_reward (value = lambda * mean cost, gradient = surrogate)
    rewards: torch.Tensor
    cost: torch.Tensor
    captions: list[str]
    x0_latents: torch.Tensor  # detached, for the self-sample pre-training loss
    step_index: torch.Tensor  # [B] the rollout step of each sample's gradient call
    extras: dict = field(default_factory=dict)
