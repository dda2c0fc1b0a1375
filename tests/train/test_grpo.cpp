// GRPO: a tiny model learns a trivial verifiable reward; chains.jsonl has one line per chain
// with the fixed schema and advantages that are the group-normalised rewards; dynamic
// sampling drops all-equal groups and refills the batch; a run killed with SIGKILL resumes
// and reproduces the uninterrupted run's metrics and chains; config typos name the key.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "common/config.h"
#include "common/error.h"
#include "model/checkpoint.h"   // defines: save_model
#include "model/transformer.h"  // defines: Qwen2ForCausalLM
#include "rewards/verifier.h"
#include "rollout/score.h"      // defines: ScoredRollout
#include "train/grpo.h"
#include "train/grpo_loss.h"
#include "run_cli.h"  // defines: run_cli_config, run_uninterrupted_and_killed
#include "tiny_model.h"  // defines: tiny_model_config, tiny_tokenizer_path
#include "jsonl_files.h"  // defines: read_jsonl, write_jsonl

#include <catch2/catch.hpp>
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kBin = RETORT_BINARY_DIR;
const std::string kSrc = RETORT_SOURCE_DIR;

// Rewards the share of the completion's characters that are the digit "7": dense enough that
// a random policy gets a signal, learnable by raising the probability of tokens with a 7.
// A row with "constant" scores that constant instead (an all-equal group); a row with
// "length_reward" scores the completion's length in characters / 100 (groups that differ); a
// row with "parity" scores 1 for an odd length (a pass rate strictly between 0 and 1).
class TestVerifier : public retort::rewards::Verifier {
 public:
  retort::rewards::Score verify(const retort::rewards::Sample& s) const override {
    retort::rewards::Score sc;
    if (s.row.contains("constant")) {
      sc.reward = s.row["constant"].get<double>();
    } else if (s.row.contains("length_reward")) {
      sc.reward = static_cast<double>(s.completion.size()) / 100.0;
    } else if (s.row.contains("parity")) {
      sc.reward = static_cast<double>(s.completion.size() % 2);
    } else {
      size_t sevens = 0;
      for (char c : s.completion) sevens += c == '7';
      sc.reward = s.completion.empty() ? 0.0 : static_cast<double>(sevens) / s.completion.size();
    }
    sc.passed = sc.reward > 0.5;
    sc.detail = {{"chars", s.completion.size()}};
    return sc;
  }
};

retort::GrpoHooks test_hooks() {
  retort::GrpoHooks h;
  h.registry = retort::rewards::builtin_registry();
  h.registry->add("sevens", "test: share of '7' characters", [](const json&, const retort::rewards::VerifierContext&) {
    return std::make_shared<TestVerifier>();
  });
  return h;
}

json tiny_config(const std::string& run_dir, const std::string& prompts, const std::string& verifier) {
  return json{{"run_dir", run_dir},
              {"model_config", tiny_model_config()},
              {"tokenizer", tiny_tokenizer_path()},
              {"runtime", {{"threads", 1}, {"seed", 11}, {"device", "cpu"}}},
              {"data", {{"prompts", prompts}, {"chat_template", "chatml"}}},
              {"anchor", "reference"},
              {"prompts_per_step", 4},
              {"group_size", 8},
              {"sampling", {{"temperature", 1.0}, {"max_new_tokens", 8}}},
              {"rewards", {{"verifiers", {{{"name", verifier}, {"weight", 1.0}}}}, {"threads", 1}}},
              {"loss", {{"beta", 0.01}, {"eps_low", 0.2}, {"eps_high", 0.28}}},
              {"optim", {{"lr", 1e-2}, {"warmup_steps", 0}, {"min_lr_ratio", 1.0}}},
              {"steps", 40},
              {"save_every", 20},
              {"keep_last", 1}};
}

std::vector<json> number_prompts(int n) {
  std::vector<json> rows;
  for (int i = 0; i < n; ++i) rows.push_back({{"id", "n" + std::to_string(i)}, {"question", "Say a number " + std::to_string(i)}, {"answer", "7"}});
  return rows;
}

}  // namespace

TEST_CASE("grpo: a tiny model learns a verifiable reward; chains.jsonl schema and advantages", "[train]") {
  std::string run = kBin + "/test_runs/grpo_learn";
  fs::remove_all(run);
  json cfg = tiny_config(run, write_jsonl("grpo_prompts.jsonl", number_prompts(8)), "sevens");
  auto t0 = std::chrono::steady_clock::now();
  retort::GrpoResult r = retort::run_grpo(cfg, "test", {}, test_hooks());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE(r.steps.size() == 40);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += r.steps[i].reward_mean / 5, last += r.steps[35 + i].reward_mean / 5;
  INFO("mean reward: first 5 steps " << first << ", last 5 steps " << last << "; " << secs << " s");
  WARN("grpo learn: mean reward first 5 steps " << first << ", last 5 steps " << last << ", " << secs << " s");
  CHECK(last > first + 0.15);
  CHECK(last > 2 * first);
  CHECK(std::isfinite(r.steps.back().kl));
  CHECK(r.steps.back().kl > 0);  // the policy moved away from the frozen reference
  CHECK(fs::exists(r.output_dir + "/model.safetensors"));
  CHECK(fs::exists(run + "/checkpoints/step-40/trainer_state.json"));

  // chains.jsonl: B*G lines per step, the fixed schema, advantages = group-normalised rewards.
  auto chains = read_jsonl(run + "/chains.jsonl");
  REQUIRE(chains.size() == 40u * 4 * 8);
  const std::vector<std::string> keys = {"step", "prompt_id", "group", "sample", "prompt", "text", "reasoning", "answer",
                                         "verifiers", "reward", "advantage", "kl", "length", "truncated"};
  std::map<std::pair<int64_t, int64_t>, std::vector<json>> groups;
  for (const auto& c : chains) {
    for (const auto& k : keys) REQUIRE(c.contains(k));
    CHECK(c.size() == keys.size());
    CHECK(c["group"].get<int64_t>() >= 0);
    CHECK(c["group"].get<int64_t>() < 4);
    CHECK(c["sample"].get<int64_t>() < 8);
    CHECK(c["length"].get<int64_t>() >= 1);
    CHECK(c["length"].get<int64_t>() <= 8);
    if (c["truncated"].get<bool>()) CHECK(c["length"] == 8);
    CHECK(c["kl"].is_number());
    const json& v = c["verifiers"]["sevens"];
    REQUIRE(v["reward"].is_number());
    CHECK(v["reward"].get<double>() == Approx(c["reward"].get<double>()));
    // The verifier saw the text the chain logs (bytes that are not UTF-8 are logged as U+FFFD).
    if (c["text"].get<std::string>().find("\xEF\xBF\xBD") == std::string::npos) CHECK(v["detail"]["chars"] == c["text"].get<std::string>().size());
    CHECK(c["prompt"].get<std::string>().find("Say a number") != std::string::npos);
    groups[{c["step"].get<int64_t>(), c["group"].get<int64_t>()}].push_back(c);
  }
  CHECK(groups.size() == 40u * 4);
  auto metrics = read_jsonl(run + "/metrics.jsonl");
  REQUIRE(metrics.size() == 40);
  for (const auto& kv : groups) {
    const auto& g = kv.second;
    REQUIRE(g.size() == 8);
    std::vector<double> rewards;
    double adv_sum = 0;
    for (const auto& c : g) {
      rewards.push_back(c["reward"].get<double>());
      adv_sum += c["advantage"].get<double>();
      CHECK(c["prompt_id"] == g[0]["prompt_id"]);
    }
    CHECK(std::abs(adv_sum) < 1e-6);
    auto adv = retort::group_advantages(rewards, 8, "group");
    for (size_t i = 0; i < g.size(); ++i) CHECK(g[i]["advantage"].get<double>() == Approx(adv[i]).margin(1e-9));
  }
  // metrics.jsonl agrees with the chains of its step.
  for (const auto& m : metrics) {
    double sum = 0;
    int n = 0;
    for (const auto& c : chains)
      if (c["step"] == m["step"]) sum += c["reward"].get<double>(), ++n;
    CHECK(n == 32);
    CHECK(m["reward_mean"].get<double>() == Approx(sum / n));
    for (const char* k : {"reward_mean_sevens", "pass_rate_sevens", "kl", "clip_low", "clip_high", "entropy", "completion_length_mean",
                          "truncated_share", "time_sample_s", "time_score_wait_s", "time_anchor_s", "time_update_s", "groups_dropped"})
      CHECK(m.contains(k));
  }
}

TEST_CASE("grpo: dynamic sampling drops all-equal groups and refills the batch", "[train]") {
  std::vector<json> rows;
  for (int i = 0; i < 4; ++i) rows.push_back({{"id", "const" + std::to_string(i)}, {"question", "Q" + std::to_string(i)}, {"answer", "1"}, {"constant", 0.5}});
  for (int i = 0; i < 4; ++i) rows.push_back({{"id", "vary" + std::to_string(i)}, {"question", "V" + std::to_string(i)}, {"answer", "1"}, {"length_reward", true}});
  std::string prompts = write_jsonl("grpo_dynamic.jsonl", rows);
  auto run_with = [&](bool enabled) {
    std::string run = kBin + std::string("/test_runs/grpo_dynamic_") + (enabled ? "on" : "off");
    fs::remove_all(run);
    json cfg = tiny_config(run, prompts, "sevens");
    cfg["prompts_per_step"] = 2;
    cfg["group_size"] = 4;
    cfg["steps"] = 6;
    cfg["dynamic_sampling"] = {{"enabled", enabled}, {"max_retries", 10}};
    retort::run_grpo(cfg, "test", {}, test_hooks());
    return std::make_pair(read_jsonl(run + "/metrics.jsonl"), read_jsonl(run + "/chains.jsonl"));
  };

  auto [m_on, c_on] = run_with(true);
  REQUIRE(m_on.size() == 6);
  int64_t dropped = 0;
  for (const auto& m : m_on) {
    dropped += m["groups_dropped"].get<int64_t>();
    CHECK(m["groups"] == 2);  // refilled to B
    CHECK(m["sampling_rounds"].get<int64_t>() >= 1);
  }
  CHECK(dropped > 0);
  CHECK(c_on.size() == 6u * 2 * 4);
  std::map<std::pair<int64_t, int64_t>, std::vector<double>> groups;
  for (const auto& c : c_on) {
    CHECK(c["prompt_id"].get<std::string>().rfind("vary", 0) == 0);  // no all-equal group was trained on
    groups[{c["step"].get<int64_t>(), c["group"].get<int64_t>()}].push_back(c["reward"].get<double>());
  }
  for (const auto& kv : groups) {
    REQUIRE(kv.second.size() == 4);
    bool equal = true;
    for (double r : kv.second) equal &= r == kv.second[0];
    CHECK_FALSE(equal);
  }

  // Without it, the constant prompts are trained on (with zero advantage) and counted.
  auto [m_off, c_off] = run_with(false);
  int64_t all_equal = 0, dropped_off = 0;
  for (const auto& m : m_off) all_equal += m["groups_all_equal"].get<int64_t>(), dropped_off += m["groups_dropped"].get<int64_t>();
  CHECK(all_equal > 0);
  CHECK(dropped_off == 0);
  int constant_chains = 0;
  for (const auto& c : c_off) {
    if (c["prompt_id"].get<std::string>().rfind("const", 0) != 0) continue;
    ++constant_chains;
    CHECK(c["advantage"].get<double>() == 0.0);
  }
  CHECK(constant_chains > 0);
}

TEST_CASE("grpo: config errors name the key", "[train]") {
  std::string prompts = write_jsonl("grpo_prompts_bad.jsonl", number_prompts(2));
  json cfg = tiny_config(kBin + "/test_runs/grpo_bad", prompts, "sevens");
  cfg["sampling"]["temprature"] = 0.7;
  CHECK_THROWS_WITH(retort::run_grpo(cfg, "bad.json", {}, test_hooks()),
                    Catch::Contains("sampling.temprature") && Catch::Contains("bad.json") && Catch::Contains("temperature"));
  cfg = tiny_config(kBin + "/test_runs/grpo_bad", prompts, "sevens");
  CHECK_THROWS_WITH(retort::run_grpo(cfg, "bad.json", {"anchor=techer"}, test_hooks()), Catch::Contains("anchor") && Catch::Contains("reference"));
  CHECK_THROWS_WITH(retort::run_grpo(cfg, "bad.json", {"advantage.scale=std"}, test_hooks()), Catch::Contains("advantage.scale"));
  CHECK_THROWS_WITH(retort::run_grpo(cfg, "bad.json", {"loss.aggregation=mean"}, test_hooks()), Catch::Contains("loss.aggregation"));
  CHECK_THROWS_WITH(retort::run_grpo(cfg, "bad.json", {"anchor=teacher"}, test_hooks()), Catch::Contains("teacher=PATH"));
  CHECK_THROWS_WITH(retort::run_grpo(cfg, "bad.json", {"overlong=penalty"}, test_hooks()), Catch::Contains("'overlong' verifier"));
  CHECK_THROWS_WITH(retort::run_grpo(cfg, "bad.json", {"group_size=1"}, test_hooks()), Catch::Contains("group_size"));
  CHECK_THROWS_WITH(retort::run_grpo(cfg, "bad.json", {"anchor=none"}, test_hooks()), Catch::Contains("loss.beta"));
  // An unknown verifier name lists the known ones (the registry's error).
  CHECK_THROWS_WITH(retort::run_grpo(cfg, "bad.json", {"rewards.verifiers=[{\"name\": \"sevenz\"}]"}, test_hooks()),
                    Catch::Contains("sevenz") && Catch::Contains("sevens"));
  // The example config parses as it stands.
  retort::GrpoConfig ex = retort::parse_config<retort::GrpoConfig>(retort::load_json_file(kSrc + "/configs/grpo.example.json"), "example");
  CHECK(ex.group_size == 8);
  CHECK(ex.rewards.verifiers.size() == 4);
  CHECK(ex.loss.eps_high == 0.28);
  // A bad prompt line names FILE:LINE.
  std::string bad_prompts = write_jsonl("grpo_prompts_badline.jsonl", {json{{"question", "Q"}}});
  CHECK_THROWS_WITH(retort::run_grpo(cfg, "bad.json", {"data.prompts=" + bad_prompts}, test_hooks()), Catch::Contains(bad_prompts + ":1"));
}

TEST_CASE("grpo: a run killed with SIGKILL resumes and reproduces the uninterrupted metrics and chains", "[train]") {
  // Through the CLI with the built-ins only: the example plugin's "keyword" verifier.
  std::string plugin = kBin + "/rewards/examples/example_plugin.so";
  std::string bin = kBin + "/retort";
  REQUIRE(fs::exists(bin));
  REQUIRE(fs::exists(plugin));
  std::vector<json> rows;
  for (int i = 0; i < 6; ++i) rows.push_back({{"id", "k" + std::to_string(i)}, {"question", "Write " + std::to_string(i)}, {"answer", "1"}, {"keyword", "e"}});
  std::string prompts = write_jsonl("grpo_resume.jsonl", rows);
  auto run_cli = [&](const std::string& run_dir, bool kill_after_checkpoint) {
    json cfg = tiny_config(run_dir, prompts, "keyword");
    cfg["rewards"]["plugins"] = {plugin};
    cfg["steps"] = 12;
    cfg["save_every"] = 3;
    cfg["keep_last"] = 2;
    cfg["prompts_per_step"] = 2;
    cfg["group_size"] = 4;
    cfg["mu"] = 2;
    cfg["minibatch_size"] = 4;
    cfg["grad_accum"] = 2;
    return run_cli_config(bin, "grpo", cfg, run_dir, kill_after_checkpoint ? run_dir + "/checkpoints/step-3/trainer_state.json" : "");
  };
  std::string a = kBin + "/test_runs/grpo_uninterrupted", b = kBin + "/test_runs/grpo_killed";
  run_uninterrupted_and_killed(run_cli, a, b);
  auto partial = read_jsonl(b + "/metrics.jsonl");
  REQUIRE(partial.size() >= 3);
  CHECK(partial.size() < 12);
  // Mark the step-1 line: a resumed run keeps the lines up to its checkpoint, a run that
  // started over would drop them all.
  partial[0]["resume_marker"] = true;
  {
    std::ofstream f(b + "/metrics.jsonl");
    for (const auto& m : partial) f << m.dump() << "\n";
  }
  CHECK(run_cli(b, false) == 0);

  auto ma = read_jsonl(a + "/metrics.jsonl"), mb = read_jsonl(b + "/metrics.jsonl");
  REQUIRE(ma.size() == 12);
  REQUIRE(mb.size() == 12);
  CHECK(mb[0].value("resume_marker", false));  // resumed from a checkpoint, not started over
  bool rewards_vary = false;
  for (size_t i = 0; i < ma.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(mb[i]["step"] == ma[i]["step"]);
    for (const char* k : {"reward_mean", "reward_std", "loss", "kl", "kl_update", "grad_norm", "clip_low", "clip_high", "entropy"})
      CHECK(mb[i][k] == ma[i][k]);  // bit-identical on CPU with a fixed seed
    rewards_vary |= ma[i]["reward_std"].get<double>() > 0;
  }
  CHECK(rewards_vary);  // the comparison covers real updates, not zero advantages only
  auto ca = read_jsonl(a + "/chains.jsonl"), cb = read_jsonl(b + "/chains.jsonl");
  REQUIRE(ca.size() == 12u * 2 * 4);
  REQUIRE(cb.size() == ca.size());
  for (size_t i = 0; i < ca.size(); ++i) CHECK(cb[i] == ca[i]);
}

namespace {

// The "kl" of metrics.jsonl, step by step: the KL (k3 estimate) of the sampling policy to the
// anchor on that step's chains, per token within a chain, averaged over the chains.
std::vector<double> kl_per_step(const std::vector<json>& metrics) {
  std::vector<double> out;
  for (const auto& m : metrics) out.push_back(m["kl"].is_number() ? m["kl"].get<double>() : std::nan(""));
  return out;
}

double mean_of(const std::vector<double>& v, size_t from, size_t to) {
  double s = 0;
  for (size_t i = from; i < to; ++i) s += v[i];
  return s / static_cast<double>(to - from);
}

}  // namespace

TEST_CASE("grpo: a large beta keeps the policy near the anchor, beta = 0 lets it move", "[train]") {
  // Same seed, prompts, model and reward (the share of '7's, which pushes the policy); the
  // anchor is the frozen initial policy; only loss.beta differs.
  std::string prompts = write_jsonl("grpo_beta_prompts.jsonl", number_prompts(8));
  const int steps = 20;
  const double beta_large = 1.0;
  auto run_with = [&](double beta, const std::string& tag) {
    std::string run = kBin + "/test_runs/grpo_beta_" + tag;
    fs::remove_all(run);
    json cfg = tiny_config(run, prompts, "sevens");
    cfg["anchor"] = "reference";
    cfg["loss"]["beta"] = beta;
    cfg["steps"] = steps;
    cfg["save_every"] = 0;
    retort::run_grpo(cfg, "test", {}, test_hooks());
    return read_jsonl(run + "/metrics.jsonl");
  };
  auto t0 = std::chrono::steady_clock::now();
  auto m_free = run_with(0.0, "0");
  auto m_tied = run_with(beta_large, "large");
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE(m_free.size() == static_cast<size_t>(steps));
  REQUIRE(m_tied.size() == static_cast<size_t>(steps));
  auto kl_free = kl_per_step(m_free), kl_tied = kl_per_step(m_tied);
  for (size_t i = 0; i < kl_free.size(); ++i) {
    INFO("step " << i + 1);
    REQUIRE(std::isfinite(kl_free[i]));
    REQUIRE(std::isfinite(kl_tied[i]));
    CHECK(kl_free[i] >= 0);  // k3 is non-negative
    CHECK(kl_tied[i] >= 0);
  }
  // Step 1 samples from the initial policy, which is the anchor: both runs are identical there.
  CHECK(kl_free[0] == Approx(kl_tied[0]).margin(1e-9));
  CHECK(m_free[0]["reward_mean"] == m_tied[0]["reward_mean"]);
  const size_t last_n = 5;
  double free_last = mean_of(kl_free, steps - last_n, steps), tied_last = mean_of(kl_tied, steps - last_n, steps);
  double free_reward = 0, tied_reward = 0;
  for (size_t i = steps - last_n; i < static_cast<size_t>(steps); ++i)
    free_reward += m_free[i]["reward_mean"].get<double>() / last_n, tied_reward += m_tied[i]["reward_mean"].get<double>() / last_n;
  std::ostringstream kls;
  for (size_t i = 0; i < kl_free.size(); ++i) kls << " " << i + 1 << ":" << kl_free[i] << "/" << kl_tied[i];
  INFO("kl per step (beta 0 / beta " << beta_large << "):" << kls.str());
  WARN("grpo beta: kl step 1 " << kl_free[0] << "; mean kl of the last " << last_n << " steps: beta 0 " << free_last << ", beta "
                               << beta_large << " " << tied_last << " (ratio " << tied_last / free_last << "); mean reward of the last "
                               << last_n << " steps: beta 0 " << free_reward << ", beta " << beta_large << " " << tied_reward << "; "
                               << secs << " s for both runs");
  // beta = 0: nothing holds the policy, it moves away from the anchor (step 1 is ~0: the
  // sampling policy is the anchor), and keeps moving over the run.
  CHECK(kl_free[0] < 1e-4);
  CHECK(free_last > 0.1);
  CHECK(free_last > 10 * kl_free[0]);
  CHECK(free_last > 5 * mean_of(kl_free, 0, last_n));
  // A large beta: the policy stays much nearer the anchor than without the penalty
  // (measured on CPU, seed 11: last-5-step KL 0.88 with beta 0, 0.057 with beta 1).
  CHECK(tied_last < 0.5 * free_last);
}

TEST_CASE("grpo: every step logs the sampler/trainer mismatch and the policy's entropy", "[train]") {
  std::string prompts = write_jsonl("grpo_mismatch_prompts.jsonl", number_prompts(4));
  const double log_v = std::log(static_cast<double>(tiny_model_config()["vocab_size"].get<int64_t>()));
  struct Run {
    std::string name;
    json set;            // loss and update settings
    bool old_in_pass;    // old log-probs from the first pass's own forward (no extra forward)
    bool one_step;       // one optimizer step per batch: the ratio is exactly 1
    bool top_entropy;    // top_entropy_quantile 0.5
  };
  const json tis_half = {{"beta", 0.01}, {"entropy_coef", 0.01}, {"top_entropy_quantile", 0.5},
                         {"rollout_correction", {{"mode", "tis"}, {"cap", 2.0}}}};
  const std::vector<Run> runs = {
      // One optimizer step per batch: old = the update's own forward, detached (no extra pass).
      {"one_step", json::object(), true, true, false},
      // mu 2, one minibatch: pass 0's forward gives old (the policy moves only after it), kept for
      // pass 1, whose ratio is no longer 1; TIS, an entropy bonus and the top-50% entropy tokens.
      {"mu2_tis", {{"mu", 2}, {"loss", tis_half}}, true, false, true},
      // mu 2 over two minibatches: the policy moves within a pass, so a no-grad forward gives old.
      {"mu2_minibatches", {{"mu", 2}, {"minibatch_size", 2}, {"loss", tis_half}}, false, false, true},
  };
  for (const auto& r : runs) {
    std::string run = kBin + "/test_runs/grpo_mismatch_" + r.name;
    fs::remove_all(run);
    json cfg = tiny_config(run, prompts, "sevens");
    cfg["steps"] = 3;
    cfg["save_every"] = 0;
    cfg.merge_patch(r.set);
    retort::run_grpo(cfg, "test", {}, test_hooks());
    auto m = read_jsonl(run + "/metrics.jsonl");
    REQUIRE(m.size() == 3);
    for (const auto& s : m) {
      INFO(r.name << ": " << s.dump());
      for (const char* k : {"mismatch_logratio_mean", "mismatch_logratio_max", "mismatch_frac_over", "rollout_weight_mean",
                            "rollout_capped_frac", "rollout_masked_frac", "entropy", "neg_logp_mean", "entropy_kept", "loss"}) {
        INFO(k);
        REQUIRE(s[k].is_number());
        CHECK(std::isfinite(s[k].get<double>()));
      }
      // Sampler and trainer run the same float32 model on the CPU: they agree to rounding, so
      // nothing is corrected (and the objective is the uncorrected one).
      CHECK(s["mismatch_logratio_mean"].get<double>() < 1e-4);
      CHECK(s["mismatch_logratio_max"].get<double>() >= s["mismatch_logratio_mean"].get<double>());
      CHECK(s["mismatch_logratio_max"].get<double>() < 1e-3);
      CHECK(s["mismatch_frac_over"].get<double>() == 0.0);
      CHECK(s["rollout_weight_mean"].get<double>() == Approx(1.0).margin(1e-3));
      CHECK(s["rollout_masked_frac"].get<double>() == 0.0);
      // The exact entropy lies in (0, log V]; at T = 1 with no top-k / top-p its Monte Carlo
      // estimate, the sampled tokens' mean -log p, lands near it.
      const double h = s["entropy"].get<double>();
      CHECK(h > 0);
      CHECK(h <= log_v + 1e-6);
      CHECK(s["neg_logp_mean"].get<double>() == Approx(h).epsilon(0.02));
      if (r.old_in_pass) {
        CHECK(s["time_old_logprobs_s"].get<double>() == 0.0);  // no extra forward
      } else {
        CHECK(s["time_old_logprobs_s"].get<double>() > 0.0);
      }
      if (r.one_step) {
        CHECK(s["ratio_mean"].get<double>() == Approx(1.0).margin(1e-9));  // old is the update's own log-prob
      } else {
        CHECK(s["optimizer_steps"].get<double>() >= 2);
        CHECK(std::abs(s["ratio_mean"].get<double>() - 1.0) > 1e-6);  // a later step's policy has moved
      }
      if (r.top_entropy) {
        CHECK(s["entropy_kept"].get<double>() == Approx(0.5).margin(0.1));  // the top half by entropy
      } else {
        CHECK(s["entropy_kept"].get<double>() == Approx(1.0));
      }
    }
  }
}

TEST_CASE("grpo: the ratio and the anchor's KL are taken at the sampling temperature", "[train]") {
  // Sampling at T = 0.5 draws from softmax(logits / 0.5). The trainer's log-probs (the old
  // policy's, from the training forward) must match the sampler's: the logged mismatch is ~0;
  // the untempered model's would differ by |log p_1 - log p_0.5|, far from 0. The first update
  // of a step (mu = 1) sees the very policy that sampled, so every ratio is 1 and nothing is
  // clipped; the anchor is the frozen initial policy, so the first step's KL must be 0.
  std::string prompts = write_jsonl("grpo_temperature_prompts.jsonl", number_prompts(4));
  std::string run = kBin + "/test_runs/grpo_temperature";
  fs::remove_all(run);
  json cfg = tiny_config(run, prompts, "sevens");
  cfg["anchor"] = "reference";
  cfg["sampling"]["temperature"] = 0.5;
  cfg["loss"]["beta"] = 0.1;
  cfg["steps"] = 5;
  cfg["save_every"] = 0;
  retort::run_grpo(cfg, "test", {}, test_hooks());
  auto m = read_jsonl(run + "/metrics.jsonl");
  REQUIRE(m.size() == 5);
  for (size_t i = 0; i < m.size(); ++i) {
    INFO("step " << i + 1 << ": " << m[i].dump());
    CHECK(m[i]["ratio_mean"].get<double>() == Approx(1.0).margin(1e-5));
    CHECK(m[i]["mismatch_logratio_max"].get<double>() < 1e-4);
    CHECK(m[i]["clip_low"].get<double>() == 0.0);
    CHECK(m[i]["clip_high"].get<double>() == 0.0);
  }
  CHECK(m[0]["kl"].get<double>() < 1e-6);
  // The step after the first update with a gradient samples from the updated policy: it has
  // moved away from the anchor. (A step whose groups all score alike has no gradient but the
  // KL term's rounding at the anchor itself, ~1e-8.)
  size_t first = 0;
  while (first < m.size() && m[first]["grad_norm"].get<double>() < 1e-6) ++first;
  REQUIRE(first + 1 < m.size());
  CHECK(m[first + 1]["kl"].get<double>() > 1e-4);
}

namespace {

// A verifier that waits like an external process would: it sleeps `sleep_ms` per completion,
// then scores the share of '7' characters. waits() = true: the runner calls it from its
// waiting threads (rewards.wait_threads), as it does sandbox and external verifiers.
class SlowVerifier : public retort::rewards::Verifier {
 public:
  explicit SlowVerifier(int sleep_ms) : sleep_ms_(sleep_ms) {}
  retort::rewards::Score verify(const retort::rewards::Sample& s) const override {
    std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms_));
    retort::rewards::Score sc;
    size_t sevens = 0;
    for (char c : s.completion) sevens += c == '7';
    sc.reward = s.completion.empty() ? 0.0 : static_cast<double>(sevens) / s.completion.size();
    sc.passed = sc.reward > 0.5;
    return sc;
  }
  bool waits() const override { return true; }

 private:
  int sleep_ms_;
};

}  // namespace

TEST_CASE("grpo: verification overlaps generation (measured)", "[train]") {
  // How grpo.cpp measures it, per sampling round: the sampler hands every finished completion
  // to the scorer's thread at once; time_sample_s is the sampler's wall time,
  // time_score_wait_s the wait for the verifiers after the sampler returned (the part not
  // hidden), time_verify_busy_s the time the scorer's thread spent in verification (hidden
  // or not), verify_hidden_share = max(0, 1 - wait / busy). Verification that only started
  // after sampling would give wait >= busy, so a hidden share of 0.
  //
  // For completions to finish while others still decode, they must stop at different
  // lengths: the random tiny model emits a stop token (<|im_end|> or <|endoftext|>, 2 of 608)
  // with probability ~1/300 per token, so with 192 new tokens about half of the 32 rows of a
  // step stop early, at lengths spread over the whole decode, and the rest are truncated.
  const int sleep_ms = 30;
  std::string run = kBin + "/test_runs/grpo_overlap";
  fs::remove_all(run);
  json cfg = tiny_config(run, write_jsonl("grpo_overlap_prompts.jsonl", number_prompts(8)), "slow");
  cfg["model_config"]["max_position_embeddings"] = 512;
  cfg["sampling"]["max_new_tokens"] = 192;
  cfg["steps"] = 4;
  cfg["save_every"] = 0;
  cfg["anchor"] = "none";  // not needed here; spares a forward pass per step
  cfg["loss"]["beta"] = 0.0;
  retort::GrpoHooks hooks = test_hooks();
  hooks.registry->add("slow", "test: sleeps, then the share of '7' characters", [sleep_ms](const json&, const retort::rewards::VerifierContext&) {
    return std::make_shared<SlowVerifier>(sleep_ms);
  });
  auto t0 = std::chrono::steady_clock::now();
  retort::run_grpo(cfg, "test", {}, hooks);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  auto metrics = read_jsonl(run + "/metrics.jsonl");
  REQUIRE(metrics.size() == 4);
  auto chains = read_jsonl(run + "/chains.jsonl");
  REQUIRE(chains.size() == 4u * 4 * 8);
  // The premise: in every step some completions stopped early and some ran to the cap.
  std::map<int64_t, int> early, capped;
  for (const auto& c : chains) (c["truncated"].get<bool>() ? capped : early)[c["step"].get<int64_t>()]++;
  double busy_sum = 0, wait_sum = 0, sample_sum = 0;
  std::ostringstream per_step;
  for (const auto& m : metrics) {
    const int64_t step = m["step"].get<int64_t>();
    INFO("step " << step << ": " << m.dump());
    CHECK(early[step] > 0);
    CHECK(capped[step] > 0);
    REQUIRE(m["time_verify_busy_s"].is_number());
    REQUIRE(m["time_score_wait_s"].is_number());
    REQUIRE(m["verify_hidden_share"].is_number());
    const double busy = m["time_verify_busy_s"].get<double>(), wait = m["time_score_wait_s"].get<double>();
    const double hidden = m["verify_hidden_share"].get<double>(), sample = m["time_sample_s"].get<double>();
    // Every completion was verified: at least one sleep of the verifier per step.
    CHECK(busy >= sleep_ms / 1000.0);
    // Part of the verification ran while the sampler still decoded.
    CHECK(hidden > 0);
    CHECK(wait < busy);
    CHECK(hidden == Approx(std::max(0.0, 1.0 - wait / busy)).margin(1e-12));
    busy_sum += busy, wait_sum += wait, sample_sum += sample;
    per_step << " step " << step << ": sample " << sample << " s, verify busy " << busy << " s, wait " << wait << " s, hidden "
             << hidden << " (" << early[step] << " early / " << capped[step] << " capped);";
  }
  // No completion was scored 0 for missing the deadline.
  for (const auto& c : chains) CHECK_FALSE(c["verifiers"]["slow"]["detail"].contains("timed_out"));
  const double hidden_all = 1.0 - wait_sum / busy_sum;
  WARN("grpo overlap: verify busy " << busy_sum << " s, not hidden (score wait) " << wait_sum << " s, sampling " << sample_sum
                                    << " s over 4 steps: hidden share " << hidden_all << ";" << per_step.str() << " " << secs << " s");
  // Over the run, a good part of the verification was hidden behind decoding (measured: ~0.7-0.85).
  CHECK(hidden_all > 0.3);
}

TEST_CASE("grpo: one update's loss and gradient do not depend on micro-batches, token budget or packing", "[train]") {
  // Same seed: the same samples, rewards and advantages; only the update's split differs.
  std::string prompts = write_jsonl("grpo_split_prompts.jsonl", number_prompts(8));
  struct Split {
    std::string name;
    int grad_accum;
    json train;
  };
  const std::vector<Split> splits = {{"whole", 1, json::object()},
                                     {"accum4", 4, json::object()},
                                     {"packed", 1, {{"micro_batch_tokens", 40}, {"packing", true}}},
                                     {"padded", 1, {{"micro_batch_tokens", 40}, {"packing", false}}},
                                     {"ckpt", 2, {{"activation_checkpointing", "on"}}}};
  // mu = 2 adds the no-grad pass of the old log-probs, which runs under the same token budget
  // (packed or padded) as the update, as the anchor's pass does.
  for (const auto& [aggregation, mu] : std::vector<std::pair<std::string, int>>{{"sequence", 1}, {"token", 1}, {"dr_grpo", 1}, {"token", 2}}) {
    std::vector<json> first;
    for (const auto& s : splits) {
      std::string run = kBin + "/test_runs/grpo_split_" + s.name;
      fs::remove_all(run);
      json cfg = tiny_config(run, prompts, "sevens");
      cfg["steps"] = 1;
      cfg["save_every"] = 0;
      cfg["mu"] = mu;
      cfg["grad_accum"] = s.grad_accum;
      cfg["optim"]["grad_clip"] = 0.0;
      cfg["loss"]["aggregation"] = aggregation;
      // An entropy bonus (its gradient goes through the chunked head, packed or padded) with one
      // of the aggregations.
      if (aggregation == "token") cfg["loss"]["entropy_coef"] = 0.05;
      if (!s.train.empty()) cfg["train"] = s.train;
      retort::run_grpo(cfg, "test", {}, test_hooks());
      first.push_back(read_jsonl(run + "/metrics.jsonl").at(0));
    }
    for (size_t i = 1; i < splits.size(); ++i) {
      INFO(aggregation << ", mu " << mu << ": " << splits[i].name << " vs whole");
      CHECK(first[i]["reward_mean"] == first[0]["reward_mean"]);  // the same samples
      for (const char* key : {"loss", "grad_norm", "kl_update", "entropy", "mismatch_logratio_mean"})
        CHECK(first[i][key].get<double>() == Approx(first[0][key].get<double>()).epsilon(1e-5).margin(1e-7));  // loss ~ 0 at ratio 1
    }
    CHECK(first[0].contains("peak_rss_mb"));
    // A step with a gradient to compare (the entropy bonus has one whatever the rewards).
    if (aggregation == "token") CHECK(first[0]["grad_norm"].get<double>() > 0.0);
  }
}

namespace {

// A tiny model folder (the tiny config, the test tokenizer's vocabulary) from `seed`; with
// `sharpen` the final norm is scaled so that its next-token distributions are peaked (a
// teacher with something to teach, unlike a near-uniform random model).
std::string write_tiny_model(const std::string& dir, uint64_t seed, double sharpen) {
  torch::manual_seed(seed);
  retort::Qwen2ForCausalLM model(retort::ModelConfig::from_json(tiny_model_config(), "test"));
  if (sharpen != 1.0) {
    torch::NoGradGuard ng;
    for (auto& p : model->named_parameters())
      if (p.key().find("norm") != std::string::npos && p.key().find("layers") == std::string::npos) p.value().mul_(sharpen);
  }
  fs::remove_all(dir);
  retort::save_model(*model, dir);
  return dir;
}

double mean_key(const std::vector<json>& metrics, const char* key, size_t from, size_t to) {
  double s = 0;
  for (size_t i = from; i < to; ++i) s += metrics[i][key].get<double>();
  return s / static_cast<double>(to - from);
}

}  // namespace

TEST_CASE("grpo: on-policy distillation alone (no verifier) trains and logs both parts", "[train]") {
  const std::string run = kBin + "/test_runs/grpo_opd_alone";
  fs::remove_all(run);
  // The teacher is the student's initial weights with sharpened next-token distributions:
  // something a few steps can learn (a second random model would be a random function to fit).
  const std::string student = write_tiny_model(kBin + "/test_runs/grpo_opd_student", 99, 1.0);
  const std::string teacher = write_tiny_model(kBin + "/test_runs/grpo_opd_teacher", 99, 12.0);
  json cfg = tiny_config(run, write_jsonl("grpo_opd_prompts.jsonl", number_prompts(8)), "sevens");
  cfg.erase("model_config");
  cfg["model"] = student;
  cfg["rewards"]["verifiers"] = json::array();
  cfg["anchor"] = "teacher";
  cfg["teacher"] = teacher;
  cfg["opd"] = {{"weight", 1.0}};
  cfg["loss"]["beta"] = 0.0;  // the distillation reward alone moves the policy
  cfg["dynamic_sampling"] = {{"enabled", true}, {"max_retries", 2}};  // keeps every group: no verifier
  cfg["steps"] = 12;
  cfg["save_every"] = 0;
  retort::GrpoResult r = retort::run_grpo(cfg, "test", {}, test_hooks());
  REQUIRE(r.steps.size() == 12);
  auto metrics = read_jsonl(run + "/metrics.jsonl");
  REQUIRE(metrics.size() == 12);
  for (const auto& m : metrics) {
    INFO(m.dump());
    for (const char* k : {"adv_verifier_mean", "adv_verifier_abs_mean", "adv_opd_mean", "adv_opd_abs_mean", "opd_reverse_kl", "loss"}) {
      REQUIRE(m[k].is_number());
      CHECK(std::isfinite(m[k].get<double>()));
    }
    CHECK(m["adv_verifier_abs_mean"].get<double>() == 0.0);  // no verifier: the advantage is the distillation's alone
    CHECK(m["adv_opd_abs_mean"].get<double>() > 0.0);
    CHECK(m["adv_opd_mean"].get<double>() == Approx(-m["opd_reverse_kl"].get<double>()));  // weight 1
    CHECK(m["groups_dropped"] == 0);
    CHECK(m["groups"] == 4);
    CHECK(m["optimizer_steps"] == 1);  // the distillation advantage alone drives an update
    CHECK(m["grad_norm"].get<double>() > 0.0);
    CHECK(std::isfinite(m["grad_norm"].get<double>()));
  }
  // The sharpened teacher is far from the student on the student's own samples.
  CHECK(mean_key(metrics, "opd_reverse_kl", 0, 4) > 0.5);
  // The policy moved: the anchor's KL to the (fixed) teacher on the sampled tokens changes.
  CHECK(metrics.front()["kl"] != metrics.back()["kl"]);
  // chains.jsonl: each chain's mean per-token distillation advantage; the step's token-weighted
  // mean of them is the metrics line's.
  auto chains = read_jsonl(run + "/chains.jsonl");
  REQUIRE(chains.size() == 12u * 32);
  std::map<int64_t, std::pair<double, double>> per_step;  // step -> (sum of opd x length, tokens)
  for (const auto& c : chains) {
    REQUIRE(c["opd_advantage"].is_number());
    CHECK(c["advantage"].get<double>() == 0.0);
    auto& acc = per_step[c["step"].get<int64_t>()];
    acc.first += c["opd_advantage"].get<double>() * c["length"].get<double>();
    acc.second += c["length"].get<double>();
  }
  for (const auto& m : metrics) {
    const auto& acc = per_step[m["step"].get<int64_t>()];
    CHECK(acc.first / acc.second == Approx(m["adv_opd_mean"].get<double>()).epsilon(1e-5));
  }
}

TEST_CASE("grpo: with the student as its own teacher the distillation advantage is 0; grpo + opd logs both parts", "[train]") {
  const std::string run = kBin + "/test_runs/grpo_opd_self";
  fs::remove_all(run);
  const std::string model = write_tiny_model(kBin + "/test_runs/grpo_opd_self_model", 5, 1.0);
  std::vector<json> rows;
  for (int i = 0; i < 8; ++i) rows.push_back({{"id", "p" + std::to_string(i)}, {"question", "Q" + std::to_string(i)}, {"answer", "1"}, {"parity", true}});
  json cfg = tiny_config(run, write_jsonl("grpo_opd_self.jsonl", rows), "sevens");
  cfg.erase("model_config");
  cfg["model"] = model;
  cfg["teacher"] = model;
  cfg["anchor"] = "reference";  // the teacher is loaded on its own for the distillation
  cfg["opd"] = {{"weight", 0.5}};
  cfg["optim"]["lr"] = 0.0;  // the student stays the teacher at every step
  cfg["steps"] = 3;
  cfg["save_every"] = 0;
  retort::run_grpo(cfg, "test", {}, test_hooks());
  auto metrics = read_jsonl(run + "/metrics.jsonl");
  REQUIRE(metrics.size() == 3);
  for (const auto& m : metrics) {
    INFO(m.dump());
    // The sampler's log-probs and the teacher's forward pass agree up to float32 rounding.
    CHECK(std::abs(m["adv_opd_abs_mean"].get<double>()) < 1e-4);
    CHECK(std::abs(m["opd_reverse_kl"].get<double>()) < 1e-4);
    CHECK(m["adv_verifier_abs_mean"].get<double>() > 0.0);  // the verifier's part is there
  }
  for (const auto& c : read_jsonl(run + "/chains.jsonl")) CHECK(std::abs(c["opd_advantage"].get<double>()) < 1e-4);
}

TEST_CASE("grpo: the pass-rate curriculum sets aside prompts always or never solved, then returns them", "[train]") {
  std::vector<json> rows;
  for (int i = 0; i < 2; ++i) rows.push_back({{"id", "always" + std::to_string(i)}, {"question", "A" + std::to_string(i)}, {"answer", "1"}, {"constant", 1.0}});
  for (int i = 0; i < 2; ++i) rows.push_back({{"id", "never" + std::to_string(i)}, {"question", "N" + std::to_string(i)}, {"answer", "1"}, {"constant", 0.0}});
  for (int i = 0; i < 4; ++i) rows.push_back({{"id", "parity" + std::to_string(i)}, {"question", "P" + std::to_string(i)}, {"answer", "1"}, {"parity", true}});
  const std::string run = kBin + "/test_runs/grpo_curriculum";
  fs::remove_all(run);
  json cfg = tiny_config(run, write_jsonl("grpo_curriculum.jsonl", rows), "sevens");
  cfg["prompts_per_step"] = 2;
  cfg["group_size"] = 8;
  cfg["steps"] = 16;
  cfg["save_every"] = 0;
  cfg["curriculum"] = {{"enabled", true}, {"window", 1}, {"low", 0.0}, {"high", 1.0}, {"set_aside_epochs", 1}};
  retort::run_grpo(cfg, "test", {}, test_hooks());
  auto metrics = read_jsonl(run + "/metrics.jsonl");
  auto chains = read_jsonl(run + "/chains.jsonl");
  REQUIRE(metrics.size() == 16);
  std::map<int64_t, int64_t> epoch_of_step;
  int64_t newly = 0, max_aside = 0, skipped = 0;
  for (const auto& m : metrics) {
    epoch_of_step[m["step"].get<int64_t>()] = m["epoch"].get<int64_t>();
    newly += m["curriculum_set_aside_new"].get<int64_t>();
    max_aside = std::max(max_aside, m["curriculum_set_aside"].get<int64_t>());
    skipped += m["curriculum_skipped_draws"].get<int64_t>();
  }
  CHECK(newly >= 4);      // the four constant prompts, each time they come back
  CHECK(max_aside >= 4);
  CHECK(skipped >= 4);
  // The epochs each prompt was sampled in (8 prompts, 2 per step: a step never spans two
  // epochs here, so a step's epoch is its metrics line's).
  std::map<std::string, std::set<int64_t>> epochs;
  for (const auto& c : chains) epochs[c["prompt_id"].get<std::string>()].insert(epoch_of_step[c["step"].get<int64_t>()]);
  const int64_t last_epoch = metrics.back()["epoch"].get<int64_t>();
  REQUIRE(last_epoch >= 3);
  for (const auto& kv : epochs) {
    INFO(kv.first);
    const bool constant = kv.first.rfind("parity", 0) != 0;
    if (constant) {
      CHECK(kv.second.size() >= 2);  // it came back
      for (int64_t e : kv.second) CHECK(kv.second.count(e + 1) == 0);  // never in the epoch after one it was sampled in
    } else {
      CHECK(kv.second.count(1) == 1);  // a prompt with a pass rate in (0, 1) is never set aside
    }
  }
}

TEST_CASE("grpo: a run with the pass-rate curriculum killed with SIGKILL resumes with the same set-aside prompts", "[train]") {
  std::string plugin = kBin + "/rewards/examples/example_plugin.so";
  std::string bin = kBin + "/retort";
  REQUIRE(fs::exists(bin));
  REQUIRE(fs::exists(plugin));
  std::vector<json> rows;
  for (int i = 0; i < 3; ++i) rows.push_back({{"id", "e" + std::to_string(i)}, {"question", "Write " + std::to_string(i)}, {"answer", "1"}, {"keyword", "e"}});
  for (int i = 0; i < 3; ++i) rows.push_back({{"id", "z" + std::to_string(i)}, {"question", "Say " + std::to_string(i)}, {"answer", "1"}, {"keyword", "zqzqz"}});
  std::string prompts = write_jsonl("grpo_curriculum_resume.jsonl", rows);
  auto run_cli = [&](const std::string& run_dir, bool kill_after_checkpoint) {
    json cfg = tiny_config(run_dir, prompts, "keyword");
    cfg["rewards"]["plugins"] = {plugin};
    cfg["steps"] = 12;
    cfg["save_every"] = 4;
    cfg["keep_last"] = 2;
    cfg["prompts_per_step"] = 2;
    cfg["group_size"] = 4;
    cfg["curriculum"] = {{"enabled", true}, {"window", 1}, {"low", 0.25}, {"high", 0.75}, {"set_aside_epochs", 2}};
    return run_cli_config(bin, "grpo", cfg, run_dir, kill_after_checkpoint ? run_dir + "/checkpoints/step-4/trainer_state.json" : "");
  };
  std::string a = kBin + "/test_runs/grpo_curriculum_uninterrupted", b = kBin + "/test_runs/grpo_curriculum_killed";
  run_uninterrupted_and_killed(run_cli, a, b);
  // The checkpoint the resume starts from holds set-aside prompts: the state is what is tested.
  json st = retort::load_json_file(b + "/checkpoints/step-4/trainer_state.json");
  REQUIRE(st.contains("curriculum"));
  CHECK(st["curriculum"]["set_aside_until_epoch"].size() > 0);
  CHECK(run_cli(b, false) == 0);
  auto ma = read_jsonl(a + "/metrics.jsonl"), mb = read_jsonl(b + "/metrics.jsonl");
  REQUIRE(ma.size() == 12);
  REQUIRE(mb.size() == 12);
  int64_t set_aside_after_resume = 0;
  for (size_t i = 0; i < ma.size(); ++i) {
    INFO("step " << i + 1);
    for (const char* k : {"step", "reward_mean", "loss", "kl", "grad_norm", "epoch", "curriculum_set_aside", "curriculum_set_aside_new",
                          "curriculum_skipped_draws"})
      CHECK(mb[i][k] == ma[i][k]);
    if (i >= 4) set_aside_after_resume += ma[i]["curriculum_skipped_draws"].get<int64_t>();
  }
  CHECK(set_aside_after_resume > 0);  // prompts were skipped after the resume point
  auto ca = read_jsonl(a + "/chains.jsonl"), cb = read_jsonl(b + "/chains.jsonl");
  REQUIRE(ca.size() == 12u * 2 * 4);
  REQUIRE(cb.size() == ca.size());
  for (size_t i = 0; i < ca.size(); ++i) CHECK(cb[i] == ca[i]);
}

TEST_CASE("grpo: tool observation tokens are context only: changing them changes no loss, gradient or update", "[train]") {
  // The hook marks the last 3 tokens of every completion of 5 or more as a tool observation, as
  // the engine does for the output it appends (Rollout::completion_mask 0, attention 1). In the
  // "perturbed" runs it also replaces those ids and the sampler's log-probs of them. Tokens at the
  // end are the ones whose change alters nothing written after them, so every model-written
  // token keeps its context: with observations masked everywhere (log-probs, ratio, anchor KL,
  // entropy bonus and top-entropy selection, rollout correction, on-policy distillation, token
  // counts) both runs take the same updates, step after step. The control changes the same ids
  // without marking them: its update differs, so the comparison can fail.
  // Rewards by length: groups differ, so the verifier's advantages drive the policy term too.
  std::vector<json> rows = number_prompts(8);
  for (auto& r : rows) r["length_reward"] = true;
  const std::string prompts = write_jsonl("grpo_obs_prompts.jsonl", rows);
  const std::string student = write_tiny_model(kBin + "/test_runs/grpo_obs_student", 21, 1.0);
  const std::string teacher = write_tiny_model(kBin + "/test_runs/grpo_obs_teacher", 21, 6.0);
  constexpr int64_t kTail = 3;
  auto hooks_for = [](bool mark, bool perturb) {
    retort::GrpoHooks h = test_hooks();
    h.on_rollout = [mark, perturb](retort::ScoredRollout& s) {
      auto& ro = s.rollout;
      for (size_t row = 0; row < ro.completions.size(); ++row) {
        auto& ids = ro.completions[row];
        const int64_t n = static_cast<int64_t>(ids.size());
        if (n < 5) continue;
        for (int64_t j = n - kTail; j < n; ++j) {
          if (mark) ro.completion_mask[static_cast<int64_t>(row)][j] = 0;
          if (perturb) {
            ids[static_cast<size_t>(j)] = (ids[static_cast<size_t>(j)] + 17) % 600;
            ro.logprobs[static_cast<int64_t>(row)][j] += 5.0f;
          }
        }
      }
    };
    return h;
  };
  for (bool packed : {false, true}) {
    std::map<std::string, std::vector<json>> metrics;
    for (const char* name : {"marked", "perturbed", "control"}) {
      const std::string run = kBin + "/test_runs/grpo_obs_" + name + (packed ? "_packed" : "");
      fs::remove_all(run);
      json cfg = tiny_config(run, prompts, "sevens");
      cfg.erase("model_config");
      cfg["model"] = student;
      cfg["anchor"] = "teacher";
      cfg["teacher"] = teacher;
      cfg["opd"] = {{"weight", 0.5}};
      cfg["mu"] = 2;  // old log-probs from a separate pass, and the rollout correction's weights
      cfg["loss"]["rollout_correction"] = {{"mode", "tis"}};
      cfg["loss"]["entropy_coef"] = 0.05;
      cfg["loss"]["top_entropy_quantile"] = 0.5;
      cfg["loss"]["aggregation"] = "token";
      cfg["steps"] = 2;
      cfg["save_every"] = 0;
      if (packed) cfg["train"] = {{"micro_batch_tokens", 40}, {"packing", true}};
      const std::string n = name;
      retort::run_grpo(cfg, "test", {}, hooks_for(n != "control", n != "marked"));
      metrics[n] = read_jsonl(run + "/metrics.jsonl");
      REQUIRE(metrics[n].size() == 2);
    }
    const auto& a = metrics["marked"];
    const auto& b = metrics["perturbed"];
    for (size_t step = 0; step < 2; ++step) {
      INFO((packed ? "packed" : "padded") << ", step " << step + 1 << "\n" << a[step].dump() << "\n" << b[step].dump());
      CHECK(a[step]["obs_tokens_mean"].get<double>() > 1.0);
      CHECK(a[step]["reward_std"].get<double>() > 0.0);
      CHECK(a[step]["written_length_mean"].get<double>() + a[step]["obs_tokens_mean"].get<double>() ==
            Approx(a[step]["completion_length_mean"].get<double>()));
      for (const char* key : {"reward_mean", "loss", "policy_loss", "grad_norm", "kl", "kl_update", "entropy", "entropy_kept",
                              "ratio_mean", "clip_low", "clip_high", "mismatch_logratio_mean", "mismatch_logratio_max",
                              "rollout_weight_mean", "rollout_capped_frac", "adv_opd_mean", "adv_opd_abs_mean", "opd_reverse_kl",
                              "neg_logp_mean", "written_length_mean", "obs_tokens_mean"}) {
        INFO(key);
        REQUIRE(a[step][key].is_number());
        CHECK(b[step][key].get<double>() == Approx(a[step][key].get<double>()).epsilon(1e-6).margin(1e-9));
      }
    }
    // Unmarked, the same change is trained on: the first update differs.
    const auto& c = metrics["control"];
    CHECK(c[0]["obs_tokens_mean"].get<double>() == 0.0);
    CHECK(c[0]["grad_norm"].get<double>() != Approx(a[0]["grad_norm"].get<double>()).epsilon(1e-4));
  }
}
