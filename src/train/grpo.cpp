// The GRPO recipe (see grpo.h for the stages, features and failure modes).
#include "train/grpo.h"

#include <algorithm>           // defines: std::shuffle, std::min, std::count
#include <cmath>               // defines: std::sqrt, std::isnan
#include <filesystem>          // defines: std::filesystem
#include <random>              // defines: std::mt19937_64
#include <map>                 // defines: std::map
#include <set>                 // defines: std::set

#include "audit/chain_log.h"        // defines: ChainLog, ChainEntry
#include "common/config.h"          // defines: ConfigBinder, parse_config, apply_override
#include "common/error.h"           // defines: retort::Error
#include "common/hash.h"            // defines: mix_seed
#include "common/log.h"             // defines: log_info, MetricsWriter, ProgressBar, finite_or_null
#include "common/platform.h"        // defines: now_seconds
#include "common/run_dir.h"         // defines: RunDir
#include "dist/dist.h"              // defines: DistContext, dist_context, shard_range
#include "model/checkpoint.h"       // defines: load_model, save_model
#include "model/transformer.h"      // defines: Qwen2ForCausalLM
#include "rewards/extract.h"        // defines: rewards::split_think
#include "rollout/logprobs.h"       // defines: token_logprobs
#include "rollout/sampler.h"        // defines: Rollout, SamplerOptions
#include "rollout/score.h"          // defines: sample_and_score, ScoredRollout, chain_entry, sampler_stop_ids, mix_seed
#include "tokenizer/chat_template.h"  // defines: ChatTemplate
#include "tokenizer/tokenizer.h"    // defines: Tokenizer

namespace fs = std::filesystem;

namespace retort {

using nlohmann::json;

void GrpoDataConfig::bind(ConfigBinder& b) {
  b.field("prompts", prompts);
  format.bind(b);  // the format options sit beside the path: data.chat_template, data.math_instruction, ...
  b.field("max_prompt_tokens", max_prompt_tokens, Range::at_least(1));
}

void GrpoSamplingConfig::bind(ConfigBinder& b) {
  b.field("temperature", temperature, Range::at_least(0).up_to(100));
  b.field("top_p", top_p, Range::above(0).up_to(1));
  b.field("top_k", top_k, Range::at_least(0));
  b.field("max_new_tokens", max_new_tokens, Range::at_least(1).up_to(1 << 20));
  b.field("seed_per_row", seed_per_row);
  b.field("kv_cache_mb", kv_cache_mb, Range::at_least(0).up_to(1 << 24));
}

void AdvantageConfig::bind(ConfigBinder& b) {
  b.choice("estimator", estimator, {"grpo", "rloo", "reinforce_pp_baseline"});
  b.choice("scale", scale, {"group", "batch", "none"});
  b.field("eps", eps, Range::above(0));
}

void DynamicSamplingConfig::bind(ConfigBinder& b) {
  b.field("enabled", enabled);
  b.field("max_retries", max_retries, Range::at_least(0));
}

void OpdConfig::bind(ConfigBinder& b) { b.field("weight", weight, Range::at_least(0).up_to(1e6)); }

void CurriculumConfig::bind(ConfigBinder& b) {
  b.field("enabled", enabled);
  b.field("window", window, Range::at_least(1).up_to(1000));
  b.field("low", low, Range::at_least(0).below(1));
  b.field("high", high, Range::above(0).up_to(1));
  b.field("set_aside_epochs", set_aside_epochs, Range::at_least(1).up_to(1000000));
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
  b.field("prompts_per_step", prompts_per_step, Range::at_least(1));
  b.field("group_size", group_size, Range::at_least(2));
  b.field("sampling", sampling);
  b.field("tools", tools);
  b.field("rewards", rewards);
  b.field("advantage", advantage);
  b.field("dynamic_sampling", dynamic_sampling);
  b.field("mu", mu, Range::at_least(1));
  b.field("minibatch_size", minibatch_size, Range::at_least(0));
  b.field("grad_accum", grad_accum, Range::at_least(1));
  b.field("train", train);
  b.field("logprob_micro_batch", logprob_micro_batch, Range::at_least(0));
  b.field("loss", loss);
  b.field("opd", opd);
  b.field("curriculum", curriculum);
  b.choice("overlong", overlong, {"none", "mask", "penalty"});
  b.field("optim", optim);
  b.field("steps", steps, Range::at_least(1));
  b.field("log_every", log_every, Range::at_least(0));
  b.field("save_every", save_every, Range::at_least(0));
  b.field("keep_last", keep_last, Range::at_least(1));
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

// The pass-rate curriculum's state (grpo.h): per prompt, the pass rates of its last `window`
// samplings, and the last epoch of the prompt order it is skipped in. Saved in the checkpoint's
// trainer state, so that a resumed run skips and returns the same prompts.
struct Curriculum {
  CurriculumConfig cfg;
  std::map<int64_t, std::vector<double>> recent;  // prompt -> pass rates, oldest first (at most window)
  std::map<int64_t, int64_t> set_aside_until;     // prompt -> last epoch it is skipped in
  std::map<int64_t, int64_t> drawn_in;            // prompt -> the epoch it was last drawn in (this step's)

  bool skips(int64_t prompt, int64_t epoch) const {
    auto it = set_aside_until.find(prompt);
    return it != set_aside_until.end() && epoch <= it->second;
  }
  // One sampling's pass rate of `prompt` (NaN: no verifier applied, not counted). Returns
  // whether the prompt was set aside by it.
  bool record(int64_t prompt, double pass_rate) {
    if (std::isnan(pass_rate)) return false;
    auto& r = recent[prompt];
    r.push_back(pass_rate);
    if (static_cast<int>(r.size()) > cfg.window) r.erase(r.begin());
    if (static_cast<int>(r.size()) < cfg.window) return false;
    double mean = 0;
    for (double x : r) mean += x;
    mean /= static_cast<double>(r.size());
    if (mean > cfg.low && mean < cfg.high) return false;
    // Skipped in the next set_aside_epochs epochs after the one it was drawn in.
    set_aside_until[prompt] = drawn_in[prompt] + cfg.set_aside_epochs;
    recent.erase(prompt);  // judged afresh from new samplings when it returns
    return true;
  }
  int64_t set_aside(int64_t epoch) const {
    int64_t n = 0;
    for (const auto& kv : set_aside_until) n += epoch <= kv.second;
    return n;
  }
  json state() const {
    json rec = json::array(), aside = json::array();
    for (const auto& kv : recent) rec.push_back(json{kv.first, kv.second});
    for (const auto& kv : set_aside_until) aside.push_back(json{kv.first, kv.second});
    return json{{"recent_pass_rates", rec}, {"set_aside_until_epoch", aside}};
  }
  void restore(const json& st) {
    recent.clear();
    set_aside_until.clear();
    for (const auto& e : st.at("recent_pass_rates")) recent[e.at(0).get<int64_t>()] = e.at(1).get<std::vector<double>>();
    for (const auto& e : st.at("set_aside_until_epoch")) set_aside_until[e.at(0).get<int64_t>()] = e.at(1).get<int64_t>();
  }
};

// Where training is in the prompts: the epoch, the next place in the epoch's order
// (epoch_order of (seed, epoch)) and the pass-rate curriculum that skips set-aside prompts as
// they come up. Together with the step, the whole RNG state of a run (trainer_state).
class PromptOrder {
 public:
  PromptOrder(size_t n_prompts, uint64_t seed, const CurriculumConfig& cfg) : n_(n_prompts), seed_(seed) { curriculum_.cfg = cfg; }
  // Continues at (epoch, cursor), as a checkpoint recorded them.
  void seek(int64_t epoch, int64_t cursor) {
    epoch_ = epoch;
    cursor_ = cursor;
    order_ = epoch_order(n_, seed_, epoch_);
  }
  // The next prompt the curriculum does not skip; the next epoch's order once this one is used
  // up. Ends: every set-aside prompt returns after finitely many epochs.
  int64_t next() {
    for (;;) {
      if (cursor_ >= static_cast<int64_t>(order_.size())) seek(epoch_ + 1, 0);
      const int64_t p = order_[static_cast<size_t>(cursor_++)];
      if (curriculum_.cfg.enabled && curriculum_.skips(p, epoch_)) {
        ++skipped_draws_;
        continue;
      }
      curriculum_.drawn_in[p] = epoch_;
      return p;
    }
  }
  // A new step: its count of skipped draws starts at 0.
  void begin_step() { skipped_draws_ = 0; }
  // The step's sampled groups, every rank's in rank order: prompts[i] (a PromptSet index, as
  // a double) sampled with pass rate rates[i] (NaN: no verifier applied). -> how many prompts
  // the curriculum set aside by them.
  int64_t record(const std::vector<double>& prompts, const std::vector<double>& rates) {
    int64_t newly = 0;
    for (size_t i = 0; i < prompts.size(); ++i) newly += curriculum_.record(static_cast<int64_t>(prompts[i]), rates[i]);
    return newly;
  }
  void restore_curriculum(const json& st) { curriculum_.restore(st); }
  json curriculum_state() const { return curriculum_.state(); }
  int64_t set_aside() const { return curriculum_.set_aside(epoch_); }  // prompts skipped in the current epoch
  int64_t skipped_draws() const { return skipped_draws_; }               // this step's draws of set-aside prompts
  int64_t epoch() const { return epoch_; }
  int64_t cursor() const { return cursor_; }

 private:
  size_t n_;
  uint64_t seed_;
  int64_t epoch_ = 0, cursor_ = 0, skipped_draws_ = 0;
  std::vector<int64_t> order_;
  Curriculum curriculum_;
};

// ---- 1 trajectory: sample + score -----------------------------------------------------------

// One chain of the step: a completion of a prompt with its rewards, advantage and KL. The
// step's chains are group by group (G consecutive chains share a prompt).
struct Chain {
  int64_t prompt = 0;               // index into the PromptSet
  std::vector<int32_t> completion;  // [L_i] ids, the stop token included
  std::vector<uint8_t> written;     // [L_i] 1 on model-written ids, 0 on tool observations appended by the
                                    // engine (Rollout::completion_mask): only written ids are trained on
  std::vector<float> logprobs;      // [L_i] log pi_old of each id at the sampling temperature, from the sampler
  std::vector<double> rewards;      // [K] per verifier, NaN = not applicable
  std::vector<uint8_t> passed;      // [K]
  ChainEntry entry;                 // the chains.jsonl line: text, split, verifier cells, reward, advantage, KL,
                                    // length, truncated (rollout/score.h chain_entry)
};

// Row `row` of a rollout's completion mask ([N, L] on the CPU) as n bytes (n = the row's
// completion length): 1 on model-written ids, 0 on the tool observations the engine appended
// (rollout/sampler.h).
std::vector<uint8_t> written_tokens(const torch::Tensor& completion_mask, int64_t row, size_t n) {
  auto m = completion_mask[row].narrow(0, 0, static_cast<int64_t>(n)).to(torch::kUInt8).contiguous();
  return std::vector<uint8_t>(m.data_ptr<uint8_t>(), m.data_ptr<uint8_t>() + n);
}

// What stage 1 produced: this rank's kept chains and how they were obtained.
struct Trajectory {
  std::vector<Chain> chains;          // [N] kept groups x this rank's completions of each (G in one process)
  // Every group sampled, kept or dropped (the same on every rank): its prompt and its pass rate
  // (the share of its G completions that every applicable verifier passed; NaN when none applied).
  std::vector<double> sampled_prompt, sampled_pass_rate;
  int64_t groups_global = 0;          // kept groups (each spread over all ranks)
  int64_t dropped = 0, all_equal_groups = 0, rounds = 0;
  int64_t sampled_tokens = 0;         // written by this rank's sampler
  double sample_s = 0, score_wait_s = 0, verify_busy_s = 0;
};

bool all_equal(const std::vector<double>& r, size_t from, size_t n) {
  for (size_t i = from + 1; i < from + n; ++i)
    if (std::abs(r[i] - r[from]) > 1e-12) return false;
  return true;
}

// ---- the batch the update trains on -----------------------------------------------------

struct GrpoBatch {
  torch::Tensor ids;              // [N, P+L] int64: left-padded prompt, then the completion, right-padded
  torch::Tensor attention_mask;   // [N, P+L] int64: 1 on prompt and completion tokens, observations included
  torch::Tensor completion_mask;  // [N, L] float: 1 on model-written completion tokens (stop token included),
                                  // 0 on tool observations and padding: every log-prob, ratio, KL, entropy,
                                  // mismatch, OPD advantage and token count below is taken under it
  torch::Tensor loss_mask;        // [N, L] float: completion_mask, minus truncated rows when overlong = mask
  torch::Tensor sample_logprobs;  // [N, L] float: log pi_old from the sampler
  torch::Tensor old_logprobs;     // [N, L] float: log pi_old used by the ratio (recomputed; see update_policy)
  torch::Tensor is_weight;        // [N, L] float: the rollout correction's weight (grpo_loss.h), when old is recomputed
  torch::Tensor ref_logprobs;     // [N, L] float: the anchor; undefined without one
  torch::Tensor advantages;       // [N] float, or [N, L] with on-policy distillation (apply_opd)
  int64_t P = 0, L = 0;
};

// The chains as one padded batch: prompts right-aligned at P, completions from P on.
GrpoBatch gather_batch(const std::vector<Chain>& chains, const PromptSet& ps, int64_t pad_id, bool mask_truncated) {
  GrpoBatch b;
  for (const auto& c : chains) {
    b.P = std::max<int64_t>(b.P, static_cast<int64_t>(ps.ids[static_cast<size_t>(c.prompt)].size()));
    b.L = std::max<int64_t>(b.L, static_cast<int64_t>(c.completion.size()));
  }
  const int64_t N = static_cast<int64_t>(chains.size());
  b.ids = torch::full({N, b.P + b.L}, pad_id, torch::kLong);
  b.attention_mask = torch::zeros({N, b.P + b.L}, torch::kLong);
  b.completion_mask = torch::zeros({N, b.L}, torch::kFloat);
  b.sample_logprobs = torch::zeros({N, b.L}, torch::kFloat);
  b.advantages = torch::zeros({N}, torch::kFloat);
  auto ia = b.ids.accessor<int64_t, 2>();
  auto ma = b.attention_mask.accessor<int64_t, 2>();
  auto ca = b.completion_mask.accessor<float, 2>();
  auto la = b.sample_logprobs.accessor<float, 2>();
  std::vector<float> keep_row(static_cast<size_t>(N), 1.0f);
  for (int64_t i = 0; i < N; ++i) {
    const Chain& c = chains[static_cast<size_t>(i)];
    const auto& prompt = ps.ids[static_cast<size_t>(c.prompt)];
    const int64_t P = static_cast<int64_t>(prompt.size());
    for (int64_t j = 0; j < P; ++j) ia[i][b.P - P + j] = prompt[static_cast<size_t>(j)], ma[i][b.P - P + j] = 1;
    for (size_t j = 0; j < c.completion.size(); ++j) {
      ia[i][b.P + static_cast<int64_t>(j)] = c.completion[j];
      ma[i][b.P + static_cast<int64_t>(j)] = 1;  // an observation is context: attended to, never a target
      ca[i][static_cast<int64_t>(j)] = c.written[j] ? 1.0f : 0.0f;
      la[i][static_cast<int64_t>(j)] = c.logprobs[j];
    }
    b.advantages[i] = static_cast<float>(c.entry.advantage);
    if (mask_truncated && c.entry.truncated) keep_row[static_cast<size_t>(i)] = 0.0f;
  }
  b.loss_mask = b.completion_mask * torch::tensor(keep_row).unsqueeze(1);
  return b;
}

// log p of the completion tokens: token_logprobs over the whole sequence, then the L
// positions that predict completion tokens (P-1 .. P+L-2). -> [N, L], 0 off the completion.
// At the sampling temperature (logits / T): the policy being optimised is the one that drew the
// tokens, so the ratio starts at 1 and the anchor's KL is taken on the same footing (TRL and verl
// do the same). T = 1 when sampling is greedy. `entropy`, when set, receives the per-token
// entropy of softmax(logits / T) [N, L] from the same forward (differentiable with entropy_grad).
torch::Tensor completion_logprobs(Qwen2ForCausalLMImpl& model, const GrpoBatch& b, const torch::Tensor& rows, int64_t micro_batch,
                                  double temperature, torch::Device device, bool packed = false, bool checkpoint = false,
                                  torch::Tensor* entropy = nullptr, bool entropy_grad = false) {
  auto ids = rows.defined() ? b.ids.index_select(0, rows) : b.ids;               // [n, P+L]
  auto att = rows.defined() ? b.attention_mask.index_select(0, rows) : b.attention_mask;
  auto cm = (rows.defined() ? b.completion_mask.index_select(0, rows) : b.completion_mask).to(device);  // [n, L]
  LogprobOptions lo;
  lo.micro_batch = micro_batch;
  lo.temperature = temperature;
  lo.checkpoint_layers = checkpoint;
  lo.entropy = entropy;
  lo.entropy_grad = entropy_grad;
  if (!packed) {
    lo.first = b.P - 1;  // only the positions that predict completion tokens: [n, L]
    auto lp = token_logprobs(model, ids.to(device), att.to(device), lo) * cm;
    if (entropy) *entropy = *entropy * cm;
    return lp;
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
  auto at = pos.reshape({-1}).to(device);                                             // [n L]
  if (entropy) *entropy = entropy->reshape({-1}).index_select(0, at).view({n, L}) * cm;
  return lp.reshape({-1}).index_select(0, at).view({n, L}) * cm;
}

// ---- small helpers ---------------------------------------------------------------------------

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

Qwen2ForCausalLM copy_model(Qwen2ForCausalLMImpl& m, torch::Device device) {
  Qwen2ForCausalLM c(m.config());
  c->load_hf_state_dict(m.hf_state_dict(), "the initial policy");
  c->to(device);
  c->eval();
  for (auto& p : c->parameters()) p.set_requires_grad(false);
  return c;
}

// ---- 3 update (stages 5-7: anchor, old log-probs, mu passes of clipped-surrogate steps) ----
// Its internals are the recipe's loss path; keep them here, apart from the stages around them.

struct UpdateStats {
  std::vector<double> chain_kl;  // [N] each chain's mean KL to the anchor under the sampling policy (NaN without one)
  GrpoLossStats agg;             // token-weighted over every micro-batch of every pass
  RolloutMismatchStats mismatch; // sampler vs training forward over completion tokens (stage 6)
  double entropy_sum = 0, entropy_tokens = 0;  // the first pass's per-token entropy over completion tokens
  double loss_sum = 0, grad_norm = 0;
  int64_t updates = 0, update_tokens = 0;
  double anchor_s = 0, old_s = 0, update_s = 0;
};

// Rows `rows` ([n] int64) of a batch tensor, on `device`.
torch::Tensor rows_on(const torch::Tensor& t, const torch::Tensor& rows, torch::Device device) {
  return t.index_select(0, rows).to(device);
}

// Every row's completion log-probs [N, L] (CPU) from a no-grad forward of `model`, for the
// anchor and old passes: under the update's token budget when one is set (train.micro_batch_tokens;
// packed without padding when train.packing), else logprob_micro_batch rows at a time. At R1
// lengths this bounds the pass's activations as it bounds the update's.
torch::Tensor nograd_completion_logprobs(Qwen2ForCausalLMImpl& model, const GrpoBatch& b, const GrpoConfig& cfg, double temperature,
                                         torch::Device device) {
  torch::NoGradGuard ng;
  const int64_t N = b.ids.size(0);
  if (cfg.train.micro_batch_tokens <= 0 || N == 0)
    return completion_logprobs(model, b, {}, cfg.logprob_micro_batch, temperature, device).to(torch::kCPU);
  auto real = b.attention_mask.to(torch::kCPU).sum(1);  // [N] real tokens of each row
  std::vector<int64_t> lengths;
  for (int64_t i = 0; i < N; ++i) lengths.push_back(cfg.train.packing ? real[i].item<int64_t>() : b.P + b.L);
  auto out = torch::zeros({N, b.L}, torch::kFloat);  // [N, L]
  for (const auto& part : split_by_token_budget(lengths, cfg.train.micro_batch_tokens, cfg.train.packing)) {
    auto rows = torch::tensor(part, torch::kLong);  // [n]
    auto lp = completion_logprobs(model, b, rows, 0, temperature, device, cfg.train.packing).to(torch::kCPU, torch::kFloat);
    out.index_copy_(0, rows, lp);
  }
  return out;
}

// 5: the anchor's log-probs (batch.ref_logprobs [N, L], unless apply_opd kept the teacher's),
//    and each chain's mean KL to it under the sampling policy (k-estimator of the loss, with
//    the same single definition: grpo_loss with A = 0, beta = 1) into u.chain_kl [N].
void anchor_kl(Qwen2ForCausalLMImpl& anchor, GrpoBatch& batch, const GrpoConfig& cfg, torch::Device device, double lp_temperature,
               UpdateStats& u) {
  const int64_t N = batch.ids.size(0);
  double t0 = now_seconds();
  torch::NoGradGuard ng;
  if (!batch.ref_logprobs.defined())  // already there when the teacher is the anchor and opd is on (apply_opd)
    batch.ref_logprobs = nograd_completion_logprobs(anchor, batch, cfg, lp_temperature, device);  // [N, L]
  GrpoLossOptions klo = cfg.loss;
  klo.beta = 1.0;
  klo.aggregation = "sequence";
  klo.top_entropy_quantile = 1.0;  // the KL term only (no policy term, no entropy)
  klo.entropy_coef = 0.0;
  auto zero = torch::zeros({1});
  for (int64_t i = 0; i < N; ++i) {
    GrpoLossStats st;
    grpo_loss(batch.sample_logprobs[i].unsqueeze(0), batch.sample_logprobs[i].unsqueeze(0), batch.ref_logprobs[i].unsqueeze(0),
              zero, batch.completion_mask[i].unsqueeze(0), klo, &st);
    u.chain_kl[static_cast<size_t>(i)] = st.kl;
  }
  u.anchor_s = now_seconds() - t0;
}

// What every micro-batch of stage 7 reads.
struct UpdatePlan {
  const GrpoConfig& cfg;
  const GrpoBatch& batch;
  torch::Device device;
  double lp_temperature;
  std::vector<int64_t> row_tokens;  // [N] real tokens of each row (packing's lengths)
  bool old_in_pass;                 // old log-probs from the micro-batch's own forward (stage 6)
};

// The micro-batches of the minibatch perm[mb, mb + n_mb) (batch rows): grad_accum equal row
// counts, or by the token budget (train.micro_batch_tokens; a row's length is its real tokens
// when packed, else P + L).
std::vector<std::vector<int64_t>> micro_batches(const UpdatePlan& p, const std::vector<int64_t>& perm, int64_t mb, int64_t n_mb) {
  const GrpoConfig& cfg = p.cfg;
  std::vector<std::vector<int64_t>> parts;
  if (cfg.train.micro_batch_tokens > 0) {
    std::vector<int64_t> mb_rows(perm.begin() + mb, perm.begin() + mb + n_mb), lengths;
    for (int64_t r : mb_rows) lengths.push_back(cfg.train.packing ? p.row_tokens[static_cast<size_t>(r)] : p.batch.P + p.batch.L);
    for (const auto& part : split_by_token_budget(lengths, cfg.train.micro_batch_tokens, cfg.train.packing)) {
      parts.emplace_back();
      for (int64_t i : part) parts.back().push_back(mb_rows[static_cast<size_t>(i)]);
    }
  } else {
    const int64_t micro = (n_mb + cfg.grad_accum - 1) / cfg.grad_accum;
    for (int64_t m0 = mb; m0 < mb + n_mb; m0 += micro)
      parts.emplace_back(perm.begin() + m0, perm.begin() + std::min(m0 + micro, mb + n_mb));
  }
  return parts;
}

// A micro-batch's share of its minibatch's loss (each part weighted, as the loss's backward).
struct MicroLoss {
  double loss = 0, policy = 0, kl = 0;
};

// One micro-batch of rows `part` ([n] batch rows) in pass `pass`: the policy's forward ([n, L]
// log-probs with autograd, and the per-token entropy), the old log-probs and the rollout
// correction's weights ([n, L]), the clipped-surrogate loss weighted to the minibatch's
// aggregate (denominators seq_denom sequences, tok_denom tokens), its backward, and its
// statistics added to u.
MicroLoss micro_step(Qwen2ForCausalLMImpl& policy, const UpdatePlan& p, const std::vector<int64_t>& part, int pass, double seq_denom,
                     double tok_denom, UpdateStats& u) {
  const GrpoConfig& cfg = p.cfg;
  const GrpoBatch& batch = p.batch;
  const RolloutCorrectionOptions& rc = cfg.loss.rollout_correction;
  const int64_t n = static_cast<int64_t>(part.size());
  auto rows = torch::tensor(part);
  const bool packed = cfg.train.micro_batch_tokens > 0 && cfg.train.packing;
  int64_t micro_tokens = 0;
  for (int64_t r : part) micro_tokens += packed ? p.row_tokens[static_cast<size_t>(r)] : batch.P + batch.L;
  // The per-token entropy comes from the same chunked head pass; it keeps its gradient
  // only for an entropy bonus.
  torch::Tensor entropy;  // [n, L]
  auto logp = completion_logprobs(policy, batch, rows, 0, p.lp_temperature, p.device, packed,
                                  cfg.train.checkpoint(micro_tokens, policy.config().hidden_size, policy.config().num_hidden_layers),
                                  &entropy, /*entropy_grad=*/cfg.loss.entropy_coef != 0.0);  // [n, L], with autograd
  auto mask = rows_on(batch.loss_mask, rows, p.device);
  torch::Tensor old, is_weight;  // [n, L]
  if (p.old_in_pass && pass == 0) {
    old = logp.detach();
    is_weight = rollout_correction_weight(old, rows_on(batch.sample_logprobs, rows, p.device), rows_on(batch.completion_mask, rows, p.device),
                                          rc, &u.mismatch);  // sync point (its statistics)
    if (batch.old_logprobs.defined()) {  // mu > 1: kept for the later passes
      auto at = rows.to(p.device);
      batch.old_logprobs.index_copy_(0, at, old.to(torch::kFloat));
      batch.is_weight.index_copy_(0, at, is_weight.to(torch::kFloat));
    }
  } else {
    old = rows_on(batch.old_logprobs, rows, p.device);
    is_weight = rows_on(batch.is_weight, rows, p.device);
  }
  if (pass == 0) {
    torch::NoGradGuard ng;
    u.entropy_sum += entropy.detach().sum().item<double>();  // 0 off the completion
    u.entropy_tokens += rows_on(batch.completion_mask, rows, p.device).sum().item<double>();
  }
  GrpoLossStats st;
  auto loss = grpo_loss(logp, old, batch.ref_logprobs.defined() ? rows_on(batch.ref_logprobs, rows, p.device) : torch::Tensor(),
                        rows_on(batch.advantages, rows, p.device), mask, cfg.loss, &st, entropy, is_weight);
  // Weight of this micro-batch in the minibatch's aggregate (see grpo_loss.h):
  //   sequence, dr_grpo with the default N x max_completion_length divisor: its share of sequences;
  //   token: its share of tokens; dr_grpo with a set constant: 1 (sums add up).
  double w = static_cast<double>(n) / seq_denom;
  if (cfg.loss.aggregation == "token") w = tok_denom > 0 ? st.tokens / tok_denom : 0.0;
  if (cfg.loss.aggregation == "dr_grpo" && cfg.loss.dr_grpo_constant > 0) w = 1.0;
  (loss * w).backward();
  u.agg.kl += st.kl * st.tokens;
  u.agg.clip_low += st.clip_low * st.tokens;
  u.agg.clip_high += st.clip_high * st.tokens;
  u.agg.dual_clipped += st.dual_clipped * st.tokens;
  u.agg.ratio_mean += st.ratio_mean * st.tokens;
  u.agg.entropy_kept += st.entropy_kept * st.tokens;
  u.agg.policy_loss += st.policy_loss * w;
  u.agg.tokens += st.tokens;
  u.update_tokens += rows_on(batch.attention_mask, rows, p.device).sum().item<int64_t>();  // sync point
  return MicroLoss{st.loss * w, st.policy_loss * w, st.kl * w};
}

// Under data parallel: the update's sums over every rank (the statistics of the combined batch).
void reduce_update_stats(UpdateStats& u, const DistContext& dist) {
  auto v = dist.sum({u.loss_sum, u.agg.kl, u.agg.clip_low, u.agg.clip_high, u.agg.dual_clipped, u.agg.ratio_mean, u.agg.policy_loss,
                     u.agg.tokens, static_cast<double>(u.update_tokens)});
  u.loss_sum = v[0], u.agg.kl = v[1], u.agg.clip_low = v[2], u.agg.clip_high = v[3], u.agg.dual_clipped = v[4];
  u.agg.ratio_mean = v[5], u.agg.policy_loss = v[6], u.agg.tokens = v[7], u.update_tokens = static_cast<int64_t>(v[8]);
  RolloutMismatchStats& mm = u.mismatch;
  auto w = dist.sum({mm.tokens, mm.abs_sum, mm.over, mm.capped, mm.sequences, mm.masked, mm.weight_sum, u.entropy_sum,
                     u.entropy_tokens, u.agg.entropy_kept});
  mm.tokens = w[0], mm.abs_sum = w[1], mm.over = w[2], mm.capped = w[3], mm.sequences = w[4], mm.masked = w[5];
  mm.weight_sum = w[6], u.entropy_sum = w[7], u.entropy_tokens = w[8], u.agg.entropy_kept = w[9];
  mm.abs_max = dist.max(mm.abs_max);
}

// Stages 5-7 on this rank's batch (ids [N, P+L], N chains; n_global over every rank):
// anchor KL, old log-probs, then mu passes of minibatch optimizer steps. Sets
// batch.ref_logprobs / old_logprobs / is_weight ([N, L]) on the way.
UpdateStats update_policy(Qwen2ForCausalLMImpl* policy, Qwen2ForCausalLMImpl* anchor, AdamW& optim,
                          std::vector<torch::Tensor>& params, GrpoBatch& batch, const GrpoConfig& cfg,
                          const DistContext& dist, torch::Device device, double lp_temperature, int64_t step,
                          int64_t n_global, double lr, NonFiniteGuard& nonfinite) {
  // The largest micro-batch any pass can run: under the token budget (a longer row alone),
  // else every row at once.
  const int64_t row_tokens = batch.ids.size(1);
  const int64_t largest = cfg.train.micro_batch_tokens > 0 ? std::max(cfg.train.micro_batch_tokens, row_tokens) : batch.ids.numel();
  const int64_t width = std::max<int64_t>(policy->config().hidden_size, anchor ? anchor->config().hidden_size : 0);
  TrainingHeapScope heap(cfg.train.compact_heap_for(largest, width));
  UpdateStats u;
  u.agg.entropy_kept = 0;  // a token-weighted sum below
  const int64_t N = batch.ids.size(0);
  u.chain_kl.assign(static_cast<size_t>(N), std::nan(""));

  // 5: the anchor's log-probs and each chain's KL to it.
  if (anchor && N > 0) anchor_kl(*anchor, batch, cfg, device, lp_temperature, u);

  const int64_t M = cfg.minibatch_size > 0 ? std::min(cfg.minibatch_size, N) : N;
  // Data parallel: minibatch_size is 0, so one minibatch (this rank's whole slice) per pass.
  const int64_t n_minibatches = dist.enabled() ? 1 : (N + M - 1) / M;

  // 6: the old policy's log-probs, always from a training forward pass (TRL, verl): the
  //    sampler's own differ from the trainer's (decode kernels, batch shapes, precision), and
  //    the ratio must compare like with like. With one minibatch per pass the policy does not
  //    move before the first pass's optimizer step, so every micro-batch of pass 0 sees the old
  //    policy: old = logp.detach() inside the micro-batch (the ratio is exactly 1, as TRL with
  //    num_iterations = 1), kept in batch.old_logprobs for passes 1..mu-1 (no extra forward).
  //    Several minibatches: a no-grad forward before the passes. Either way the mismatch with
  //    the sampler's log-probs is measured and, as configured, corrected
  //    (rollout_correction_weight in grpo_loss.h).
  const bool old_in_pass = n_minibatches == 1;
  if (old_in_pass && cfg.mu > 1 && N > 0) {
    auto f = torch::TensorOptions().dtype(torch::kFloat).device(device);
    batch.old_logprobs = torch::zeros({N, batch.L}, f);  // [N, L], filled by pass 0's micro-batches
    batch.is_weight = torch::ones({N, batch.L}, f);      // [N, L]
  }
  if (!old_in_pass && N > 0) {
    double t0 = now_seconds();
    torch::NoGradGuard ng;
    policy->eval();
    batch.old_logprobs = nograd_completion_logprobs(*policy, batch, cfg, lp_temperature, device);
    policy->train();
    batch.is_weight = rollout_correction_weight(batch.old_logprobs, batch.sample_logprobs, batch.completion_mask,
                                                cfg.loss.rollout_correction, &u.mismatch);
    u.old_s = now_seconds() - t0;
  }

  // 7: mu passes over the batch; each minibatch is one optimizer step, accumulated over
  //    grad_accum micro-batches whose losses are weighted to the minibatch's aggregation.
  double t0 = now_seconds();
  UpdatePlan plan{cfg, batch, device, lp_temperature, std::vector<int64_t>(static_cast<size_t>(N)), old_in_pass};
  {
    auto counts = batch.attention_mask.sum(1);
    for (int64_t i = 0; i < N; ++i) plan.row_tokens[static_cast<size_t>(i)] = counts[i].item<int64_t>();
  }
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
      double mb_loss = 0;
      std::map<std::string, double> mb_parts;  // policy and kl terms of this minibatch, for the non-finite check
      for (const auto& part : micro_batches(plan, perm, mb, n_mb)) {
        const MicroLoss l = micro_step(*policy, plan, part, pass, seq_denom, tok_denom, u);
        mb_loss += l.loss;
        mb_parts["policy"] += l.policy;
        mb_parts["kl"] += l.kl;
      }
      dist.all_reduce_gradients(params);  // sync point (no-op in a single process)
      u.grad_norm = clip_grad_norm(params, cfg.optim.grad_clip);
      if (nonfinite.allows_update(step + 1, mb_parts, u.grad_norm)) optim.step(lr);
      optim.zero_grad();
      u.loss_sum += mb_loss;
      ++u.updates;
    }
  }
  u.update_s = now_seconds() - t0;
  if (dist.enabled()) reduce_update_stats(u, dist);
  return u;
}

// ---- 5b on-policy distillation ------------------------------------------------------------------

struct OpdStats {
  std::vector<double> chain_opd;  // [N] each chain's mean per-token OPD advantage, w (teacher - sampler)
  double opd_sum = 0, opd_abs_sum = 0, reverse_kl_sum = 0, tokens = 0;  // over completion tokens
  double verifier_sum = 0, verifier_abs_sum = 0, chains = 0;           // the verifier's advantage, per chain
  double teacher_s = 0;
};

// The teacher's log-prob of each sampled token minus the sampler's, times opd.weight, added to
// each chain's verifier advantage: batch.advantages becomes [N, L] (train/grpo_loss.h
// opd_token_advantages). The student's log-prob is the sampler's (batch.sample_logprobs), not
// the training forward's: it is the log-prob of the policy that drew the token, a constant of
// the step like a verifier's reward (no gradient through it, the same in every one of the mu
// passes), so that the loss is the policy gradient of the reverse KL as a reward; the training
// forward's would either carry a gradient (a different, differentiable KL term) or change from
// pass to pass. Both at the sampling temperature, as the anchor's. When the teacher is the
// anchor its log-probs are kept as batch.ref_logprobs, so the anchor stage does not recompute them.
OpdStats apply_opd(GrpoBatch& batch, Qwen2ForCausalLMImpl& teacher, bool teacher_is_anchor, const GrpoConfig& cfg,
                   torch::Device device, double lp_temperature) {
  OpdStats o;
  const double t0 = now_seconds();
  torch::NoGradGuard ng;
  auto teacher_lp = nograd_completion_logprobs(teacher, batch, cfg, lp_temperature, device);  // [N, L]
  if (teacher_is_anchor) batch.ref_logprobs = teacher_lp;
  const auto& m = batch.completion_mask;                                                       // [N, L]
  auto opd = (cfg.opd.weight * (teacher_lp - batch.sample_logprobs) * m).to(torch::kFloat64);  // [N, L]
  auto counts = m.sum(1).to(torch::kFloat64);                                                  // [N]
  auto per_chain = opd.sum(1) / counts.clamp_min(1.0);                                         // [N]
  o.chain_opd.assign(per_chain.data_ptr<double>(), per_chain.data_ptr<double>() + per_chain.numel());
  o.opd_sum = opd.sum().item<double>();
  o.opd_abs_sum = opd.abs().sum().item<double>();
  o.reverse_kl_sum = ((batch.sample_logprobs - teacher_lp) * m).sum().item<double>();  // log pi_sampler - log pi_teacher
  o.tokens = m.sum().item<double>();
  auto va = batch.advantages.to(torch::kFloat64);                                             // [N]
  o.verifier_sum = va.sum().item<double>();
  o.verifier_abs_sum = va.abs().sum().item<double>();
  o.chains = static_cast<double>(va.numel());
  batch.advantages = opd_token_advantages(batch.advantages, teacher_lp, batch.sample_logprobs, m, cfg.opd.weight);  // [N, L]
  o.teacher_s = now_seconds() - t0;
  return o;
}

// ---- the step's stages ------------------------------------------------------------------------

// What every stage reads and no stage changes.
struct StepContext {
  const GrpoConfig& cfg;
  const PromptSet& prompts;
  const rewards::RewardSet& rewards;
  const Tokenizer& tok;
  const DistContext& dist;
  const SamplerOptions& sampler;  // the config's sampling options; seeds are set per round
  torch::Device device;
  double lp_temperature;          // the sampler's log-prob temperature (1 when greedy)
  const GrpoHooks& hooks;
};

// Whether row `row` passed: 1 when every applicable verifier passed it, 0 when one failed it,
// NaN when none applied.
double row_passed(const rewards::RewardTable& table, int64_t row) {
  bool any = false, all = true;
  for (int k = 0; k < table.k; ++k) {
    if (std::isnan(table.reward(static_cast<int>(row), k))) continue;
    any = true;
    all = all && table.passed[static_cast<size_t>(row) * table.k + k] != 0;
  }
  return any ? (all ? 1.0 : 0.0) : std::nan("");
}

// The pass rate of the G rows from `from` (row_passed values): the share passed of those some
// verifier applied to; NaN when none applied.
double group_pass_rate(const std::vector<double>& passed, size_t from, int64_t G) {
  int64_t n = 0, yes = 0;
  for (size_t i = from; i < from + static_cast<size_t>(G); ++i) {
    if (std::isnan(passed[i])) continue;
    ++n;
    yes += passed[i] > 0.5;
  }
  return n > 0 ? static_cast<double>(yes) / n : std::nan("");
}

// Under data parallel each rank holds completions shard_range(G, rank, world) of every group
// (see generate_trajectory). `by_rank`: the ranks' values concatenated in rank order, each rank's
// group by group (`groups` groups). -> the values group by group, completion j of group g at
// g*G + j: the order one process holds them in. A single process's values come back as they are.
std::vector<double> regroup(const std::vector<double>& by_rank, int64_t groups, int64_t G, const DistContext& dist) {
  const int world = dist.world_size();
  if (world == 1) return by_rank;
  std::vector<double> out(static_cast<size_t>(groups * G));
  size_t at = 0;
  for (int r = 0; r < world; ++r) {
    const ShardRange sr = shard_range(G, r, world);
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t j = sr.begin; j < sr.end; ++j) out[static_cast<size_t>(g * G + j)] = by_rank.at(at++);
  }
  return out;
}

// 1 trajectory: B prompts x G completions through the one scored-rollout path (each finished
// completion goes to the verifiers at once); with dynamic sampling (DAPO) groups whose rewards
// are all equal teach nothing (zero advantage): they are dropped and more prompts are drawn,
// at most max_retries more rounds. Prompts come from `order` (the curriculum skips set-aside
// ones).
// Under data parallel every rank draws the same prompts and samples its share of each prompt's
// completions (j in shard_range(G, rank, world)); the round's rewards are then gathered, so that
// every rank sees whole groups and keeps or drops the same ones. Every rank so holds the same
// number of chains of every kept group, and the update's work is balanced across the ranks
// whichever groups dynamic sampling keeps (sharding prompts instead left one rank with up to
// all of a round's kept groups: the demo's update took 1.02 s a step on two ranks against 1.19 s
// on one process).
Trajectory generate_trajectory(Qwen2ForCausalLMImpl& policy, const StepContext& c, int64_t step,
                               PromptOrder& order) {
  const GrpoConfig& cfg = c.cfg;
  const int64_t B = cfg.prompts_per_step, G = cfg.group_size;
  const ShardRange mine = shard_range(G, c.dist.rank(), c.dist.world_size());
  const int64_t Gl = mine.end - mine.begin;  // this rank's completions of each prompt
  const bool has_verifier = !c.rewards.names().empty();
  Trajectory t;
  for (int round = 0; round <= (cfg.dynamic_sampling.enabled ? cfg.dynamic_sampling.max_retries : 0); ++round) {
    const int64_t want = B - t.groups_global;
    if (want <= 0) break;
    ++t.rounds;
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < want; ++i) idx.push_back(order.next());
    std::vector<const PromptRecord*> recs;
    for (int64_t p : idx) recs.push_back(&c.prompts.records[static_cast<size_t>(p)]);
    ScoredRollout s;
    torch::Tensor written_mask;                      // [want*Gl, L] on the CPU
    std::vector<double> total_here, passed_here;     // [want*Gl] this rank's rows
    if (Gl > 0) {
      SamplerOptions so = c.sampler;
      so.seed = mix_seed(cfg.runtime.seed, step, round);
      so.group_size = Gl;
      // Completion (prompt i of the round, sample j): a stream of its own, keyed by the
      // prompt's place in the whole round and j, whichever rank samples it and whatever else
      // the engine batches with it.
      for (int64_t i = 0; i < want; ++i)
        for (int64_t j = mine.begin; j < mine.end; ++j) so.row_seeds.push_back(mix_seed(static_cast<int64_t>(so.seed), i, j));
      std::vector<std::vector<int32_t>> ids;
      for (int64_t p : idx) ids.push_back(c.prompts.ids[static_cast<size_t>(p)]);
      s = sample_and_score(policy, ids, recs, so, c.rewards, c.tok);
      if (c.hooks.on_rollout) c.hooks.on_rollout(s);
      written_mask = s.rollout.completion_mask.to(torch::kCPU);  // one transfer
      t.sample_s += s.sample_s;
      t.score_wait_s += s.score_wait_s;
      t.verify_busy_s += s.verify_busy_s;
      for (int64_t row = 0; row < want * Gl; ++row) {
        total_here.push_back(s.table.total[static_cast<size_t>(row)]);
        passed_here.push_back(row_passed(s.table, row));
      }
    }
    // Whole groups on every rank (sync point under data parallel).
    const std::vector<double> total = regroup(c.dist.all_gather(total_here), want, G, c.dist);
    const std::vector<double> passed = regroup(c.dist.all_gather(passed_here), want, G, c.dist);
    int64_t kept = 0;
    for (int64_t g = 0; g < want; ++g) {
      const bool equal = all_equal(total, static_cast<size_t>(g * G), static_cast<size_t>(G));
      t.all_equal_groups += equal;
      t.sampled_prompt.push_back(static_cast<double>(idx[static_cast<size_t>(g)]));
      t.sampled_pass_rate.push_back(group_pass_rate(passed, static_cast<size_t>(g * G), G));
      // Tokens the model wrote (tool observations are appended, not sampled), on this rank.
      if (Gl > 0) t.sampled_tokens += written_mask.narrow(0, g * Gl, Gl).sum().item<int64_t>();
      // Without a verifier (on-policy distillation alone) every group is equal and every
      // group still has its per-token advantage: none is dropped.
      if (equal && cfg.dynamic_sampling.enabled && has_verifier) {
        ++t.dropped;
        continue;
      }
      ++kept;
      for (int64_t m = 0; m < Gl; ++m) {
        const int64_t row = g * Gl + m;
        Chain ch;
        ch.prompt = idx[static_cast<size_t>(g)];
        ch.completion = s.rollout.completions[static_cast<size_t>(row)];
        ch.written = written_tokens(written_mask, row, ch.completion.size());
        auto lp = s.rollout.logprobs[row].narrow(0, 0, static_cast<int64_t>(ch.completion.size())).to(torch::kCPU).contiguous();
        ch.logprobs.assign(lp.data_ptr<float>(), lp.data_ptr<float>() + lp.numel());
        for (int k = 0; k < s.table.k; ++k) {
          ch.rewards.push_back(s.table.reward(static_cast<int>(row), k));
          ch.passed.push_back(s.table.passed[static_cast<size_t>(row) * s.table.k + k]);
        }
        ch.entry = chain_entry(*recs[static_cast<size_t>(g)], s, row);
        ch.entry.sample = mine.begin + m;  // its place in the whole group
        t.chains.push_back(std::move(ch));
      }
    }
    t.groups_global += kept;  // the same on every rank
  }
  return t;
}

// 2 advantages, group by group, on the combined batch (in one process's order), of which this
// rank keeps its own chains. Returns every rank's rewards in that order (for the metrics);
// sets each chain's advantage and group number in the combined batch.
std::vector<double> compute_advantages(Trajectory& t, const StepContext& c) {
  const int64_t G = c.cfg.group_size;
  const ShardRange mine = shard_range(G, c.dist.rank(), c.dist.world_size());
  const int64_t Gl = mine.end - mine.begin;
  std::vector<double> here;
  for (const auto& ch : t.chains) here.push_back(ch.entry.reward);
  std::vector<double> all = regroup(c.dist.all_gather(here), t.groups_global, G, c.dist);
  std::vector<double> adv = all.empty() ? std::vector<double>{} : group_advantages(all, static_cast<int>(G), c.cfg.advantage.scale, c.cfg.advantage.eps, c.cfg.advantage.estimator);
  for (size_t i = 0; i < t.chains.size(); ++i) {
    const int64_t g = static_cast<int64_t>(i) / Gl, j = mine.begin + static_cast<int64_t>(i) % Gl;
    t.chains[i].entry.advantage = adv[static_cast<size_t>(g * G + j)];
    t.chains[i].entry.group = g;
  }
  return all;
}

// 4 log (chains): one line per chain of the kept batch, group by group (under data parallel:
// gathered to rank 0 and put back in that order).
void write_chains(std::vector<Chain>& chains, int64_t groups, int64_t G, const UpdateStats& u, bool has_anchor, int64_t step,
                  const DistContext& dist, ChainLog* log, const OpdStats* opd = nullptr) {
  json lines = json::array();
  for (size_t i = 0; i < chains.size(); ++i) {
    ChainEntry& e = chains[i].entry;
    e.step = step;
    if (has_anchor) e.kl = u.chain_kl[i];
    if (opd) e.opd_advantage = opd->chain_opd[i];
    if (!dist.enabled()) log->write(e);
    else lines.push_back(chain_line(e));
  }
  if (dist.enabled()) {
    std::vector<std::string> all = dist.gather_to_main(lines.dump(-1, ' ', false, json::error_handler_t::replace));
    if (!log) return;
    // Each rank holds its share of every group's completions (generate_trajectory): written
    // group by group, completion by completion, as one process writes them.
    std::vector<json> parts;
    for (const auto& part : all) parts.push_back(json::parse(part));
    const int world = dist.world_size();
    for (int64_t g = 0; g < groups; ++g)
      for (int r = 0; r < world; ++r) {
        const ShardRange sr = shard_range(G, r, world);
        for (int64_t m = 0; m < sr.end - sr.begin; ++m) log->write(std::move(parts[static_cast<size_t>(r)].at(static_cast<size_t>(g * (sr.end - sr.begin) + m))));
      }
  }
}

// The kept chains' metrics, of the combined batch: reward, pass rate per verifier, completion
// lengths (all tokens, as sampling.max_new_tokens bounds them; the model-written ones; the tool
// observations'), truncated share and the sampled tokens' mean -log p.
void chain_metrics(const Trajectory& t, const StepContext& c, json& rec) {
  const std::vector<std::string>& vnames = c.rewards.names();
  const DistContext& dist = c.dist;
  std::vector<std::vector<double>> per(vnames.size());
  std::vector<int64_t> passed(vnames.size(), 0), applicable(vnames.size(), 0);
  std::vector<double> lengths, written_lengths, obs_lengths;  // per chain
  int64_t truncated = 0;
  double neg_logp = 0, comp_tokens = 0;
  for (const auto& ch : t.chains) {
    for (size_t k = 0; k < vnames.size(); ++k) {
      per[k].push_back(ch.rewards[k]);
      if (!std::isnan(ch.rewards[k])) {
        ++applicable[k];
        passed[k] += ch.passed[k] != 0;
      }
    }
    const auto written = static_cast<double>(std::count(ch.written.begin(), ch.written.end(), uint8_t{1}));
    lengths.push_back(static_cast<double>(ch.completion.size()));
    written_lengths.push_back(written);
    obs_lengths.push_back(static_cast<double>(ch.completion.size()) - written);
    truncated += ch.entry.truncated;
    for (size_t j = 0; j < ch.logprobs.size(); ++j)
      if (ch.written[j]) neg_logp -= ch.logprobs[j];
    comp_tokens += written;
  }
  {
    std::vector<double> v;
    for (size_t k = 0; k < vnames.size(); ++k) v.push_back(static_cast<double>(passed[k])), v.push_back(static_cast<double>(applicable[k]));
    v.push_back(static_cast<double>(truncated));
    v.push_back(neg_logp);
    v.push_back(comp_tokens);
    v = dist.sum(v);
    for (size_t k = 0; k < vnames.size(); ++k) passed[k] = static_cast<int64_t>(v[2 * k]), applicable[k] = static_cast<int64_t>(v[2 * k + 1]);
    truncated = static_cast<int64_t>(v[2 * vnames.size()]);
    neg_logp = v[2 * vnames.size() + 1];
    comp_tokens = v[2 * vnames.size() + 2];
    for (auto& x : per) x = dist.all_gather(x);
    lengths = dist.all_gather(lengths);
    written_lengths = dist.all_gather(written_lengths);
    obs_lengths = dist.all_gather(obs_lengths);
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
  // Tool-integrated chains: the tokens the model wrote (what the loss trains) and the tool
  // observations the engine appended (context only), per chain; 0 observations without tools.
  rec["written_length_mean"] = finite_or_null(mean_std(written_lengths).mean);
  rec["obs_tokens_mean"] = finite_or_null(mean_std(obs_lengths).mean);
  rec["truncated_share"] = lengths.empty() ? json(nullptr) : json(static_cast<double>(truncated) / lengths.size());
  // Mean -log p of the sampled tokens under the sampler: the entropy's Monte Carlo estimate
  // (unbiased only without top-k / top-p); "entropy" (rollout_metrics) is the exact per-token entropy.
  rec["neg_logp_mean"] = comp_tokens > 0 ? json(neg_logp / comp_tokens) : json(nullptr);
}

// The first pass's per-token entropy, and the sampler vs trainer mismatch and its correction.
void rollout_metrics(const UpdateStats& u, json& rec) {
  // The policy's per-token entropy at the sampling temperature over the completion tokens, from
  // the first pass's training forwards.
  rec["entropy"] = u.entropy_tokens > 0 ? json(u.entropy_sum / u.entropy_tokens) : json(nullptr);
  // Sampler vs trainer: l = old - sampler per completion token (whatever the correction mode).
  const RolloutMismatchStats& mm = u.mismatch;
  const bool compared = mm.tokens > 0;
  rec["mismatch_logratio_mean"] = compared ? json(mm.abs_sum / mm.tokens) : json(nullptr);
  rec["mismatch_logratio_max"] = compared ? json(mm.abs_max) : json(nullptr);
  rec["mismatch_frac_over"] = compared ? json(mm.over / mm.tokens) : json(nullptr);
  rec["rollout_weight_mean"] = compared ? json(mm.weight_sum / mm.tokens) : json(nullptr);  // 1: nothing corrected
  rec["rollout_capped_frac"] = compared ? json(mm.capped / mm.tokens) : json(nullptr);      // tis: tokens truncated at the cap
  rec["rollout_masked_frac"] = mm.sequences > 0 ? json(mm.masked / mm.sequences) : json(nullptr);  // sequence_mask: sequences dropped
}

// 4 log (metrics): rewards per verifier, pass rates, KL, clipping, lengths, stage times; of the
// combined batch (the dist calls return their input in a single process).
json step_metrics(const Trajectory& t, const std::vector<double>& rewards_all, const UpdateStats& u, const StepContext& c,
                  int64_t step, double lr, GrpoStepMetrics& sm) {
  const DistContext& dist = c.dist;
  json rec = {{"step", step}};
  rec["groups_all_equal"] = t.all_equal_groups;
  rec["groups_dropped"] = t.dropped;
  rec["sampling_rounds"] = t.rounds;
  rec["groups"] = t.groups_global;
  MeanStd total = mean_std(rewards_all);
  rec["reward_mean"] = finite_or_null(total.mean);
  rec["reward_std"] = finite_or_null(total.std);
  chain_metrics(t, c, rec);
  rollout_metrics(u, rec);
  MeanStd kl = mean_std(dist.all_gather(u.chain_kl));
  sm.kl = kl.mean;
  rec["kl"] = finite_or_null(kl.mean);
  const GrpoLossStats& agg = u.agg;
  double tok_denom = std::max(agg.tokens, 1.0);
  sm.reward_mean = total.mean;
  sm.reward_std = total.std;
  sm.loss = u.updates ? u.loss_sum / u.updates : 0.0;
  rec["loss"] = sm.loss;
  rec["policy_loss"] = u.updates ? agg.policy_loss / u.updates : 0.0;
  rec["kl_update"] = agg.kl / tok_denom;  // KL of the policy being updated, averaged over the passes
  rec["clip_low"] = agg.clip_low / tok_denom;
  rec["clip_high"] = agg.clip_high / tok_denom;
  rec["dual_clipped"] = agg.dual_clipped / tok_denom;
  rec["ratio_mean"] = agg.ratio_mean / tok_denom;
  rec["entropy_kept"] = agg.entropy_kept / tok_denom;  // share of tokens whose policy term counts (loss.top_entropy_quantile)
  rec["grad_norm"] = u.grad_norm;
  rec["lr"] = lr;
  rec["optimizer_steps"] = u.updates;
  rec["time_sample_s"] = t.sample_s;
  rec["time_score_wait_s"] = t.score_wait_s;  // verification not hidden behind decoding
  rec["time_verify_busy_s"] = t.verify_busy_s;
  rec["verify_hidden_share"] = t.verify_busy_s > 0 ? json(std::max(0.0, 1.0 - t.score_wait_s / t.verify_busy_s)) : json(nullptr);
  rec["time_anchor_s"] = u.anchor_s;
  rec["time_old_logprobs_s"] = u.old_s;
  rec["time_update_s"] = u.update_s;
  rec["sample_tokens_per_s"] = t.sample_s > 0 ? t.sampled_tokens / t.sample_s : 0.0;
  rec["update_tokens_per_s"] = u.update_s > 0 ? u.update_tokens / u.update_s : 0.0;
  return rec;
}

// ---- setup ---------------------------------------------------------------------------------

// The checks the binder cannot make, in this order: prompts given, exactly one of model /
// model_config, positive sizes, a verifier (or on-policy distillation), the teachers, the
// curriculum's bounds, the overlong mode, the anchor, then the train block's options.
void check_grpo_config(const GrpoConfig& cfg, const std::string& where) {
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
  if (cfg.rewards.verifiers.empty() && !cfg.opd.enabled()) {
    throw Error(ErrorInfo{"no verifier configured", where + ": rewards.verifiers", "at least one {\"name\", \"weight\"}", "[]",
                          "e.g. \"rewards\": {\"verifiers\": [{\"name\": \"math\"}]}, or opd.weight > 0 for on-policy distillation alone"});
  }
  if (cfg.opd.enabled() && cfg.teacher.empty()) {
    throw Error(ErrorInfo{"on-policy distillation needs a teacher checkpoint", where + ": teacher", "a model folder", "\"\"",
                          "set teacher=PATH, or opd.weight=0"});
  }
  if (cfg.curriculum.enabled && cfg.rewards.verifiers.empty()) {
    throw Error(ErrorInfo{"the pass-rate curriculum needs a verifier (a pass rate)", where + ": curriculum.enabled",
                          "at least one verifier in rewards.verifiers", "none", "set curriculum.enabled=false"});
  }
  if (cfg.curriculum.enabled && !(cfg.curriculum.low < cfg.curriculum.high)) {
    throw Error(ErrorInfo{"curriculum.low must be below curriculum.high", where + ": curriculum.low",
                          "low < high (prompts with a recent pass rate in (low, high) are trained on)",
                          "low " + std::to_string(cfg.curriculum.low) + ", high " + std::to_string(cfg.curriculum.high), ""});
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
}

// The config with the overrides applied, checked (check_grpo_config).
GrpoConfig parse_grpo_config(const json& doc_in, const std::string& where, const std::vector<std::string>& overrides) {
  json doc = doc_in;
  for (const auto& o : overrides) apply_override(doc, o);
  GrpoConfig cfg = parse_config<GrpoConfig>(doc, where);
  // Dr. GRPO divides by N x the maximum completion length (not the batch's longest, which
  // would make the loss depend on padding).
  cfg.loss.max_completion_length = cfg.sampling.max_new_tokens;
  check_grpo_config(cfg, where);
  return cfg;
}

// Data parallel (RANK/WORLD_SIZE set) takes one optimizer step per pass over the combined
// batch: minibatches would split it differently on each rank.
void check_data_parallel(const GrpoConfig& cfg, const DistContext& dist, const std::string& where) {
  if (dist.enabled() && cfg.minibatch_size > 0) {
    throw Error(ErrorInfo{"data parallel GRPO takes one optimizer step per pass over the whole batch", where + ": minibatch_size",
                          "minibatch_size = 0 under RANK/WORLD_SIZE", std::to_string(cfg.minibatch_size),
                          "set minibatch_size=0 (use mu for more updates per batch, grad_accum to bound memory)"});
  }
}

// The teacher checkpoint, frozen (eval mode, no gradients); its vocabulary must cover the
// tokenizer's, as the anchor's and the distillation's log-probs index it by the policy's ids.
Qwen2ForCausalLM load_teacher(const GrpoConfig& cfg, const Tokenizer& tok, torch::Device device) {
  Qwen2ForCausalLM t = load_model(cfg.teacher, LoadOptions{device.str(), "auto"});
  t->eval();
  for (auto& p : t->parameters()) p.set_requires_grad(false);
  if (t->config().vocab_size < tok.vocab_size()) {
    throw Error(ErrorInfo{"the teacher's vocabulary does not cover the tokenizer", cfg.teacher,
                          "vocab_size >= " + std::to_string(tok.vocab_size()), std::to_string(t->config().vocab_size),
                          "the KL anchor and the distillation teacher must share the policy's tokenizer"});
  }
  return t;
}

// The run's models on `device`. anchor and opd_teacher are null when not configured.
struct GrpoModels {
  Qwen2ForCausalLM policy{nullptr};       // trained; float32, training mode
  Qwen2ForCausalLM anchor{nullptr};       // the KL anchor: the frozen initial policy (reference) or the teacher
  Qwen2ForCausalLM opd_teacher{nullptr};  // on-policy distillation's teacher: the anchor when the anchor is the teacher
  bool opd_teacher_is_anchor = false;     // loaded once, its log-probs serve both (apply_opd)
};

// The policy (a checkpoint, or random weights from model_config), with rank 0's weights on
// every rank and a vocabulary that covers the tokenizer's; then the anchor and the teacher.
// The reference copy is taken here, before any resume, so that it is the initial policy.
GrpoModels load_models(const GrpoConfig& cfg, const Tokenizer& tok, torch::Device device, const DistContext& dist,
                       const std::string& where) {
  GrpoModels m;
  m.policy = cfg.model.empty() ? Qwen2ForCausalLM(ModelConfig::from_json(cfg.model_config, where + ": model_config"))
                               : load_model(cfg.model, LoadOptions{device.str(), "float32"});
  m.policy->to(device);
  m.policy->train();
  dist.broadcast(m.policy->parameters());  // every rank (and the reference copy) starts from rank 0's weights
  if (m.policy->config().vocab_size < tok.vocab_size()) {
    throw Error(ErrorInfo{"the tokenizer has more tokens than the model's vocabulary", where, "vocab_size >= " + std::to_string(tok.vocab_size()),
                          std::to_string(m.policy->config().vocab_size), "use the model's own tokenizer"});
  }
  if (cfg.anchor == "reference") {
    m.anchor = copy_model(*m.policy, device);
  } else if (cfg.anchor == "teacher") {
    m.anchor = load_teacher(cfg, tok, device);
  }
  m.opd_teacher_is_anchor = cfg.anchor == "teacher";
  if (cfg.opd.enabled()) m.opd_teacher = m.opd_teacher_is_anchor ? m.anchor : load_teacher(cfg, tok, device);
  return m;
}

// The config's sampling options (B prompts x G completions, stopping at the chat template's
// end-of-turn and the eos token); seeds are set per round (generate_trajectory).
SamplerOptions sampler_options(const GrpoConfig& cfg, const ModelConfig& mc, const Tokenizer& tok) {
  SamplerOptions s;
  s.group_size = cfg.group_size;
  s.max_new_tokens = cfg.sampling.max_new_tokens;
  s.temperature = cfg.sampling.temperature;
  s.top_p = cfg.sampling.top_p;
  s.top_k = cfg.sampling.top_k;
  s.greedy = cfg.sampling.temperature <= 0;
  s.stop_token_ids = sampler_stop_ids(mc, tok, ChatTemplate::by_name(cfg.data.format.chat_template));
  s.kv_cache_mb = cfg.sampling.kv_cache_mb;
  s.pad_token_id = 0;
  s.tools = cfg.tools;  // the pool and the encoder come from sample_and_score
  return s;
}

// The newest checkpoint in run_dir (when resume is on), which must be a GRPO one of the same
// world size: the weights, the optimizer, the place in the prompt order and the curriculum's
// state. -> the step it was written at (0 = fresh).
int64_t resume_from_checkpoint(const GrpoConfig& cfg, Qwen2ForCausalLMImpl& policy, AdamW& optim, const DistContext& dist,
                               PromptOrder& order) {
  int64_t step = 0, epoch = 0, cursor = 0;
  if (cfg.resume) {
    if (auto ckpt = latest_checkpoint(cfg.run_dir)) {
      json st = load_training_checkpoint(*ckpt, policy, optim);
      if (st.value("stage", "") != "grpo") {
        throw Error(ErrorInfo{"the run directory holds a checkpoint of another stage", *ckpt, "stage grpo", st.value("stage", "?"),
                              "give this GRPO run its own run_dir"});
      }
      dist.check_resume(st.value("world_size", int64_t{1}), *ckpt);
      step = st.at("step");
      epoch = st.at("epoch");
      cursor = st.at("cursor");
      if (cfg.curriculum.enabled) order.restore_curriculum(st.at("curriculum"));
      log_info("resumed from " + *ckpt + " at step " + std::to_string(step));
    }
  }
  order.seek(epoch, cursor);
  return step;
}

// The run's logs (rank 0; null elsewhere): metrics.jsonl and chains.jsonl. What a killed run
// wrote after its last checkpoint (step) goes; the resumed run writes it again.
struct RunLogs {
  std::unique_ptr<MetricsWriter> metrics;
  std::unique_ptr<ChainLog> chains;
};

RunLogs open_logs(const RunDir& run, const DistContext& dist, int64_t step) {
  RunLogs logs;
  if (dist.is_main()) {
    truncate_jsonl_after_step(run.file("metrics.jsonl"), step);
    truncate_jsonl_after_step(run.file("chains.jsonl"), step);
    logs.metrics = std::make_unique<MetricsWriter>(run.file("metrics.jsonl"));
    logs.chains = std::make_unique<ChainLog>(run.file("chains.jsonl"));
  }
  return logs;
}

// ---- one step ------------------------------------------------------------------------------

// On-policy distillation's metrics, over every rank: both parts of the advantage, the
// verifier's (per chain) and the distillation's (per token, weighted), and the mean reverse
// KL log pi_sampler - log pi_teacher per token.
void add_opd_metrics(json& rec, const OpdStats& opd, const DistContext& dist) {
  auto v = dist.sum({opd.opd_sum, opd.opd_abs_sum, opd.reverse_kl_sum, opd.tokens, opd.verifier_sum, opd.verifier_abs_sum,
                     opd.chains, opd.teacher_s});
  auto per = [](double x, double n) { return n > 0 ? json(x / n) : json(nullptr); };
  rec["adv_verifier_mean"] = per(v[4], v[6]);
  rec["adv_verifier_abs_mean"] = per(v[5], v[6]);
  rec["adv_opd_mean"] = per(v[0], v[3]);
  rec["adv_opd_abs_mean"] = per(v[1], v[3]);
  rec["opd_reverse_kl"] = per(v[2], v[3]);
  rec["time_opd_teacher_s"] = opd.teacher_s;
}

// One step (the 1-based step + 1): 1 trajectory (sample + score, dynamic sampling's extra
// rounds; the curriculum records every sampled group), 2 advantages over the kept batch,
// 3 update on the padded batch ([N, P+L], N = this rank's kept chains), 4 log its chains to
// `chains` (null off rank 0). -> the step's metrics record (without the memory peak); fills sm.
json train_step(const StepContext& c, GrpoModels& m, AdamW& optim, std::vector<torch::Tensor>& params, PromptOrder& order,
                NonFiniteGuard& nonfinite, ChainLog* chains, int64_t step, GrpoStepMetrics& sm) {
  const GrpoConfig& cfg = c.cfg;
  const double t_step = now_seconds();
  sm.step = step + 1;
  const double lr = learning_rate(cfg.optim, step, cfg.steps);

  // 1 trajectory: sample + score (+ dynamic sampling's extra rounds).
  order.begin_step();
  Trajectory traj = generate_trajectory(*m.policy, c, step, order);
  // The curriculum sees every sampled group (dropped ones too); every rank holds them all.
  int64_t newly_set_aside = 0;
  if (cfg.curriculum.enabled) newly_set_aside = order.record(traj.sampled_prompt, traj.sampled_pass_rate);
  // 2 advantages over the kept batch.
  std::vector<double> rewards_all = compute_advantages(traj, c);
  const int64_t n_global = static_cast<int64_t>(rewards_all.size());
  sm.groups_dropped = traj.dropped;
  sm.chains = n_global;
  // 3 update. Under data parallel a rank may hold no group this step; it still joins every
  //   gradient sum (with zeros), so that all ranks take the same optimizer steps.
  UpdateStats upd;
  OpdStats opd;
  if (n_global > 0) {
    GrpoBatch batch = gather_batch(traj.chains, c.prompts, c.sampler.pad_token_id, cfg.overlong == "mask");
    if (cfg.opd.enabled() && !traj.chains.empty())
      opd = apply_opd(batch, *m.opd_teacher, m.opd_teacher_is_anchor, cfg, c.device, c.lp_temperature);
    upd = update_policy(m.policy.get(), m.anchor ? m.anchor.get() : nullptr, optim, params, batch, cfg, c.dist, c.device,
                        c.lp_temperature, step, n_global, lr, nonfinite);
    write_chains(traj.chains, traj.groups_global, cfg.group_size, upd, static_cast<bool>(m.anchor), step + 1, c.dist, chains,
                 cfg.opd.enabled() ? &opd : nullptr);
  }

  // 4 log.
  json rec = step_metrics(traj, rewards_all, upd, c, step + 1, lr, sm);
  if (cfg.opd.enabled()) add_opd_metrics(rec, opd, c.dist);
  if (cfg.curriculum.enabled) {
    rec["curriculum_set_aside"] = order.set_aside();  // prompts skipped in the current epoch
    rec["curriculum_set_aside_new"] = newly_set_aside;
    rec["curriculum_skipped_draws"] = order.skipped_draws();
    rec["epoch"] = order.epoch();
  }
  rec["time_step_s"] = now_seconds() - t_step;
  return rec;
}

// ---- checkpoints -----------------------------------------------------------------------------

// The checkpoint's trainer state. The sampler's and the minibatch order's random streams are
// functions of (seed, step), so the step, the epoch and the cursor into the prompt order (and
// the curriculum's per-prompt pass rates and set-aside epochs) are the whole RNG state.
json trainer_state(const GrpoConfig& cfg, int64_t step, const PromptOrder& order, const AdamW& optim, const DistContext& dist) {
  json st{{"step", step},
          {"epoch", order.epoch()},
          {"cursor", order.cursor()},
          {"optimizer_steps", optim.steps_taken()},
          {"seed", cfg.runtime.seed},
          {"rng", {{"sampler", "splitmix64(seed, step, round)"}, {"minibatch_order", "mt19937_64(splitmix64(seed, step, 1000 + pass))"}}},
          {"stage", "grpo"},
          {"world_size", dist.world_size()}};
  if (cfg.curriculum.enabled) st["curriculum"] = order.curriculum_state();
  return st;
}

// A resumable checkpoint (rank 0): the policy, the optimizer and the trainer state, written
// atomically; the last keep_last kept.
void write_checkpoint(const StepContext& c, Qwen2ForCausalLMImpl& policy, int64_t step, const PromptOrder& order, const AdamW& optim,
                      const std::string& tokenizer_dir) {
  save_training_checkpoint(c.cfg.run_dir, step, policy, optim, trainer_state(c.cfg, step, order, optim, c.dist), tokenizer_dir,
                           c.cfg.keep_last);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

GrpoResult run_grpo(const json& doc_in, const std::string& where, const std::vector<std::string>& overrides,
                    const GrpoHooks& hooks) {
  // ---- setup: config, device, run directory -------------------------------------------------
  GrpoConfig cfg = parse_grpo_config(doc_in, where, overrides);
  log_info(apply_runtime(cfg.runtime));
  torch::Device device(resolve_device(cfg.runtime.device));
  log_info("precision: " + apply_precision(cfg.runtime, device.str()));
  const DistContext& dist = dist_context(device);
  check_data_parallel(cfg, dist, where);
  RunDir run(cfg.run_dir, /*lock=*/dist.is_main());  // ranks share the folder; rank 0 holds the lock
  if (cfg.resume && latest_checkpoint(cfg.run_dir)) run.check_resumed_config(config_to_json(cfg), canonical_config<GrpoConfig>, kResumeFreeKeys);
  if (dist.is_main()) run.save_resolved_config(config_to_json(cfg));

  // ---- setup: tokenizer, prompts, verifiers --------------------------------------------------
  const std::string tok_path = !cfg.tokenizer.empty() ? cfg.tokenizer : (fs::path(cfg.model) / "tokenizer.json").string();
  Tokenizer tok = Tokenizer::from_file(tok_path);
  const std::string tokenizer_dir = fs::path(tok_path).parent_path().string();
  const PromptSet prompts = load_prompt_set(cfg.data, tok);
  rewards::RewardSet reward_set(cfg.rewards, hooks.registry ? *hooks.registry : rewards::builtin_registry(), nullptr,
                                /*allow_empty=*/cfg.opd.enabled());

  // ---- setup: models, optimizer, sampler ----------------------------------------------------
  GrpoModels models = load_models(cfg, tok, device, dist, where);
  std::vector<std::pair<std::string, torch::Tensor>> named;
  std::vector<torch::Tensor> params;
  for (auto& p : models.policy->named_parameters()) {
    named.emplace_back(p.key(), p.value());
    params.push_back(p.value());
  }
  AdamW optim(named, cfg.optim);
  const SamplerOptions sampler = sampler_options(cfg, models.policy->config(), tok);
  const double lp_temperature = sampler.greedy ? 1.0 : cfg.sampling.temperature;  // as the sampler's log-probs

  // ---- setup: resume -----------------------------------------------------------------------
  GrpoResult result;
  PromptOrder order(prompts.records.size(), static_cast<uint64_t>(cfg.runtime.seed), cfg.curriculum);
  int64_t step = resume_from_checkpoint(cfg, *models.policy, optim, dist, order);
  result.resumed_from = step;
  RunLogs logs = open_logs(run, dist, step);

  // ---- train -----------------------------------------------------------------------------------
  std::unique_ptr<ProgressBar> bar;
  if (dist.is_main()) {
    bar = std::make_unique<ProgressBar>("grpo", cfg.steps, "step");
    bar->update(step);
  }
  NonFiniteGuard nonfinite("grpo", cfg.optim.skip_nonfinite, cfg.run_dir);
  const StepContext ctx{cfg, prompts, reward_set, tok, dist, sampler, device, lp_temperature, hooks};
  while (step < cfg.steps) {
    GrpoStepMetrics sm;
    json rec = train_step(ctx, models, optim, params, order, nonfinite, logs.chains.get(), step, sm);
    ++step;
    const MemoryPeak mem = memory_peak();
    rec["peak_rss_mb"] = mem.rss_bytes / 1048576.0;
    if (mem.cuda_bytes >= 0) rec["peak_cuda_mb"] = mem.cuda_bytes / 1048576.0;
    result.steps.push_back(sm);
    const bool last = step == cfg.steps;
    if (logs.metrics && cfg.log_every > 0 && (step % cfg.log_every == 0 || last)) logs.metrics->write(rec);
    char suffix[128];
    std::snprintf(suffix, sizeof suffix, "reward %.3f kl %.4f", sm.reward_mean, sm.kl);
    if (bar) bar->update(step, suffix + memory_suffix(mem));

    // 9: checkpoint (rank 0); the chains of this step reach the disk first.
    if (dist.is_main() && ((cfg.save_every > 0 && step % cfg.save_every == 0) || last)) {
      logs.chains->flush();
      write_checkpoint(ctx, *models.policy, step, order, optim, tokenizer_dir);
    }
  }
  if (bar) bar->finish();
  if (logs.chains) logs.chains->flush();

  // ---- save --------------------------------------------------------------------------------------
  result.output_dir = cfg.output.empty() ? run.file("final") : cfg.output;
  if (!dist.is_main()) return result;  // rank 0 writes the model
  SaveOptions so;
  so.tokenizer_dir = tokenizer_dir;
  save_final_model(*models.policy, result.output_dir, so);
  log_info("grpo: wrote " + result.output_dir);
  return result;
}

}  // namespace retort
