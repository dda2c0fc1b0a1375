#include "train/grpo_loss.h"

#include <cmath>  // defines: std::sqrt

#include "common/config.h"
#include "common/error.h"

namespace retort {

void GrpoLossOptions::bind(ConfigBinder& b) {
  b.field("eps_low", eps_low, Range::at_least(0).below(1));
  b.field("eps_high", eps_high, Range::at_least(0));
  b.field("dual_clip", dual_clip, Range::above(1).or_off(0));
  b.field("beta", beta, Range::at_least(0));
  b.choice("kl_estimator", kl_estimator, {"k1", "k2", "k3"});
  b.choice("aggregation", aggregation, {"sequence", "token", "dr_grpo"});
  b.field("dr_grpo_constant", dr_grpo_constant, Range::at_least(0));
}

namespace {
void check_shape(const torch::Tensor& t, const torch::Tensor& like, const char* name) {
  if (t.sizes() != like.sizes()) {
    throw Error(ErrorInfo{std::string("grpo_loss: ") + name + " has the wrong shape", "train/grpo_loss",
                          "the shape of logprobs " + std::string(c10::str(like.sizes())), c10::str(t.sizes()), ""});
  }
}
}  // namespace

torch::Tensor grpo_loss(const torch::Tensor& logprobs, const torch::Tensor& old_logprobs, const torch::Tensor& ref_logprobs,
                        const torch::Tensor& advantages, const torch::Tensor& mask, const GrpoLossOptions& o,
                        GrpoLossStats* stats) {
  check_shape(old_logprobs, logprobs, "old_logprobs");
  check_shape(mask, logprobs, "mask");
  if (advantages.dim() != 1 || advantages.size(0) != logprobs.size(0)) {
    throw Error(ErrorInfo{"grpo_loss: advantages must hold one value per sequence", "train/grpo_loss",
                          "[" + std::to_string(logprobs.size(0)) + "]", c10::str(advantages.sizes()), ""});
  }
  const bool use_kl = o.beta != 0.0;
  if (use_kl) {
    if (!ref_logprobs.defined())
      throw Error(ErrorInfo{"grpo_loss: beta > 0 needs the anchor's log-probabilities", "train/grpo_loss", "ref_logprobs",
                            "undefined", "set grpo.beta=0 to train without an anchor"});
    check_shape(ref_logprobs, logprobs, "ref_logprobs");
  }
  auto m = mask.to(logprobs.dtype());                           // [N, L]
  auto A = advantages.to(logprobs.dtype()).unsqueeze(1);        // [N, 1]
  auto ratio = torch::exp(logprobs - old_logprobs.detach());    // [N, L]
  auto clipped = torch::clamp(ratio, 1.0 - o.eps_low, 1.0 + o.eps_high);
  auto obj = torch::min(ratio * A, clipped * A);                // [N, L]
  torch::Tensor dual_active;
  if (o.dual_clip > 1.0) {
    auto floor = o.dual_clip * A;                               // [N, 1]
    dual_active = (A < 0) & (obj < floor);
    obj = torch::where(A < 0, torch::max(obj, floor), obj);
  }
  auto per_token = -obj;                                        // [N, L]
  torch::Tensor kl;
  if (use_kl) {
    auto d = ref_logprobs.detach() - logprobs;                  // log(pi_ref / pi)
    if (o.kl_estimator == "k1") kl = -d;
    else if (o.kl_estimator == "k2") kl = 0.5 * d * d;
    else kl = torch::exp(d) - d - 1.0;
    per_token = per_token + o.beta * kl;
  }

  auto aggregate = [&](const torch::Tensor& x) {
    if (o.aggregation == "sequence") {
      auto per_seq = (x * m).sum(1) / m.sum(1).clamp_min(1.0);  // [N]
      return per_seq.mean();
    }
    if (o.aggregation == "token") return (x * m).sum() / m.sum().clamp_min(1.0);
    double c = o.dr_grpo_constant > 0 ? o.dr_grpo_constant : static_cast<double>(x.size(0) * x.size(1));
    return (x * m).sum() / c;
  };
  torch::Tensor loss = aggregate(per_token);

  if (stats) {
    torch::NoGradGuard ng;
    double n = m.sum().item<double>();
    double denom = std::max(n, 1.0);
    stats->loss = loss.item<double>();
    stats->policy_loss = aggregate(-obj).item<double>();
    stats->kl = use_kl ? ((kl * m).sum().item<double>() / denom) : 0.0;
    auto low = ((ratio < 1.0 - o.eps_low) & (A < 0)).to(m.dtype());
    auto high = ((ratio > 1.0 + o.eps_high) & (A > 0)).to(m.dtype());
    stats->clip_low = (low * m).sum().item<double>() / denom;
    stats->clip_high = (high * m).sum().item<double>() / denom;
    stats->dual_clipped = dual_active.defined() ? (dual_active.to(m.dtype()) * m).sum().item<double>() / denom : 0.0;
    stats->ratio_mean = (ratio * m).sum().item<double>() / denom;
    stats->tokens = n;
  }
  return loss;
}

std::vector<double> group_advantages(const std::vector<double>& rewards, int group_size, const std::string& scale, double eps) {
  if (group_size <= 0 || rewards.size() % static_cast<size_t>(group_size) != 0) {
    throw Error(ErrorInfo{"rewards do not divide into groups", "train/grpo advantages",
                          "a multiple of the group size " + std::to_string(group_size), std::to_string(rewards.size()) + " rewards", ""});
  }
  if (scale != "group" && scale != "batch" && scale != "none") {
    throw Error(ErrorInfo{"unknown advantage scaling", "grpo.advantage_scale", "group, batch or none", scale, ""});
  }
  const size_t G = static_cast<size_t>(group_size);
  std::vector<double> adv(rewards.size());
  double batch_mean = 0, batch_var = 0;
  for (double r : rewards) batch_mean += r;
  batch_mean /= std::max<size_t>(1, rewards.size());
  for (double r : rewards) batch_var += (r - batch_mean) * (r - batch_mean);
  // Unbiased std, as torch.std (what TRL uses).
  double batch_std = rewards.size() > 1 ? std::sqrt(batch_var / (rewards.size() - 1)) : 0.0;
  for (size_t g = 0; g < rewards.size() / G; ++g) {
    double mean = 0, var = 0;
    for (size_t i = 0; i < G; ++i) mean += rewards[g * G + i];
    mean /= G;
    for (size_t i = 0; i < G; ++i) var += (rewards[g * G + i] - mean) * (rewards[g * G + i] - mean);
    double std = G > 1 ? std::sqrt(var / (G - 1)) : 0.0;
    for (size_t i = 0; i < G; ++i) {
      double centered = rewards[g * G + i] - mean;
      if (scale == "group") adv[g * G + i] = centered / (std + eps);
      else if (scale == "batch") adv[g * G + i] = centered / (batch_std + eps);
      else adv[g * G + i] = centered;
    }
  }
  return adv;
}

}  // namespace retort
