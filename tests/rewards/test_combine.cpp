// Registry, config, the N x K table and its weighted sum, and the runner's deadline
// (rewards/verifier.h, rewards/combine.h).
#include <catch2/catch.hpp>

#include <atomic>  // defines: std::atomic
#include <cmath>   // defines: std::isnan
#include <future>  // defines: std::promise, std::shared_future

#include "common/config.h"     // defines: parse_config
#include "rewards/combine.h"   // defines: RewardSet, RewardsConfig, combine_rewards

using namespace retort::rewards;
using json = nlohmann::json;

namespace {

// A verifier with a fixed answer: args {"reward": x | null, "wait": bool, "block": bool, "throw": bool}.
class FixedVerifier : public Verifier {
 public:
  FixedVerifier(json args, std::shared_future<void> release) : args_(std::move(args)), release_(std::move(release)) {}
  Score verify(const Sample& s) const override {
    if (args_.value("block", false)) release_.wait();  // hangs until the test releases it
    if (args_.value("throw", false)) throw std::runtime_error("boom");
    if (args_["reward"].is_null()) return Score::not_applicable("fixed");
    Score sc;
    // The reward may depend on the sample, to check that cells land in the right place.
    sc.reward = args_["reward"].get<double>() + (s.row.contains("bonus") ? s.row["bonus"].get<double>() : 0.0);
    sc.passed = sc.reward > 0;
    sc.detail["completion"] = std::string(s.completion);
    return sc;
  }
  bool waits() const override { return args_.value("wait", false); }

 private:
  json args_;
  std::shared_future<void> release_;
};

Registry test_registry(std::shared_future<void> release) {
  Registry r = builtin_registry();
  r.add("fixed", "test", [release](const json& a, const VerifierContext&) {
    return std::make_shared<FixedVerifier>(a, release);
  });
  return r;
}

ScoreInput input(const std::string& completion, json row) {
  ScoreInput in;
  in.completion = completion;
  in.row = std::make_shared<const json>(std::move(row));
  return in;
}

}  // namespace

TEST_CASE("registry: built-ins by name, unknown names list the known ones", "[unit]") {
  Registry r = builtin_registry();
  for (const char* name : {"math", "code", "format", "tag_count", "overlong", "cosine_length", "repetition", "external"})
    CHECK(r.contains(name));
  VerifierContext ctx;
  try {
    r.create("maths", json::object(), ctx);
    FAIL("no error for an unknown name");
  } catch (const retort::Error& e) {
    std::string msg = e.what();
    CHECK(msg.find("unknown verifier 'maths'") != std::string::npos);
    CHECK(msg.find("format") != std::string::npos);  // lists the known names
    CHECK(msg.find("did you mean 'math'") != std::string::npos);
  }
  // Bad args: the key is named, with the allowed ones.
  struct Bad {
    const char* name;
    json args;
    const char* mentions;
  };
  const Bad bad[] = {
      {"math", {{"rel_tol", "small"}}, "rel_tol"},
      {"math", {{"tolerance", 1e-3}}, "tolerance"},
      {"format", {{"mode", "lenient"}}, "strict"},
      {"repetition", {{"ngram", 0}}, "ngram"},
      {"overlong", {{"max_length", 10}, {"cache_length", 20}}, "cache_length"},
      {"external", json::object(), "command"},
  };
  for (const auto& b : bad) {
    INFO(b.name << " " << b.args.dump());
    try {
      r.create(b.name, b.args, ctx);
      FAIL("no error for bad args");
    } catch (const retort::Error& e) {
      CHECK(std::string(e.what()).find(b.mentions) != std::string::npos);
    }
  }
  // A name registered twice is reported.
  Registry twice = builtin_registry();
  twice.add("math", "again", [](const json&, const VerifierContext&) { return std::shared_ptr<Verifier>(); });
  CHECK_THROWS_AS(twice.check("test"), retort::Error);
}

TEST_CASE("config: a list of {name, weight, args}, unknown keys rejected", "[unit]") {
  json doc = {{"verifiers", {{{"name", "math"}, {"weight", 2.0}}, {{"name", "format"}, {"args", {{"mode", "soft"}}}}}},
              {"deadline_s", 5}};
  auto cfg = retort::parse_config<RewardsConfig>(doc, "test.json");
  REQUIRE(cfg.verifiers.size() == 2);
  CHECK(cfg.verifiers[0].weight == 2.0);
  CHECK(cfg.verifiers[1].weight == 1.0);
  CHECK(cfg.verifiers[1].args["mode"] == "soft");
  json bad = {{"verifiers", {{{"name", "math"}, {"wieght", 2.0}}}}};
  CHECK_THROWS_AS(retort::parse_config<RewardsConfig>(bad, "test.json"), retort::Error);
}

TEST_CASE("combine_rewards: weighted sum that skips not-applicable entries", "[unit]") {
  const double NA = std::nan("");
  struct Case {
    std::vector<double> rewards;  // one row, K entries
    std::vector<double> weights;
    double total;
  };
  const Case cases[] = {
      {{1.0, 0.5}, {1.0, 1.0}, 1.5},
      {{1.0, 0.5}, {2.0, -1.0}, 1.5},
      {{NA, 0.5}, {1.0, 2.0}, 1.0},
      {{NA, NA}, {1.0, 1.0}, 0.0},
      {{0.0, -1.0, 1.0}, {1.0, 0.1, 0.5}, 0.4},
  };
  for (const auto& c : cases) {
    RewardTable t;
    t.n = 1;
    t.k = static_cast<int>(c.rewards.size());
    t.rewards = c.rewards;
    t.weights = c.weights;
    CHECK(combine_rewards(t)[0] == Approx(c.total));
  }
}

TEST_CASE("RewardSet: N x K table, cells in place, NaN kept, exceptions become zero", "[unit]") {
  std::promise<void> never;
  RewardsConfig cfg;
  cfg.verifiers = {VerifierSpec{"fixed", 1.0, {{"reward", 1.0}}},
                   VerifierSpec{"fixed", 0.5, {{"reward", nullptr}}},
                   VerifierSpec{"fixed", 2.0, {{"reward", 0.25}, {"wait", true}}},
                   VerifierSpec{"fixed", 1.0, {{"reward", 1.0}, {"throw", true}}},
                   VerifierSpec{"math", 1.0, json::object()}};
  cfg.threads = 2;
  RewardSet set(cfg, test_registry(never.get_future().share()));
  std::vector<ScoreInput> inputs = {input("\\boxed{4}", {{"answer", "4"}}), input("\\boxed{5}", {{"answer", "4"}, {"bonus", 1.0}}),
                                    input("none", json::object())};
  RewardTable t = set.score(inputs);
  REQUIRE(t.n == 3);
  REQUIRE(t.k == 5);
  CHECK(t.names[4] == "math");
  for (int i = 0; i < 3; ++i) {
    double bonus = i == 1 ? 1.0 : 0.0;
    CHECK(t.reward(i, 0) == 1.0 + bonus);
    CHECK(std::isnan(t.reward(i, 1)));
    CHECK(t.reward(i, 2) == 0.25 + bonus);
    CHECK(t.reward(i, 3) == 0.0);
    CHECK(t.detail(i, 3)["error"].get<std::string>().find("boom") != std::string::npos);
    CHECK(t.detail(i, 0)["completion"] == inputs[static_cast<size_t>(i)].completion);
  }
  CHECK(t.reward(0, 4) == 1.0);
  CHECK(t.reward(1, 4) == 0.0);
  CHECK(std::isnan(t.reward(2, 4)));
  // total = 1*r0 + 0.5*NaN(skipped) + 2*r2 + 1*0 + 1*math
  CHECK(t.total[0] == Approx(1.0 + 0.5 + 1.0));
  CHECK(t.total[1] == Approx(2.0 + 2.5 + 0.0));
  CHECK(t.total[2] == Approx(1.0 + 0.5));
}

TEST_CASE("RewardSet: a hung verifier becomes a zero reward at the deadline", "[unit]") {
  std::promise<void> release;
  RewardsConfig cfg;
  cfg.verifiers = {VerifierSpec{"fixed", 1.0, {{"reward", 1.0}, {"block", true}}},                  // CPU arena
                   VerifierSpec{"fixed", 1.0, {{"reward", 1.0}, {"block", true}, {"wait", true}}},  // waiting pool
                   VerifierSpec{"fixed", 1.0, {{"reward", 0.5}}}};
  cfg.threads = 2;
  cfg.deadline_s = 0.3;
  {
    RewardSet set(cfg, test_registry(release.get_future().share()));
    RewardTable t = set.score({input("a", json::object())});
    for (int j = 0; j < 2; ++j) {
      CHECK(t.reward(0, j) == 0.0);
      CHECK(t.detail(0, j)["timed_out"] == true);
      CHECK(t.detail(0, j)["error"].get<std::string>().find("deadline") != std::string::npos);
    }
    CHECK(t.reward(0, 2) == 0.5);
    CHECK(t.total[0] == Approx(0.5));
    release.set_value();  // let the hung tasks finish before the set is destroyed
  }
}

TEST_CASE("RewardSet: no verifiers, unknown names and NaN weights are config errors", "[unit]") {
  RewardsConfig empty;
  CHECK_THROWS_AS(RewardSet(empty, builtin_registry()), retort::Error);
  RewardsConfig unknown;
  unknown.verifiers = {VerifierSpec{"nope", 1.0, json::object()}};
  CHECK_THROWS_AS(RewardSet(unknown, builtin_registry()), retort::Error);
  RewardsConfig nan_weight;
  nan_weight.verifiers = {VerifierSpec{"math", std::nan(""), json::object()}};
  CHECK_THROWS_AS(RewardSet(nan_weight, builtin_registry()), retort::Error);
}
