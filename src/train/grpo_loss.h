// The GRPO objective, in one place: advantage estimators (GRPO, RLOO, REINFORCE++ baseline),
// the importance ratio per token or per sequence (GSPO), the clipped surrogate (PPO clip with
// eps_low / eps_high and an optional dual clip) or the clipped-weight policy gradient
// (CISPO), high-entropy token selection and an entropy bonus, the sampler/trainer mismatch
// correction (truncated importance sampling or sequence masking), the KL penalty to an anchor
// with estimator k1 | k2 | k3, and the three loss aggregations. A pure function of tensors:
// no model, no sampler, no config file. Its expected values and gradients come from an
// independent reference written from the papers (scripts/fixtures/grpo/make_fixtures.py).
//
// Shapes: N = B*G sequences (B prompts, G completions each), L = completion length.
#pragma once

#include <string>  // defines: std::string
#include <vector>  // defines: std::vector

#include <torch/torch.h>  // defines: torch::Tensor

namespace retort {

class ConfigBinder;

// Correction of the mismatch between the sampler's log-probs and the trainer's (the rollout
// engine's KV-cache decode and the training forward differ in kernels, batch shapes and, under
// bf16, rounding; TRL's vllm_importance_sampling_*, verl's rollout_correction). Both compare
// old = log pi_old from a training forward pass with the sampler's log-probs of the same tokens.
struct RolloutCorrectionOptions {
  // none | tis | sequence_mask. The default is TRL's (vllm_importance_sampling_correction on,
  // mode sequence_mask, cap 3): a completion whose tokens the sampler drew from a distribution
  // the trainer does not reproduce teaches the wrong policy, and dropping the rare such
  // sequence costs less than its biased gradient. When sampler and trainer agree (float32, the
  // same model code) no sequence leaves the window and the objective is unchanged.
  std::string mode = "sequence_mask";
  // C > 1. tis: per-token weight min(exp(old - sampler), C) (Yao et al. 2025, "Your efficient RL
  // framework secretly brings you off-policy RL training"; TRL token_truncate, verl rollout_is
  // token). sequence_mask: a sequence counts only while its ratio stays in [1/C, C] (verl's
  // rollout_rs with its lower bound 1/C; TRL masks above C only).
  double cap = 3.0;
  // The sequence ratio of sequence_mask: exp(sum of the tokens' old - sampler), the ratio of
  // the whole sequence's probabilities (TRL, verl "sequence"), or exp(mean) (verl "geometric":
  // length-normalised, for long completions whose sums drift past any cap).
  std::string sequence_ratio = "sum";
  // The logged mismatch_frac_over counts tokens with |old - sampler| above this (0.1: a token
  // whose probability the two disagree on by about 10%). Logged whatever the mode.
  double log_threshold = 0.1;
  void bind(ConfigBinder& b);
};

struct GrpoLossOptions {
  std::string loss_type = "ppo_clip";    // ppo_clip (PPO / GRPO / DAPO) | cispo (MiniMax-M1)
  std::string importance_level = "token";  // token | sequence (GSPO) | sequence_token (GSPO-token)
  double eps_low = 0.2;          // clip ratio below at 1 - eps_low (GSPO's paper: 3e-4 with sequence ratios)
  double eps_high = 0.2;         // clip ratio above at 1 + eps_high (DAPO clip-higher: 0.28; GSPO: 4e-4)
  double dual_clip = 0.0;        // c > 1 bounds the loss of negative advantages at c |A| (0: off; ppo_clip only)
  double beta = 0.04;            // KL coefficient (0: no KL term, the anchor's log-probs are ignored)
  std::string kl_estimator = "k3";   // k1 | k2 | k3 (Schulman's estimators of KL(pi || ref))
  std::string aggregation = "sequence";  // sequence (GRPO) | token (DAPO) | dr_grpo (constant)
  double dr_grpo_constant = 0;   // dr_grpo divisor; 0 = N * max_completion_length (the paper's and TRL's)
  // Train the policy term on the highest-entropy fraction of the batch's tokens only (1 = all;
  // 0.2 is "Beyond the 80/20 rule", Wang et al. 2025). Needs the per-token entropy.
  double top_entropy_quantile = 1.0;
  double entropy_coef = 0.0;     // entropy bonus: - entropy_coef * H per token (needs the entropy)
  RolloutCorrectionOptions rollout_correction;  // the recipe's (rollout_correction_weight below), not grpo_loss's
  // Set by the recipe, not the config: sampling.max_new_tokens, the dr_grpo divisor's length.
  int64_t max_completion_length = 0;
  void bind(ConfigBinder& b);
  void validate() const;  // every field in its range (the error names the key, value and range)
  bool needs_entropy() const { return top_entropy_quantile < 1.0 || entropy_coef != 0.0; }
};

// Where log-ratios are clamped before exp (verl: +-20): exp(20) ~ 4.9e8 stays finite in
// bfloat16 and float32 and its gradient is finite; the k3 estimate is clamped to [-10, 10]
// (verl's low_var_kl) so that an anchor far from the policy cannot dominate the step.
constexpr double kLogRatioClamp = 20.0;
constexpr double kK3Clamp = 10.0;

struct GrpoLossStats {
  double loss = 0;            // the value returned
  double policy_loss = 0;     // aggregated surrogate term
  double kl = 0;              // mean per-token KL estimate over masked tokens
  double clip_low = 0;        // fraction of masked tokens clipped at 1 - eps_low (A < 0)
  double clip_high = 0;       // fraction clipped at 1 + eps_high (A > 0)
  double dual_clipped = 0;    // fraction where the dual clip was active
  double ratio_mean = 0;      // mean of pi / pi_old over masked tokens (the sequence ratio at sequence level)
  double tokens = 0;          // masked tokens
  double entropy = 0;         // mean per-token entropy over masked tokens (NaN when not given)
  double entropy_kept = 1;    // share of masked tokens whose policy term counts (top_entropy_quantile)
};

// The sampler/trainer mismatch over completion tokens, l = old - sampler (log pi_old from the
// training forward minus the sampler's log-prob of the same token).
struct RolloutMismatchStats {
  double tokens = 0;          // completion tokens compared
  double abs_sum = 0;         // sum of |l| (mean = abs_sum / tokens)
  double abs_max = 0;         // max |l|
  double over = 0;            // tokens with |l| > log_threshold
  double capped = 0;          // tis: tokens whose weight the cap truncated
  double sequences = 0;       // sequences with at least one completion token
  double masked = 0;          // sequence_mask: sequences outside [1/C, C]
  double weight_sum = 0;      // sum over completion tokens of the correction weight (mean = / tokens)
};

// The rollout correction's weight w [N, L] (no gradient; 1 with mode none) and the mismatch:
//   l = (old - sampler) on mask, clamped to +-kLogRatioClamp before exp
//   tis            w_it = min(exp(l_it), C)
//   sequence_mask  rho_i = exp(sum_t l_it) (sequence_ratio sum) or exp(mean_t l_it) (mean);
//                  w_it = 1 if 1/C <= rho_i <= C, else 0
// old_logprobs, sampler_logprobs, mask [N, L]. grpo_loss multiplies the policy term by w (as
// TRL multiplies its per-token loss by the importance-sampling ratio): a masked sequence keeps
// its place in the denominators and its KL term, and contributes no policy gradient.
// `stats`, when given, is added to (so that micro-batches accumulate).
torch::Tensor rollout_correction_weight(const torch::Tensor& old_logprobs, const torch::Tensor& sampler_logprobs,
                                        const torch::Tensor& mask, const RolloutCorrectionOptions& options,
                                        RolloutMismatchStats* stats = nullptr);

// loss, differentiable in `logprobs`.
//   logprobs      [N, L] log pi_theta(token) under the policy being updated
//   old_logprobs  [N, L] log pi_old(token), the sampling policy (no gradient)
//   ref_logprobs  [N, L] log pi_ref(token), the anchor (teacher or frozen student); may be
//                 undefined when beta == 0
//   advantages    [N]    one per sequence, or [N, L] one per token (on-policy distillation's dense
//                 reward, opd_token_advantages below); [N] is broadcast over the sequence's tokens
//   mask          [N, L] 1 for completion tokens that count, 0 for padding (float or bool)
//   entropy       [N, L] per-token entropy of the policy (differentiable for the bonus); needed
//                 only when options.needs_entropy(), else may be undefined
//   is_weight     [N, L] the rollout correction's weight w (rollout_correction_weight; no
//                 gradient), multiplying the policy term; undefined = 1
//
// Per token (PPO, Schulman et al. 2017; DAPO, Yu et al. 2025, eq. 8-10), with l = logp - logp_old
// clamped to +-kLogRatioClamp:
//   r = exp(l)                                          importance_level token
//   r = s_i = exp(mean over the sequence's tokens of l) sequence (GSPO, Zheng et al. 2025, eq. 7)
//   r = sg(s_i) exp(logp - sg(logp))                    sequence_token (GSPO eq. 13: value s_i)
// and A = A_i (advantages [N]) or A_it (advantages [N, L]):
//   ppo_clip: obj = min(r A, clip(r, 1 - eps_low, 1 + eps_high) A);  if A < 0 and dual_clip c: obj = max(obj, c A)
//   cispo:    obj = sg(clip(r, 1 - eps_low, 1 + eps_high)) A logp   (MiniMax-M1 2025, eq. 4)
//   keep = 1, or with top_entropy_quantile q < 1: entropy >= the (1 - q) quantile of the masked entropies
//   kl, d = logp_ref - logp clamped to +-kLogRatioClamp: k1 = -d;  k2 = d^2 / 2;  k3 = clamp(exp(d) - d - 1, +-kK3Clamp)
//   per_token = -obj keep w + beta kl - entropy_coef H
// Token advantages with a sequence ratio (sequence, sequence_token): the sequence's one ratio
// s_i multiplies each token's own advantage and the clip and the dual clip are decided per
// token, on s_i A_it (GSPO eq. 13 with A_it in place of A_i); at level sequence the gradient of
// every token's term flows through s_i (all the sequence's log-probs), at sequence_token only
// through the token's own log-prob. With A_it = A_i for all t both reduce to GSPO's forms.
// Aggregation:
//   sequence: mean over sequences of (sum over its tokens / its token count)       (GRPO, Shao et al. 2024)
//   token:    sum over all tokens / total token count                             (DAPO)
//   dr_grpo:  sum over all tokens / constant (default N * max_completion_length) (Dr. GRPO, Liu et al. 2025)
torch::Tensor grpo_loss(const torch::Tensor& logprobs, const torch::Tensor& old_logprobs, const torch::Tensor& ref_logprobs,
                        const torch::Tensor& advantages, const torch::Tensor& mask, const GrpoLossOptions& options,
                        GrpoLossStats* stats = nullptr, const torch::Tensor& entropy = {},
                        const torch::Tensor& is_weight = {});

// On-policy distillation's per-token advantage (the reverse KL to the teacher as a dense
// reward; Agarwal et al. 2024, GKD; Thinking Machines, "On-policy distillation", 2025), added to
// the verifier's sequence advantage:
//   A_it = A_i + weight * (teacher_logp_it - student_logp_it)      on tokens with mask 1, else 0
// No discount: a token's advantage is its own log-ratio, not a sum over later tokens.
// student_logp must be a constant (the sampler's log-probs, no gradient): the advantage is a
// reward, not a differentiable KL term. Both log-probs at the sampling temperature.
//   verifier_adv   [N] (zeros for distillation alone)
//   teacher_logp   [N, L] log pi_teacher of the sampled tokens
//   student_logp   [N, L] log pi_old of the sampled tokens (the sampler's)
//   mask           [N, L] completion tokens
// -> [N, L], no gradient.
torch::Tensor opd_token_advantages(const torch::Tensor& verifier_adv, const torch::Tensor& teacher_logp,
                                   const torch::Tensor& student_logp, const torch::Tensor& mask, double weight);

// Advantages from rewards [B*G] laid out group by group (G = group_size), one per completion:
//   grpo                   A_i = (r_i - mean(group)) / (std + eps), the std (unbiased, as torch.std)
//                          of the group ("group"), of the batch ("batch"), or none ("none", Dr. GRPO)
//   rloo                   A_i = r_i - mean of the group's other G - 1 rewards (Ahmadian et al. 2024)
//   reinforce_pp_baseline  c_i = r_i - mean(group); A_i = c_i / (std of c over the batch + eps) (Hu 2025)
// eps must be > 0 (a group of identical rewards would otherwise divide 0 by 0).
std::vector<double> group_advantages(const std::vector<double>& rewards, int group_size, const std::string& scale,
                                     double eps = 1e-4, const std::string& estimator = "grpo");

}  // namespace retort
