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
#pragma once

#include <cstdint>  // defines: int32_t, int64_t
#include <string>   // defines: std::string
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
  std::vector<uint8_t> loss_mask;  // [T] 1 where the token is a training target
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
};

// Renders, tokenizes and masks one sample; returns false when the sample is dropped by
// the truncation policy.
bool tokenize_trace(const TraceSample& s, const Tokenizer& tok, const TraceDataOptions& opt, TokenizedSample& out);

// Tokenizes all samples (in parallel on TBB), in order; drops per the truncation policy and
// counts in `stats`. Throws when nothing is left.
std::vector<TokenizedSample> tokenize_traces(const std::vector<TraceSample>& samples, const Tokenizer& tok,
                                             const TraceDataOptions& opt, TokenizeStats* stats, const std::string& where);

}  // namespace retort
