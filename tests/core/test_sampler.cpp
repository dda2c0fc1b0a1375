// Sampler tests: log-probabilities equal a full forward pass, reproducibility, greedy
// decoding through the cache equals step-by-step argmax, stop ids and masks, top-k/top-p.
#include <catch2/catch.hpp>

#include <ATen/CPUGeneratorImpl.h>  // defines: at::detail::createCPUGenerator

#include <algorithm>  // defines: std::count, std::sort
#include <cmath>      // defines: std::exp, std::log, std::sqrt
#include <set>        // defines: std::set
#include <vector>     // defines: std::vector

#include "common/error.h"      // defines: retort::Error
#include "model/checkpoint.h"  // defines: load_model
#include "rollout/logprobs.h"  // defines: token_logprobs
#include "rollout/sampler.h"   // defines: sample, Rollout
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace {

std::string fixture(const std::string& name) { return std::string(RETORT_SOURCE_DIR) + "/tests/fixtures/model/" + name; }

std::vector<std::vector<int32_t>> prompts_for_test() { return {{5, 17, 33, 2 + 40, 9}, {70, 11}, {23, 24, 25, 26, 27, 28, 29, 30}}; }

}  // namespace

TEST_CASE("sampler log-probs equal those of a full forward pass over the finished sequences", "[model]") {
  for (const char* name : {"qwen2_tiny", "llama_tiny"}) {
    INFO(name);
    auto model = retort::load_model(fixture(name));
    retort::SamplerOptions o;
    o.group_size = 4;
    o.max_new_tokens = 12;
    o.temperature = 1.3;
    o.top_p = 0.95;
    o.stop_token_ids = {2, 3, 10, 11, 12, 13, 14, 15, 16, 40, 41, 42, 43, 44};  // frequent enough to stop rows early
    o.seed = 11;
    o.pad_token_id = 0;
    std::vector<int64_t> rows_finished;
    o.on_finished = [&](int64_t row, const std::vector<int32_t>&) { rows_finished.push_back(row); };
    auto r = retort::sample(*model, prompts_for_test(), o, [](const std::vector<int32_t>& ids) {
      return std::to_string(ids.size());
    });
    const int64_t N = 12;
    REQUIRE(r.tokens.size(0) == N);
    REQUIRE(r.tokens.size(1) == r.prompt_length + r.completion_mask.size(1));
    CHECK(r.prompt_length == 8);
    CHECK(rows_finished.size() == static_cast<size_t>(N));
    // Some rows stopped early and some ran longer: compaction was exercised.
    int stopped = 0;
    std::set<int64_t> lengths;
    for (int64_t i = 0; i < N; ++i) {
      stopped += r.truncated[i] ? 0 : 1;
      lengths.insert(static_cast<int64_t>(r.completions[i].size()));
    }
    CHECK(stopped > 0);
    CHECK(lengths.size() > 1);
    // Recompute with one forward pass over [prompt | completion], at the sampling temperature.
    retort::LogprobOptions lo;
    lo.temperature = o.temperature;
    auto lp = retort::token_logprobs(*model, r.tokens, r.attention_mask, lo);  // [N, P+L-1]
    auto P = r.prompt_length, L = r.completion_mask.size(1);
    auto recomputed = lp.narrow(1, P - 1, L) * r.completion_mask.to(torch::kFloat);  // [N, L]
    CHECK((recomputed - r.logprobs).abs().max().item<double>() < 1e-4);
    // ... and not the untempered model's (the sampler's log-probs are those of the policy it drew from).
    auto untempered = retort::token_logprobs(*model, r.tokens, r.attention_mask).narrow(1, P - 1, L) * r.completion_mask.to(torch::kFloat);
    CHECK((untempered - r.logprobs).abs().max().item<double>() > 1e-2);
    CHECK(r.logprobs.abs().sum().item<double>() > 1.0);  // not all zeros
    // Masks: 1 up to and including the stop token, then 0; a stopped row ends on a stop id.
    auto cm = r.completion_mask;
    for (int64_t i = 0; i < N; ++i) {
      const int64_t n = static_cast<int64_t>(r.completions[i].size());
      CHECK(cm[i].sum().item<int64_t>() == n);
      if (n < L) CHECK(cm[i][n].item<int64_t>() == 0);
      if (!r.truncated[i]) {
        CHECK(std::count(o.stop_token_ids.begin(), o.stop_token_ids.end(), r.completions[i].back()) == 1);
        CHECK(r.texts[i] == std::to_string(n - 1));  // the decoder sees the completion without its stop token
      } else {
        CHECK(n == o.max_new_tokens);
      }
      for (int64_t j = 0; j + 1 < n; ++j) {
        CHECK(std::count(o.stop_token_ids.begin(), o.stop_token_ids.end(), r.completions[i][j]) == 0);
      }
    }
  }
}

TEST_CASE("the same seed gives the same rollout; another seed another one", "[model]") {
  auto model = retort::load_model(fixture("qwen2_tiny"));
  retort::SamplerOptions o;
  o.group_size = 3;
  o.max_new_tokens = 10;
  o.top_k = 20;
  o.temperature = 2.5;  // the fixture model mostly repeats the last token: flatten it so that rows differ
  o.seed = 5;
  auto a = retort::sample(*model, prompts_for_test(), o);
  auto b = retort::sample(*model, prompts_for_test(), o);
  CHECK(torch::equal(a.tokens, b.tokens));
  CHECK(torch::equal(a.logprobs, b.logprobs));
  o.seed = 6;
  auto c = retort::sample(*model, prompts_for_test(), o);
  CHECK_FALSE(torch::equal(a.tokens, c.tokens));
  // Rows of one group differ from each other when sampling (not G copies of one draw).
  CHECK_FALSE(torch::equal(a.tokens[0], a.tokens[1]));
}

TEST_CASE("greedy decoding through the cache equals step-by-step argmax of full forward passes", "[model]") {
  auto model = retort::load_model(fixture("llama_tiny"));
  retort::SamplerOptions o;
  o.greedy = true;
  o.group_size = 2;
  o.max_new_tokens = 8;
  auto prompts = prompts_for_test();
  auto r = retort::sample(*model, prompts, o);
  torch::NoGradGuard ng;
  for (size_t b = 0; b < prompts.size(); ++b) {
    std::vector<int64_t> seq(prompts[b].begin(), prompts[b].end());
    for (int step = 0; step < 8; ++step) {
      auto logits = model->forward(torch::tensor(seq, torch::kLong).unsqueeze(0)).logits;  // [1, T, V]
      seq.push_back(logits[0][-1].argmax().item<int64_t>());
    }
    std::vector<int64_t> expect(seq.end() - 8, seq.end());
    for (int g = 0; g < 2; ++g) {
      INFO("prompt " << b << " row " << g);
      std::vector<int64_t> got(r.completions[b * 2 + g].begin(), r.completions[b * 2 + g].end());
      CHECK(got == expect);
    }
  }
  // top_k = 1 and a tiny top_p are greedy too.
  retort::SamplerOptions k1 = o;
  k1.greedy = false;
  k1.top_k = 1;
  CHECK(torch::equal(retort::sample(*model, prompts, k1).tokens, r.tokens));
  retort::SamplerOptions p0 = o;
  p0.greedy = false;
  p0.top_p = 1e-6;
  CHECK(torch::equal(retort::sample(*model, prompts, p0).tokens, r.tokens));
}

TEST_CASE("top-k and top-p restrict the support of the sampled tokens", "[unit]") {
  auto logits = torch::log(torch::tensor({0.5, 0.3, 0.1, 0.05, 0.05}, torch::kFloat)).unsqueeze(0).repeat({400, 1});
  auto gen = at::detail::createCPUGenerator(3);
  retort::SamplerOptions o;
  o.top_k = 2;
  auto t = retort::pick_tokens(logits, o, gen);
  CHECK(t.max().item<int64_t>() <= 1);
  CHECK(t.min().item<int64_t>() == 0);
  o.top_k = 0;
  o.top_p = 0.85;  // 0.5 + 0.3 < 0.85: the third token is needed, the fourth not
  t = retort::pick_tokens(logits, o, gen);
  CHECK(t.max().item<int64_t>() == 2);
  o.top_p = 1.0;
  t = retort::pick_tokens(logits, o, gen);
  CHECK(t.max().item<int64_t>() >= 3);
}

TEST_CASE("the sampler refuses empty prompts and out-of-vocabulary ids", "[unit]") {
  auto model = retort::load_model(fixture("qwen2_tiny"));
  retort::SamplerOptions o;
  CHECK_THROWS_AS(retort::sample(*model, {{}}, o), retort::Error);
  CHECK_THROWS_AS(retort::sample(*model, {{1, 96}}, o), retort::Error);
}

namespace {

// Expected token probabilities, computed here from the definitions (not by the sampler):
// p_i ∝ exp(l_i / T); top-k keeps the k largest; top-p keeps tokens, most likely first, while
// the probability mass before them is < top_p; what is kept is renormalised.
std::vector<double> expected_probs(const std::vector<double>& logits, double T, int64_t top_k, double top_p) {
  const size_t V = logits.size();
  std::vector<size_t> order(V);
  for (size_t i = 0; i < V; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return logits[a] > logits[b]; });
  std::vector<double> p(V, 0.0);
  const size_t k = top_k > 0 ? static_cast<size_t>(top_k) : V;
  double z = 0;
  for (size_t r = 0; r < k; ++r) z += std::exp(logits[order[r]] / T);
  double before = 0, kept = 0;
  for (size_t r = 0; r < k; ++r) {
    const double q = std::exp(logits[order[r]] / T) / z;
    if (before >= top_p) break;
    p[order[r]] = q, kept += q, before += q;
  }
  for (double& q : p) q /= kept;
  return p;
}

}  // namespace

TEST_CASE("draw_tokens samples the tempered distribution restricted by top-k and top-p", "[unit]") {
  const std::vector<double> base = {0.04, 0.4, 0.1, 0.25, 0.06, 0.15};
  std::vector<double> logits;
  for (double q : base) logits.push_back(std::log(q));
  const int64_t R = 40000, V = static_cast<int64_t>(base.size());
  auto rows = torch::tensor(logits, torch::kFloat).unsqueeze(0).repeat({R, 1});  // [R, V]
  struct Case { double T; int64_t top_k; double top_p; };
  for (const Case& c : {Case{1.0, 0, 1.0}, Case{0.6, 0, 1.0}, Case{1.5, 0, 1.0}, Case{1.0, 3, 1.0}, Case{1.0, 0, 0.7},
                        Case{0.6, 0, 0.95}, Case{1.3, 4, 0.8}}) {
    INFO("T " << c.T << " top_k " << c.top_k << " top_p " << c.top_p);
    retort::SamplerOptions o;
    o.temperature = c.T, o.top_k = c.top_k, o.top_p = c.top_p;
    auto gen = at::detail::createCPUGenerator(17);
    std::vector<at::Generator*> gens(static_cast<size_t>(R), &gen);
    auto t = retort::draw_tokens(rows, o, gens);
    REQUIRE(t.size(0) == R);
    auto counts = torch::bincount(t, {}, V);
    const auto expect = expected_probs(logits, c.T, c.top_k, c.top_p);
    for (int64_t v = 0; v < V; ++v) {
      const double p = expect[static_cast<size_t>(v)], f = counts[v].item<double>() / R;
      INFO("token " << v << ": expected " << p << ", drew " << f);
      if (p == 0) {
        CHECK(f == 0);
      } else {
        CHECK(std::abs(f - p) <= 5 * std::sqrt(p * (1 - p) / R));  // 5 standard errors
      }
    }
  }
}

TEST_CASE("draw_tokens: a row's token depends on its logits and generator only", "[unit]") {
  torch::manual_seed(5);
  const int64_t R = 9, V = 300;
  auto logits = torch::randn({R, V}) * 3;  // [R, V]
  for (double top_p : {1.0, 0.9}) {
    INFO("top_p " << top_p);
    retort::SamplerOptions o;
    o.temperature = 0.8, o.top_p = top_p;
    std::vector<int64_t> alone;
    for (int64_t r = 0; r < R; ++r) {
      auto g = at::detail::createCPUGenerator(100 + static_cast<uint64_t>(r));
      alone.push_back(retort::draw_tokens(logits.narrow(0, r, 1), o, {&g})[0].item<int64_t>());
    }
    // All rows at once, in reverse order, each with a fresh generator of its seed.
    std::vector<at::Generator> gens;
    for (int64_t r = R - 1; r >= 0; --r) gens.push_back(at::detail::createCPUGenerator(100 + static_cast<uint64_t>(r)));
    std::vector<at::Generator*> ptrs;
    for (auto& g : gens) ptrs.push_back(&g);
    auto together = retort::draw_tokens(logits.flip({0}), o, ptrs);
    for (int64_t r = 0; r < R; ++r) CHECK(together[R - 1 - r].item<int64_t>() == alone[static_cast<size_t>(r)]);
    // The same row under 20 seeds: the generator decides among the likely tokens.
    std::set<int64_t> distinct;
    for (uint64_t seed = 0; seed < 20; ++seed) {
      auto g = at::detail::createCPUGenerator(seed);
      distinct.insert(retort::draw_tokens(logits.narrow(0, 0, 1) * 0.1, o, {&g})[0].item<int64_t>());
    }
    CHECK(distinct.size() > 1);
  }
}
