// The code verifier: runs the program of a completion's last code block against the row's
// tests in the sandbox pool (sandbox/executor.h) and rewards the fraction of tests passed
// (or 1/0 when all_or_nothing).
//
// Test formats of the row:
//   "tests": [{"input", "output"}, ...]            stdin/stdout (Codeforces, our prompts)
//   "tests": {"inputs": [...], "outputs": [...]}   stdin/stdout (CodeContests); a JSON string of either is parsed
//   "test" + "entry_point" (+ "prompt")            HumanEval: check(candidate)
//   "test_list" (+ "test_setup_code")              MBPP: one assert per test
//
// stdin/stdout: each test is one sandbox job; the expected output stays on the host and the
// comparison (compare_output) happens here. A job identical to one already run reuses its
// result (`cache`).
// Assert tests: one sandbox job runs the assert harness (code_harness.h), which keeps the
// candidate in a child interpreter of its own and proves each test's verdict with a per-run
// nonce: see code_harness.h for the threats it answers.
#pragma once

#include <memory>  // defines: std::shared_ptr
#include <string>  // defines: std::string

#include "common/config.h"     // defines: retort::ConfigBinder
#include "rewards/verifier.h"  // defines: Verifier, VerifierContext
#include "sandbox/executor.h"  // defines: sandbox::Limits

namespace retort::rewards {

struct CodeVerifierOptions {
  std::string language = "python";     // language of stdin/stdout programs: python | cpp | auto (the fence's tag)
  std::string reward = "fraction";     // fraction: tests passed / tests | all_or_nothing
  bool stop_at_first_failure = false;  // stop running tests after the first failure (the rest count as failed)
  std::string grade = "answer";        // answer: code from the text after </think> | completion: the whole completion
  double float_tol = 1e-6;             // numeric tokens (with '.' or an exponent) match within this relative/absolute tolerance
  int max_tests = 0;                   // use at most this many tests of a row (0 = all)
  double call_timeout_s = 10;          // assert harness: one call into the candidate
  double deadline_s = 120;             // wall clock for one sample's whole verification
  int detail_chars = 300;              // truncation of inputs/outputs in the detail
  // stdin/stdout tests: an identical job (language, program, input, limits) that this verifier
  // ran before, or is running, is not run again; its result is reused. GRPO resubmits the same
  // program many times (the samples of a group, the passes over the prompts). A deterministic
  // program gets the verdict it would get again; a program whose output varies gets its first.
  bool cache = true;
  sandbox::Limits limits;              // per test job (stdin/stdout) or per harness job (assert tests)
  void bind(retort::ConfigBinder& b);
};

std::shared_ptr<Verifier> make_code_verifier(const CodeVerifierOptions& opt, const VerifierContext& ctx);

struct OutputMatch {
  bool ok = false;
  std::string why;  // first difference: "line 3: expected '5', got '6'" / "missing line 4"
};

// Token-wise comparison after whitespace normalisation: every line counts (a missing last
// line fails; trailing blank lines and trailing spaces do not), tokens are case-sensitive,
// and two tokens that both parse as non-integer numbers match within `float_tol`
// (|a - b| <= float_tol * max(1, |b|)); integers compare exactly.
OutputMatch compare_output(std::string_view expected, std::string_view actual, double float_tol);

}  // namespace retort::rewards
