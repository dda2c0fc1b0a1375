// The rollout engine's loop (see engine.h): `sample`.
#include "rollout/engine.h"

#include <dlfcn.h>  // defines: dlsym, dlopen

#include <ATen/CPUGeneratorImpl.h>  // defines: at::detail::createCPUGenerator

#include <algorithm>  // defines: std::max, std::min
#include <chrono>     // defines: std::chrono::steady_clock
#include <cstdio>     // defines: std::snprintf
#include <future>     // defines: std::future
#include <optional>   // defines: std::optional
#include <set>        // defines: std::set
#include <string>     // defines: std::to_string

#include "common/error.h"            // defines: retort::Error
#include "common/hash.h"             // defines: mix_seed
#include "rollout/block_manager.h"   // defines: BlockManager
#include "rollout/model_runner.h"    // defines: ModelRunner
#include "rollout/sampler.h"         // defines: sample, Rollout, SamplerOptions, draw_tokens
#include "rollout/scheduler.h"       // defines: Scheduler
#include "rollout/sequence.h"        // defines: Sequence
#include "rollout/tools.h"           // defines: fit_observation, observation_detail

namespace retort {

namespace {

constexpr int64_t kMiB = 1024 * 1024;

// Free device memory through the CUDA runtime or driver already loaded by LibTorch (no CUDA
// headers: the project builds against CPU-only LibTorch too). -1 when neither answers.
int64_t cuda_free_bytes() {
  using MemGetInfo = int (*)(size_t*, size_t*);
  size_t free_b = 0, total_b = 0;
  if (auto f = reinterpret_cast<MemGetInfo>(dlsym(RTLD_DEFAULT, "cudaMemGetInfo")))
    if (f(&free_b, &total_b) == 0) return static_cast<int64_t>(free_b);
  if (void* lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD))
    if (auto f = reinterpret_cast<MemGetInfo>(dlsym(lib, "cuMemGetInfo_v2")))
      if (f(&free_b, &total_b) == 0) return static_cast<int64_t>(free_b);
  return -1;
}

std::string mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", static_cast<double>(bytes) / kMiB);
  return buf;
}

}  // namespace

int64_t default_kv_cache_bytes(const torch::Device& device) {
  if (device.is_cuda()) {
    const int64_t free_b = cuda_free_bytes();
    if (free_b > 0) return free_b / 2;  // the other half: the trainer's activations and the allocator's slack
  }
  return 2048 * kMiB;
}

// ---- the engine loop ---------------------------------------------------------------------------

Rollout sample(Qwen2ForCausalLMImpl& model, const std::vector<std::vector<int32_t>>& prompts, const SamplerOptions& opts,
               const DecodeFn& decode, EngineStats* stats) {
  torch::NoGradGuard no_grad;
  const int64_t B = static_cast<int64_t>(prompts.size()), G = opts.group_size, Lmax = opts.max_new_tokens;
  if (B == 0 || G < 1 || Lmax < 1) {
    throw Error(ErrorInfo{"the sampler needs prompts, group_size >= 1 and max_new_tokens >= 1", "rollout engine",
                          "B >= 1, G >= 1, L >= 1",
                          "B " + std::to_string(B) + ", G " + std::to_string(G) + ", L " + std::to_string(Lmax), ""});
  }
  const int64_t N = B * G, V = model.config().vocab_size;
  int64_t P = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) throw Error("prompt " + std::to_string(i) + " is empty", "rollout engine", "give every prompt at least one token");
    for (int32_t id : prompts[i]) {
      if (id < 0 || id >= V) {
        throw Error(ErrorInfo{"prompt " + std::to_string(i) + " holds a token id outside the vocabulary", "rollout engine",
                              "0 <= id < " + std::to_string(V), std::to_string(id), "tokenizer and model must match"});
      }
    }
    P = std::max<int64_t>(P, static_cast<int64_t>(prompts[i].size()));
  }
  if (!opts.row_seeds.empty() && static_cast<int64_t>(opts.row_seeds.size()) != N) {
    throw Error(ErrorInfo{"the sampler got a seed count that is not one per row", "rollout engine: row_seeds",
                          std::to_string(N) + " seeds (B*G)", std::to_string(opts.row_seeds.size()), ""});
  }
  if (!opts.forced_lengths.empty() && static_cast<int64_t>(opts.forced_lengths.size()) != N) {
    throw Error(ErrorInfo{"forced_lengths needs one length per row", "rollout engine", std::to_string(N),
                          std::to_string(opts.forced_lengths.size()), ""});
  }

  if (!opts.forced_tokens.empty()) {
    if (static_cast<int64_t>(opts.forced_tokens.size()) != N) {
      throw Error(ErrorInfo{"forced_tokens needs one list per row", "rollout engine", std::to_string(N),
                            std::to_string(opts.forced_tokens.size()), ""});
    }
    for (const auto& row : opts.forced_tokens)
      for (int32_t id : row)
        if (id < 0 || id >= V)
          throw Error(ErrorInfo{"forced_tokens holds a token id outside the vocabulary", "rollout engine",
                                "0 <= id < " + std::to_string(V), std::to_string(id), ""});
  }
  const bool tools_on = opts.tools.enabled;
  const rewards::ToolFormat tool_format = opts.tools.tool_format();
  if (tools_on && (!decode || !opts.encode || opts.executor == nullptr)) {
    throw Error(ErrorInfo{"tool calls need a decoder, an encoder and a sandbox pool", "rollout engine: tools",
                          "sample(..., decode) with SamplerOptions::encode and ::executor set",
                          std::string(decode ? "" : "no decoder ") + (opts.encode ? "" : "no encoder ") +
                              (opts.executor ? "" : "no executor"),
                          "sample_and_score sets them from the tokenizer and the reward set's pool"});
  }

  // 1 size the pool. A sequence holds at most prompt + max_new_tokens - 1 positions (its
  // last token is sampled, never fed back).
  const int64_t bs = opts.block_size;
  if (bs < 1) throw Error(ErrorInfo{"sampling.block_size must be positive", "rollout engine", ">= 1", std::to_string(bs), ""});
  const int64_t per_token = ModelRunner::bytes_per_token(model.config(), model.dtype());
  const int64_t per_block = per_token * bs;
  const int64_t budget = opts.kv_cache_mb > 0 ? static_cast<int64_t>(opts.kv_cache_mb * kMiB) : default_kv_cache_bytes(model.device());
  const int64_t budget_blocks = budget / per_block;
  const auto blocks_for = [bs](int64_t tokens) { return (tokens + bs - 1) / bs; };
  int64_t worst_one = 0, worst_work = 0;
  for (const auto& p : prompts) {
    const int64_t len = static_cast<int64_t>(p.size());
    worst_one = std::max(worst_one, blocks_for(len + Lmax - 1));
    worst_work += blocks_for(len) + G * blocks_for(len + Lmax - 1);
  }
  if (worst_one > budget_blocks) {
    const std::string need_mb = mib(worst_one * per_block);
    throw Error(ErrorInfo{"one sequence cannot fit the KV cache budget", "rollout engine: sampling.kv_cache_mb",
                          "a budget that holds the longest prompt (" + std::to_string(P) + " tokens) plus max_new_tokens (" +
                              std::to_string(Lmax) + "): " + std::to_string(worst_one) + " blocks of " + std::to_string(bs) +
                              " positions = " + need_mb + " MiB at " + std::to_string(per_token) + " bytes per position",
                          mib(budget) + " MiB = " + std::to_string(budget_blocks) + " blocks",
                          "raise sampling.kv_cache_mb to at least " + need_mb +
                              ", or lower max_new_tokens or the prompt length"});
  }
  const int64_t num_blocks = std::min(budget_blocks, worst_work);
  BlockManager blocks(num_blocks, bs);
  ModelRunner runner(model, num_blocks, bs);
  SchedulerOptions so;
  so.max_num_seqs = opts.max_num_seqs;
  so.max_prefill_tokens = opts.max_prefill_tokens;
  Scheduler scheduler(blocks, so);

  // 2 queue: one group per prompt; one generator per sequence.
  std::vector<Sequence> seqs(static_cast<size_t>(N));
  std::vector<at::Generator> gens;
  gens.reserve(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; ++b) {
    std::vector<Sequence*> group;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t row = b * G + g;
      Sequence& s = seqs[static_cast<size_t>(row)];
      s.id = row;
      s.prompt_index = b;
      s.sample_index = g;
      s.prompt = &prompts[static_cast<size_t>(b)];
      gens.push_back(at::detail::createCPUGenerator(opts.row_seeds.empty() ? mix_seed(static_cast<int64_t>(opts.seed), b, g)
                                                                           : opts.row_seeds[static_cast<size_t>(row)]));
      group.push_back(&s);
    }
    scheduler.add_group(std::move(group));
  }
  const std::set<int64_t> stop_ids(opts.stop_token_ids.begin(), opts.stop_token_ids.end());
  const double lp_temperature = opts.greedy || opts.temperature <= 0 ? 1.0 : opts.temperature;
  const int64_t slots = std::min(opts.max_num_seqs, N);
  EngineStats st;

  auto finish = [&](Sequence& s) {
    scheduler.finish(&s);  // its blocks are free for the next step
    if (opts.on_finished) opts.on_finished(s.id, s.completion);
  };

  // ---- tool calls: pause on a closed call, run it in the pool, append the observation, resume.
  struct PendingCall {
    Sequence* seq = nullptr;
    std::string code;
    std::future<sandbox::Result> result;
  };
  std::vector<PendingCall> pending;  // in submission order
  const ToolOptions& tools = opts.tools;
  // Appends the observation of a call that ended with `status` to a paused sequence, then
  // resumes it, or ends it (over budget; or no room left under max_new_tokens: truncated).
  auto answer = [&](Sequence& s, const std::string& code, const std::string& status, const sandbox::Result* res,
                    const std::string& detail) {
    Observation obs = fit_observation(tool_format, status, res ? res->stdout_text : "", res ? res->stderr_text : "",
                                      detail, tools.max_observation_tokens, opts.encode);
    rewards::ToolCallRecord rec;
    rec.code = code;
    rec.observation = obs.body;
    rec.status = status;
    rec.wall_s = res ? res->wall_s : 0;
    rec.peak_memory_kb = res ? res->peak_memory_kb : 0;
    rec.truncated = obs.truncated;
    const int64_t n = static_cast<int64_t>(s.completion.size());
    rec.obs_start = n;
    if (static_cast<int64_t>(obs.ids.size()) > Lmax - n) {  // max_new_tokens bounds the whole completion
      obs.ids.resize(static_cast<size_t>(Lmax - n));
      rec.truncated = true;
    }
    for (int32_t id : obs.ids) {
      if (id < 0 || id >= V) {
        throw Error(ErrorInfo{"a tool observation encoded to a token id outside the vocabulary", "rollout engine: tools",
                              "0 <= id < " + std::to_string(V), std::to_string(id), "tokenizer and model must match"});
      }
      s.completion.push_back(id);
      s.logprobs.push_back(0.0f);  // not sampled: no policy log-prob
      s.observation.push_back(1);
    }
    rec.obs_tokens = static_cast<int64_t>(obs.ids.size());
    s.tool_time_s += rec.wall_s;
    s.tool_calls.push_back(std::move(rec));
    if (status == "budget") {
      s.tool_budget_stop = true;
      finish(s);
    } else if (static_cast<int64_t>(s.completion.size()) >= Lmax) {
      finish(s);  // no room to go on: truncated
    } else {
      scheduler.resume(&s);
    }
  };
  // After a sampled id that neither stopped the sequence nor reached max_new_tokens.
  auto maybe_call = [&](Sequence& s) {
    // Cheap test first: a call ends with a fence ("```") or a tag ("</tool_call>").
    const std::string last = decode({s.completion.back()});
    if (last.find(tool_format == rewards::ToolFormat::Python ? '`' : '>') == std::string::npos) return;
    std::optional<std::string> code = rewards::closed_tool_call(decode(s.completion), tool_format);
    if (!code) return;
    scheduler.pause(&s);
    const double left_s = tools.max_tool_time_s - s.tool_time_s;
    if (static_cast<int64_t>(s.tool_calls.size()) >= tools.max_calls || left_s < 0.001) {
      char why[96];
      if (static_cast<int64_t>(s.tool_calls.size()) >= tools.max_calls)
        std::snprintf(why, sizeof why, "the chain has used its %lld tool calls", static_cast<long long>(tools.max_calls));
      else
        std::snprintf(why, sizeof why, "the chain has used its %g s of tool time", tools.max_tool_time_s);
      answer(s, *code, "budget", nullptr, why);
      return;
    }
    if (code->empty() && tool_format == rewards::ToolFormat::Qwen) {
      answer(s, *code, "runtime_error", nullptr,
             "not JSON with a \"code\" argument");
      return;
    }
    sandbox::Job job;
    job.language = "python";
    job.source = *code;
    job.limits = tools.limits;
    job.limits.wall_s = std::min(job.limits.wall_s, left_s);  // the chain's tool time is a budget
    job.limits.cpu_s = std::min(job.limits.cpu_s, left_s);
    pending.push_back(PendingCall{&s, *code, opts.executor->submit(std::move(job))});
    ++st.tool_calls;
  };
  // Answers every finished call; with `block`, waits until at least one has finished.
  auto collect = [&](bool block) {
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      bool any = false;
      for (size_t i = 0; i < pending.size();) {
        if (pending[i].result.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
          ++i;
          continue;
        }
        PendingCall c = std::move(pending[i]);
        pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(i));
        const sandbox::Result res = c.result.get();
        answer(*c.seq, c.code, sandbox::status_name(res.status), &res, observation_detail(res));
        any = true;
      }
      if (any || !block || pending.empty()) break;
      pending.front().result.wait_for(std::chrono::milliseconds(2));  // nothing else to do: wait for the sandbox
    }
    if (block) st.tool_wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };

  // 3 step until every sequence finished.
  while (!scheduler.done()) {
    if (!pending.empty()) collect(/*block=*/!scheduler.runnable());
    if (!scheduler.runnable()) {
      if (pending.empty() && !scheduler.done()) {
        throw Error(ErrorInfo{"the rollout engine holds paused sequences with no tool call running", "rollout engine",
                              "a pending call per paused sequence", std::to_string(scheduler.num_paused()) + " paused",
                              "this is a bug in the engine loop"});
      }
      continue;
    }
    ScheduledBatch batch = scheduler.schedule();
    auto logits = runner.run(batch).to(torch::kCPU);  // sync point: [I, V] float32
    scheduler.postprocess(batch);
    st.preemptions += batch.preempted;
    if (batch.prefill) {
      ++st.prefill_steps;
    } else {
      ++st.decode_steps;
      st.idle_slot_steps += static_cast<int64_t>(batch.items.size()) < slots;
      st.decode_steps_with_paused += scheduler.num_paused() > 0;
    }
    // One draw per sampler (a prompt's prefill row samples the first token of each of its G
    // completions; a chunk before a prompt's last has none), batched over the step: draw r is
    // logits row rows[r], drawn with that sequence's generator.
    std::vector<int64_t> rows;
    std::vector<Sequence*> drawers;
    std::vector<at::Generator*> draw_gens;
    for (size_t i = 0; i < batch.items.size(); ++i) {
      for (Sequence* s : batch.items[i].samplers) {
        rows.push_back(static_cast<int64_t>(i));
        drawers.push_back(s);
        draw_gens.push_back(&gens[static_cast<size_t>(s->id)]);
      }
    }
    if (rows.empty()) continue;
    bool identity = static_cast<int64_t>(rows.size()) == logits.size(0);
    for (size_t r = 0; identity && r < rows.size(); ++r) identity = rows[r] == static_cast<int64_t>(r);
    auto drawn = draw_tokens(identity ? logits : logits.index_select(0, torch::tensor(rows, torch::kLong)), opts,
                             draw_gens);  // [R] int64
    const int64_t* drawn_ids = drawn.data_ptr<int64_t>();
    // log p under the tempered policy, the one the tokens are drawn from (top-k/top-p not applied).
    auto logp = torch::log_softmax(logits / lp_temperature, -1);  // [I, V]
    auto lpa = logp.accessor<float, 2>();
    for (size_t r = 0; r < rows.size(); ++r) {
      Sequence* s = drawers[r];
      int64_t tok = drawn_ids[r];
      if (!opts.forced_tokens.empty()) {
        const auto& forced_ids = opts.forced_tokens[static_cast<size_t>(s->id)];
        if (s->sampled < static_cast<int64_t>(forced_ids.size())) tok = forced_ids[static_cast<size_t>(s->sampled)];
      }
      s->completion.push_back(static_cast<int32_t>(tok));
      s->logprobs.push_back(lpa[rows[r]][tok]);
      s->observation.push_back(0);
      ++s->sampled;
      const int64_t n = static_cast<int64_t>(s->completion.size());
      const bool forced = !opts.forced_lengths.empty() && n >= opts.forced_lengths[static_cast<size_t>(s->id)];
      s->stopped = forced || stop_ids.count(tok) > 0;
      if (s->stopped || n >= Lmax) {
        finish(*s);
      } else if (tools_on) {
        maybe_call(*s);
      }
    }
  }
  st.num_blocks = num_blocks;
  st.block_size = bs;
  st.bytes_per_block = per_block;
  st.peak_blocks = blocks.peak_used();
  if (stats) *stats = st;

  // 4 the Rollout: [N, P + L] with left-padded prompts, rows prompt-major.
  int64_t L = 0;
  for (const auto& s : seqs) L = std::max<int64_t>(L, static_cast<int64_t>(s.completion.size()));
  Rollout r;
  r.prompt_length = P;
  r.group_size = G;
  r.tokens = torch::full({N, P + L}, opts.pad_token_id, torch::kLong);  // [N, P+L]
  r.attention_mask = torch::zeros({N, P + L}, torch::kLong);           // [N, P+L]
  r.completion_mask = torch::zeros({N, L}, torch::kLong);              // [N, L]
  r.observation_mask = torch::zeros({N, L}, torch::kLong);             // [N, L]
  r.logprobs = torch::zeros({N, L}, torch::kFloat);                    // [N, L]
  auto ta = r.tokens.accessor<int64_t, 2>();
  auto ma = r.attention_mask.accessor<int64_t, 2>();
  auto ca = r.completion_mask.accessor<int64_t, 2>();
  auto oa = r.observation_mask.accessor<int64_t, 2>();
  auto la = r.logprobs.accessor<float, 2>();
  r.completions.resize(static_cast<size_t>(N));
  r.truncated.resize(static_cast<size_t>(N));
  r.tool_calls.resize(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    const Sequence& s = seqs[static_cast<size_t>(i)];
    const int64_t Pi = s.prompt_length(), n = static_cast<int64_t>(s.completion.size());
    for (int64_t j = 0; j < Pi; ++j) ta[i][P - Pi + j] = s.token(j), ma[i][P - Pi + j] = 1;
    for (int64_t j = 0; j < n; ++j) {
      ta[i][P + j] = s.completion[static_cast<size_t>(j)];
      ma[i][P + j] = 1;
      const bool obs = s.observation[static_cast<size_t>(j)] != 0;
      ca[i][j] = obs ? 0 : 1;
      oa[i][j] = obs ? 1 : 0;
      la[i][j] = s.logprobs[static_cast<size_t>(j)];
    }
    r.completions[static_cast<size_t>(i)] = s.completion;
    r.truncated[static_cast<size_t>(i)] = !s.stopped && !s.tool_budget_stop;
    r.tool_calls[static_cast<size_t>(i)] = s.tool_calls;
  }
  const auto dev = model.device();
  if (!dev.is_cpu()) {
    r.tokens = r.tokens.to(dev), r.attention_mask = r.attention_mask.to(dev);
    r.completion_mask = r.completion_mask.to(dev), r.logprobs = r.logprobs.to(dev);
    r.observation_mask = r.observation_mask.to(dev);
  }
  if (decode) {
    r.texts.reserve(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) {
      std::vector<int32_t> c = r.completions[static_cast<size_t>(i)];
      if (seqs[static_cast<size_t>(i)].stopped && !c.empty() && stop_ids.count(c.back())) c.pop_back();
      r.texts.push_back(decode(c));
    }
  }
  return r;
}

}  // namespace retort
