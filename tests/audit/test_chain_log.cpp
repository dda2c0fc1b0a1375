// The chain log: the schema of a line, whole lines from the background writer (invalid UTF-8
// replaced), and the resume's truncation of the lines after a checkpoint.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "audit/chain_log.h"
#include "common/run_dir.h"
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace fs = std::filesystem;
using nlohmann::json;

TEST_CASE("chain log: schema, whole lines from a background writer, resume truncation", "[unit]") {
  std::string path = std::string(RETORT_BINARY_DIR) + "/chains_test.jsonl";
  fs::remove(path);
  {
    retort::ChainLog log(path);
    for (int step = 1; step <= 3; ++step) {
      for (int i = 0; i < 4; ++i) {
        retort::ChainEntry e;
        e.step = step;
        e.prompt_id = "p" + std::to_string(i / 2);
        e.group = i / 2;
        e.sample = i % 2;
        e.prompt = "Q";
        e.text = "r</think>a\xff";  // invalid UTF-8 from a model must not break the line
        e.reasoning = "r";
        e.answer = "a";
        e.verifiers["math"] = retort::verifier_cell(1.0, true, {{"extracted", "a"}});
        e.verifiers["code"] = retort::verifier_cell(std::nan(""), false, {{"not_applicable", "no tests"}});
        e.reward = i % 2;
        e.advantage = i % 2 ? 1.0 : -1.0;
        if (step != 2) e.kl = 0.01 * step;
        e.length = 5;
        e.truncated = step == 3;
        log.write(e);
      }
    }
    log.flush();
    CHECK(log.lines_written() == 12);
  }
  auto read = [&] {
    std::vector<json> lines;
    std::ifstream f(path);
    std::string s;
    while (std::getline(f, s)) lines.push_back(json::parse(s));
    return lines;
  };
  auto lines = read();
  REQUIRE(lines.size() == 12);
  const json& l = lines[5];
  for (const char* key : {"step", "prompt_id", "group", "sample", "prompt", "text", "reasoning", "answer", "verifiers", "reward",
                          "advantage", "kl", "length", "truncated"})
    CHECK(l.contains(key));
  CHECK(l.size() == 14);
  CHECK(l["step"] == 2);
  CHECK(l["kl"].is_null());
  CHECK(lines[0]["kl"] == Approx(0.01));
  CHECK(l["verifiers"]["math"]["reward"] == 1.0);
  CHECK(l["verifiers"]["code"]["reward"].is_null());
  CHECK(l["verifiers"]["code"]["detail"]["not_applicable"] == "no tests");
  CHECK(l["text"].get<std::string>().rfind("r</think>a", 0) == 0);

  // A kill mid-write leaves a cut last line; the resume at step 1 drops it and steps 2, 3.
  { std::ofstream(path, std::ios::app) << "{\"step\": 3, \"prompt_id\": \"p"; }
  retort::truncate_jsonl_after_step(path, 1);
  lines = read();
  REQUIRE(lines.size() == 4);
  for (const auto& x : lines) CHECK(x["step"] == 1);
  retort::truncate_jsonl_after_step(path + ".missing", 1);  // nothing to do, no file made
  CHECK(!fs::exists(path + ".missing"));
}

TEST_CASE("chain log: a chain's tool calls are written only when it made some", "[unit]") {
  retort::ChainEntry e;
  e.text = "```python\nprint(1)\n```\n```output\n1\n```\n";
  CHECK_FALSE(retort::chain_line(e).contains("tool_calls"));
  e.tool_calls.push_back(json{{"code", "print(1)"}, {"observation", "1"}, {"status", "ok"}, {"wall_s", 0.05},
                              {"peak_memory_kb", 8000}, {"obs_start", 9}, {"obs_tokens", 6}, {"truncated", false}});
  const json l = retort::chain_line(e);
  REQUIRE(l.contains("tool_calls"));
  REQUIRE(l["tool_calls"].size() == 1);
  CHECK(l["tool_calls"][0]["status"] == "ok");
  CHECK(l["tool_calls"][0]["obs_tokens"] == 6);
}
