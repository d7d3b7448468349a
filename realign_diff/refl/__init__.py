"""ReFL fine-tuning of SD-1.5 against the BLIP-2 caption reward (RealignDiff stage 1).

Pieces: ``config`` (every setting and its default), ``models`` (UNet/VAE/CLIP from a single-file checkpoint,
shapes read from the file), ``data`` (prompts, pairs, validation split, the sample order), ``draws`` (random
draws keyed by sample), ``step`` (DDIM rollout, x0', the reward surrogate, the pre-training loss), ``lora``
(peft), ``precision``, ``processes`` (Accelerate: one or many processes), ``saving`` and ``resume`` (output
file and checkpoints), ``metrics`` and ``trainer`` (the loop). ``training/refl.py`` is the command line.

The loss of one micro-batch of prompts t_p
-----------------------------------------
1. Sample noise and a step index k uniformly in [refl_step_min, refl_step_max] (default 30..49 of T = 50),
   both for each prompt from its own generator, keyed by the seed, the optimizer step and the prompt's
   number in the run (so a run on N processes draws what one process would). Run DDIM steps 0..k-1
   without gradient (classifier-free guidance when ``guidance_scale`` != 1).
2. One UNet call *with* gradient at step k gives eps; ``x0' = (x_k - sqrt(1 - a_k) eps) / sqrt(a_k)``.
3. Decode x0' with the frozen VAE, with gradient, to pixels in [0, 1].
4. BLIP-2 captions the pixels (one vision pass with gradient; the caption is generated from its detached
   output, greedily or by beam search, or sampled with ``caption_sampling``): caption t_g; reward
   ``R = cos(f(t_g), f(t_p))``, no gradient.
5. Reward loss, the ImageReward convention ``lambda * ReLU(margin - R)`` (the paper's ``lambda * ReLU(R)``
   would lower the reward). Writing the captioning as a policy ``t_g ~ p_BLIP2(. | x0')``, the cost
   ``c = ReLU(margin - R(t_g))`` depends on x0' only through which caption is written, so its gradient is
   the score-function (REINFORCE) form ``E[(c - b) * grad log p_BLIP2(t_g | x0')]`` for any baseline b that
   does not depend on t_g. We back-propagate the surrogate
   ``S = lambda * mean[(c - b) * log p(t_g | x0') - w_p * 1[R < margin] * log p(t_p | x0')]``
   and report the loss value ``lambda * mean(c)`` (``loss = value + S - stop_grad(S)``). The teacher-forced
   prompt term (``prompt_likelihood_weight`` = w_p, off by default) is a low-variance pull towards images
   BLIP-2 would describe with the prompt itself; it is gated by the hinge so it stops where the hinge does.
   b: a running mean of c over past optimizer steps (``baseline=ema``, the default, works with batch 1), the
   micro-batch mean (``batch``), or 0 (``none``), means over all processes. log p is taken on the token ids
   BLIP-2 generated. With sampled captions the estimator is unbiased; with greedy or beam captions t_g is
   the mode rather than a sample, the usual self-critical approximation: captions of images that did
   better than the baseline are made more likely, those that did worse less likely.
6. ``L_pre``: noise-prediction MSE at a uniform timestep, on real image-caption pairs when ``--pairs`` is
   given, otherwise on the rollout's own detached x0' latents with the same prompts (no extra UNet calls).
   ``L_total = L_reward + pre_loss_weight * L_pre``; each part is back-propagated as soon as it is
   computed, so their activations are never held together.
"""

from .config import TrainConfig

__all__ = ["TrainConfig", "train"]


def train(config: TrainConfig, scorer=None, on_step_end=None):
    """Run a training; see :func:`realign_diff.refl.trainer.train`."""
    from .trainer import train as _train

    return _train(config, scorer, on_step_end)
