// Model benchmark: decode tokens/s (with and without the KV cache) at several batch sizes
// and training-step tokens/s, for a ~10M and a ~100M-parameter Qwen2 configuration, side by
// side with an eager Python loop of the same model and weights (tests/bench/bench_model.py
// on python3-torch, run as a subprocess), plus the machine's matrix-multiply peak measured
// with torch::mm and the share of it that decode reaches.
//
//   build/bench/bench_model [--quick] [--threads N] [--reps N]
//   build/bench/bench_model --model DIR [--device cuda] [--dtype bfloat16] [--batches 1,64,256]
//                           [--prompt 8] [--cache-steps 128] [--reps 3]
//
// The second form measures only decode tokens/s (KV cache, greedy, prefill not timed) of the
// checkpoint in DIR on the given device, and prints one JSON object
// {"device", "dtype", "prompt", "steps", "decode_cache": {"B": tokens/s}} (scripts/gpu_check.py
// reads it to set retort next to transformers' generate on a GPU).
//
// What the first form deliberately is not: a GPU benchmark (it runs on the CPU it was built for).
#include <algorithm>   // defines: std::max, std::min
#include <cstdio>      // defines: popen, std::printf
#include <filesystem>  // defines: std::filesystem
#include <string>      // defines: std::string

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "common/platform.h"   // defines: now_seconds, cpu_count
#include "common/torch_pch.h"  // defines: torch::mm
#include "model/checkpoint.h"  // defines: save_model
#include "model/transformer.h" // defines: Qwen2ForCausalLM
#include "rollout/logprobs.h"  // defines: token_logprobs

namespace fs = std::filesystem;
using json = nlohmann::json;
using retort::ModelConfig;

namespace {

struct Setup {
  int threads = 0;
  int64_t prompt = 8;
  int64_t cache_steps = 8;
  int64_t nocache_steps = 4;
  std::vector<int64_t> batches = {1, 16, 64, 256};
  int64_t train_batch = 4, train_seq = 128, train_steps = 3;
  int reps = 3;  // decode measurements: best of this many runs (both sides)
};

ModelConfig make_config(int64_t V, int64_t C, int64_t L, int64_t H, int64_t Hkv, int64_t I) {
  ModelConfig c;
  c.vocab_size = V;
  c.hidden_size = C;
  c.num_hidden_layers = L;
  c.num_attention_heads = H;
  c.num_key_value_heads = Hkv;
  c.head_dim = C / H;
  c.intermediate_size = I;
  c.tie_word_embeddings = true;
  c.rope_theta = 1e6;
  c.max_position_embeddings = 4096;
  c.eos_token_ids = {1};
  return c;
}

// The same deterministic prompts as bench_model.py.
torch::Tensor prompt_ids(int64_t B, int64_t P, int64_t V) {
  return ((torch::arange(B * P, torch::kLong) * 7919 + 13) % V).view({B, P});
}

double gemm_peak_gflops() {
  const int64_t n = 1024;
  auto a = torch::randn({n, n}), b = torch::randn({n, n});
  auto c = torch::mm(a, b);  // warm-up
  double best = 0;
  for (int rep = 0; rep < 20; ++rep) {  // best of many short runs: the machine is shared
    double t0 = retort::now_seconds();
    c = torch::mm(a, b);
    double dt = retort::now_seconds() - t0;
    best = std::max(best, 2.0 * n * n * n / dt / 1e9);
  }
  return best;
}

// Decode tokens/s: prefill (untimed), then `steps` single-token steps with greedy choice.
double decode_tps(retort::Qwen2ForCausalLMImpl& m, int64_t B, int64_t P, int64_t steps, bool use_cache) {
  torch::NoGradGuard ng;
  const auto& cfg = m.config();
  auto ids = prompt_ids(B, P, cfg.vocab_size).to(m.device());
  const bool cuda = m.device().is_cuda();
  if (use_cache) {
    auto cache = retort::KVCache::allocate(cfg, B, P + steps + 1, m.dtype(), m.device());
    retort::ForwardOptions fo;
    fo.cache = &cache;
    fo.last_logits_only = true;
    auto next = m.forward(ids, {}, fo).logits.select(1, 0).argmax(-1);  // [B]
    if (cuda) torch::cuda::synchronize();  // sync point: the prefill is not timed
    double t0 = retort::now_seconds();
    for (int64_t s = 0; s < steps; ++s) next = m.forward(next.unsqueeze(1), {}, fo).logits.select(1, 0).argmax(-1);
    if (cuda) torch::cuda::synchronize();  // sync point
    return B * steps / (retort::now_seconds() - t0);
  }
  retort::ForwardOptions fo;
  fo.last_logits_only = true;
  auto seq = ids;
  double t0 = retort::now_seconds();
  for (int64_t s = 0; s < steps; ++s) {
    auto next = m.forward(seq, {}, fo).logits.select(1, 0).argmax(-1);
    seq = torch::cat({seq, next.unsqueeze(1)}, 1);
  }
  if (cuda) torch::cuda::synchronize();  // sync point
  return B * steps / (retort::now_seconds() - t0);
}

double train_tps(const ModelConfig& cfg, const std::string& dir, const Setup& s) {
  auto m = retort::load_model(dir);
  m->train();
  torch::optim::AdamW opt(m->parameters(), torch::optim::AdamWOptions(1e-4));
  auto ids = prompt_ids(s.train_batch, s.train_seq, cfg.vocab_size);
  auto step = [&] {
    auto loss = -retort::token_logprobs(*m, ids, {}).mean();
    opt.zero_grad();
    loss.backward();
    opt.step();
  };
  step();  // warm-up
  double best = 1e30;  // the least disturbed step
  for (int64_t i = 0; i < s.train_steps; ++i) {
    double t0 = retort::now_seconds();
    step();
    best = std::min(best, retort::now_seconds() - t0);
  }
  return s.train_batch * s.train_seq / best;
}

std::string load_average() {
  FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return "?";
  char buf[128] = {0};
  size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  std::string r(buf, n);
  while (!r.empty() && r.back() == '\n') r.pop_back();
  return r;
}

std::vector<int64_t> split_ints(const std::string& s) {
  std::vector<int64_t> r;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    if (j > i) r.push_back(std::stoll(s.substr(i, j - i)));
    i = j + 1;
  }
  return r;
}

std::string join(const std::vector<int64_t>& v) {
  std::string r;
  for (size_t i = 0; i < v.size(); ++i) r += (i ? "," : "") + std::to_string(v[i]);
  return r;
}

json run_python(const std::string& dir, const Setup& s, const std::vector<int64_t>& nocache_batches) {
  const std::string script = std::string(RETORT_SOURCE_DIR) + "/tests/bench/bench_model.py";
  const std::string cmd = "/usr/bin/python3 " + script + " --model " + dir + " --threads " + std::to_string(s.threads) +
                          " --prompt " + std::to_string(s.prompt) + " --cache-steps " + std::to_string(s.cache_steps) +
                          " --nocache-steps " + std::to_string(s.nocache_steps) + " --batches " + join(s.batches) +
                          " --nocache-batches " + join(nocache_batches) + " --train-batch " +
                          std::to_string(s.train_batch) + " --train-seq " + std::to_string(s.train_seq) +
                          " --train-steps " + std::to_string(s.train_steps);
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return json();
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  if (rc != 0) {
    std::fprintf(stderr, "python side failed (%d): %s\n", rc, cmd.c_str());
    return json();
  }
  return json::parse(out, nullptr, false);
}

// Matrix-multiply FLOPs of `tokens` positions through the layers with `S` keys each (2 per
// weight, plus q.k and p.v), and of one position through the LM head.
double flops_layers(const ModelConfig& c, double tokens, double S) {
  const double layer = c.hidden_size * (c.q_size() + 2.0 * c.kv_size()) + c.q_size() * c.hidden_size +
                       3.0 * c.hidden_size * c.intermediate_size;
  return tokens * (2.0 * c.num_hidden_layers * layer + 4.0 * c.num_hidden_layers * S * c.q_size());
}
double flops_head(const ModelConfig& c) { return 2.0 * c.vocab_size * c.hidden_size; }

// Best of `reps` runs of f() (tokens/s): the machine is shared, the best run is the least disturbed.
template <class F>
double best_of(int reps, F f) {
  double best = 0;
  for (int i = 0; i < reps; ++i) best = std::max(best, f());
  return best;
}

}  // namespace

// The --model form: decode tokens/s of one checkpoint on one device; one JSON object on stdout.
int decode_only(const std::string& dir, const std::string& device, const std::string& dtype, const Setup& s) {
  retort::LoadOptions lo;
  lo.device = device;
  lo.dtype = dtype;
  auto m = retort::load_model(dir, lo);
  m->eval();
  json out = {{"device", device}, {"dtype", retort::dtype_name(m->dtype())}, {"prompt", s.prompt},
              {"steps", s.cache_steps}, {"reps", s.reps}, {"threads", at::get_num_threads()}, {"decode_cache", json::object()}};
  for (int64_t b : s.batches) {
    decode_tps(*m, b, s.prompt, 2, true);  // warm-up (kernels, allocator)
    out["decode_cache"][std::to_string(b)] = best_of(s.reps, [&] { return decode_tps(*m, b, s.prompt, s.cache_steps, true); });
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

int main(int argc, char** argv) {
  Setup s;
  bool quick = false;
  std::string model_dir, device = "cpu", dtype = "auto";
  bool steps_set = false, reps_set = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--quick") quick = true;
    else if (a == "--threads" && has_value) s.threads = std::atoi(argv[++i]);
    else if (a == "--model" && has_value) model_dir = argv[++i];
    else if (a == "--device" && has_value) device = argv[++i];
    else if (a == "--dtype" && has_value) dtype = argv[++i];
    else if (a == "--batches" && has_value) s.batches = split_ints(argv[++i]);
    else if (a == "--prompt" && has_value) s.prompt = std::atoll(argv[++i]);
    else if (a == "--cache-steps" && has_value) { s.cache_steps = std::atoll(argv[++i]); steps_set = true; }
    else if (a == "--reps" && has_value) { s.reps = std::atoi(argv[++i]); reps_set = true; }
    else {
      std::fprintf(stderr, "bench_model: unknown or incomplete option '%s' (see the comment at the top of bench_model.cpp)\n", a.c_str());
      return 2;
    }
  }
  if (s.threads <= 0) s.threads = retort::cpu_count();
  at::set_num_threads(s.threads);
  if (!model_dir.empty()) {
    if (!steps_set) s.cache_steps = 128;
    return decode_only(model_dir, device, dtype, s);
  }
  if (quick) {
    s.batches = {1, 16};
    s.cache_steps = 4;
    s.nocache_steps = 2;
    s.train_steps = 1;
    if (!reps_set) s.reps = 1;
  }
  torch::manual_seed(0);
  double peak = gemm_peak_gflops();
  std::printf("retort model benchmark: torch %d.%d, %d threads, OPENBLAS_CORETYPE=%s\n", TORCH_VERSION_MAJOR,
              TORCH_VERSION_MINOR, at::get_num_threads(), std::getenv("OPENBLAS_CORETYPE") ? std::getenv("OPENBLAS_CORETYPE") : "(unset)");
  std::printf("GEMM peak (torch::mm 1024x1024x1024 float32): %.1f GFLOP/s\n", peak);
  std::printf("decode: prompt %lld tokens, %lld steps with the KV cache, %lld without; greedy; float32; best of %d runs;"
              " train: best of %lld steps\n",
              static_cast<long long>(s.prompt), static_cast<long long>(s.cache_steps), static_cast<long long>(s.nocache_steps),
              s.reps, static_cast<long long>(s.train_steps));
  std::printf("load average at start: %s\n", load_average().c_str());

  struct Named { const char* name; ModelConfig cfg; };
  std::vector<Named> configs = {
      {"10M", make_config(8192, 256, 8, 4, 2, 1024)},
      {"100M", make_config(32000, 768, 10, 12, 2, 2560)},
  };
  std::printf("%-5s %9s %-12s %6s %12s %12s %8s %10s %7s\n", "model", "params", "mode", "batch", "retort tok/s",
              "python tok/s", "speedup", "GFLOP/s", "% peak");
  for (auto& nc : configs) {
    const auto& cfg = nc.cfg;
    const std::string dir = (fs::temp_directory_path() / ("retort_bench_model_" + std::string(nc.name))).string();
    retort::Qwen2ForCausalLM m(cfg);
    m->eval();
    retort::save_model(*m, dir);
    // Without the cache, batch 256 of the 100M model costs minutes per side: skipped.
    std::vector<int64_t> nocache_batches;
    for (int64_t b : s.batches) if (!(cfg.hidden_size >= 768 && b >= 256)) nocache_batches.push_back(b);
    json py = run_python(dir, s, nocache_batches);
    auto py_get = [&](const char* mode, int64_t b) -> double {
      if (!py.is_object() || !py[mode].contains(std::to_string(b))) return 0;
      return py[mode][std::to_string(b)].get<double>();
    };
    const double params = static_cast<double>(cfg.num_parameters());
    for (bool use_cache : {true, false}) {
      const char* mode = use_cache ? "decode_cache" : "decode_nocache";
      for (int64_t b : use_cache ? s.batches : nocache_batches) {
        decode_tps(*m, b, s.prompt, 1, use_cache);  // warm-up
        const int64_t steps = use_cache ? s.cache_steps : s.nocache_steps;
        double ours = best_of(s.reps, [&] { return decode_tps(*m, b, s.prompt, steps, use_cache); });
        double theirs = py_get(mode, b);
        // Work per generated token: one position at the mean context with the cache; the whole
        // sequence (about prompt + steps/2 positions, causal) without it; one LM-head row either way.
        const double S = s.prompt + steps / 2.0;
        double flops = flops_head(cfg) + (use_cache ? flops_layers(cfg, 1, S) : flops_layers(cfg, S, S / 2));
        double gflops = ours * flops / 1e9;
        std::printf("%-5s %8.1fM %-12s %6lld %12.1f %12.1f %7.2fx %10.1f %6.1f%%\n", nc.name, params / 1e6,
                    use_cache ? "kv-cache" : "no-cache", static_cast<long long>(b), ours, theirs,
                    theirs > 0 ? ours / theirs : 0.0, gflops, 100.0 * gflops / peak);
        std::fflush(stdout);
      }
    }
    double ours = train_tps(cfg, dir, s);
    double theirs = py.is_object() && py.contains("train") ? py["train"].get<double>() : 0;
    // forward + backward = 3x the forward FLOPs; every position goes through the LM head
    double gflops = ours * 3 * (flops_layers(cfg, 1, s.train_seq / 2.0) + flops_head(cfg)) / 1e9;
    std::printf("%-5s %8.1fM %-12s %6lld %12.1f %12.1f %7.2fx %10.1f %6.1f%%\n", nc.name, params / 1e6,
                ("train " + std::to_string(s.train_batch) + "x" + std::to_string(s.train_seq)).c_str(),
                static_cast<long long>(s.train_batch), ours, theirs, theirs > 0 ? ours / theirs : 0.0, gflops,
                100.0 * gflops / peak);
    std::fflush(stdout);
    fs::remove_all(dir);
  }
  const double peak_end = gemm_peak_gflops();
  std::printf("GEMM peak measured again at the end: %.1f GFLOP/s (%% peak above uses the one at the start, %.1f)\n",
              peak_end, peak);
  return 0;
}
