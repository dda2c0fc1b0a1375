// The policy-gradient objectives and advantage estimators against an independent reference:
// tests/fixtures/grpo/cases.json, written by scripts/fixtures/grpo/make_fixtures.py from the
// papers' equations (PPO clip, GSPO and GSPO-token, CISPO, dual clip, k1/k2/k3, entropy
// selection and bonus, the three aggregations; GRPO / RLOO / REINFORCE++ baseline), token by
// token in float64 with autograd for the gradients. Every loss type x importance level x
// aggregation x KL estimator is covered, and the extreme cases fire the log-ratio and k3 clamps
// and the dual clip.
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/config.h"
#include "common/error.h"
#include "train/grpo_loss.h"

// Last: Torch's logging headers define CHECK too; Catch's must win.
#include <catch2/catch.hpp>
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

using Catch::Detail::Approx;
using nlohmann::json;

namespace {

json load_cases() {
  std::ifstream in(std::string(RETORT_SOURCE_DIR) + "/tests/fixtures/grpo/cases.json");
  REQUIRE(in.good());
  return json::parse(in);
}

torch::Tensor mat(const json& rows) {
  const int64_t n = static_cast<int64_t>(rows.size()), l = static_cast<int64_t>(rows[0].size());
  std::vector<double> flat;
  for (const auto& r : rows)
    for (const auto& v : r) flat.push_back(v.get<double>());
  return torch::tensor(flat, torch::kFloat64).reshape({n, l});
}

retort::GrpoLossOptions options_of(const json& o) {
  retort::GrpoLossOptions opt;
  opt.loss_type = o.at("loss_type");
  opt.importance_level = o.at("importance_level");
  opt.eps_low = o.at("eps_low");
  opt.eps_high = o.at("eps_high");
  opt.dual_clip = o.at("dual_clip");
  opt.beta = o.at("beta");
  opt.kl_estimator = o.at("kl_estimator");
  opt.aggregation = o.at("aggregation");
  opt.max_completion_length = o.at("max_completion_length");
  opt.top_entropy_quantile = o.at("top_entropy_quantile");
  opt.entropy_coef = o.at("entropy_coef");
  return opt;
}

void check_close(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  INFO(what << "\n got  " << got << "\n want " << want);
  // 1e-9 relative with a 1e-12 floor: both sides are float64.
  CHECK(torch::allclose(got, want, /*rtol=*/1e-9, /*atol=*/1e-12));
}

}  // namespace

TEST_CASE("grpo_loss: every loss type, importance level, aggregation and KL estimator against the reference", "[unit]") {
  const json cases = load_cases();
  REQUIRE(cases.at("loss_cases").size() >= 58);
  int extreme_dual = 0, clamped = 0;
  for (const auto& c : cases.at("loss_cases")) {
    const std::string name = c.at("name");
    INFO("case " << name);
    const auto& in = c.at("inputs");
    const auto opt = options_of(c.at("options"));
    auto logp = mat(in.at("logp")).requires_grad_(true);
    auto entropy = mat(in.at("entropy")).requires_grad_(true);
    std::vector<double> adv = in.at("adv").get<std::vector<double>>();
    retort::GrpoLossStats st;
    // The rollout-correction cases carry the reference's weights (the helper that computes them
    // is tested against the same cases below).
    auto is_weight = in.contains("is_weight") ? mat(in.at("is_weight")) : torch::Tensor();
    auto loss = retort::grpo_loss(logp, mat(in.at("old")), mat(in.at("ref")), torch::tensor(adv, torch::kFloat64),
                                  mat(in.at("mask")), opt, &st, entropy, is_weight);
    loss.backward();
    const auto& want = c.at("expected");
    CHECK(std::isfinite(loss.item<double>()));
    CHECK(loss.item<double>() == Approx(want.at("loss").get<double>()).epsilon(1e-9).margin(1e-12));
    check_close(logp.grad(), mat(want.at("grad_logp")), name + ": d loss / d logp");
    if (opt.entropy_coef != 0.0) check_close(entropy.grad(), mat(want.at("grad_entropy")), name + ": d loss / d entropy");
    CHECK(st.kl == Approx(want.at("kl").get<double>()).epsilon(1e-9).margin(1e-12));
    CHECK(torch::isfinite(logp.grad()).all().item<bool>());
    if (name.rfind("extreme/dual_clip", 0) == 0 && opt.importance_level == "token") extreme_dual += st.dual_clipped > 0;
    if (name.rfind("extreme/", 0) == 0) {
      // The extreme inputs hold a log-ratio of +100 nats and an anchor 60 nats away: without
      // the clamps the loss would be inf and the gradient NaN.
      auto lr = (logp.detach() - mat(in.at("old"))).abs().max().item<double>();
      clamped += lr > retort::kLogRatioClamp;
    }
  }
  CHECK(extreme_dual == 2);  // the dual clip really bounded a token in both token-level cases
  CHECK(clamped == 9);       // every extreme case went past the clamp
}

namespace {
retort::RolloutCorrectionOptions correction_of(const json& o) {
  retort::RolloutCorrectionOptions rc;
  rc.mode = o.at("mode");
  rc.cap = o.at("cap");
  rc.sequence_ratio = o.at("sequence_ratio");
  rc.log_threshold = o.at("log_threshold");
  return rc;
}
}  // namespace

TEST_CASE("rollout correction: TIS and sequence masking weights, mismatch and the loss against the reference", "[unit]") {
  // Each case's inputs hold the trainer's log-probs (old) and the sampler's: a small mismatch on
  // every token, a row the trainer finds e^1.5 times likelier on every token, one with a token
  // e^2 less likely, one past the log-ratio clamp (40 nats). The weights come from the helper,
  // then go through grpo_loss; value and gradient match the reference's.
  const json cases = load_cases();
  int tis = 0, masks = 0, capped_cases = 0, masked_cases = 0, sum_vs_mean = 0;
  for (const auto& c : cases.at("loss_cases")) {
    const std::string name = c.at("name");
    if (name.rfind("rollout/", 0) != 0) continue;
    INFO("case " << name);
    const auto& in = c.at("inputs");
    const auto opt = options_of(c.at("options"));
    const auto rc = correction_of(c.at("options").at("rollout_correction"));
    auto old = mat(in.at("old")), mask = mat(in.at("mask"));
    retort::RolloutMismatchStats mm;
    auto w = retort::rollout_correction_weight(old, mat(in.at("sampler")), mask, rc, &mm);
    check_close(w * mask, mat(in.at("is_weight")) * mask, name + ": weights");
    CHECK_FALSE(w.requires_grad());
    const auto& want = c.at("mismatch");
    CHECK(mm.abs_sum / mm.tokens == Approx(want.at("logratio_mean").get<double>()).epsilon(1e-9));
    CHECK(mm.abs_max == Approx(want.at("logratio_max").get<double>()).epsilon(1e-12));
    CHECK(mm.over / mm.tokens == Approx(want.at("frac_over").get<double>()).epsilon(1e-12));
    CHECK(mm.capped / mm.tokens == Approx(want.at("capped_frac").get<double>()).epsilon(1e-12));
    CHECK(mm.masked / mm.sequences == Approx(want.at("masked_frac").get<double>()).epsilon(1e-12));
    CHECK(mm.weight_sum / mm.tokens == Approx(want.at("weight_mean").get<double>()).epsilon(1e-9));
    tis += rc.mode == "tis";
    masks += rc.mode == "sequence_mask";
    capped_cases += rc.mode == "tis" && mm.capped > 0;
    masked_cases += rc.mode == "sequence_mask" && mm.masked > 0 && mm.masked < mm.sequences;
    if (rc.mode == "sequence_mask") {
      // Row 1 (one token e^2 less likely): outside [1/3, 3] by its sum, inside by its mean.
      CHECK(w[1][0].item<double>() == (rc.sequence_ratio == "sum" ? 0.0 : 1.0));
      sum_vs_mean += 1;
    }
    if (rc.mode == "none") CHECK(torch::all(w == 1).item<bool>());

    auto logp = mat(in.at("logp")).requires_grad_(true);
    std::vector<double> adv = in.at("adv").get<std::vector<double>>();
    auto loss = retort::grpo_loss(logp, old, mat(in.at("ref")), torch::tensor(adv, torch::kFloat64), mask, opt, nullptr,
                                  mat(in.at("entropy")), w);
    loss.backward();
    CHECK(loss.item<double>() == Approx(c.at("expected").at("loss").get<double>()).epsilon(1e-9).margin(1e-12));
    check_close(logp.grad(), mat(c.at("expected").at("grad_logp")), name + ": d loss / d logp");
  }
  CHECK(tis == 4);
  CHECK(masks == 4);
  CHECK(capped_cases == 4);  // the cap truncated tokens in every TIS case
  CHECK(masked_cases == 4);  // every mask case dropped some sequences and kept others
  CHECK(sum_vs_mean == 4);
}

TEST_CASE("rollout correction: a masked sequence keeps its KL and its place in the denominator", "[unit]") {
  // Two sequences of 2 tokens, ratio 1, A = +1 each: the policy term is -1 per token. Masking
  // the second (weight 0) halves the sequence-mean loss rather than dropping the row, and the
  // KL term (k1 = logp - ref = 0.5) still counts on both.
  retort::GrpoLossOptions o;
  o.beta = 0.1;
  o.kl_estimator = "k1";
  auto logp = torch::zeros({2, 2}, torch::kFloat64).requires_grad_(true);
  auto ref = torch::full({2, 2}, -0.5, torch::kFloat64);
  auto w = torch::tensor({1.0, 1.0, 0.0, 0.0}, torch::kFloat64).reshape({2, 2});
  auto loss = retort::grpo_loss(logp, logp.detach(), ref, torch::ones({2}, torch::kFloat64), torch::ones({2, 2}, torch::kFloat64), o,
                                nullptr, {}, w);
  CHECK(loss.item<double>() == Approx((-1.0 + 0.0) / 2 + 0.1 * 0.5));
  loss.backward();
  // d/dlogp: row 0: (-1 + 0.1) / (2 tokens x 2 rows); row 1: only the KL, 0.1 / 4.
  CHECK(logp.grad()[0][0].item<double>() == Approx(-0.9 / 4));
  CHECK(logp.grad()[1][0].item<double>() == Approx(0.1 / 4));
}

TEST_CASE("grpo_loss: GSPO-token equals GSPO in value and gradient with sequence advantages", "[unit]") {
  // GSPO eq. 14: with A_it = A_i the token form is numerically the sequence form.
  torch::manual_seed(3);
  auto old = -torch::rand({4, 6}, torch::kFloat64) * 2;
  auto mask = torch::ones({4, 6}, torch::kFloat64);
  mask.index_put_({2, torch::indexing::Slice(2)}, 0);
  auto adv = torch::tensor({1.0, -0.5, 2.0, -1.5}, torch::kFloat64);
  retort::GrpoLossOptions o;
  o.beta = 0;
  o.eps_low = 3e-4;
  o.eps_high = 4e-4;
  torch::Tensor grads[2];
  double values[2];
  const char* levels[2] = {"sequence", "sequence_token"};
  for (int k = 0; k < 2; ++k) {
    torch::manual_seed(11);  // the same perturbation for both levels
    auto logp = (old + 2e-4 * torch::randn({4, 6}, torch::kFloat64)).detach().requires_grad_(true);
    o.importance_level = levels[k];
    auto loss = retort::grpo_loss(logp, old, {}, adv, mask, o);
    loss.backward();
    values[k] = loss.item<double>();
    grads[k] = logp.grad();
  }
  CHECK(values[0] == Approx(values[1]).epsilon(1e-12));
  CHECK(torch::allclose(grads[0], grads[1], 1e-10, 1e-14));
}

TEST_CASE("grpo_loss: CISPO keeps the gradient of clipped tokens, where PPO clip drops it", "[unit]") {
  // A token far above 1 + eps_high with A > 0: PPO's min() picks the constant clipped branch
  // (zero gradient); CISPO clips only the weight and still pushes log p up.
  auto logp = torch::tensor({{0.0}}, torch::kFloat64).requires_grad_(true);
  auto old = torch::tensor({{-1.0}}, torch::kFloat64);  // ratio e ~ 2.72
  auto adv = torch::tensor({1.0}, torch::kFloat64);
  auto mask = torch::ones({1, 1}, torch::kFloat64);
  retort::GrpoLossOptions o;
  o.beta = 0;
  o.eps_high = 0.28;
  retort::grpo_loss(logp, old, {}, adv, mask, o).backward();
  CHECK(logp.grad().item<double>() == 0.0);
  logp.grad().zero_();
  o.loss_type = "cispo";
  retort::grpo_loss(logp, old, {}, adv, mask, o).backward();
  CHECK(logp.grad().item<double>() == Approx(-1.28));  // - clip(e, 0.8, 1.28) * A
}

TEST_CASE("grpo_loss: dr_grpo divides by N x the maximum completion length, whatever the padding", "[unit]") {
  // Four sequences of 1-2 tokens, surrogate -1 per token (ratio 1, A = 1): 6 tokens / (4 x 8).
  retort::GrpoLossOptions o;
  o.beta = 0;
  o.aggregation = "dr_grpo";
  o.max_completion_length = 8;
  auto adv = torch::ones({4});
  auto mask2 = torch::tensor({1.f, 1.f, 1.f, 0.f, 1.f, 1.f, 1.f, 0.f}).reshape({4, 2});
  auto mask5 = torch::zeros({4, 5});
  mask5.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, 2)}, mask2);
  double padded2 = retort::grpo_loss(torch::zeros({4, 2}), torch::zeros({4, 2}), {}, adv, mask2, o).item<double>();
  double padded5 = retort::grpo_loss(torch::zeros({4, 5}), torch::zeros({4, 5}), {}, adv, mask5, o).item<double>();
  CHECK(padded2 == Approx(-6.0 / 32));
  CHECK(padded5 == Approx(-6.0 / 32));
  o.max_completion_length = 0;
  CHECK_THROWS_WITH(retort::grpo_loss(torch::zeros({4, 2}), torch::zeros({4, 2}), {}, adv, mask2, o),
                    Catch::Contains("max_completion_length"));
}

TEST_CASE("grpo_loss: out-of-range options are refused when the config is read, naming the key and the range", "[unit]") {
  struct Case {
    json doc;
    const char* needle;
  };
  std::vector<Case> cases = {
      {{{"dual_clip", 0.5}}, "dual_clip"},
      {{{"dual_clip", 1.0}}, "> 1"},
      {{{"eps_low", -0.1}}, "eps_low"},
      {{{"eps_low", 1.5}}, "[0, 1)"},
      {{{"beta", -1}}, "beta"},
      {{{"loss_type", "ppo"}}, "ppo_clip, cispo"},
      {{{"importance_level", "seq"}}, "token, sequence, sequence_token"},
  };
  for (const auto& c : cases) {
    INFO(c.doc.dump());
    CHECK_THROWS_WITH(retort::parse_config<retort::GrpoLossOptions>(c.doc, "grpo.json"), Catch::Contains(c.needle));
  }
  CHECK_NOTHROW(retort::parse_config<retort::GrpoLossOptions>(json{{"dual_clip", 3.0}, {"loss_type", "cispo"}}, "grpo.json"));
}

TEST_CASE("grpo_loss: the rollout correction and entropy keys are refused out of range", "[unit][bad_input]") {
  struct Case {
    json doc;
    const char* key;
    const char* range;
  };
  std::vector<Case> cases = {
      {{{"rollout_correction", {{"mode", "token_truncate"}}}}, "rollout_correction.mode", "none, tis, sequence_mask"},
      {{{"rollout_correction", {{"cap", 1.0}}}}, "rollout_correction.cap", "> 1"},
      {{{"rollout_correction", {{"cap", -2}}}}, "rollout_correction.cap", "> 1"},
      {{{"rollout_correction", {{"sequence_ratio", "geometric"}}}}, "rollout_correction.sequence_ratio", "sum, mean"},
      {{{"rollout_correction", {{"log_threshold", 0}}}}, "rollout_correction.log_threshold", "in (0, 20]"},
      {{{"rollout_correction", {{"capp", 2}}}}, "capp", "cap"},
      {{{"top_entropy_quantile", 0}}, "top_entropy_quantile", "in (0, 1]"},
      {{{"top_entropy_quantile", 1.2}}, "top_entropy_quantile", "in (0, 1]"},
      {{{"entropy_coef", -0.001}}, "entropy_coef", "in [0, 1]"},
      {{{"entropy_coef", 2}}, "entropy_coef", "in [0, 1]"},
  };
  for (const auto& c : cases) {
    INFO(c.doc.dump());
    CHECK_THROWS_WITH(retort::parse_config<retort::GrpoLossOptions>(c.doc, "grpo.json"),
                      Catch::Contains(c.key) && Catch::Contains(c.range));
  }
  auto ok = retort::parse_config<retort::GrpoLossOptions>(
      json{{"top_entropy_quantile", 0.2}, {"entropy_coef", 0.001}, {"rollout_correction", {{"mode", "tis"}, {"cap", 2.0}}}}, "grpo.json");
  CHECK(ok.rollout_correction.mode == "tis");
  CHECK(ok.needs_entropy());
  // The pure function's own check, for callers that set the options in code.
  retort::GrpoLossOptions o;
  o.entropy_coef = -1;
  CHECK_THROWS_WITH(o.validate(), Catch::Contains("entropy_coef") && Catch::Contains("[0, 1]"));
  CHECK_THROWS_WITH(retort::rollout_correction_weight(torch::zeros({2, 3}), torch::zeros({2, 4}), torch::ones({2, 3}), {}),
                    Catch::Contains("sampler_logprobs"));
}

TEST_CASE("group_advantages: GRPO, RLOO and REINFORCE++ baseline against the reference", "[unit]") {
  const json cases = load_cases();
  REQUIRE(cases.at("advantage_cases").size() == 20);
  for (const auto& c : cases.at("advantage_cases")) {
    auto rewards = c.at("rewards").get<std::vector<double>>();
    auto want = c.at("expected").get<std::vector<double>>();
    auto got = retort::group_advantages(rewards, c.at("group_size"), c.at("scale"), c.at("eps"), c.at("estimator"));
    INFO(c.dump());
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      CHECK(std::isfinite(got[i]));
      CHECK(got[i] == Approx(want[i]).epsilon(1e-12).margin(1e-14));
    }
  }
}

TEST_CASE("group_advantages: eps <= 0 is refused (identical rewards would give NaN)", "[unit]") {
  std::vector<double> rewards = {2, 2, 1, 0};
  CHECK_THROWS_WITH(retort::group_advantages(rewards, 2, "group", 0.0), Catch::Contains("eps"));
  CHECK_THROWS_WITH(retort::group_advantages(rewards, 2, "group", -1e-4), Catch::Contains("> 0"));
  CHECK_THROWS_WITH(retort::group_advantages(rewards, 1, "group", 1e-4, "rloo"), Catch::Contains("group_size >= 2"));
  CHECK_THROWS_WITH(retort::group_advantages(rewards, 2, "group", 1e-4, "ppo"), Catch::Contains("rloo"));
}

TEST_CASE("grpo_loss: per-token advantages (on-policy distillation) against the reference", "[unit]") {
  // The reference builds A_it = A_i + w (teacher_it - student_it) from the teacher's and the
  // sampler's log-probs, then the loss token by token with A_it in place of A_i.
  const json cases = load_cases();
  REQUIRE(cases.at("token_advantage_cases").size() == 7);
  int levels_seen = 0;
  for (const auto& c : cases.at("token_advantage_cases")) {
    const std::string name = c.at("name");
    INFO("case " << name);
    const auto& in = c.at("inputs");
    const auto opt = options_of(c.at("options"));
    auto mask = mat(in.at("mask"));
    auto verifier = torch::tensor(in.at("verifier_adv").get<std::vector<double>>(), torch::kFloat64);
    auto adv = retort::opd_token_advantages(verifier, mat(in.at("teacher")), mat(in.at("old")), mask, in.at("opd_weight").get<double>());
    check_close(adv, mat(in.at("adv")), name + ": the per-token advantages");
    CHECK_FALSE(adv.requires_grad());
    auto logp = mat(in.at("logp")).requires_grad_(true);
    retort::GrpoLossStats st;
    auto loss = retort::grpo_loss(logp, mat(in.at("old")), mat(in.at("ref")), adv, mask, opt, &st);
    loss.backward();
    const auto& want = c.at("expected");
    CHECK(loss.item<double>() == Approx(want.at("loss").get<double>()).epsilon(1e-9).margin(1e-12));
    check_close(logp.grad(), mat(want.at("grad_logp")), name + ": d loss / d logp");
    CHECK(st.kl == Approx(want.at("kl").get<double>()).epsilon(1e-9).margin(1e-12));
    levels_seen |= opt.importance_level == "token" ? 1 : opt.importance_level == "sequence" ? 2 : 4;
  }
  CHECK(levels_seen == 7);
}

TEST_CASE("grpo_loss: advantages [N] and the same values broadcast to [N, L] give the same loss and gradient", "[unit]") {
  torch::manual_seed(5);
  auto old = -torch::rand({3, 5}, torch::kFloat64) * 2;
  auto mask = torch::ones({3, 5}, torch::kFloat64);
  mask.index_put_({1, torch::indexing::Slice(3)}, 0);
  auto adv = torch::tensor({0.7, -1.2, 0.4}, torch::kFloat64);
  for (const char* level : {"token", "sequence", "sequence_token"}) {
    INFO(level);
    retort::GrpoLossOptions o;
    o.beta = 0;
    o.dual_clip = 3.0;
    o.importance_level = level;
    torch::Tensor grads[2];
    double values[2];
    torch::manual_seed(17);
    auto base = (old + 0.3 * torch::randn({3, 5}, torch::kFloat64)).detach();
    for (int k = 0; k < 2; ++k) {
      auto logp = base.clone().requires_grad_(true);
      auto a = k == 0 ? adv : adv.unsqueeze(1).expand({3, 5}).contiguous();
      auto loss = retort::grpo_loss(logp, old, {}, a, mask, o);
      loss.backward();
      values[k] = loss.item<double>();
      grads[k] = logp.grad();
    }
    CHECK(values[0] == Approx(values[1]).epsilon(1e-14));
    CHECK(torch::allclose(grads[0], grads[1], 1e-12, 1e-15));
  }
  // Neither [N + 1] nor [N, L + 1] is accepted.
  retort::GrpoLossOptions o;
  o.beta = 0;
  CHECK_THROWS_WITH(retort::grpo_loss(old, old, {}, torch::zeros({4}, torch::kFloat64), mask, o), Catch::Contains("one per token"));
  CHECK_THROWS_WITH(retort::grpo_loss(old, old, {}, torch::zeros({3, 6}, torch::kFloat64), mask, o), Catch::Contains("one per token"));
}

TEST_CASE("opd_token_advantages: identical student and teacher give the verifier advantage only; padding is 0", "[unit]") {
  auto lp = -torch::rand({2, 4}, torch::kFloat64);
  auto mask = torch::tensor({1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0}, torch::kFloat64).reshape({2, 4});
  auto adv = retort::opd_token_advantages(torch::tensor({0.5, -0.25}, torch::kFloat64), lp, lp, mask, 3.0);
  auto want = torch::tensor({0.5, 0.5, 0.5, 0.0, -0.25, -0.25, 0.0, 0.0}, torch::kFloat64).reshape({2, 4});
  CHECK(torch::equal(adv, want));
  CHECK_THROWS_WITH(retort::opd_token_advantages(torch::zeros({3}, torch::kFloat64), lp, lp, mask, 1.0), Catch::Contains("one value per sequence"));
}

TEST_CASE("grpo_loss: tool observation tokens count as if deleted (reference), and nothing flows through them", "[unit]") {
  // Each case is a batch of tool-integrated chains: one or two observation spans inside four of
  // the five completions. The reference (make_fixtures.py make_observation_cases) deletes the
  // observation tokens from the sequences and computes on the shortened batch; here the batch
  // keeps them and the mask is the recipe's, 1 on model-written tokens only (Rollout::
  // completion_mask). Then every input at the observation positions (policy, old, anchor and
  // sampler log-probs, entropy, the teacher's) is perturbed: loss, KL, weights, advantages and
  // gradients must stay bit for bit the same, and no gradient reaches an observation position.
  const json cases = load_cases();
  REQUIRE(cases.at("observation_cases").size() == 13);
  int with_rc = 0, with_opd = 0;
  for (const auto& c : cases.at("observation_cases")) {
    const std::string name = c.at("name");
    INFO("case " << name);
    const auto& in = c.at("inputs");
    const auto& want = c.at("expected");
    const auto opt = options_of(c.at("options"));
    auto obs = mat(in.at("obs"));
    auto written = mat(in.at("mask")) * (1 - obs);  // [N, L] the recipe's completion mask
    REQUIRE(obs.sum().item<double>() >= 6);
    struct Out {
      torch::Tensor loss, grad_logp, grad_entropy, weight, adv;
      retort::GrpoLossStats st;
      retort::RolloutMismatchStats mm;
    };
    auto run = [&](double noise_scale, uint64_t seed) {
      torch::manual_seed(seed);
      // x at model-written positions, x + noise at observation positions.
      auto at_obs = [&](const char* key) { return mat(in.at(key)) + obs * (noise_scale * torch::randn_like(obs) + noise_scale); };
      Out o;
      auto logp = at_obs("logp").requires_grad_(true);
      auto entropy = at_obs("entropy").abs().requires_grad_(true);
      auto old = at_obs("old");
      torch::Tensor adv = torch::tensor(in.at("adv").get<std::vector<double>>(), torch::kFloat64);
      if (in.contains("teacher")) o.adv = adv = retort::opd_token_advantages(adv, at_obs("teacher"), old, written, in.at("opd_weight").get<double>());
      if (c.at("options").contains("rollout_correction"))
        o.weight = retort::rollout_correction_weight(old, at_obs("sampler"), written, correction_of(c.at("options").at("rollout_correction")), &o.mm);
      o.loss = retort::grpo_loss(logp, old, at_obs("ref"), adv, written, opt, &o.st, entropy, o.weight);
      o.loss.backward();
      o.grad_logp = logp.grad();
      o.grad_entropy = entropy.grad().defined() ? entropy.grad() : torch::zeros_like(obs);
      return o;
    };
    Out a = run(0.0, 1), b = run(7.0, 2);
    // Against the reference on the batch without its observation tokens.
    CHECK(a.loss.item<double>() == Approx(want.at("loss").get<double>()).epsilon(1e-9).margin(1e-12));
    CHECK(a.st.kl == Approx(want.at("kl").get<double>()).epsilon(1e-9).margin(1e-12));
    CHECK(a.st.tokens == written.sum().item<double>());
    check_close(a.grad_logp, mat(want.at("grad_logp")), name + ": d loss / d logp");
    if (opt.entropy_coef != 0.0) check_close(a.grad_entropy, mat(want.at("grad_entropy")), name + ": d loss / d entropy");
    if (a.weight.defined()) {
      ++with_rc;
      check_close(a.weight * written, mat(want.at("is_weight")), name + ": rollout correction weights");
      const auto& mm = c.at("mismatch");
      CHECK(a.mm.tokens == written.sum().item<double>());
      CHECK(a.mm.abs_sum / a.mm.tokens == Approx(mm.at("logratio_mean").get<double>()).epsilon(1e-9));
      CHECK(a.mm.masked / a.mm.sequences == Approx(mm.at("masked_frac").get<double>()).epsilon(1e-12));
      CHECK(torch::equal(a.weight * written, b.weight * written));
      CHECK(a.mm.abs_sum == b.mm.abs_sum);
      CHECK(a.mm.abs_max == b.mm.abs_max);
    }
    if (a.adv.defined()) {
      ++with_opd;
      check_close(a.adv, mat(want.at("token_adv")), name + ": per-token advantages");
      CHECK(torch::equal(a.adv, b.adv));
    }
    // Perturbed observations: bit for bit the same loss, statistics and gradients.
    CHECK(torch::equal(a.loss, b.loss));
    CHECK(a.st.kl == b.st.kl);
    CHECK(a.st.entropy == b.st.entropy);
    CHECK(a.st.entropy_kept == b.st.entropy_kept);
    CHECK(a.st.clip_low == b.st.clip_low);
    CHECK(a.st.clip_high == b.st.clip_high);
    CHECK(torch::equal(a.grad_logp, b.grad_logp));
    CHECK(torch::equal(a.grad_entropy, b.grad_entropy));
    CHECK(torch::equal(a.grad_logp * obs, torch::zeros_like(obs)));
    CHECK(torch::equal(a.grad_entropy * obs, torch::zeros_like(obs)));
  }
  CHECK(with_rc == 3);
  CHECK(with_opd == 2);
}
