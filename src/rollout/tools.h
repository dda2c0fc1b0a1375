// Tool calls in the rollout engine: the settings (the `tools` section of the GRPO and eval
// configs) and the observation a finished call appends to its chain, fitted to the token
// limits. The formats and delimiters themselves live in rewards/tool_calls.h; the engine's
// pause / run / resume loop is rollout/engine.cpp. Torch-free.
#pragma once

#include <cstdint>     // defines: int64_t, int32_t
#include <functional>  // defines: std::function
#include <string>      // defines: std::string
#include <vector>      // defines: std::vector

#include "rewards/tool_calls.h"  // defines: rewards::ToolFormat
#include "sandbox/executor.h"    // defines: sandbox::Limits, sandbox::Result

namespace retort {

class ConfigBinder;

// The `tools` config section. A chain may call the tool max_calls times; its calls' sandbox
// wall time adds up to at most max_tool_time_s (each call's wall and CPU limits are lowered to
// what remains). A call beyond either budget is not run: it is answered "[budget: ...]" and
// the chain ends there (finished, not truncated).
struct ToolOptions {
  bool enabled = false;
  std::string format = "python";        // python (```python fences inside <think>) | qwen (<tool_call>{json}</tool_call>)
  int64_t max_calls = 4;                // calls run per chain
  int64_t max_observation_tokens = 256; // tokens of one observation, delimiters included; longer ones keep their
                                        // first tokens and a "[truncated]" line
  double max_tool_time_s = 30;          // sandbox wall time per chain, all calls together
  sandbox::Limits limits = default_limits();  // of each call
  void bind(ConfigBinder& b);

  rewards::ToolFormat tool_format() const { return rewards::tool_format_from_name(format, "tools.format"); }
  // A call is a short computation: 5 s and 256 MB rather than the sandbox's test-running defaults.
  static sandbox::Limits default_limits() {
    sandbox::Limits l;
    l.wall_s = 5;
    l.cpu_s = 5;
    l.memory_mb = 256;
    l.output_kb = 64;
    return l;
  }
};

// Text -> ids for observations; special-token strings in the text ("<|im_end|>") must map to
// their ids (Tokenizer::encode does).
using EncodeFn = std::function<std::vector<int32_t>(const std::string& text)>;

struct Observation {
  std::vector<int32_t> ids;  // the rendered observation (delimiters included), at most max_tokens
  std::string body;          // its body as appended (after truncation)
  bool truncated = false;    // stdout / stderr were cut to fit
};

// The observation block of a call that ended with `status` (sandbox::status_name, or
// "budget"), at most `max_tokens` ids. When the whole block is longer, stdout keeps its
// longest prefix that fits with the "[truncated]" line, the stderr tail and the status line;
// when even an empty stdout does not fit, stdout is dropped and stderr keeps its last lines
// that fit (where a traceback names the error); as a last resort the ids themselves are cut
// (a max_tokens smaller than the delimiters and the status line).
Observation fit_observation(rewards::ToolFormat f, const std::string& status, const std::string& stdout_text,
                            const std::string& stderr_text, const std::string& detail, int64_t max_tokens,
                            const EncodeFn& encode);

// The detail of a status line for a sandbox result: the sandbox's own detail, or for a
// runtime error "exit code N" / "killed by signal N".
std::string observation_detail(const sandbox::Result& r);

}  // namespace retort
