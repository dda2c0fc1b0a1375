// Evaluation: the unbiased pass@k estimator against hand-computed values, the majority vote,
// and an end-to-end `run_eval` of a briefly trained tiny model on a math file written here:
// eval.json's structure, pass@1 = the mean of the per-sample passed in eval_samples.jsonl,
// pass@k >= pass@1, maj@k recomputed from the samples, seeded reproducibility, config errors.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/config.h"
#include "common/error.h"
#include "train/eval.h"
#include "train/sft.h"
#include "tiny_model.h"  // defines: tiny_model_config, tiny_tokenizer_path
#include "jsonl_files.h"  // defines: read_jsonl, write_jsonl

#include <catch2/catch.hpp>
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kBin = RETORT_BINARY_DIR;
const std::string kSrc = RETORT_SOURCE_DIR;

// C(n, k) by the multiplicative formula, for the hand checks (small n only).
double binom(int64_t n, int64_t k) {
  if (k < 0 || k > n) return 0;
  double r = 1;
  for (int64_t i = 1; i <= k; ++i) r = r * static_cast<double>(n - k + i) / static_cast<double>(i);
  return r;
}

// "What is a+b?" with single-digit a, b, and the R1-style answer a tiny model can learn.
json arith_row(int i) {
  int a = (i * 7) % 10, b = (i * 3 + 1) % 10;
  return {{"a", a}, {"b", b}, {"q", "What is " + std::to_string(a) + "+" + std::to_string(b) + "?"}};
}

// A tiny Qwen2-shaped model trained briefly (SFT) on arithmetic traces, so that it writes
// \boxed{} answers that are right some of the time. Trained once per test process.
const std::string& tiny_model() {
  static const std::string dir = [] {
    std::vector<json> traces;
    for (int i = 0; i < 96; ++i) {
      json r = arith_row(i);
      int a = r["a"], b = r["b"];
      traces.push_back({{"prompt", r["q"]},
                        {"completion", "<think>\n" + std::to_string(a) + "+" + std::to_string(b) + "=" + std::to_string(a + b) +
                                           "\n</think>\n\\boxed{" + std::to_string(a + b) + "}"}});
    }
    std::string run = kBin + "/test_runs/eval_model";
    fs::remove_all(run);
    json cfg = {{"run_dir", run},
                {"model_config", tiny_model_config()},
                {"tokenizer", tiny_tokenizer_path()},
                {"runtime", {{"threads", 1}, {"seed", 5}, {"device", "cpu"}}},
                {"data", {{"train", write_jsonl("eval_traces.jsonl", traces)}, {"chat_template", "chatml"}, {"max_length", 128}}},
                {"optim", {{"lr", 1e-2}, {"warmup_steps", 5}, {"min_lr_ratio", 0.1}}},
                {"steps", 90},
                {"batch_size", 8},
                {"save_every", 0},
                {"keep_last", 1}};
    return retort::run_sft(cfg, "eval test model").output_dir;
  }();
  return dir;
}

// Math prompts in GSM8K's "#### N" answer form, on the sums the model was trained on.
std::string write_math_prompts() {
  std::vector<json> rows;
  for (int i = 0; i < 8; ++i) {
    json r = arith_row(100 + i);
    int a = r["a"], b = r["b"];
    rows.push_back({{"id", "p" + std::to_string(i)}, {"question", r["q"]}, {"answer", "a + b\n#### " + std::to_string(a + b)}});
  }
  return write_jsonl("eval_math_prompts.jsonl", rows);
}

json eval_config(const std::string& run_dir, const std::string& prompts) {
  return json{{"run_dir", run_dir},
              {"model", tiny_model()},
              {"runtime", {{"threads", 1}, {"seed", 3}, {"device", "cpu"}}},
              {"format", {{"chat_template", "chatml"}}},
              {"datasets", {{{"name", "arith"}, {"path", prompts}}}},
              {"sampling", {{"k", 4}, {"temperature", 1.0}, {"top_p", 1.0}, {"max_new_tokens", 48}}},
              {"rewards", {{"threads", 1}}},
              {"batch_size", 3}};
}

}  // namespace

TEST_CASE("eval: unbiased pass@k against hand-computed values", "[train]") {
  // n = 5, c = 2: pass@k = 1 - C(3, k) / C(5, k) = 0.4, 0.7, 0.9, 1, 1 for k = 1..5.
  const std::vector<double> expected = {0.4, 0.7, 0.9, 1.0, 1.0};
  for (int64_t k = 1; k <= 5; ++k) {
    INFO("k = " << k);
    CHECK(retort::pass_at_k(5, 2, k) == Approx(expected[static_cast<size_t>(k - 1)]).margin(1e-12));
    CHECK(retort::pass_at_k(5, 2, k) == Approx(1.0 - binom(3, k) / binom(5, k)).margin(1e-12));
    CHECK(retort::pass_at_k(5, 0, k) == 0.0);  // nothing passed: never
    CHECK(retort::pass_at_k(5, 5, k) == 1.0);  // everything passed: always
  }
  // A larger case against the binomial ratio, and the stable product where binomials overflow.
  CHECK(retort::pass_at_k(10, 3, 4) == Approx(1.0 - 35.0 / 210.0).margin(1e-12));
  const double big = retort::pass_at_k(2000, 1, 1);
  CHECK(big == Approx(1.0 / 2000.0).epsilon(1e-9));
  CHECK(std::isfinite(retort::pass_at_k(2000, 1000, 64)));
  CHECK_THROWS_WITH(retort::pass_at_k(4, 5, 1), Catch::Contains("0 <= c <= n"));
  CHECK_THROWS_WITH(retort::pass_at_k(4, 1, 5), Catch::Contains("1 <= k <= n"));

  CHECK(retort::k_values(1) == std::vector<int64_t>{1});
  CHECK(retort::k_values(4) == std::vector<int64_t>{1, 2, 4});
  CHECK(retort::k_values(5) == std::vector<int64_t>{1, 2, 4, 5});
  CHECK(retort::k_values(64) == std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64});
}

TEST_CASE("eval: majority vote over extracted answers", "[train]") {
  struct Case {
    std::vector<std::string> answers;
    std::vector<bool> passed;
    int64_t winner;
    std::string answer;
    int64_t votes;
    bool ok;
  };
  const std::vector<Case> cases = {
      {{"3", "5", "5", "3", "7"}, {false, true, true, false, false}, 0, "3", 2, false},  // tie: the first seen wins
      {{"3", "5", "5", "3", "5"}, {false, true, true, false, true}, 1, "5", 3, true},    // plain majority
      {{"", "", "4"}, {false, false, true}, 2, "4", 1, true},                             // no answer, no vote
      {{"", ""}, {false, false}, -1, "", 0, false},                                       // nobody answered
      {{"a", "b", "b"}, {true, false, false}, 1, "b", 2, false},                          // the voted answer is graded
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO("case " << i);
    retort::MajorityVote v = retort::majority_vote(cases[i].answers, cases[i].passed);
    CHECK(v.winner == cases[i].winner);
    CHECK(v.answer == cases[i].answer);
    CHECK(v.votes == cases[i].votes);
    CHECK(v.passed == cases[i].ok);
  }
}

TEST_CASE("eval: end to end on a tiny trained model: eval.json, eval_samples.jsonl, pass@k, maj@k", "[train]") {
  const std::string prompts = write_math_prompts();
  const std::string run = kBin + "/test_runs/eval_e2e";
  fs::remove_all(run);
  retort::EvalResult r = retort::run_eval(eval_config(run, prompts), "eval test");

  // eval.json: written where the run dir says, with the documented structure.
  REQUIRE(r.output == run + "/eval.json");
  REQUIRE(fs::exists(r.output));
  CHECK(fs::exists(run + "/config.resolved.json"));
  json doc;
  std::ifstream(r.output) >> doc;
  CHECK(doc == r.report);
  REQUIRE(doc["datasets"].contains("arith"));
  const json& ds = doc["datasets"]["arith"];
  CHECK(ds["prompts"] == 8);
  CHECK(ds["k"] == 4);
  CHECK(ds["verifiers"] == json::array({"math"}));  // the default for answer rows
  CHECK(ds["per_prompt"].size() == 8);
  for (const char* col : {"all", "math"}) {
    INFO("metrics column " << col);
    const json& m = ds["metrics"][col];
    REQUIRE(m["pass@1"].is_number());
    CHECK(m["pass@k"].size() == 3);  // k' = 1, 2, 4
    CHECK(m["maj@k"].size() == 3);
    CHECK(m["samples"] == 32);
    const double p1 = m["pass@1"], p2 = m["pass@k"]["2"], p4 = m["pass@k"]["4"];
    CHECK(m["pass@k"]["1"].get<double>() == Approx(p1).margin(1e-12));
    CHECK(p2 >= p1 - 1e-12);
    CHECK(p4 >= p2 - 1e-12);
  }
  CHECK(ds["truncated_share"].get<double>() >= 0.0);
  CHECK(ds["truncated_share"].get<double>() <= 1.0);

  // eval_samples.jsonl: one line per sample; pass@1 is the mean of their passed.
  std::vector<json> lines = read_jsonl(r.samples_path);
  REQUIRE(lines.size() == 32);
  double passed = 0, length = 0;
  std::map<std::string, std::vector<json>> by_prompt;
  for (const auto& l : lines) {
    CHECK(l["dataset"] == "arith");
    REQUIRE(l["verifiers"].contains("math"));
    CHECK(l["passed"] == l["verifiers"]["math"]["passed"]);
    CHECK(l["reward"].get<double>() == (l["passed"].get<bool>() ? 1.0 : 0.0));
    passed += l["passed"].get<bool>() ? 1.0 : 0.0;
    length += l["length"].get<double>();
    by_prompt[l["prompt_id"]].push_back(l);
  }
  const double p1 = ds["metrics"]["all"]["pass@1"];
  WARN("eval e2e: pass@1 " << p1 << ", pass@4 " << ds["metrics"]["all"]["pass@k"]["4"] << ", maj@4 " << ds["metrics"]["all"]["maj@k"]["4"]
                           << ", mean length " << ds["mean_length"]);
  CHECK(p1 == Approx(passed / 32.0).margin(1e-12));
  CHECK(ds["mean_length"].get<double>() == Approx(length / 32.0).margin(1e-9));
  // The trained model is right some of the time, not always: the comparisons are not vacuous.
  CHECK(passed > 0);
  CHECK(passed < 32);

  // pass@k and maj@k recomputed per prompt from the samples file.
  REQUIRE(by_prompt.size() == 8);
  double pass4 = 0, maj4 = 0, maj2 = 0;
  for (const auto& pp : ds["per_prompt"]) {
    const auto& ls = by_prompt.at(pp["id"].get<std::string>());
    REQUIRE(ls.size() == 4);
    std::vector<std::string> votes(4);
    std::vector<bool> ok(4);
    int64_t c = 0;
    for (const auto& l : ls) {
      const size_t s = l["sample"].get<size_t>();
      votes[s] = l["vote"];
      ok[s] = l["passed"];
      c += l["passed"].get<bool>();
    }
    CHECK(pp["passed"] == c);
    pass4 += retort::pass_at_k(4, c, 4) / 8.0;
    maj4 += retort::majority_vote(votes, ok).passed ? 1.0 / 8 : 0.0;
    maj2 += retort::majority_vote({votes[0], votes[1]}, {ok[0], ok[1]}).passed ? 1.0 / 8 : 0.0;
    CHECK(pp["majority"]["passed"] == retort::majority_vote(votes, ok).passed);
  }
  CHECK(ds["metrics"]["all"]["pass@k"]["4"].get<double>() == Approx(pass4).margin(1e-12));
  CHECK(ds["metrics"]["all"]["maj@k"]["4"].get<double>() == Approx(maj4).margin(1e-12));
  CHECK(ds["metrics"]["all"]["maj@k"]["2"].get<double>() == Approx(maj2).margin(1e-12));

  // The same seed gives the same samples; greedy decoding evaluates one sample per prompt.
  const std::string run2 = kBin + "/test_runs/eval_e2e_again";
  fs::remove_all(run2);
  json limited = eval_config(run2, prompts);
  limited["datasets"][0]["limit"] = 3;
  retort::EvalResult again = retort::run_eval(limited, "eval test");
  std::vector<json> lines2 = read_jsonl(again.samples_path);
  REQUIRE(lines2.size() == 12);
  // Batches of 3 prompts: the first batch is the same call with the same seed.
  for (size_t i = 0; i < lines2.size(); ++i) {
    INFO("sample line " << i);
    CHECK(lines2[i]["text"] == lines[i]["text"]);
  }
  retort::EvalResult greedy = retort::run_eval(eval_config(run2, prompts), "eval test", {"sampling.greedy=true"});
  CHECK(greedy.report["sampling"]["k"] == 1);
  CHECK(greedy.datasets.at(0).metrics.at(0).samples == 8);
  CHECK(greedy.datasets.at(0).metrics.at(0).pass_at.size() == 1);
}

TEST_CASE("eval: config errors name the key", "[train]") {
  const std::string prompts = write_math_prompts();
  json cfg = eval_config(kBin + "/test_runs/eval_bad", prompts);
  cfg["sampling"]["temprature"] = 0.6;
  CHECK_THROWS_WITH(retort::run_eval(cfg, "bad.json"), Catch::Contains("sampling.temprature") && Catch::Contains("bad.json"));

  cfg = eval_config(kBin + "/test_runs/eval_bad", prompts);
  cfg["datasets"][0]["chat_tempalte"] = "chatml";
  CHECK_THROWS_WITH(retort::run_eval(cfg, "bad.json"), Catch::Contains("datasets[0].chat_tempalte"));

  cfg = eval_config(kBin + "/test_runs/eval_bad", prompts);
  cfg["datasets"][0]["verifiers"] = {"maht"};
  CHECK_THROWS_WITH(retort::run_eval(cfg, "bad.json"), Catch::Contains("datasets[0].verifiers[0]") && Catch::Contains("did you mean 'math'"));

  cfg = eval_config(kBin + "/test_runs/eval_bad", prompts);
  cfg["datasets"].push_back({{"name", "arith"}, {"path", prompts}});
  CHECK_THROWS_WITH(retort::run_eval(cfg, "bad.json"), Catch::Contains("two datasets have the name 'arith'"));
}

TEST_CASE("eval: the example config parses and names files that exist", "[train]") {
  const std::string path = kSrc + "/configs/eval.example.json";
  auto cfg = retort::parse_config<retort::EvalConfig>(retort::load_json_file(path), path);
  CHECK(cfg.sampling.temperature == 0.6);
  CHECK(cfg.sampling.top_p == 0.95);
  REQUIRE(cfg.datasets.size() >= 5);
  if (!fs::exists(kSrc + "/../shared/data")) {
    WARN("skipping the dataset paths of eval.example.json: ../shared/data is not beside the checkout");
    return;
  }
  for (const auto& d : cfg.datasets) {
    INFO("dataset " << d.name << ": " << d.path);
    CHECK(fs::exists(kSrc + "/" + d.path));  // paths are relative to the repository root
  }
}
