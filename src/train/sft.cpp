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

}  // namespace

SftResult run_sft(const nlohmann::json& doc_in, const std::string& where, const std::vector<std::string>& overrides) {
  // ---- setup -------------------------------------------------------------------------------
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
  log_info(apply_runtime(cfg.runtime));
  torch::Device device(resolve_device(cfg.runtime.device));
  log_info("precision: " + apply_precision(cfg.runtime, device.str()));
  // Data parallel (RANK/WORLD_SIZE set): every rank builds the same global batches from the
  // same seed and trains on its slice; only rank 0 writes the run directory.
  const DistContext& dist = dist_context(device);
  RunDir run(cfg.run_dir, /*lock=*/dist.is_main());  // ranks share the folder; rank 0 holds the lock
  if (cfg.resume && latest_checkpoint(cfg.run_dir)) run.check_resumed_config(config_to_json(cfg), canonical_config<SftConfig>, kResumeFreeKeys);
  if (dist.is_main()) run.save_resolved_config(config_to_json(cfg));

  std::string tok_path = !cfg.tokenizer.empty() ? cfg.tokenizer : (fs::path(cfg.model) / "tokenizer.json").string();
  Tokenizer tok = Tokenizer::from_file(tok_path);
  std::string tokenizer_dir = fs::path(tok_path).parent_path().string();

  // Data: tokenize, then split off validation deterministically.
  auto traces = load_traces(cfg.data.train);
  TokenizeStats stats;
  auto train = tokenize_traces(traces, tok, cfg.data.format, &stats, cfg.data.train);
  log_info("traces: " + std::to_string(stats.samples) + " read, " + std::to_string(stats.kept) + " kept, " +
           std::to_string(stats.dropped_too_long) + " dropped as too long, " + std::to_string(stats.cut) + " cut, " +
           std::to_string(stats.tokens) + " tokens");
  std::vector<TokenizedSample> valid;
  if (!cfg.data.valid.empty()) {
    valid = tokenize_traces(load_traces(cfg.data.valid), tok, cfg.data.format, nullptr, cfg.data.valid);
  } else if (cfg.data.valid_fraction > 0 && train.size() > 1) {
    size_t n_valid = std::max<size_t>(1, static_cast<size_t>(train.size() * cfg.data.valid_fraction));
    n_valid = std::min(n_valid, train.size() - 1);
    // The last n_valid samples of a seeded permutation.
    std::vector<size_t> order(train.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::mt19937_64 rng(static_cast<uint64_t>(cfg.runtime.seed) ^ 0x5eedull);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<TokenizedSample> kept;
    for (size_t i = 0; i < order.size(); ++i) (i < order.size() - n_valid ? kept : valid).push_back(std::move(train[order[i]]));
    train.swap(kept);
  }

  // Model.
  Qwen2ForCausalLM model = cfg.model.empty() ? Qwen2ForCausalLM(ModelConfig::from_json(cfg.model_config, where + ": model_config"))
                                             : load_model(cfg.model, LoadOptions{device.str(), "float32"});
  model->to(device);
  model->train();
  if (model->config().vocab_size < tok.vocab_size()) {
    throw Error(ErrorInfo{"the tokenizer has more tokens than the model's vocabulary", where, "vocab_size >= " + std::to_string(tok.vocab_size()),
                          std::to_string(model->config().vocab_size), "use the model's own tokenizer"});
  }
  check_sample_lengths(train, valid, model->config().max_position_embeddings, cfg.data.format.max_length, where);
  std::vector<std::pair<std::string, torch::Tensor>> named;
  std::vector<torch::Tensor> params;
  for (auto& p : model->named_parameters()) {
    named.emplace_back(p.key(), p.value());
    params.push_back(p.value());
  }
  std::unique_ptr<Distiller> distiller;
  if (!cfg.distill.teacher.empty() || cfg.distill.logit.kind == "offline") {
    if (cfg.distill.logit.kind == "offline") {
      int64_t with = 0;
      for (const auto& t : train) with += t.topk_rows > 0;
      if (with == 0) {
        throw Error(ErrorInfo{"distill.logit.kind = offline, but no training trace carries teacher_topk", cfg.data.train,
                              "traces with \"teacher_topk\": [{\"ids\", \"logprobs\"} per completion token]", "none",
                              "write the teacher's top-k into the traces, or use an online kind with distill.teacher"});
      }
      log_info("distill: " + std::to_string(with) + " of " + std::to_string(train.size()) + " training traces carry teacher_topk");
    }
    distiller = std::make_unique<Distiller>(cfg.distill, *model, tok, device, where);
    for (auto& np : distiller->parameters()) {
      named.push_back(np);
      params.push_back(np.second);
    }
  }
  AdamW optim(named, cfg.optim);

  // On-policy distillation: the sampler stops at the template's end-of-turn token.
  const double lambda = cfg.distill.on_policy;
  SamplerOptions on_policy_opts;
  if (lambda > 0) {
    if (lambda > 1 || !distiller || cfg.distill.teacher.empty() || cfg.distill.logit.kind == "offline") {
      throw Error(ErrorInfo{"on-policy distillation needs a teacher checkpoint and a share in (0, 1]", where + ": distill.on_policy",
                            "0 < on_policy <= 1 with distill.teacher set and an online logit.kind", std::to_string(lambda),
                            "the teacher must score the student's own samples"});
    }
    on_policy_opts.max_new_tokens = cfg.distill.on_policy_max_new_tokens;
    on_policy_opts.temperature = cfg.distill.on_policy_temperature;
    for (const auto& stop : ChatTemplate::by_name(cfg.data.format.chat_template).stop_strings())
      if (auto id = tok.token_to_id(stop)) on_policy_opts.stop_token_ids.push_back(*id);
    if (!cfg.data.format.eos_token.empty())
      if (auto id = tok.token_to_id(cfg.data.format.eos_token)) on_policy_opts.stop_token_ids.push_back(*id);
  }

  // Resume.
  int64_t step = 0, epoch = 0, cursor = 0;
  SftResult result;
  if (cfg.resume) {
    if (auto ckpt = latest_checkpoint(cfg.run_dir)) {
      nlohmann::json st = load_training_checkpoint(*ckpt, *model, optim);
      dist.check_resume(st.value("world_size", int64_t{1}), *ckpt);
      if (distiller) distiller->load_parameters(read_safetensors(*ckpt + "/distill_state.safetensors"), *ckpt);
      step = st.at("step");
      epoch = st.at("epoch");
      cursor = st.at("cursor");
      result.resumed_from = step;
      log_info("resumed from " + *ckpt + " at step " + std::to_string(step));
    }
  }
  // Every rank starts from rank 0's weights (a random init or a checkpoint alike).
  dist.broadcast(params);
  // Lines a killed run wrote after its last checkpoint (or a fresh run's predecessor) go.
  std::unique_ptr<MetricsWriter> metrics;
  if (dist.is_main()) {
    truncate_jsonl_after_step(run.file("metrics.jsonl"), step);
    metrics = std::make_unique<MetricsWriter>(run.file("metrics.jsonl"));
  }

  // ---- train ---------------------------------------------------------------------------------
  auto batches = epoch_batches(train, cfg.batch_size, static_cast<uint64_t>(cfg.runtime.seed), epoch);
  auto next_rows = [&]() {
    if (cursor >= static_cast<int64_t>(batches.size())) {
      ++epoch;
      cursor = 0;
      batches = epoch_batches(train, cfg.batch_size, static_cast<uint64_t>(cfg.runtime.seed), epoch);
    }
    return batches[cursor++];
  };
  // This rank's slice of a global batch's rows (all of them in a single process).
  auto my_rows = [&](const std::vector<int64_t>& rows) {
    if (!dist.enabled()) return rows;
    ShardRange r = shard_range(static_cast<int64_t>(rows.size()), dist.rank(), dist.world_size());
    return std::vector<int64_t>(rows.begin() + r.begin, rows.begin() + r.end);
  };
  auto trainer_state = [&]() {
    return nlohmann::json{{"step", step}, {"epoch", epoch}, {"cursor", cursor}, {"optimizer_steps", optim.steps_taken()},
                          {"seed", cfg.runtime.seed}, {"stage", "sft"},
                          {"world_size", dist.world_size()}};
  };
  std::unique_ptr<ProgressBar> bar;
  if (dist.is_main()) {
    bar = std::make_unique<ProgressBar>("sft", cfg.steps, "step");
    bar->update(step);
  }
  NonFiniteGuard nonfinite(distiller ? "distill" : "sft", cfg.optim.skip_nonfinite, cfg.run_dir);
  while (step < cfg.steps) {
    double t0 = now_seconds();
    std::vector<Batch> micro;
    int64_t tokens = 0;
    // Whether this step is on-policy: a draw from (seed, step), so that a resumed run makes
    // the same choices and samples the same completions.
    std::mt19937_64 step_rng(static_cast<uint64_t>(cfg.runtime.seed) * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(step));
    const bool on_policy = lambda > 0 && std::uniform_real_distribution<double>(0.0, 1.0)(step_rng) < lambda;
    const bool offline = distiller && distiller->offline();
    std::vector<int64_t> step_rows;  // this rank's sequences of the step (trace batches only)
    for (int a = 0; a < cfg.grad_accum; ++a) {
      // Every rank draws the same global rows (and the same random numbers); a rank whose
      // slice is empty (a short last batch of an epoch) still joins the collectives.
      std::vector<int64_t> rows = my_rows(next_rows());
      const uint64_t policy_seed = step_rng();
      if (rows.empty()) continue;
      if (on_policy) {
        // Each rank samples its own rows: the streams differ from a single process's.
        on_policy_opts.seed = policy_seed ^ (static_cast<uint64_t>(dist.rank()) * 0x9e3779b97f4a7c15ull);
        micro.push_back(on_policy_batch(*model, train, rows, on_policy_opts));
      } else if (cfg.train.micro_batch_tokens > 0) {
        step_rows.insert(step_rows.end(), rows.begin(), rows.end());
      } else {
        micro.push_back(make_batch(train, rows, device, offline));
      }
    }
    if (!step_rows.empty()) {
      // Token budget: the step's sequences (longest first, so padded micro-batches waste little)
      // in micro-batches of at most micro_batch_tokens tokens, packed or padded.
      std::stable_sort(step_rows.begin(), step_rows.end(),
                       [&](int64_t x, int64_t y) { return train[x].ids.size() > train[y].ids.size(); });
      std::vector<int64_t> lengths;
      for (int64_t r : step_rows) lengths.push_back(static_cast<int64_t>(train[r].ids.size()));
      for (const auto& part : split_by_token_budget(lengths, cfg.train.micro_batch_tokens, cfg.train.packing)) {
        std::vector<int64_t> rows;
        for (int64_t i : part) rows.push_back(step_rows[static_cast<size_t>(i)]);
        micro.push_back(make_batch(train, rows, device, offline, cfg.train.packing));
      }
    }
    // 1: the step's denominators, over every micro-batch and rank, before any backward: each
    //    loss is a sum over its positions divided by these, so the split does not matter.
    Distiller::StepTokens n;
    for (const Batch& b : micro) {
      n.targets += static_cast<double>(b.target_tokens);
      n.tokens += b.attention.sum().item<double>();
      if (offline && b.topk.mask.defined()) n.logit_targets += (b.topk.mask * b.loss_mask).sum().item<double>();
      tokens += b.attention.sum().item<int64_t>();
    }
    if (dist.enabled()) {
      auto s = dist.sum({n.targets, n.tokens, n.logit_targets});  // sync point
      n.targets = s[0], n.tokens = s[1], n.logit_targets = s[2];
    }
    std::map<std::string, double> weights = distiller ? distiller->schedule().weights_at(step) : std::map<std::string, double>{{"ce", 1.0}};
    if (on_policy) weights["ce"] = 0.0;  // no reference completion: the teacher is the only target
    // 2: forward and backward, micro-batch by micro-batch; the losses add up to the step's.
    std::map<std::string, double> parts;
    double loss_sum = 0;
    for (const Batch& b : micro) {
      ForwardOptions fo = distiller ? distiller->student_options(weights) : ForwardOptions{};
      fo.skip_lm_head = true;
      fo.sequence_ids = b.sequence_ids;
      fo.checkpoint_layers = cfg.train.checkpoint(b.ids.numel(), model->config().hidden_size, model->config().num_hidden_layers);
      ForwardOutput out = model->forward(b.ids, b.attention, fo);
      torch::Tensor loss;
      if (distiller) {
        auto l = distiller->losses(out, b.ids, b.attention, b.sequence_ids, b.loss_mask, weights, n, b.topk);
        loss = l.total;
        for (const auto& kv : l.values) parts[kv.first] += kv.second;
      } else {
        loss = summed_token_ce(*model, out, b.targets, b.loss_mask) / std::max(n.targets, 1.0);
        parts["ce"] += loss.item<double>();
      }
      loss.backward();
      loss_sum += loss.item<double>();  // sync point
    }
    if (dist.enabled()) {
      // Each rank's loss is its share of the combined batch's loss: the sums are the totals.
      dist.all_reduce_gradients(params);  // sync point
      static const std::vector<std::string> kParts = {"ce", "logit", "feature", "attention"};
      std::vector<double> v{loss_sum, static_cast<double>(tokens)};
      for (const auto& k : kParts) {
        v.push_back(parts.count(k) ? parts[k] : 0.0);
        v.push_back(parts.count(k) ? 1.0 : 0.0);
      }
      v = dist.sum(v);
      loss_sum = v[0];
      tokens = static_cast<int64_t>(v[1]);
      parts.clear();
      for (size_t i = 0; i < kParts.size(); ++i)
        if (v[3 + 2 * i] > 0) parts[kParts[i]] = v[2 + 2 * i];
    }
    double grad_norm = clip_grad_norm(params, cfg.optim.grad_clip);
    double lr = learning_rate(cfg.optim, step, cfg.steps);
    if (nonfinite.allows_update(step + 1, parts, grad_norm)) optim.step(lr);
    optim.zero_grad();
    ++step;
    double dt = now_seconds() - t0;
    result.losses.push_back(loss_sum);
    result.parts.push_back(parts);

    nlohmann::json rec = {{"step", step}, {"loss", loss_sum}, {"lr", lr}, {"grad_norm", grad_norm},
                          {"tokens", tokens}, {"tokens_per_s", tokens / std::max(dt, 1e-9)}, {"epoch", epoch}};
    if (lambda > 0) rec["on_policy"] = on_policy ? 1 : 0;
    for (const auto& kv : parts) rec["loss_" + kv.first] = kv.second;
    if (distiller)
      for (const auto& kv : weights) rec["weight_" + kv.first] = kv.second;
    bool last = step == cfg.steps;
    if ((cfg.eval_every > 0 && step % cfg.eval_every == 0) || last) {
      double vl = validation_loss(*model, valid, cfg.batch_size, device, dist);
      if (!std::isnan(vl)) rec["valid_loss"] = vl;
      result.final_valid_loss = vl;
    }
    const MemoryPeak mem = memory_peak();
    rec["peak_rss_mb"] = mem.rss_bytes / 1048576.0;
    if (mem.cuda_bytes >= 0) rec["peak_cuda_mb"] = mem.cuda_bytes / 1048576.0;
    if (metrics && cfg.log_every > 0 && (step % cfg.log_every == 0 || last)) metrics->write(rec);
    char suffix[96];
    std::snprintf(suffix, sizeof suffix, "loss %.4f lr %.2e", loss_sum, lr);
    if (bar) bar->update(step, suffix + memory_suffix(mem));
    if (dist.is_main() && ((cfg.save_every > 0 && step % cfg.save_every == 0) || last)) {
      std::map<std::string, torch::Tensor> extra;
      if (distiller)
        for (auto& np : distiller->parameters()) extra[np.first] = np.second.detach().cpu().contiguous();
      save_training_checkpoint(cfg.run_dir, step, *model, optim, trainer_state(), tokenizer_dir, cfg.keep_last, extra);
    }
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
