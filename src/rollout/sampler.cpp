// The static sampler (sample_static, the benchmark's baseline; see sampler.h), token choice
// and token_logprobs (logprobs.h): one translation unit, since all are the model's
// inference-side consumers. The engine (`sample`) is rollout/engine.cpp.
#include "rollout/sampler.h"

#include <ATen/CPUGeneratorImpl.h>  // defines: at::detail::createCPUGenerator

#include <algorithm>  // defines: std::max, std::min
#include <limits>     // defines: std::numeric_limits
#include <mutex>      // defines: std::lock_guard

#include "common/error.h"      // defines: retort::Error
#include "rollout/logprobs.h"  // defines: token_logprobs

namespace retort {

// ---- log-probabilities -----------------------------------------------------------------

torch::Tensor token_logprobs(Qwen2ForCausalLMImpl& model, const torch::Tensor& ids, const torch::Tensor& attention_mask,
                             const LogprobOptions& opts) {
  if (ids.dim() != 2 || ids.size(1) < 2) {
    throw Error(ErrorInfo{"token_logprobs needs ids of shape [N, T] with T >= 2", "token_logprobs", "[N, T>=2]",
                          std::to_string(ids.dim()) + " dimensions", ""});
  }
  const auto dev = model.device();
  const int64_t N = ids.size(0), T = ids.size(1);
  if (opts.first < 0 || opts.first > T - 2) {
    throw Error(ErrorInfo{"token_logprobs: the first scored position lies outside the sequence", "token_logprobs",
                          "0 <= first <= " + std::to_string(T - 2), std::to_string(opts.first), ""});
  }
  const int64_t Tn = T - 1 - opts.first;  // scored positions per row
  auto x = ids.to(dev, torch::kLong);
  auto m = attention_mask.defined() ? attention_mask.to(dev, torch::kLong) : torch::ones_like(x);  // [N, T]
  const int64_t mb = opts.micro_batch > 0 ? opts.micro_batch : N;
  const torch::Tensor w = model.head_weight();  // [V, C]
  ForwardOptions fo;
  fo.skip_lm_head = true;
  fo.checkpoint_layers = opts.checkpoint_layers;
  std::vector<torch::Tensor> parts, entropies;
  for (int64_t s = 0; s < N; s += mb) {
    const int64_t n = std::min(mb, N - s);
    auto xi = x.narrow(0, s, n), mi = m.narrow(0, s, n);
    auto valid = mi.narrow(1, opts.first + 1, Tn) * mi.narrow(1, opts.first, Tn);                         // [n, Tn]
    if (opts.sequence_ids.defined()) {
      auto si = opts.sequence_ids.to(dev, torch::kLong).narrow(0, s, n);
      fo.sequence_ids = si;
      valid = valid * (si.narrow(1, opts.first + 1, Tn) == si.narrow(1, opts.first, Tn)).to(torch::kLong);
    }
    valid = valid.reshape({-1});                                                                           // [n Tn]
    auto h = model.forward(xi, mi, fo).hidden.narrow(1, opts.first, Tn);                                  // [n, Tn, C]
    auto idx = valid.nonzero().squeeze(-1);                                                                // [k] real positions
    auto hs = h.reshape({n * Tn, h.size(-1)}).index_select(0, idx);                                       // [k, C]
    auto tg = xi.narrow(1, opts.first + 1, Tn).reshape({-1}).index_select(0, idx);                        // [k]
    auto q = head_token_logprobs(hs, w, tg, opts.temperature, opts.entropy != nullptr, opts.head);        // [k, 1|2]
    auto zero = torch::zeros({n * Tn}, q.options());
    parts.push_back(zero.index_copy(0, idx, q.select(1, 0)).view({n, Tn}));                               // [n, Tn]
    if (opts.entropy) {
      auto h = opts.entropy_grad ? q.select(1, 1) : q.select(1, 1).detach();                             // [k]
      entropies.push_back(zero.index_copy(0, idx, h).view({n, Tn}));
    }
  }
  if (opts.entropy) *opts.entropy = entropies.size() == 1 ? entropies[0] : torch::cat(entropies, 0);
  return parts.size() == 1 ? parts[0] : torch::cat(parts, 0);
}

// ---- token choice ------------------------------------------------------------------------

torch::Tensor pick_tokens(const torch::Tensor& logits, const SamplerOptions& opts, at::Generator& gen) {
  if (opts.greedy || opts.temperature <= 0) return logits.argmax(-1);  // [A]
  const double inf = std::numeric_limits<double>::infinity();
  auto x = logits.to(torch::kFloat) / opts.temperature;  // [A, V]
  const int64_t V = x.size(-1);
  if (opts.top_k > 0 && opts.top_k < V) {
    auto kth = std::get<0>(x.topk(opts.top_k, -1)).narrow(-1, opts.top_k - 1, 1);  // [A, 1]
    x = x.masked_fill(x < kth, -inf);
  }
  if (opts.top_p < 1.0) {
    // Nucleus: keep tokens, most likely first, while the probability before them is < top_p.
    auto sorted = x.sort(-1, /*descending=*/true);
    auto vals = std::get<0>(sorted), idx = std::get<1>(sorted);  // [A, V]
    auto p = torch::softmax(vals, -1);
    auto before = p.cumsum(-1) - p;
    x = x.scatter(-1, idx, vals.masked_fill(before >= opts.top_p, -inf));
  }
  return torch::softmax(x, -1).multinomial(1, /*replacement=*/false, gen).squeeze(-1);  // [A]
}

torch::Tensor draw_tokens(const torch::Tensor& logits, const SamplerOptions& opts, const std::vector<at::Generator*>& gens) {
  const int64_t R = logits.size(0), V = logits.size(1);
  if (static_cast<int64_t>(gens.size()) != R || !logits.device().is_cpu()) {
    throw Error(ErrorInfo{"draw_tokens needs CPU logits and one generator per row", "sampler",
                          std::to_string(R) + " generators, CPU", std::to_string(gens.size()) + ", " + logits.device().str(),
                          "this is a bug in the caller"});
  }
  if (opts.greedy || opts.temperature <= 0) return logits.argmax(-1);  // [R]
  const double inf = std::numeric_limits<double>::infinity();
  auto x = logits.to(torch::kFloat) / opts.temperature;  // [R, V]
  if (opts.top_k > 0 && opts.top_k < V) {
    auto kth = std::get<0>(x.topk(opts.top_k, -1)).narrow(-1, opts.top_k - 1, 1);  // [R, 1]
    x = x.masked_fill(x < kth, -inf);
  }
  torch::Tensor order;  // [R, V] vocabulary id at each position of x (undefined: x is in vocabulary order)
  if (opts.top_p < 1.0) {
    // Nucleus, drawn in sorted order: keep tokens, most likely first, while the probability
    // before them is < top_p (the set pick_tokens keeps).
    auto sorted = x.sort(-1, /*descending=*/true);
    x = std::get<0>(sorted), order = std::get<1>(sorted);  // [R, V]
    auto p = torch::softmax(x, -1);
    x = x.masked_fill(p.cumsum(-1) - p >= opts.top_p, -inf);
  }
  // Inverse transform: the first position whose cumulative probability (float64, summed in
  // vocabulary order) exceeds u * total. Two passes over each row's probabilities instead of a
  // [R, V] float64 cumulative tensor (65 MB at 256 rows x 32k, allocated and faulted in per step).
  auto prob = torch::softmax(x, -1).contiguous();  // [R, V] float32
  auto picked = torch::empty({R}, torch::kLong);   // [R]
  const float* pp = prob.data_ptr<float>();
  int64_t* out = picked.data_ptr<int64_t>();
  for (int64_t r = 0; r < R; ++r) {
    uint64_t bits;
    {
      std::lock_guard<std::mutex> lock(gens[static_cast<size_t>(r)]->mutex());
      bits = at::check_generator<at::CPUGeneratorImpl>(*gens[static_cast<size_t>(r)])->random64();
    }
    const double u = static_cast<double>(bits >> 11) * 0x1.0p-53;  // [0, 1), 53 random bits
    const float* row = pp + r * V;
    double total = 0.0;
    for (int64_t j = 0; j < V; ++j) total += static_cast<double>(row[j]);
    const double target = u * total;
    double acc = 0.0;
    int64_t j = 0;
    for (; j < V; ++j) {
      acc += static_cast<double>(row[j]);
      if (acc > target) break;
    }
    out[r] = std::min(j, V - 1);
  }
  return order.defined() ? order.gather(1, picked.unsqueeze(1)).squeeze(1).contiguous() : picked;  // [R]
}

namespace {

at::Generator make_generator(const torch::Device& dev, uint64_t seed) {
  if (dev.is_cpu()) return at::detail::createCPUGenerator(seed);
  // CUDA: the device's default generator, reseeded (sampling on the GPU needs a GPU generator).
  at::Generator g = at::globalContext().defaultGenerator(dev);
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_current_seed(seed);
  return g;
}

}  // namespace

// ---- the sampler -------------------------------------------------------------------------

Rollout sample_static(Qwen2ForCausalLMImpl& model, const std::vector<std::vector<int32_t>>& prompts,
                      const SamplerOptions& opts, const DecodeFn& decode, EngineStats* stats) {
  torch::NoGradGuard no_grad;
  const int64_t B = static_cast<int64_t>(prompts.size()), G = opts.group_size, Lmax = opts.max_new_tokens;
  if (B == 0 || G < 1 || Lmax < 1) {
    throw Error(ErrorInfo{"the sampler needs prompts, group_size >= 1 and max_new_tokens >= 1", "sampler",
                          "B >= 1, G >= 1, L >= 1",
                          "B " + std::to_string(B) + ", G " + std::to_string(G) + ", L " + std::to_string(Lmax), ""});
  }
  const auto dev = model.device();
  const int64_t V = model.config().vocab_size;
  int64_t P = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) throw Error("prompt " + std::to_string(i) + " is empty", "sampler", "give every prompt at least one token");
    for (int32_t id : prompts[i]) {
      if (id < 0 || id >= V) {
        throw Error(ErrorInfo{"prompt " + std::to_string(i) + " holds a token id outside the vocabulary", "sampler",
                              "0 <= id < " + std::to_string(V), std::to_string(id), "tokenizer and model must match"});
      }
    }
    P = std::max<int64_t>(P, static_cast<int64_t>(prompts[i].size()));
  }

  // (1) left-padded prompts, prefilled once per prompt.
  auto prompt_ids = torch::full({B, P}, opts.pad_token_id, torch::kLong);  // [B, P]
  auto prompt_mask = torch::zeros({B, P}, torch::kLong);                   // [B, P]
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    const int64_t off = P - static_cast<int64_t>(p.size());
    auto acc = prompt_ids.accessor<int64_t, 2>();
    for (size_t j = 0; j < p.size(); ++j) acc[b][off + j] = p[j];
    prompt_mask[b].narrow(0, off, static_cast<int64_t>(p.size())).fill_(1);
  }
  prompt_ids = prompt_ids.to(dev);
  prompt_mask = prompt_mask.to(dev);
  KVCache cache = KVCache::allocate(model.config(), B, P + Lmax, model.dtype(), dev);
  ForwardOptions fo;
  fo.cache = &cache;
  fo.last_logits_only = true;
  auto logits = model.forward(prompt_ids, prompt_mask, fo).logits.select(1, 0);  // [B, V]

  // (2) each prompt's cache rows and logits, G times: row b*G + g.
  auto rows = torch::arange(B, torch::TensorOptions().dtype(torch::kLong).device(dev)).repeat_interleave(G);  // [B*G]
  if (G > 1) {
    cache.select_rows(rows);
    logits = logits.index_select(0, rows);  // [B*G, V]
  }
  const int64_t N = B * G;
  auto gen_tokens = torch::full({N, Lmax}, opts.pad_token_id, torch::TensorOptions().dtype(torch::kLong).device(dev));  // [N, L]
  auto gen_lp = torch::zeros({N, Lmax}, torch::TensorOptions().dtype(torch::kFloat).device(dev));                     // [N, L]
  auto active = torch::arange(N, torch::TensorOptions().dtype(torch::kLong).device(dev));  // [A]: slot -> output row
  std::vector<int64_t> active_host(N);
  for (int64_t i = 0; i < N; ++i) active_host[i] = i;
  std::vector<int64_t> lengths(N, 0);
  std::vector<bool> stopped(N, false);
  auto stop_ids = torch::tensor(opts.stop_token_ids.empty() ? std::vector<int64_t>{-1} : opts.stop_token_ids,
                                torch::kLong).to(dev);
  at::Generator gen = make_generator(dev, opts.seed);
  std::vector<at::Generator> row_gens;  // [N] with opts.row_seeds
  if (!opts.row_seeds.empty()) {
    if (static_cast<int64_t>(opts.row_seeds.size()) != N) {
      throw Error(ErrorInfo{"the sampler got a seed count that is not one per row", "sampler: row_seeds",
                            std::to_string(N) + " seeds (B*G)", std::to_string(opts.row_seeds.size()), ""});
    }
    for (uint64_t s : opts.row_seeds) row_gens.push_back(at::detail::createCPUGenerator(s));
  }
  // Each active row's token from its own generator: [A] on dev.
  auto pick_per_row = [&](const torch::Tensor& lg) {
    auto host = lg.to(torch::kCPU);  // sync point: [A, V]
    std::vector<int64_t> picked(active_host.size());
    for (size_t i = 0; i < active_host.size(); ++i)
      picked[i] = pick_tokens(host.narrow(0, static_cast<int64_t>(i), 1), opts, row_gens[static_cast<size_t>(active_host[i])])
                      .item<int64_t>();
    return torch::tensor(picked, torch::kLong).to(dev);
  };

  auto finish_row = [&](int64_t row) {
    if (!opts.on_finished) return;
    auto t = gen_tokens[row].narrow(0, 0, lengths[row]).to(torch::kCPU);  // sync point (only with a callback)
    std::vector<int32_t> ids(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    opts.on_finished(row, ids);
  };

  // (3) decode.
  const double lp_temperature = opts.greedy || opts.temperature <= 0 ? 1.0 : opts.temperature;
  int64_t used = 0;
  for (int64_t t = 0; t < Lmax; ++t) {
    auto next = row_gens.empty() ? pick_tokens(logits, opts, gen) : pick_per_row(logits);  // [A]
    // log p under the tempered policy, the one the tokens were drawn from (GRPO's ratio and
    // policy gradient are taken on it, as in TRL and verl); top-k/top-p are not applied here.
    auto lp = torch::log_softmax(logits.to(torch::kFloat) / lp_temperature, -1).gather(1, next.unsqueeze(1)).squeeze(1);  // [A]
    gen_tokens.select(1, t).index_copy_(0, active, next);
    gen_lp.select(1, t).index_copy_(0, active, lp);
    used = t + 1;
    auto is_stop = torch::isin(next, stop_ids);                     // [A] bool
    auto is_stop_host = is_stop.to(torch::kCPU);                    // sync point: one small copy per step
    const bool* sp = is_stop_host.data_ptr<bool>();
    const int64_t A = static_cast<int64_t>(active_host.size());
    std::vector<int64_t> keep;                                      // slots that go on
    keep.reserve(A);
    if (stats) {
      ++stats->decode_steps;
      stats->idle_slot_steps += A < N;
    }
    for (int64_t i = 0; i < A; ++i) {
      const int64_t row = active_host[i];
      lengths[row] = t + 1;
      if (!opts.forced_lengths.empty() && t + 1 >= opts.forced_lengths[static_cast<size_t>(row)]) {
        stopped[row] = true;
        finish_row(row);
      } else if (sp[i]) {
        stopped[row] = true;
        finish_row(row);
      } else {
        keep.push_back(i);
      }
    }
    if (keep.empty() || t == Lmax - 1) {
      if (t == Lmax - 1) for (int64_t i : keep) finish_row(active_host[i]);
      break;
    }
    if (static_cast<int64_t>(keep.size()) < A) {
      // (4) compaction: finished rows leave the cache and the batch.
      auto k = torch::tensor(keep, torch::kLong).to(dev);
      cache.select_rows(k);
      active = active.index_select(0, k);
      next = next.index_select(0, k);
      std::vector<int64_t> ah;
      ah.reserve(keep.size());
      for (int64_t i : keep) ah.push_back(active_host[i]);
      active_host.swap(ah);
    }
    logits = model.forward(next.unsqueeze(1), {}, fo).logits.select(1, 0);  // [A, V]
  }

  if (stats) {
    // The dense cache held N rows of P + max_new_tokens positions (after the G-fold copy).
    const auto& c = model.config();
    stats->block_size = 1;
    stats->bytes_per_block = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim *
                             static_cast<int64_t>(torch::elementSize(model.dtype()));
    stats->num_blocks = stats->peak_blocks = N * (P + Lmax);
  }

  // Assemble the rollout.
  Rollout r;
  r.prompt_length = P;
  r.group_size = G;
  auto lengths_t = torch::tensor(lengths, torch::kLong).to(dev);                                          // [N]
  auto steps = torch::arange(used, torch::TensorOptions().dtype(torch::kLong).device(dev)).unsqueeze(0);  // [1, L]
  r.completion_mask = (steps < lengths_t.unsqueeze(1)).to(torch::kLong);                                 // [N, L]
  auto toks = gen_tokens.narrow(1, 0, used).masked_fill(r.completion_mask == 0, opts.pad_token_id);     // [N, L]
  auto rep_ids = G > 1 ? prompt_ids.index_select(0, rows) : prompt_ids;                                 // [N, P]
  auto rep_mask = G > 1 ? prompt_mask.index_select(0, rows) : prompt_mask;
  r.tokens = torch::cat({rep_ids, toks}, 1);                                  // [N, P+L]
  r.attention_mask = torch::cat({rep_mask, r.completion_mask}, 1);           // [N, P+L]
  r.logprobs = gen_lp.narrow(1, 0, used) * r.completion_mask.to(torch::kFloat);  // [N, L]
  r.observation_mask = torch::zeros_like(r.completion_mask);                 // [N, L]: no tools here
  r.tool_calls.resize(N);
  auto toks_cpu = toks.to(torch::kCPU).contiguous();
  r.completions.resize(N);
  r.truncated.resize(N);
  for (int64_t i = 0; i < N; ++i) {
    const int64_t* p = toks_cpu[i].data_ptr<int64_t>();
    r.completions[i].assign(p, p + lengths[i]);
    r.truncated[i] = !stopped[i];
  }
  if (decode) {
    r.texts.reserve(N);
    for (int64_t i = 0; i < N; ++i) {
      std::vector<int32_t> c = r.completions[i];
      if (stopped[i] && !c.empty()) c.pop_back();
      r.texts.push_back(decode(c));
    }
  }
  return r;
}

}  // namespace retort
