"""Acting and learning of one IMPALA update: :class:`Actor` steps the batched environments with the agent (no
gradient) and records a :class:`Rollout`; :func:`learner_loss` re-runs the agent over it from the stored core state and
returns the V-trace loss (paper.md C.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..layers.base import detach_state
from .agent import Agent
from .config import RLConfig
from .envs import BatchedEnv
from .vtrace import impala_loss


@dataclass
class Rollout:
    """One unroll of ``B`` streams, batch first. Index ``t`` of the ``[B, T+1]`` inputs is what the agent saw at
    step t (``done[:, t]`` = obs t starts an episode; ``prev_reward/prev_action[:, t]`` = the reward/action that
    led to obs t); ``actions/behaviour_logits/rewards [B, T]`` are the step-t action, its logits and its reward.
    ``initial_state`` is the core state before step 0 (detached)."""

    obs: torch.Tensor
    done: torch.Tensor
    prev_reward: torch.Tensor
    prev_action: torch.Tensor
    actions: torch.Tensor
    behaviour_logits: torch.Tensor
    rewards: torch.Tensor
    initial_state: Any


class Actor:
    """Steps a :class:`BatchedEnv` with an agent, keeping the inputs of the next step and the core state."""

    def __init__(self, env: BatchedEnv, agent: Agent, device: torch.device, seed: int) -> None:
        self.env, self.agent, self.device = env, agent, device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        obs = env.reset(seed=seed)
        n = env.num_envs
        self.obs = torch.as_tensor(obs, device=device)
        self.done = torch.ones(n, dtype=torch.bool, device=device)
        self.prev_reward = torch.zeros(n, device=device)
        self.prev_action = torch.zeros(n, dtype=torch.long, device=device)
        self.state = agent.initial_state(n, device)

    @torch.no_grad()
    def step(self, greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Act once in every copy; returns (action, logits, env info)."""
        out = self.agent.act(self.obs, self.done, self.prev_reward, self.prev_action, self.state, greedy=greedy,
                             generator=self.generator)
        res = self.env.step(out.action.cpu().numpy())
        self.state = out.state
        self.obs = torch.as_tensor(res.obs, device=self.device)
        self.done = torch.as_tensor(res.done, device=self.device)
        self.prev_reward = torch.as_tensor(res.reward, device=self.device)
        self.prev_action = out.action
        return out.action, out.logits, res.info

    def rollout(self, length: int) -> tuple[Rollout, list[dict[str, Any]]]:
        """``length`` steps of every copy; returns the rollout and the env infos of the steps."""
        initial_state = detach_state(self.state)
        obs, done, prev_r, prev_a = [self.obs], [self.done], [self.prev_reward], [self.prev_action]
        actions, logits, rewards, infos = [], [], [], []
        for _ in range(length):
            a, lg, info = self.step()
            actions.append(a)
            logits.append(lg)
            rewards.append(self.prev_reward)
            infos.append(info)
            obs.append(self.obs)
            done.append(self.done)
            prev_r.append(self.prev_reward)
            prev_a.append(self.prev_action)

        def stack(xs: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack(xs, dim=1)

        return Rollout(stack(obs), stack(done), stack(prev_r), stack(prev_a), stack(actions), stack(logits),
                       stack(rewards), initial_state), infos

    def get_state(self) -> dict[str, Any] | None:
        env_state = self.env.get_state()
        if env_state is None:
            return None
        return {"env": env_state, "obs": self.obs, "done": self.done, "prev_reward": self.prev_reward,
                "prev_action": self.prev_action, "state": self.state, "generator": self.generator.get_state()}

    def set_state(self, s: dict[str, Any]) -> None:
        self.env.set_state(s["env"])
        self.obs, self.done, self.prev_reward = s["obs"], s["done"], s["prev_reward"]
        self.prev_action, self.state = s["prev_action"], s["state"]
        self.generator.set_state(s["generator"])


def learner_loss(agent: Agent, ro: Rollout, cfg: RLConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The IMPALA loss of a rollout, recomputed from its stored initial state (truncated BPTT over the unroll)."""
    out = agent(ro.obs, ro.done, ro.prev_reward, ro.prev_action, ro.initial_state,
                cut_state_grad=cfg.cut_state_grad_every_step)
    T = ro.actions.shape[1]
    rewards = ro.rewards.float()
    if cfg.reward_clip > 0:
        rewards = rewards.clamp(-cfg.reward_clip, cfg.reward_clip)
    discounts = cfg.discount * (~ro.done[:, 1:]).float()  # 0 where the episode ended with action t
    loss = impala_loss(out.logits[:, :T], out.baseline[:, :T], out.baseline[:, T], ro.behaviour_logits, ro.actions,
                       rewards, discounts, baseline_cost=cfg.baseline_cost, entropy_cost=cfg.entropy_cost,
                       clip_rho_threshold=cfg.clip_rho, clip_c_threshold=cfg.clip_c,
                       clip_pg_rho_threshold=cfg.clip_pg_rho)
    return loss.total, {"loss": loss.total.item(), "pg_loss": loss.pg.item(), "baseline_loss": loss.baseline.item(),
                        "entropy_loss": loss.entropy.item()}
