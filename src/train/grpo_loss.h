// The GRPO objective, in one place: group-relative advantages, the per-token clipped
// surrogate (separate eps_low / eps_high, optional dual clip), the KL penalty to an anchor
// with estimator k1 | k2 | k3, and the three loss aggregations. A pure function of tensors:
// no model, no sampler, no config file.
//
// Shapes: N = B*G sequences (B prompts, G completions each), L = completion length.
#pragma once

#include <string>  // defines: std::string
#include <vector>  // defines: std::vector

#include <torch/torch.h>  // defines: torch::Tensor

namespace retort {

class ConfigBinder;

struct GrpoLossOptions {
  double eps_low = 0.2;          // clip ratio below at 1 - eps_low
  double eps_high = 0.2;         // clip ratio above at 1 + eps_high (DAPO clip-higher: 0.28)
  double dual_clip = 0.0;        // c > 1 enables dual clip for negative advantages (0: off)
  double beta = 0.04;            // KL coefficient (0: no KL term, the anchor's log-probs are ignored)
  std::string kl_estimator = "k3";   // k1 | k2 | k3 (Schulman's estimators of KL(pi || ref))
  std::string aggregation = "sequence";  // sequence (GRPO) | token (DAPO) | dr_grpo (constant)
  double dr_grpo_constant = 0;   // dr_grpo divisor; 0 = N * L (the padded completion length)
  void bind(ConfigBinder& b);
};

struct GrpoLossStats {
  double loss = 0;            // the value returned
  double policy_loss = 0;     // aggregated surrogate term
  double kl = 0;              // mean per-token KL estimate over masked tokens
  double clip_low = 0;        // fraction of masked tokens clipped at 1 - eps_low (A < 0)
  double clip_high = 0;       // fraction clipped at 1 + eps_high (A > 0)
  double dual_clipped = 0;    // fraction where the dual clip was active
  double ratio_mean = 0;      // mean of pi / pi_old over masked tokens
  double tokens = 0;          // masked tokens
};

// loss, differentiable in `logprobs`.
//   logprobs      [N, L] log pi_theta(token) under the policy being updated
//   old_logprobs  [N, L] log pi_old(token), the sampling policy (no gradient)
//   ref_logprobs  [N, L] log pi_ref(token), the anchor (teacher or frozen student); may be
//                 undefined when beta == 0
//   advantages    [N]    one per sequence
//   mask          [N, L] 1 for completion tokens that count, 0 for padding (float or bool)
//
// Per token (PPO, Schulman et al. 2017; DAPO, Yu et al. 2025, eq. 8-10):
//   r = exp(logp - logp_old)
//   obj = min(r A, clip(r, 1 - eps_low, 1 + eps_high) A);  if A < 0 and dual_clip c: obj = max(obj, c A)
//   kl: k1 = logp - logp_ref;  k2 = (logp - logp_ref)^2 / 2;  k3 = exp(logp_ref - logp) - (logp_ref - logp) - 1
//   per_token = -obj + beta kl
// Aggregation:
//   sequence: mean over sequences of (sum over its tokens / its token count)       (GRPO, Shao et al. 2024)
//   token:    sum over all tokens / total token count                             (DAPO)
//   dr_grpo:  sum over all tokens / constant (default N * L)                       (Dr. GRPO, Liu et al. 2025)
torch::Tensor grpo_loss(const torch::Tensor& logprobs, const torch::Tensor& old_logprobs, const torch::Tensor& ref_logprobs,
                        const torch::Tensor& advantages, const torch::Tensor& mask, const GrpoLossOptions& options,
                        GrpoLossStats* stats = nullptr);

// Group-relative advantages from rewards [B*G] laid out group by group:
//   A_i = (r_i - mean(group)) / (std + eps), std taken per group ("group"), over the whole
//   batch ("batch"), or not at all ("none", Dr. GRPO).
std::vector<double> group_advantages(const std::vector<double>& rewards, int group_size, const std::string& scale,
                                     double eps = 1e-4);

}  // namespace retort
