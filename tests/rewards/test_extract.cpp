// Extraction of answers and code from completions (rewards/extract.h): table-driven.
#include <catch2/catch.hpp>

#include "rewards/extract.h"  // defines: split_think, last_boxed, extract_answer, last_code_block

using namespace retort::rewards;

TEST_CASE("split_think: reasoning and answer split at </think>", "[unit]") {
  struct Case {
    const char* prompt;
    const char* completion;
    const char* reasoning;
    const char* answer;
    bool closed, opened;
  };
  const Case cases[] = {
      {"", "<think>\nwork\n</think>\nThe answer is 5.", "\nwork\n", "\nThe answer is 5.", true, true},
      // R1-Distill: the prompt ends with <think>, the completion has only the closing tag.
      {"<|User|>Q<|Assistant|><think>\n", "work</think>42", "work", "42", true, true},
      {"", "work</think>42", "work", "42", true, true},
      // Open block never closed: nothing to grade.
      {"<|Assistant|><think>\n", "still thinking \\boxed{3}", "still thinking \\boxed{3}", "", false, true},
      {"", "<think>never closed \\boxed{3}", "never closed \\boxed{3}", "", false, true},
      // No think block at all: the whole completion is the answer.
      {"", "plain answer \\boxed{7}", "", "plain answer \\boxed{7}", false, false},
      // An earlier turn's closed block in the prompt does not open one.
      {"<think>a</think> old turn", "answer 9", "", "answer 9", false, false},
  };
  for (const auto& c : cases) {
    INFO(c.completion);
    ThinkSplit s = split_think(c.completion, c.prompt);
    CHECK(std::string(s.reasoning) == c.reasoning);
    CHECK(std::string(s.answer) == c.answer);
    CHECK(s.closed == c.closed);
    CHECK(s.opened == c.opened);
  }
}

TEST_CASE("last_boxed: brace matching, nesting, fbox, unbraced", "[unit]") {
  struct Case {
    const char* text;
    const char* expected;  // nullptr = none
  };
  const Case cases[] = {
      {"so \\boxed{5}.", "5"},
      {"\\boxed{1} then \\boxed{2}", "2"},
      {"\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"},
      {"\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"},
      {"\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"},  // escaped braces do not close the group
      {"\\fbox{12}", "12"},
      {"\\boxed 5$", "5"},
      {"\\boxed 5.", "5"},
      {"\\framebox{204} minutes", "204"},
      {"\\boxed{3} and later \\fbox{4}", "4"},
      {"\\boxed{unbalanced", nullptr},
      {"no box here", nullptr},
      {"\\boxedfoo{3}", nullptr},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto b = last_boxed(c.text);
    if (c.expected) {
      REQUIRE(b.has_value());
      CHECK(*b == c.expected);
    } else {
      CHECK_FALSE(b.has_value());
    }
  }
}

TEST_CASE("extract_answer: methods in order of precedence", "[unit]") {
  struct Case {
    const char* text;
    bool last_number;
    const char* answer;
    const char* method;
  };
  const Case cases[] = {
      {"The answer is 3. Actually \\boxed{4}", false, "4", "boxed"},
      {"<answer> 17 </answer>", false, "17", "answer_tag"},
      {"work\n#### 1,600\n", false, "1,600", "gsm8k"},
      {"So the final answer is $\\frac{3}{4}$.", false, "\\frac{3}{4}", "answer_is"},
      {"The answer is: 12", false, "12", "answer_is"},
      {"THE ANSWER IS 3.5 meters. Done", false, "3.5 meters", "answer_is"},
      {"the answer is \\boxed{9}", false, "9", "boxed"},
      {"we get 12 apples and then 13", false, "", "none"},
      {"we get 12 apples and then -1,300.5 more", true, "-1,300.5", "last_number"},
      {"nothing numeric", true, "", "none"},
      {"\\boxed{1} and \\boxed{2} and \\boxed{3}", false, "1, 2, 3", "boxed"},  // boxes that end the text: one list
      {"\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}", false, "(2, 2), (6, 2)", "boxed"},
      {"first \\boxed{004}. Let me check again: the sum is 2,552,004. So \\boxed{004}", false, "004", "boxed"},
      {"Therefore $x \\geq 5$ is the solution.", false, "x \\geq 5", "math_span"},
      {"Answer \\[ 9 \\]", false, "9", "math_span"},
      {"$1$ and $2$ or $3$", false, "1, 2, 3", "math_span"},
      {"Answer $ \n 9 \n $", false, "", "none"},  // inline math does not span lines
      {"7,425,000", false, "7,425,000", "bare"},
      {"-\\frac{10}{9}", false, "-\\frac{10}{9}", "bare"},
      {"the number is not 10 which is 1,000.99m", true, "1,000.99", "last_number"},
      {"AZYUK2A", true, "", "none"},            // digits inside a word are not a number
      {"so the value is .4", true, ".4", "last_number"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    ExtractedAnswer a = extract_answer(c.text, c.last_number);
    CHECK(a.text == c.answer);
    CHECK(a.method == c.method);
  }
}

TEST_CASE("last_code_block: tagged, untagged, unterminated, preferred language", "[unit]") {
  struct Case {
    const char* text;
    const char* prefer;
    const char* code;
    const char* language;
    bool found;
  };
  const Case cases[] = {
      {"```python\nprint(1)\n```", "", "print(1)\n", "python", true},
      {"```\nx = 1\n```\ntext\n```py\ny = 2\n```", "", "y = 2\n", "python", true},
      {"```cpp\nint main(){}\n```\n```\nplain\n```", "", "plain\n", "", true},
      // With a preferred language the last block in it wins over a later untagged one.
      {"```python\na = 1\n```\n```\noutput\n```", "python", "a = 1\n", "python", true},
      {"```c++\nint x;\n```", "cpp", "int x;\n", "cpp", true},
      // Cut at the token limit: the open block runs to the end.
      {"```python\nwhile True:\n    pass", "", "while True:\n    pass", "python", true},
      {"~~~python\nz = 3\n~~~", "", "z = 3\n", "python", true},
      {"no code", "", "", "", false},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    CodeBlock b = last_code_block(c.text, c.prefer);
    CHECK(b.found == c.found);
    CHECK(b.code == c.code);
    CHECK(b.language == c.language);
  }
}

TEST_CASE("extraction is linear on megabytes of degenerate text", "[unit]") {
  // Not a timing test: these inputs would take minutes with a quadratic scan, and they must
  // give the right answer.
  std::string text(2'000'000, '{');
  text += "\\boxed{42}";
  auto b = last_boxed(text);
  REQUIRE(b.has_value());
  CHECK(*b == "42");
  std::string braces = "\\boxed" + std::string(1'000'000, '{');
  CHECK_FALSE(last_boxed(braces).has_value());
  std::string many;
  for (int i = 0; i < 100000; ++i) many += "the answer is ";
  CHECK(extract_answer(many + "7.").text == "7");
}
