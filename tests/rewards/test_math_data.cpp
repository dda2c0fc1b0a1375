// Real-data checks of the math verifier on ../shared/data: MATH-500 gold answers against the
// last \boxed{} of their own solutions, GSM8K / AIME / AMC answers against themselves in the
// written forms those datasets use, and answers of different problems against each other.
// Skipped with a WARN when the data folder is absent.
#include <catch2/catch.hpp>

#include <algorithm>  // defines: std::sort
#include <cmath>      // defines: std::floor
#include <fstream>    // defines: std::ifstream
#include <map>        // defines: std::map
#include <sstream>    // defines: std::ostringstream

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "rewards/extract.h"         // defines: last_boxed
#include "rewards/math/equiv.h"      // defines: answers_equivalent
#include "rewards/math/normalize.h"  // defines: normalize_answer
#include "rewards/math_verifier.h"   // defines: make_math_verifier, gold_answer
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

using namespace retort::rewards;
using json = nlohmann::json;

namespace {

std::string data_path(const std::string& name) { return std::string(RETORT_SOURCE_DIR) + "/../shared/data/" + name; }

// Rows of a JSONL file; empty (with a WARN) when the file is absent.
std::vector<json> load_rows(const std::string& name) {
  std::ifstream f(data_path(name));
  std::vector<json> rows;
  if (!f) {
    WARN("data file " << data_path(name) << " is absent: real-data check skipped");
    return rows;
  }
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

// An oracle independent of the parser: the multiset of digit runs (leading zeros dropped).
// Two answers the verifier calls equal must at least write the same numbers.
std::vector<std::string> digit_runs(const std::string& text) {
  // "\frac14" has two arguments, 1 and 4: separate them first.
  std::string s;
  for (size_t i = 0; i < text.size(); ++i) {
    s.push_back(text[i]);
    if (text.compare(i, 5, "\\frac") == 0 && i + 6 < text.size() && isdigit(text[i + 5]) && isdigit(text[i + 6])) {
      s += std::string("rac") + text[i + 5] + " " + text[i + 6];
      i += 6;
    }
  }
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    if (cur.empty()) return;
    size_t nz = cur.find_first_not_of('0');
    out.push_back(nz == std::string::npos ? "0" : cur.substr(nz));
    cur.clear();
  };
  for (char c : s) {
    if (c >= '0' && c <= '9') cur.push_back(c); else flush();
  }
  flush();
  std::sort(out.begin(), out.end());
  return out;
}

std::string with_commas(long long v) {
  std::string d = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i > 0 && (d.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(d[i]);
  }
  return (v < 0 ? "-" : "") + out;
}

}  // namespace

TEST_CASE("MATH-500: every answer verifies against the last boxed answer of its solution", "[unit]") {
  auto rows = load_rows("math500.jsonl");
  if (rows.empty()) return;
  REQUIRE(rows.size() == 500);
  auto verifier = make_math_verifier(MathVerifierOptions{});
  std::vector<std::string> exceptions;
  int parsed = 0;
  for (const auto& r : rows) {
    std::string answer = r["answer"], solution = r["solution"];
    // The whole solution as a completion: the verifier extracts its last box.
    json row = {{"answer", answer}};
    Sample s{"", solution, row};
    Score sc = verifier->verify(s);
    if (!sc.passed) exceptions.push_back(r["unique_id"].get<std::string>() + ": " + sc.detail.dump());
    // And the gold answer must be understood by the parser, not only matched as a string.
    auto p = math::parse_answer(math::normalize_answer(answer));
    if (p.node) ++parsed;
    else exceptions.push_back(r["unique_id"].get<std::string>() + ": gold does not parse: " + p.error);
  }
  std::ostringstream list;
  for (const auto& e : exceptions) list << e << "\n";
  INFO(list.str());
  CHECK(exceptions.empty());
  CHECK(parsed == 500);
}

TEST_CASE("MATH-500: answers of different problems do not verify against each other unless equal", "[unit]") {
  auto rows = load_rows("math500.jsonl");
  if (rows.empty()) return;
  std::vector<std::string> answers;
  for (const auto& r : rows) answers.push_back(r["answer"]);
  int equal_pairs = 0;
  std::vector<std::string> wrong;
  for (size_t i = 0; i < answers.size(); ++i) {
    for (size_t k = i + 1; k < answers.size(); ++k) {
      if (!math::answers_equivalent(answers[i], answers[k]).equal) continue;
      ++equal_pairs;
      if (digit_runs(math::normalize_answer(answers[i])) != digit_runs(math::normalize_answer(answers[k])))
        wrong.push_back(answers[i] + "  ==  " + answers[k]);
    }
  }
  std::ostringstream list;
  for (const auto& w : wrong) list << w << "\n";
  INFO(list.str());
  CHECK(wrong.empty());
  // Problems sharing an answer exist (e.g. several answers are 5): some pairs must match.
  CHECK(equal_pairs > 0);
}

TEST_CASE("GSM8K, AIME and AMC answers verify against themselves in every written form", "[unit]") {
  struct Set {
    const char* file;
    const char* field;
  };
  auto verifier = make_math_verifier(MathVerifierOptions{});
  int checked = 0;
  std::vector<std::string> failures;
  std::vector<long long> values;
  for (Set set : {Set{"gsm8k_test.jsonl", "answer"}, Set{"aime2024_deepscaler_test.jsonl", "answer"},
                  Set{"amc_2022_2023_deepscaler_test.jsonl", "answer"},
                  Set{"aime_1983_2023_deepscaler_train.jsonl", "answer"}}) {
    for (const auto& row : load_rows(set.file)) {
      std::string gold = gold_answer(row);
      // The value by an independent route: digits only (commas dropped), float for AMC.
      std::string digits;
      for (char c : gold)
        if (c != ',') digits.push_back(c);
      double d = std::stod(digits);
      REQUIRE(d == std::floor(d));  // all of these datasets have integer answers
      long long v = static_cast<long long>(d);
      values.push_back(v);
      std::vector<std::string> forms = {std::to_string(v), with_commas(v), "\\$" + with_commas(v),
                                        std::to_string(v) + ".0", "\\boxed{" + std::to_string(v) + "}",
                                        "$" + std::to_string(v) + "$"};
      if (v >= 0 && v < 1000) {  // AIME writes three digits
        char buf[8];
        std::snprintf(buf, sizeof buf, "%03lld", v);
        forms.push_back(buf);
      }
      for (const auto& f : forms) {
        std::string completion = "<think>work</think>\nThe final answer is \\boxed{" + f + "}.";
        Sample s{"", completion, row};
        Score sc = verifier->verify(s);
        ++checked;
        if (!sc.passed) failures.push_back(std::string(set.file) + " gold " + gold + " vs " + f + ": " + sc.detail.dump());
      }
    }
  }
  if (checked == 0) return;
  std::ostringstream list;
  for (const auto& f : failures) list << f << "\n";
  INFO(list.str());
  CHECK(failures.empty());
  // Different values never verify: each answer against the next distinct values.
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  int wrong = 0;
  for (size_t i = 0; i < values.size(); ++i)
    for (size_t k = i + 1; k < std::min(values.size(), i + 20); ++k)
      if (math::answers_equivalent(std::to_string(values[i]), with_commas(values[k])).equal) ++wrong;
  CHECK(wrong == 0);
}
