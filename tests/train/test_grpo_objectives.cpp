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
    auto loss = retort::grpo_loss(logp, mat(in.at("old")), mat(in.at("ref")), torch::tensor(adv, torch::kFloat64),
                                  mat(in.at("mask")), opt, &st, entropy);
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
