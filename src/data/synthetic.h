// The synthetic teacher of the embedded demo (DESIGN.md section 6): a seeded generator of
// templated arithmetic word problems and small stdin/stdout programming tasks, each with an
// R1-style trace, so that the whole pipeline runs on a small CPU machine with tiny models.
//
//   math:  "Ana has 3 boxes of 4 apples. She gives away 5. How many apples does Ana have now?"
//          completion = "<think>\n" steps with intermediate results, a "Check:" line "\n</think>\n"
//                       "The answer is \boxed{7}."
//   code:  "Write a Python program. Input: ... Keep only the even numbers. Print their sum."
//          completion = "<think>\n" plan and a worked example "\n</think>\n" "```python\n" program "```"
//
// Splits are disjoint by construction: every problem has a canonical form (the problem
// without its wording: numbers and operations, e.g. "math:3x4|-5" or "code:list|even|*3|sum"),
// and each canonical form has exactly one owner split, chosen by a fixed hash of the form
// among the splits that draw problems of its kind and step count (weighted by kSplitShares
// in synthetic.cpp). A split only keeps problems it owns, so no canonical form, and hence no
// problem text, appears in two splits. The hash does not depend on the seed: datasets made
// with different seeds keep the same owner for every form.
//
// The difficulty knob is per split: the number of steps (math: operations; code: list
// transforms, or operations on two numbers) and the size of the numbers. The defaults train
// on 1-2 step problems and evaluate on 2-3 step ones, so that GRPO has room to improve.
//
// What it deliberately is not: a model or a grader. Code test outputs are computed here, in
// C++, with the semantics of the reference Python program; the project's verifiers grade the
// traces in the tests.
#pragma once

#include <cstdint>  // defines: int64_t
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort {

class ConfigBinder;

struct SyntheticSplitOptions {
  int64_t math = 0;     // arithmetic word problems in this split
  int64_t code = 0;     // programming tasks in this split
  int min_steps = 1;    // fewest steps of a problem (math: operations; code: transforms)
  int max_steps = 2;    // most steps; a problem's step count is uniform in [min_steps, max_steps]
  int max_operand = 9;  // largest number a step introduces (math amounts, code constants); code list values go to 2 * max_operand + 2
  int max_value = 100;  // largest intermediate result of a math problem (keeps answers a tiny model can write)
  void bind(ConfigBinder& b);
};

struct SyntheticOptions {
  int64_t seed = 1;  // same seed, same options: byte-identical files
  // Traces for SFT / distillation: mostly 1-2 step problems.
  SyntheticSplitOptions train{/*math=*/3000, /*code=*/1500, /*min_steps=*/1, /*max_steps=*/2, /*max_operand=*/9, /*max_value=*/100};
  SyntheticSplitOptions valid{/*math=*/150, /*code=*/75, /*min_steps=*/1, /*max_steps=*/2, /*max_operand=*/9, /*max_value=*/100};
  // Prompts for GRPO: longer problems than most traces, which is where RL can still gain.
  SyntheticSplitOptions rl{/*math=*/500, /*code=*/250, /*min_steps=*/2, /*max_steps=*/3, /*max_operand=*/9, /*max_value=*/100};
  // Held-out evaluation prompts: as hard as the RL prompts, never seen by any stage.
  SyntheticSplitOptions eval{/*math=*/200, /*code=*/100, /*min_steps=*/2, /*max_steps=*/3, /*max_operand=*/9, /*max_value=*/100};
  bool tokenizer_corpus = true;  // also write tokenizer.jsonl (train and valid traces, RL prompts; never eval)
  // "python": math traces do the arithmetic with a Python call and its output (the python
  // format of rewards/tool_calls.h) instead of writing each result; the problems, answers
  // and every other file stay the same. "none": the plain traces.
  std::string tools = "none";
  void bind(ConfigBinder& b);
};

struct SyntheticProblem {
  std::string id;          // "train-math-12", "eval-code-3", ...
  std::string split;       // train | valid | rl | eval
  std::string kind;        // math | code
  std::string canonical;   // the problem without its wording; owned by exactly one split
  int steps = 0;           // the difficulty it was drawn at
  std::string prompt;      // the user turn
  std::string completion;  // the teacher's R1-style trace (also made for RL and eval problems: a reference)
  std::string answer;      // math: the gold answer ("7"); "" for code
  std::string program;     // code: the reference Python 3 program (the one in the completion); "" for math
  nlohmann::json tests;    // code: [{"input", "output"}, ...], outputs computed by the generator; null for math
};

struct SyntheticData {
  std::vector<SyntheticProblem> train, valid;               // math and code mixed, shuffled
  std::vector<SyntheticProblem> rl_math, rl_code, eval_math, eval_code;
};

// Generates every split. Throws retort::Error when the options are invalid (negative counts,
// min_steps > max_steps, ...) or when a split cannot find enough distinct problems of its own
// in the space its difficulty allows (the hint says which knob to turn).
SyntheticData generate_synthetic(const SyntheticOptions& options);

// The JSONL line of a problem: {"id", "prompt", "completion"} for traces; {"id", "prompt",
// "answer"} (math) or {"id", "prompt", "tests"} (code) for prompts (DESIGN.md section 5).
// Keys stay in this order in the files, so that a line reads from its id to its answer.
nlohmann::ordered_json trace_line(const SyntheticProblem& p);
nlohmann::ordered_json prompt_line(const SyntheticProblem& p);

struct SyntheticFiles {
  std::string traces_train, traces_valid, rl_math, rl_code, eval_math, eval_code;
  std::string tokenizer_corpus;  // "" when not written
};

// Writes traces.train.jsonl, traces.valid.jsonl, rl.math.jsonl, rl.code.jsonl,
// eval.math.jsonl, eval.code.jsonl (and tokenizer.jsonl: {"text"} lines) into `dir`, creating
// it when needed; each file is written atomically. Returns the paths.
SyntheticFiles write_synthetic(const SyntheticData& data, const std::string& dir, bool tokenizer_corpus = true);

}  // namespace retort
