"""Generative Adversarial Imitation Learning (Ho & Ermon 2016) with PPO as the generator, trained online in the
environment of `--dataset`, whose observations and actions are the demonstrations (its rewards are ignored).

`--steps` counts ENVIRONMENT steps summed over the `num_envs` envs (not gradient steps as for the offline
algorithms); the run takes ceil(steps / (num_envs * rollout_length)) rounds, so it may run up to one rollout past
`--steps`. `--eval_every` and `--save_every` are environment steps too: the loop evaluates / checkpoints after the
first round that reaches each multiple, and always after the last. `--batch_size` is PPO's minibatch size.

Sources of the defaults and where they differ:

- The GAIL round, the discriminator and its reward come from `HumanCompatibleAI/imitation` (adversarial/gail.py,
  common.py, its train_adversarial script defaults): the discriminator is an MLP on (s, a) with 2 x 32 ReLU layers
  (BasicRewardNet), logistic loss with the expert labelled 1, Adam at torch's default lr 1e-3, 4 updates per round
  on `demo_batch_size` = 1024 demonstration rows against as many rows of the latest rollout (its default replay
  capacity equals one rollout), and the reward -log(1 - D(s, a)) = -log_sigmoid(-logits).
  Differences: (1) the discriminator is updated on the rollout BEFORE the PPO epochs and the rewards come from the
  updated discriminator (imitation trains the generator first, on rewards of the discriminator of the previous
  round, then the discriminator); (2) imitation normalises the discriminator's inputs with running statistics and
  its rewards with a running normaliser; here observations (of the policy, the value net and the discriminator)
  are standardised with the demonstrations' fixed mean and std, stored in the agent, actions are divided by the
  action bound, and rewards are not normalised (PPO standardises advantages per minibatch); (3) the optional
  gradient penalty (`gradient_penalty`, default 0 = off as in imitation) is WGAN-GP's on points interpolated
  between demonstration and policy rows, not in imitation or the paper.
- PPO is stable-baselines3's defaults (ppo/ppo.py, common/policies.py, imitation's rl ingredient keeps them):
  lr 3e-4 (Adam, eps 1e-5), 10 epochs, minibatch 64, clip 0.2, no value clipping, gamma 0.99, GAE lambda 0.95,
  normalised advantages, entropy coefficient 0 (imitation's MuJoCo configs use 0.1), value coefficient 0.5,
  global gradient-norm clip 0.5 over policy and value together, separate 2 x 64 tanh policy and value networks,
  a state-independent log std starting at 0, actions drawn unsquashed and clipped to the bound only when sent to
  the env (log-probabilities of the unclipped draw). Rollouts: SB3's n_steps = 2048 per env is imitation's 2048 in
  total; here 16 envs x 128 steps = 2048 rows per round. Differences: (1) the networks start from torch.nn.Linear's
  default init (the project's), with the action-mean layer scaled by 0.01, instead of SB3's orthogonal init
  (gains sqrt 2, 0.01 for the action mean, 1 for the value): all parameters come from one random draw, which
  compiles in a fraction of the time of per-array orthogonal initialisers on a CPU; (2) a time-limit truncation
  bootstraps from V of the true final observation inside GAE (SB3 adds gamma V(final observation) to the
  reward, which gives the same advantage).
- The paper (Ho & Ermon 2016) trains the generator with TRPO and both networks as 2 x 100 tanh MLPs, with its
  discriminator convention flipped (D = 1 for the policy, cost log D). Here PPO replaces TRPO and the networks are
  SB3's and imitation's sizes; the reward is the same function of the expert probability.
- pendulum-mixed-v0's row takes rl-baselines3-zoo's tuned PPO for Pendulum-v1 (gamma 0.9, lr 1e-3; it also uses
  gSDE, not here) and 10 evaluation episodes as every algorithm's built-in row; the demonstrations are the mixed
  data (near-expert to random), so GAIL imitates their mixture.
"""

from __future__ import annotations

import ml_collections

from dql.configs.common import loop_config


def get_config() -> ml_collections.ConfigDict:
    config = loop_config("gail", steps=1_000_000, eval_every=20_480, eval_episodes=10)
    config.online = True  # not an offline learner: left out of offline_algos() and sweeps
    config.demonstrations = True  # reads --dataset as the expert's (observations, actions) and trains in its env
    # Rollouts: num_envs envs stepped together, rollout_length steps each per round.
    config.num_envs = 16
    config.rollout_length = 128
    # PPO (stable-baselines3's defaults).
    config.batch_size = 64  # PPO minibatch
    config.ppo_epochs = 10
    config.clip_range = 0.2
    config.discount = 0.99
    config.gae_lambda = 0.95
    config.normalize_advantage = True
    config.ent_coef = 0.0
    config.vf_coef = 0.5
    config.lr = 3e-4
    config.max_grad_norm = 0.5
    config.log_std_init = 0.0
    config.hidden_dims = (64, 64)  # policy and value networks, each
    config.activation = "tanh"
    # Discriminator (imitation's GAIL).
    config.disc_hidden_dims = (32, 32)
    config.disc_activation = "relu"
    config.disc_lr = 1e-3
    config.disc_updates = 4  # per round
    config.demo_batch_size = 1024  # demonstration rows per update, against as many policy rows
    config.gradient_penalty = 0.0  # weight of WGAN-GP's penalty; 0: off
    return config


DATASET_OVERRIDES: dict[str, dict] = {
    # rl-baselines3-zoo's tuned Pendulum-v1 PPO (gamma 0.9, lr 1e-3); 1M environment steps (489 rounds, about
    # four minutes on the 2-core CPU).
    "pendulum-mixed-v0": {"steps": 1_000_000, "eval_every": 20_480, "save_every": 20_480, "eval_episodes": 10,
                          "discount": 0.9, "lr": 1e-3},
}
