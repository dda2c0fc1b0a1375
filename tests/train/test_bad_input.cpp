// Bad input through the command line: every case runs the built `retort` executable (as a
// user would) and asserts a non-zero exit, exactly one line on stderr that names the place
// (config key, FILE:LINE, option), and nothing written outside the run directory.
// Select the suite with `retort_tests "[bad_input]"`. Each case stops before training or
// within a step or two of a tiny model, so the whole suite takes seconds.
//
// stderr holds one line because the runs set RETORT_LOG=error (no progress or info lines);
// the error line itself is main()'s, whatever the log level.
#include <sys/wait.h>  // defines: WEXITSTATUS
#include <unistd.h>    // defines: getpid

#include <cmath>       // defines: std::nan
#include <cstdlib>     // defines: std::system
#include <filesystem>  // defines: std::filesystem
#include <fstream>     // defines: std::ofstream
#include <set>         // defines: std::set
#include <sstream>     // defines: std::stringstream

#include "common/config.h"     // defines: json
#include "common/run_dir.h"    // defines: RunDir
#include "model/checkpoint.h"  // defines: save_model
#include "model/transformer.h" // defines: Qwen2ForCausalLM
#include "train/optim.h"       // defines: NonFiniteGuard, save_training_checkpoint

#include <catch2/catch.hpp>
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kBin = RETORT_BINARY_DIR;
const std::string kSrc = RETORT_SOURCE_DIR;
const std::string kTokenizer = kSrc + "/tests/fixtures/tokenizer/trained.tokenizer.json";

json tiny_model_config() {
  return json{{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"}, {"vocab_size", 608}, {"hidden_size", 32},
              {"intermediate_size", 64}, {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
              {"max_position_embeddings", 256}, {"rope_theta", 10000.0}, {"rms_norm_eps", 1e-6}, {"tie_word_embeddings", true}};
}

// A case's folder W: W/in holds its inputs, W/run is the run directory; the command runs
// with W as its working directory.
struct Case {
  std::string dir;
  std::string in() const { return dir + "/in"; }
};

Case fresh_case(const std::string& name) {
  Case c{kBin + "/test_runs/bad_input/" + name};
  fs::remove_all(c.dir);
  fs::create_directories(c.in());
  std::ofstream traces(c.in() + "/traces.jsonl");
  for (int i = 0; i < 16; ++i) {
    int a = i % 10, b = (i * 3 + 1) % 10;
    traces << json{{"prompt", "What is " + std::to_string(a) + "+" + std::to_string(b) + "?"},
                   {"completion", "<think>\n" + std::to_string(a + b) + "\n</think>\nThe answer is \\boxed{" + std::to_string(a + b) + "}."}}
                  .dump()
           << "\n";
  }
  std::ofstream prompts(c.in() + "/prompts.jsonl");
  for (int i = 0; i < 4; ++i) prompts << json{{"prompt", "What is " + std::to_string(i) + "+1?"}, {"answer", std::to_string(i + 1)}}.dump() << "\n";
  json sft = {{"run_dir", "run"},
              {"model_config", tiny_model_config()},
              {"tokenizer", kTokenizer},
              {"runtime", {{"threads", 1}, {"seed", 7}, {"device", "cpu"}}},
              {"data", {{"train", "in/traces.jsonl"}, {"chat_template", "chatml"}, {"max_length", 128}, {"valid_fraction", 0.0}}},
              {"optim", {{"lr", 3e-3}, {"warmup_steps", 0}}},
              {"steps", 2},
              {"batch_size", 4},
              {"eval_every", 0},
              {"save_every", 1},
              {"keep_last", 3}};
  std::ofstream(c.in() + "/sft.json") << sft.dump(2);
  json grpo = {{"run_dir", "run"},
               {"model_config", tiny_model_config()},
               {"tokenizer", kTokenizer},
               {"runtime", {{"threads", 1}, {"seed", 7}, {"device", "cpu"}}},
               {"data", {{"prompts", "in/prompts.jsonl"}, {"chat_template", "chatml"}}},
               {"anchor", "none"},
               {"prompts_per_step", 2},
               {"group_size", 2},
               {"sampling", {{"max_new_tokens", 4}}},
               {"rewards", {{"verifiers", {{{"name", "math"}}}}, {"threads", 1}}},
               {"loss", {{"beta", 0.0}}},
               {"steps", 1}};
  std::ofstream(c.in() + "/grpo.json") << grpo.dump(2);
  return c;
}

std::set<std::string> files_under(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) out.insert(e.path().string());
  return out;
}

struct CliRun {
  int status = -1;
  std::vector<std::string> err_lines;
  std::string err;
};

// Runs `retort ARGS` in W and checks the three promises of a refused input; returns what it saw.
CliRun refused(const Case& c, const std::string& args) {
  const std::set<std::string> before = files_under(c.dir);
  const std::string err_path = c.dir + ".stderr", out_path = c.dir + ".stdout";
  const std::string cmd = "cd '" + c.dir + "' && RETORT_LOG=error '" + kBin + "/retort' " + args + " > '" + out_path + "' 2> '" + err_path +
                          "' < /dev/null";
  CliRun r;
  const int raw = std::system(cmd.c_str());
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  std::ifstream f(err_path);
  std::stringstream ss;
  ss << f.rdbuf();
  r.err = ss.str();
  std::string line;
  std::istringstream lines(r.err);
  while (std::getline(lines, line)) r.err_lines.push_back(line);
  INFO("retort " << args << "\nstderr:\n" << r.err);
  CHECK(WIFEXITED(raw));  // an error, not a signal
  CHECK(r.status != 0);
  CHECK(r.err_lines.size() == 1);
  for (const auto& p : files_under(c.dir)) {
    if (before.count(p)) continue;
    INFO("written outside the run directory: " << p);
    CHECK(p.rfind(c.dir + "/run", 0) == 0);
  }
  return r;
}

// A model folder whose weights hold a NaN: every loss it computes is NaN.
std::string write_nan_model(const Case& c) {
  retort::Qwen2ForCausalLM model(retort::ModelConfig::from_json(tiny_model_config(), "test"));
  {
    torch::NoGradGuard ng;
    model->named_parameters().begin()->value().fill_(std::nan(""));  // the embedding, tied to the output layer
  }
  const std::string dir = c.in() + "/nan_model";
  retort::save_model(*model, dir);
  return dir;
}

}  // namespace

TEST_CASE("bad input: run directories that must be refused", "[e2e][bad_input]") {
  Case c = fresh_case("run_dir");
  auto r = refused(c, "sft in/sft.json run_dir=");
  CHECK_THAT(r.err, Catch::Contains("'run_dir' is empty"));
  r = refused(c, "sft in/sft.json run_dir=/");
  CHECK_THAT(r.err, Catch::Contains("'run_dir' resolves to the root folder"));
  r = refused(c, "sft in/sft.json run_dir=/./..//");
  CHECK_THAT(r.err, Catch::Contains("'run_dir' resolves to the root folder"));
  CHECK_FALSE(fs::exists("/config.resolved.json"));
  CHECK_FALSE(fs::exists("/metrics.jsonl"));
  CHECK_FALSE(fs::exists("/final"));
}

TEST_CASE("bad input: a second run on a locked run directory names the holder's pid", "[e2e][bad_input]") {
  Case c = fresh_case("locked");
  {
    retort::RunDir holder(c.dir + "/run");  // this process holds the lock, as a running run would
    auto r = refused(c, "sft in/sft.json");
    CHECK_THAT(r.err, Catch::Contains("in use by another retort run (pid " + std::to_string(::getpid()) + ")"));
    CHECK_FALSE(fs::exists(c.dir + "/run/config.resolved.json"));
  }
  // Released when its holder goes (the kernel drops a dead process's lock the same way).
  retort::RunDir again(c.dir + "/run");
  SUCCEED();
}

TEST_CASE("bad input: config values out of range name the key, the value and the range", "[e2e][bad_input]") {
  Case c = fresh_case("ranges");
  struct Row {
    std::string args, key, range;
  };
  const std::vector<Row> rows = {
      {"sft in/sft.json batch_size=4294967298", "'batch_size'", "[-2147483648, 2147483647]"},
      {"sft in/sft.json batch_size=0", "'batch_size'", ">= 1"},
      {"sft in/sft.json steps=18446744073709551615", "'steps'", "below 2^63"},
      {"sft in/sft.json optim.lr=-1", "'optim.lr'", "in [0, 1]"},
      {"sft in/sft.json optim.lr=1e308", "'optim.lr'", "in [0, 1]"},
      {"sft in/sft.json optim.lr=1e6", "'optim.lr'", "in [0, 1]"},
      {"sft in/sft.json optim.min_lr_ratio=-0.5", "'optim.min_lr_ratio'", "in [0, 1]"},
      {"sft in/sft.json optim.warmup_steps=-1", "'optim.warmup_steps'", ">= 0"},
      {"sft in/sft.json data.valid_fraction=1.5", "'data.valid_fraction'", "in [0, 1)"},
      {"sft in/sft.json data.max_length=2147483647", "'data.max_length'", "in [2, 1048576]"},
      {"sft in/sft.json keep_last=0", "'keep_last'", ">= 1"},
      {"distill in/sft.json distill.logit.kind=offline distill.logit.temperature=0", "'distill.logit.temperature'", "in (0, 100]"},
      {"grpo in/grpo.json sampling.temperature=-1", "'sampling.temperature'", "in [0, 100]"},
      {"grpo in/grpo.json sampling.top_p=0", "'sampling.top_p'", "in (0, 1]"},
      {"grpo in/grpo.json advantage.eps=0", "'advantage.eps'", "> 0"},
      {"grpo in/grpo.json loss.dual_clip=0.5", "'loss.dual_clip'", "> 1, or 0 (off)"},
      {"grpo in/grpo.json loss.dual_clip=-3", "'loss.dual_clip'", "> 1, or 0 (off)"},
      {"grpo in/grpo.json loss.eps_low=-0.1", "'loss.eps_low'", "in [0, 1)"},
      {"grpo in/grpo.json group_size=1", "'group_size'", ">= 2"},
      {"grpo in/grpo.json loss.top_entropy_quantile=0", "'loss.top_entropy_quantile'", "in (0, 1]"},
      {"grpo in/grpo.json loss.top_entropy_quantile=1.5", "'loss.top_entropy_quantile'", "in (0, 1]"},
      {"grpo in/grpo.json loss.entropy_coef=-0.01", "'loss.entropy_coef'", "in [0, 1]"},
      {"grpo in/grpo.json loss.rollout_correction.cap=1", "'loss.rollout_correction.cap'", "> 1"},
      {"grpo in/grpo.json loss.rollout_correction.cap=0.5", "'loss.rollout_correction.cap'", "> 1"},
      {"grpo in/grpo.json loss.rollout_correction.log_threshold=0", "'loss.rollout_correction.log_threshold'", "in (0, 20]"},
      {"grpo in/grpo.json optim.lr=-1e-6", "'optim.lr'", "in [0, 1]"},
  };
  for (const auto& row : rows) {
    auto r = refused(c, row.args);
    INFO(row.args << " -> " << r.err);
    CHECK_THAT(r.err, Catch::Contains(row.key) && Catch::Contains("out of range") && Catch::Contains(row.range) &&
                          Catch::Contains("in/"));
    CHECK_FALSE(fs::exists(c.dir + "/run"));  // refused before the run directory is made
  }
}

TEST_CASE("bad input: on-policy distillation and pass-rate curriculum keys out of range or inconsistent", "[e2e][bad_input]") {
  Case c = fresh_case("opd_curriculum");
  struct Row {
    std::string args;
    std::vector<std::string> needles;
  };
  const std::vector<Row> rows = {
      {"grpo in/grpo.json opd.weight=-1", {"'opd.weight'", "out of range", "in [0, 1000000]", "-1"}},
      {"grpo in/grpo.json opd.wieght=1", {"opd.wieght", "weight"}},
      {"grpo in/grpo.json curriculum.window=0", {"'curriculum.window'", "out of range", "in [1, 1000]"}},
      {"grpo in/grpo.json curriculum.low=1", {"'curriculum.low'", "out of range", "in [0, 1)"}},
      {"grpo in/grpo.json curriculum.high=0", {"'curriculum.high'", "out of range", "in (0, 1]"}},
      {"grpo in/grpo.json curriculum.set_aside_epochs=0", {"'curriculum.set_aside_epochs'", "out of range", "in [1, 1000000]", "got 0"}},
      {"grpo in/grpo.json curriculum.enabled=true curriculum.low=0.6 curriculum.high=0.5", {"curriculum.low", "low < high", "0.6"}},
      {"grpo in/grpo.json opd.weight=1", {"teacher", "on-policy distillation"}},
      {"grpo in/grpo.json rewards.verifiers=[]", {"rewards.verifiers", "opd.weight"}},
      {"grpo in/grpo.json rewards.verifiers=[] opd.weight=1 teacher=in curriculum.enabled=true", {"curriculum.enabled", "verifier"}},
  };
  for (const auto& row : rows) {
    auto r = refused(c, row.args);
    INFO(row.args << " -> " << r.err);
    for (const auto& n : row.needles) CHECK_THAT(r.err, Catch::Contains(n));
    CHECK_FALSE(fs::exists(c.dir + "/run"));  // refused before the run directory is made
  }
}

TEST_CASE("bad input: sizes the machine cannot hold are refused before allocating", "[e2e][bad_input]") {
  Case c = fresh_case("memory");
  auto r = refused(c, "sft in/sft.json model_config.hidden_size=1048576 model_config.intermediate_size=4194304");
  CHECK_THAT(r.err, Catch::Contains("model_config") && Catch::Contains("more than this machine has") &&
                        Catch::Contains("hidden_size"));
  // A sample longer than the model's positions (max_position_embeddings 256).
  {
    std::ofstream f(c.in() + "/long.jsonl");
    f << json{{"prompt", "Sum"}, {"completion", std::string(4000, '7')}}.dump() << "\n";
    f << json{{"prompt", "Sum"}, {"completion", "7"}}.dump() << "\n";
  }
  r = refused(c, "sft in/sft.json data.train=in/long.jsonl data.max_length=100000");
  CHECK_THAT(r.err, Catch::Contains("data.max_length") && Catch::Contains("max_position_embeddings"));
}

TEST_CASE("bad input: command-line options are validated like config fields", "[e2e][bad_input]") {
  Case c = fresh_case("options");
  auto r = refused(c, "generate --model in/none --prompt hi --top-p -1");
  CHECK_THAT(r.err, Catch::Contains("--top-p") && Catch::Contains("in (0, 1]"));
  r = refused(c, "generate --model in/none --prompt hi --max-new-tokens 1000000000");
  CHECK_THAT(r.err, Catch::Contains("--max-new-tokens") && Catch::Contains("in [1, 1048576]"));
  r = refused(c, "generate --model in/none --prompt hi --temperature -1");
  CHECK_THAT(r.err, Catch::Contains("--temperature"));
  r = refused(c, "generate --model in/none --prompt hi --top-k abc");
  CHECK_THAT(r.err, Catch::Contains("--top-k"));
  r = refused(c, "nosuch");
  CHECK_THAT(r.err, Catch::Contains("unknown subcommand 'nosuch'") && Catch::Contains("sft"));
  r = refused(c, "launch -n 2 -- nosuch");
  CHECK_THAT(r.err, Catch::Contains("unknown subcommand 'nosuch'") && Catch::Contains("launch"));
  r = refused(c, "launch -n 2 -- sfft in/sft.json");
  CHECK_THAT(r.err, Catch::Contains("did you mean 'sft'?"));
}

TEST_CASE("bad input: broken files name the file (and line)", "[e2e][bad_input]") {
  Case c = fresh_case("files");
  std::ofstream(c.in() + "/broken.json") << "{\n  \"steps\": 3,\n  \"batch_size\": ,\n}\n";
  auto r = refused(c, "sft in/broken.json");
  CHECK_THAT(r.err, Catch::Contains("in/broken.json (line 3"));
  {
    std::ofstream f(c.in() + "/bad_traces.jsonl");
    f << json{{"prompt", "a"}, {"completion", "b"}}.dump() << "\n" << "{\"prompt\": \"a\", \n";
  }
  r = refused(c, "sft in/sft.json data.train=in/bad_traces.jsonl");
  CHECK_THAT(r.err, Catch::Contains("in/bad_traces.jsonl:2"));
  std::ofstream(c.in() + "/tokenizer.json") << "{\"model\": 3}";
  r = refused(c, "sft in/sft.json tokenizer=in/tokenizer.json");
  CHECK_THAT(r.err, Catch::Contains("in/tokenizer.json"));
  // A checkpoint folder whose weights file is not safetensors.
  fs::create_directories(c.in() + "/bad_model");
  std::ofstream(c.in() + "/bad_model/config.json") << tiny_model_config().dump();
  std::ofstream(c.in() + "/bad_model/model.safetensors") << "not a safetensors file";
  fs::copy_file(kTokenizer, c.in() + "/bad_model/tokenizer.json");
  r = refused(c, "generate --model in/bad_model --prompt hi");
  CHECK_THAT(r.err, Catch::Contains("in/bad_model"));
  r = refused(c, "sft in/sft.json model=in/bad_model model_config=null");
  CHECK_THAT(r.err, Catch::Contains("in/bad_model"));
}

TEST_CASE("bad input: a non-finite loss stops training, names the step and the part, and saves nothing from it", "[e2e][bad_input]") {
  Case c = fresh_case("nonfinite");
  REQUIRE(fs::exists(write_nan_model(c) + "/config.json"));
  auto r = refused(c, "sft in/sft.json model_config=null model=in/nan_model");
  CHECK_THAT(r.err, Catch::Contains("sft: training stopped at step 1: loss part 'ce' = nan") && Catch::Contains("no checkpoint was written"));
  CHECK_FALSE(fs::exists(c.dir + "/run/checkpoints/step-1"));
  CHECK_FALSE(fs::exists(c.dir + "/run/final"));
  fs::remove_all(c.dir + "/run");
  // optim.skip_nonfinite=1: the first such step is skipped (no update), the second stops the run.
  r = refused(c, "sft in/sft.json model_config=null model=in/nan_model optim.skip_nonfinite=1 steps=5 save_every=0");
  CHECK_THAT(r.err, Catch::Contains("step 2") && Catch::Contains("after skipping 1 such steps"));
  // A checkpoint of non-finite weights is refused by the one function that writes checkpoints.
  fs::remove_all(c.dir + "/run");
  r = refused(c, "distill in/sft.json model_config=null model=in/nan_model distill.teacher=in/nan_model");
  CHECK_THAT(r.err, Catch::Contains("distill: training stopped at step 1"));
}

TEST_CASE("bad input: resuming under a changed config names the keys; free keys may change", "[e2e][bad_input]") {
  Case c = fresh_case("resume");
  const std::string cmd = "cd '" + c.dir + "' && RETORT_LOG=error '" + kBin + "/retort' sft in/sft.json > /dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  REQUIRE(fs::exists(c.dir + "/run/checkpoints/step-2/trainer_state.json"));
  const json saved = retort::load_json_file(c.dir + "/run/config.resolved.json");
  auto r = refused(c, "sft in/sft.json optim.lr=0.01 batch_size=2");
  CHECK_THAT(r.err, Catch::Contains("cannot resume") && Catch::Contains("optim.lr: 0.003 then, 0.01 now") &&
                        Catch::Contains("batch_size: 4 then, 2 now") && Catch::Contains("run/config.resolved.json"));
  CHECK(retort::load_json_file(c.dir + "/run/config.resolved.json") == saved);  // not rewritten
  // Keys that cannot change results may differ.
  const std::string free_cmd = "cd '" + c.dir + "' && RETORT_LOG=error '" + kBin + "/retort' sft in/sft.json runtime.threads=2 log_every=5 keep_last=1 > /dev/null 2>&1";
  CHECK(std::system(free_cmd.c_str()) == 0);
}

TEST_CASE("non-finite guard: skips up to N steps, then stops naming the step and the part", "[unit]") {
  const std::string run = kBin + "/test_runs/nonfinite_guard";
  fs::remove_all(run);
  retort::NonFiniteGuard guard("grpo", /*max_skips=*/2, run);
  const double nan = std::nan(""), inf = HUGE_VAL;
  CHECK(guard.allows_update(1, {{"policy", 0.5}, {"kl", 0.01}}, 1.0));
  CHECK_FALSE(guard.allows_update(2, {{"policy", nan}, {"kl", 0.01}}, 1.0));
  CHECK_FALSE(guard.allows_update(3, {{"policy", 0.5}}, inf));  // the gradient norm alone
  CHECK(guard.skipped() == 2);
  CHECK(guard.allows_update(4, {{"policy", 0.5}}, 1.0));
  CHECK_THROWS_WITH(guard.allows_update(9, {{"policy", 0.5}, {"kl", nan}}, nan),
                    Catch::StartsWith("grpo: training stopped at step 9: loss part 'kl' = nan, gradient norm = nan is not finite (after skipping 2 such steps)") &&
                        Catch::Contains("no checkpoint was written yet"));
}

TEST_CASE("checkpoints are never written from non-finite weights", "[train]") {
  Case c = fresh_case("nan_checkpoint");
  retort::Qwen2ForCausalLM model(retort::ModelConfig::from_json(tiny_model_config(), "test"));
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
  retort::AdamW optim(named, retort::OptimConfig{});
  const std::string run = c.dir + "/run";
  retort::save_training_checkpoint(run, 1, *model, optim, json{{"step", 1}}, "", 3);
  {
    torch::NoGradGuard ng;
    named.back().second.view(-1)[0] = HUGE_VAL;
  }
  CHECK_THROWS_WITH(retort::save_training_checkpoint(run, 2, *model, optim, json{{"step", 2}}, "", 3),
                    Catch::Contains("the weights at step 2 are not finite") && Catch::Contains(named.back().first));
  CHECK_FALSE(fs::exists(run + "/checkpoints/step-2"));
  CHECK(retort::latest_checkpoint(run).value() == run + "/checkpoints/step-1");  // the last good one stays
}
