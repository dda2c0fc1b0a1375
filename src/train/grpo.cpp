// The GRPO recipe (see grpo.h for the stages, features and failure modes).
#include "train/grpo.h"

#include <algorithm>           // defines: std::shuffle, std::min
#include <cmath>               // defines: std::sqrt, std::isnan
#include <condition_variable>  // defines: std::condition_variable
#include <exception>           // defines: std::exception_ptr
#include <filesystem>          // defines: std::filesystem
#include <mutex>               // defines: std::mutex
#include <random>              // defines: std::mt19937_64
#include <set>                 // defines: std::set
#include <thread>              // defines: std::thread

#include "audit/chain_log.h"        // defines: ChainLog, ChainEntry
#include "common/config.h"          // defines: ConfigBinder, parse_config, apply_override
#include "common/error.h"           // defines: retort::Error
#include "common/log.h"             // defines: log_info, MetricsWriter, ProgressBar
#include "common/platform.h"        // defines: now_seconds
#include "common/run_dir.h"         // defines: RunDir
#include "dist/dist.h"              // defines: DistContext, dist_context, shard_range
#include "model/checkpoint.h"       // defines: load_model, save_model
#include "model/transformer.h"      // defines: Qwen2ForCausalLM
#include "rewards/extract.h"        // defines: rewards::split_think
#include "rollout/logprobs.h"       // defines: token_logprobs
#include "rollout/sampler.h"        // defines: sample, Rollout, SamplerOptions
#include "tokenizer/chat_template.h"  // defines: ChatTemplate
#include "tokenizer/tokenizer.h"    // defines: Tokenizer

namespace fs = std::filesystem;

namespace retort {

using nlohmann::json;

void GrpoDataConfig::bind(ConfigBinder& b) {
  b.field("prompts", prompts);
  format.bind(b);  // the format options sit beside the path: data.chat_template, data.math_instruction, ...
  b.field("max_prompt_tokens", max_prompt_tokens);
}

void GrpoSamplingConfig::bind(ConfigBinder& b) {
  b.field("temperature", temperature);
  b.field("top_p", top_p);
  b.field("top_k", top_k);
  b.field("max_new_tokens", max_new_tokens);
  b.field("seed_per_row", seed_per_row);
}

void AdvantageConfig::bind(ConfigBinder& b) {
  b.choice("scale", scale, {"group", "batch", "none"});
  b.field("eps", eps);
}

void DynamicSamplingConfig::bind(ConfigBinder& b) {
  b.field("enabled", enabled);
  b.field("max_retries", max_retries);
}

void GrpoConfig::bind(ConfigBinder& b) {
  b.field("run_dir", run_dir);
  b.field("model", model);
  b.field("model_config", model_config);
  b.field("tokenizer", tokenizer);
  b.field("output", output);
  b.choice("anchor", anchor, {"teacher", "reference", "none"});
  b.field("teacher", teacher);
  b.field("runtime", runtime);
  b.field("data", data);
  b.field("prompts_per_step", prompts_per_step);
  b.field("group_size", group_size);
  b.field("sampling", sampling);
  b.field("rewards", rewards);
  b.field("advantage", advantage);
  b.field("dynamic_sampling", dynamic_sampling);
  b.field("mu", mu);
  b.field("minibatch_size", minibatch_size);
  b.field("grad_accum", grad_accum);
  b.field("train", train);
  b.field("logprob_micro_batch", logprob_micro_batch);
  b.field("loss", loss);
  b.choice("overlong", overlong, {"none", "mask", "penalty"});
  b.field("optim", optim);
  b.field("steps", steps);
  b.field("log_every", log_every);
  b.field("save_every", save_every);
  b.field("keep_last", keep_last);
  b.field("resume", resume);
}

namespace {

// ---- prompts -------------------------------------------------------------------------------

struct PromptSet {
  std::vector<PromptRecord> records;
  std::vector<std::vector<int32_t>> ids;  // tokenized records[i].text
};

PromptSet load_prompt_set(const GrpoDataConfig& cfg, const Tokenizer& tok) {
  PromptSet out;
  int64_t skipped = 0;
  for (auto& r : load_prompts(cfg.prompts, cfg.format)) {
    std::vector<int32_t> ids = tok.encode(r.text);
    if (ids.empty() || static_cast<int64_t>(ids.size()) > cfg.max_prompt_tokens) {
      ++skipped;
      continue;
    }
    out.records.push_back(std::move(r));
    out.ids.push_back(std::move(ids));
  }
  log_info("prompts: " + std::to_string(out.records.size()) + " kept, " + std::to_string(skipped) +
           " skipped as longer than data.max_prompt_tokens = " + std::to_string(cfg.max_prompt_tokens));
  if (out.records.empty()) {
    throw Error(ErrorInfo{"no usable prompt", cfg.prompts, "prompts of at most data.max_prompt_tokens tokens",
                          std::to_string(skipped) + " prompts, all too long", "raise data.max_prompt_tokens"});
  }
  return out;
}

// One epoch's prompt order: a seeded permutation.
std::vector<int64_t> epoch_order(size_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = static_cast<int64_t>(i);
  std::mt19937_64 rng(seed * 1000003ull + static_cast<uint64_t>(epoch) + 0x67727030ull);
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

// ---- streaming verification ----------------------------------------------------------------

// Scores completions while the sampler still decodes others: submit() (from the sampler's
// on_finished callback) queues a row; a worker thread scores whatever is queued with
// RewardSet::score and files the cells by row; finish() waits and returns the N x K table.
class StreamingScorer {
 public:
  StreamingScorer(const rewards::RewardSet& set, int64_t n) : set_(set), n_(n) {
    const size_t k = set.names().size();
    table_.n = static_cast<int>(n);
    table_.k = static_cast<int>(k);
    table_.names = set.names();
    table_.weights = set.weights();
    table_.rewards.assign(static_cast<size_t>(n) * k, 0.0);
    table_.passed.assign(static_cast<size_t>(n) * k, 0);
    table_.details.assign(static_cast<size_t>(n) * k, json::object());
    submitted_.assign(static_cast<size_t>(n), false);
    worker_ = std::thread([this] { loop(); });
  }
  ~StreamingScorer() {
    close();
    if (worker_.joinable()) worker_.join();
  }

  void submit(int64_t row, rewards::ScoreInput in) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (submitted_[static_cast<size_t>(row)]) return;
      submitted_[static_cast<size_t>(row)] = true;
      pending_.emplace_back(row, std::move(in));
    }
    cv_.notify_one();
  }
  bool submitted(int64_t row) const {
    std::lock_guard<std::mutex> lk(mu_);
    return submitted_[static_cast<size_t>(row)];
  }

  // Waits for every submitted row; returns the table with the weighted totals.
  rewards::RewardTable finish() {
    close();
    if (worker_.joinable()) worker_.join();
    if (error_) std::rethrow_exception(error_);
    table_.total = rewards::combine_rewards(table_);
    return table_;
  }
  double busy_s() const { return busy_s_; }  // read after finish()

 private:
  void close() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      closed_ = true;
    }
    cv_.notify_one();
  }
  void loop() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [this] { return closed_ || !pending_.empty(); });
      if (pending_.empty()) break;  // closed and drained
      std::vector<std::pair<int64_t, rewards::ScoreInput>> work;
      work.swap(pending_);
      lk.unlock();
      try {
        double t0 = now_seconds();
        std::vector<rewards::ScoreInput> inputs;
        inputs.reserve(work.size());
        for (auto& w : work) inputs.push_back(std::move(w.second));
        rewards::RewardTable part = set_.score(inputs);  // blocks until answered or the deadline
        const size_t k = static_cast<size_t>(table_.k);
        for (size_t i = 0; i < work.size(); ++i) {
          const size_t row = static_cast<size_t>(work[i].first);
          for (size_t j = 0; j < k; ++j) {
            table_.rewards[row * k + j] = part.rewards[i * k + j];
            table_.passed[row * k + j] = part.passed[i * k + j];
            table_.details[row * k + j] = std::move(part.details[i * k + j]);
          }
        }
        busy_s_ += now_seconds() - t0;
      } catch (...) {
        error_ = std::current_exception();
      }
      lk.lock();
    }
  }

  const rewards::RewardSet& set_;
  int64_t n_;
  rewards::RewardTable table_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<int64_t, rewards::ScoreInput>> pending_;
  std::vector<bool> submitted_;
  bool closed_ = false;
  double busy_s_ = 0;
  std::exception_ptr error_;
  std::thread worker_;
};

// ---- 1 + 2: sample and score ---------------------------------------------------------------

// One sampling round: G completions for each of some prompts, scored.
struct Sampled {
  std::vector<int64_t> prompts;      // [B'] indices into the PromptSet
  Rollout rollout;                   // tokens [B'*G, P+L], logprobs [B'*G, L], ...
  std::vector<std::string> texts;    // [B'*G] completions, stop token excluded
  rewards::RewardTable table;        // [B'*G x K]
  double sample_s = 0;               // sampler wall time (verification runs inside it)
  double score_wait_s = 0;           // wait for the verifiers after the sampler returned: the part not hidden
  double verify_busy_s = 0;          // time the verifiers worked, overlapped or not
};

Sampled sample_and_score(Qwen2ForCausalLMImpl& policy, const PromptSet& ps, std::vector<int64_t> prompt_idx, SamplerOptions opts,
                         const rewards::RewardSet& rewards, const Tokenizer& tok) {
  Sampled s;
  s.prompts = std::move(prompt_idx);
  const int64_t G = opts.group_size;
  const int64_t N = static_cast<int64_t>(s.prompts.size()) * G;
  std::vector<std::vector<int32_t>> prompt_ids;
  for (int64_t p : s.prompts) prompt_ids.push_back(ps.ids[static_cast<size_t>(p)]);
  std::set<int64_t> stops(opts.stop_token_ids.begin(), opts.stop_token_ids.end());
  s.texts.assign(static_cast<size_t>(N), "");
  StreamingScorer scorer(rewards, N);
  auto to_input = [&](int64_t row, const std::vector<int32_t>& ids) {
    std::vector<int32_t> c = ids;
    if (!c.empty() && stops.count(c.back())) c.pop_back();  // the stop token is not part of the text
    s.texts[static_cast<size_t>(row)] = tok.decode(c, /*skip_special=*/false);
    const PromptRecord& rec = ps.records[static_cast<size_t>(s.prompts[static_cast<size_t>(row / G)])];
    return rewards::ScoreInput{rec.text, s.texts[static_cast<size_t>(row)], rec.row, static_cast<int64_t>(ids.size())};
  };
  // Verification starts here, on the scorer's thread, while the sampler decodes the other rows.
  opts.on_finished = [&](int64_t row, const std::vector<int32_t>& ids) { scorer.submit(row, to_input(row, ids)); };
  double t0 = now_seconds();
  s.rollout = sample(policy, prompt_ids, opts);
  double t1 = now_seconds();
  for (int64_t row = 0; row < N; ++row)  // every row is reported by the sampler; this is a safety net
    if (!scorer.submitted(row)) scorer.submit(row, to_input(row, s.rollout.completions[static_cast<size_t>(row)]));
  s.table = scorer.finish();  // sync point: the verifiers' last answers
  s.sample_s = t1 - t0;
  s.score_wait_s = now_seconds() - t1;
  s.verify_busy_s = scorer.busy_s();
  return s;
}

bool all_equal(const std::vector<double>& r, size_t from, size_t n) {
  for (size_t i = from + 1; i < from + n; ++i)
    if (std::abs(r[i] - r[from]) > 1e-12) return false;
  return true;
}

// ---- the batch the update trains on -----------------------------------------------------

// A kept group: group `g` of sampling round `round`.
struct GroupRef {
  int round;
  int64_t g;
};

struct GrpoBatch {
  torch::Tensor ids;              // [N, P+L] int64: left-padded prompt, then the completion, right-padded
  torch::Tensor attention_mask;   // [N, P+L] int64
  torch::Tensor completion_mask;  // [N, L] float: 1 on completion tokens (stop token included)
  torch::Tensor loss_mask;        // [N, L] float: completion_mask, minus truncated rows when overlong = mask
  torch::Tensor sample_logprobs;  // [N, L] float: log pi_old from the sampler
  torch::Tensor old_logprobs;     // [N, L] float: log pi_old used by the ratio
  torch::Tensor ref_logprobs;     // [N, L] float: the anchor; undefined without one
  torch::Tensor advantages;       // [N] float
  int64_t P = 0, L = 0;
  // Per row: where it came from.
  std::vector<int> round;         // [N]
  std::vector<int64_t> src_row;   // [N] row within its round's rollout
  std::vector<int64_t> group;     // [N] index of its group in this batch
};

// Gathers the kept groups' rows of one or more rollouts into one padded batch.
GrpoBatch gather_batch(const std::vector<Sampled>& rounds, const std::vector<GroupRef>& kept, int64_t G, int64_t pad_id,
                       bool mask_truncated) {
  GrpoBatch b;
  for (const auto& k : kept) {
    b.P = std::max(b.P, rounds[static_cast<size_t>(k.round)].rollout.prompt_length);
    b.L = std::max(b.L, rounds[static_cast<size_t>(k.round)].rollout.logprobs.size(1));
  }
  const int64_t N = static_cast<int64_t>(kept.size()) * G;
  b.ids = torch::full({N, b.P + b.L}, pad_id, torch::kLong);
  b.attention_mask = torch::zeros({N, b.P + b.L}, torch::kLong);
  b.completion_mask = torch::zeros({N, b.L}, torch::kFloat);
  b.sample_logprobs = torch::zeros({N, b.L}, torch::kFloat);
  std::vector<float> keep_row(static_cast<size_t>(N), 1.0f);
  int64_t i = 0;
  for (size_t gi = 0; gi < kept.size(); ++gi) {
    const Rollout& r = rounds[static_cast<size_t>(kept[gi].round)].rollout;
    const int64_t P = r.prompt_length, L = r.logprobs.size(1);
    auto tokens = r.tokens.to(torch::kCPU), att = r.attention_mask.to(torch::kCPU);
    auto cmask = r.completion_mask.to(torch::kCPU), lp = r.logprobs.to(torch::kCPU);
    for (int64_t j = 0; j < G; ++j, ++i) {
      const int64_t row = kept[gi].g * G + j;
      // Prompt: right-aligned at P (left padding grows); completion: starts at P.
      b.ids[i].narrow(0, b.P - P, P).copy_(tokens[row].narrow(0, 0, P));
      b.attention_mask[i].narrow(0, b.P - P, P).copy_(att[row].narrow(0, 0, P));
      b.ids[i].narrow(0, b.P, L).copy_(tokens[row].narrow(0, P, L));
      b.attention_mask[i].narrow(0, b.P, L).copy_(att[row].narrow(0, P, L));
      b.completion_mask[i].narrow(0, 0, L).copy_(cmask[row]);
      b.sample_logprobs[i].narrow(0, 0, L).copy_(lp[row]);
      if (mask_truncated && r.truncated[static_cast<size_t>(row)]) keep_row[static_cast<size_t>(i)] = 0.0f;
      b.round.push_back(kept[gi].round);
      b.src_row.push_back(row);
      b.group.push_back(static_cast<int64_t>(gi));
    }
  }
  b.loss_mask = b.completion_mask * torch::tensor(keep_row).unsqueeze(1);
  return b;
}

// log p of the completion tokens: token_logprobs over the whole sequence, then the L
// positions that predict completion tokens (P-1 .. P+L-2). -> [N, L], 0 off the completion.
// At the sampling temperature (logits / T): the policy being optimised is the one that drew the
// tokens, so the ratio starts at 1 and the anchor's KL is taken on the same footing (TRL and verl
// do the same). T = 1 when sampling is greedy.
torch::Tensor completion_logprobs(Qwen2ForCausalLMImpl& model, const GrpoBatch& b, const torch::Tensor& rows, int64_t micro_batch,
                                  double temperature, torch::Device device, bool packed = false, bool checkpoint = false) {
  auto ids = rows.defined() ? b.ids.index_select(0, rows) : b.ids;               // [n, P+L]
  auto att = rows.defined() ? b.attention_mask.index_select(0, rows) : b.attention_mask;
  auto cm = (rows.defined() ? b.completion_mask.index_select(0, rows) : b.completion_mask).to(device);  // [n, L]
  LogprobOptions lo;
  lo.micro_batch = micro_batch;
  lo.temperature = temperature;
  lo.checkpoint_layers = checkpoint;
  if (!packed) {
    lo.first = b.P - 1;  // only the positions that predict completion tokens: [n, L]
    return token_logprobs(model, ids.to(device), att.to(device), lo) * cm;
  }
  // Packed: the rows' real tokens one after another in one row (no padding), then each
  // completion token's log-prob read back into the [n, L] layout. Completion token j of row i
  // sits at packed index offset_i + (real prompt tokens of i) + j.
  const int64_t n = ids.size(0), P = b.P, L = b.L;
  auto att_cpu = att.to(torch::kCPU);
  auto keep = att_cpu.reshape({-1}).nonzero().squeeze(-1);                          // [S] real tokens, row-major
  auto packed_ids = ids.to(torch::kCPU).reshape({-1}).index_select(0, keep).unsqueeze(0);  // [1, S]
  auto row_of = torch::arange(n, torch::kLong).unsqueeze(1).expand({n, P + L}).reshape({-1}).index_select(0, keep).unsqueeze(0);
  auto lens = att_cpu.sum(1);                                                        // [n]
  auto prompt_real = att_cpu.narrow(1, 0, P).sum(1);                                 // [n]
  auto offsets = lens.cumsum(0) - lens;                                              // [n]
  // Predicting position of completion token j of row i: offset_i + prompt_real_i + j - 1.
  auto pos = (offsets + prompt_real - 1).unsqueeze(1) + torch::arange(L, torch::kLong).unsqueeze(0);  // [n, L]
  const int64_t S = packed_ids.size(1);
  auto cm_cpu = cm.to(torch::kCPU);
  pos = torch::where(cm_cpu > 0, pos, torch::zeros_like(pos)).clamp(0, S - 2);
  auto lp = token_logprobs(model, packed_ids.to(device), torch::ones_like(packed_ids).to(device),
                           [&] { lo.sequence_ids = row_of.to(device); return lo; }());  // [1, S-1]
  return lp.reshape({-1}).index_select(0, pos.reshape({-1}).to(device)).view({n, L}) * cm;
}

// ---- small helpers ---------------------------------------------------------------------------

std::vector<int64_t> stop_token_ids(const ModelConfig& mc, const Tokenizer& tok, const ChatTemplate& tmpl) {
  std::set<int64_t> ids(mc.eos_token_ids.begin(), mc.eos_token_ids.end());
  for (const auto& s : tmpl.stop_strings())
    if (auto id = tok.token_to_id(s)) ids.insert(*id);
  return {ids.begin(), ids.end()};
}

struct MeanStd {
  double mean = std::nan(""), std = std::nan("");
  int64_t n = 0;
};
MeanStd mean_std(const std::vector<double>& v) {
  MeanStd m;
  std::vector<double> x;
  for (double d : v)
    if (!std::isnan(d)) x.push_back(d);
  m.n = static_cast<int64_t>(x.size());
  if (x.empty()) return m;
  double s = 0;
  for (double d : x) s += d;
  m.mean = s / x.size();
  double var = 0;
  for (double d : x) var += (d - m.mean) * (d - m.mean);
  m.std = std::sqrt(var / x.size());
  return m;
}

json finite_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

uint64_t mix_seed(int64_t seed, int64_t step, int64_t k) {
  // splitmix64 of (seed, step, k): a different, reproducible stream per step and round.
  uint64_t z = static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(step) << 20) ^ static_cast<uint64_t>(k);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Qwen2ForCausalLM copy_model(Qwen2ForCausalLMImpl& m, torch::Device device) {
  Qwen2ForCausalLM c(m.config());
  c->load_hf_state_dict(m.hf_state_dict(), "the initial policy");
  c->to(device);
  c->eval();
  for (auto& p : c->parameters()) p.set_requires_grad(false);
  return c;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

GrpoResult run_grpo(const json& doc_in, const std::string& where, const std::vector<std::string>& overrides,
                    const GrpoHooks& hooks) {
  // ---- setup: config ---------------------------------------------------------------------
  json doc = doc_in;
  for (const auto& o : overrides) apply_override(doc, o);
  GrpoConfig cfg = parse_config<GrpoConfig>(doc, where);
  if (cfg.data.prompts.empty()) throw Error(ErrorInfo{"no prompts given", where, "data.prompts = a JSONL file", "\"\"", ""});
  if (cfg.model.empty() == cfg.model_config.is_null()) {
    throw Error(ErrorInfo{"give exactly one of 'model' (a checkpoint folder) and 'model_config' (a config.json object)", where,
                          "one of them", cfg.model.empty() ? "neither" : "both", ""});
  }
  if (cfg.prompts_per_step <= 0 || cfg.group_size < 2 || cfg.steps <= 0 || cfg.mu <= 0 || cfg.grad_accum <= 0 ||
      cfg.minibatch_size < 0) {
    throw Error(ErrorInfo{"prompts_per_step, steps, mu and grad_accum must be positive, group_size at least 2", where,
                          "B > 0, G >= 2, steps > 0, mu > 0, grad_accum > 0, minibatch_size >= 0",
                          "B " + std::to_string(cfg.prompts_per_step) + ", G " + std::to_string(cfg.group_size) + ", steps " +
                              std::to_string(cfg.steps) + ", mu " + std::to_string(cfg.mu) + ", grad_accum " +
                              std::to_string(cfg.grad_accum) + ", minibatch_size " + std::to_string(cfg.minibatch_size),
                          "a group of one has no relative advantage"});
  }
  if (cfg.rewards.verifiers.empty()) {
    throw Error(ErrorInfo{"no verifier configured", where + ": rewards.verifiers", "at least one {\"name\", \"weight\"}", "[]",
                          "e.g. \"rewards\": {\"verifiers\": [{\"name\": \"math\"}]}"});
  }
  bool has_overlong = false;
  for (const auto& v : cfg.rewards.verifiers) has_overlong |= v.name == "overlong";
  if (cfg.overlong == "penalty" && !has_overlong) {
    throw Error(ErrorInfo{"overlong = penalty needs the 'overlong' verifier in the rewards", where + ": overlong",
                          "{\"name\": \"overlong\", \"args\": {\"max_length\", \"cache_length\"}} in rewards.verifiers",
                          "no such verifier", "add it, or set overlong=mask or none"});
  }
  if (cfg.anchor == "teacher" && cfg.teacher.empty()) {
    throw Error(ErrorInfo{"anchor = teacher needs a teacher checkpoint", where + ": teacher", "a model folder", "\"\"",
                          "set teacher=PATH, or anchor=reference (a frozen copy of the initial policy) or anchor=none"});
  }
  if (cfg.anchor == "none" && cfg.loss.beta != 0) {
    throw Error(ErrorInfo{"a KL penalty needs an anchor", where + ": loss.beta", "loss.beta = 0 with anchor = none",
                          std::to_string(cfg.loss.beta), "set anchor=teacher or reference, or loss.beta=0"});
  }
  cfg.train.validate(where);
  log_info(apply_runtime(cfg.runtime));
  torch::Device device(resolve_device(cfg.runtime.device));
  log_info("precision: " + apply_precision(cfg.runtime, device.str()));
  const DistContext& dist = dist_context(device);
  if (dist.enabled() && cfg.minibatch_size > 0) {
    throw Error(ErrorInfo{"data parallel GRPO takes one optimizer step per pass over the whole batch", where + ": minibatch_size",
                          "minibatch_size = 0 under RANK/WORLD_SIZE", std::to_string(cfg.minibatch_size),
                          "set minibatch_size=0 (use mu for more updates per batch, grad_accum to bound memory)"});
  }
  if (dist.enabled() && !cfg.sampling.seed_per_row) {
    cfg.sampling.seed_per_row = true;
    log_info("data parallel: sampling.seed_per_row on, so that the ranks sample what one process would");
  }
  RunDir run(cfg.run_dir);
  if (dist.is_main()) run.save_resolved_config(config_to_json(cfg));

  // ---- setup: tokenizer, prompts, verifiers --------------------------------------------------
  std::string tok_path = !cfg.tokenizer.empty() ? cfg.tokenizer : (fs::path(cfg.model) / "tokenizer.json").string();
  Tokenizer tok = Tokenizer::from_file(tok_path);
  std::string tokenizer_dir = fs::path(tok_path).parent_path().string();
  PromptSet prompts = load_prompt_set(cfg.data, tok);
  rewards::RewardSet reward_set(cfg.rewards, hooks.registry ? *hooks.registry : rewards::builtin_registry());
  const std::vector<std::string>& vnames = reward_set.names();

  // ---- setup: models ----------------------------------------------------------------------------
  // The policy; the reference copy is taken before any resume so that it is the initial policy.
  Qwen2ForCausalLM policy = cfg.model.empty() ? Qwen2ForCausalLM(ModelConfig::from_json(cfg.model_config, where + ": model_config"))
                                              : load_model(cfg.model, LoadOptions{device.str(), "float32"});
  policy->to(device);
  policy->train();
  dist.broadcast(policy->parameters());  // every rank (and the reference copy) starts from rank 0's weights
  if (policy->config().vocab_size < tok.vocab_size()) {
    throw Error(ErrorInfo{"the tokenizer has more tokens than the model's vocabulary", where, "vocab_size >= " + std::to_string(tok.vocab_size()),
                          std::to_string(policy->config().vocab_size), "use the model's own tokenizer"});
  }
  Qwen2ForCausalLM anchor{nullptr};
  if (cfg.anchor == "reference") {
    anchor = copy_model(*policy, device);
  } else if (cfg.anchor == "teacher") {
    anchor = load_model(cfg.teacher, LoadOptions{device.str(), "auto"});
    anchor->eval();
    for (auto& p : anchor->parameters()) p.set_requires_grad(false);
    if (anchor->config().vocab_size < tok.vocab_size()) {
      throw Error(ErrorInfo{"the teacher's vocabulary does not cover the tokenizer", cfg.teacher,
                            "vocab_size >= " + std::to_string(tok.vocab_size()), std::to_string(anchor->config().vocab_size),
                            "the KL anchor must share the policy's tokenizer"});
    }
  }
  std::vector<std::pair<std::string, torch::Tensor>> named;
  std::vector<torch::Tensor> params;
  for (auto& p : policy->named_parameters()) {
    named.emplace_back(p.key(), p.value());
    params.push_back(p.value());
  }
  AdamW optim(named, cfg.optim);

  SamplerOptions sampler;
  sampler.group_size = cfg.group_size;
  sampler.max_new_tokens = cfg.sampling.max_new_tokens;
  sampler.temperature = cfg.sampling.temperature;
  sampler.top_p = cfg.sampling.top_p;
  sampler.top_k = cfg.sampling.top_k;
  sampler.greedy = cfg.sampling.temperature <= 0;
  const double lp_temperature = sampler.greedy ? 1.0 : cfg.sampling.temperature;  // as the sampler's log-probs
  sampler.stop_token_ids = stop_token_ids(policy->config(), tok, ChatTemplate::by_name(cfg.data.format.chat_template));
  sampler.pad_token_id = 0;

  // ---- setup: resume -----------------------------------------------------------------------
  int64_t step = 0, epoch = 0, cursor = 0;
  GrpoResult result;
  if (cfg.resume) {
    if (auto ckpt = latest_checkpoint(cfg.run_dir)) {
      json st = load_training_checkpoint(*ckpt, *policy, optim);
      if (st.value("stage", "") != "grpo") {
        throw Error(ErrorInfo{"the run directory holds a checkpoint of another stage", *ckpt, "stage grpo", st.value("stage", "?"),
                              "give this GRPO run its own run_dir"});
      }
      dist.check_resume(st.value("world_size", int64_t{1}), *ckpt);
      step = st.at("step");
      epoch = st.at("epoch");
      cursor = st.at("cursor");
      result.resumed_from = step;
      log_info("resumed from " + *ckpt + " at step " + std::to_string(step));
    }
  }
  // What a killed run wrote after its last checkpoint goes; the resumed run writes it again.
  std::unique_ptr<MetricsWriter> metrics;
  std::unique_ptr<ChainLog> chains;
  if (dist.is_main()) {
    truncate_jsonl_after_step(run.file("metrics.jsonl"), step);
    truncate_chains_after_step(run.file("chains.jsonl"), step);
    metrics = std::make_unique<MetricsWriter>(run.file("metrics.jsonl"));
    chains = std::make_unique<ChainLog>(run.file("chains.jsonl"));
  }

  const uint64_t seed = static_cast<uint64_t>(cfg.runtime.seed);
  std::vector<int64_t> order = epoch_order(prompts.records.size(), seed, epoch);
  auto next_prompt = [&]() {
    if (cursor >= static_cast<int64_t>(order.size())) {
      ++epoch;
      cursor = 0;
      order = epoch_order(prompts.records.size(), seed, epoch);
    }
    return order[static_cast<size_t>(cursor++)];
  };
  auto trainer_state = [&]() {
    // The sampler's and the minibatch order's random streams are functions of (seed, step),
    // so the step, the epoch and the cursor into the prompt order are the whole RNG state.
    return json{{"step", step},
                {"epoch", epoch},
                {"cursor", cursor},
                {"optimizer_steps", optim.steps_taken()},
                {"seed", cfg.runtime.seed},
                {"rng", {{"sampler", "splitmix64(seed, step, round)"}, {"minibatch_order", "mt19937_64(splitmix64(seed, step, 1000 + pass))"}}},
                {"stage", "grpo"},
                {"world_size", dist.world_size()}};
  };
  const int64_t B = cfg.prompts_per_step, G = cfg.group_size;

  // ---- train -----------------------------------------------------------------------------------
  std::unique_ptr<ProgressBar> bar;
  if (dist.is_main()) {
    bar = std::make_unique<ProgressBar>("grpo", cfg.steps, "step");
    bar->update(step);
  }
  while (step < cfg.steps) {
    const double t_step = now_seconds();
    json rec = {{"step", step + 1}};

    // 1 + 2: sample B prompts x G completions, verified as they finish.
    // 3: dynamic sampling: groups with all-equal rewards teach nothing (zero advantage); with
    //    it on they are dropped and more prompts are drawn, at most max_retries more rounds.
    std::vector<Sampled> rounds;
    std::vector<GroupRef> kept;
    int64_t dropped = 0, all_equal_groups = 0;
    double sample_s = 0, score_wait_s = 0, verify_busy_s = 0;
    int64_t sampled_tokens = 0;
    int64_t kept_global = 0;  // kept groups over all ranks
    for (int round = 0; round <= (cfg.dynamic_sampling.enabled ? cfg.dynamic_sampling.max_retries : 0); ++round) {
      const int64_t want = B - kept_global;
      if (want <= 0) break;
      std::vector<int64_t> idx;
      for (int64_t i = 0; i < want; ++i) idx.push_back(next_prompt());
      // Data parallel: every rank drew the same `want` prompts; it samples its slice.
      ShardRange mine = shard_range(want, dist.rank(), dist.world_size());
      idx = std::vector<int64_t>(idx.begin() + mine.begin, idx.begin() + mine.end);
      SamplerOptions so = sampler;
      so.seed = mix_seed(cfg.runtime.seed, step, round);
      if (cfg.sampling.seed_per_row) {
        // Row (prompt i of the round, sample j): a stream of its own, keyed by the prompt's
        // place in the whole round, whichever rank samples it.
        for (int64_t i = mine.begin; i < mine.end; ++i)
          for (int64_t j = 0; j < G; ++j) so.row_seeds.push_back(mix_seed(static_cast<int64_t>(so.seed), i, j));
      }
      if (idx.empty()) {
        rounds.emplace_back();  // nothing for this rank in this round; the round numbers stay aligned
      } else {
        rounds.push_back(sample_and_score(*policy, prompts, std::move(idx), so, reward_set, tok));
      }
      Sampled& s = rounds.back();
      sample_s += s.sample_s;
      score_wait_s += s.score_wait_s;
      verify_busy_s += s.verify_busy_s;
      if (!s.prompts.empty()) sampled_tokens += s.rollout.completion_mask.sum().item<int64_t>();
      const size_t kept_before = kept.size();
      for (int64_t g = 0; g < static_cast<int64_t>(s.prompts.size()); ++g) {
        bool equal = all_equal(s.table.total, static_cast<size_t>(g * G), static_cast<size_t>(G));
        all_equal_groups += equal;
        if (equal && cfg.dynamic_sampling.enabled) {
          ++dropped;
          continue;
        }
        kept.push_back(GroupRef{round, g});
      }
      kept_global += static_cast<int64_t>(dist.enabled() ? dist.sum(static_cast<double>(kept.size() - kept_before))  // sync point
                                                         : static_cast<double>(kept.size() - kept_before));
    }
    if (dist.enabled()) {
      auto c = dist.sum({static_cast<double>(all_equal_groups), static_cast<double>(dropped)});
      all_equal_groups = static_cast<int64_t>(c[0]);
      dropped = static_cast<int64_t>(c[1]);
    }
    rec["groups_all_equal"] = all_equal_groups;
    rec["groups_dropped"] = dropped;
    rec["sampling_rounds"] = static_cast<int64_t>(rounds.size());
    rec["groups"] = kept_global;

    // 4: advantages over the kept batch, group by group: on the combined batch (its groups
    //    in rank order), of which this rank keeps its own slice.
    std::vector<double> rewards_kept;
    for (const auto& k : kept)
      for (int64_t j = 0; j < G; ++j) rewards_kept.push_back(rounds[static_cast<size_t>(k.round)].table.total[static_cast<size_t>(k.g * G + j)]);
    std::vector<int64_t> chain_counts;  // per rank
    std::vector<double> rewards_all = dist.all_gather(rewards_kept, &chain_counts);
    int64_t chain_offset = 0;  // this rank's first chain in the combined batch
    for (int r = 0; r < dist.rank(); ++r) chain_offset += chain_counts[static_cast<size_t>(r)];
    std::vector<double> adv = rewards_all.empty() ? std::vector<double>{} : group_advantages(rewards_all, static_cast<int>(G), cfg.advantage.scale, cfg.advantage.eps);
    if (dist.enabled())
      adv = std::vector<double>(adv.begin() + chain_offset, adv.begin() + chain_offset + static_cast<int64_t>(rewards_kept.size()));
    const int64_t n_global = static_cast<int64_t>(rewards_all.size());

    GrpoStepMetrics sm;
    sm.step = step + 1;
    sm.groups_dropped = dropped;
    sm.chains = n_global;
    double anchor_s = 0, old_s = 0, update_s = 0;
    std::vector<double> chain_kl(rewards_kept.size(), std::nan(""));
    GrpoLossStats agg;  // token-weighted over every micro-batch of every pass
    double loss_sum = 0, grad_norm = 0;
    int64_t updates = 0, update_tokens = 0;
    const double lr = learning_rate(cfg.optim, step, cfg.steps);

    // Under data parallel a rank may hold no group this step; it still joins every
    // gradient sum below (with zeros), so that all ranks take the same optimizer steps.
    if (n_global > 0) {
      GrpoBatch batch = gather_batch(rounds, kept, G, sampler.pad_token_id, cfg.overlong == "mask");
      batch.advantages = torch::tensor(std::vector<float>(adv.begin(), adv.end()));
      const int64_t N = batch.ids.size(0);
      auto on_device = [&](const torch::Tensor& t, const torch::Tensor& rows) { return t.index_select(0, rows).to(device); };

      // 5: the anchor's log-probs, and each chain's mean KL to it under the sampling policy
      //    (k-estimator of the loss, with the same single definition: grpo_loss with A = 0, beta = 1).
      if (anchor && N > 0) {
        double t0 = now_seconds();
        torch::NoGradGuard ng;
        batch.ref_logprobs = completion_logprobs(*anchor, batch, {}, cfg.logprob_micro_batch, lp_temperature, device).to(torch::kCPU);  // [N, L]
        GrpoLossOptions klo = cfg.loss;
        klo.beta = 1.0;
        klo.aggregation = "sequence";
        auto zero = torch::zeros({1});
        for (int64_t i = 0; i < N; ++i) {
          GrpoLossStats st;
          grpo_loss(batch.sample_logprobs[i].unsqueeze(0), batch.sample_logprobs[i].unsqueeze(0), batch.ref_logprobs[i].unsqueeze(0),
                    zero, batch.completion_mask[i].unsqueeze(0), klo, &st);
          chain_kl[static_cast<size_t>(i)] = st.kl;
        }
        anchor_s = now_seconds() - t0;
      }

      // 6: the old (sampling) policy's log-probs: the sampler's, or recomputed with a full
      //    forward pass when mu > 1 so that the first pass's ratio is exactly 1.
      if (cfg.mu > 1 && N > 0) {
        double t0 = now_seconds();
        torch::NoGradGuard ng;
        policy->eval();
        batch.old_logprobs = completion_logprobs(*policy, batch, {}, cfg.logprob_micro_batch, lp_temperature, device).to(torch::kCPU);
        policy->train();
        old_s = now_seconds() - t0;
      } else {
        batch.old_logprobs = batch.sample_logprobs;
      }

      // 7: mu passes over the batch; each minibatch is one optimizer step, accumulated over
      //    grad_accum micro-batches whose losses are weighted to the minibatch's aggregation.
      double t0 = now_seconds();
      const int64_t M = cfg.minibatch_size > 0 ? std::min(cfg.minibatch_size, N) : N;
      // Data parallel: minibatch_size is 0, so one minibatch (this rank's whole slice) per pass.
      const int64_t n_minibatches = dist.enabled() ? 1 : (N + M - 1) / M;
      std::vector<int64_t> row_tokens(static_cast<size_t>(N));  // real tokens of each row (packing's lengths)
      {
        auto counts = batch.attention_mask.sum(1);
        for (int64_t i = 0; i < N; ++i) row_tokens[static_cast<size_t>(i)] = counts[i].item<int64_t>();
      }
      // dr_grpo's default divisor N * L is the combined batch's: the longest completion of all ranks.
      const double l_global = dist.enabled() ? dist.max(static_cast<double>(batch.L)) : static_cast<double>(batch.L);
      for (int pass = 0; pass < cfg.mu; ++pass) {
        std::vector<int64_t> perm(static_cast<size_t>(N));
        for (int64_t i = 0; i < N; ++i) perm[static_cast<size_t>(i)] = i;
        std::mt19937_64 rng(mix_seed(cfg.runtime.seed, step, 1000 + pass));
        std::shuffle(perm.begin(), perm.end(), rng);
        for (int64_t mbi = 0; mbi < n_minibatches; ++mbi) {
          const int64_t mb = mbi * M;
          const int64_t n_mb = std::min(M, N - mb);
          const double mb_tokens = batch.loss_mask.index_select(0, torch::tensor(std::vector<int64_t>(perm.begin() + mb, perm.begin() + mb + n_mb)))
                                       .sum().item<double>();
          // The aggregation's denominators are the combined minibatch's (the whole batch under
          // data parallel): each rank's loss is its share, and the gradient sum is the total.
          const double seq_denom = dist.enabled() ? static_cast<double>(n_global) : static_cast<double>(n_mb);
          const double tok_denom = dist.enabled() ? dist.sum(mb_tokens) : mb_tokens;  // sync point
          // The minibatch's micro-batches: grad_accum equal row counts, or by the token budget.
          std::vector<std::vector<int64_t>> parts;
          if (cfg.train.micro_batch_tokens > 0) {
            std::vector<int64_t> mb_rows(perm.begin() + mb, perm.begin() + mb + n_mb), lengths;
            for (int64_t r : mb_rows) lengths.push_back(cfg.train.packing ? row_tokens[static_cast<size_t>(r)] : batch.P + batch.L);
            for (const auto& part : split_by_token_budget(lengths, cfg.train.micro_batch_tokens, cfg.train.packing)) {
              parts.emplace_back();
              for (int64_t i : part) parts.back().push_back(mb_rows[static_cast<size_t>(i)]);
            }
          } else {
            const int64_t micro = (n_mb + cfg.grad_accum - 1) / cfg.grad_accum;
            for (int64_t m0 = mb; m0 < mb + n_mb; m0 += micro)
              parts.emplace_back(perm.begin() + m0, perm.begin() + std::min(m0 + micro, mb + n_mb));
          }
          double mb_loss = 0;
          for (const auto& part : parts) {
            const int64_t n = static_cast<int64_t>(part.size());
            auto rows = torch::tensor(part);
            const bool packed = cfg.train.micro_batch_tokens > 0 && cfg.train.packing;
            int64_t micro_tokens = 0;
            for (int64_t r : part) micro_tokens += packed ? row_tokens[static_cast<size_t>(r)] : batch.P + batch.L;
            auto logp = completion_logprobs(*policy, batch, rows, 0, lp_temperature, device, packed,
                                            cfg.train.checkpoint(micro_tokens));  // [n, L], with autograd
            auto mask = on_device(batch.loss_mask, rows);
            GrpoLossStats st;
            auto loss = grpo_loss(logp, on_device(batch.old_logprobs, rows),
                                  batch.ref_logprobs.defined() ? on_device(batch.ref_logprobs, rows) : torch::Tensor(),
                                  on_device(batch.advantages, rows), mask, cfg.loss, &st);
            // Weight of this micro-batch in the minibatch's aggregate (see grpo_loss.h):
            //   sequence, dr_grpo with the default N*L divisor: its share of sequences;
            //   token: its share of tokens; dr_grpo with a set constant: 1 (sums add up).
            double w = static_cast<double>(n) / seq_denom;
            if (cfg.loss.aggregation == "token") w = tok_denom > 0 ? st.tokens / tok_denom : 0.0;
            if (cfg.loss.aggregation == "dr_grpo" && cfg.loss.dr_grpo_constant > 0) w = 1.0;
            else if (cfg.loss.aggregation == "dr_grpo" && dist.enabled()) w *= static_cast<double>(batch.L) / l_global;
            (loss * w).backward();
            mb_loss += st.loss * w;
            agg.kl += st.kl * st.tokens;
            agg.clip_low += st.clip_low * st.tokens;
            agg.clip_high += st.clip_high * st.tokens;
            agg.dual_clipped += st.dual_clipped * st.tokens;
            agg.ratio_mean += st.ratio_mean * st.tokens;
            agg.policy_loss += st.policy_loss * w;
            agg.tokens += st.tokens;
            update_tokens += on_device(batch.attention_mask, rows).sum().item<int64_t>();  // sync point
          }
          dist.all_reduce_gradients(params);  // sync point (no-op in a single process)
          grad_norm = clip_grad_norm(params, cfg.optim.grad_clip);
          optim.step(lr);
          optim.zero_grad();
          loss_sum += mb_loss;
          ++updates;
        }
      }
      update_s = now_seconds() - t0;
      if (dist.enabled()) {
        auto v = dist.sum({loss_sum, agg.kl, agg.clip_low, agg.clip_high, agg.dual_clipped, agg.ratio_mean, agg.policy_loss,
                           agg.tokens, static_cast<double>(update_tokens)});
        loss_sum = v[0], agg.kl = v[1], agg.clip_low = v[2], agg.clip_high = v[3], agg.dual_clipped = v[4];
        agg.ratio_mean = v[5], agg.policy_loss = v[6], agg.tokens = v[7], update_tokens = static_cast<int64_t>(v[8]);
      }

      // 8 (chains): one line per chain of the kept batch, in batch order (under data
      //    parallel: rank by rank, gathered to rank 0, group numbers of the combined batch).
      json lines = json::array();
      for (int64_t i = 0; i < N; ++i) {
        const Sampled& s = rounds[static_cast<size_t>(batch.round[static_cast<size_t>(i)])];
        const int64_t row = batch.src_row[static_cast<size_t>(i)];
        const PromptRecord& p = prompts.records[static_cast<size_t>(s.prompts[static_cast<size_t>(row / G)])];
        ChainEntry e;
        e.step = step + 1;
        e.prompt_id = p.id;
        e.group = batch.group[static_cast<size_t>(i)] + chain_offset / G;
        e.sample = row % G;
        e.prompt = p.text;
        e.text = s.texts[static_cast<size_t>(row)];
        rewards::ThinkSplit split = rewards::split_think(e.text, p.text);
        e.reasoning = std::string(split.reasoning);
        e.answer = std::string(split.answer);
        for (int k = 0; k < s.table.k; ++k)
          e.verifiers[vnames[static_cast<size_t>(k)]] =
              verifier_cell(s.table.reward(static_cast<int>(row), k), s.table.passed[static_cast<size_t>(row) * s.table.k + k] != 0,
                            s.table.detail(static_cast<int>(row), k));
        e.reward = s.table.total[static_cast<size_t>(row)];
        e.advantage = adv[static_cast<size_t>(i)];
        if (anchor) e.kl = chain_kl[static_cast<size_t>(i)];
        e.length = static_cast<int64_t>(s.rollout.completions[static_cast<size_t>(row)].size());
        e.truncated = s.rollout.truncated[static_cast<size_t>(row)];
        if (!dist.enabled()) chains->write(e);
        else lines.push_back(chain_line(e));
      }
      if (dist.enabled()) {
        std::vector<std::string> all = dist.gather_to_main(lines.dump(-1, ' ', false, json::error_handler_t::replace));
        for (const auto& part : all)
          for (auto& line : json::parse(part)) chains->write(std::move(line));
      }
    }
    ++step;

    // 8 (metrics): rewards per verifier, pass rates, KL, clipping, lengths, stage times; of
    //    the combined batch (the dist calls return their input in a single process).
    MeanStd total = mean_std(rewards_all);
    rec["reward_mean"] = finite_or_null(total.mean);
    rec["reward_std"] = finite_or_null(total.std);
    {
      std::vector<std::vector<double>> per(vnames.size());
      std::vector<int64_t> passed(vnames.size(), 0), applicable(vnames.size(), 0);
      std::vector<double> lengths, kls;
      int64_t truncated = 0;
      double neg_logp = 0, comp_tokens = 0;
      for (size_t gi = 0; gi < kept.size(); ++gi) {
        const Sampled& s = rounds[static_cast<size_t>(kept[gi].round)];
        for (int64_t j = 0; j < G; ++j) {
          const int64_t row = kept[gi].g * G + j;
          for (size_t k = 0; k < vnames.size(); ++k) {
            double r = s.table.reward(static_cast<int>(row), static_cast<int>(k));
            per[k].push_back(r);
            if (!std::isnan(r)) {
              ++applicable[k];
              passed[k] += s.table.passed[static_cast<size_t>(row) * vnames.size() + k] != 0;
            }
          }
          lengths.push_back(static_cast<double>(s.rollout.completions[static_cast<size_t>(row)].size()));
          truncated += s.rollout.truncated[static_cast<size_t>(row)];
          neg_logp -= s.rollout.logprobs[row].sum().item<double>();
          comp_tokens += s.rollout.completion_mask[row].sum().item<double>();
        }
      }
      {
        std::vector<double> c;
        for (size_t k = 0; k < vnames.size(); ++k) c.push_back(static_cast<double>(passed[k])), c.push_back(static_cast<double>(applicable[k]));
        c.push_back(static_cast<double>(truncated));
        c.push_back(neg_logp);
        c.push_back(comp_tokens);
        c = dist.sum(c);
        for (size_t k = 0; k < vnames.size(); ++k) passed[k] = static_cast<int64_t>(c[2 * k]), applicable[k] = static_cast<int64_t>(c[2 * k + 1]);
        truncated = static_cast<int64_t>(c[2 * vnames.size()]);
        neg_logp = c[2 * vnames.size() + 1];
        comp_tokens = c[2 * vnames.size() + 2];
        for (auto& v : per) v = dist.all_gather(v);
        lengths = dist.all_gather(lengths);
      }
      for (size_t k = 0; k < vnames.size(); ++k) {
        MeanStd m = mean_std(per[k]);
        rec["reward_mean_" + vnames[k]] = finite_or_null(m.mean);
        rec["reward_std_" + vnames[k]] = finite_or_null(m.std);
        rec["pass_rate_" + vnames[k]] = applicable[k] ? json(static_cast<double>(passed[k]) / applicable[k]) : json(nullptr);
      }
      MeanStd len = mean_std(lengths);
      rec["completion_length_mean"] = finite_or_null(len.mean);
      rec["completion_length_max"] = lengths.empty() ? json(nullptr) : json(*std::max_element(lengths.begin(), lengths.end()));
      rec["truncated_share"] = lengths.empty() ? json(nullptr) : json(static_cast<double>(truncated) / lengths.size());
      // Mean -log p of the sampled tokens: an estimate of the entropy of the policy at the
      // sampling temperature (exact in expectation without top-k / top-p).
      rec["entropy"] = comp_tokens > 0 ? json(neg_logp / comp_tokens) : json(nullptr);
      for (double k : chain_kl) kls.push_back(k);
      kls = dist.all_gather(kls);
      MeanStd kl = mean_std(kls);
      sm.kl = kl.mean;
      rec["kl"] = finite_or_null(kl.mean);
    }
    double tok_denom = std::max(agg.tokens, 1.0);
    sm.reward_mean = total.mean;
    sm.reward_std = total.std;
    sm.loss = updates ? loss_sum / updates : 0.0;
    rec["loss"] = sm.loss;
    rec["policy_loss"] = updates ? agg.policy_loss / updates : 0.0;
    rec["kl_update"] = agg.kl / tok_denom;  // KL of the policy being updated, averaged over the passes
    rec["clip_low"] = agg.clip_low / tok_denom;
    rec["clip_high"] = agg.clip_high / tok_denom;
    rec["dual_clipped"] = agg.dual_clipped / tok_denom;
    rec["ratio_mean"] = agg.ratio_mean / tok_denom;
    rec["grad_norm"] = grad_norm;
    rec["lr"] = lr;
    rec["optimizer_steps"] = updates;
    const double step_s = now_seconds() - t_step;
    rec["time_sample_s"] = sample_s;
    rec["time_score_wait_s"] = score_wait_s;  // verification not hidden behind decoding
    rec["time_verify_busy_s"] = verify_busy_s;
    rec["verify_hidden_share"] = verify_busy_s > 0 ? json(std::max(0.0, 1.0 - score_wait_s / verify_busy_s)) : json(nullptr);
    rec["time_anchor_s"] = anchor_s;
    rec["time_old_logprobs_s"] = old_s;
    rec["time_update_s"] = update_s;
    rec["time_step_s"] = step_s;
    rec["sample_tokens_per_s"] = sample_s > 0 ? sampled_tokens / sample_s : 0.0;
    rec["update_tokens_per_s"] = update_s > 0 ? update_tokens / update_s : 0.0;
    const MemoryPeak mem = memory_peak();
    rec["peak_rss_mb"] = mem.rss_bytes / 1048576.0;
    if (mem.cuda_bytes >= 0) rec["peak_cuda_mb"] = mem.cuda_bytes / 1048576.0;
    result.steps.push_back(sm);
    const bool last = step == cfg.steps;
    if (metrics && cfg.log_every > 0 && (step % cfg.log_every == 0 || last)) metrics->write(rec);
    char suffix[128];
    std::snprintf(suffix, sizeof suffix, "reward %.3f kl %.4f", total.mean, sm.kl);
    if (bar) bar->update(step, suffix + memory_suffix(mem));

    // 9: checkpoint (rank 0); the chains of this step reach the disk first.
    if (dist.is_main() && ((cfg.save_every > 0 && step % cfg.save_every == 0) || last)) {
      chains->flush();
      save_training_checkpoint(cfg.run_dir, step, *policy, optim, trainer_state(), tokenizer_dir, cfg.keep_last);
    }
  }
  if (bar) bar->finish();
  if (chains) chains->flush();

  // ---- save --------------------------------------------------------------------------------------
  result.output_dir = cfg.output.empty() ? run.file("final") : cfg.output;
  if (!dist.is_main()) return result;  // rank 0 writes the model
  std::string tmp = result.output_dir + ".tmp";
  fs::remove_all(tmp);
  SaveOptions so;
  so.tokenizer_dir = tokenizer_dir;
  save_model(*policy, tmp, so);
  fs::remove_all(result.output_dir);
  fs::rename(tmp, result.output_dir);
  log_info("grpo: wrote " + result.output_dir);
  return result;
}

}  // namespace retort
