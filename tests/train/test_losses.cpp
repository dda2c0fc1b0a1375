// The GRPO objective and the distillation losses against values computed by hand (plain
// loops over tiny tensors), plus their invariants: KL(p||p) = 0, tau^2 scaling, JSD
// symmetry at beta = 0.5, finite gradients, clipping counts, aggregation modes.
#include <cmath>

#include "common/config.h"
#include "common/error.h"
#include "train/distill_losses.h"
#include "train/grpo_loss.h"

// Last: Torch's logging headers define CHECK too; Catch's must win.
#include <catch2/catch.hpp>

using Catch::Detail::Approx;

namespace {

torch::Tensor t2(std::vector<std::vector<float>> rows) {
  std::vector<float> flat;
  for (auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  return torch::tensor(flat).reshape({static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())});
}

// Reference KL(p || q) of softmax(a / tau), softmax(b / tau) over one row, in double.
double kl_row(const std::vector<double>& a, const std::vector<double>& b, double tau) {
  auto softmax = [&](const std::vector<double>& x) {
    double mx = *std::max_element(x.begin(), x.end()), z = 0;
    std::vector<double> p(x.size());
    for (size_t i = 0; i < x.size(); ++i) z += p[i] = std::exp((x[i] - mx) / tau);
    for (auto& v : p) v /= z;
    return p;
  };
  auto p = softmax(a), q = softmax(b);
  double kl = 0;
  for (size_t i = 0; i < p.size(); ++i) kl += p[i] * std::log(p[i] / q[i]);
  return kl;
}

}  // namespace

// ---- GRPO ------------------------------------------------------------------------------

TEST_CASE("grpo_loss: hand-computed clipped surrogate and k3 KL, sequence aggregation", "[unit]") {
  // Two sequences of length 2; the second has one padded position.
  auto logp = t2({{-1.0f, -2.0f}, {-0.5f, -3.0f}});
  auto old = t2({{-1.5f, -2.0f}, {-0.2f, -3.0f}});
  auto ref = t2({{-1.2f, -1.8f}, {-0.6f, -3.0f}});
  auto adv = torch::tensor({1.0f, -2.0f});
  auto mask = t2({{1, 1}, {1, 0}});
  retort::GrpoLossOptions o;
  o.eps_low = o.eps_high = 0.2;
  o.beta = 0.1;
  o.kl_estimator = "k3";
  retort::GrpoLossStats st;
  double got = retort::grpo_loss(logp, old, ref, adv, mask, o, &st).item<double>();

  double lp[2][2] = {{-1.0, -2.0}, {-0.5, -3.0}}, ol[2][2] = {{-1.5, -2.0}, {-0.2, -3.0}}, rf[2][2] = {{-1.2, -1.8}, {-0.6, -3.0}};
  double A[2] = {1.0, -2.0};
  int m[2][2] = {{1, 1}, {1, 0}};
  double total = 0, kl_sum = 0;
  int clip_high = 0, clip_low = 0, n = 0;
  for (int i = 0; i < 2; ++i) {
    double seq = 0;
    int cnt = 0;
    for (int j = 0; j < 2; ++j) {
      if (!m[i][j]) continue;
      double r = std::exp(lp[i][j] - ol[i][j]);
      double c = std::min(std::max(r, 0.8), 1.2);
      double obj = std::min(r * A[i], c * A[i]);
      double d = rf[i][j] - lp[i][j];
      double kl = std::exp(d) - d - 1;
      seq += -obj + 0.1 * kl;
      kl_sum += kl;
      clip_high += (r > 1.2 && A[i] > 0);
      clip_low += (r < 0.8 && A[i] < 0);
      ++cnt;
      ++n;
    }
    total += seq / cnt;
  }
  CHECK(got == Approx(total / 2).epsilon(1e-5));
  CHECK(st.kl == Approx(kl_sum / n).epsilon(1e-5));
  CHECK(st.clip_high == Approx(double(clip_high) / n));  // exp(0.5) > 1.2 with A > 0: one token
  CHECK(st.clip_low == Approx(double(clip_low) / n));    // exp(-0.3) < 0.8 with A < 0: one token
  CHECK(clip_high == 1);
  CHECK(clip_low == 1);
  CHECK(st.tokens == 3);
}

TEST_CASE("grpo_loss: zero advantage leaves only the KL term; identical policy and anchor give zero KL", "[unit]") {
  torch::manual_seed(0);
  auto logp = torch::randn({3, 5}) - 2;
  auto ref = torch::randn({3, 5}) - 2;
  auto mask = torch::ones({3, 5});
  auto zero = torch::zeros({3});
  retort::GrpoLossOptions o;
  o.beta = 0.5;
  for (const char* est : {"k1", "k2", "k3"}) {
    o.kl_estimator = est;
    retort::GrpoLossStats st;
    double loss = retort::grpo_loss(logp, logp, ref, zero, mask, o, &st).item<double>();
    CHECK(loss == Approx(0.5 * st.kl).margin(1e-6));
    retort::grpo_loss(logp, logp, logp, torch::randn({3}), mask, o, &st);
    CHECK(st.kl == Approx(0).margin(1e-7));
  }
  // k3 is never negative and is zero only at equality.
  o.kl_estimator = "k3";
  retort::GrpoLossStats st;
  retort::grpo_loss(logp, logp, ref, zero, mask, o, &st);
  CHECK(st.kl > 0);
}

TEST_CASE("grpo_loss: on-policy loss equals -mean advantage and its gradient is finite", "[unit]") {
  auto logp = (torch::randn({4, 6}) - 1).requires_grad_(true);
  auto adv = torch::tensor({1.0f, -1.0f, 0.5f, 2.0f});
  auto mask = torch::ones({4, 6});
  mask.index_put_({1, torch::indexing::Slice(3)}, 0);
  retort::GrpoLossOptions o;
  o.beta = 0;
  auto loss = retort::grpo_loss(logp, logp.detach(), torch::Tensor(), adv, mask, o);
  CHECK(loss.item<double>() == Approx(-adv.mean().item<double>()).epsilon(1e-5));
  loss.backward();
  CHECK(torch::isfinite(logp.grad()).all().item<bool>());
  // d loss / d logp = -A / (tokens of the sequence) / N on masked tokens, 0 on padding.
  CHECK(logp.grad()[0][0].item<double>() == Approx(-1.0 / 6 / 4).epsilon(1e-5));
  CHECK(logp.grad()[1][2].item<double>() == Approx(1.0 / 3 / 4).epsilon(1e-5));
  CHECK(logp.grad()[1][4].item<double>() == 0);
}

TEST_CASE("grpo_loss: aggregation modes divide by the right counts", "[unit]") {
  auto logp = torch::zeros({2, 4});
  auto adv = torch::tensor({1.0f, 1.0f});
  auto mask = t2({{1, 1, 1, 1}, {1, 0, 0, 0}});
  retort::GrpoLossOptions o;
  o.beta = 0;
  // Every token's surrogate is -1 (ratio 1, A = 1).
  o.aggregation = "sequence";
  CHECK(retort::grpo_loss(logp, logp, {}, adv, mask, o).item<double>() == Approx(-1.0));
  o.aggregation = "token";
  CHECK(retort::grpo_loss(logp, logp, {}, adv, mask, o).item<double>() == Approx(-1.0));
  o.aggregation = "dr_grpo";
  o.max_completion_length = 4;  // N x max_completion_length = 8
  CHECK(retort::grpo_loss(logp, logp, {}, adv, mask, o).item<double>() == Approx(-5.0 / 8));
  o.dr_grpo_constant = 10;
  CHECK(retort::grpo_loss(logp, logp, {}, adv, mask, o).item<double>() == Approx(-0.5));
  // Token vs sequence differ when lengths differ and per-token values differ.
  auto adv2 = torch::tensor({1.0f, 3.0f});
  o.aggregation = "sequence";
  double seq = retort::grpo_loss(logp, logp, {}, adv2, mask, o).item<double>();
  o.aggregation = "token";
  double tok = retort::grpo_loss(logp, logp, {}, adv2, mask, o).item<double>();
  CHECK(seq == Approx(-2.0));
  CHECK(tok == Approx(-(4 * 1.0 + 3.0) / 5));
}

TEST_CASE("grpo_loss: dual clip bounds the loss of negative advantages", "[unit]") {
  auto logp = t2({{2.0f}});  // ratio e^2 ~ 7.39 against old = 0
  auto old = t2({{0.0f}});
  auto adv = torch::tensor({-1.0f});
  auto mask = t2({{1}});
  retort::GrpoLossOptions o;
  o.beta = 0;
  CHECK(retort::grpo_loss(logp, old, {}, adv, mask, o).item<double>() == Approx(std::exp(2.0)));
  o.dual_clip = 3.0;
  retort::GrpoLossStats st;
  CHECK(retort::grpo_loss(logp, old, {}, adv, mask, o, &st).item<double>() == Approx(3.0));
  CHECK(st.dual_clipped == 1);
}

TEST_CASE("grpo_loss: bad shapes and a missing anchor are refused", "[unit]") {
  retort::GrpoLossOptions o;
  CHECK_THROWS_WITH(retort::grpo_loss(torch::zeros({2, 3}), torch::zeros({2, 3}), {}, torch::zeros({2}), torch::ones({2, 3}), o),
                    Catch::Contains("beta=0"));
  o.beta = 0;
  CHECK_THROWS_AS(retort::grpo_loss(torch::zeros({2, 3}), torch::zeros({2, 4}), {}, torch::zeros({2}), torch::ones({2, 3}), o),
                  retort::Error);
  CHECK_THROWS_AS(retort::grpo_loss(torch::zeros({2, 3}), torch::zeros({2, 3}), {}, torch::zeros({3}), torch::ones({2, 3}), o),
                  retort::Error);
  nlohmann::json bad = {{"kl_estimator", "k4"}};
  CHECK_THROWS_WITH(retort::parse_config<retort::GrpoLossOptions>(bad, "grpo.json"), Catch::Contains("k1, k2, k3"));
}

TEST_CASE("group advantages: per-group, per-batch and unscaled", "[unit]") {
  std::vector<double> r = {1, 0, 0, 1, 1, 1, 1, 1};
  auto a = retort::group_advantages(r, 4, "group");
  double std0 = std::sqrt((2 * 0.25) / 3.0 * 2);  // unbiased std of {1,0,0,1}
  CHECK(a[0] == Approx(0.5 / (std0 + 1e-4)));
  CHECK(a[1] == Approx(-0.5 / (std0 + 1e-4)));
  for (int i = 4; i < 8; ++i) CHECK(a[i] == 0);  // all-equal group: no signal
  auto none = retort::group_advantages(r, 4, "none");
  CHECK(none[0] == Approx(0.5));
  auto batch = retort::group_advantages(r, 4, "batch");
  CHECK(batch[0] / none[0] == Approx(batch[1] / none[1]));
  CHECK_THROWS_AS(retort::group_advantages(r, 3, "group"), retort::Error);
  CHECK_THROWS_AS(retort::group_advantages(r, 4, "rank"), retort::Error);
}

// ---- distillation ------------------------------------------------------------------------

TEST_CASE("logit losses: KL(p||p) = 0, hand-computed values, tau^2 scaling", "[unit]") {
  auto s = torch::tensor({1.0f, 2.0f, 0.5f, -1.0f, 0.0f, 3.0f}).reshape({1, 2, 3});
  auto t = torch::tensor({0.5f, 1.0f, 2.0f, 0.0f, 0.0f, 1.0f}).reshape({1, 2, 3});
  auto mask = torch::ones({1, 2});
  CHECK(retort::forward_kl_loss(s, s, mask, 1.0).item<double>() == Approx(0).margin(1e-7));
  CHECK(retort::reverse_kl_loss(t, t, mask, 2.0).item<double>() == Approx(0).margin(1e-7));
  for (double tau : {1.0, 2.0}) {
    double fwd = (kl_row({0.5, 1, 2}, {1, 2, 0.5}, tau) + kl_row({0, 0, 1}, {-1, 0, 3}, tau)) / 2 * tau * tau;
    double rev = (kl_row({1, 2, 0.5}, {0.5, 1, 2}, tau) + kl_row({-1, 0, 3}, {0, 0, 1}, tau)) / 2 * tau * tau;
    CHECK(retort::forward_kl_loss(s, t, mask, tau).item<double>() == Approx(fwd).epsilon(1e-5));
    CHECK(retort::reverse_kl_loss(s, t, mask, tau).item<double>() == Approx(rev).epsilon(1e-5));
  }
  // The mask removes positions: only the first row counts.
  auto m1 = torch::tensor({1.0f, 0.0f}).reshape({1, 2});
  CHECK(retort::forward_kl_loss(s, t, m1, 1.0).item<double>() == Approx(kl_row({0.5, 1, 2}, {1, 2, 0.5}, 1)).epsilon(1e-5));
}

TEST_CASE("generalised JSD: symmetric at beta 0.5, limits at 0 and 1, bounded by log 2", "[unit]") {
  torch::manual_seed(1);
  auto s = torch::randn({2, 3, 7}) * 3;
  auto t = torch::randn({2, 3, 7}) * 3;
  auto mask = torch::ones({2, 3});
  double st = retort::jsd_loss(s, t, mask, 0.5, 1.0).item<double>();
  double ts = retort::jsd_loss(t, s, mask, 0.5, 1.0).item<double>();
  CHECK(st == Approx(ts).epsilon(1e-5));
  CHECK(st > 0);
  CHECK(st <= std::log(2.0) + 1e-6);
  CHECK(retort::jsd_loss(s, t, mask, 0.0, 1.0).item<double>() == Approx(retort::forward_kl_loss(s, t, mask, 1.0).item<double>()));
  CHECK(retort::jsd_loss(s, t, mask, 1.0, 1.0).item<double>() == Approx(retort::reverse_kl_loss(s, t, mask, 1.0).item<double>()));
  CHECK_THROWS_AS(retort::jsd_loss(s, t, mask, 1.5, 1.0), retort::Error);
}

TEST_CASE("top-k KL equals the full KL when k covers the vocabulary, and has finite gradients", "[unit]") {
  torch::manual_seed(2);
  auto s = torch::randn({2, 4, 5}).requires_grad_(true);
  auto t = torch::randn({2, 4, 5});
  auto mask = torch::ones({2, 4});
  auto top = torch::log_softmax(t, -1).topk(5, -1);
  auto full = retort::forward_kl_loss(s, t, mask, 1.0).item<double>();
  auto sparse = retort::topk_kl_loss(s, std::get<1>(top), std::get<0>(top), mask, 1.0);
  CHECK(sparse.item<double>() == Approx(full).epsilon(1e-5));
  // With k < V the teacher is renormalised on its support; the loss stays >= 0.
  auto top2 = torch::log_softmax(t, -1).topk(2, -1);
  auto l2 = retort::topk_kl_loss(s, std::get<1>(top2), std::get<0>(top2), mask, 2.0);
  CHECK(l2.item<double>() >= 0);
  l2.backward();
  CHECK(torch::isfinite(s.grad()).all().item<bool>());
}

TEST_CASE("feature and attention losses: zero at equality, hand values, head mapping", "[unit]") {
  auto h = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).reshape({1, 2, 2});
  auto mask = torch::ones({1, 2});
  CHECK(retort::feature_loss(h, h, mask, {}, "mse").item<double>() == Approx(0).margin(1e-7));
  auto g = h + 1;
  CHECK(retort::feature_loss(h, g, mask, {}, "mse").item<double>() == Approx(1.0));
  CHECK(retort::feature_loss(h, 2 * h, mask, {}, "cosine").item<double>() == Approx(0).margin(1e-6));
  // A projection maps width 2 to width 3.
  auto proj = torch::tensor({1.0f, 0.0f, 1.0f, 0.0f, 1.0f, 1.0f}).reshape({2, 3});
  auto target = torch::matmul(h, proj);
  CHECK(retort::feature_loss(h, target, mask, proj, "mse").item<double>() == Approx(0).margin(1e-6));
  CHECK_THROWS_WITH(retort::feature_loss(h, target, mask, {}, "mse"), Catch::Contains("projection"));

  // Attention rows (causal, 2 positions): one student head vs two teacher heads.
  auto ta = torch::tensor({1.0f, 0.0f, 0.5f, 0.5f, 1.0f, 0.0f, 0.1f, 0.9f}).reshape({1, 2, 2, 2});
  auto sa = torch::tensor({1.0f, 0.0f, 0.3f, 0.7f}).reshape({1, 1, 2, 2});
  // Teacher heads averaged: row 2 = (0.3, 0.7) = student: loss 0.
  CHECK(retort::attention_loss(sa, ta, mask, "mapped").item<double>() == Approx(0).margin(1e-6));
  auto sa2 = torch::tensor({1.0f, 0.0f, 0.5f, 0.5f}).reshape({1, 1, 2, 2});
  double row2 = 0.3 * std::log(0.3 / 0.5) + 0.7 * std::log(0.7 / 0.5);
  CHECK(retort::attention_loss(sa2, ta, mask, "mean").item<double>() == Approx(row2 / 2).epsilon(1e-5));
}

TEST_CASE("progressive schedule: phases, ramps and validation", "[unit]") {
  nlohmann::json j = {{"mode", "phases"},
                      {"phases",
                       {{{"steps", 10}, {"weights", {{"ce", 1.0}, {"attention", 1.0}}}},
                        {{"steps", 10}, {"weights", {{"ce", 1.0}, {"feature", 0.5}}}},
                        {{"steps", 0}, {"weights", {{"ce", 1.0}, {"logit", 2.0}}}}}}};
  auto s = retort::parse_config<retort::DistillSchedule>(j, "cfg.json");
  s.validate({"ce", "logit", "feature", "attention"});
  CHECK(s.weights_at(0).at("attention") == 1.0);
  CHECK(s.weights_at(9).count("feature") == 0);
  CHECK(s.weights_at(10).at("feature") == 0.5);
  CHECK(s.weights_at(25).at("logit") == 2.0);
  CHECK(s.weights_at(1000).at("logit") == 2.0);
  s.mode = "ramp";
  auto w = s.weights_at(15);  // halfway through phase 2 towards phase 3
  CHECK(w.at("feature") == Approx(0.25));
  CHECK(w.at("logit") == Approx(1.0));
  CHECK(w.at("ce") == Approx(1.0));
  s.phases[1].weights["atention"] = 1;
  CHECK_THROWS_WITH(s.validate({"ce", "logit", "feature", "attention"}),
                    Catch::Contains("phases[1]") && Catch::Contains("did you mean 'attention'"));
  retort::DistillSchedule empty;
  CHECK_THROWS_AS(empty.validate({"ce"}), retort::Error);
}
