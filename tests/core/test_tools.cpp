// Tool calls in the rollout engine (rollout/engine.cpp, rollout/tools.h): a sequence that
// closes a call pauses, the call runs in the sandbox pool while other sequences decode, the
// observation is appended and the sequence resumes.
//
// A random tiny model does not write calls by itself: the calls are forced with
// SamplerOptions::forced_tokens (the sampled ids of a row's first positions), and the engine's
// real detection path (decode the completion, rewards::closed_tool_call) finds them. What the
// tests compare against comes from elsewhere: log-probs from one full forward pass over the
// final ids (token_logprobs, what `retort score` prints), observation bodies from Python's own
// arithmetic written out by hand, containment from the host's file system.
#include <catch2/catch.hpp>

#include <unistd.h>  // defines: getpid

#include <algorithm>   // defines: std::find
#include <filesystem>  // defines: std::filesystem
#include <fstream>     // defines: std::ofstream
#include <memory>      // defines: std::unique_ptr
#include <mutex>       // defines: std::once_flag
#include <string>      // defines: std::string

#include "common/config.h"       // defines: parse_config
#include "error_of.h"            // defines: error_of
#include "model/config.h"        // defines: ModelConfig
#include "model/transformer.h"   // defines: Qwen2ForCausalLM
#include "rewards/tool_calls.h"  // defines: find_tool_calls, render_observation
#include "rollout/logprobs.h"    // defines: token_logprobs
#include "rollout/sampler.h"     // defines: sample, SamplerOptions, EngineStats
#include "rollout/score.h"       // defines: sample_and_score, chain_entry
#include "rewards/combine.h"     // defines: rewards::RewardSet
#include "rewards/verifier.h"    // defines: rewards::builtin_registry
#include "sandbox/executor.h"    // defines: sandbox::Executor
#include "test_paths.h"          // defines: RETORT_BINARY_DIR
#include "tiny_model.h"          // defines: tiny_model_config, tiny_tokenizer_path
#include "tokenizer/tokenizer.h"  // defines: Tokenizer

namespace {

using retort::Rollout;
using retort::SamplerOptions;

retort::sandbox::Executor& tool_pool() {
  static std::unique_ptr<retort::sandbox::Executor> ex;
  static std::once_flag once;
  std::call_once(once, [] {
    retort::sandbox::ExecutorConfig cfg;
    cfg.workers = 4;
    ex = std::make_unique<retort::sandbox::Executor>(cfg);
  });
  return *ex;
}

const retort::Tokenizer& tok() {
  static const retort::Tokenizer t = retort::Tokenizer::from_file(tiny_tokenizer_path());
  return t;
}

// A random tiny Qwen2 (608 ids, the test tokenizer's 605 fit), the same weights every time.
retort::Qwen2ForCausalLMImpl& model() {
  static retort::Qwen2ForCausalLM m = [] {
    torch::manual_seed(20251206);
    nlohmann::json c = tiny_model_config();
    c["max_position_embeddings"] = 1024;
    return retort::Qwen2ForCausalLM(retort::ModelConfig::from_json(c, "test"));
  }();
  return *m;
}

std::vector<int32_t> ids(const std::string& text) { return tok().encode(text); }

retort::DecodeFn decoder() {
  return [](const std::vector<int32_t>& c) { return tok().decode(c, /*skip_special=*/false); };
}

SamplerOptions tool_options(int64_t G, int64_t max_new_tokens) {
  SamplerOptions o;
  o.group_size = G;
  o.max_new_tokens = max_new_tokens;
  o.temperature = 1.0;
  o.stop_token_ids = {*tok().token_to_id("<|im_end|>")};
  o.seed = 11;
  o.block_size = 4;
  o.tools.enabled = true;
  o.tools.format = "python";
  o.tools.max_calls = 4;
  o.tools.max_observation_tokens = 100;
  o.tools.limits.wall_s = 5;
  o.tools.limits.cpu_s = 5;
  o.executor = &tool_pool();
  o.encode = [](const std::string& text) { return tok().encode(text); };
  return o;
}

std::string py_call(const std::string& code) { return "```python\n" + code + "\n```"; }

// The log-probs of each completion by one full forward pass over [prompt | completion]:
// [N, L], kept on model-written tokens only.
torch::Tensor recomputed_logprobs(const Rollout& r, double temperature) {
  retort::LogprobOptions lo;
  lo.temperature = temperature;
  auto lp = retort::token_logprobs(model(), r.tokens, r.attention_mask, lo);  // [N, P+L-1]
  return lp.narrow(1, r.prompt_length - 1, r.completion_mask.size(1)) * r.completion_mask.to(torch::kFloat);
}

// Each row's observation tokens are exactly its records' ranges; they are masked out of the
// completion mask and carry no log-prob; the decoded range is the rendered observation.
void check_observation_masks(const Rollout& r, retort::rewards::ToolFormat f) {
  const int64_t N = r.completion_mask.size(0), L = r.completion_mask.size(1), P = r.prompt_length;
  auto cm = r.completion_mask.to(torch::kCPU), om = r.observation_mask.to(torch::kCPU);
  auto am = r.attention_mask.to(torch::kCPU).narrow(1, P, L), lp = r.logprobs.to(torch::kCPU);
  CHECK(torch::equal(cm + om, am));  // every completion token is either written or observed
  CHECK((cm * om).sum().item<int64_t>() == 0);
  for (int64_t i = 0; i < N; ++i) {
    INFO("row " << i);
    const auto& calls = r.tool_calls[static_cast<size_t>(i)];
    const auto& comp = r.completions[static_cast<size_t>(i)];
    std::vector<int64_t> expected(static_cast<size_t>(L), 0);
    int64_t total = 0;
    for (const auto& c : calls) {
      for (int64_t j = c.obs_start; j < c.obs_start + c.obs_tokens; ++j) expected[static_cast<size_t>(j)] = 1;
      total += c.obs_tokens;
      std::vector<int32_t> obs(comp.begin() + c.obs_start, comp.begin() + c.obs_start + c.obs_tokens);
      const std::string rendered = retort::rewards::render_observation(f, c.observation);
      if (c.obs_start + c.obs_tokens < static_cast<int64_t>(comp.size()) || c.status == "budget")
        CHECK(tok().decode(obs) == rendered);
      else
        CHECK(rendered.rfind(tok().decode(obs), 0) == 0);  // cut by max_new_tokens: a prefix
    }
    CHECK(om[i].sum().item<int64_t>() == total);
    for (int64_t j = 0; j < L; ++j) {
      CHECK(om[i][j].item<int64_t>() == expected[static_cast<size_t>(j)]);
      if (expected[static_cast<size_t>(j)]) CHECK(lp[i][j].item<float>() == 0.0f);
    }
  }
}

}  // namespace

TEST_CASE("tool calls: observations appended, masked, and independent of the KV budget and batch", "[sandbox]") {
  const std::vector<std::vector<int32_t>> prompts = {ids("Compute 17*23.\n"), ids("What is 2 to the 10?\n"),
                                                    ids("Divide 1 by 0.\n")};
  SamplerOptions o = tool_options(/*G=*/2, /*max_new_tokens=*/180);
  // Row: 0 one call; 1 two calls, the second printing 301 digits (one token each: cut at 100 tokens);
  // 2 none; 3 a call; 4 a call that fails; 5 none.
  const std::string c_mul = py_call("print(17*23)"), c_long = py_call("print(10**300)"),
                    c_pow = py_call("print(2**10)"), c_div = py_call("print(1/0)");
  o.forced_tokens = {ids("Let me check.\n" + c_mul), ids(c_mul), {}, ids(c_pow), ids(c_div), {}};
  const auto second = ids("\n" + c_long);
  o.forced_tokens[1].insert(o.forced_tokens[1].end(), second.begin(), second.end());
  retort::EngineStats ref_st;
  const Rollout ref = retort::sample(model(), prompts, o, decoder(), &ref_st);
  CHECK(ref_st.tool_calls == 5);

  // What each call printed, as Python computes it (written out here, not read from the engine).
  REQUIRE(ref.tool_calls[0].size() == 1);
  CHECK(ref.tool_calls[0][0].code == "print(17*23)");
  CHECK(ref.tool_calls[0][0].status == "ok");
  CHECK(ref.tool_calls[0][0].observation == "391");
  CHECK_FALSE(ref.tool_calls[0][0].truncated);
  REQUIRE(ref.tool_calls[1].size() == 2);
  CHECK(ref.tool_calls[1][0].observation == "391");
  CHECK(ref.tool_calls[1][1].truncated);
  CHECK(ref.tool_calls[1][1].obs_tokens <= 100);
  CHECK(ref.tool_calls[1][1].observation.rfind("1000000000", 0) == 0);
  CHECK(ref.tool_calls[1][1].observation.size() < 100);
  CHECK(ref.tool_calls[1][1].observation.substr(ref.tool_calls[1][1].observation.size() - 12) == "\n[truncated]");
  CHECK(ref.tool_calls[2].empty());
  REQUIRE(ref.tool_calls[3].size() == 1);
  CHECK(ref.tool_calls[3][0].observation == "1024");
  REQUIRE(ref.tool_calls[4].size() == 1);
  CHECK(ref.tool_calls[4][0].status == "runtime_error");
  INFO(ref.tool_calls[4][0].observation);
  CHECK(ref.tool_calls[4][0].observation.find("ZeroDivisionError") != std::string::npos);
  CHECK(ref.tool_calls[4][0].observation.find("[runtime_error: exit status 1]") != std::string::npos);
  CHECK(ref.tool_calls[5].empty());

  // The chain's text reads back the same calls (the verifiers and the audit see only the text).
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    INFO("row " << i << ": " << ref.texts[i]);
    auto spans = retort::rewards::find_tool_calls(ref.texts[i], retort::rewards::ToolFormat::Python);
    REQUIRE(spans.size() == ref.tool_calls[i].size());
    for (size_t k = 0; k < spans.size(); ++k) {
      CHECK(spans[k].code == ref.tool_calls[i][k].code);
      CHECK(spans[k].answered);
      CHECK(spans[k].status == ref.tool_calls[i][k].status);
      CHECK(spans[k].truncated == ref.tool_calls[i][k].truncated);
    }
  }
  // The sequences went on after their observations (they resumed).
  CHECK(static_cast<int64_t>(ref.completions[0].size()) > ref.tool_calls[0][0].obs_start + ref.tool_calls[0][0].obs_tokens);

  check_observation_masks(ref, retort::rewards::ToolFormat::Python);
  // Paused and resumed: the log-probs of the model-written tokens equal one forward pass over the final ids.
  CHECK((recomputed_logprobs(ref, o.temperature) - ref.logprobs).abs().max().item<double>() < 1e-4);

  auto same_as_ref = [&](const Rollout& r) {
    REQUIRE(r.completions.size() == ref.completions.size());
    for (size_t i = 0; i < r.completions.size(); ++i) {
      INFO("row " << i);
      CHECK(r.completions[i] == ref.completions[i]);
      CHECK(r.truncated[i] == ref.truncated[i]);
      CHECK(r.tool_calls[i].size() == ref.tool_calls[i].size());
    }
    CHECK(torch::equal(r.observation_mask, ref.observation_mask));
    CHECK((r.logprobs - ref.logprobs).abs().max().item<double>() < 1e-5);
    CHECK((recomputed_logprobs(r, o.temperature) - r.logprobs).abs().max().item<double>() < 1e-4);
  };
  SECTION("a KV budget so small that running and paused sequences give their blocks back") {
    SamplerOptions s = o;
    // 256 bytes a position (2 layers x 2 kv heads x 8 dims x K,V x 4 bytes), 1024 a block of
    // 4: a budget of one block more than the longest sequence needs.
    size_t longest = 0;
    for (const auto& p : prompts) longest = std::max(longest, p.size());
    const int64_t one = (static_cast<int64_t>(longest) + o.max_new_tokens - 1 + 3) / 4;
    s.kv_cache_mb = (one + 1.0) * 1024 / (1024 * 1024);
    retort::EngineStats st;
    same_as_ref(retort::sample(model(), prompts, s, decoder(), &st));
    CHECK(st.num_blocks == one + 1);
    CHECK(st.preemptions > 0);
  }
  SECTION("one sequence at a time, prefill in chunks of 5 positions") {
    SamplerOptions s = o;
    s.max_num_seqs = 1;
    s.max_prefill_tokens = 5;
    same_as_ref(retort::sample(model(), prompts, s, decoder()));
  }
  SECTION("two sequences at a time") {
    SamplerOptions s = o;
    s.max_num_seqs = 2;
    same_as_ref(retort::sample(model(), prompts, s, decoder()));
  }
}

TEST_CASE("tool calls: the qwen format pauses on </tool_call> and answers in a tool_response turn", "[sandbox]") {
  SamplerOptions o = tool_options(/*G=*/1, /*max_new_tokens=*/250);
  o.tools.format = "qwen";
  o.forced_tokens = {ids("<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(6*7)\"}}\n</tool_call>"),
                     ids("<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": print}}\n</tool_call>")};
  const Rollout r = retort::sample(model(), {ids("Six times seven?\n"), ids("Broken call.\n")}, o, decoder());
  REQUIRE(r.tool_calls[0].size() == 1);
  CHECK(r.tool_calls[0][0].code == "print(6*7)");
  CHECK(r.tool_calls[0][0].observation == "42");
  // The observation holds <|im_end|>, a stop id: appended, not sampled, so the chain goes on.
  CHECK(static_cast<int64_t>(r.completions[0].size()) > r.tool_calls[0][0].obs_start + r.tool_calls[0][0].obs_tokens);
  CHECK(r.texts[0].find("</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n"
                        "<|im_start|>assistant\n") != std::string::npos);
  // A malformed call is answered without running anything.
  REQUIRE(r.tool_calls[1].size() == 1);
  CHECK(r.tool_calls[1][0].status == "runtime_error");
  CHECK(r.tool_calls[1][0].wall_s == 0);
  check_observation_masks(r, retort::rewards::ToolFormat::Qwen);
  CHECK((recomputed_logprobs(r, o.temperature) - r.logprobs).abs().max().item<double>() < 1e-4);
}

TEST_CASE("tool calls: hostile programs are contained and come back as observations", "[sandbox]") {
  namespace fs = std::filesystem;
  const std::string dir = std::string(RETORT_BINARY_DIR) + "/tool_host_" + std::to_string(getpid());
  fs::create_directories(dir);
  const std::string secret_path = dir + "/secret.txt", written_path = dir + "/written.txt";
  const std::string secret = "s3cr3t-" + std::to_string(getpid());
  std::ofstream(secret_path) << secret;

  SamplerOptions o = tool_options(/*G=*/1, /*max_new_tokens=*/400);
  o.tools.max_observation_tokens = 120;
  o.tools.limits.wall_s = 3;
  o.tools.limits.max_processes = 32;
  const std::vector<std::string> programs = {
      "import os\nwhile True:\n    os.fork()",
      "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n    print('CONNECTED')\n"
      "except OSError as e:\n    print('blocked', type(e).__name__)",
      "open('" + written_path + "', 'w').write('x')\nprint('WROTE')",
      "for p in ['/etc/shadow', '" + secret_path + "']:\n    try:\n        print('READ', open(p).read())\n"
      "    except OSError as e:\n        print('denied', p)",
  };
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& p : programs) {
    prompts.push_back(ids("Try this.\n"));
    o.forced_tokens.push_back(ids(py_call(p)));
    REQUIRE(o.forced_tokens.back().size() < 250);
  }
  const Rollout r = retort::sample(model(), prompts, o, decoder());
  for (size_t i = 0; i < programs.size(); ++i) {
    INFO("program " << i << ": " << programs[i]);
    REQUIRE(r.tool_calls[i].size() == 1);
    INFO("observation: " << r.tool_calls[i][0].observation);
    CHECK(r.tool_calls[i][0].status != "sandbox_error");
    CHECK(r.tool_calls[i][0].obs_tokens > 0);
  }
  // fork bomb: stopped by the process limit or the clock, not by the host.
  CHECK(r.tool_calls[0][0].status != "ok");
  // network: only loopback exists.
  CHECK(r.tool_calls[1][0].observation.find("blocked") != std::string::npos);
  CHECK(r.tool_calls[1][0].observation.find("CONNECTED") == std::string::npos);
  // writing outside its directory: the host's file system is not there.
  CHECK(r.tool_calls[2][0].status == "runtime_error");
  CHECK(r.tool_calls[2][0].observation.find("WROTE") == std::string::npos);
  CHECK_FALSE(fs::exists(written_path));
  // reading host files: denied, the secret never reaches the chain.
  CHECK(r.tool_calls[3][0].observation.find("denied /etc/shadow") != std::string::npos);
  CHECK(r.tool_calls[3][0].observation.find("denied " + secret_path) != std::string::npos);
  CHECK(r.texts[3].find(secret) == std::string::npos);
  check_observation_masks(r, retort::rewards::ToolFormat::Python);
  fs::remove_all(dir);
}

TEST_CASE("tool calls: a hanging call hits its wall limit while the other sequences decode", "[sandbox]") {
  SamplerOptions o = tool_options(/*G=*/3, /*max_new_tokens=*/150);
  o.stop_token_ids = {};  // every row runs to max_new_tokens
  o.tools.limits.wall_s = 1.5;
  o.forced_tokens = {ids(py_call("while True: pass")), {}, {}};
  std::vector<int64_t> finish_order;
  o.on_finished = [&](int64_t row, const std::vector<int32_t>&) { finish_order.push_back(row); };
  retort::EngineStats st;
  const Rollout r = retort::sample(model(), {ids("Loop.\n")}, o, decoder(), &st);
  REQUIRE(r.tool_calls[0].size() == 1);
  CHECK(r.tool_calls[0][0].status == "time_limit");
  CHECK(r.tool_calls[0][0].observation.find("[time_limit") != std::string::npos);
  CHECK(r.tool_calls[0][0].wall_s >= 1.4);
  // The other rows decoded all their tokens while the call ran, and finished first.
  REQUIRE(finish_order.size() == 3);
  CHECK(finish_order.back() == 0);
  CHECK(st.decode_steps_with_paused >= 150 - static_cast<int64_t>(o.forced_tokens[0].size()));
  CHECK(st.tool_wait_s > 0.5);  // then only the paused row was left: the loop waited for it
  CHECK(r.completions[0].size() == 150);  // and it resumed after its observation
  CHECK(r.tool_calls[0][0].obs_start + r.tool_calls[0][0].obs_tokens < 150);
  check_observation_masks(r, retort::rewards::ToolFormat::Python);
}

TEST_CASE("tool calls: a chain over its call budget or its tool time is stopped cleanly", "[sandbox]") {
  SECTION("calls") {
    SamplerOptions o = tool_options(/*G=*/1, /*max_new_tokens=*/200);
    o.tools.max_calls = 2;
    auto three = ids(py_call("print(1)"));
    for (const char* c : {"print(2)", "print(3)"}) {
      auto more = ids("\n" + py_call(c));
      three.insert(three.end(), more.begin(), more.end());
    }
    o.forced_tokens = {three};
    const Rollout r = retort::sample(model(), {ids("Count.\n")}, o, decoder());
    // The first two run, the third is answered "budget" and ends the chain.
    REQUIRE(r.tool_calls[0].size() == 3);
    CHECK(r.tool_calls[0][0].observation == "1");
    CHECK(r.tool_calls[0][1].observation == "2");
    CHECK(r.tool_calls[0][2].status == "budget");
    CHECK(r.tool_calls[0][2].code == "print(3)");
    CHECK(r.tool_calls[0][2].observation == "[budget: the chain has used its 2 tool calls]");
    CHECK_FALSE(r.truncated[0]);
    CHECK(static_cast<int64_t>(r.completions[0].size()) == r.tool_calls[0][2].obs_start + r.tool_calls[0][2].obs_tokens);
    CHECK(r.completion_mask[0].sum().item<int64_t>() == static_cast<int64_t>(three.size()));  // nothing sampled after it
    const std::string tail = "```output\n[budget: the chain has used its 2 tool calls]\n```\n";
    REQUIRE(r.texts[0].size() > tail.size());
    CHECK(r.texts[0].substr(r.texts[0].size() - tail.size()) == tail);
    check_observation_masks(r, retort::rewards::ToolFormat::Python);
  }
  SECTION("tool time") {
    SamplerOptions o = tool_options(/*G=*/1, /*max_new_tokens=*/200);
    o.tools.max_tool_time_s = 0.6;
    auto slow = ids(py_call("import time\ntime.sleep(5)"));
    auto after = ids("\n" + py_call("print(4)"));
    slow.insert(slow.end(), after.begin(), after.end());
    o.forced_tokens = {slow};
    const Rollout r = retort::sample(model(), {ids("Sleep.\n")}, o, decoder());
    // The sleeping call is cut at the 0.6 s the chain had; the next one is over budget.
    REQUIRE(r.tool_calls[0].size() == 2);
    CHECK(r.tool_calls[0][0].status == "time_limit");
    CHECK(r.tool_calls[0][0].wall_s < 1.5);
    CHECK(r.tool_calls[0][1].status == "budget");
    CHECK(r.tool_calls[0][1].observation == "[budget: the chain has used its 0.6 s of tool time]");
    CHECK_FALSE(r.truncated[0]);
    check_observation_masks(r, retort::rewards::ToolFormat::Python);
  }
}

TEST_CASE("tool calls: sample_and_score grades the whole chain and chain_entry records the calls", "[sandbox]") {
  retort::PromptRecord rec;
  rec.id = "mul";
  rec.kind = "math";
  rec.gold = "391";
  rec.text = "Compute 17*23.\n";
  rec.row = std::make_shared<const nlohmann::json>(nlohmann::json{{"problem", "Compute 17*23."}, {"answer", "391"}});
  retort::rewards::RewardsConfig rc;
  rc.verifiers.push_back(retort::rewards::VerifierSpec{"math", 1.0, nlohmann::json::object()});
  rc.sandbox.workers = 2;
  retort::rewards::RewardSet rewards(rc, retort::rewards::builtin_registry());

  SamplerOptions o = tool_options(/*G=*/2, /*max_new_tokens=*/200);
  o.executor = nullptr;  // sample_and_score uses the reward set's pool and the tokenizer
  o.encode = nullptr;
  auto forced = [&](const std::string& answer) {
    auto f = ids("<think>Multiply.\n" + py_call("print(17*23)"));
    auto rest = ids("So the product is " + answer + ".</think>\\boxed{" + answer + "}");
    f.insert(f.end(), rest.begin(), rest.end());
    f.push_back(*tok().token_to_id("<|im_end|>"));
    return f;
  };
  o.forced_tokens = {forced("391"), forced("390")};
  const retort::ScoredRollout s = retort::sample_and_score(model(), {ids(rec.text)}, {&rec}, o, rewards, tok());
  // The verifier read the chain with its observation, and the answer after it.
  CHECK(s.texts[0].find("```python\nprint(17*23)\n```\n```output\n391\n```\nSo the product is 391.</think>\\boxed{391}") !=
        std::string::npos);
  CHECK(s.table.passed[0] == 1);
  CHECK(s.table.passed[1] == 0);
  for (int64_t row = 0; row < 2; ++row) {
    const retort::ChainEntry e = retort::chain_entry(rec, s, row);
    REQUIRE(e.tool_calls.size() == 1);
    CHECK(e.tool_calls[0]["code"] == "print(17*23)");
    CHECK(e.tool_calls[0]["observation"] == "391");
    CHECK(e.tool_calls[0]["status"] == "ok");
    CHECK(retort::chain_line(e)["tool_calls"] == e.tool_calls);
    CHECK(e.answer.find("\\boxed{") != std::string::npos);
  }
  check_observation_masks(s.rollout, retort::rewards::ToolFormat::Python);
}

TEST_CASE("tool settings: the tools config section and its ranges", "[unit]") {
  const auto t = retort::parse_config<retort::ToolOptions>(
      nlohmann::json{{"enabled", true}, {"format", "qwen"}, {"max_calls", 2}, {"limits", {{"wall_s", 2.5}}}}, "cfg.json", "tools");
  CHECK(t.enabled);
  CHECK(t.tool_format() == retort::rewards::ToolFormat::Qwen);
  CHECK(t.max_calls == 2);
  CHECK(t.limits.wall_s == 2.5);
  CHECK(t.limits.memory_mb == 256);  // the tool default, not the sandbox's test-running one
  struct Bad {
    nlohmann::json doc;
    const char* key;
    const char* value;
  };
  const Bad bad[] = {
      {{{"format", "hermes"}}, "tools.format", "hermes"},
      {{{"max_calls", -1}}, "tools.max_calls", "-1"},
      {{{"max_observation_tokens", 8}}, "tools.max_observation_tokens", "8"},
      {{{"max_tool_time_s", 0}}, "tools.max_tool_time_s", "0"},
      {{{"limits", {{"memory_mb", 1}}}}, "memory_mb", "1"},
      {{{"max_call", 3}}, "max_call", "max_call"},
  };
  for (const auto& b : bad) {
    const std::string msg = error_of([&] { retort::parse_config<retort::ToolOptions>(b.doc, "cfg.json", "tools"); });
    INFO(b.doc.dump() << " -> " << msg);
    CHECK(msg.find(b.key) != std::string::npos);
    CHECK(msg.find(b.value) != std::string::npos);
  }
}
