// `retort generate` and `retort score` (DESIGN.md section 4): sampling from a checkpoint
// folder, and per-token log-probabilities of id sequences. stdout is JSON lines; messages
// go to stderr.
#include <algorithm>   // defines: std::max
#include <filesystem>  // defines: std::filesystem
#include <fstream>     // defines: std::ifstream
#include <iostream>    // defines: std::cin, std::cout
#include <memory>      // defines: std::unique_ptr
#include <optional>    // defines: std::optional
#include <set>         // defines: std::set

#include "cli/commands.h"
#include "common/config.h"          // defines: json, load_json_file, parse_json_text
#include "common/error.h"           // defines: retort::Error
#include "common/log.h"             // defines: log_info
#include "common/platform.h"        // defines: check_fits_in_memory
#include "common/runtime.h"         // defines: apply_runtime, resolve_device
#include "common/torch_pch.h"       // defines: torch::NoGradGuard
#include "model/checkpoint.h"       // defines: load_model
#include "rollout/logprobs.h"       // defines: token_logprobs
#include "rollout/sampler.h"        // defines: sample, EngineStats
#include "sandbox/executor.h"       // defines: sandbox::Executor (tool calls)
#include "tokenizer/chat_template.h"  // defines: ChatTemplate
#include "tokenizer/tokenizer.h"    // defines: Tokenizer

namespace retort::cli {

namespace fs = std::filesystem;

namespace {

struct ModelArgs {
  std::string dir;
  std::string device = "auto";
  std::string dtype = "auto";
  int threads = 0;
  int64_t seed = 0;
};

void add_model_args(CLI::App* cmd, ModelArgs& a) {
  cmd->add_option("--model", a.dir, "model folder (config.json, model.safetensors, tokenizer.json)")->required();
  cmd->add_option("--device", a.device, "auto | cpu | cuda")->capture_default_str();
  cmd->add_option("--dtype", a.dtype, "auto (float32 on CPU, bfloat16 on CUDA) | float32 | bfloat16 | float16")
      ->capture_default_str();
  cmd->add_option("--threads", a.threads, "intra-op threads (0 = all cores)")->capture_default_str()->check(in_range(Range::between(0, 4096)));
}

Qwen2ForCausalLM open_model(const ModelArgs& a) {
  RuntimeConfig rc;
  rc.threads = a.threads;
  rc.seed = a.seed;
  rc.device = a.device;
  log_info(apply_runtime(rc));
  LoadOptions lo;
  lo.device = resolve_device(a.device);
  lo.dtype = a.dtype;
  auto model = load_model(a.dir, lo);
  const auto& c = model->config();
  log_info("loaded " + c.architecture + " from " + a.dir + ": " + std::to_string(c.num_parameters() / 1000000.0) +
           "M parameters, " + std::to_string(c.num_hidden_layers) + " layers, " + dtype_name(model->dtype()) + " on " +
           lo.device);
  return model;
}

// Stop ids: config.json and generation_config.json eos_token_id, plus the end-of-turn tokens
// of the chat formats this project speaks, when the tokenizer has them.
std::vector<int64_t> stop_ids_for(const std::string& dir, const ModelConfig& cfg, const Tokenizer& tok,
                                  const std::vector<std::string>& extra_strings) {
  std::set<int64_t> ids(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end());
  const fs::path gc = fs::path(dir) / "generation_config.json";
  if (fs::exists(gc)) {
    json g = load_json_file(gc.string());
    if (g.contains("eos_token_id")) {
      const json& e = g["eos_token_id"];
      if (e.is_number_integer()) ids.insert(e.get<int64_t>());
      else if (e.is_array()) for (const auto& x : e) if (x.is_number_integer()) ids.insert(x.get<int64_t>());
    }
  }
  std::vector<std::string> names = {"<|im_end|>", "<|endoftext|>", "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"};
  names.insert(names.end(), extra_strings.begin(), extra_strings.end());
  for (const auto& n : names) {
    if (auto id = tok.token_to_id(n)) ids.insert(*id);
  }
  return {ids.begin(), ids.end()};
}

Tokenizer open_tokenizer(const std::string& dir) {
  const fs::path p = fs::path(dir) / "tokenizer.json";
  if (!fs::exists(p)) {
    throw Error(ErrorInfo{"the model folder has no tokenizer.json", dir, "tokenizer.json next to config.json", "",
                          "copy the tokenizer files of the model into the folder"});
  }
  return Tokenizer::from_file(p.string());
}

}  // namespace

void register_model_commands(CLI::App& app) {
  // ---- generate
  {
    auto a = std::make_shared<ModelArgs>();
    auto prompt = std::make_shared<std::string>();
    auto prompts_file = std::make_shared<std::string>();
    auto chat = std::make_shared<std::string>();
    auto so = std::make_shared<SamplerOptions>();
    so->max_new_tokens = 256;
    auto tools = std::make_shared<std::string>();
    CLI::App* cmd = app.add_subcommand(
        "generate", "sample completions from a checkpoint with the rollout engine; stdout: one JSON line per completion "
                    "{\"prompt_index\", \"sample_index\", \"prompt_ids\", \"ids\", \"logprobs\", \"text\", \"finish_reason\", "
                    "\"index\", \"logprob\"}, prompt by prompt (docs/rollout.md)");
    add_model_args(cmd, *a);
    auto* one = cmd->add_option("--prompt", *prompt, "prompt text (special-token strings are matched)");
    auto* many = cmd->add_option("--prompts", *prompts_file, "JSONL file: one {\"prompt\": TEXT} or {\"ids\": [...]} per line");
    one->excludes(many);
    cmd->add_option("--chat", *chat, "wrap text prompts as a user turn of this chat template: r1-distill | chatml | plain");
    // The same ranges as the sampling keys of a config (GrpoSamplingConfig, EvalSamplingConfig).
    cmd->add_option("--n", so->group_size, "completions per prompt")->capture_default_str()->check(in_range(Range::between(1, 4096)));
    cmd->add_option("--max-new-tokens", so->max_new_tokens, "tokens per completion at most")
        ->capture_default_str()->check(in_range(Range::between(1, 1 << 20)));
    cmd->add_option("--temperature", so->temperature, "sampling temperature (0 = greedy)")
        ->capture_default_str()->check(in_range(Range::between(0, 100)));
    cmd->add_option("--top-p", so->top_p, "nucleus sampling threshold")
        ->capture_default_str()->check(in_range(Range::above(0).up_to(1)));
    cmd->add_option("--top-k", so->top_k, "keep the k most likely tokens (0 = all)")
        ->capture_default_str()->check(in_range(Range::at_least(0)));
    cmd->add_flag("--greedy", so->greedy, "argmax decoding");
    cmd->add_option("--seed", a->seed, "random seed (the same seed gives the same completions, whatever --kv-cache-mb)")
        ->capture_default_str();
    cmd->add_option("--kv-cache-mb", so->kv_cache_mb, "KV cache budget in MiB (0 = CPU 2048, CUDA half the free memory)")
        ->capture_default_str()->check(in_range(Range::at_least(0).up_to(1 << 24)));
    // Tool calls (docs/tools.md): the same ranges as the `tools` config section.
    cmd->add_option("--tools", *tools, "run tool calls in the sandbox: python (```python fences inside <think>) | qwen "
                                       "(<tool_call>{json}</tool_call>); each line then carries \"tool_calls\"")
        ->check(CLI::IsMember({"python", "qwen"}));
    cmd->add_option("--max-tool-calls", so->tools.max_calls, "tool calls per completion")
        ->capture_default_str()->check(in_range(Range::at_least(0).up_to(1024)));
    cmd->add_option("--max-observation-tokens", so->tools.max_observation_tokens, "tokens of one tool observation")
        ->capture_default_str()->check(in_range(Range::at_least(32).up_to(1 << 20)));
    cmd->add_option("--tool-wall-s", so->tools.limits.wall_s, "wall clock limit of one tool call")
        ->capture_default_str()->check(in_range(Range::between(0.001, 86400)));
    cmd->callback([a, prompt, prompts_file, chat, so, tools] {
      if (prompt->empty() == prompts_file->empty())
        throw Error("give one of --prompt TEXT and --prompts FILE.jsonl", "retort generate", "see retort generate --help");
      auto model = open_model(*a);
      Tokenizer tok = open_tokenizer(a->dir);
      std::vector<std::string> extra_stops;
      std::optional<ChatTemplate> tmpl;
      if (!chat->empty()) {
        tmpl = ChatTemplate::by_name(*chat);
        extra_stops = tmpl->stop_strings();
      }
      auto encode_text = [&](const std::string& t) {
        return tok.encode(tmpl ? tmpl->render({ChatMessage{"user", t}}, /*add_generation_prompt=*/true) : t);
      };
      const int64_t V = model->config().vocab_size;
      std::vector<std::vector<int32_t>> prompts;
      if (!prompt->empty()) {
        prompts.push_back(encode_text(*prompt));
        if (prompts.back().empty()) throw Error("the prompt encodes to no tokens", "--prompt", "give a non-empty prompt");
      } else {
        std::ifstream in(*prompts_file);
        if (!in) throw Error("cannot open the prompts file", *prompts_file, "check the path");
        std::string line;
        int64_t lineno = 0;
        while (std::getline(in, line)) {
          ++lineno;
          if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
          const std::string where = *prompts_file + ":" + std::to_string(lineno);
          json doc = parse_json_text(line, where);
          std::vector<int32_t> ids;
          if (doc.is_object() && doc.contains("prompt") && doc["prompt"].is_string()) {
            ids = encode_text(doc["prompt"].get<std::string>());
          } else if (doc.is_object() && doc.contains("ids") && doc["ids"].is_array()) {
            for (const auto& x : doc["ids"]) {
              if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= V) {
                throw Error(ErrorInfo{"a token id is not an integer of the vocabulary", where, "0 <= id < " + std::to_string(V),
                                      quote_for_error(x.dump()), ""});
              }
              ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
            }
          } else {
            throw Error(ErrorInfo{"each line must be {\"prompt\": TEXT} or {\"ids\": [...]}", where, "one of them",
                                  quote_for_error(line), ""});
          }
          if (ids.empty()) throw Error("the prompt has no tokens", where, "give a non-empty prompt");
          prompts.push_back(std::move(ids));
        }
        if (prompts.empty()) throw Error("the prompts file holds no prompt", *prompts_file, "one JSON object per line");
      }
      SamplerOptions o = *so;
      o.seed = static_cast<uint64_t>(a->seed);
      std::unique_ptr<sandbox::Executor> pool;
      if (!tools->empty()) {
        o.tools.enabled = true;
        o.tools.format = *tools;
        o.tools.limits.cpu_s = o.tools.limits.wall_s;
        pool = std::make_unique<sandbox::Executor>(sandbox::ExecutorConfig{});
        o.executor = pool.get();
        o.encode = [&tok](const std::string& text) { return tok.encode(text); };
      }
      o.stop_token_ids = stop_ids_for(a->dir, model->config(), tok, extra_stops);
      EngineStats st;
      auto r = sample(*model, prompts, o, [&tok](const std::vector<int32_t>& c) { return tok.decode(c, /*skip_special=*/false); },
                      &st);
      const int64_t G = o.group_size;
      // The printed log-probs: one forward pass per finished sequence ([1, P + n], the shapes
      // of `retort score`), not the sampler's, whose last float bits depend on what the batch
      // held; so that the same seed prints the same lines for any --kv-cache-mb.
      LogprobOptions lo;
      lo.temperature = o.greedy || o.temperature <= 0 ? 1.0 : o.temperature;
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < r.texts.size(); ++i) {
        const auto& ids = r.completions[i];
        const auto& pids = prompts[i / static_cast<size_t>(G)];
        std::vector<int64_t> all(pids.begin(), pids.end());
        all.insert(all.end(), ids.begin(), ids.end());
        auto seq_lp = token_logprobs(*model, torch::tensor(all, torch::kLong).unsqueeze(0), {}, lo)
                          .to(torch::kCPU).to(torch::kDouble).contiguous();  // [1, P + n - 1]
        const double* lp0 = seq_lp.data_ptr<double>() + (seq_lp.size(1) - static_cast<int64_t>(ids.size()));
        std::vector<double> lps(lp0, lp0 + ids.size());
        // "logprob": the sum over model-written tokens (tool observations are not the model's).
        const auto& calls = r.tool_calls[i];
        std::vector<int64_t> observed(ids.size(), 0);
        for (const auto& c : calls)
          for (int64_t j = c.obs_start; j < c.obs_start + c.obs_tokens; ++j) observed[static_cast<size_t>(j)] = 1;
        double sum = 0;
        for (size_t j = 0; j < lps.size(); ++j) sum += observed[j] ? 0.0 : lps[j];
        const int64_t row = static_cast<int64_t>(i);
        const bool budget = !calls.empty() && calls.back().status == "budget";
        json line = {{"prompt_index", row / G}, {"sample_index", row % G}, {"prompt_ids", prompts[static_cast<size_t>(row / G)]},
                     {"ids", ids}, {"logprobs", lps}, {"text", r.texts[i]},
                     {"finish_reason", budget ? "tool_budget" : r.truncated[i] ? "length" : "stop"},
                     {"index", row}, {"logprob", sum}};
        if (o.tools.enabled) {
          line["observation_mask"] = observed;
          line["tool_calls"] = json::array();
          for (const auto& c : calls) line["tool_calls"].push_back(rewards::to_json(c));
        }
        std::cout << line.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
      }
      std::cout.flush();
      log_info("generate: " + std::to_string(r.texts.size()) + " completions; KV cache " + std::to_string(st.num_blocks) +
               " blocks of " + std::to_string(st.block_size) + " positions, peak " + std::to_string(st.peak_kv_bytes() / 1024) +
               " KiB, " + std::to_string(st.preemptions) + " preemptions");
    });
  }

  // ---- score
  {
    auto a = std::make_shared<ModelArgs>();
    auto batch = std::make_shared<int64_t>(8);
    CLI::App* cmd = app.add_subcommand(
        "score", "log-probabilities of token sequences; stdin: {\"ids\": [...]} per line; stdout: "
                 "{\"logprobs\": [null, ...]} per line (log p of each token given the ones before it)");
    add_model_args(cmd, *a);
    cmd->add_option("--batch", *batch, "lines scored per forward pass")->capture_default_str()->check(in_range(Range::between(1, 1 << 16)));
    cmd->callback([a, batch] {
      auto model = open_model(*a);
      torch::NoGradGuard no_grad;
      const int64_t V = model->config().vocab_size;
      std::vector<std::vector<int64_t>> pending;
      auto flush = [&] {
        if (pending.empty()) return;
        int64_t T = 0;
        for (const auto& p : pending) T = std::max<int64_t>(T, static_cast<int64_t>(p.size()));
        T = std::max<int64_t>(T, 2);
        const int64_t N = static_cast<int64_t>(pending.size());
        auto ids = torch::zeros({N, T}, torch::kLong);   // right-padded: causal attention never sees the padding
        auto mask = torch::zeros({N, T}, torch::kLong);
        for (int64_t i = 0; i < N; ++i) {
          for (size_t j = 0; j < pending[i].size(); ++j) ids[i][j] = pending[i][j];
          mask[i].narrow(0, 0, static_cast<int64_t>(pending[i].size())).fill_(1);
        }
        auto lp = token_logprobs(*model, ids, mask).to(torch::kCPU).to(torch::kDouble).contiguous();  // [N, T-1]
        for (int64_t i = 0; i < N; ++i) {
          json out = json::array();
          if (!pending[i].empty()) out.push_back(nullptr);
          const double* p = lp[i].data_ptr<double>();
          for (size_t j = 1; j < pending[i].size(); ++j) out.push_back(p[j - 1]);
          std::cout << json{{"logprobs", out}}.dump() << "\n";
        }
        std::cout.flush();
        pending.clear();
      };
      std::string line;
      int64_t lineno = 0;
      while (std::getline(std::cin, line)) {
        ++lineno;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const std::string where = "stdin:" + std::to_string(lineno);
        json doc = parse_json_text(line, where);
        if (!doc.is_object() || !doc.contains("ids") || !doc["ids"].is_array()) {
          throw Error(ErrorInfo{"each line must be an object with an \"ids\" array", where, "{\"ids\": [...]}",
                                quote_for_error(line), ""});
        }
        std::vector<int64_t> ids;
        for (const auto& x : doc["ids"]) {
          if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= V) {
            throw Error(ErrorInfo{"a token id is not an integer of the vocabulary", where,
                                  "0 <= id < " + std::to_string(V), quote_for_error(x.dump()), ""});
          }
          ids.push_back(x.get<int64_t>());
        }
        pending.push_back(std::move(ids));
        if (static_cast<int64_t>(pending.size()) >= *batch) flush();
      }
      flush();
    });
  }
}

}  // namespace retort::cli
