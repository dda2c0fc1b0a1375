// Reasoning traces for SFT and distillation (DESIGN.md section 5): JSONL in any of the
// accepted formats, turned into token ids and a loss mask with the model family's chat
// template.
//
// Accepted line formats:
//   {"messages": [{"role", "content"}, ...]}          the last assistant turn is the completion
//   {"prompt": "...", "completion": "..."}            prompt is one user turn
//   {"problem"|"question": "...", "reasoning": "...", "answer"|"solution": "..."}
//   {"problem"|"question": "...", "generation": "..."} R1 API output: reasoning, </think>, answer
// plus, on any of them, optional "id" and "teacher_topk" (offline logit distillation:
// per completion token, {"ids": [k ints], "logprobs": [k floats]}).
//
// The completion is what the model writes after the generation prompt. For R1-style
// templates the generation prompt already opens "<think>\n", so a completion that starts
// with "<think>" loses it; one without "</think>" is reasoning-free and kept as is.
//
// Tool-integrated traces (rewards/tool_calls.h; docs/tools.md): a completion may hold tool
// calls and the observations a tool answered them with. The observations are context, not
// targets: their tokens get loss mask 0 (SFT's cross-entropy and every distillation loss on
// targets skip them). They are found in two forms:
//   text      prompt/completion (or any text field above) with the calls' observation blocks
//             written in, R1 style: "```python\n...\n```" inside <think>, then
//             "\n```output\n" body "\n```\n" (or the qwen blocks), found by
//             rewards::find_tool_calls in both formats
//   messages  tool turns after the assistant turn whose call they answer:
//               [..., {"role": "assistant", "content": "...<tool_call>\n{...}\n</tool_call>"},
//                     {"role": "tool", "content": "4"}, {"role": "assistant", "content": "..."}]
//             the last assistant turn, the tool turns and the assistant turns they answer form
//             one completion, each tool turn rendered as the engine appends its observation:
//             after a qwen call as Qwen2.5's chat template renders tool turns (one user turn of
//             <tool_response> blocks: rewards::render_observation's qwen text for one call;
//             consecutive tool turns answer a turn's calls in order, in one user turn); after
//             a python call as the python format's output block. A tool turn that does not
//             follow an assistant turn ending with a closed call is an error naming FILE:LINE.
// The ids are encoded piece by piece, split at the observations' edges (text before, the
// observation, text after, ...), as the rollout engine builds the sequence: it samples the
// model's tokens, then encodes each observation on its own and appends it.
#pragma once

#include <cstdint>  // defines: int32_t, int64_t
#include <string>   // defines: std::string
#include <utility>  // defines: std::pair
#include <vector>   // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "tokenizer/chat_template.h"

namespace retort {

class Tokenizer;
class ConfigBinder;

struct TraceSample {
  std::string id;                    // "id" field, or FILE:LINE
  std::vector<ChatMessage> prompt;   // the conversation before the completion
  std::string completion;            // reasoning + "</think>" + answer (R1) or the plain answer
  // Byte ranges [begin, end) of `completion` that a tool wrote (the observation blocks,
  // delimiters included), ascending and disjoint; empty for a trace without tool calls.
  std::vector<std::pair<size_t, size_t>> observations;
  nlohmann::json teacher_topk;       // null, or an array with one {"ids", "logprobs"} per completion token
};

struct TraceDataOptions {
  std::string chat_template = "r1-distill";  // r1-distill | chatml | plain
  int64_t max_length = 2048;                 // tokens of prompt + completion
  std::string truncation = "drop";           // drop: skip longer samples; cut: keep the first max_length tokens
  bool loss_on_prompt = false;               // false: loss only on completion tokens (the default of TRL's SFT on completions)
  std::string eos_token = "";                // appended to the completion; "" = the template's first stop string
  std::string system = "";                   // system turn for traces without one; "" = none (the template's default, if it has one)
  void bind(ConfigBinder& b);
};

// Parses one line (already JSON); `where` is FILE:LINE for errors.
TraceSample parse_trace(const nlohmann::json& line, const std::string& where);

// Reads a JSONL file. A malformed line throws retort::Error naming the file and line; a
// file with no usable sample is an error too.
std::vector<TraceSample> load_traces(const std::string& path);

struct TokenizedSample {
  std::vector<int32_t> ids;        // [T] prompt then completion (then EOS)
  std::vector<uint8_t> loss_mask;  // [T] 1 where the token is a training target (0 on prompt and tool observations)
  int64_t observation_tokens = 0;  // tokens of tool observations in the completion (loss mask 0)
  int64_t prompt_length = 0;       // tokens of the rendered prompt
  bool truncated = false;
  // Offline teacher distribution (the trace's teacher_topk), row-major [topk_rows, topk_k]:
  // row j is the teacher's top-k for completion token j, i.e. for ids[prompt_length + j].
  // Rows shorter than topk_k are padded with id 0 and log-prob -1e9 (probability 0).
  int64_t topk_rows = 0, topk_k = 0;
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_logprobs;
};

struct TokenizeStats {
  int64_t samples = 0, kept = 0, dropped_too_long = 0, cut = 0, tokens = 0;
  int64_t with_tools = 0, observation_tokens = 0;  // kept samples with tool observations, and their tokens
};

// Renders, tokenizes and masks one sample; returns false when the sample is dropped by
// the truncation policy.
bool tokenize_trace(const TraceSample& s, const Tokenizer& tok, const TraceDataOptions& opt, TokenizedSample& out);

// Tokenizes all samples (in parallel on TBB), in order; drops per the truncation policy and
// counts in `stats`. Throws when nothing is left.
std::vector<TokenizedSample> tokenize_traces(const std::vector<TraceSample>& samples, const Tokenizer& tok,
                                             const TraceDataOptions& opt, TokenizeStats* stats, const std::string& where);

}  // namespace retort
