#include "train/sft.h"

#include <algorithm>   // defines: std::shuffle, std::sort
#include <cmath>       // defines: std::isnan
#include <filesystem>  // defines: std::filesystem
#include <random>      // defines: std::mt19937_64

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/platform.h"
#include "common/run_dir.h"
#include "dist/dist.h"
#include "model/checkpoint.h"
#include "model/transformer.h"
#include "rollout/sampler.h"
#include "tokenizer/chat_template.h"
#include "train/distill.h"
#include "train/micro_batch.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace retort {

void SftDataConfig::bind(ConfigBinder& b) {
  b.field("train", train);
  b.field("valid", valid);
  b.field("valid_fraction", valid_fraction, Range::at_least(0).below(1));
  format.bind(b);  // the trace options sit beside the paths: data.max_length, data.chat_template, ...
}

void SftConfig::bind(ConfigBinder& b) {
  b.field("run_dir", run_dir);
  b.field("model", model);
  b.field("model_config", model_config);
  b.field("tokenizer", tokenizer);
  b.field("output", output);
  b.field("runtime", runtime);
  b.field("data", data);
  b.field("optim", optim);
  b.field("steps", steps, Range::at_least(1));
  b.field("batch_size", batch_size, Range::at_least(1));
  b.field("grad_accum", grad_accum, Range::at_least(1));
  b.field("log_every", log_every, Range::at_least(0));
  b.field("eval_every", eval_every, Range::at_least(0));
  b.field("save_every", save_every, Range::at_least(0));
  b.field("keep_last", keep_last, Range::at_least(1));
  b.field("resume", resume);
  b.field("distill", distill);
  b.field("train", train);
}

namespace {

// ---- batches ------------------------------------------------------------------------------

// One epoch's batches: a seeded permutation, then windows of 16 batches sorted by length so
// that a batch holds similar lengths (little padding), then the batches shuffled again.
std::vector<std::vector<int64_t>> epoch_batches(const std::vector<TokenizedSample>& data, int batch_size, uint64_t seed,
                                                int64_t epoch) {
  std::vector<int64_t> order(data.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::mt19937_64 rng(seed * 1000003ull + static_cast<uint64_t>(epoch));
  std::shuffle(order.begin(), order.end(), rng);
  const size_t window = static_cast<size_t>(batch_size) * 16;
  for (size_t w = 0; w < order.size(); w += window) {
    auto end = order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), w + window));
    std::stable_sort(order.begin() + static_cast<std::ptrdiff_t>(w), end,
                     [&](int64_t a, int64_t b) { return data[a].ids.size() < data[b].ids.size(); });
  }
  std::vector<std::vector<int64_t>> batches;
  for (size_t i = 0; i < order.size(); i += static_cast<size_t>(batch_size))
    batches.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(i),
                         order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), i + batch_size)));
  std::shuffle(batches.begin(), batches.end(), rng);
  return batches;
}

struct Batch {
  torch::Tensor ids;        // [B, T] int64, right-padded with 0 (packed: B = 1, the sequences one after another)
  torch::Tensor attention;  // [B, T] int64: 1 for real tokens
  torch::Tensor sequence_ids;  // [1, T] int64 when packed (which sequence each token belongs to); undefined otherwise
  torch::Tensor targets;    // [B, T-1] int64: ids shifted left
  torch::Tensor loss_mask;  // [B, T-1] float: 1 where the target is trained on
  int64_t target_tokens = 0;
  Distiller::OfflineTopk topk;  // [B, T-1, K] teacher_topk aligned with the targets (offline distillation only)
};

// Places each sequence's teacher_topk at the positions that predict its completion tokens:
// completion token j sits at ids[start + prompt_length + j] and is predicted by
// logits[start + prompt_length + j - 1]. Padded: one row per sequence, start 0; packed: one
// row, start = the sequence's offset. -> ids/logprobs [R, T-1, K], mask [R, T-1].
Distiller::OfflineTopk make_offline_topk(const std::vector<TokenizedSample>& data, const std::vector<int64_t>& rows, int64_t T,
                                         bool packed) {
  int64_t K = 1;
  for (int64_t r : rows) K = std::max(K, data[r].topk_k);
  const int64_t R = packed ? 1 : static_cast<int64_t>(rows.size());
  auto ids = torch::zeros({R, T - 1, K}, torch::kLong);
  auto lp = torch::full({R, T - 1, K}, -1e9, torch::kFloat);
  auto mask = torch::zeros({R, T - 1}, torch::kFloat);
  auto ia = ids.accessor<int64_t, 3>();
  auto la = lp.accessor<float, 3>();
  auto ma = mask.accessor<float, 2>();
  int64_t start = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const TokenizedSample& s = data[rows[i]];
    const int64_t b = packed ? 0 : static_cast<int64_t>(i);
    const int64_t len = static_cast<int64_t>(s.ids.size());
    for (int64_t j = 0; j < s.topk_rows; ++j) {
      const int64_t at = s.prompt_length + j;  // the token's index inside its sequence
      if (at - 1 < 0 || at >= len) continue;  // cut by truncation
      const int64_t pos = start + at - 1;
      for (int64_t c = 0; c < s.topk_k; ++c) {
        ia[b][pos][c] = s.topk_ids[j * s.topk_k + c];
        la[b][pos][c] = s.topk_logprobs[j * s.topk_k + c];
      }
      ma[b][pos] = 1;
    }
    if (packed) start += len;
  }
  return {ids, lp, mask};
}

// A micro-batch of the sequences `rows`: padded (one row each, right-padded to the longest)
// or packed (one row, the sequences one after another, no padding; a sequence's first token
// is not a target of the one before it).
Batch make_batch(const std::vector<TokenizedSample>& data, const std::vector<int64_t>& rows, torch::Device device,
                 bool offline_topk = false, bool packed = false) {
  int64_t T = 0;
  for (int64_t r : rows) T = packed ? T + static_cast<int64_t>(data[r].ids.size()) : std::max<int64_t>(T, static_cast<int64_t>(data[r].ids.size()));
  const int64_t B = packed ? 1 : static_cast<int64_t>(rows.size());
  auto ids = torch::zeros({B, T}, torch::kLong);
  auto att = torch::zeros({B, T}, torch::kLong);
  auto seq = torch::zeros({B, T}, torch::kLong);
  auto lm = torch::zeros({B, T}, torch::kFloat);  // loss mask of each token as a target
  auto ia = ids.accessor<int64_t, 2>();
  auto aa = att.accessor<int64_t, 2>();
  auto sa = seq.accessor<int64_t, 2>();
  auto la = lm.accessor<float, 2>();
  int64_t start = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& s = data[rows[i]];
    const int64_t b = packed ? 0 : static_cast<int64_t>(i);
    for (size_t t = 0; t < s.ids.size(); ++t) {
      const int64_t at = start + static_cast<int64_t>(t);
      ia[b][at] = s.ids[t];
      aa[b][at] = 1;
      sa[b][at] = static_cast<int64_t>(i);
      la[b][at] = t == 0 ? 0.0f : s.loss_mask[t];  // a first token is never predicted (packed: not from the previous sequence)
    }
    if (packed) start += static_cast<int64_t>(s.ids.size());
  }
  Batch out;
  out.ids = ids.to(device);
  out.attention = att.to(device);
  if (packed) out.sequence_ids = seq.to(device);
  out.targets = ids.narrow(1, 1, T - 1).to(device);
  // A position's loss trains the prediction of the NEXT token: mask of the target.
  auto mask = lm.narrow(1, 1, T - 1);
  out.loss_mask = mask.to(device);
  out.target_tokens = static_cast<int64_t>(mask.sum().item<double>());
  if (offline_topk) {
    auto t = make_offline_topk(data, rows, T, packed);
    out.topk = {t.ids.to(device), t.logprobs.to(device), t.mask.to(device)};
  }
  return out;
}

// GKD's on-policy batch: the student completes the prompts of `rows` (prompts left-padded,
// completions right-padded, as the sampler lays them out) and the targets are its own tokens.
//   tokens [N, P+L], loss_mask [N, P+L-1] = 1 at the positions that predict completion tokens.
Batch on_policy_batch(Qwen2ForCausalLMImpl& model, const std::vector<TokenizedSample>& data, const std::vector<int64_t>& rows,
                      const SamplerOptions& opts) {
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t r : rows) prompts.emplace_back(data[r].ids.begin(), data[r].ids.begin() + data[r].prompt_length);
  Rollout ro = sample(model, prompts, opts);
  const int64_t P = ro.prompt_length, L = ro.completion_mask.size(1), T = ro.tokens.size(1);
  Batch out;
  out.ids = ro.tokens;
  out.attention = ro.attention_mask;
  out.targets = ro.tokens.narrow(1, 1, T - 1);
  out.loss_mask = torch::zeros({ro.tokens.size(0), T - 1}, torch::kFloat).to(ro.tokens.device());
  if (L > 0) out.loss_mask.narrow(1, P - 1, L).copy_(ro.completion_mask.to(torch::kFloat));
  out.target_tokens = static_cast<int64_t>(out.loss_mask.sum().item<double>());
  return out;
}

// The longest kept sample must fit the model's positions: data.max_length bounds the samples,
// and a sample past max_position_embeddings would run the model where it was never trained
// (and a huge one would allocate a T x T attention map of terabytes).
void check_sample_lengths(const std::vector<TokenizedSample>& train, const std::vector<TokenizedSample>& valid, int64_t max_positions,
                          int64_t max_length, const std::string& where) {
  size_t longest = 0;
  for (const auto* set : {&train, &valid})
    for (const auto& s : *set) longest = std::max(longest, s.ids.size());
  if (static_cast<int64_t>(longest) <= max_positions) return;
  throw Error(ErrorInfo{"a training sample is longer than the model's max_position_embeddings", where + ": data.max_length",
                        "samples of at most " + std::to_string(max_positions) + " tokens",
                        "a sample of " + std::to_string(longest) + " tokens (data.max_length = " + std::to_string(max_length) + ")",
                        "set data.max_length=" + std::to_string(max_positions) + " or less"});
}

// Data parallel: rank r scores the batches r, r + W, ...; the sums are added over the ranks.
double validation_loss(Qwen2ForCausalLMImpl& model, const std::vector<TokenizedSample>& valid, int batch_size,
                       torch::Device device, const DistContext& dist) {
  if (valid.empty()) return std::nan("");
  torch::NoGradGuard ng;
  model.eval();
  double total = 0;
  int64_t tokens = 0;
  int64_t index = 0;
  for (size_t i = 0; i < valid.size(); i += static_cast<size_t>(batch_size)) {
    if (index++ % dist.world_size() != dist.rank()) continue;
    std::vector<int64_t> rows;
    for (size_t j = i; j < std::min(valid.size(), i + batch_size); ++j) rows.push_back(static_cast<int64_t>(j));
    Batch b = make_batch(valid, rows, device);
    ForwardOptions fo;
    fo.skip_lm_head = true;
    total += summed_token_ce(model, model.forward(b.ids, b.attention, fo), b.targets, b.loss_mask).item<double>();
    tokens += b.target_tokens;
  }
  model.train();
  if (dist.enabled()) {
    auto s = dist.sum({total, static_cast<double>(tokens)});  // sync point
    total = s[0];
    tokens = static_cast<int64_t>(s[1]);
  }
  return tokens > 0 ? total / tokens : std::nan("");
}

// ---- setup ---------------------------------------------------------------------------------

// The config with the overrides applied, and the checks the binder cannot make: exactly one
// of model / model_config, positive sizes, the micro-batch options.
SftConfig parse_sft_config(const nlohmann::json& doc_in, const std::string& where, const std::vector<std::string>& overrides) {
  nlohmann::json doc = doc_in;
  for (const auto& o : overrides) apply_override(doc, o);
  SftConfig cfg = parse_config<SftConfig>(doc, where);
  if (cfg.data.train.empty()) throw Error(ErrorInfo{"no training traces given", where, "data.train = a JSONL file", "\"\"", ""});
  if (cfg.model.empty() == cfg.model_config.is_null()) {
    throw Error(ErrorInfo{"give exactly one of 'model' (a checkpoint folder) and 'model_config' (a config.json object)", where,
                          "one of them", cfg.model.empty() ? "neither" : "both", ""});
  }
  if (cfg.batch_size <= 0 || cfg.grad_accum <= 0 || cfg.steps <= 0) {
    throw Error(ErrorInfo{"batch_size, grad_accum and steps must be positive", where, "> 0",
                          std::to_string(cfg.batch_size) + ", " + std::to_string(cfg.grad_accum) + ", " + std::to_string(cfg.steps), ""});
  }
  cfg.train.validate(where);
  return cfg;
}

// The tokenized samples (each: ids [T_i], loss_mask [T_i], the prompt's length and, offline,
// the teacher's top-k rows [completion tokens, K]).
struct SftData {
  std::vector<TokenizedSample> train, valid;
};

// Tokenizes data.train; validation is data.valid when given, else the last valid_fraction of
// a seeded permutation of the training samples (at least one, never all of them).
SftData load_data(const SftConfig& cfg, const Tokenizer& tok) {
  SftData d;
  TokenizeStats stats;
  d.train = tokenize_traces(load_traces(cfg.data.train), tok, cfg.data.format, &stats, cfg.data.train);
  log_info("traces: " + std::to_string(stats.samples) + " read, " + std::to_string(stats.kept) + " kept, " +
           std::to_string(stats.dropped_too_long) + " dropped as too long, " + std::to_string(stats.cut) + " cut, " +
           std::to_string(stats.tokens) + " tokens");
  if (stats.with_tools > 0)  // tool observations are context: loss mask 0 (data/traces.h)
    log_info("traces: " + std::to_string(stats.with_tools) + " with tool calls, " + std::to_string(stats.observation_tokens) +
             " observation tokens not trained on");
  if (!cfg.data.valid.empty()) {
    d.valid = tokenize_traces(load_traces(cfg.data.valid), tok, cfg.data.format, nullptr, cfg.data.valid);
  } else if (cfg.data.valid_fraction > 0 && d.train.size() > 1) {
    size_t n_valid = std::max<size_t>(1, static_cast<size_t>(d.train.size() * cfg.data.valid_fraction));
    n_valid = std::min(n_valid, d.train.size() - 1);
    std::vector<size_t> order(d.train.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::mt19937_64 rng(static_cast<uint64_t>(cfg.runtime.seed) ^ 0x5eedull);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<TokenizedSample> kept;
    for (size_t i = 0; i < order.size(); ++i) (i < order.size() - n_valid ? kept : d.valid).push_back(std::move(d.train[order[i]]));
    d.train.swap(kept);
  }
  return d;
}

// The model being trained, in training mode on `device`: a checkpoint, or random weights from
// model_config. Its vocabulary must cover the tokenizer's and its positions the longest sample.
Qwen2ForCausalLM load_student(const SftConfig& cfg, const Tokenizer& tok, const SftData& data, torch::Device device,
                              const std::string& where) {
  Qwen2ForCausalLM model = cfg.model.empty() ? Qwen2ForCausalLM(ModelConfig::from_json(cfg.model_config, where + ": model_config"))
                                             : load_model(cfg.model, LoadOptions{device.str(), "float32"});
  model->to(device);
  model->train();
  if (model->config().vocab_size < tok.vocab_size()) {
    throw Error(ErrorInfo{"the tokenizer has more tokens than the model's vocabulary", where, "vocab_size >= " + std::to_string(tok.vocab_size()),
                          std::to_string(model->config().vocab_size), "use the model's own tokenizer"});
  }
  check_sample_lengths(data.train, data.valid, model->config().max_position_embeddings, cfg.data.format.max_length, where);
  return model;
}

// The distillation losses (the teacher, or the traces' offline top-k, and the trained
// projections); null for plain SFT. Offline distillation needs traces that carry teacher_topk.
std::unique_ptr<Distiller> make_distiller(const SftConfig& cfg, Qwen2ForCausalLMImpl& model, const Tokenizer& tok, const SftData& data,
                                          torch::Device device, const std::string& where) {
  if (cfg.distill.teacher.empty() && cfg.distill.logit.kind != "offline") return nullptr;
  if (cfg.distill.logit.kind == "offline") {
    int64_t with = 0;
    for (const auto& t : data.train) with += t.topk_rows > 0;
    if (with == 0) {
      throw Error(ErrorInfo{"distill.logit.kind = offline, but no training trace carries teacher_topk", cfg.data.train,
                            "traces with \"teacher_topk\": [{\"ids\", \"logprobs\"} per completion token]", "none",
                            "write the teacher's top-k into the traces, or use an online kind with distill.teacher"});
    }
    log_info("distill: " + std::to_string(with) + " of " + std::to_string(data.train.size()) + " training traces carry teacher_topk");
  }
  return std::make_unique<Distiller>(cfg.distill, model, tok, device, where);
}

// What the optimizer updates: the model's parameters, then the distiller's projections.
struct Trainable {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  std::vector<torch::Tensor> params;  // the same tensors, for clipping and the data-parallel sums
};

Trainable trainable_parameters(Qwen2ForCausalLMImpl& model, const Distiller* distiller) {
  Trainable t;
  for (auto& p : model.named_parameters()) {
    t.named.emplace_back(p.key(), p.value());
    t.params.push_back(p.value());
  }
  if (distiller) {
    for (auto& np : distiller->parameters()) {
      t.named.push_back(np);
      t.params.push_back(np.second);
    }
  }
  return t;
}

// On-policy distillation (GKD, distill.on_policy = lambda): the student samples completions
// that stop at the template's end-of-turn token (and the eos token); the seed is set per
// micro-batch. Needs a teacher to score the samples. Unused while lambda is 0.
SamplerOptions on_policy_options(const SftConfig& cfg, const Tokenizer& tok, const Distiller* distiller, const std::string& where) {
  const double lambda = cfg.distill.on_policy;
  SamplerOptions opts;
  if (lambda <= 0) return opts;
  if (lambda > 1 || !distiller || cfg.distill.teacher.empty() || cfg.distill.logit.kind == "offline") {
    throw Error(ErrorInfo{"on-policy distillation needs a teacher checkpoint and a share in (0, 1]", where + ": distill.on_policy",
                          "0 < on_policy <= 1 with distill.teacher set and an online logit.kind", std::to_string(lambda),
                          "the teacher must score the student's own samples"});
  }
  opts.max_new_tokens = cfg.distill.on_policy_max_new_tokens;
  opts.temperature = cfg.distill.on_policy_temperature;
  for (const auto& stop : ChatTemplate::by_name(cfg.data.format.chat_template).stop_strings())
    if (auto id = tok.token_to_id(stop)) opts.stop_token_ids.push_back(*id);
  if (!cfg.data.format.eos_token.empty())
    if (auto id = tok.token_to_id(cfg.data.format.eos_token)) opts.stop_token_ids.push_back(*id);
  return opts;
}

// Where training is in the data: the epoch, the next batch of the epoch's order, and that
// order (epoch_batches of (seed, epoch)): together with the step, the whole RNG state.
class DataCursor {
 public:
  DataCursor(const std::vector<TokenizedSample>& train, int batch_size, uint64_t seed)
      : train_(train), batch_size_(batch_size), seed_(seed) {}
  // Continues at (epoch, cursor), as a checkpoint recorded them.
  void seek(int64_t epoch, int64_t cursor) {
    epoch_ = epoch;
    cursor_ = cursor;
    batches_ = epoch_batches(train_, batch_size_, seed_, epoch_);
  }
  // The next global batch's rows; the next epoch's order once this one is used up.
  std::vector<int64_t> next() {
    if (cursor_ >= static_cast<int64_t>(batches_.size())) seek(epoch_ + 1, 0);
    return batches_[static_cast<size_t>(cursor_++)];
  }
  int64_t epoch() const { return epoch_; }
  int64_t cursor() const { return cursor_; }

 private:
  const std::vector<TokenizedSample>& train_;
  int batch_size_;
  uint64_t seed_;
  int64_t epoch_ = 0, cursor_ = 0;
  std::vector<std::vector<int64_t>> batches_;
};

// The newest checkpoint in run_dir (when resume is on): the weights, the optimizer, the
// distiller's projections and the data position. -> the step it was written at (0 = fresh).
int64_t resume_from_checkpoint(const SftConfig& cfg, Qwen2ForCausalLMImpl& model, AdamW& optim, Distiller* distiller,
                               const DistContext& dist, DataCursor& data) {
  int64_t step = 0, epoch = 0, cursor = 0;
  if (cfg.resume) {
    if (auto ckpt = latest_checkpoint(cfg.run_dir)) {
      nlohmann::json st = load_training_checkpoint(*ckpt, model, optim);
      dist.check_resume(st.value("world_size", int64_t{1}), *ckpt);
      if (distiller) distiller->load_parameters(read_safetensors(*ckpt + "/distill_state.safetensors"), *ckpt);
      step = st.at("step");
      epoch = st.at("epoch");
      cursor = st.at("cursor");
      log_info("resumed from " + *ckpt + " at step " + std::to_string(step));
    }
  }
  data.seek(epoch, cursor);
  return step;
}

// ---- one step ------------------------------------------------------------------------------

// What every step reads: the run's config, data, models and collectives.
struct StepContext {
  const SftConfig& cfg;
  const SftData& data;
  const DistContext& dist;
  torch::Device device;
  Qwen2ForCausalLMImpl& model;
  Distiller* distiller;                        // null for plain SFT
  const std::vector<torch::Tensor>& params;    // everything the optimizer updates
  const SamplerOptions& on_policy;             // the on-policy sampler's options (seed set per micro-batch)
};

// What the step's draw decided: whether it is on-policy and the seeds of its micro-batches.
// A function of (seed, step) alone, so that a resumed run makes the same choices and samples
// the same completions.
struct StepDraw {
  std::mt19937_64 rng;
  bool on_policy = false;
};

StepDraw draw_step(const SftConfig& cfg, int64_t step) {
  StepDraw d{std::mt19937_64(static_cast<uint64_t>(cfg.runtime.seed) * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(step))};
  const double lambda = cfg.distill.on_policy;
  d.on_policy = lambda > 0 && std::uniform_real_distribution<double>(0.0, 1.0)(d.rng) < lambda;
  return d;
}

// The step's micro-batches on this rank: grad_accum global batches, this rank's slice of each
// (all of it in a single process), as
//   on-policy  the student's completions of the batch's prompts (on_policy_batch), or
//   padded     one micro-batch per batch: ids [B, T], targets / loss_mask [B, T-1], or
//   budget     train.micro_batch_tokens > 0: the step's sequences, longest first, in micro-
//              batches of at most that many tokens, packed ([1, sum T_i]) or padded.
std::vector<Batch> step_batches(const StepContext& c, StepDraw& draw, DataCursor& data) {
  const bool offline = c.distiller && c.distiller->offline();
  const std::vector<TokenizedSample>& train = c.data.train;
  std::vector<Batch> micro;
  std::vector<int64_t> step_rows;  // this rank's sequences of the step (token-budget batches only)
  for (int a = 0; a < c.cfg.grad_accum; ++a) {
    // Every rank draws the same global rows (and the same random numbers); a rank whose
    // slice is empty (a short last batch of an epoch) still joins the collectives.
    std::vector<int64_t> rows = data.next();
    if (c.dist.enabled()) {
      ShardRange r = shard_range(static_cast<int64_t>(rows.size()), c.dist.rank(), c.dist.world_size());
      rows = std::vector<int64_t>(rows.begin() + r.begin, rows.begin() + r.end);
    }
    const uint64_t policy_seed = draw.rng();
    if (rows.empty()) continue;
    if (draw.on_policy) {
      // Each rank samples its own rows: the streams differ from a single process's.
      SamplerOptions opts = c.on_policy;
      opts.seed = policy_seed ^ (static_cast<uint64_t>(c.dist.rank()) * 0x9e3779b97f4a7c15ull);
      micro.push_back(on_policy_batch(c.model, train, rows, opts));
    } else if (c.cfg.train.micro_batch_tokens > 0) {
      step_rows.insert(step_rows.end(), rows.begin(), rows.end());
    } else {
      micro.push_back(make_batch(train, rows, c.device, offline));
    }
  }
  if (!step_rows.empty()) {
    // Longest first, so that padded micro-batches waste little.
    std::stable_sort(step_rows.begin(), step_rows.end(),
                     [&](int64_t x, int64_t y) { return train[x].ids.size() > train[y].ids.size(); });
    std::vector<int64_t> lengths;
    for (int64_t r : step_rows) lengths.push_back(static_cast<int64_t>(train[r].ids.size()));
    for (const auto& part : split_by_token_budget(lengths, c.cfg.train.micro_batch_tokens, c.cfg.train.packing)) {
      std::vector<int64_t> rows;
      for (int64_t i : part) rows.push_back(step_rows[static_cast<size_t>(i)]);
      micro.push_back(make_batch(train, rows, c.device, offline, c.cfg.train.packing));
    }
  }
  return micro;
}

// What the forward and backward passes of a step measured (over every rank).
struct StepLoss {
  double loss = 0;                       // the step's loss: the weighted total
  std::map<std::string, double> parts;   // each loss's value: ce, logit, feature, attention
  int64_t tokens = 0;                    // real (unpadded) tokens of the step
};

// Forward and backward of the step's micro-batches; their losses add up to the step's, so
// the gradients are the combined batch's (summed over the ranks under data parallel).
StepLoss forward_backward(const StepContext& c, const std::vector<Batch>& micro, const std::map<std::string, double>& weights) {
  StepLoss out;
  // 1: the step's denominators, over every micro-batch and rank, before any backward: each
  //    loss is a sum over its positions divided by these, so the split does not matter.
  const bool offline = c.distiller && c.distiller->offline();
  Distiller::StepTokens n;
  for (const Batch& b : micro) {
    n.targets += static_cast<double>(b.target_tokens);
    n.tokens += b.attention.sum().item<double>();
    if (offline && b.topk.mask.defined()) n.logit_targets += (b.topk.mask * b.loss_mask).sum().item<double>();
    out.tokens += b.attention.sum().item<int64_t>();
  }
  if (c.dist.enabled()) {
    auto s = c.dist.sum({n.targets, n.tokens, n.logit_targets});  // sync point
    n.targets = s[0], n.tokens = s[1], n.logit_targets = s[2];
  }
  // 2: forward and backward, micro-batch by micro-batch.
  for (const Batch& b : micro) {
    ForwardOptions fo = c.distiller ? c.distiller->student_options(weights) : ForwardOptions{};
    fo.skip_lm_head = true;
    fo.sequence_ids = b.sequence_ids;
    fo.checkpoint_layers = c.cfg.train.checkpoint(b.ids.numel(), c.model.config().hidden_size, c.model.config().num_hidden_layers);
    ForwardOutput fwd = c.model.forward(b.ids, b.attention, fo);
    torch::Tensor loss;
    if (c.distiller) {
      auto l = c.distiller->losses(fwd, b.ids, b.attention, b.sequence_ids, b.loss_mask, weights, n, b.topk);
      loss = l.total;
      for (const auto& kv : l.values) out.parts[kv.first] += kv.second;
    } else {
      loss = summed_token_ce(c.model, fwd, b.targets, b.loss_mask) / std::max(n.targets, 1.0);
      out.parts["ce"] += loss.item<double>();
    }
    loss.backward();
    out.loss += loss.item<double>();  // sync point
  }
  if (c.dist.enabled()) {
    // Each rank's loss is its share of the combined batch's loss: the sums are the totals.
    c.dist.all_reduce_gradients(c.params);  // sync point
    static const std::vector<std::string> kParts = {"ce", "logit", "feature", "attention"};
    std::vector<double> v{out.loss, static_cast<double>(out.tokens)};
    for (const auto& k : kParts) {
      v.push_back(out.parts.count(k) ? out.parts[k] : 0.0);
      v.push_back(out.parts.count(k) ? 1.0 : 0.0);
    }
    v = c.dist.sum(v);
    out.loss = v[0];
    out.tokens = static_cast<int64_t>(v[1]);
    out.parts.clear();
    for (size_t i = 0; i < kParts.size(); ++i)
      if (v[3 + 2 * i] > 0) out.parts[kParts[i]] = v[2 + 2 * i];
  }
  return out;
}

// One optimizer step (the 1-based step + 1): draw, batches, forward and backward, clip, and
// the update unless a loss or the gradient norm is not finite (NonFiniteGuard). -> the step's
// metrics record (without the validation loss and the memory peak).
nlohmann::json train_step(const StepContext& c, int64_t step, DataCursor& data, AdamW& optim, NonFiniteGuard& nonfinite,
                          SftResult& result) {
  const double t0 = now_seconds();
  StepDraw draw = draw_step(c.cfg, step);
  std::vector<Batch> micro = step_batches(c, draw, data);
  std::map<std::string, double> weights =
      c.distiller ? c.distiller->schedule().weights_at(step) : std::map<std::string, double>{{"ce", 1.0}};
  if (draw.on_policy) weights["ce"] = 0.0;  // no reference completion: the teacher is the only target
  int64_t largest = 0;  // tokens of the largest micro-batch, padding included
  for (const Batch& b : micro) largest = std::max<int64_t>(largest, b.ids.numel());
  const int64_t width = std::max<int64_t>(c.model.config().hidden_size, c.distiller ? c.distiller->teacher_hidden_size() : 0);
  TrainingHeapScope heap(c.cfg.train.compact_heap_for(largest, width));  // after step_batches: an on-policy draw samples under the default heap
  StepLoss l = forward_backward(c, micro, weights);
  const double grad_norm = clip_grad_norm(c.params, c.cfg.optim.grad_clip);
  const double lr = learning_rate(c.cfg.optim, step, c.cfg.steps);
  if (nonfinite.allows_update(step + 1, l.parts, grad_norm)) optim.step(lr);
  optim.zero_grad();
  const double dt = now_seconds() - t0;
  result.losses.push_back(l.loss);
  result.parts.push_back(l.parts);

  nlohmann::json rec = {{"step", step + 1}, {"loss", l.loss}, {"lr", lr}, {"grad_norm", grad_norm},
                        {"tokens", l.tokens}, {"tokens_per_s", l.tokens / std::max(dt, 1e-9)}, {"epoch", data.epoch()}};
  if (c.cfg.distill.on_policy > 0) rec["on_policy"] = draw.on_policy ? 1 : 0;
  for (const auto& kv : l.parts) rec["loss_" + kv.first] = kv.second;
  if (c.distiller)
    for (const auto& kv : weights) rec["weight_" + kv.first] = kv.second;
  return rec;
}

// ---- checkpoints and the final model -------------------------------------------------------

// A resumable checkpoint (rank 0): weights, optimizer, the distiller's projections and the
// trainer state (step, data position, seed), written atomically; the last keep_last kept.
void write_checkpoint(const StepContext& c, int64_t step, const DataCursor& data, const AdamW& optim, const std::string& tokenizer_dir) {
  const nlohmann::json state = {{"step", step}, {"epoch", data.epoch()}, {"cursor", data.cursor()}, {"optimizer_steps", optim.steps_taken()},
                                {"seed", c.cfg.runtime.seed}, {"stage", "sft"},
                                {"world_size", c.dist.world_size()}};
  std::map<std::string, torch::Tensor> extra;
  if (c.distiller)
    for (auto& np : c.distiller->parameters()) extra[np.first] = np.second.detach().cpu().contiguous();
  save_training_checkpoint(c.cfg.run_dir, step, c.model, optim, state, tokenizer_dir, c.cfg.keep_last, extra);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

SftResult run_sft(const nlohmann::json& doc_in, const std::string& where, const std::vector<std::string>& overrides) {
  // ---- setup -------------------------------------------------------------------------------
  SftConfig cfg = parse_sft_config(doc_in, where, overrides);
  log_info(apply_runtime(cfg.runtime));
  torch::Device device(resolve_device(cfg.runtime.device));
  log_info("precision: " + apply_precision(cfg.runtime, device.str()));
  // Data parallel (RANK/WORLD_SIZE set): every rank builds the same global batches from the
  // same seed and trains on its slice; only rank 0 writes the run directory.
  const DistContext& dist = dist_context(device);
  RunDir run(cfg.run_dir, /*lock=*/dist.is_main());  // ranks share the folder; rank 0 holds the lock
  if (cfg.resume && latest_checkpoint(cfg.run_dir)) run.check_resumed_config(config_to_json(cfg), canonical_config<SftConfig>, kResumeFreeKeys);
  if (dist.is_main()) run.save_resolved_config(config_to_json(cfg));

  const std::string tok_path = !cfg.tokenizer.empty() ? cfg.tokenizer : (fs::path(cfg.model) / "tokenizer.json").string();
  Tokenizer tok = Tokenizer::from_file(tok_path);
  const std::string tokenizer_dir = fs::path(tok_path).parent_path().string();
  const SftData data = load_data(cfg, tok);
  Qwen2ForCausalLM model = load_student(cfg, tok, data, device, where);
  std::unique_ptr<Distiller> distiller = make_distiller(cfg, *model, tok, data, device, where);
  const Trainable trainable = trainable_parameters(*model, distiller.get());
  AdamW optim(trainable.named, cfg.optim);
  const SamplerOptions on_policy = on_policy_options(cfg, tok, distiller.get(), where);

  SftResult result;
  DataCursor cursor(data.train, cfg.batch_size, static_cast<uint64_t>(cfg.runtime.seed));
  int64_t step = resume_from_checkpoint(cfg, *model, optim, distiller.get(), dist, cursor);
  result.resumed_from = step;
  // Every rank starts from rank 0's weights (a random init or a checkpoint alike).
  dist.broadcast(trainable.params);
  // Lines a killed run wrote after its last checkpoint (or a fresh run's predecessor) go.
  std::unique_ptr<MetricsWriter> metrics;
  if (dist.is_main()) {
    truncate_jsonl_after_step(run.file("metrics.jsonl"), step);
    metrics = std::make_unique<MetricsWriter>(run.file("metrics.jsonl"));
  }

  // ---- train ---------------------------------------------------------------------------------
  std::unique_ptr<ProgressBar> bar;
  if (dist.is_main()) {
    bar = std::make_unique<ProgressBar>("sft", cfg.steps, "step");
    bar->update(step);
  }
  NonFiniteGuard nonfinite(distiller ? "distill" : "sft", cfg.optim.skip_nonfinite, cfg.run_dir);
  const StepContext ctx{cfg, data, dist, device, *model, distiller.get(), trainable.params, on_policy};
  while (step < cfg.steps) {
    nlohmann::json rec = train_step(ctx, step, cursor, optim, nonfinite, result);
    ++step;
    const bool last = step == cfg.steps;
    if ((cfg.eval_every > 0 && step % cfg.eval_every == 0) || last) {
      const double vl = validation_loss(*model, data.valid, cfg.batch_size, device, dist);
      if (!std::isnan(vl)) rec["valid_loss"] = vl;
      result.final_valid_loss = vl;
    }
    const MemoryPeak mem = memory_peak();
    rec["peak_rss_mb"] = mem.rss_bytes / 1048576.0;
    if (mem.cuda_bytes >= 0) rec["peak_cuda_mb"] = mem.cuda_bytes / 1048576.0;
    if (metrics && cfg.log_every > 0 && (step % cfg.log_every == 0 || last)) metrics->write(rec);
    char suffix[96];
    std::snprintf(suffix, sizeof suffix, "loss %.4f lr %.2e", rec["loss"].get<double>(), rec["lr"].get<double>());
    if (bar) bar->update(step, suffix + memory_suffix(mem));
    if (dist.is_main() && ((cfg.save_every > 0 && step % cfg.save_every == 0) || last)) write_checkpoint(ctx, step, cursor, optim, tokenizer_dir);
  }
  if (bar) bar->finish();

  // ---- save ------------------------------------------------------------------------------
  result.output_dir = cfg.output.empty() ? run.file("final") : cfg.output;
  if (!dist.is_main()) return result;  // rank 0 writes the model
  SaveOptions so;
  so.tokenizer_dir = tokenizer_dir;
  save_final_model(*model, result.output_dir, so, tok_path);
  log_info("sft: wrote " + result.output_dir);
  return result;
}

}  // namespace retort
