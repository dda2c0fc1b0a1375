#include "data/prompts.h"

#include <cmath>    // defines: std::floor
#include <fstream>  // defines: std::ifstream

#include "common/config.h"             // defines: ConfigBinder
#include "common/error.h"              // defines: retort::Error
#include "data/jsonl.h"                // defines: for_each_jsonl_row, find_string_field
#include "tokenizer/chat_template.h"   // defines: ChatTemplate

namespace retort {

using nlohmann::json;

void PromptFormatOptions::bind(ConfigBinder& b) {
  b.choice("chat_template", chat_template, ChatTemplate::names());
  b.field("system", system);
  b.field("math_instruction", math_instruction);
  b.field("code_instruction", code_instruction);
}

namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

// The content of the last \boxed{...} of a solution, by brace matching; "" when none.
std::string last_boxed_content(const std::string& s) {
  size_t at = s.rfind("\\boxed{");
  if (at == std::string::npos) return "";
  size_t start = at + 7;
  int depth = 1;
  for (size_t i = start; i < s.size(); ++i) {
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return s.substr(start, i - start);
  }
  return "";  // unbalanced
}

// A number gold answer as text: 142.0 -> "142", 0.5 -> "0.5".
std::string number_text(const json& v) {
  if (v.is_number_integer()) return v.dump();
  double d = v.get<double>();
  if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 1e15) return std::to_string(static_cast<long long>(d));
  return v.dump();
}

std::string fields_of(const json& j) {
  std::string keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys += (keys.empty() ? "" : ", ") + it.key();
  return keys.empty() ? "no fields" : "fields: " + keys;
}

[[noreturn]] void bad_field(const std::string& what, const std::string& where, const std::string& expected, const json& got) {
  throw Error(ErrorInfo{what, where, expected, quote_for_error(got.dump()), "see DESIGN.md section 5 for the prompt formats"});
}

}  // namespace

std::string gsm8k_gold(const std::string& answer) {
  size_t at = answer.rfind("####");
  std::string s = at == std::string::npos ? answer : answer.substr(at + 4);
  if (at != std::string::npos) {
    std::string out;
    for (char c : s)
      if (c != ',') out += c;  // "1,234" -> "1234"
    s = out;
  }
  return trim(s);
}

PromptRecord parse_prompt(const json& j, const std::string& where) {
  if (!j.is_object()) throw Error(ErrorInfo{"a prompt line must be a JSON object", where, "an object", j.type_name(), ""});
  PromptRecord r;
  r.where = where;
  r.id = where;
  for (const char* k : {"id", "task_id", "unique_id"}) {
    auto it = j.find(k);
    if (it != j.end() && !it->is_null()) {
      r.id = it->is_string() ? it->get<std::string>() : it->dump();
      break;
    }
  }

  const json* question = find_string_field(j, {"prompt", "problem", "question"});
  if (j.contains("text") && j.contains("test_list")) {
    // MBPP: the task sentence and its asserts (the asserts name the function to write).
    if (!j["text"].is_string()) bad_field("MBPP 'text' must be a string", where, "a string", j["text"]);
    if (!j["test_list"].is_array() || j["test_list"].empty())
      bad_field("MBPP 'test_list' must be a non-empty array of asserts", where, "[\"assert ...\", ...]", j["test_list"]);
    r.kind = "mbpp";
    r.question = j["text"].get<std::string>() + "\nYour code should pass these tests:\n";
    for (const auto& t : j["test_list"]) {
      if (!t.is_string()) bad_field("MBPP 'test_list' entries must be strings", where, "a string", t);
      r.question += "\n" + t.get<std::string>();
    }
  } else if (j.contains("test") && j.contains("entry_point")) {
    // HumanEval: the prompt is a function signature with its docstring.
    if (!j.contains("prompt") || !j["prompt"].is_string())
      bad_field("a HumanEval row needs a string 'prompt'", where, "the function signature and docstring", j.value("prompt", json()));
    if (!j["test"].is_string() || !j["entry_point"].is_string())
      bad_field("HumanEval 'test' and 'entry_point' must be strings", where, "strings", j["entry_point"]);
    r.kind = "humaneval";
    r.question = "Complete the following Python function `" + j["entry_point"].get<std::string>() +
                 "`. Write the whole function in one ```python code block.\n\n```python\n" + j["prompt"].get<std::string>() +
                 "```";
  } else if (question && j.contains("tests")) {
    const json& t = j["tests"];
    bool ok = (t.is_array() && !t.empty()) || (t.is_object() && t.contains("inputs") && t.contains("outputs")) || t.is_string();
    if (!ok) bad_field("'tests' must be [{\"input\", \"output\"}, ...] or {\"inputs\", \"outputs\"}", where, "a test list", t);
    r.kind = "code_io";
    r.question = question->get<std::string>();
  } else if (question) {
    r.kind = "math";
    r.question = question->get<std::string>();
    if (j.contains("answer") && j["answer"].is_string()) {
      r.gold = gsm8k_gold(j["answer"].get<std::string>());
    } else if (j.contains("answer") && j["answer"].is_number()) {
      r.gold = number_text(j["answer"]);
    } else if (const json* fa = find_string_field(j, {"final_answer"})) {
      r.gold = trim(fa->get<std::string>());
    } else if (const json* sol = find_string_field(j, {"solution"})) {
      r.gold = trim(last_boxed_content(sol->get<std::string>()));
    }
    if (r.gold.empty()) {
      throw Error(ErrorInfo{"a math prompt needs a gold answer", where,
                            "\"answer\" (text or number), \"final_answer\", or a \"solution\" with \\boxed{}", fields_of(j),
                            "code prompts carry \"tests\" instead; see DESIGN.md section 5"});
    }
  } else {
    throw Error(ErrorInfo{"unrecognised prompt format", where,
                          "prompt/problem/question with answer or tests | HumanEval prompt+test+entry_point | MBPP text+test_list",
                          fields_of(j), "see DESIGN.md section 5 for the accepted formats"});
  }
  if (trim(r.question).empty()) throw Error(ErrorInfo{"the prompt text is empty", where, "a question", "\"\"", ""});
  r.row = std::make_shared<const json>(j);
  return r;
}

void render_prompt(PromptRecord& rec, const PromptFormatOptions& opt) {
  ChatTemplate tmpl = ChatTemplate::by_name(opt.chat_template);
  const std::string& instruction = rec.kind == "math" ? opt.math_instruction : opt.code_instruction;
  std::vector<ChatMessage> msgs;
  if (!opt.system.empty()) msgs.push_back({"system", opt.system});
  msgs.push_back({"user", instruction.empty() ? rec.question : rec.question + "\n\n" + instruction});
  rec.text = tmpl.render(msgs, /*add_generation_prompt=*/true);
}

std::vector<PromptRecord> load_prompts(const std::string& path, const PromptFormatOptions& opt) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open the prompt file", path, "check the path (prompts=...)");
  ChatTemplate::by_name(opt.chat_template);  // a bad template name fails before the first line
  std::vector<PromptRecord> out;
  for_each_jsonl_row(f, path, [&](const json& j, const std::string& where) {
    out.push_back(parse_prompt(j, where));
    render_prompt(out.back(), opt);
  });
  if (out.empty()) {
    throw Error(ErrorInfo{"the prompt file has no prompts", path, "at least one JSON line", "an empty file",
                          "GRPO and evaluation need prompts to sample from"});
  }
  return out;
}

}  // namespace retort
