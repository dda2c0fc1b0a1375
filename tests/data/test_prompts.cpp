// Prompts: every accepted format (math with GSM8K "####", stdin/stdout tests, HumanEval,
// MBPP), ids, the raw row kept for the verifiers, the chat template applied, errors that
// name FILE:LINE, and the real files of ../shared/data when present.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "data/prompts.h"
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string write_file(const std::string& name, const std::string& content) {
  std::string path = std::string(RETORT_BINARY_DIR) + "/" + name;
  std::ofstream(path) << content;
  return path;
}

std::string shared_data(const std::string& name) { return std::string(RETORT_SOURCE_DIR) + "/../shared/data/" + name; }

}  // namespace

TEST_CASE("prompt formats: math, stdin/stdout, HumanEval, MBPP", "[unit]") {
  struct Case {
    const char* line;
    const char* kind;
    const char* gold;
    const char* id;
    const char* question_has;
  };
  const Case cases[] = {
      {R"({"question": "Ducks?", "answer": "16 - 3 = <<16-3=13>>13\n#### 1,300"})", "math", "1300", "f:1", "Ducks?"},
      {R"({"problem": "P", "answer": 142.0})", "math", "142", "f:1", "P"},
      {R"({"problem": "P", "answer": 0.5, "id": 9})", "math", "0.5", "9", "P"},
      {R"({"prompt": "P", "final_answer": " 7 "})", "math", "7", "f:1", "P"},
      {R"({"problem": "P", "solution": "so \\boxed{\\frac{1}{2}}.", "unique_id": "u/1"})", "math", "\\frac{1}{2}", "u/1", "P"},
      {R"({"prompt": "Add two ints", "tests": [{"input": "1 2\n", "output": "3\n"}]})", "code_io", "", "f:1", "Add two ints"},
      {R"({"problem": "CC", "tests": {"inputs": ["1"], "outputs": ["1"]}})", "code_io", "", "f:1", "CC"},
      {R"({"task_id": "HumanEval/0", "prompt": "def f(x):\n", "test": "def check(c): pass", "entry_point": "f"})", "humaneval", "",
       "HumanEval/0", "def f(x):"},
      {R"({"task_id": 2, "text": "Write a function.", "test_list": ["assert g(1) == 2"]})", "mbpp", "", "2", "assert g(1) == 2"},
  };
  for (const auto& c : cases) {
    INFO(c.line);
    retort::PromptRecord r = retort::parse_prompt(json::parse(c.line), "f:1");
    CHECK(r.kind == c.kind);
    CHECK(r.gold == c.gold);
    CHECK(r.id == c.id);
    CHECK(r.question.find(c.question_has) != std::string::npos);
    REQUIRE(r.row);
    CHECK(*r.row == json::parse(c.line));  // the verifiers read the row unchanged
  }
  CHECK(retort::gsm8k_gold("no marker 12 ") == "no marker 12");
}

TEST_CASE("prompt files: chat template, ids, and errors naming FILE:LINE", "[unit]") {
  std::string good = write_file("prompts_good.jsonl",
                                "{\"question\": \"What is 2+3?\", \"answer\": \"#### 5\"}\n\n"
                                "{\"id\": \"c1\", \"prompt\": \"Echo\", \"tests\": [{\"input\": \"a\", \"output\": \"a\"}]}\n");
  retort::PromptFormatOptions opt;
  opt.chat_template = "chatml";
  opt.math_instruction = "Put the answer in \\boxed{}.";
  auto ps = retort::load_prompts(good, opt);
  REQUIRE(ps.size() == 2);
  CHECK(ps[0].id == good + ":1");
  CHECK(ps[1].id == "c1");
  CHECK(ps[1].where == good + ":3");  // the blank line counts
  CHECK(ps[0].text.find("<|im_start|>user\nWhat is 2+3?\n\nPut the answer in \\boxed{}.<|im_end|>") != std::string::npos);
  CHECK(ps[0].text.size() > ps[0].question.size());
  CHECK(ps[0].text.rfind("<|im_start|>assistant\n") == ps[0].text.size() - std::string("<|im_start|>assistant\n").size());
  CHECK(ps[1].text.find("Put the answer") == std::string::npos);  // the math instruction is for math only
  opt.chat_template = "r1-distill";
  auto r1 = retort::load_prompts(good, opt);
  CHECK(r1[0].text.size() >= 8);
  CHECK(r1[0].text.substr(r1[0].text.size() - 8) == "<think>\n");

  std::string bad_json = write_file("prompts_bad_json.jsonl", "{\"question\": \"Q\", \"answer\": \"1\"}\n{oops\n");
  CHECK_THROWS_WITH(retort::load_prompts(bad_json), Catch::Contains(bad_json + ":2") && Catch::Contains("not valid JSON"));
  std::string no_answer = write_file("prompts_no_answer.jsonl", "{\"question\": \"Q\"}\n");
  CHECK_THROWS_WITH(retort::load_prompts(no_answer), Catch::Contains(no_answer + ":1") && Catch::Contains("gold answer"));
  std::string unknown = write_file("prompts_unknown.jsonl", "{\"input\": \"x\", \"label\": 1}\n");
  CHECK_THROWS_WITH(retort::load_prompts(unknown), Catch::Contains(":1") && Catch::Contains("fields: input, label"));
  std::string bad_tests = write_file("prompts_bad_tests.jsonl", "{\"prompt\": \"P\", \"tests\": 3}\n");
  CHECK_THROWS_WITH(retort::load_prompts(bad_tests), Catch::Contains(":1") && Catch::Contains("'tests'"));
  std::string empty = write_file("prompts_empty.jsonl", "\n\n");
  CHECK_THROWS_WITH(retort::load_prompts(empty), Catch::Contains("no prompts"));
  CHECK_THROWS_WITH(retort::load_prompts(write_file("prompts_missing_dir/x.jsonl", "")), Catch::Contains("cannot open"));
  opt.chat_template = "vicuna";
  CHECK_THROWS_WITH(retort::load_prompts(good, opt), Catch::Contains("chatml"));
}

TEST_CASE("prompt files: the shared datasets load with the expected kinds", "[unit]") {
  struct Case {
    const char* file;
    const char* kind;
    size_t min_rows;
  };
  const Case cases[] = {{"gsm8k_test.jsonl", "math", 1000},      {"math500.jsonl", "math", 500},
                        {"aime2024_deepscaler_test.jsonl", "math", 30}, {"amc_2022_2023_deepscaler_test.jsonl", "math", 80},
                        {"humaneval.jsonl", "humaneval", 164},  {"mbpp.jsonl", "mbpp", 900},
                        {"codeforces_rllm_test.jsonl", "code_io", 100}, {"code_contests_rllm_test.jsonl", "code_io", 100}};
  for (const auto& c : cases) {
    std::string path = shared_data(c.file);
    if (!fs::exists(path)) {
      WARN("skipped: " << path << " is absent");
      continue;
    }
    INFO(c.file);
    auto ps = retort::load_prompts(path);
    CHECK(ps.size() >= c.min_rows);
    size_t right_kind = 0, with_gold = 0;
    for (const auto& p : ps) {
      right_kind += p.kind == c.kind;
      with_gold += !p.gold.empty();
    }
    CHECK(right_kind == ps.size());
    if (std::string(c.kind) == "math") CHECK(with_gold == ps.size());
  }
  // GSM8K's first gold answer is 18 ("#### 18"); HumanEval ids are task ids.
  if (fs::exists(shared_data("gsm8k_test.jsonl"))) CHECK(retort::load_prompts(shared_data("gsm8k_test.jsonl"))[0].gold == "18");
  if (fs::exists(shared_data("humaneval.jsonl"))) CHECK(retort::load_prompts(shared_data("humaneval.jsonl"))[0].id == "HumanEval/0");
}
