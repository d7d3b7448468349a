"""The pieces of a ReFL step on their own: DDIM, the reward surrogate, the baseline, LoRA."""

import pytest
import torch
from torch import nn

from realign_diff import sd15_configs
from realign_diff.refl.lora import UNetLoRA, apply_kohya_lora, kohya_key
from realign_diff.refl.step import DDIM, RewardBaseline, reward_surrogate


def test_ddim_matches_diffusers_scheduler():
    from diffusers import DDIMScheduler

    reference = DDIMScheduler(**sd15_configs.SCHEDULER)
    reference.set_timesteps(50)
    ddim = DDIM(50)
    assert torch.equal(ddim.timesteps, reference.timesteps)
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    for index in (0, 30, 49):
        out = reference.step(eps, reference.timesteps[index], x)
        assert torch.allclose(ddim.step(x, eps, index), out.prev_sample, atol=1e-5)
        assert torch.allclose(ddim.predict_x0(x, eps, index), out.pred_original_sample, atol=1e-5)
    t = torch.tensor([10, 500])
    assert torch.allclose(ddim.add_noise(x, eps, t), reference.add_noise(x, eps, t), atol=1e-6)
    per_sample = torch.tensor([30, 49])  # one rollout step per sample, as the trainer draws them
    stepped = ddim.step(x, eps, per_sample)
    for row, index in enumerate(per_sample.tolist()):
        assert torch.equal(stepped[row], ddim.step(x[row : row + 1], eps[row : row + 1], index)[0])


def test_rollout_with_one_stop_per_sample_equals_separate_rollouts():
    from realign_diff.refl.step import Conditioning, rollout

    class Toy(nn.Module):  # a UNet-shaped callable: eps depends on x, t and the text
        def forward(self, x, t, encoder_hidden_states):
            t = t.float().view(-1, 1, 1, 1) / 1000
            return type("Out", (), {"sample": 0.1 * x * (1 + t) + encoder_hidden_states.mean((1, 2)).view(-1, 1, 1, 1)})

    ddim, gen = DDIM(6), torch.Generator().manual_seed(1)
    noise, cond, uncond = (
        torch.randn(3, 4, 2, 2, generator=gen),
        torch.randn(3, 5, 8, generator=gen),
        torch.zeros(3, 5, 8),
    )
    stops = torch.tensor([2, 5, 0])
    together = rollout(Toy(), ddim, noise, Conditioning(cond, uncond, 3.0), stops)
    for row, stop in enumerate(stops.tolist()):
        alone = rollout(
            Toy(), ddim, noise[row : row + 1], Conditioning(cond[row : row + 1], uncond[row : row + 1], 3.0), stop
        )
        assert torch.allclose(together[row], alone[0], atol=1e-6)

    class Counting(Toy):  # a sharded UNet's processes must make the same calls: ``calls`` pads the rollout
        calls = 0

        def forward(self, x, t, encoder_hidden_states):
            Counting.calls += 1
            return super().forward(x, t, encoder_hidden_states)

    padded = rollout(Counting(), ddim, noise, Conditioning(cond, uncond, 3.0), stops, calls=5)
    assert Counting.calls == 5 and torch.equal(padded, together)
    Counting.calls = 0
    rollout(Counting(), ddim, noise, Conditioning(cond, uncond, 3.0), torch.tensor([1, 2, 0]), calls=4)
    assert Counting.calls == 4  # two real steps, then two thrown away


def test_surrogate_value_is_the_hinge_and_its_gradient_the_score_function():
    rewards = torch.tensor([0.2, 0.9, 0.5])
    log_p = torch.tensor([-3.0, -1.0, -2.0], requires_grad=True)
    baseline = torch.full((3,), 0.4)
    loss, cost = reward_surrogate(rewards, log_p, baseline, weight=1e-3, margin=0.8)
    assert torch.allclose(cost, torch.tensor([0.6, 0.0, 0.3]))
    assert loss.item() == pytest.approx(1e-3 * 0.3)  # lambda * mean ReLU(margin - R)
    loss.backward()
    assert torch.allclose(log_p.grad, 1e-3 * (cost - 0.4) / 3)  # lambda * (c - b) / B


def test_prompt_likelihood_term_pulls_only_below_the_margin():
    rewards = torch.tensor([0.2, 0.9])
    log_p_caption = torch.zeros(2, requires_grad=True)
    log_p_prompt = torch.tensor([-4.0, -4.0], requires_grad=True)
    loss, _ = reward_surrogate(rewards, log_p_caption, torch.zeros(2), 1.0, 0.8, log_p_prompt, prompt_weight=0.5)
    assert loss.item() == pytest.approx(0.3)  # the value stays the hinge loss
    loss.backward()
    assert torch.allclose(log_p_prompt.grad, torch.tensor([-0.25, 0.0]))  # -w_p * active / B


def test_baselines():
    cost = torch.tensor([1.0, 3.0])
    assert torch.equal(RewardBaseline("none")(cost), torch.zeros(2))
    assert torch.equal(RewardBaseline("batch")(cost), torch.full((2,), 2.0))
    ema = RewardBaseline("ema", decay=0.5)
    assert torch.equal(ema(cost), torch.full((2,), 2.0))  # first batch: its own mean
    assert torch.equal(ema(cost, group_mean=2.5), torch.full((2,), 2.5))  # ... over all processes
    ema.update(2.0)
    assert torch.equal(ema(cost, group_mean=9.0), torch.full((2,), 2.0))  # then the running mean
    ema.update(4.0)
    assert ema.value == pytest.approx(3.0)
    restored = RewardBaseline("ema", 0.5)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored(cost), ema(cost))
    ema.update(float("nan"))
    assert ema.value == pytest.approx(3.0)  # non-finite costs never reach the baseline


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.to_q, self.to_k, self.to_v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
        self.to_out = nn.ModuleList([nn.Linear(4, 4)])

    def forward(self, x):
        return self.to_out[0](self.to_q(x) + self.to_k(x) + self.to_v(x))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Module()
        self.block.attn1 = _Attention()
        self.block.attn2 = _Attention()
        self.proj = nn.Linear(4, 4)  # not an attention projection: never adapted

    def forward(self, x):
        return self.proj(self.block.attn2(self.block.attn1(x)))


def test_lora_starts_as_identity_and_its_file_merges_to_the_trained_function():
    torch.manual_seed(0)
    model = _Tiny()
    x = torch.randn(3, 4)
    before = model(x)
    lora = UNetLoRA(model, rank=2, alpha=4.0)
    assert len(lora.adapters) == 8 and kohya_key("block.attn1.to_out.0") in lora.adapters
    assert torch.equal(model(x), before)  # up is zero-initialised
    for adapter in lora.adapters.values():
        nn.init.normal_(adapter.up.weight)
    assert not hasattr(model.proj, "base_layer")  # not an attention projection: never adapted
    trained = model(x)
    assert not torch.allclose(trained, before)
    state = lora.kohya_state_dict(torch.float32)
    assert set(state) == {f"{k}.{s}" for k in lora.adapters for s in ("lora_down.weight", "lora_up.weight", "alpha")}
    assert state[f"{kohya_key('block.attn1.to_q')}.alpha"].item() == 4.0
    lora.remove()
    assert torch.equal(model(x), before)
    merged_weights = apply_kohya_lora({k: v.detach() for k, v in model.state_dict().items()}, state)
    model.load_state_dict(merged_weights)
    assert torch.allclose(model(x), trained, atol=1e-5)
