#include "train/distill_losses.h"

#include <algorithm>  // defines: std::find
#include <cmath>      // defines: std::log
#include <numeric>    // defines: std::gcd

#include "common/config.h"
#include "common/error.h"

namespace retort {

namespace {

// Masked mean of a per-position loss [N, T].
torch::Tensor masked_mean(const torch::Tensor& per_pos, const torch::Tensor& mask) {
  auto m = mask.to(per_pos.dtype());
  return (per_pos * m).sum() / m.sum().clamp_min(1.0);
}

void check_logits(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& mask, const char* fn) {
  if (s.dim() != 3 || s.sizes() != t.sizes()) {
    throw Error(ErrorInfo{std::string(fn) + ": student and teacher logits must have the same [N, T, V] shape",
                          "train/distill_losses", "[N, T, V] twice", c10::str(s.sizes()) + " and " + c10::str(t.sizes()),
                          "student and teacher must share the tokenizer"});
  }
  if (mask.dim() != 2 || mask.size(0) != s.size(0) || mask.size(1) != s.size(1)) {
    throw Error(ErrorInfo{std::string(fn) + ": the mask must be [N, T]", "train/distill_losses",
                          "[" + std::to_string(s.size(0)) + ", " + std::to_string(s.size(1)) + "]", c10::str(mask.sizes()), ""});
  }
}

// sum_v exp(a) (a - b) over the last dim, for log-prob tensors a, b.
torch::Tensor kl_rows(const torch::Tensor& log_p, const torch::Tensor& log_q) {
  return (log_p.exp() * (log_p - log_q)).sum(-1);
}

}  // namespace

torch::Tensor logit_loss_rows(const std::string& kind, const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& ids,
                              const torch::Tensor& lp, double beta, double tau) {
  auto ls = torch::log_softmax(s.to(torch::kFloat) / tau, -1);  // [..., V]
  torch::Tensor per_pos;                                        // [...]
  if (kind == "topk") {
    auto ls_k = ls.gather(-1, ids.to(torch::kLong));                        // [..., K]
    auto lq = torch::log_softmax(lp.detach().to(torch::kFloat) / tau, -1);  // [..., K] renormalised on the support
    per_pos = kl_rows(lq, ls_k);
  } else {
    auto lt = torch::log_softmax(t.detach().to(torch::kFloat) / tau, -1);  // [..., V]
    if (kind == "forward_kl" || (kind == "jsd" && beta == 0)) {
      per_pos = kl_rows(lt, ls);
    } else if (kind == "reverse_kl" || (kind == "jsd" && beta == 1)) {
      per_pos = kl_rows(ls, lt);
    } else if (kind == "jsd") {
      if (beta < 0 || beta > 1) {
        throw Error(ErrorInfo{"jsd beta must lie in [0, 1]", "distill.logit.beta", "0 <= beta <= 1", std::to_string(beta), ""});
      }
      // log M = logsumexp(log beta + log p_t, log(1 - beta) + log p_s), stable in log space.
      auto lm = torch::logsumexp(torch::stack({lt + std::log(beta), ls + std::log(1.0 - beta)}), 0);
      per_pos = beta * kl_rows(lt, lm) + (1.0 - beta) * kl_rows(ls, lm);
    } else {
      throw Error(ErrorInfo{"unknown logit loss", "distill.logit.kind", "forward_kl, reverse_kl, jsd or topk", kind, ""});
    }
  }
  return tau * tau * per_pos;
}

torch::Tensor forward_kl_loss(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& mask, double tau) {
  check_logits(s, t, mask, "forward_kl_loss");
  return masked_mean(logit_loss_rows("forward_kl", s, t, {}, {}, 0.0, tau), mask);
}

torch::Tensor reverse_kl_loss(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& mask, double tau) {
  check_logits(s, t, mask, "reverse_kl_loss");
  return masked_mean(logit_loss_rows("reverse_kl", s, t, {}, {}, 0.0, tau), mask);
}

torch::Tensor jsd_loss(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& mask, double beta, double tau) {
  check_logits(s, t, mask, "jsd_loss");
  if (beta < 0 || beta > 1) {
    throw Error(ErrorInfo{"jsd beta must lie in [0, 1]", "distill.logit.beta", "0 <= beta <= 1", std::to_string(beta), ""});
  }
  return masked_mean(logit_loss_rows("jsd", s, t, {}, {}, beta, tau), mask);
}

torch::Tensor topk_kl_loss(const torch::Tensor& s, const torch::Tensor& ids, const torch::Tensor& lp, const torch::Tensor& mask,
                           double tau) {
  if (ids.dim() != 3 || ids.sizes() != lp.sizes() || ids.size(0) != s.size(0) || ids.size(1) != s.size(1)) {
    throw Error(ErrorInfo{"topk_kl_loss: top-k ids and log-probs must be [N, T, K] matching the logits", "train/distill_losses",
                          "[" + std::to_string(s.size(0)) + ", " + std::to_string(s.size(1)) + ", K]",
                          c10::str(ids.sizes()) + " and " + c10::str(lp.sizes()), ""});
  }
  return masked_mean(logit_loss_rows("topk", s, {}, ids, lp, 0.0, tau), mask);
}

torch::Tensor feature_loss(const torch::Tensor& hs, const torch::Tensor& ht, const torch::Tensor& mask,
                           const torch::Tensor& projection, const std::string& kind) {
  auto x = hs.to(torch::kFloat);
  if (projection.defined()) x = torch::matmul(x, projection);  // [N, T, Ct]
  auto y = ht.detach().to(torch::kFloat);
  if (x.sizes() != y.sizes()) {
    throw Error(ErrorInfo{"feature_loss: student and teacher hidden states differ in shape", "train/distill_losses",
                          c10::str(y.sizes()), c10::str(x.sizes()),
                          "map layers of different widths through a projection (distill.feature.projection=true)"});
  }
  torch::Tensor per_pos;
  if (kind == "mse") per_pos = (x - y).pow(2).mean(-1);
  else if (kind == "cosine") per_pos = 1.0 - torch::cosine_similarity(x, y, -1, 1e-8);
  else throw Error(ErrorInfo{"unknown feature loss", "distill.feature.kind", "mse or cosine", kind, ""});
  return masked_mean(per_pos, mask);
}

torch::Tensor attention_loss(const torch::Tensor& sa, const torch::Tensor& ta, const torch::Tensor& mask, const std::string& heads) {
  if (sa.dim() != 4 || ta.dim() != 4 || sa.size(0) != ta.size(0) || sa.size(2) != ta.size(2) || sa.size(3) != ta.size(3)) {
    throw Error(ErrorInfo{"attention_loss: attention maps must be [N, H, T, S] with equal N, T, S", "train/distill_losses",
                          c10::str(ta.sizes()), c10::str(sa.sizes()), ""});
  }
  auto s = sa.to(torch::kFloat);
  auto t = ta.detach().to(torch::kFloat);
  int64_t hs = s.size(1), ht = t.size(1);
  auto group = [](const torch::Tensor& a, int64_t groups) {  // [N,H,T,S] -> [N,groups,T,S]
    int64_t h = a.size(1);
    return a.reshape({a.size(0), groups, h / groups, a.size(2), a.size(3)}).mean(2);
  };
  if (heads == "mean") {
    s = s.mean(1, true);
    t = t.mean(1, true);
  } else if (heads == "mapped") {
    if (hs != ht) {
      int64_t g = std::gcd(hs, ht);
      s = group(s, g);
      t = group(t, g);
    }
  } else {
    throw Error(ErrorInfo{"unknown head mapping", "distill.attention.heads", "mapped or mean", heads, ""});
  }
  // Rows of softmax probabilities; clamp before the log so that masked (zero) entries of
  // the causal mask contribute 0 * log(0) = 0 rather than NaN.
  const double eps = 1e-10;
  auto per_row = (t * (t.clamp_min(eps).log() - s.clamp_min(eps).log())).sum(-1);  // [N, H', T]
  return masked_mean(per_row.mean(1), mask);
}

// ---------------------------------------------------------------------------------------
// Schedule

void DistillPhase::bind(ConfigBinder& b) {
  b.field("steps", steps, Range::at_least(0));
  b.field("weights", weights);
}

void DistillSchedule::bind(ConfigBinder& b) {
  b.choice("mode", mode, {"phases", "ramp"});
  b.field("phases", phases);
}

void DistillSchedule::validate(const std::vector<std::string>& known) const {
  if (phases.empty()) {
    throw Error(ErrorInfo{"the distillation schedule has no phase", "distill.schedule.phases", "at least one phase", "[]",
                          "e.g. [{\"steps\": 100, \"weights\": {\"ce\": 1, \"logit\": 1}}]"});
  }
  std::string list;
  for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
  for (size_t i = 0; i < phases.size(); ++i) {
    std::string where = "distill.schedule.phases[" + std::to_string(i) + "]";
    if (phases[i].steps <= 0 && i + 1 < phases.size())
      throw Error(ErrorInfo{"a phase before the last must have positive steps", where + ".steps", "> 0", std::to_string(phases[i].steps), ""});
    for (const auto& kv : phases[i].weights) {
      if (std::find(known.begin(), known.end(), kv.first) == known.end()) {
        std::string near = closest_match(kv.first, known);
        throw Error(ErrorInfo{"unknown loss name in the schedule", where + ".weights", "one of: " + list, quote_for_error(kv.first),
                              near.empty() ? "" : "did you mean '" + near + "'?"});
      }
      if (kv.second < 0) throw Error(ErrorInfo{"a loss weight is negative", where + ".weights." + kv.first, ">= 0", std::to_string(kv.second), ""});
    }
  }
}

std::map<std::string, double> DistillSchedule::weights_at(int64_t step) const {
  if (phases.empty()) return {};
  int64_t start = 0;
  for (size_t i = 0; i < phases.size(); ++i) {
    bool last = i + 1 == phases.size();
    if (last || step < start + phases[i].steps) {
      if (mode == "phases" || last) return phases[i].weights;
      // ramp: interpolate from this phase's weights to the next one's across the phase.
      double f = static_cast<double>(step - start) / static_cast<double>(phases[i].steps);
      std::map<std::string, double> w;
      for (const auto& kv : phases[i].weights) w[kv.first] += (1.0 - f) * kv.second;
      for (const auto& kv : phases[i + 1].weights) w[kv.first] += f * kv.second;
      return w;
    }
    start += phases[i].steps;
  }
  return phases.back().weights;
}

}  // namespace retort
