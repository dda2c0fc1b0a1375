// Prompts for RL and evaluation (DESIGN.md section 5): JSONL files of problems with a gold
// answer (math) or with tests (code), rendered as one user turn of the model family's chat
// template. The raw row is kept: the verifiers grade against it (answer, tests, ...).
//
// Accepted line formats:
//   {"prompt"|"problem"|"question": "...", "answer": "..." | number}   math; GSM8K's "... #### 18" understood;
//                                                                      "final_answer", or "solution" with a \boxed{}, also accepted
//   {"prompt"|"problem"|"question": "...", "tests": [{"input", "output"}, ...] | {"inputs", "outputs"}}   code, stdin/stdout
//   {"prompt": "def f(...):\n    \"\"\"...\"\"\"\n", "test": "...", "entry_point": "f"}   HumanEval
//   {"text": "...", "test_list": ["assert ...", ...]}                                      MBPP
// plus, on any of them, an optional "id" (or "task_id", "unique_id"); without one the id is FILE:LINE.
//
// What it deliberately is not: a tokenizer. The rendered text goes to Tokenizer::encode in
// the trainer, which owns the tokenizer.
#pragma once

#include <cstdint>  // defines: int64_t
#include <memory>   // defines: std::shared_ptr
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort {

class ConfigBinder;

struct PromptRecord {
  std::string id;        // "id" / "task_id" / "unique_id" field, or FILE:LINE
  std::string where;     // FILE:LINE, for messages
  std::string kind;      // math | code_io (stdin/stdout tests) | humaneval | mbpp
  std::string question;  // the user turn, before the chat template
  std::string gold;      // math: the gold final answer ("18" for GSM8K's "#### 18"); "" for code
  std::string text;      // the chat template rendered with the generation prompt: what the policy sees
  std::shared_ptr<const nlohmann::json> row;  // the dataset record, unchanged (shared by the G completions)
};

struct PromptFormatOptions {
  std::string chat_template = "r1-distill";  // r1-distill | chatml | plain
  std::string system;                        // system turn; "" = none (the template's default, if it has one)
  std::string math_instruction;              // appended to math questions after a blank line ("" = nothing), e.g.
                                             // "Please reason step by step, and put your final answer within \boxed{}."
  std::string code_instruction;              // appended to code questions after a blank line ("" = nothing)
  void bind(ConfigBinder& b);
};

// Parses one line (already JSON) without rendering; `where` is FILE:LINE for errors.
PromptRecord parse_prompt(const nlohmann::json& line, const std::string& where);

// Renders `rec.question` (plus the instruction of its kind) into `rec.text`.
void render_prompt(PromptRecord& rec, const PromptFormatOptions& opt);

// Reads and renders a JSONL file. A malformed line throws retort::Error naming FILE:LINE; a
// file with no prompt is an error too.
std::vector<PromptRecord> load_prompts(const std::string& path, const PromptFormatOptions& opt = {});

// The GSM8K gold answer: the text after the last "#### " (commas dropped, trimmed); the
// whole string, trimmed, when there is no "####".
std::string gsm8k_gold(const std::string& answer);

}  // namespace retort
