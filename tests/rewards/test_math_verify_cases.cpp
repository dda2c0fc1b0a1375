// The math verifier against an independent reference: the (gold, prediction, expected) cases of
// Math-Verify's own test suite (huggingface/Math-Verify, tests/), pulled mechanically by
// scripts/fixtures/math/extract_math_verify_cases.py into tests/fixtures/math_verify_cases.jsonl.
//
// Each case is graded the way retort grades a completion: the prediction is the completion,
// the gold is the row's answer (its boxed answer when it has one, as Math-Verify extracts it
// too). Options other than Math-Verify's defaults that a case sets (strict = false,
// allow_set_relation_comp = true) have no counterpart and are graded with retort's rules. The test asserts the agreement floor reached and that retort never calls equal what
// Math-Verify's tests call different (no false positive); it prints every disagreement.
#include <catch2/catch.hpp>

#include <cmath>     // defines: std::pow
#include <cstdlib>   // defines: std::getenv
#include <fstream>   // defines: std::ifstream
#include <iostream>  // defines: std::cerr

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "rewards/extract.h"        // defines: extract_answer
#include "rewards/math/equiv.h"     // defines: answers_equivalent
#include "rewards/math_verifier.h"  // defines: make_math_verifier
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

using namespace retort::rewards;
using json = nlohmann::json;

TEST_CASE("math verifier agrees with Math-Verify's test suite, with no false positive", "[unit]") {
  std::ifstream f(std::string(RETORT_SOURCE_DIR) + "/tests/fixtures/math_verify_cases.jsonl");
  REQUIRE(f);
  size_t n = 0, agree = 0, false_pos = 0, false_neg = 0;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    json c = json::parse(line);
    std::string gold = c["gold"].get<std::string>();
    if (gold.find("\\boxed") != std::string::npos) gold = extract_answer(gold).text;
    json row = {{"answer", gold}};
    std::string pred = c["pred"].get<std::string>();
    // Math-Verify's options map onto retort's: without "expr" among the match types no number
    // is taken from free text (allow_last_number = false); float_rounding = p digits is a
    // relative tolerance of 10^-p (the defaults, 6 and 1e-6, agree).
    MathVerifierOptions opt;
    bool expr = false;
    for (const auto& t : c["match_types"]) expr = expr || t == "expr";
    opt.allow_last_number = expr;
    opt.rel_tol = std::pow(10.0, -c["precision"].get<double>());
    Score s = make_math_verifier(opt)->verify(Sample{"", pred, row});
    bool expected = c["expected"].get<bool>();
    ++n;
    if (s.passed == expected) {
      ++agree;
      continue;
    }
    (s.passed ? false_pos : false_neg) += 1;
    std::string why = std::string(s.passed ? "FALSE POSITIVE " : "false negative ") + c["source"].get<std::string>() +
                      ": gold " + c["gold"].dump() + " pred " + c["pred"].dump() + " -> " + s.detail.dump();
    UNSCOPED_INFO(why);
    if (std::getenv("RETORT_SHOW_DISAGREEMENTS")) std::cerr << why << "\n";
  }
  double rate = n ? static_cast<double>(agree) / static_cast<double>(n) : 0.0;
  WARN("Math-Verify test cases: " << agree << " / " << n << " agree (" << 100.0 * rate << "%), " << false_pos
                                  << " false positives, " << false_neg << " false negatives");
  CHECK(n == 269);
  CHECK(false_pos == 0);
  CHECK(rate >= 0.90);
}

namespace {

struct Agreement {
  size_t n = 0, agree = 0, false_pos = 0, false_neg = 0;
};

// Answer-level equivalence (no extraction) on a fixture of (gold, pred, expected) cases.
Agreement equivalence_agreement(const std::string& fixture) {
  std::ifstream f(std::string(RETORT_SOURCE_DIR) + "/tests/fixtures/" + fixture);
  REQUIRE(f);
  Agreement a;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    json c = json::parse(line);
    bool got = math::answers_equivalent(c["gold"].get<std::string>(), c["pred"].get<std::string>()).equal;
    bool expected = c["expected"].get<bool>();
    ++a.n;
    if (got == expected) {
      ++a.agree;
      continue;
    }
    (got ? a.false_pos : a.false_neg) += 1;
    std::string why = std::string(got ? "FALSE POSITIVE " : "false negative ") + c["source"].get<std::string>() +
                      ": gold " + c["gold"].dump() + " pred " + c["pred"].dump();
    UNSCOPED_INFO(why);
    if (std::getenv("RETORT_SHOW_DISAGREEMENTS")) std::cerr << why << "\n";
  }
  WARN(fixture << ": " << a.agree << " / " << a.n << " agree, " << a.false_pos << " false positives, " << a.false_neg
               << " false negatives");
  return a;
}

}  // namespace

// The answer-equivalence unit tests of the MATH dataset's grader (hendrycks/math,
// modeling/math_equivalence_test.py) and of MARIO_EVAL (math_evaluation/tests/test_is_equiv.py),
// pulled by scripts/fixtures/math/extract_equiv_unittest_cases.py. The references contradict
// each other on bare lists in another order: the MATH grader compares strings, so "10, 4, -2"
// and "4, 10, -2" differ, while Math-Verify's tests call permuted solution lists equal. retort
// reads a bare list as the set of solutions (unordered; a tuple keeps its order), so the MATH
// grader's two order cases are its only disagreements in that direction (rewards/README.md).
TEST_CASE("math equivalence against the MATH and MARIO graders' tests", "[unit]") {
  Agreement h = equivalence_agreement("math_hendrycks_equiv_cases.jsonl");
  Agreement m = equivalence_agreement("math_mario_equiv_cases.jsonl");
  CHECK(h.n == 16);
  CHECK(h.agree >= 14);
  CHECK(h.false_pos == 2);  // test_order and test_decimals: bare lists in another order
  CHECK(m.n == 45);
  CHECK(m.agree >= 34);
  CHECK(m.false_pos == 0);
}
