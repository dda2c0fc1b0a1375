// Rollout benchmark: the rollout engine (rollout/engine.h: block KV cache, each prompt's KV
// stored once, continuous batching) against the previous static sampler (sample_static: a
// dense [N, P + max_new_tokens] cache per layer, the batch shrinking until its longest row
// ends) on the same work, in one run.
//
// The work: a random-weight Qwen2 of about 24M parameters, 32 prompts (16..64 tokens) x G = 8
// completions, float32 on CPU. Completion lengths are drawn from a heavy-tailed distribution
// like R1 chains: log-normal with median max_new_tokens / 4 and sigma such that about 5% reach
// max_new_tokens (ln 4 / 1.645); both samplers are forced to stop each row at its drawn length
// (SamplerOptions::forced_lengths), so that they produce the same tokens' worth of work.
// The engine runs under a KV budget of 0.35x the static sampler's dense cache (preempting when
// it runs out).
//
// Prints: tokens/s, peak KV bytes, peak RSS (VmHWM, reset between the runs through
// /proc/self/clear_refs), the share of decode steps with idle slots, and the KV bytes per token
// at Qwen2.5-1.5B's shapes.
//
//   build/bench/bench_rollout [--max-new-tokens L] [--prompts B] [--group G] [--threads N]
//                             [--only engine|static]   (one side alone, e.g. under a profiler)
#include <malloc.h>        // defines: malloc_trim
#include <sys/resource.h>  // defines: getrusage

#include <cmath>    // defines: std::log, std::exp
#include <cstdio>   // defines: std::printf
#include <cstdlib>  // defines: std::atoll
#include <fstream>  // defines: std::ifstream, std::ofstream
#include <random>   // defines: std::mt19937_64, std::lognormal_distribution
#include <string>   // defines: std::string

#include "common/platform.h"       // defines: now_seconds, cpu_count
#include "model/config.h"          // defines: ModelConfig
#include "model/transformer.h"     // defines: Qwen2ForCausalLM
#include "rollout/model_runner.h"  // defines: ModelRunner::bytes_per_token
#include "rollout/sampler.h"       // defines: sample, sample_static, EngineStats

namespace {

int64_t peak_rss_kb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atoll(line.c_str() + 6);
  return -1;
}

void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

int64_t rss_kb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  return -1;
}

struct Run {
  double seconds = 0;
  int64_t tokens = 0;
  retort::EngineStats stats;
  int64_t peak_rss_kb = 0, base_rss_kb = 0;
};

}  // namespace

int main(int argc, char** argv) {
  int64_t max_new = 256, B = 32, G = 8;
  int threads = 0;
  std::string only;  // "engine" or "static": run one side (for a profiler), print its time
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    const bool v = i + 1 < argc;
    if (a == "--max-new-tokens" && v) max_new = std::atoll(argv[++i]);
    else if (a == "--prompts" && v) B = std::atoll(argv[++i]);
    else if (a == "--group" && v) G = std::atoll(argv[++i]);
    else if (a == "--threads" && v) threads = std::atoi(argv[++i]);
    else if (a == "--only" && v) only = argv[++i];
    else {
      std::fprintf(stderr, "bench_rollout: unknown or incomplete option '%s' (see the top of bench_rollout.cpp)\n", a.c_str());
      return 2;
    }
  }
  at::set_num_threads(threads > 0 ? threads : retort::cpu_count());
  torch::manual_seed(0);
  const nlohmann::json cfg_json = {{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"}, {"vocab_size", 32000},
                                   {"hidden_size", 384}, {"intermediate_size", 1280}, {"num_hidden_layers", 6},
                                   {"num_attention_heads", 6}, {"num_key_value_heads", 2}, {"max_position_embeddings", 4096},
                                   {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0}, {"tie_word_embeddings", true},
                                   {"eos_token_id", 2}, {"torch_dtype", "float32"}};
  retort::Qwen2ForCausalLM model(retort::ModelConfig::from_json(cfg_json, "bench_rollout"));
  model->eval();
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();

  // The work: prompts and forced completion lengths.
  std::mt19937_64 rng(12345);
  std::uniform_int_distribution<int> plen(16, 64), tok(3, 31999);
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(B));
  for (auto& p : prompts) {
    p.resize(static_cast<size_t>(plen(rng)));
    for (auto& t : p) t = tok(rng);
  }
  const double sigma = std::log(4.0) / 1.645;  // P(L >= 4 * median) = P(Z >= 1.645) = 5%
  std::lognormal_distribution<double> len(std::log(max_new / 4.0), sigma);
  retort::SamplerOptions o;
  o.group_size = G;
  o.max_new_tokens = max_new;
  o.temperature = 1.0;
  o.stop_token_ids = {};
  int64_t at_max = 0, total_len = 0;
  for (int64_t i = 0; i < B * G; ++i) {
    const int64_t l = std::max<int64_t>(1, std::min<int64_t>(max_new, static_cast<int64_t>(std::lround(len(rng)))));
    o.forced_lengths.push_back(l);
    at_max += l == max_new;
    total_len += l;
    o.row_seeds.push_back(1000 + static_cast<uint64_t>(i));  // one generator per row on both sides
  }
  int64_t P = 0;
  for (const auto& p : prompts) P = std::max<int64_t>(P, static_cast<int64_t>(p.size()));
  const int64_t per_token = retort::ModelRunner::bytes_per_token(model->config(), model->dtype());
  const double dense_mb = static_cast<double>(B * G * (P + max_new) * per_token) / (1024.0 * 1024.0);

  std::printf("retort rollout benchmark: torch %d.%d, %d threads, float32 CPU\n", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR,
              at::get_num_threads());
  std::printf("model: random-weight Qwen2, %.1fM parameters (6 layers, hidden 384, 2 kv heads of 64, vocab 32000)\n", params / 1e6);
  std::printf("work: %lld prompts (16..64 tokens) x G = %lld, max_new_tokens %lld; forced lengths log-normal: median %lld, "
              "mean %.1f, %.1f%% at max_new_tokens\n",
              static_cast<long long>(B), static_cast<long long>(G), static_cast<long long>(max_new),
              static_cast<long long>(max_new / 4), static_cast<double>(total_len) / (B * G), 100.0 * at_max / (B * G));

  auto run = [&](bool engine, double budget_mb) {
    Run r;
    retort::SamplerOptions so = o;
    so.kv_cache_mb = budget_mb;
    malloc_trim(0);  // the previous run's freed heap back to the system: "above start" is this run's own
    reset_peak_rss();
    r.base_rss_kb = rss_kb();
    const double t0 = retort::now_seconds();
    auto out = engine ? retort::sample(*model, prompts, so, {}, &r.stats) : retort::sample_static(*model, prompts, so, {}, &r.stats);
    r.seconds = retort::now_seconds() - t0;
    r.peak_rss_kb = peak_rss_kb();
    for (const auto& c : out.completions) r.tokens += static_cast<int64_t>(c.size());
    return r;
  };
  const double budget = 0.35 * dense_mb;
  if (!only.empty()) {
    Run r = run(only == "engine", only == "engine" ? budget : 0);
    std::printf("%s only: %lld tokens in %.1f s, %.1f tokens/s\n", only.c_str(), static_cast<long long>(r.tokens), r.seconds,
                r.tokens / r.seconds);
    return 0;
  }
  Run st = run(false, 0);
  Run en = run(true, budget);
  if (st.tokens != en.tokens || st.tokens != total_len) {
    std::fprintf(stderr, "bench_rollout: the two samplers produced different work (%lld vs %lld tokens, expected %lld)\n",
                 static_cast<long long>(st.tokens), static_cast<long long>(en.tokens), static_cast<long long>(total_len));
    return 1;
  }
  const double mib = 1024.0 * 1024.0;
  std::printf("engine KV budget: %.1f MiB (0.35x the static dense cache of %.1f MiB); block size %lld, %lld blocks\n", budget,
              dense_mb, static_cast<long long>(en.stats.block_size), static_cast<long long>(en.stats.num_blocks));
  std::printf("%-34s %14s %14s %8s\n", "figure", "engine", "static", "ratio");
  std::printf("%-34s %14.1f %14.1f %7.2fx\n", "tokens/s", en.tokens / en.seconds, st.tokens / st.seconds,
              (en.tokens / en.seconds) / (st.tokens / st.seconds));
  std::printf("%-34s %14.1f %14.1f %7.2fx\n", "wall s", en.seconds, st.seconds, en.seconds / st.seconds);
  std::printf("%-34s %14.1f %14.1f %7.2fx\n", "peak KV MiB", en.stats.peak_kv_bytes() / mib, st.stats.peak_kv_bytes() / mib,
              static_cast<double>(en.stats.peak_kv_bytes()) / static_cast<double>(st.stats.peak_kv_bytes()));
  std::printf("%-34s %14.1f %14.1f %7.2fx\n", "peak RSS MiB (VmHWM)", en.peak_rss_kb / 1024.0, st.peak_rss_kb / 1024.0,
              static_cast<double>(en.peak_rss_kb) / static_cast<double>(st.peak_rss_kb));
  std::printf("%-34s %14.1f %14.1f %7.2fx\n", "peak RSS above start MiB", (en.peak_rss_kb - en.base_rss_kb) / 1024.0,
              (st.peak_rss_kb - st.base_rss_kb) / 1024.0,
              static_cast<double>(en.peak_rss_kb - en.base_rss_kb) / std::max<double>(1.0, static_cast<double>(st.peak_rss_kb - st.base_rss_kb)));
  std::printf("%-34s %13.1f%% %13.1f%%\n", "decode steps with idle slots", 100.0 * en.stats.idle_slot_steps / std::max<int64_t>(1, en.stats.decode_steps),
              100.0 * st.stats.idle_slot_steps / std::max<int64_t>(1, st.stats.decode_steps));
  std::printf("%-34s %14lld %14lld\n", "decode steps", static_cast<long long>(en.stats.decode_steps),
              static_cast<long long>(st.stats.decode_steps));
  std::printf("%-34s %14lld %14s\n", "prefill steps", static_cast<long long>(en.stats.prefill_steps), "1");
  std::printf("%-34s %14lld %14s\n", "preemptions", static_cast<long long>(en.stats.preemptions), "-");
  // Qwen2.5-1.5B (and R1-Distill-Qwen-1.5B): 28 layers, 2 kv heads of 128, bfloat16.
  const nlohmann::json q15 = {{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"}, {"vocab_size", 151936},
                              {"hidden_size", 1536}, {"intermediate_size", 8960}, {"num_hidden_layers", 28},
                              {"num_attention_heads", 12}, {"num_key_value_heads", 2}, {"max_position_embeddings", 131072},
                              {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0}, {"tie_word_embeddings", true}, {"torch_dtype", "bfloat16"}};
  const auto qc = retort::ModelConfig::from_json(q15, "Qwen2.5-1.5B shapes");
  const int64_t q_bytes = retort::ModelRunner::bytes_per_token(qc, torch::kBFloat16);
  std::printf("KV bytes per token at Qwen2.5-1.5B shapes (28 layers x K,V x 2 heads x 128, bfloat16): %lld (%.0f KiB); "
              "engine KV for 8 x 16 chains with a 3k-token median: about %.1f GB held vs %.1f GB reserved densely at 16k\n",
              static_cast<long long>(q_bytes), q_bytes / 1024.0, 128.0 * 3000 * q_bytes / 1e9, 128.0 * 16384 * q_bytes / 1e9);
  return 0;
}
