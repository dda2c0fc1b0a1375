// Tool calls inside a reasoning chain (tool-integrated reasoning): the two formats the rollout
// engine pauses on, how an observation is written back into the chain, and how a finished
// chain's calls are read back (the `tool` verifier, the audit, the SFT / distillation loss
// masks). Torch-free, in one place, so that the engine, the trainers and the verifiers agree
// on every delimiter.
//
//   python  a fenced block inside the reasoning (before "</think>"), ReTool / open-r1 style:
//             call         "```python\n" code "\n```"
//             observation  "\n```output\n" body "\n```\n"
//   qwen    Qwen2.5 function calling, the tool's answer in a user turn as its template writes it:
//             call         "<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"...\"}}\n</tool_call>"
//             observation  "<|im_end|>\n<|im_start|>user\n<tool_response>\n" body
//                          "\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
//
// The observation body is the program's stdout. When the call did not end "ok" it is followed
// by the tail of stderr and a last line "[<status>: <detail>]", status one of runtime_error,
// time_limit, memory_limit, output_limit, sandbox_error (sandbox::status_name), or budget (the
// chain had spent its calls or its tool time: the call was not run). A body cut at the
// observation token limit ends with a line "[truncated]" before any status line. The status
// of a call can thus be read back from the chain's text alone, offline included.
#pragma once

#include <cstddef>      // defines: size_t
#include <cstdint>      // defines: int64_t
#include <optional>     // defines: std::optional
#include <string>       // defines: std::string
#include <string_view>  // defines: std::string_view
#include <vector>       // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort::rewards {

enum class ToolFormat { Python, Qwen };

// "python" | "qwen"; anything else throws retort::Error naming `where`, the value and the two names.
ToolFormat tool_format_from_name(const std::string& name, const std::string& where);
const char* tool_format_name(ToolFormat f);

// The engine's test after each sampled token: when `text` (the completion so far) has just
// closed a call that has no observation yet, the call's program; otherwise nullopt. Python
// format: only calls opened before "</think>" count (a code answer after the reasoning is not
// a tool call). Qwen format: the JSON must name a "code" argument; a malformed call is
// reported as a call whose program is empty (the engine answers it with a runtime_error body).
std::optional<std::string> closed_tool_call(std::string_view text, ToolFormat f);

// The observation block (delimiters included) that the engine appends after a call.
std::string render_observation(ToolFormat f, const std::string& body);

// The body for a finished sandbox run (see the top of this file). `status` is
// sandbox::status_name(result.status) or "budget"; `truncated` adds the "[truncated]" line.
std::string observation_body(const std::string& status, const std::string& stdout_text, const std::string& stderr_text,
                             const std::string& detail, bool truncated);

// One call of a finished chain, as read back from its text.
struct ToolCallSpan {
  std::string code;                    // the program
  size_t call_begin = 0, call_end = 0; // byte range of the call, delimiters included
  bool answered = false;               // an observation block follows the call
  size_t obs_begin = 0, obs_end = 0;   // byte range of the observation block, delimiters included:
                                       // what SFT / distillation losses skip
  std::string body;                    // the observation body ("" when not answered)
  std::string status;                  // ok | runtime_error | time_limit | memory_limit | output_limit |
                                       // sandbox_error | budget; "" when not answered
  bool truncated = false;              // the body carries the "[truncated]" line
};
std::vector<ToolCallSpan> find_tool_calls(std::string_view text, ToolFormat f);

// What the engine records for each call it ran (Rollout::tool_calls, chains.jsonl "tool_calls").
struct ToolCallRecord {
  std::string code;
  std::string observation;     // the body as appended (after truncation)
  std::string status;          // as in ToolCallSpan
  double wall_s = 0;           // sandbox wall time of the run (0 for budget)
  int64_t peak_memory_kb = 0;
  int64_t obs_start = 0;       // index in the completion's ids of the first observation token
  int64_t obs_tokens = 0;      // observation tokens appended (delimiters included)
  bool truncated = false;
};
// {"code", "observation", "status", "wall_s", "peak_memory_kb", "obs_start", "obs_tokens", "truncated"}
nlohmann::json to_json(const ToolCallRecord& r);

}  // namespace retort::rewards
