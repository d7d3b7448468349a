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

    def alpha(self, index: int) -> float:
        return float(self.alphas_cumprod[self.timesteps[index]])

    def alpha_prev(self, index: int) -> float:
        return self.alpha(index + 1) if index + 1 < len(self.timesteps) else self.final_alpha

    def predict_x0(self, x: torch.Tensor, eps: torch.Tensor, index: int) -> torch.Tensor:
        a = self.alpha(index)
        return (x - (1 - a) ** 0.5 * eps) / a**0.5

    def step(self, x: torch.Tensor, eps: torch.Tensor, index: int) -> torch.Tensor:
        a_prev = self.alpha_prev(index)
        return a_prev**0.5 * self.predict_x0(x, eps, index) + (1 - a_prev) ** 0.5 * eps

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod.to(x0.device)[timesteps].view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise


@dataclass
class Conditioning:
    cond: torch.Tensor
    uncond: torch.Tensor | None  # None: no classifier-free guidance
    guidance_scale: float = 1.0


def predict_noise(unet, x: torch.Tensor, timestep, conditioning: Conditioning) -> torch.Tensor:
    t = torch.as_tensor(timestep, device=x.device)
    if conditioning.uncond is None:
        return unet(x, t, encoder_hidden_states=conditioning.cond).sample.float()
    both = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([conditioning.uncond, conditioning.cond])).sample.float()
    uncond, cond = both.chunk(2)
    return uncond + conditioning.guidance_scale * (cond - uncond)


@torch.no_grad()
def rollout(unet, ddim: DDIM, latents: torch.Tensor, conditioning: Conditioning, stop_index: int, autocast=None) -> torch.Tensor:
    """x at rollout step ``stop_index``: the first ``stop_index`` DDIM steps, without gradient."""
    x = latents
    for index in range(stop_index):
        with autocast or contextlib.nullcontext():
            eps = predict_noise(unet, x, ddim.timesteps[index], conditioning)
        x = ddim.step(x, eps, index)
    return x


def decode_pixels(vae, latents: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1]; differentiable w.r.t. ``latents`` (the VAE itself is frozen)."""
    dtype = next(vae.parameters()).dtype
    images = vae.decode((latents / scaling_factor).to(dtype)).sample
    return (images.float() / 2 + 0.5).clamp(0, 1)


class RewardBaseline:
    """Baseline for the score-function surrogate: 'ema' (running mean of the cost), 'batch', or 'none'."""

    def __init__(self, kind: str = "ema", decay: float = 0.9):
        if kind not in ("ema", "batch", "none"):
            raise ValueError(f"unknown baseline {kind!r}")
        self.kind, self.decay, self.value = kind, decay, None

    def __call__(self, cost: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return torch.zeros_like(cost)
        if self.kind == "batch" or self.value is None:
            return cost.mean().expand_as(cost)
        return torch.full_like(cost, self.value)

    def update(self, cost: torch.Tensor) -> None:
        if self.kind == "ema" and torch.isfinite(cost).all():
            mean = float(cost.mean())
            self.value = mean if self.value is None else self.decay * self.value + (1 - self.decay) * mean

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


def noise_prediction_loss(unet, ddim: DDIM, latents: torch.Tensor, cond: torch.Tensor, generator: torch.Generator, autocast=None) -> torch.Tensor:
    """The pre-training loss: MSE between the noise and the UNet's prediction at a uniform random timestep."""
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    timesteps = torch.randint(0, ddim.num_train_timesteps, (latents.shape[0],), generator=generator).to(latents.device)
    noisy = ddim.add_noise(latents.float(), noise, timesteps)
    with autocast or contextlib.nullcontext():
        prediction = unet(noisy, timesteps, encoder_hidden_states=cond).sample
    return F.mse_loss(prediction.float(), noise)


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, scaling_factor: float, generator: torch.Generator) -> torch.Tensor:
    """Latents of [-1, 1] images, sampled from the VAE posterior with ``generator``."""
    dtype = next(vae.parameters()).dtype
    dist = vae.encode(images.to(dtype)).latent_dist
    noise = torch.randn(dist.mean.shape, generator=generator).to(dist.mean.device, dist.mean.dtype)
    return ((dist.mean + dist.std * noise) * scaling_factor).float()


@dataclass
class RewardOutput:
    loss: torch.Tensor  # L_reward (value = lambda * mean cost, gradient = surrogate)
    rewards: torch.Tensor
    cost: torch.Tensor
    captions: list[str]
    x0_latents: torch.Tensor  # detached, for the self-sample pre-training loss
    step_index: int
    extras: dict = field(default_factory=dict)
