#include "train/grpo_loss.h"

#include <algorithm>  // defines: std::max
#include <cmath>   // defines: std::sqrt, std::isfinite, std::log
#include <iomanip>  // defines: std::setprecision
#include <limits>   // defines: std::numeric_limits
#include <sstream>  // defines: std::ostringstream

#include "common/config.h"
#include "common/error.h"

namespace retort {

namespace {
// A number as a config file would spell it (for error messages).
std::string format_number(double v) {
  std::ostringstream s;
  s << std::setprecision(17) << v;
  return s.str();
}
}  // namespace

void RolloutCorrectionOptions::bind(ConfigBinder& b) {
  b.choice("mode", mode, {"none", "tis", "sequence_mask"});
  b.field("cap", cap, Range::above(1));
  b.choice("sequence_ratio", sequence_ratio, {"sum", "mean"});
  b.field("log_threshold", log_threshold, Range::above(0).up_to(kLogRatioClamp));
}

void GrpoLossOptions::bind(ConfigBinder& b) {
  b.choice("loss_type", loss_type, {"ppo_clip", "cispo"});
  b.choice("importance_level", importance_level, {"token", "sequence", "sequence_token"});
  b.field("eps_low", eps_low, Range::at_least(0).below(1));
  b.field("eps_high", eps_high, Range::at_least(0));
  b.field("dual_clip", dual_clip, Range::above(1).or_off(0));
  b.field("beta", beta, Range::at_least(0));
  b.choice("kl_estimator", kl_estimator, {"k1", "k2", "k3"});
  b.choice("aggregation", aggregation, {"sequence", "token", "dr_grpo"});
  b.field("dr_grpo_constant", dr_grpo_constant, Range::at_least(0));
  b.field("top_entropy_quantile", top_entropy_quantile, Range::above(0).up_to(1));
  b.field("entropy_coef", entropy_coef, Range::at_least(0).up_to(1));
  b.field("rollout_correction", rollout_correction);
  if (b.reading()) validate();
}

// For callers of the pure function that set the options in code; the config keys are also
// checked by their Range when read.
void GrpoLossOptions::validate() const {
  auto bad = [](const char* key, double v, const char* range) {
    throw Error(ErrorInfo{std::string("grpo.loss.") + key + " is out of range", "grpo.loss", range, format_number(v),
                          "see src/train/grpo_loss.h for what the key does"});
  };
  if (!(top_entropy_quantile > 0 && top_entropy_quantile <= 1))
    bad("top_entropy_quantile", top_entropy_quantile, "(0, 1] (the share of highest-entropy tokens trained; 1 = all)");
  if (!(entropy_coef >= 0 && entropy_coef <= 1)) bad("entropy_coef", entropy_coef, "[0, 1] (0: no entropy bonus)");
}

namespace {
void check_shape(const torch::Tensor& t, const torch::Tensor& like, const char* name) {
  if (t.sizes() != like.sizes()) {
    throw Error(ErrorInfo{std::string("grpo_loss: ") + name + " has the wrong shape", "train/grpo_loss",
                          "the shape of logprobs " + std::string(c10::str(like.sizes())), c10::str(t.sizes()), ""});
  }
}

// The importance ratio r [N, L] (see the header), from the clamped log-ratio.
torch::Tensor importance_ratio(const torch::Tensor& logprobs, const torch::Tensor& old_logprobs, const torch::Tensor& m,
                               const std::string& level) {
  auto log_ratio = logprobs - old_logprobs.detach();                              // [N, L]
  if (level == "token") return torch::exp(torch::clamp(log_ratio, -kLogRatioClamp, kLogRatioClamp));
  auto mean = (log_ratio * m).sum(1, /*keepdim=*/true) / m.sum(1, /*keepdim=*/true).clamp_min(1.0);  // [N, 1]
  auto s = torch::exp(torch::clamp(mean, -kLogRatioClamp, kLogRatioClamp));      // [N, 1] GSPO's s_i
  if (level == "sequence") return s.expand_as(logprobs);
  // GSPO-token: the value of s_i, the gradient of s_i * log pi per token.
  return s.detach() * torch::exp(logprobs - logprobs.detach());
}

// 1 for the tokens whose policy term counts: the masked tokens whose entropy reaches the
// (1 - q) quantile of the masked entropies (linear interpolation, as numpy / torch.quantile).
torch::Tensor entropy_keep(const torch::Tensor& entropy, const torch::Tensor& m, double q) {
  torch::NoGradGuard ng;
  auto values = entropy.detach().masked_select(m > 0);                           // [tokens]
  if (values.numel() == 0) return torch::zeros_like(m);
  auto threshold = torch::quantile(values.to(torch::kFloat64), 1.0 - q).item<double>();
  return (entropy.detach() >= threshold).to(m.dtype()) * m;
}
}  // namespace

torch::Tensor rollout_correction_weight(const torch::Tensor& old_logprobs, const torch::Tensor& sampler_logprobs,
                                        const torch::Tensor& mask, const RolloutCorrectionOptions& o,
                                        RolloutMismatchStats* stats) {
  check_shape(sampler_logprobs, old_logprobs, "sampler_logprobs");
  check_shape(mask, old_logprobs, "mask");
  torch::NoGradGuard ng;
  auto m = mask.to(torch::kFloat64);                                                    // [N, L]
  auto l = torch::clamp((old_logprobs.detach().to(torch::kFloat64) - sampler_logprobs.to(torch::kFloat64)) * m,
                        -kLogRatioClamp, kLogRatioClamp);                               // [N, L] 0 off the mask
  const double log_cap = std::log(o.cap);
  torch::Tensor w;                                                                      // [N, L]
  torch::Tensor capped, outside;
  if (o.mode == "tis") {
    capped = (l > log_cap) & (m > 0);
    w = torch::exp(torch::clamp_max(l, log_cap));
  } else if (o.mode == "sequence_mask") {
    auto log_rho = l.sum(1);                                                            // [N]
    if (o.sequence_ratio == "mean") log_rho = log_rho / m.sum(1).clamp_min(1.0);
    outside = log_rho.abs() > log_cap;                                                  // [N]
    w = (~outside).to(torch::kFloat64).unsqueeze(1).expand_as(l);
  } else {
    w = torch::ones_like(l);
  }
  if (stats && l.numel() > 0) {
    auto a = l.abs();                                                                   // [N, L] 0 off the mask
    auto rows = m.sum(1) > 0;                                                           // [N]
    auto zero = torch::zeros({}, l.options());
    auto v = torch::stack({m.sum(), a.sum(), a.max(), ((a > o.log_threshold) & (m > 0)).sum().to(l.dtype()),
                           capped.defined() ? capped.sum().to(l.dtype()) : zero, rows.sum().to(l.dtype()),
                           outside.defined() ? (outside & rows).sum().to(l.dtype()) : zero, (w * m).sum()})
                 .to(torch::kCPU);  // one transfer: a sync point on a GPU
    auto x = v.accessor<double, 1>();
    stats->tokens += x[0];
    stats->abs_sum += x[1];
    stats->abs_max = std::max(stats->abs_max, x[2]);
    stats->over += x[3];
    stats->capped += x[4];
    stats->sequences += x[5];
    stats->masked += x[6];
    stats->weight_sum += x[7];
  }
  return w.to(old_logprobs.dtype());
}

torch::Tensor grpo_loss(const torch::Tensor& logprobs, const torch::Tensor& old_logprobs, const torch::Tensor& ref_logprobs,
                        const torch::Tensor& advantages, const torch::Tensor& mask, const GrpoLossOptions& o,
                        GrpoLossStats* stats, const torch::Tensor& entropy, const torch::Tensor& is_weight) {
  check_shape(old_logprobs, logprobs, "old_logprobs");
  check_shape(mask, logprobs, "mask");
  if (!((advantages.dim() == 1 && advantages.size(0) == logprobs.size(0)) || advantages.sizes() == logprobs.sizes())) {
    throw Error(ErrorInfo{"grpo_loss: advantages must hold one value per sequence or one per token", "train/grpo_loss",
                          "[" + std::to_string(logprobs.size(0)) + "] or " + std::string(c10::str(logprobs.sizes())),
                          c10::str(advantages.sizes()), ""});
  }
  const bool use_kl = o.beta != 0.0;
  if (use_kl) {
    if (!ref_logprobs.defined())
      throw Error(ErrorInfo{"grpo_loss: beta > 0 needs the anchor's log-probabilities", "train/grpo_loss", "ref_logprobs",
                            "undefined", "set grpo.beta=0 to train without an anchor"});
    check_shape(ref_logprobs, logprobs, "ref_logprobs");
  }
  if (o.needs_entropy()) {
    if (!entropy.defined())
      throw Error(ErrorInfo{"grpo_loss: top_entropy_quantile < 1 or entropy_coef != 0 needs the per-token entropy",
                            "train/grpo_loss", "entropy [N, L]", "undefined", ""});
    check_shape(entropy, logprobs, "entropy");
  }
  if (is_weight.defined()) check_shape(is_weight, logprobs, "is_weight");
  if (o.aggregation == "dr_grpo" && o.dr_grpo_constant <= 0 && o.max_completion_length <= 0) {
    throw Error(ErrorInfo{"grpo_loss: the dr_grpo aggregation needs its divisor", "train/grpo_loss",
                          "dr_grpo_constant > 0 or max_completion_length > 0 (the recipe sets it from sampling.max_new_tokens)",
                          "neither", ""});
  }
  auto m = mask.to(logprobs.dtype());                           // [N, L]
  // [N, 1] (one per sequence, broadcast) or [N, L] (one per token)
  auto A = advantages.to(logprobs.dtype()).detach();
  if (A.dim() == 1) A = A.unsqueeze(1);
  auto ratio = importance_ratio(logprobs, old_logprobs, m, o.importance_level);  // [N, L]
  auto clipped = torch::clamp(ratio, 1.0 - o.eps_low, 1.0 + o.eps_high);
  torch::Tensor obj, dual_active;                               // [N, L]
  if (o.loss_type == "cispo") {
    obj = clipped.detach() * A * logprobs;
  } else {
    obj = torch::min(ratio * A, clipped * A);
    if (o.dual_clip > 1.0) {
      auto floor = o.dual_clip * A;                             // [N, 1]
      dual_active = (A < 0) & (obj < floor);
      obj = torch::where(A < 0, torch::max(obj, floor), obj);
    }
  }
  torch::Tensor keep = o.top_entropy_quantile < 1.0 ? entropy_keep(entropy, m, o.top_entropy_quantile) : m;  // [N, L]
  auto policy_term = o.top_entropy_quantile < 1.0 ? -obj * keep : -obj;
  if (is_weight.defined()) policy_term = policy_term * is_weight.detach().to(logprobs.dtype());
  auto per_token = policy_term;                                 // [N, L]
  torch::Tensor kl;
  if (use_kl) {
    auto d = torch::clamp(ref_logprobs.detach() - logprobs, -kLogRatioClamp, kLogRatioClamp);  // log(pi_ref / pi)
    if (o.kl_estimator == "k1") kl = -d;
    else if (o.kl_estimator == "k2") kl = 0.5 * d * d;
    else kl = torch::clamp(torch::exp(d) - d - 1.0, -kK3Clamp, kK3Clamp);
    per_token = per_token + o.beta * kl;
  }
  if (o.entropy_coef != 0.0) per_token = per_token - o.entropy_coef * entropy;

  auto aggregate = [&](const torch::Tensor& x) {
    if (o.aggregation == "sequence") {
      auto per_seq = (x * m).sum(1) / m.sum(1).clamp_min(1.0);  // [N]
      return per_seq.mean();
    }
    if (o.aggregation == "token") return (x * m).sum() / m.sum().clamp_min(1.0);
    double c = o.dr_grpo_constant > 0 ? o.dr_grpo_constant
                                      : static_cast<double>(x.size(0)) * static_cast<double>(o.max_completion_length);
    return (x * m).sum() / c;
  };
  torch::Tensor loss = aggregate(per_token);

  if (stats) {
    torch::NoGradGuard ng;
    double n = m.sum().item<double>();
    double denom = std::max(n, 1.0);
    stats->loss = loss.item<double>();
    stats->policy_loss = aggregate(policy_term).item<double>();
    stats->kl = use_kl ? ((kl * m).sum().item<double>() / denom) : 0.0;
    auto low = ((ratio < 1.0 - o.eps_low) & (A < 0)).to(m.dtype());
    auto high = ((ratio > 1.0 + o.eps_high) & (A > 0)).to(m.dtype());
    stats->clip_low = (low * m).sum().item<double>() / denom;
    stats->clip_high = (high * m).sum().item<double>() / denom;
    stats->dual_clipped = dual_active.defined() ? (dual_active.to(m.dtype()) * m).sum().item<double>() / denom : 0.0;
    stats->ratio_mean = (ratio * m).sum().item<double>() / denom;
    stats->tokens = n;
    stats->entropy = entropy.defined() ? (entropy.detach() * m).sum().item<double>() / denom
                                       : std::numeric_limits<double>::quiet_NaN();
    stats->entropy_kept = keep.sum().item<double>() / denom;
  }
  return loss;
}

torch::Tensor opd_token_advantages(const torch::Tensor& verifier_adv, const torch::Tensor& teacher_logp,
                                   const torch::Tensor& student_logp, const torch::Tensor& mask, double weight) {
  check_shape(student_logp, teacher_logp, "student_logp");
  check_shape(mask, teacher_logp, "mask");
  if (verifier_adv.dim() != 1 || verifier_adv.size(0) != teacher_logp.size(0)) {
    throw Error(ErrorInfo{"opd_token_advantages: the verifier advantages must hold one value per sequence", "train/grpo_loss",
                          "[" + std::to_string(teacher_logp.size(0)) + "]", c10::str(verifier_adv.sizes()), ""});
  }
  if (!std::isfinite(weight)) {
    throw Error(ErrorInfo{"opd_token_advantages: the weight must be finite", "train/grpo_loss", "a finite number",
                          format_number(weight), ""});
  }
  torch::NoGradGuard ng;
  auto m = mask.to(teacher_logp.dtype());                                              // [N, L]
  auto reverse_kl_reward = teacher_logp.detach() - student_logp.detach();              // [N, L]
  return (verifier_adv.to(teacher_logp.dtype()).unsqueeze(1) + weight * reverse_kl_reward) * m;
}

std::vector<double> group_advantages(const std::vector<double>& rewards, int group_size, const std::string& scale, double eps,
                                     const std::string& estimator) {
  if (group_size <= 0 || rewards.size() % static_cast<size_t>(group_size) != 0) {
    throw Error(ErrorInfo{"rewards do not divide into groups", "train/grpo advantages",
                          "a multiple of the group size " + std::to_string(group_size), std::to_string(rewards.size()) + " rewards", ""});
  }
  if (scale != "group" && scale != "batch" && scale != "none") {
    throw Error(ErrorInfo{"unknown advantage scaling", "grpo.advantage.scale", "group, batch or none", scale, ""});
  }
  if (estimator != "grpo" && estimator != "rloo" && estimator != "reinforce_pp_baseline") {
    throw Error(ErrorInfo{"unknown advantage estimator", "grpo.advantage.estimator", "grpo, rloo or reinforce_pp_baseline",
                          estimator, ""});
  }
  if (!(eps > 0)) {
    throw Error(ErrorInfo{"the advantage's eps must be positive", "grpo.advantage.eps", "a number > 0 (e.g. 1e-4)",
                          format_number(eps), "a group of identical rewards has std 0; eps keeps 0 / (0 + eps) = 0"});
  }
  if (estimator == "rloo" && group_size < 2) {
    throw Error(ErrorInfo{"the rloo estimator needs at least 2 completions per prompt", "grpo.advantage.estimator",
                          "group_size >= 2", std::to_string(group_size), "use estimator grpo or raise group_size"});
  }
  const size_t G = static_cast<size_t>(group_size);
  const size_t groups = rewards.size() / G;
  // Unbiased std, as torch.std (what TRL uses).
  auto std_of = [](const std::vector<double>& x) {
    if (x.size() < 2) return 0.0;
    double mean = 0, var = 0;
    for (double v : x) mean += v;
    mean /= static_cast<double>(x.size());
    for (double v : x) var += (v - mean) * (v - mean);
    return std::sqrt(var / static_cast<double>(x.size() - 1));
  };
  std::vector<double> centered(rewards.size()), group_std(groups);
  for (size_t g = 0; g < groups; ++g) {
    std::vector<double> grp(rewards.begin() + g * G, rewards.begin() + (g + 1) * G);
    double mean = 0;
    for (double r : grp) mean += r;
    mean /= static_cast<double>(G);
    for (size_t i = 0; i < G; ++i) centered[g * G + i] = grp[i] - mean;
    group_std[g] = std_of(grp);
  }
  const double batch_std = std_of(rewards), centered_std = std_of(centered);
  std::vector<double> adv(rewards.size());
  for (size_t g = 0; g < groups; ++g) {
    for (size_t i = 0; i < G; ++i) {
      const size_t k = g * G + i;
      if (estimator == "rloo") {
        // r_i - (sum - r_i) / (G - 1) = G / (G - 1) (r_i - mean)
        adv[k] = centered[k] * static_cast<double>(G) / static_cast<double>(G - 1);
      } else if (estimator == "reinforce_pp_baseline") {
        adv[k] = centered[k] / (centered_std + eps);
      } else if (scale == "group") {
        adv[k] = centered[k] / (group_std[g] + eps);
      } else if (scale == "batch") {
        adv[k] = centered[k] / (batch_std + eps);
      } else {
        adv[k] = centered[k];
      }
    }
  }
  return adv;
}

}  // namespace retort
