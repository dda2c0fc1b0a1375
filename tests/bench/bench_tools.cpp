// Tool-call benchmark: what pausing a sequence for its call (rollout/engine.cpp) saves against
// running each call in line, in one run.
//
// The work: a random-weight tiny Qwen2 (the test model shape), B prompts x G completions of
// max_new_tokens each (no stop tokens), every row forced (SamplerOptions::forced_tokens) to
// open with one python call that sleeps `--sleep` seconds and prints a number; the engine
// detects the call, pauses the row, runs the call in a sandbox pool of `--workers` workers,
// and resumes it with the observation.
//
// Compared, on the same machine and pool:
//   engine  the rollout with tools: calls run while other rows decode, several at a time
//   inline  what a sampler that stops the batch for each call would take: the same rollout
//           with tools off (same tokens' worth of decoding) plus each call run alone, one
//           after another, through the same pool
//   rounds  a sampler that stops the whole batch until every pending call of the round has
//           answered (all calls submitted at once): the same decoding plus the calls run
//           together. Here every row calls at the same position, so one round holds them all:
//           the best case for rounds (rows that call at different times need several rounds,
//           and each round waits for its slowest call while no row decodes).
// Prints both wall times, the calls' summed wall time, and the engine's decode steps taken
// while some row waited on its call.
//
//   build/bench/bench_tools [--prompts B] [--group G] [--max-new-tokens L] [--sleep S] [--workers W]
#include <cstdio>   // defines: std::printf
#include <cstdlib>  // defines: std::atof, std::atoll
#include <future>   // defines: std::future
#include <string>   // defines: std::string

#include "common/platform.h"      // defines: now_seconds
#include "model/config.h"         // defines: ModelConfig
#include "model/transformer.h"    // defines: Qwen2ForCausalLM
#include "rollout/sampler.h"      // defines: sample, SamplerOptions, EngineStats
#include "sandbox/executor.h"     // defines: sandbox::Executor
#include "tokenizer/tokenizer.h"  // defines: Tokenizer

int main(int argc, char** argv) {
  int64_t B = 4, G = 4, L = 128, workers = 4;
  double sleep_s = 0.3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--prompts") B = std::atoll(argv[i + 1]);
    else if (k == "--group") G = std::atoll(argv[i + 1]);
    else if (k == "--max-new-tokens") L = std::atoll(argv[i + 1]);
    else if (k == "--sleep") sleep_s = std::atof(argv[i + 1]);
    else if (k == "--workers") workers = std::atoll(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  torch::manual_seed(0);
  torch::set_num_threads(1);
  const auto tok = retort::Tokenizer::from_file(std::string(RETORT_SOURCE_DIR) + "/tests/fixtures/tokenizer/trained.tokenizer.json");
  nlohmann::json mc = {{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"}, {"vocab_size", 608},
                       {"hidden_size", 32}, {"intermediate_size", 64}, {"num_hidden_layers", 2},
                       {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"max_position_embeddings", 4096},
                       {"rope_theta", 10000.0}, {"rms_norm_eps", 1e-6}, {"tie_word_embeddings", true}};
  retort::Qwen2ForCausalLM model(retort::ModelConfig::from_json(mc, "bench"));

  retort::sandbox::ExecutorConfig ec;
  ec.workers = static_cast<int>(workers);
  retort::sandbox::Executor pool(ec);

  char code[128];
  std::snprintf(code, sizeof code, "import time\ntime.sleep(%g)\nprint(42)", sleep_s);
  const std::string call = std::string("```python\n") + code + "\n```";
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t b = 0; b < B; ++b) prompts.push_back(tok.encode("Problem " + std::to_string(b) + ": compute.\n"));
  retort::SamplerOptions o;
  o.group_size = G;
  o.max_new_tokens = L;
  o.seed = 1;
  o.forced_tokens.assign(static_cast<size_t>(B * G), tok.encode(call));
  o.tools.enabled = true;
  o.tools.limits.wall_s = sleep_s + 10;
  o.executor = &pool;
  o.encode = [&tok](const std::string& t) { return tok.encode(t); };
  const retort::DecodeFn decode = [&tok](const std::vector<int32_t>& ids) { return tok.decode(ids); };

  // Warm the pool and the allocator once.
  pool.submit(retort::sandbox::Job{"python", "print(1)", "", {}, o.tools.limits}).get();

  // engine: tools on.
  retort::EngineStats st;
  double t0 = retort::now_seconds();
  retort::Rollout r = retort::sample(*model, prompts, o, decode, &st);
  const double engine_s = retort::now_seconds() - t0;
  int64_t calls = 0, ok = 0;
  double call_wall = 0;
  for (const auto& row : r.tool_calls)
    for (const auto& c : row) ++calls, ok += c.status == "ok", call_wall += c.wall_s;

  // inline: the same decoding without tools, then each call alone.
  retort::SamplerOptions plain = o;
  plain.tools.enabled = false;
  t0 = retort::now_seconds();
  retort::sample(*model, prompts, plain, decode);
  const double decode_s = retort::now_seconds() - t0;
  t0 = retort::now_seconds();
  for (int64_t i = 0; i < calls; ++i) pool.submit(retort::sandbox::Job{"python", code, "", {}, o.tools.limits}).get();
  const double serial_calls_s = retort::now_seconds() - t0;
  const double inline_s = decode_s + serial_calls_s;
  t0 = retort::now_seconds();
  {
    std::vector<std::future<retort::sandbox::Result>> all;
    for (int64_t i = 0; i < calls; ++i) all.push_back(pool.submit(retort::sandbox::Job{"python", code, "", {}, o.tools.limits}));
    for (auto& f : all) f.get();
  }
  const double parallel_calls_s = retort::now_seconds() - t0;
  const double rounds_s = decode_s + parallel_calls_s;

  std::printf("bench_tools: %lld prompts x %lld completions, %lld tokens each, one call per row sleeping %.2f s, %lld sandbox workers\n",
              static_cast<long long>(B), static_cast<long long>(G), static_cast<long long>(L), sleep_s,
              static_cast<long long>(workers));
  std::printf("  calls run %lld (%lld ok), summed call wall time %.2f s\n", static_cast<long long>(calls),
              static_cast<long long>(ok), call_wall);
  std::printf("  engine (pause, run while others decode): %.2f s; decode steps with a paused row %lld of %lld; waited on calls %.2f s\n",
              engine_s, static_cast<long long>(st.decode_steps_with_paused), static_cast<long long>(st.decode_steps),
              st.tool_wait_s);
  std::printf("  inline (decode %.2f s + each call alone %.2f s): %.2f s\n", decode_s, serial_calls_s, inline_s);
  std::printf("  rounds (decode %.2f s + the calls together %.2f s): %.2f s\n", decode_s, parallel_calls_s, rounds_s);
  std::printf("  engine / inline: %.2fx the time; engine / rounds: %.2fx\n", engine_s / inline_s, engine_s / rounds_s);
  return 0;
}
