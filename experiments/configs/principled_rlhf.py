"""Pessimistic MLE and K-wise comparisons (Zhu, Jordan & Jiao 2023, "Principled RLHF from
Pairwise or K-wise Comparisons").

    python -m experiments.principled_rlhf --workdir=/tmp/principled_rlhf
    python -m experiments.principled_rlhf --workdir=/tmp/principled_rlhf --config.quick=True

Findings under test: (1) the greedy policy on the Bradley–Terry MLE of a linear reward
can stay suboptimal at every sample size n, while the pessimistic policy (the lower
confidence bound) converges to the optimum; (2) with K-wise rankings, the
Plackett–Luce MLE (MLE_K) estimates the reward more accurately than the MLE that splits
each ranking into its K(K−1)/2 pairs (MLE_2) at every n, and (3) both errors fall as
n^−½.

(1) The 4-action linear bandit of the paper: features φ(a1..a4) = [1,1,0], [1,0,0],
[0,0,0], [0,1,0], θ* = [−1, 0.1, 0.9] (rewards −0.9, −1, 0, 0.1; a4 is optimal, a3
second by 0.1), ‖θ‖ ≤ B = 2 and ⟨1, θ⟩ = 0. The data-collection policy never plays
the optimal arm: it compares a1 with a2 (difference [0,1,0], which identifies a4's
value relative to a3) and, rarely, a2 with a3 (difference [1,0,0], which sets a1's
and a2's values). The rare pair is drawn with probability `rare_expected / n`, so
every data set holds about `rare_expected` of them whatever n is: the adversarial
data distribution the paper's lower bound needs, and this study's reading of "rarely"
(the paper's exact query distribution was not at hand). Comparisons are drawn from
the Bradley–Terry model and stored as counts of the four distinct differences, so n
runs to 10⁶ at no cost; the estimate is the constrained MLE
(`irl_jax.losses.linear_bradley_terry_mle`, float64). Greedy picks the arm of
largest θ̂ᵀφ; pessimism the arm of largest lower bound
(`irl_jax.losses.pessimistic_policy_values`) with the paper's confidence width
f = C·sqrt((d + log(1/δ)) / (γ²n) + λB²), γ = 1/(2 + e^{−LB} + e^{LB}),
L = max‖φ‖, C = `lcb_scale` = 1, δ = `delta`, and ridge κ = λ = d/(B²n) (so that
λB² = d/n); v = `reference_features` = 0 (a3's features). Ties break at random.
These constants follow the theory, not a pilot: with them pessimism needs
n ≳ (d + log(1/δ))/(γ·0.1)² ≈ 2·10⁵ comparisons to trust a4's 0.1 lead over a3.
Suboptimality r(a4) − r(chosen) over `bandit_seeds` seeds per n, vmapped.

(2, 3) d = 8, θ* a fixed unit vector with ⟨1, θ*⟩ = 0 (drawn from `theta_seed`),
B = 2; each of n rankings ranks K items with features N(0, I_d) by PL(θ*)
(Gumbel-max), K ∈ `ranking_sizes`; MLE_K and MLE_2 (`irl_jax.losses.linear_ranking_mle`)
on the same rankings; error ‖θ̂ − θ*‖_Σ with Σ = E[(φ_j − φ_k)(φ_j − φ_k)ᵀ] = 2I, the
population covariance of item differences; `ranking_seeds` seeds per (K, n), vmapped.
The slope of log error against log n is fitted per seed (`scipy.stats.linregress`).

Verdicts (95% t-intervals over seeds): (1) greedy − pessimistic suboptimality at the
largest n, paired over seeds, claimed positive, and pessimism's suboptimality there
within ±`lcb_margin` of 0 (both needed for "reproduced"); (2) MLE_2 − MLE_K error,
paired over seeds, claimed positive at every (K, n); (3) every fitted slope within
±`slope_margin` of −½.

`quick`: fewer sample sizes and seeds; it checks the pipeline, not the findings.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.quick = False
  c.seed = 0
  # (1) The bandit.
  c.bandit_features = ((1.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0))
  c.bandit_theta = (-1.0, 0.1, 0.9)
  c.frequent_pair = (0, 1)       # a1 vs a2
  c.rare_pair = (1, 2)           # a2 vs a3
  c.rare_expected = 1.0          # expected comparisons of the rare pair, at every n
  c.reference_features = (0.0, 0.0, 0.0)
  c.norm_bound = 2.0
  c.bandit_sizes = (10, 100, 1000, 10_000, 100_000, 1_000_000)
  c.bandit_seeds = 200
  c.lcb_scale = 1.0              # C in the confidence width
  c.delta = 0.1
  c.lcb_margin = 0.02            # "pessimism's suboptimality is 0" within this margin
  # (2, 3) K-wise rankings.
  c.ranking_dim = 8
  c.ranking_sizes = (4, 9)
  c.ranking_counts = (30, 100, 300, 1000, 3000, 10_000)
  c.ranking_seeds = 50
  c.theta_seed = 1
  c.slope_margin = 0.1
  c.quick_settings = ml_collections.ConfigDict(dict(
      bandit_sizes=(10, 1000, 1_000_000), bandit_seeds=16, ranking_counts=(100, 1000),
      ranking_seeds=4))
  return c
