// Tool calls in a chain's text (rewards/tool_calls.h): the engine's detection, the observation
// text, and the read-back of a finished chain. The expected strings are written out by hand from
// the formats documented at the top of tool_calls.h, not produced by the functions under test.
#include <catch2/catch.hpp>

#include <string>  // defines: std::string

#include "common/error.h"          // defines: retort::Error
#include "rewards/tool_calls.h"    // defines: closed_tool_call, find_tool_calls, render_observation, ...

using namespace retort::rewards;

namespace {
const std::optional<std::string> kNone = std::nullopt;
}

TEST_CASE("closed_tool_call: python format, only a closed fence inside the reasoning", "[unit]") {
  struct Case {
    const char* text;
    std::optional<std::string> code;
  };
  const Case cases[] = {
      {"Let me compute.\n```python\nprint(2+3)\n```", std::string("print(2+3)")},
      // The closing token may carry a newline or spaces ("```\n" is one token in Qwen's vocabulary).
      {"x\n```python\nprint(1)\nprint(2)\n```\n", std::string("print(1)\nprint(2)")},
      {"x\n```python  \na = 1\n```  \n\n", std::string("a = 1")},
      // An empty program is still a call (the sandbox answers it).
      {"```python\n```", std::string("")},
      // A fence inside the code that is not a line of its own does not close it.
      {"```python\ns = '\\n```x'\n", kNone},
      {"```python\ns = \"```\"\nprint(s)\n```", std::string("s = \"```\"\nprint(s)")},
      // Not closed yet, or not a python fence.
      {"```python\nprint(1)", kNone},
      {"```python\nprint(1)\n``", kNone},
      {"```py\nprint(1)\n```", kNone},
      {"```python3\nprint(1)\n```", kNone},
      {"```\nprint(1)\n```", kNone},
      // Already answered: the observation follows the call.
      {"```python\nprint(1)\n```\n```output\n1\n```\n", kNone},
      // Text after the close: the call is not the one just closed.
      {"```python\nprint(1)\n```\nSo the answer", kNone},
      // A code answer after </think> is not a call ...
      {"<think>plan</think>\n```python\ndef f(): pass\n```", kNone},
      {"plan</think>\n```python\ndef f(): pass\n```\n", kNone},
      // ... but a call inside the reasoning is, whether or not <think> was opened in the completion.
      {"<think>work\n```python\nprint(7*6)\n```", std::string("print(7*6)")},
      {"work\n```python\nprint(7*6)\n```", std::string("print(7*6)")},
      // The second call of a chain, the first one answered.
      {"```python\nprint(1)\n```\n```output\n1\n```\nnext\n```python\nprint(2)\n```", std::string("print(2)")},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    CHECK(closed_tool_call(c.text, ToolFormat::Python) == c.code);
  }
}

TEST_CASE("closed_tool_call: qwen format, the code argument of a closed <tool_call>", "[unit]") {
  struct Case {
    const char* text;
    std::optional<std::string> code;
  };
  const Case cases[] = {
      {"<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(2+3)\"}}\n</tool_call>",
       std::string("print(2+3)")},
      {"I will run it.\n<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"a = 1\\nprint(a)\"}}\n</tool_call>\n",
       std::string("a = 1\nprint(a)")},
      // OpenAI style: the arguments as a JSON string.
      {"<tool_call>{\"name\": \"python\", \"arguments\": \"{\\\"code\\\": \\\"print(1)\\\"}\"}</tool_call>",
       std::string("print(1)")},
      // Malformed JSON, no code argument, a close without an open: a call with an empty program.
      {"<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(1)\"\n</tool_call>", std::string("")},
      {"<tool_call>\n{\"name\": \"python\", \"arguments\": {\"cmd\": \"ls\"}}\n</tool_call>", std::string("")},
      {"<tool_call>\nnot json at all\n</tool_call>", std::string("")},
      {"text </tool_call>", std::string("")},
      // Not closed, or already answered.
      {"<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(1)\"}}\n", kNone},
      {"<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"1\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n"
       "<tool_response>\n1\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
       kNone},
      {"no call here", kNone},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    CHECK(closed_tool_call(c.text, ToolFormat::Qwen) == c.code);
  }
}

TEST_CASE("observation_body and render_observation: the documented layout", "[unit]") {
  // ok: stdout without its trailing newline, stderr not shown.
  CHECK(observation_body("ok", "5\n", "warning\n", "", false) == "5");
  CHECK(observation_body("ok", "a\nb\n\n", "", "", false) == "a\nb");
  CHECK(observation_body("ok", "", "", "", false) == "");
  // failed: stdout, stderr tail, status line.
  CHECK(observation_body("runtime_error", "partial\n", "Traceback\nZeroDivisionError: division by zero\n",
                         "exit code 1", false) ==
        "partial\nTraceback\nZeroDivisionError: division by zero\n[runtime_error: exit code 1]");
  CHECK(observation_body("time_limit", "", "", "wall clock 1.0 s exceeded", false) ==
        "[time_limit: wall clock 1.0 s exceeded]");
  CHECK(observation_body("budget", "", "", "", false) == "[budget]");
  // truncated: the marker before any status line.
  CHECK(observation_body("ok", "1\n2\n3", "", "", true) == "1\n2\n3\n[truncated]");
  CHECK(observation_body("output_limit", "xxxx", "", "stdout over 1 KB", true) ==
        "xxxx\n[truncated]\n[output_limit: stdout over 1 KB]");
  // A long stderr keeps its last lines only, starting at a line.
  std::string err;
  for (int i = 0; i < 500; ++i) err += "line " + std::to_string(i) + "\n";
  std::string b = observation_body("runtime_error", "", err, "", false);
  CHECK(b.size() < 1100);
  CHECK(b.rfind("line 499\n[runtime_error]") == b.size() - std::string("line 499\n[runtime_error]").size());
  CHECK(b.rfind("line ", 0) == 0);  // starts at a line's beginning

  CHECK(render_observation(ToolFormat::Python, "5") == "\n```output\n5\n```\n");
  CHECK(render_observation(ToolFormat::Qwen, "5") ==
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>\n<|im_start|>assistant\n");
}

TEST_CASE("find_tool_calls: python chains with answered, unanswered and answer-side blocks", "[unit]") {
  const std::string call1 = "```python\nprint(17*23)\n```";
  const std::string obs1 = "\n```output\n391\n```\n";
  const std::string call2 = "```python\n1/0\n```\n";  // the model wrote a newline after the fence
  const std::string obs2 = "\n```output\nZeroDivisionError: division by zero\n[runtime_error: exit code 1]\n```\n";
  const std::string call3 = "```python\nwhile True: pass\n```";  // never answered (tools off)
  const std::string answer = "</think>\n```python\ndef solve(): return 391\n```\n";
  const std::string text = "<think>Compute.\n" + call1 + obs1 + "Then\n" + call2 + obs2 + "and\n" + call3 + "\n" + answer;

  auto calls = find_tool_calls(text, ToolFormat::Python);
  REQUIRE(calls.size() == 3);

  CHECK(calls[0].code == "print(17*23)");
  CHECK(text.substr(calls[0].call_begin, calls[0].call_end - calls[0].call_begin) == call1);
  CHECK(calls[0].answered);
  CHECK(text.substr(calls[0].obs_begin, calls[0].obs_end - calls[0].obs_begin) == obs1);
  CHECK(calls[0].body == "391");
  CHECK(calls[0].status == "ok");
  CHECK_FALSE(calls[0].truncated);

  CHECK(calls[1].code == "1/0");
  CHECK(calls[1].answered);
  CHECK(text.substr(calls[1].obs_begin, calls[1].obs_end - calls[1].obs_begin) == obs2);
  CHECK(calls[1].status == "runtime_error");

  CHECK(calls[2].code == "while True: pass");
  CHECK_FALSE(calls[2].answered);
  CHECK(calls[2].status == "");
  CHECK(calls[2].body == "");
}

TEST_CASE("find_tool_calls: qwen chains, malformed JSON and an observation cut by the length limit", "[unit]") {
  const std::string call1 = "<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(6*7)\"}}\n</tool_call>";
  const std::string obs1 =
      "<|im_end|>\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n";
  const std::string call2 = "<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": oops}}\n</tool_call>";
  const std::string obs2 = "<|im_end|>\n<|im_start|>user\n<tool_response>\n[runtime_error: malformed call]\n</tool_resp";
  const std::string text = "Let me check.\n" + call1 + obs1 + "Again.\n" + call2 + obs2;

  auto calls = find_tool_calls(text, ToolFormat::Qwen);
  REQUIRE(calls.size() == 2);
  CHECK(calls[0].code == "print(6*7)");
  CHECK(text.substr(calls[0].call_begin, calls[0].call_end - calls[0].call_begin) == call1);
  CHECK(text.substr(calls[0].obs_begin, calls[0].obs_end - calls[0].obs_begin) == obs1);
  CHECK(calls[0].body == "42");
  CHECK(calls[0].status == "ok");
  CHECK(calls[1].code == "");
  CHECK(calls[1].answered);
  // The body's closing delimiter never arrived: the body runs to the end of the text.
  CHECK(calls[1].obs_end == text.size());
  CHECK(calls[1].body == "[runtime_error: malformed call]\n</tool_resp");
  // Unanswered and unclosed calls.
  CHECK(find_tool_calls(call1, ToolFormat::Qwen).size() == 1);
  CHECK_FALSE(find_tool_calls(call1, ToolFormat::Qwen)[0].answered);
  CHECK(find_tool_calls("<tool_call>\n{\"name\": \"python\"", ToolFormat::Qwen).empty());
  // Qwen calls are not limited to the reasoning.
  CHECK(find_tool_calls("</think>" + call1, ToolFormat::Qwen).size() == 1);
}

TEST_CASE("status and truncation read back from the rendered text, both formats", "[unit]") {
  struct Case {
    const char* status;
    const char* out;
    const char* err;
    const char* detail;
    bool truncated;
  };
  const Case cases[] = {
      {"ok", "391\n", "", "", false},
      {"ok", "1\n2\n3", "", "", true},
      {"ok", "", "", "", false},
      {"runtime_error", "", "Traceback...\nNameError: name 'x' is not defined\n", "exit code 1", false},
      {"time_limit", "tick\ntick", "", "wall clock 2.0 s exceeded", true},
      {"memory_limit", "", "", "memory 64 MB exceeded", false},
      {"output_limit", "aaaa", "", "", true},
      {"sandbox_error", "", "", "bwrap failed", false},
      {"budget", "", "", "4 calls used", false},
      // A body whose text looks like a status but is not one of the statuses stays "ok".
      {"ok", "[done: yes]", "", "", false},
  };
  for (ToolFormat f : {ToolFormat::Python, ToolFormat::Qwen}) {
    for (const auto& c : cases) {
      INFO(tool_format_name(f) << " " << c.status << " truncated=" << c.truncated);
      std::string body = observation_body(c.status, c.out, c.err, c.detail, c.truncated);
      std::string call = f == ToolFormat::Python
                             ? "```python\nprint(1)\n```"
                             : "<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(1)\"}}\n</tool_call>";
      std::string text = "think\n" + call + render_observation(f, body) + "then done";
      auto calls = find_tool_calls(text, f);
      REQUIRE(calls.size() == 1);
      CHECK(calls[0].answered);
      CHECK(calls[0].body == body);
      CHECK(calls[0].status == c.status);
      CHECK(calls[0].truncated == c.truncated);
      CHECK(calls[0].obs_begin == calls[0].call_end);
      CHECK(text.substr(calls[0].obs_end) == "then done");
    }
  }
}

TEST_CASE("tool formats by name; records as JSON", "[unit]") {
  CHECK(tool_format_from_name("python", "tools.format") == ToolFormat::Python);
  CHECK(tool_format_from_name("qwen", "tools.format") == ToolFormat::Qwen);
  CHECK(std::string(tool_format_name(ToolFormat::Qwen)) == "qwen");
  try {
    tool_format_from_name("hermes", "grpo.tools.format");
    FAIL("no error");
  } catch (const retort::Error& e) {
    std::string m = e.what();
    CHECK(m.find("grpo.tools.format") != std::string::npos);
    CHECK(m.find("hermes") != std::string::npos);
    CHECK(m.find("python | qwen") != std::string::npos);
  }
  ToolCallRecord r;
  r.code = "print(1)";
  r.observation = "1";
  r.status = "ok";
  r.wall_s = 0.25;
  r.peak_memory_kb = 9000;
  r.obs_start = 12;
  r.obs_tokens = 7;
  nlohmann::json j = to_json(r);
  const char* expected =
      "{\"code\": \"print(1)\", \"observation\": \"1\", \"status\": \"ok\", \"wall_s\": 0.25,"
      " \"peak_memory_kb\": 9000, \"obs_start\": 12, \"obs_tokens\": 7, \"truncated\": false}";
  CHECK(j == nlohmann::json::parse(expected));
}
