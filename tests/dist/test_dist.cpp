// Data parallel: two ranks over loopback (`retort launch -n 2`) take the steps one process
// takes on the combined batch, for SFT and for GRPO; a resume with another number of
// ranks is refused.
#include <spawn.h>     // defines: posix_spawn
#include <sys/wait.h>  // defines: waitpid

#include <cmath>
#include <cstdlib>  // defines: setenv
#include <filesystem>
#include <fstream>
#include <set>

#include "common/error.h"
#include "dist/dist.h"
#include "model/checkpoint.h"
#include "train/eval.h"
#include "train/grpo.h"
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

// Arithmetic traces of varied lengths (so that the two shards hold different token counts).
std::string write_traces(const std::string& name, int n) {
  std::vector<json> rows;
  for (int i = 0; i < n; ++i) {
    int a = (i * 7) % 10, b = (i * 13 + 1) % 100;
    json line = {{"prompt", "What is " + std::to_string(a) + "+" + std::to_string(b) + "?"},
                 {"completion", "<think>\n" + std::string(static_cast<size_t>(i % 5), ' ') + std::to_string(a) + "+" + std::to_string(b) +
                                    "=" + std::to_string(a + b) + "\n</think>\nThe answer is \\boxed{" + std::to_string(a + b) + "}."}};
    rows.push_back(line);
  }
  return write_jsonl(name, rows);
}

json sft_config(const std::string& run_dir, const std::string& traces) {
  return json{{"run_dir", run_dir},
              {"model_config", tiny_model_config()},
              {"tokenizer", tiny_tokenizer_path()},
              {"runtime", {{"threads", 1}, {"seed", 5}, {"device", "cpu"}}},
              {"data", {{"train", traces}, {"chat_template", "chatml"}, {"max_length", 128}, {"valid_fraction", 0.1}}},
              {"optim", {{"lr", 3e-3}, {"warmup_steps", 1}}},
              {"steps", 4},
              {"batch_size", 8},
              {"grad_accum", 2},
              {"eval_every", 2},
              {"save_every", 2},
              {"keep_last", 1}};
}

json grpo_config(const std::string& run_dir, const std::string& prompts) {
  // The overlong verifier on characters: a cheap reward that differs within a group.
  json overlong = {{"name", "overlong"}, {"weight", 1.0},
                   {"args", {{"max_length", 40}, {"cache_length", 36}, {"length", {{"unit", "chars"}}}}}};
  return json{{"run_dir", run_dir},
              {"model_config", tiny_model_config()},
              {"tokenizer", tiny_tokenizer_path()},
              {"runtime", {{"threads", 1}, {"seed", 3}, {"device", "cpu"}}},
              {"data", {{"prompts", prompts}, {"chat_template", "chatml"}}},
              {"anchor", "reference"},
              {"prompts_per_step", 4},
              {"group_size", 4},
              {"sampling", {{"temperature", 1.0}, {"max_new_tokens", 8}, {"seed_per_row", true}}},
              {"rewards", {{"verifiers", {overlong}}, {"threads", 1}}},
              {"loss", {{"beta", 0.01}, {"aggregation", "token"}}},
              {"mu", 2},
              {"optim", {{"lr", 1e-2}, {"warmup_steps", 0}, {"min_lr_ratio", 1.0}}},
              {"steps", 3},
              {"save_every", 3},
              {"keep_last", 1}};
}

// `retort launch -n N -- SUBCOMMAND CONFIG` with the config written beside the run; returns
// the exit status.
int launch(int n, const std::string& subcommand, const json& cfg, const std::string& cfg_path) {
  std::ofstream(cfg_path) << cfg.dump(2);
  const std::string bin = kBin + "/retort", ns = std::to_string(n);
  const char* argv[] = {bin.c_str(), "launch", "-n", ns.c_str(), "--", subcommand.c_str(), cfg_path.c_str(), nullptr};
  ::setenv("RETORT_DIST_TIMEOUT_S", "60", 1);  // a broken rendezvous fails the test instead of hanging it
  pid_t pid;
  if (posix_spawn(&pid, bin.c_str(), nullptr, nullptr, const_cast<char* const*>(argv), environ) != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Largest |a - b| over the tensors of two model folders (same names required).
double max_param_diff(const std::string& a, const std::string& b) {
  auto ta = retort::read_safetensors(a + "/model.safetensors"), tb = retort::read_safetensors(b + "/model.safetensors");
  REQUIRE(ta.size() == tb.size());
  double diff = 0;
  for (const auto& [name, t] : ta) {
    REQUIRE(tb.count(name));
    diff = std::max(diff, (t.to(torch::kDouble) - tb.at(name).to(torch::kDouble)).abs().max().item<double>());
  }
  return diff;
}

}  // namespace

TEST_CASE("dist: shards of a global batch are contiguous and cover it", "[train]") {
  struct Case {
    int64_t n;
    int world;
    std::vector<std::pair<int64_t, int64_t>> want;
  };
  for (const Case& c : std::vector<Case>{{8, 2, {{0, 4}, {4, 8}}}, {7, 2, {{0, 4}, {4, 7}}}, {2, 3, {{0, 1}, {1, 2}, {2, 2}}}, {5, 1, {{0, 5}}}}) {
    for (int r = 0; r < c.world; ++r) {
      retort::ShardRange s = retort::shard_range(c.n, r, c.world);
      CHECK(s.begin == c.want[static_cast<size_t>(r)].first);
      CHECK(s.end == c.want[static_cast<size_t>(r)].second);
    }
  }
}

TEST_CASE("dist: two SFT ranks over loopback match one process on the combined batch; resume with 1 rank is refused", "[train]") {
  std::string traces = write_traces("dist_sft_traces.jsonl", 40);
  std::string one = kBin + "/test_runs/dist_sft_one", two = kBin + "/test_runs/dist_sft_two";
  fs::remove_all(one);
  fs::remove_all(two);
  retort::SftResult r1 = retort::run_sft(sft_config(one, traces), "test");
  REQUIRE(launch(2, "sft", sft_config(two, traces), two + ".json") == 0);

  double diff = max_param_diff(r1.output_dir, two + "/final");
  WARN("dist sft: max |param(2 ranks) - param(1 process)| after 4 steps = " << diff);
  CHECK(diff < 1e-5);
  // Rank 0 alone wrote the metrics: one line per step, the single process's losses (not its
  // "tokens", which count padding, and each shard pads to its own longest row).
  auto m1 = read_jsonl(one + "/metrics.jsonl"), m2 = read_jsonl(two + "/metrics.jsonl");
  REQUIRE(m1.size() == 4);
  REQUIRE(m2.size() == 4);
  for (size_t i = 0; i < m1.size(); ++i) {
    CHECK(m2[i]["step"] == m1[i]["step"]);
    CHECK(std::abs(m2[i]["loss"].get<double>() - m1[i]["loss"].get<double>()) < 1e-5);
  }
  CHECK(std::abs(m2[3]["valid_loss"].get<double>() - m1[3]["valid_loss"].get<double>()) < 1e-5);
  CHECK(json::parse(std::ifstream(two + "/checkpoints/step-4/trainer_state.json"))["world_size"] == 2);

  // The run's data order depends on the number of ranks: a single process may not resume it
  // (under the same config: a changed one is refused before, naming the keys).
  CHECK_THROWS_WITH(retort::run_sft(sft_config(two, traces), "test"), Catch::Contains("world_size 2") && Catch::Contains("retort launch -n 2"));
}

TEST_CASE("dist: two GRPO ranks over loopback match one process on the combined batch", "[train]") {
  // Exact equality needs the same completions: sampling.seed_per_row gives each completion
  // its own random stream keyed by its place in the round, so a rank sampling half of every
  // group's completions draws what the single process draws for them (data parallel turns it on).
  std::string prompts = kBin + "/dist_grpo_prompts.jsonl";
  {
    std::ofstream f(prompts);
    for (int i = 0; i < 8; ++i) f << json{{"id", "p" + std::to_string(i)}, {"question", "Count to " + std::to_string(i * 3)}, {"answer", "1"}}.dump() << "\n";
  }
  std::string one = kBin + "/test_runs/dist_grpo_one", two = kBin + "/test_runs/dist_grpo_two";
  fs::remove_all(one);
  fs::remove_all(two);
  retort::GrpoResult r1 = retort::run_grpo(grpo_config(one, prompts), "test");
  REQUIRE(launch(2, "grpo", grpo_config(two, prompts), two + ".json") == 0);

  auto m1 = read_jsonl(one + "/metrics.jsonl"), m2 = read_jsonl(two + "/metrics.jsonl");
  REQUIRE(m1.size() == 3);
  REQUIRE(m2.size() == 3);
  for (size_t i = 0; i < m1.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(m2[i]["reward_mean"] == m1[i]["reward_mean"]);  // the same completions, so the same rewards
    CHECK(m2[i]["completion_length_mean"] == m1[i]["completion_length_mean"]);
    CHECK(std::abs(m2[i]["loss"].get<double>() - m1[i]["loss"].get<double>()) < 1e-5);
  }
  // A group of all-equal rewards teaches nothing: the test is only meaningful with signal.
  double reward_std = 0;
  for (const auto& m : m1) reward_std += m["reward_std"].is_number() ? m["reward_std"].get<double>() : 0.0;
  CHECK(reward_std > 0);
  // Each rank samples half of every group's completions; rank 0 writes the chain log back in
  // one process's order: the same chains, line by line, with the same group, sample and advantage.
  auto c1 = read_jsonl(one + "/chains.jsonl"), c2 = read_jsonl(two + "/chains.jsonl");
  REQUIRE(c1.size() == 3 * 16);
  REQUIRE(c2.size() == c1.size());
  for (size_t i = 0; i < c1.size(); ++i) {
    INFO("chain " << i);
    CHECK(c2[i]["step"] == c1[i]["step"]);
    CHECK(c2[i]["prompt_id"] == c1[i]["prompt_id"]);
    CHECK(c2[i]["group"] == c1[i]["group"]);
    CHECK(c2[i]["sample"] == c1[i]["sample"]);
    CHECK(c2[i]["text"] == c1[i]["text"]);
    CHECK(c2[i]["reward"] == c1[i]["reward"]);
    CHECK(std::abs(c2[i]["advantage"].get<double>() - c1[i]["advantage"].get<double>()) < 1e-12);
  }

  double diff = max_param_diff(r1.output_dir, two + "/final");
  WARN("dist grpo: max |param(2 ranks) - param(1 process)| after 3 steps x mu 2 = " << diff);
  // lr 1e-2 over 6 Adam steps: Adam divides by the gradient's scale, so summation-order noise
  // in a near-zero gradient entry moves its parameter by up to ~lr x that noise's share.
  CHECK(diff < 1e-4);
}

TEST_CASE("dist: two ranks with packed token-budget micro-batches and every distillation loss match one process", "[train]") {
  std::string traces = write_traces("dist_distill_traces.jsonl", 24);
  std::string teacher_run = kBin + "/test_runs/dist_distill_teacher";
  fs::remove_all(teacher_run);
  json tcfg = sft_config(teacher_run, traces);
  tcfg["model_config"]["hidden_size"] = 48;
  tcfg["steps"] = 2;
  tcfg["eval_every"] = 0;
  std::string teacher = retort::run_sft(tcfg, "teacher").output_dir;
  auto cfg = [&](const std::string& run, bool packed) {
    json c = sft_config(run, traces);
    c["steps"] = 2;
    c["eval_every"] = 0;
    c["optim"]["grad_clip"] = 0.0;
    if (packed) c["train"] = {{"micro_batch_tokens", 100}, {"packing", true}};
    c["distill"] = {{"teacher", teacher},
                    {"logit", {{"kind", "reverse_kl"}, {"temperature", 1.5}}},
                    {"feature", {{"layer_map", {{"2", 2}}}, {"kind", "cosine"}}},
                    {"attention", {{"layer_map", {{"0", 1}}}, {"heads", "mean"}}},
                    {"schedule", {{"phases", json::array({{{"steps", 1},
                                                           {"weights", {{"ce", 1.0}, {"logit", 1.0}, {"feature", 1.0}, {"attention", 1.0}}}}})}}}};
    return c;
  };
  std::string one = kBin + "/test_runs/dist_distill_one", two = kBin + "/test_runs/dist_distill_two";
  fs::remove_all(one);
  fs::remove_all(two);
  retort::run_sft(cfg(one, false), "test");  // padded, one micro-batch per batch, one process
  REQUIRE(launch(2, "sft", cfg(two, true), two + ".json") == 0);
  auto m1 = read_jsonl(one + "/metrics.jsonl"), m2 = read_jsonl(two + "/metrics.jsonl");
  REQUIRE(m1.size() == 2);
  REQUIRE(m2.size() == 2);
  for (size_t i = 0; i < m1.size(); ++i) {
    INFO("step " << i + 1);
    for (const char* key : {"loss", "grad_norm", "loss_ce", "loss_logit", "loss_feature", "loss_attention"})
      CHECK(std::abs(m2[i][key].get<double>() - m1[i][key].get<double>()) < 1e-5 * std::max(1.0, std::abs(m1[i][key].get<double>())));
  }
  CHECK(max_param_diff(one + "/final", two + "/final") < 1e-5);
}

TEST_CASE("dist: two ranks evaluate a share of the prompts each and write one process's eval.json", "[train]") {
  // A model to evaluate: 4 SFT steps of the tiny model on the arithmetic traces.
  const std::string model_run = kBin + "/test_runs/dist_eval_model";
  fs::remove_all(model_run);
  const std::string model = retort::run_sft(sft_config(model_run, write_traces("dist_eval_traces.jsonl", 24)), "test").output_dir;
  // 7 prompts (shards of 4 and 3), 3 to a sampler call: each rank makes several calls.
  std::vector<json> rows;
  for (int i = 0; i < 7; ++i)
    rows.push_back({{"id", "q" + std::to_string(i)}, {"question", "What is " + std::to_string(i) + "+1?"}, {"answer", "#### " + std::to_string(i + 1)}});
  const std::string prompts = write_jsonl("dist_eval_prompts.jsonl", rows);
  auto config = [&](const std::string& run_dir) {
    return json{{"run_dir", run_dir},
                {"model", model},
                {"runtime", {{"threads", 1}, {"seed", 3}, {"device", "cpu"}}},
                {"format", {{"chat_template", "chatml"}}},
                {"datasets", {{{"name", "arith"}, {"path", prompts}}}},
                {"sampling", {{"k", 4}, {"temperature", 1.0}, {"top_p", 1.0}, {"max_new_tokens", 24}}},
                {"rewards", {{"threads", 1}}},
                {"batch_size", 3}};
  };
  const std::string one = kBin + "/test_runs/dist_eval_one", two = kBin + "/test_runs/dist_eval_two";
  fs::remove_all(one);
  fs::remove_all(two);
  retort::run_eval(config(one), "test");
  REQUIRE(launch(2, "eval", config(two), two + ".json") == 0);

  // Each sample has its own stream (prompt, sample): the same samples whichever rank draws them,
  // gathered back in prompt order, so rank 0's files equal the single process's.
  const json e1 = json::parse(std::ifstream(one + "/eval.json")), e2 = json::parse(std::ifstream(two + "/eval.json"));
  CHECK(e2["datasets"]["arith"]["metrics"] == e1["datasets"]["arith"]["metrics"]);
  CHECK(e2["datasets"]["arith"]["per_prompt"] == e1["datasets"]["arith"]["per_prompt"]);
  CHECK(e2["datasets"]["arith"]["prompts"] == 7);
  auto s1 = read_jsonl(one + "/eval_samples.jsonl"), s2 = read_jsonl(two + "/eval_samples.jsonl");
  REQUIRE(s1.size() == 7 * 4);
  REQUIRE(s2.size() == s1.size());
  std::set<std::string> texts;
  for (size_t i = 0; i < s1.size(); ++i) {
    INFO("sample " << i);
    CHECK(s2[i]["prompt_id"] == s1[i]["prompt_id"]);
    CHECK(s2[i]["sample"] == s1[i]["sample"]);
    CHECK(s2[i]["text"] == s1[i]["text"]);
    CHECK(s2[i]["passed"] == s1[i]["passed"]);
    texts.insert(s1[i]["text"].get<std::string>());
  }
  CHECK(texts.size() > 4);  // the samples differ: the comparison has something to compare
}
