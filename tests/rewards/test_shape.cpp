// Shape rewards: format, tag count, DAPO overlong, cosine length, repetition (rewards/shape.h).
#include <catch2/catch.hpp>

#include <cmath>  // defines: std::cos

#include "rewards/shape.h"  // defines: make_format_verifier, dapo_overlong_penalty, ...

using namespace retort::rewards;
using json = nlohmann::json;

namespace {
const json kRow = json::object();
Score run(const Verifier& v, const char* prompt, const std::string& completion, const json& row = kRow,
          int64_t tokens = -1) {
  Sample s{prompt, completion, row, tokens};
  return v.verify(s);
}
}  // namespace

TEST_CASE("format: R1 format, strict and soft", "[unit]") {
  FormatOptions strict_opt, soft_opt, boxed_opt;
  soft_opt.mode = "soft";
  boxed_opt.require_boxed = true;
  auto strict = make_format_verifier(strict_opt);
  auto soft = make_format_verifier(soft_opt);
  auto boxed = make_format_verifier(boxed_opt);
  struct Case {
    const char* prompt;
    const char* completion;
    bool strict_ok, soft_ok, boxed_ok;
  };
  const Case cases[] = {
      {"", "<think>\nreason\n</think>\nanswer \\boxed{1}", true, true, true},
      {"", "<think>\nreason\n</think>\nanswer", true, true, false},
      {"<|Assistant|><think>\n", "reason\n</think>\nanswer", true, true, false},  // prompt opened the block
      {"", "reason\n</think>\nanswer", false, true, false},                      // no <think> anywhere
      {"", "<think>reason</think>answer", false, true, false},                   // tags not on their own lines
      {"", "<think>\nreason\n</think>\n   ", false, false, false},                // empty answer
      {"", "<think>\nreason\n", false, false, false},                             // never closed
      {"", "<think>\na\n</think>\nb\n</think>\nc", false, false, false},          // closed twice
      {"", "intro <think>\nreason\n</think>\nanswer", false, true, false},        // text before <think>
      {"", "<think>\n\n</think>\nanswer", false, true, false},                    // empty reasoning
  };
  for (const auto& c : cases) {
    INFO(c.completion);
    CHECK(run(*strict, c.prompt, c.completion).reward == (c.strict_ok ? 1.0 : 0.0));
    CHECK(run(*soft, c.prompt, c.completion).reward == (c.soft_ok ? 1.0 : 0.0));
    CHECK(run(*boxed, c.prompt, c.completion).passed == c.boxed_ok);
    if (!c.strict_ok) CHECK(run(*strict, c.prompt, c.completion).detail.contains("error"));
  }
}

TEST_CASE("tag_count: partial credit per tag", "[unit]") {
  auto v = make_tag_count_verifier(TagCountOptions{});
  struct Case {
    const char* prompt;
    const char* completion;
    double reward;
  };
  const Case cases[] = {
      {"", "<think>a</think><answer>b</answer>", 1.0},
      {"", "<think>a</think>b", 0.5},
      {"", "<think>a", 0.25},
      {"", "<think>a</think></think><answer>b</answer>", 0.75},
      {"", "plain", 0.0},
      {"<think>\n", "a</think><answer>b</answer>", 1.0},
  };
  for (const auto& c : cases) {
    INFO(c.completion);
    CHECK(run(*v, c.prompt, c.completion).reward == Approx(c.reward));
  }
  TagCountOptions empty;
  empty.tags.clear();
  CHECK_THROWS_AS(make_tag_count_verifier(empty), retort::Error);
}

TEST_CASE("overlong: DAPO soft overlong penalty", "[unit]") {
  // L_max = 100, L_cache = 20: no penalty up to 80, linear to -1 at 100, -1 beyond.
  struct Case {
    int64_t length;
    double reward;
  };
  const Case cases[] = {{0, 0.0}, {80, 0.0}, {81, -0.05}, {90, -0.5}, {100, -1.0}, {101, -1.0}, {5000, -1.0}};
  for (const auto& c : cases) {
    INFO(c.length);
    CHECK(dapo_overlong_penalty(c.length, 100, 20) == Approx(c.reward));
  }
  OverlongOptions o;
  o.max_length = 100;
  o.cache_length = 20;
  auto tokens = make_overlong_verifier(o);
  CHECK(run(*tokens, "", "x", kRow, 90).reward == Approx(-0.5));  // Sample::completion_tokens
  CHECK(run(*tokens, "", "x", json{{"completion_tokens", 85}}).reward == Approx(-0.25));
  CHECK_FALSE(run(*tokens, "", "x").applicable());  // no token count anywhere
  o.length.unit = "chars";
  auto chars = make_overlong_verifier(o);
  CHECK(run(*chars, "", std::string(95, 'a')).reward == Approx(-0.75));
  o.length.unit = "words";
  auto words = make_overlong_verifier(o);
  std::string ninety;
  for (int i = 0; i < 90; ++i) ninety += "w ";
  CHECK(run(*words, "", ninety).reward == Approx(-0.5));
  o.cache_length = 200;  // cache longer than the limit
  CHECK_THROWS_AS(make_overlong_verifier(o), retort::Error);
}

TEST_CASE("cosine_length: shorter correct answers earn more, shorter wrong ones are punished more", "[unit]") {
  CHECK(cosine_scaled(0.0, 1.0, 0.5) == Approx(1.0));
  CHECK(cosine_scaled(1.0, 1.0, 0.5) == Approx(0.5));
  CHECK(cosine_scaled(0.5, 1.0, 0.5) == Approx(0.75));
  CosineLengthOptions o;
  o.max_length = 100;
  o.length.unit = "chars";
  auto v = make_cosine_length_verifier(o);
  json row = {{"answer", "4"}};
  auto pad = [](const std::string& s, size_t n) { return s + std::string(n > s.size() ? n - s.size() : 0, ' '); };
  double correct_short = run(*v, "", "\\boxed{4}", row).reward;
  double correct_long = run(*v, "", pad("\\boxed{4}", 90), row).reward;
  double wrong_short = run(*v, "", "\\boxed{5}", row).reward;
  double wrong_long = run(*v, "", pad("\\boxed{5}", 90), row).reward;
  CHECK(correct_short > correct_long);
  CHECK(correct_long > 0.5 - 1e-9);
  CHECK(wrong_short < wrong_long);
  CHECK(wrong_long < 0);
  // The exact value at length 50 (progress 0.5): halfway between the two ends.
  CHECK(run(*v, "", pad("\\boxed{4}", 50), row).reward == Approx(0.75));
  CHECK(run(*v, "", pad("\\boxed{4}", 150), row).reward == Approx(o.exceed));
  CHECK_FALSE(run(*v, "", "\\boxed{4}", json::object()).applicable());  // no gold: not applicable
}

TEST_CASE("repetition: n-gram repetition penalty", "[unit]") {
  struct Case {
    const char* text;
    double fraction;
  };
  const Case cases[] = {
      {"a b c d e f", 0.0},
      {"a b c a b c", 1.0 - 3.0 / 4.0},  // 4 trigrams (abc bca cab abc), 3 unique
      {"the the the the the", 1.0 - 1.0 / 3.0},
      {"A b C a B c", 1.0 - 3.0 / 4.0},  // case-insensitive
      {"one two", 0.0},                   // shorter than n
      {"", 0.0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    INFO(cases[i].text);
    CHECK(ngram_repetition_fraction(cases[i].text, 3) == Approx(cases[i].fraction));
  }
  RepetitionOptions o;
  o.max_penalty = -2.0;
  auto v = make_repetition_verifier(o);
  CHECK(run(*v, "", "the the the the the").reward == Approx(-2.0 * (1.0 - 1.0 / 3.0)));
  CHECK(run(*v, "", "all different words here now").reward == 0.0);
  o.max_penalty = 1.0;
  CHECK_THROWS_AS(make_repetition_verifier(o), retort::Error);
  o.max_penalty = -1.0;
  o.ngram = 0;
  CHECK_THROWS_AS(make_repetition_verifier(o), retort::Error);
}
