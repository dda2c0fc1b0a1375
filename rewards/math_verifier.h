// The math verifier: extracts the final answer of a completion (extract.h) and rewards it
// 1 when it is mathematically equivalent to the row's gold answer (math/equiv.h), 0
// otherwise; not applicable when the row has no gold answer.
#pragma once

#include <memory>  // defines: std::shared_ptr
#include <string>  // defines: std::string

#include "common/config.h"   // defines: retort::ConfigBinder
#include "rewards/verifier.h"  // defines: Verifier, Sample, Score

namespace retort::rewards {

struct MathVerifierOptions {
  std::string answer_field;       // row field with the gold answer; "" = answer, final_answer, then solution's last \boxed
  std::string grade = "answer";   // answer: only the text after </think>; completion: the whole completion
  bool allow_last_number = true;  // fall back to the last number when no boxed/tagged/math answer is found
  double rel_tol = 1e-6;          // relative tolerance of numeric comparison (exact rationals compare exactly)
  double abs_tol = 1e-9;          // absolute tolerance near zero
  int random_points = 6;          // evaluation points for answers with variables
  int max_answer_chars = 4096;    // longer extracted answers are refused (bounded time on hostile text)
  void bind(retort::ConfigBinder& b);
};

std::shared_ptr<Verifier> make_math_verifier(const MathVerifierOptions& opt);

// The gold answer of a row as text ("" when the row has none): `field` when given, else
// "answer" (a GSM8K "... #### 42" keeps what follows ####; numbers are printed as JSON
// prints them), "final_answer", then the last \boxed{} of "solution".
std::string gold_answer(const json& row, const std::string& field = "");

}  // namespace retort::rewards
