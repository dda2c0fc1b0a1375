// Training memory and speed at real shapes: one SFT step, one distillation step (forward KL
// and a feature loss at the last layer, from a teacher of the same shape) and one GRPO update of a Qwen2.5-0.5B-shaped model
// (hidden 896, 14 heads, 2 KV heads, intermediate 4864, vocabulary 151,936) cut to 2 layers
// (166M parameters), random weights, on the CPU, at several sequence lengths, with each
// feature on and off:
//   chunk  the chunked LM head (model/lm_head.h) vs the full [T, V] logits and log_softmax
//   ckpt   activation checkpointing per decoder layer (ForwardOptions::checkpoint_layers)
//   attn   the memory-efficient attention (model/attention.h) vs the eager [B, H, T, S] one
//          (ForwardOptions::attention_chunk_elements = 0; sft and distill rows, the student's)
//   heap   glibc's mmap threshold at 1 MiB in training steps (TrainingHeapScope, what retort
//          does; common/platform.h) vs glibc's dynamic one (RETORT_MALLOC=glibc in the child)
// Step prefill is a forward pass without autograd (scoring, prefill) with either attention:
// its tokens/s say whether the chunked path costs speed where no gradient is taken.
// and packed vs padded micro-batches on a log-normal length mix (R1-like: median ~2.5k,
// 500 to 16k tokens, scaled down by --mix-scale to keep the run to minutes). Step grpo_h is the
// GRPO update with the per-token entropy computed in the same head pass (what retort grpo does
// every step; compare its rows with grpo's).
//
// Each configuration runs in a fresh child process (this program with --child), so that the
// peak resident set (VmHWM) of one does not hide another's. Printed per row: peak RSS, the
// static part (weights + gradients + AdamW state, and the frozen teacher's weights), the rest
// ("activations": peak - static - the process's RSS before the model existed) and tokens/s.
//
//   build/bench/bench_train_memory [--lengths 1024,4096,8192] [--steps sft,distill,grpo,grpo_h]
//                                  [--rows full,chunk,ckpt,eager,glibc] [--layers 2] [--threads N]
//                                  [--mix-scale 0.125] [--no-mix]
// Rows per step and length: full = the full [T, V] logits (skipped above 4096 tokens: ~15 GB
// of logits and softmax copies at 8k), chunk = chunked head, ckpt = chunked head +
// checkpointing, eager = ckpt with the eager attention, glibc = ckpt with glibc's dynamic mmap
// threshold in the step. After the table: the linear-growth
// check (rest at the longest length vs its multiple of the rest at the one before) and the
// goal (rest < 1.5 GB at 8k).
//
// What it deliberately is not: a GPU benchmark, or a measure of learning (weights are random).
#include <sys/wait.h>  // defines: waitpid
#include <unistd.h>    // defines: fork, execv

#include <algorithm>   // defines: std::max
#include <array>       // defines: std::array
#include <atomic>      // defines: std::atomic
#include <chrono>      // defines: std::chrono::milliseconds
#include <thread>      // defines: std::thread
#include <cmath>       // defines: std::exp
#include <cstdio>      // defines: std::printf, popen
#include <cstdlib>     // defines: std::atoll
#include <functional>  // defines: std::greater
#include <filesystem>  // defines: std::filesystem
#include <fstream>     // defines: std::ifstream
#include <iterator>    // defines: std::prev
#include <map>         // defines: std::map
#include <optional>    // defines: std::optional
#include <random>      // defines: std::mt19937_64, std::lognormal_distribution
#include <sstream>     // defines: std::stringstream
#include <string>      // defines: std::string

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "common/platform.h"      // defines: now_seconds, cpu_count
#include "common/runtime.h"       // defines: peak_rss_bytes
#include "common/torch_pch.h"     // defines: torch
#include "model/checkpoint.h"     // defines: save_model
#include "model/transformer.h"    // defines: Qwen2ForCausalLM
#include "rollout/logprobs.h"     // defines: token_logprobs
#include "tokenizer/tokenizer.h"  // defines: Tokenizer
#include "train/distill.h"        // defines: Distiller, summed_token_ce
#include "train/grpo_loss.h"      // defines: grpo_loss
#include "train/micro_batch.h"    // defines: split_by_token_budget
#include "train/optim.h"          // defines: AdamW

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kSrc = RETORT_SOURCE_DIR;

retort::ModelConfig qwen05_shape(int64_t layers) {
  json j = {{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"}, {"vocab_size", 151936},
            {"hidden_size", 896}, {"intermediate_size", 4864}, {"num_hidden_layers", layers},
            {"num_attention_heads", 14}, {"num_key_value_heads", 2}, {"max_position_embeddings", 32768},
            {"rope_theta", 1000000.0}, {"rms_norm_eps", 1e-6}, {"tie_word_embeddings", true}};
  return retort::ModelConfig::from_json(j, "bench");
}

long long current_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  return 0;
}

// ---- one configuration (the child) -------------------------------------------------------------

// Where the peak is: a thread samples VmRSS every 10 ms and keeps the largest value seen in
// each phase of the step (0 setup, 1 forward, 2 backward, 3 optimizer).
struct PhaseMonitor {
  std::atomic<int> phase{0};
  std::atomic<bool> stop{false};
  std::array<std::atomic<long long>, 4> peak{};
  std::thread th;
  PhaseMonitor() {
    th = std::thread([this] {
      while (!stop) {
        const long long r = current_rss_bytes();
        auto& p = peak[static_cast<size_t>(phase.load())];
        if (r > p) p = r;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
  }
  ~PhaseMonitor() {
    stop = true;
    th.join();
  }
};

struct Child {
  std::string step = "sft";  // sft | distill | grpo | grpo_h (grpo with the entropy) | prefill | mix
  int64_t T = 1024;          // tokens of the step (sft/distill/grpo: one sequence)
  bool chunk = true, ckpt = false, packed = true;
  bool attn = true;          // memory-efficient attention (false: eager, ForwardOptions::attention_chunk_elements = 0)
  int64_t layers = 2;
  double mix_scale = 0.125;
  std::string teacher_dir;
};

// The unchunked reference of an SFT loss: the full [T-1, V] float32 logits and log_softmax.
torch::Tensor full_ce(retort::Qwen2ForCausalLMImpl& m, const torch::Tensor& ids, bool ckpt) {
  retort::ForwardOptions fo;
  fo.checkpoint_layers = ckpt;
  auto logits = m.forward(ids, {}, fo).logits.narrow(1, 0, ids.size(1) - 1).to(torch::kFloat);  // [1, T-1, V]
  auto lp = torch::log_softmax(logits, -1).gather(-1, ids.narrow(1, 1, ids.size(1) - 1).unsqueeze(-1));
  return -lp.mean();
}

json run_child(const Child& c) {
  const long long rss0 = current_rss_bytes();
  PhaseMonitor mon;
  torch::manual_seed(1);
  retort::Qwen2ForCausalLM model(qwen05_shape(c.layers));
  model->train();
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
  retort::OptimConfig oc;
  retort::AdamW optim(named, oc);
  const int64_t P = model->config().num_parameters();
  double static_bytes = 16.0 * P;  // float32 weights, gradients, AdamW m and v
  const int64_t V = model->config().vocab_size;
  int64_t tokens = 0;
  double t0 = 0, dt = 0;
  // The heap as retort sets it for a training step (common/platform.h); scoring and prefill
  // (step prefill) run without.
  std::optional<retort::TrainingHeapScope> heap;
  if (c.step != "prefill") heap.emplace();

  if (c.step == "sft" || c.step == "grpo" || c.step == "grpo_h") {
    auto ids = torch::randint(0, V, {1, c.T}, torch::kLong);
    t0 = retort::now_seconds();
    mon.phase = 1;
    torch::Tensor loss;
    if (c.step == "sft") {
      if (c.chunk) {
        retort::ForwardOptions fo;
        fo.skip_lm_head = true;
        fo.checkpoint_layers = c.ckpt;
        if (!c.attn) fo.attention_chunk_elements = 0;
        auto out = model->forward(ids, {}, fo);
        auto mask = torch::ones({1, c.T - 1});
        loss = retort::summed_token_ce(*model, out, ids.narrow(1, 1, c.T - 1), mask) / static_cast<double>(c.T - 1);
      } else {
        loss = full_ce(*model, ids, c.ckpt);
      }
    } else {
      // GRPO update of one sequence: a 256-token prompt and a T - 256 token completion.
      const int64_t Pn = 256, L = c.T - Pn;
      const bool with_entropy = c.step == "grpo_h";
      torch::Tensor logp, entropy;  // [1, L]
      if (c.chunk) {
        retort::LogprobOptions lo;
        lo.first = Pn - 1;
        lo.checkpoint_layers = c.ckpt;
        if (with_entropy) lo.entropy = &entropy;
        logp = retort::token_logprobs(*model, ids, {}, lo);  // [1, L]
      } else {
        retort::ForwardOptions fo;
        fo.checkpoint_layers = c.ckpt;
        auto logits = model->forward(ids, {}, fo).logits.narrow(1, Pn - 1, L).to(torch::kFloat);  // [1, L, V]
        auto lsm = torch::log_softmax(logits, -1);
        logp = lsm.gather(-1, ids.narrow(1, Pn, L).unsqueeze(-1)).squeeze(-1);
        if (with_entropy) entropy = -(lsm.exp() * lsm).sum(-1).detach();
      }
      auto old = logp.detach() - 0.01, ref = logp.detach() + 0.02;
      retort::GrpoLossOptions go;
      loss = retort::grpo_loss(logp, old, ref, torch::ones({1}), torch::ones({1, L}), go, nullptr, entropy);
    }
    mon.phase = 2;
    loss.backward();
    mon.phase = 3;
    optim.step(1e-5);
    optim.zero_grad();
    dt = retort::now_seconds() - t0;
    tokens = c.T;
  } else if (c.step == "prefill") {
    // A forward pass without autograd over the decoder stack (scoring, a rollout's prefill):
    // what the attention changes when no gradient is taken; the head is left out.
    torch::NoGradGuard ng;
    auto ids = torch::randint(0, V, {1, c.T}, torch::kLong);
    retort::ForwardOptions fo;
    fo.skip_lm_head = true;
    if (!c.attn) fo.attention_chunk_elements = 0;
    t0 = retort::now_seconds();
    mon.phase = 1;
    auto h = model->forward(ids, {}, fo).hidden;  // [1, T, C]
    dt = retort::now_seconds() - t0;
    tokens = c.T;
  } else if (c.step == "distill") {
    retort::DistillConfig dc;
    dc.teacher = c.teacher_dir;
    dc.logit.kind = "forward_kl";
    dc.feature.layer_map = {{std::to_string(c.layers), c.layers}};  // the last hidden state (after the final norm)
    retort::Tokenizer tok = retort::Tokenizer::from_file(kSrc + "/tests/fixtures/tokenizer/trained.tokenizer.json");
    retort::Distiller distiller(dc, *model, tok, torch::kCPU, "bench");
    static_bytes += 4.0 * P;  // the frozen teacher's weights
    auto ids = torch::randint(0, V, {1, c.T}, torch::kLong);
    auto att = torch::ones({1, c.T}, torch::kLong);
    auto mask = torch::ones({1, c.T - 1});
    const std::map<std::string, double> w = {{"ce", 1.0}, {"logit", 1.0}, {"feature", 1.0}};
    t0 = retort::now_seconds();
    mon.phase = 1;
    torch::Tensor loss;
    if (c.chunk) {
      retort::ForwardOptions fo = distiller.student_options(w);
      fo.checkpoint_layers = c.ckpt;
      if (!c.attn) fo.attention_chunk_elements = 0;
      auto out = model->forward(ids, att, fo);
      retort::Distiller::StepTokens n{static_cast<double>(c.T - 1), 0, static_cast<double>(c.T)};
      loss = distiller.losses(out, ids, att, {}, mask, w, n).total;
    } else {
      // Unchunked: both models' full logits and log_softmax (the pre-chunking code path).
      auto teacher = retort::load_model(c.teacher_dir, retort::LoadOptions{"cpu", "float32"});
      torch::Tensor tl, th;
      {
        torch::NoGradGuard ng;
        auto to = teacher->forward(ids, att);
        tl = to.logits.narrow(1, 0, c.T - 1);
        th = to.hidden;  // [1, T, C]: the feature target
      }
      retort::ForwardOptions fo;
      fo.checkpoint_layers = c.ckpt;
      auto so = model->forward(ids, att, fo);
      auto sl = so.logits.narrow(1, 0, c.T - 1);
      auto ce = -torch::log_softmax(sl.to(torch::kFloat), -1).gather(-1, ids.narrow(1, 1, c.T - 1).unsqueeze(-1)).mean();
      loss = ce + retort::forward_kl_loss(sl, tl, mask, 2.0) + (so.hidden - th).pow(2).mean();
    }
    mon.phase = 2;
    loss.backward();
    mon.phase = 3;
    optim.step(1e-5);
    optim.zero_grad();
    dt = retort::now_seconds() - t0;
    tokens = c.T;
  } else {  // mix: one SFT step over a log-normal length mix, packed or padded, by a token budget
    std::mt19937_64 rng(7);
    std::lognormal_distribution<double> ln(std::log(2500.0), 0.9);  // R1-like: median ~2.5k tokens
    std::vector<int64_t> lengths;
    for (int i = 0; i < 16; ++i) {
      const double l = std::min(16000.0, std::max(500.0, ln(rng)));
      lengths.push_back(std::max<int64_t>(8, static_cast<int64_t>(l * c.mix_scale)));
    }
    std::sort(lengths.begin(), lengths.end(), std::greater<int64_t>());
    const int64_t budget = static_cast<int64_t>(16000 * c.mix_scale);
    double total = 0;
    for (int64_t l : lengths) total += static_cast<double>(l - 1);
    t0 = retort::now_seconds();
    for (const auto& part : retort::split_by_token_budget(lengths, budget, c.packed)) {
      int64_t Tm = 0;
      for (int64_t i : part) Tm = c.packed ? Tm + lengths[static_cast<size_t>(i)] : std::max(Tm, lengths[static_cast<size_t>(i)]);
      const int64_t B = c.packed ? 1 : static_cast<int64_t>(part.size());
      auto ids = torch::randint(0, V, {B, Tm}, torch::kLong);
      auto att = torch::zeros({B, Tm}, torch::kLong);
      auto seq = torch::zeros({B, Tm}, torch::kLong);
      int64_t start = 0;
      for (size_t k = 0; k < part.size(); ++k) {
        const int64_t l = lengths[static_cast<size_t>(part[k])];
        const int64_t row = c.packed ? 0 : static_cast<int64_t>(k);
        att[row].narrow(0, start, l).fill_(1);
        seq[row].narrow(0, start, l).fill_(static_cast<int64_t>(k));
        if (c.packed) start += l;
      }
      auto mask = (att.narrow(1, 1, Tm - 1) * seq.narrow(1, 1, Tm - 1).eq(seq.narrow(1, 0, Tm - 1)).to(torch::kLong)).to(torch::kFloat);
      retort::ForwardOptions fo;
      fo.skip_lm_head = true;
      fo.checkpoint_layers = c.ckpt;
      if (c.packed) fo.sequence_ids = seq;
      auto out = model->forward(ids, att, fo);
      auto loss = retort::summed_token_ce(*model, out, ids.narrow(1, 1, Tm - 1), mask) / total;
      loss.backward();
      for (int64_t i : part) tokens += lengths[static_cast<size_t>(i)];
    }
    optim.step(1e-5);
    optim.zero_grad();
    dt = retort::now_seconds() - t0;
  }
  const long long peak = retort::peak_rss_bytes();
  auto phase_rest = [&](int i) { return (mon.peak[static_cast<size_t>(i)].load() - rss0 - static_bytes) / 1048576.0; };
  return json{{"peak_mb", peak / 1048576.0}, {"static_mb", static_bytes / 1048576.0},
              {"rest_fwd_mb", phase_rest(1)}, {"rest_bwd_mb", phase_rest(2)}, {"rest_opt_mb", phase_rest(3)},
              {"rest_mb", (peak - rss0 - static_bytes) / 1048576.0}, {"tokens_per_s", tokens / std::max(dt, 1e-9)},
              {"seconds", dt}, {"tokens", tokens}};
}

// ---- the parent: one child per configuration ----------------------------------------------------

std::string self_path() { return fs::read_symlink("/proc/self/exe").string(); }

// env: "NAME=value " put before the command (the child's environment), or "".
json spawn(const std::vector<std::string>& args, const std::string& env = "") {
  std::string cmd = env + "'" + self_path() + "' --child";
  for (const auto& a : args) cmd += " " + a;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return json{{"error", "popen failed"}};
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int rc = pclose(p);
  if (rc != 0) return json{{"error", "child exited " + std::to_string(WEXITSTATUS(rc))}};
  auto pos = out.rfind("{");
  try {
    return json::parse(out.substr(pos));
  } catch (...) {
    return json{{"error", "no result"}};
  }
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  auto opt = [&](const std::string& k, const std::string& d) {
    for (size_t i = 0; i + 1 < a.size(); ++i)
      if (a[i] == k) return a[i + 1];
    return d;
  };
  auto flag = [&](const std::string& k) { return std::find(a.begin(), a.end(), k) != a.end(); };
  const int threads = std::stoi(opt("--threads", "0"));
  at::set_num_threads(threads > 0 ? threads : retort::cpu_count());

  if (flag("--child")) {
    Child c;
    c.step = opt("--step", "sft");
    c.T = std::stoll(opt("--T", "1024"));
    c.chunk = opt("--chunk", "1") == "1";
    c.ckpt = opt("--ckpt", "0") == "1";
    c.attn = opt("--attn", "1") == "1";
    c.packed = opt("--packed", "1") == "1";
    c.layers = std::stoll(opt("--layers", "2"));
    c.mix_scale = std::stod(opt("--mix-scale", "0.125"));
    c.teacher_dir = opt("--teacher", "");
    std::printf("%s\n", run_child(c).dump().c_str());
    return 0;
  }

  const std::string layers = opt("--layers", "2"), mix_scale = opt("--mix-scale", "0.125");
  const auto lengths = split(opt("--lengths", "1024,4096,8192"));
  const auto steps = split(opt("--steps", "sft,distill,grpo"));
  const std::string thr = std::to_string(at::get_num_threads());
  std::printf("bench_train_memory: Qwen2.5-0.5B shape (896 wide, 14/2 heads, 4864 MLP, vocab 151936), %s layers, "
              "random weights, CPU, %s threads; one child process per row\n", layers.c_str(), thr.c_str());
  std::string teacher_dir;
  if (std::find(steps.begin(), steps.end(), "distill") != steps.end()) {
    teacher_dir = (fs::temp_directory_path() / ("retort_bench_teacher_" + std::to_string(getpid()))).string();
    torch::manual_seed(2);
    retort::Qwen2ForCausalLM teacher(qwen05_shape(std::stoll(layers)));
    retort::save_model(*teacher, teacher_dir);
  }
  // Row kinds: chunked head, checkpointing, memory-efficient attention, glibc's mmap threshold
  // at 1 MiB in the step (retort's TrainingHeapScope) or left dynamic (RETORT_MALLOC=glibc).
  struct Row {
    std::string name;
    int chunk, ckpt, attn, pinned;
  };
  const std::map<std::string, Row> kinds = {{"full", {"full", 0, 0, 1, 1}}, {"chunk", {"chunk", 1, 0, 1, 1}},
                                            {"ckpt", {"ckpt", 1, 1, 1, 1}}, {"eager", {"eager", 1, 1, 0, 1}},
                                            {"glibc", {"glibc", 1, 1, 1, 0}}};
  std::vector<Row> rows;
  for (const auto& r : split(opt("--rows", "full,chunk,ckpt,eager")))
    if (kinds.count(r)) rows.push_back(kinds.at(r));
  std::printf("%-8s %6s %-5s %-5s %-5s %-5s | %9s %9s %9s | %9s %7s | rest by phase: fwd / bwd / opt MB\n", "step", "T",
              "chunk", "ckpt", "attn", "heap", "peak MB", "static MB", "rest MB", "tokens/s", "s");
  std::map<std::string, std::map<int64_t, double>> rest;  // "step row" -> T -> rest MB
  for (const auto& st : steps) {
    for (const auto& T : lengths) {
      for (const auto& row : rows) {
        auto label = [&](const char* a) {
          std::printf("%-8s %6s %-5s %-5s %-5s %-5s | %s\n", st.c_str(), T.c_str(), row.chunk ? "on" : "off",
                      row.ckpt ? "on" : "off", row.attn ? "mem" : "eager", row.pinned ? "1MiB" : "glibc", a);
        };
        if (!row.chunk && std::stoll(T) > 4096) {
          label("skipped: the full [T, V] logits need ~15 GB at 8k");
          continue;
        }
        if (!row.attn && st != "sft" && st != "distill" && st != "prefill") continue;  // selectable there only
        json r = spawn({"--step", st, "--T", T, "--chunk", std::to_string(row.chunk), "--ckpt", std::to_string(row.ckpt),
                        "--attn", std::to_string(row.attn), "--layers", layers, "--threads", thr, "--teacher",
                        teacher_dir.empty() ? "none" : teacher_dir},
                       row.pinned ? "" : "RETORT_MALLOC=glibc ");
        if (r.contains("error")) {
          label(r["error"].get<std::string>().c_str());
        } else {
          std::printf("%-8s %6s %-5s %-5s %-5s %-5s | %9.0f %9.0f %9.0f | %9.1f %7.1f | %6.0f / %6.0f / %6.0f\n", st.c_str(),
                      T.c_str(), row.chunk ? "on" : "off", row.ckpt ? "on" : "off", row.attn ? "mem" : "eager",
                      row.pinned ? "1MiB" : "glibc",
                      r["peak_mb"].get<double>(), r["static_mb"].get<double>(), r["rest_mb"].get<double>(),
                      r["tokens_per_s"].get<double>(), r["seconds"].get<double>(), r["rest_fwd_mb"].get<double>(),
                      r["rest_bwd_mb"].get<double>(), r["rest_opt_mb"].get<double>());
          rest[st + " " + row.name][std::stoll(T)] = r["rest_mb"].get<double>();
        }
        std::fflush(stdout);
      }
    }
  }
  // Linear growth: rest(T2) <= (T2 / T1) rest(T1) for the two longest lengths measured, and the
  // goal: rest < 1.5 GB at 8k tokens (2-layer model).
  bool header = false;
  for (const auto& [key, by_t] : rest) {
    if (by_t.size() < 2) continue;
    auto hi = std::prev(by_t.end()), lo = std::prev(hi);
    const double f = static_cast<double>(hi->first) / static_cast<double>(lo->first);
    if (!header) std::printf("\nlinear growth (rest at the longest T vs T-ratio x rest at the one before):\n");
    header = true;
    const double slope = (hi->second - lo->second) / static_cast<double>(hi->first - lo->first) * 1024.0;
    std::printf("%-14s rest(%lld) = %6.0f MB vs %.0f x rest(%lld) = %6.0f MB (%+.0f MB per 1k tokens): %s%s\n", key.c_str(),
                static_cast<long long>(hi->first), hi->second, f, static_cast<long long>(lo->first), f * lo->second, slope,
                hi->second <= f * lo->second ? "linear or better" : "SUPERLINEAR",
                hi->first == 8192 ? (hi->second < 1536 ? "; goal rest < 1.5 GB at 8k: met" : "; goal rest < 1.5 GB at 8k: NOT met") : "");
  }
  if (!teacher_dir.empty()) fs::remove_all(teacher_dir);
  if (!flag("--no-mix")) {
    std::printf("\npacked vs padded: one SFT step over 16 sequences of a log-normal length mix (median 2.5k, 500..16k "
                "tokens) scaled by %s, token budget 16k x %s, chunked head + checkpointing\n", mix_scale.c_str(), mix_scale.c_str());
    double tps[2] = {0, 0};
    for (int packed : {0, 1}) {
      json r = spawn({"--step", "mix", "--packed", std::to_string(packed), "--ckpt", "1", "--layers", layers, "--threads", thr,
                      "--mix-scale", mix_scale});
      if (r.contains("error")) {
        std::printf("%-7s | %s\n", packed ? "packed" : "padded", r["error"].get<std::string>().c_str());
        continue;
      }
      tps[packed] = r["tokens_per_s"].get<double>();
      std::printf("%-7s | peak %6.0f MB | %8.1f real tokens/s | %6.1f s\n", packed ? "packed" : "padded", r["peak_mb"].get<double>(),
                  tps[packed], r["seconds"].get<double>());
    }
    if (tps[0] > 0 && tps[1] > 0) std::printf("packed / padded throughput: %.2fx\n", tps[1] / tps[0]);
  }
  return 0;
}
