// The math verifier's parts: normalisation, parsing, exact and numeric equivalence, and
// hostile inputs (rewards/math/*.h, rewards/math_verifier.h). Table-driven.
#include <catch2/catch.hpp>

#include <cmath>  // defines: std::isnan

#include "rewards/math/equiv.h"      // defines: answers_equivalent
#include "rewards/math/expr.h"       // defines: parse_answer, exact_value
#include "rewards/math/normalize.h"  // defines: normalize_answer
#include "rewards/math_verifier.h"   // defines: make_math_verifier, gold_answer

using namespace retort::rewards;
using namespace retort::rewards::math;

TEST_CASE("normalize_answer removes notation that never changes the value", "[unit]") {
  struct Case {
    const char* in;
    const char* out;
  };
  const Case cases[] = {
      {"\\left( 3, \\frac{\\pi}{2} \\right)", "( 3, \\frac{\\pi}{2} )"},
      {"\\dfrac{1}{2}", "\\frac{1}{2}"},
      {"\\tfrac12", "\\frac12"},
      {"90^\\circ", "90"},
      {"90^{\\circ}", "90"},
      {"50\\%", "50"},
      {"\\$18.90", "18.90"},
      {"10,\\!080", "10080"},
      {"11,\\! 111,\\! 111,\\! 100", "11111111100"},
      {"1{,}000", "1000"},
      {"1,234,567", "1234567"},
      {"1,2", "1,2"},  // not a thousands separator: a list
      {"5.4 \\text{ cents}", "5.4"},
      {"15\\mbox{ cm}^2", "15"},
      {"864 \\mbox{ inches}^2", "864"},
      {"\\frac{270}7\\text{ degrees}", "\\frac{270}7"},
      {"\\text{Evelyn}", "Evelyn"},
      {"\\textbf{(C)}", "(C)"},
      {"12 inches", "12"},
      {"x \\in [-2,7]", "[-2,7]"},
      {"5.", "5"},
      {"x = 3,", "x = 3"},
      {"\\displaystyle 2\\,\\sqrt{3}", "2 \\sqrt{3}"},
      {"\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"},
      {"3 \\text{ and } 5", "3 , 5"},
      {"\xE2\x88\x92" "5", "-5"},  // U+2212 minus sign
  };
  for (const auto& c : cases) {
    INFO(c.in);
    CHECK(normalize_answer(c.in) == c.out);
  }
}

TEST_CASE("parse_answer: structure of the tree", "[unit]") {
  struct Case {
    const char* in;
    const char* tree;  // to_string rendering
  };
  const Case cases[] = {
      {"2x", "(* 2 x)"},
      {"-x^2", "(- (^ x 2))"},
      {"2^3^2", "(^ 2 (^ 3 2))"},
      {"\\frac{1}{2}", "(* 1 (^ 2 -1))"},
      {"\\frac12", "(* 1 (^ 2 -1))"},
      {"\\sqrt[3]{x}", "(^ x (^ 3 -1))"},
      {"1\\frac{4}{5}", "9/5"},
      {"137 \\frac{1}{2}", "275/2"},
      {"2\\frac{\\pi}{3}", "(* 2 (* pi (^ 3 -1)))"},
      {"(1, 2]", "(1, 2]"},
      {"\\{1, 2\\}", "set{1, 2}"},
      {"1, 2", "list{1, 2}"},
      {"x = 3", "(= x 3)"},
      {"(C)", "choice(C)"},
      {"204_5", "base:204_5"},
      {"4210_{5}", "base:4210_5"},
      {"\\sin^2 x", "(^ (sin x) 2)"},
      {"\\log_2 8", "(log 8 2)"},
      {"|x - 1|", "(abs (+ x (- 1)))"},
      {"5!", "(! 5)"},
      {"1.5e-3", "3/2000"},
      {".5", "1/2"},
      {"\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "matrix2x2[1, 2, 3, 4]"},
      {"(-\\infty, 2) \\cup (3, \\infty)", "(union ((- inf), 2) (3, inf))"},
      {"Evelyn", "evelyn"},
      {"xy", "(* x y)"},
  };
  for (const auto& c : cases) {
    INFO(c.in);
    ParseResult r = parse_answer(normalize_answer(c.in));
    REQUIRE(r.node);
    CHECK(to_string(*r.node) == c.tree);
  }
}

TEST_CASE("exact_value: big integers and rationals without rounding", "[unit]") {
  struct Case {
    const char* in;
    const char* value;  // numerator[/denominator]
  };
  const Case cases[] = {
      {"2^{100}", "1267650600228229401496703205376"},
      {"123456789012345678901234567890 + 1", "123456789012345678901234567891"},
      {"\\frac{1}{3} + \\frac{1}{6}", "1/2"},
      {"0.1 + 0.2", "3/10"},
      {"\\sqrt{16}", "4"},
      {"8^{2/3}", "4"},
      {"\\sqrt[3]{-27}", "-3"},
      {"20!", "2432902008176640000"},
      {"\\binom{10}{3}", "120"},
      {"(-2)^{-3}", "-1/8"},
      {"2.5 \\times 10^{3}", "2500"},
  };
  for (const auto& c : cases) {
    INFO(c.in);
    ParseResult r = parse_answer(normalize_answer(c.in));
    REQUIRE(r.node);
    auto v = exact_value(*r.node);
    REQUIRE(v.has_value());
    std::string s = numerator(*v).str();
    if (denominator(*v) != 1) s += "/" + denominator(*v).str();
    CHECK(s == c.value);
  }
  // Not rational: no exact value (decided numerically instead).
  for (const char* in : {"\\sqrt{2}", "\\pi", "x + 1", "\\sin 1", "10^{10^{10}}"}) {
    INFO(in);
    ParseResult r = parse_answer(normalize_answer(in));
    REQUIRE(r.node);
    CHECK_FALSE(exact_value(*r.node).has_value());
  }
}

TEST_CASE("answers_equivalent: the same answer in different forms", "[unit]") {
  struct Case {
    const char* gold;
    const char* candidate;
  };
  const Case cases[] = {
      {"\\frac{1}{2}", "0.5"},
      {"\\frac{1}{2}", "1/2"},
      {"\\dfrac{17}{50}", "0.34"},
      {"-\\frac{3}{8}", "\\frac{-3}{8}"},
      {"\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}"},
      {"2\\sqrt{5}", "\\sqrt{20}"},
      {"11\\sqrt2", "11 \\sqrt{2}"},
      {"\\pi", "3.14159265358979"},
      {"12\\pi", "12 \\cdot \\pi"},
      {"\\frac{20000}{\\pi}", "20000/\\pi"},
      {"6 - 5i", "-5i + 6"},
      {"1+274i", "274i+1"},
      {"2^{100}", "1267650600228229401496703205376"},
      {"10080", "10,080"},
      {"\\$32,\\!348", "32348"},
      {"1,000,000", "10^6"},
      {"6.72\\times 10^{-5}", ".0000672"},
      {".0000672", "6.72e-5"},
      {"137 \\frac{1}{2}", "137.5"},
      {"90^\\circ", "90"},
      {"50\\%", "50"},
      {"5.4 \\text{ cents}", "5.4"},
      {"x=5", "5"},
      {"5", "x = 5"},
      {"y = 2x + 3", "y=3+2x"},
      {"y = 2x + 3", "2x+3"},
      {"5x - 7y + 11z + 4 = 0", "-10x+14y-22z-8=0"},
      {"(a+5)(b+2)", "ab+2a+5b+10"},
      {"x^3+3x-6", "x^3 + 3x - 6.0"},
      {"6r^2-4r-24", "2(3r^2-2r-12)"},
      {"\\cot x", "\\frac{\\cos x}{\\sin x}"},
      {"1 \\pm \\sqrt{19}", "1-\\sqrt{19}, 1+\\sqrt{19}"},
      {"3 \\pm 2 \\sqrt{2}", "3+2\\sqrt2, 3-2\\sqrt2"},
      {"\\{1\\pm\\sqrt{5},-2\\}", "-2, 1+\\sqrt5, 1-\\sqrt5"},
      {"1,-2", "-2, 1"},
      {"\\{3, 5, 7\\}", "\\{7, 3, 5\\}"},
      {"(1,-16,-4,43)", "(1, -16, -4, 43)"},
      {"(-2,1)", "-2, 1"},
      {"(-\\infty, 2) \\cup (3, \\infty)", "(3,\\infty)\\cup(-\\infty,2)"},
      {"(3,4]", "(3, 4]"},
      {"\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]", "[\\pi^2/8, 5\\pi^2/4]"},
      {"\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
       "\\begin{pmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\\\ \\frac{5}{3} \\end{pmatrix}"},
      {"\\begin{pmatrix} -7 \\\\ 16 \\\\ 5 \\end{pmatrix}", "(-7, 16, 5)"},
      {"\\text{(C)}", "C"},
      {"\\text{(C)}", "\\textbf{(C)} 12"},
      {"\\text{Evelyn}", "Evelyn"},
      {"\\text{east}", "East"},
      {"204_5", "204_{5}"},
      {"\\sqrt[3]{-8}", "-2"},
      {"3R^2", "3 R^{2}"},
      {"015", "15"},
      {"142.0", "142"},
      {"\\frac{1}{12}", "0.0833333333333333"},  // one numeric rule for decimals: as for \pi
      {"\\frac{1}{3}", "0.3333333333333333"},
      {"0.5", "0.50000001"},
      {"1000,99", "1000.99"},                    // a decimal comma
      {"1 000", "1000"},                         // thousands grouped by spaces
      {"x = 5+5+1 = 11", "x = 11"},              // a chain states its last value
      {"x = \\frac{1}{3} \\approx 0.33", "\\frac13"},  // an approximation after the exact value is dropped
      {"x \\approx 11", "11"},
      {"(p,q) = (3,2)", "(3, 2)"},               // a labelled answer
      {"|AB| = 1", "1"},
      {"AB = 4, CD = 5", "4, 5"},
      {"-12;-11;-10", "\\{-12, -11, -10\\}"},  // lists joined by ';', "and", "or"
      {"19, 46, and 82", "19, 46, 82"},
      {"21, 16 \\text{ or } 11", "11, 16, 21"},
      {"x \\ge 5", "x >= 5"},
      {"x < 1", "-x > -1"},                      // the same inequality times -1
      {"\\mathbb{R}", "(-\\infty, \\infty)"},
      {"125\\textnormal{ miles}", "125"},
      {"7:32", "\\frac{7}{32}"},                 // a ratio
  };
  for (const auto& c : cases) {
    INFO(c.gold << "  vs  " << c.candidate);
    EquivResult r = answers_equivalent(c.gold, c.candidate);
    INFO(r.method << " " << r.note);
    CHECK(r.equal);
    // Equivalence is symmetric.
    CHECK(answers_equivalent(c.candidate, c.gold).equal);
  }
}

TEST_CASE("answers_equivalent: different answers stay different", "[unit]") {
  struct Case {
    const char* gold;
    const char* candidate;
  };
  const Case cases[] = {
      {"\\frac{1}{3}", "0.333"},
      {"\\frac{1}{3}", "0.33333"},    // a rounding outside the tolerance
      {"\\frac{1}{3}", "\\frac{333333}{1000000}"},  // fractions written as fractions compare exactly
      {"1000000", "1000000.4"},      // an integer value compares exactly
      {"5", "5.0000001"},
      {"\\pi", "3.14"},
      {"2\\sqrt{5}", "2\\sqrt{6}"},
      {"6 - 5i", "6 + 5i"},
      {"(3,4]", "(3,4)"},
      {"(3,4]", "[3,4]"},
      {"(1, 2)", "(2, 1)"},
      {"\\{1, 2\\}", "\\{1, 2, 3\\}"},
      {"x^2 + 1", "x^2 - 1"},
      {"x + 1", "y + 1"},
      {"(a+5)(b+2)", "ab+2a+5b+11"},
      {"y = 2x + 3", "y = 2x - 3"},
      {"y = 2x + 3", "3"},
      {"1 \\pm \\sqrt{19}", "1+\\sqrt{19}"},
      {"\\text{(C)}", "(D)"},
      {"\\text{Evelyn}", "Navin"},
      {"204_5", "54"},
      {"10^{10^{10}}", "10^{10^{11}}"},
      {"\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"},
      {"(-\\infty, 2)", "(-\\infty, 2]"},
      {"x < 3", "x > 3"},
      {"7", ""},
      {"a + 3z = 0", "0"},                       // an equation is not a labelled value
      {"2x + z = 1", "1"},
      {"x < 1", "x > -1"},
      {"x < 1", "-x < -1"},                      // times -1 flips the inequality
      {"x < 1", "x \\le 1"},
      {"1000,99", "100099"},
      {"1, 22", "1.22"},                         // a list, not a decimal comma
  };
  for (const auto& c : cases) {
    INFO(c.gold << "  vs  " << c.candidate);
    EquivResult r = answers_equivalent(c.gold, c.candidate);
    INFO(r.method << " " << r.note);
    CHECK_FALSE(r.equal);
  }
}

// Answers that used to be called equal and must not be: words read as products of letters,
// units and degree signs dropped, composition read as a product, overflow taken for \infty.
// Each pair differs by definition of what it writes; the ones that stay equal are the
// notations that do not change the answer.
TEST_CASE("answers_equivalent: no false positives from words, units, degrees or overflow", "[unit]") {
  struct Case {
    const char* gold;
    const char* candidate;
    bool equal;
  };
  const Case cases[] = {
      {"no", "on", false},
      {"\\text{no}", "on", false},
      {"CAB", "ABC", false},
      {"\\text{CAB}", "\\text{ABC}", false},
      {"\\text{Yes}", "yes", true},
      {"\\text{odd}", "odd", true},
      {"10 cm", "10 m", false},
      {"10\\text{ cm}", "10\\text{ m}", false},
      {"10\\,\\mathrm{cm}^2", "10\\text{ cm}", false},
      {"125\\text{ miles}", "125\\textnormal{ km}", false},
      {"10\\text{ cm}", "10\\mathrm{cm}", true},
      {"10", "10 cm", true},              // units on one side only
      {"125 \\text{ miles}", "125 \\text{mile}", true},
      {"125", "125\\textnormal{ miles}", true},
      {"30^\\circ", "30\\text{ radians}", false},
      {"90^\\circ", "90", true},
      {"90^{\\circ}", "90\xC2\xB0", true},
      {"f \\circ g", "g \\circ f", false},
      {"\\infty", "10^{400}", false},
      {"\\infty", "10^{10^{10^{10}}}", false},
      {"\\infty", "\\frac{1}{0}", false},
      {"-\\infty", "-10^{400}", false},
      {"\\infty", "\\infty", true},
      {"(0, \\infty)", "(0, 10^{400})", false},
  };
  for (const auto& c : cases) {
    INFO(c.gold << "  vs  " << c.candidate);
    EquivResult r = answers_equivalent(c.gold, c.candidate);
    INFO(r.method << " " << r.note);
    CHECK(r.equal == c.equal);
    CHECK(answers_equivalent(c.candidate, c.gold).equal == c.equal);
  }
}

// A gold written as inequalities around one expression is the interval it describes; a
// candidate inequality against an interval gold stays unequal (Math-Verify's default).
TEST_CASE("answers_equivalent: an inequality gold against its interval", "[unit]") {
  CHECK(answers_equivalent("-793 < a < 10", "(-793, 10)").equal);
  CHECK(answers_equivalent("-2 \\le x \\le 7", "x \\in [-2, 7]").equal);
  CHECK(answers_equivalent("0 < f(x) \\le 1", "(0, 1]").equal);
  CHECK_FALSE(answers_equivalent("-2 \\le x \\le 7", "(-2, 7)").equal);
  CHECK_FALSE(answers_equivalent("(-793, 10)", "-793 < a < 10").equal);
}

TEST_CASE("answers_equivalent: relative tolerance is configurable", "[unit]") {
  EquivOptions loose;
  loose.rel_tol = 1e-3;
  CHECK(answers_equivalent("\\sqrt{2}", "1.4142", loose).equal);
  CHECK_FALSE(answers_equivalent("\\sqrt{2}", "1.4142").equal);  // default 1e-6
  CHECK_FALSE(answers_equivalent("\\sqrt{2}", "1.41", loose).equal);
}

TEST_CASE("hostile answers are decided, not crashed on", "[unit]") {
  // Each must come back (with any verdict) and must not claim equality with "1".
  std::vector<std::string> hostile = {
      std::string(100000, '(') + "1" + std::string(100000, ')'),  // deep nesting
      "10^{10^{10}}",
      "10^{10^{10^{10}}}",
      "2^{2^{2^{2^{2^{2}}}}}",
      "1000000!",
      "\\binom{10^{9}}{5000}",
      "(10^{10})!",
      std::string(3'000'000, '9'),  // megabytes of digits
      std::string(3'000'000, 'x'),
      "\\frac{1}{0}",
      "0^{-1}",
      "\\sqrt{-1}^{\\sqrt{-1}}",
      "1e999999",
      "\\frac{\\frac{\\frac{\\frac{1}{2}}{3}}{4}}{5}",
      std::string(2000, '(') + "1" + std::string(2000, ')'),  // under the length cap, over the depth cap
      std::string(2000, '-') + "1",
  };
  std::string deep_frac;
  for (int i = 0; i < 5000; ++i) deep_frac += "\\frac{1}{";
  deep_frac += "2" + std::string(5000, '}');
  hostile.push_back(deep_frac);
  for (const auto& h : hostile) {
    INFO(h.substr(0, 60));
    EquivResult r = answers_equivalent("1", h);
    CHECK_FALSE(r.equal);
  }
  // And the same inputs as gold answers do not crash either.
  for (const auto& h : hostile) CHECK_FALSE(answers_equivalent(h, "2").equal);
}

TEST_CASE("gold_answer: the row's gold in every dataset's layout", "[unit]") {
  using json = nlohmann::json;
  struct Case {
    json row;
    std::string gold;
  };
  const Case cases[] = {
      {{{"answer", "\\frac{1}{2}"}}, "\\frac{1}{2}"},
      {{{"answer", "Janet sells 9 eggs.\n#### 18"}}, "18"},  // GSM8K
      {{{"answer", 142.0}}, "142.0"},                       // AMC (DeepScaleR) floats
      {{{"answer", 204}}, "204"},
      {{{"solution", "so \\boxed{7}."}}, "7"},               // MATH without an answer field
      {{{"final_answer", "3"}}, "3"},
      {{{"question", "no gold"}}, ""},
  };
  for (const auto& c : cases) {
    INFO(c.row.dump());
    CHECK(gold_answer(c.row) == c.gold);
  }
  CHECK(gold_answer({{"target", "9"}, {"answer", "1"}}, "target") == "9");
}

TEST_CASE("math verifier: rewards, not-applicable, and details", "[unit]") {
  using json = nlohmann::json;
  auto v = make_math_verifier(MathVerifierOptions{});
  struct Case {
    const char* prompt;
    const char* completion;
    json row;
    double reward;  // NaN = not applicable
    const char* detail_key;
  };
  const double NA = std::nan("");
  const Case cases[] = {
      {"", "<think>2+2</think>\nSo \\boxed{4}.", {{"answer", "4"}}, 1.0, "extracted"},
      {"", "<think>2+2</think>\nSo \\boxed{5}.", {{"answer", "4"}}, 0.0, "note"},
      // The answer after </think> is graded, not a box inside the reasoning.
      {"", "<think>maybe \\boxed{4}</think>\nI think it is \\boxed{5}", {{"answer", "4"}}, 0.0, "note"},
      // Reasoning never closed: 0 with an error.
      {"<think>\n", "long reasoning \\boxed{4}", {{"answer", "4"}}, 0.0, "error"},
      {"", "The answer is 18.", {{"answer", "Sells 9.\n#### 18"}}, 1.0, "extracted"},
      {"", "\\boxed{142}", {{"answer", 142.0}}, 1.0, "extracted"},
      {"", "no final answer at all", {{"answer", "4"}}, 0.0, "error"},
      {"", "\\boxed{4}", {{"tests", json::array()}}, NA, "not_applicable"},
  };
  for (const auto& c : cases) {
    INFO(c.completion);
    Sample s{c.prompt, c.completion, c.row};
    Score sc = v->verify(s);
    if (std::isnan(c.reward)) {
      CHECK_FALSE(sc.applicable());
    } else {
      CHECK(sc.reward == c.reward);
      CHECK(sc.passed == (c.reward == 1.0));
    }
    CHECK(sc.detail.contains(c.detail_key));
  }
}
