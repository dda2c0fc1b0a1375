// Traces: every accepted format, R1 prompt/completion joining, loss masks, truncation,
// and errors that name the file and line; tool-integrated traces (tool turns against
// Qwen2.5's Jinja rendering, R1-style output blocks) with exactly their observations masked.
#include <catch2/catch.hpp>

#include <fstream>

#include "common/error.h"
#include "data/traces.h"
#include "rewards/tool_calls.h"
#include "tokenizer/tokenizer.h"
#include "jsonl_files.h"  // defines: read_jsonl
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

using nlohmann::json;

namespace {

retort::Tokenizer test_tokenizer() {
  return retort::Tokenizer::from_file(std::string(RETORT_SOURCE_DIR) + "/tests/fixtures/tokenizer/trained.tokenizer.json");
}

std::string write_file(const std::string& name, const std::string& content) {
  std::string path = std::string(RETORT_BINARY_DIR) + "/" + name;
  std::ofstream(path) << content;
  return path;
}

}  // namespace

TEST_CASE("trace formats parse into prompt and completion", "[unit]") {
  auto a = retort::parse_trace(json::parse(R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                                             {"role": "assistant", "content": "A"}]})"), "f:1");
  REQUIRE(a.prompt.size() == 2);
  CHECK(a.prompt[1].content == "Q");
  CHECK(a.completion == "A");
  CHECK(a.id == "f:1");

  auto b = retort::parse_trace(json::parse(R"({"id": 7, "prompt": "P", "completion": "C"})"), "f:2");
  CHECK(b.id == "7");
  CHECK(b.prompt.at(0).role == "user");

  auto c = retort::parse_trace(json::parse(R"({"problem": "2+2?", "reasoning": "two plus two", "answer": "\\boxed{4}"})"), "f:3");
  CHECK(c.completion == "two plus two\n</think>\n\n\\boxed{4}");

  // R1 API output: reasoning without an opening tag, then </think>, then the answer.
  auto d = retort::parse_trace(json::parse(R"({"question": "Q", "generation": "think...</think>answer"})"), "f:4");
  CHECK(d.completion == "think...</think>answer");

  CHECK_THROWS_WITH(retort::parse_trace(json::parse(R"({"input": "x"})"), "data.jsonl:9"),
                    Catch::Contains("data.jsonl:9") && Catch::Contains("fields: input"));
  CHECK_THROWS_WITH(retort::parse_trace(json::parse(R"({"messages": [{"role": "user", "content": "Q"}]})"), "f:5"),
                    Catch::Contains("no assistant turn"));
}

TEST_CASE("tokenized traces mask the prompt and end with the end-of-turn token", "[unit]") {
  auto tok = test_tokenizer();
  retort::TraceDataOptions opt;
  opt.chat_template = "chatml";
  retort::TraceSample s = retort::parse_trace(json::parse(R"({"prompt": "What is 3*4?", "completion": "<think>\n3*4=12\n</think>\n12"})"), "x");
  retort::TokenizedSample t;
  REQUIRE(retort::tokenize_trace(s, tok, opt, t));
  REQUIRE(t.ids.size() == t.loss_mask.size());
  CHECK(t.prompt_length > 0);
  for (int64_t i = 0; i < t.prompt_length; ++i) CHECK(t.loss_mask[i] == 0);
  for (size_t i = t.prompt_length; i < t.ids.size(); ++i) CHECK(t.loss_mask[i] == 1);
  CHECK(t.ids.back() == *tok.token_to_id("<|im_end|>"));
  // The text round-trips: rendered prompt + completion + EOS.
  CHECK(tok.decode(t.ids) == retort::ChatTemplate::by_name("chatml").render(s.prompt, true) + s.completion + "<|im_end|>");

  opt.loss_on_prompt = true;
  REQUIRE(retort::tokenize_trace(s, tok, opt, t));
  CHECK(t.loss_mask[0] == 1);
}

TEST_CASE("data.system replaces the template's default system turn, unless the trace has its own", "[unit]") {
  auto tok = test_tokenizer();
  retort::TraceDataOptions opt;
  opt.chat_template = "chatml";
  retort::TraceSample s = retort::parse_trace(json::parse(R"({"prompt": "What is 3*4?", "completion": "12"})"), "x");
  retort::TokenizedSample with_default, with_short;
  REQUIRE(retort::tokenize_trace(s, tok, opt, with_default));
  CHECK_THAT(tok.decode(with_default.ids), Catch::Contains("You are Qwen"));
  opt.system = "Be brief.";
  REQUIRE(retort::tokenize_trace(s, tok, opt, with_short));
  CHECK(tok.decode(with_short.ids) == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 3*4?<|im_end|>\n"
                                      "<|im_start|>assistant\n12<|im_end|>");
  CHECK(with_short.ids.size() < with_default.ids.size());
  // A trace that brings its own system turn keeps it.
  retort::TraceSample own = retort::parse_trace(
      json::parse(R"({"messages": [{"role": "system", "content": "Own."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})"), "y");
  retort::TokenizedSample t;
  REQUIRE(retort::tokenize_trace(own, tok, opt, t));
  CHECK_THAT(tok.decode(t.ids), Catch::Contains("system\nOwn.") && !Catch::Contains("Be brief."));
}

TEST_CASE("truncation drops or cuts long samples and an all-dropped dataset is an error", "[unit]") {
  auto tok = test_tokenizer();
  retort::TraceDataOptions opt;
  opt.chat_template = "chatml";
  std::vector<retort::TraceSample> samples = {
      retort::parse_trace(json::parse(R"({"prompt": "short", "completion": "ok"})"), "a"),
      retort::parse_trace(json{{"prompt", "long"}, {"completion", std::string(3000, 'x')}}, "b")};
  retort::TokenizedSample probe;
  REQUIRE(retort::tokenize_trace(samples[0], tok, opt, probe));
  opt.max_length = static_cast<int64_t>(probe.ids.size()) + 4;
  retort::TokenizeStats st;
  auto kept = retort::tokenize_traces(samples, tok, opt, &st, "mem");
  CHECK(kept.size() == 1);
  CHECK(st.dropped_too_long == 1);
  opt.truncation = "cut";
  kept = retort::tokenize_traces(samples, tok, opt, &st, "mem");
  REQUIRE(kept.size() == 2);
  CHECK(static_cast<int64_t>(kept[1].ids.size()) == opt.max_length);
  CHECK(kept[1].truncated);
  CHECK(st.cut == 1);
  opt.truncation = "drop";
  opt.max_length = 4;
  CHECK_THROWS_WITH(retort::tokenize_traces(samples, tok, opt, &st, "mem"), Catch::Contains("no usable sample"));
}

TEST_CASE("trace files: bad lines name file and line; empty files are refused", "[unit]") {
  std::string good = write_file("traces_good.jsonl", "{\"prompt\": \"p\", \"completion\": \"c\"}\n\n{\"prompt\": \"q\", \"completion\": \"d\"}\n");
  CHECK(retort::load_traces(good).size() == 2);
  std::string bad = write_file("traces_bad.jsonl", "{\"prompt\": \"p\", \"completion\": \"c\"}\n{not json\n");
  CHECK_THROWS_WITH(retort::load_traces(bad), Catch::Contains("traces_bad.jsonl:2"));
  std::string empty = write_file("traces_empty.jsonl", "\n");
  CHECK_THROWS_WITH(retort::load_traces(empty), Catch::Contains("no samples"));
  CHECK_THROWS_AS(retort::load_traces("/nonexistent.jsonl"), retort::Error);
}

TEST_CASE("R1 completions do not repeat the <think> that the generation prompt opens", "[unit]") {
  auto tok = test_tokenizer();
  retort::TraceDataOptions opt;  // r1-distill; the trained test vocabulary lacks its EOS
  opt.eos_token = "<|endoftext|>";
  auto s = retort::parse_trace(json::parse(R"({"prompt": "Q", "completion": "<think>\nr\n</think>\nA"})"), "x");
  retort::TokenizedSample t;
  REQUIRE(retort::tokenize_trace(s, tok, opt, t));
  std::string text = tok.decode(t.ids);
  CHECK(text.find("<think>\n<think>") == std::string::npos);
  CHECK(text.find("<think>\nr\n</think>\nA<|endoftext|>") != std::string::npos);
  opt.eos_token = "<nope>";
  CHECK_THROWS_WITH(retort::tokenize_trace(s, tok, opt, t), Catch::Contains("data.eos_token"));
}

// ---- tool-integrated traces ----------------------------------------------------------------

namespace {

// The ids and loss mask a tool-using trace must get, built from the expected text and its
// observation ranges alone: the prompt's ids (mask 0), then each piece of the completion
// encoded on its own (written text 1, an observation 0), then the end-of-turn token (1).
void expected_tokens(const retort::Tokenizer& tok, const std::string& prompt, const std::string& completion,
                     const std::vector<std::pair<size_t, size_t>>& obs, int32_t eos, std::vector<int32_t>& ids,
                     std::vector<uint8_t>& mask) {
  ids = tok.encode(prompt);
  mask.assign(ids.size(), 0);
  auto piece = [&](size_t b, size_t e, uint8_t m) {
    if (e <= b) return;
    auto p = tok.encode(completion.substr(b, e - b));
    ids.insert(ids.end(), p.begin(), p.end());
    mask.insert(mask.end(), p.size(), m);
  };
  size_t at = 0;
  for (const auto& [b, e] : obs) {
    piece(at, b, 1);
    piece(b, e, 0);
    at = e;
  }
  piece(at, completion.size(), 1);
  ids.push_back(eos);
  mask.push_back(1);
}

std::vector<std::pair<size_t, size_t>> spans_of(const json& j) {
  std::vector<std::pair<size_t, size_t>> out;
  for (const auto& r : j) out.emplace_back(r.at(0).get<size_t>(), r.at(1).get<size_t>());
  return out;
}

}  // namespace

TEST_CASE("tool turns render as Qwen2.5's chat template renders them, and only they are masked", "[unit]") {
  // tests/fixtures/traces/tool_turns.jsonl: conversations with tool turns rendered by the
  // model's own Jinja template (scripts/fixtures/traces/make_tool_turns.py), with the byte
  // ranges of the tool turns' text. One call per turn, two rounds, two calls answered by
  // consecutive tool turns, an earlier exchange in the prompt, unicode.
  const auto lines = read_jsonl(std::string(RETORT_SOURCE_DIR) + "/tests/fixtures/traces/tool_turns.jsonl");
  REQUIRE(lines.size() == 4);
  const auto chatml = retort::ChatTemplate::by_name("chatml");
  std::vector<retort::Tokenizer> toks;
  toks.push_back(test_tokenizer());
  const std::string qwen3 = std::string(RETORT_SOURCE_DIR) + "/../shared/data/tokenizers/qwen3.tokenizer.json";
  if (std::ifstream(qwen3).good()) toks.push_back(retort::Tokenizer::from_file(qwen3));
  else WARN("the Qwen vocabulary check is skipped: " << qwen3 << " is absent");
  retort::TraceDataOptions opt;
  opt.chat_template = "chatml";
  int consecutive = 0;
  for (size_t n = 0; n < lines.size(); ++n) {
    const json& line = lines[n];
    INFO("conversation " << n);
    auto s = retort::parse_trace(json{{"messages", line.at("messages")}}, "tool_turns.jsonl:" + std::to_string(n + 1));
    const std::string prompt = chatml.render(s.prompt, /*add_generation_prompt=*/true);
    const std::string expected = line.at("expected");
    // The trained text is the template's text of the whole conversation (its last "\n" follows
    // the end-of-turn token, which ends the sample).
    CHECK(prompt + s.completion + "<|im_end|>\n" == expected);
    CHECK(prompt.size() == line.at("completion_start").get<size_t>());
    const auto obs = spans_of(line.at("observations"));
    CHECK(s.observations == obs);
    for (const auto& [b, e] : obs) {
      const std::string text = s.completion.substr(b, e - b);
      consecutive += text.find("</tool_response>\n<tool_response>") != std::string::npos;
    }
    // One tool turn per call reads back with the engine's parser, body and status included.
    auto calls = retort::rewards::find_tool_calls(s.completion, retort::rewards::ToolFormat::Qwen);
    if (n == 1) {
      REQUIRE(calls.size() == 2);
      CHECK(calls[0].answered);
      CHECK(calls[0].status == "runtime_error");
      CHECK(calls[1].body == "385");
      CHECK(calls[1].status == "ok");
      CHECK(s.completion.substr(calls[0].obs_begin, calls[0].obs_end - calls[0].obs_begin) ==
            retort::rewards::render_observation(retort::rewards::ToolFormat::Qwen, calls[0].body));
    }
    const std::string completion = expected.substr(prompt.size(), expected.size() - prompt.size() - std::string("<|im_end|>\n").size());
    for (const auto& tok : toks) {
      retort::TokenizedSample t;
      REQUIRE(retort::tokenize_trace(s, tok, opt, t));
      std::vector<int32_t> ids;
      std::vector<uint8_t> mask;
      expected_tokens(tok, prompt, completion, obs, *tok.token_to_id("<|im_end|>"), ids, mask);
      CHECK(t.ids == ids);
      CHECK(t.loss_mask == mask);
      CHECK(t.prompt_length == static_cast<int64_t>(tok.encode(prompt).size()));
      // The masked completion tokens decode to the tool turns' text, the trained ones to the rest.
      std::vector<int32_t> masked_ids, trained_ids;
      for (size_t i = static_cast<size_t>(t.prompt_length); i < t.ids.size(); ++i)
        (t.loss_mask[i] ? trained_ids : masked_ids).push_back(t.ids[i]);
      const std::string masked = tok.decode(masked_ids), trained = tok.decode(trained_ids);
      std::string obs_text, rest;
      size_t at = 0;
      for (const auto& [b, e] : obs) rest += completion.substr(at, b - at), obs_text += completion.substr(b, e - b), at = e;
      rest += completion.substr(at) + "<|im_end|>";
      CHECK(masked == obs_text);
      CHECK(trained == rest);
      int64_t zeros = 0;
      for (uint8_t m : mask) zeros += m == 0;
      CHECK(t.observation_tokens == zeros - t.prompt_length);
      CHECK(t.observation_tokens > 0);
    }
  }
  CHECK(consecutive == 1);  // the two-call turn's answers share one user turn
}

TEST_CASE("R1-style tool traces: ```output blocks after ```python calls in <think> are masked, in text and as tool turns", "[unit]") {
  auto tok = test_tokenizer();
  retort::TraceDataOptions opt;  // r1-distill; the trained test vocabulary lacks its EOS
  opt.eos_token = "<|endoftext|>";
  // The python format of rewards/tool_calls.h, written out: call "```python\n" code "\n```",
  // observation "\n```output\n" body "\n```\n". The last block follows </think>: a code answer,
  // not a call, and it stays trained on.
  const std::string obs1 = "\n```output\n579\n```\n";
  const std::string obs2 = "\n```output\nTraceback (most recent call last):\nZeroDivisionError: division by zero\n[runtime_error: exit code 1]\n```\n";
  const std::string completion = "<think>\nLet me add.\n```python\nprint(123+456)\n```" + obs1 + "So 579. Now a check:\n```python\nprint(1/0)\n```" +
                                 obs2 + "That failed; 579 stands.\n</think>\nThe answer is \\boxed{579}.\n```python\nprint(579)\n```\n```output\n579\n```\n";
  auto s = retort::parse_trace(json{{"prompt", "What is 123+456?"}, {"completion", completion}}, "r1.jsonl:1");
  const size_t b1 = completion.find(obs1), b2 = completion.find(obs2);
  REQUIRE(b1 != std::string::npos);
  REQUIRE(b2 != std::string::npos);
  const std::vector<std::pair<size_t, size_t>> want = {{b1, b1 + obs1.size()}, {b2, b2 + obs2.size()}};
  CHECK(s.observations == want);

  retort::TokenizedSample t;
  REQUIRE(retort::tokenize_trace(s, tok, opt, t));
  // The generation prompt opens "<think>\n": the completion's own is dropped, the ranges move with it.
  const std::string prompt = retort::ChatTemplate::by_name("r1-distill").render(s.prompt, true);
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  const size_t cut = std::string("<think>\n").size();
  expected_tokens(tok, prompt, completion.substr(cut), {{b1 - cut, b1 - cut + obs1.size()}, {b2 - cut, b2 - cut + obs2.size()}},
                  *tok.token_to_id("<|endoftext|>"), ids, mask);
  CHECK(t.ids == ids);
  CHECK(t.loss_mask == mask);

  // The same chain as tool turns: the same text, ids and mask.
  const std::string answer = "That failed; 579 stands.\n</think>\nThe answer is \\boxed{579}.\n```python\nprint(579)\n```\n```output\n579\n```\n";
  json msgs = json::array({{{"role", "user"}, {"content", "What is 123+456?"}},
                           {{"role", "assistant"}, {"content", "<think>\nLet me add.\n```python\nprint(123+456)\n```"}},
                           {{"role", "tool"}, {"content", "579"}},
                           {{"role", "assistant"}, {"content", "So 579. Now a check:\n```python\nprint(1/0)\n```"}},
                           {{"role", "tool"}, {"content", "Traceback (most recent call last):\nZeroDivisionError: division by zero\n[runtime_error: exit code 1]"}},
                           {{"role", "assistant"}, {"content", answer}}});
  auto m = retort::parse_trace(json{{"messages", msgs}}, "r1.jsonl:2");
  CHECK(m.completion == completion);
  CHECK(m.observations == want);
  retort::TokenizedSample tm;
  REQUIRE(retort::tokenize_trace(m, tok, opt, tm));
  CHECK(tm.ids == t.ids);
  CHECK(tm.loss_mask == t.loss_mask);

  // The counts reach the dataset's statistics; a trace without calls has none.
  retort::TokenizeStats st;
  auto plain = retort::parse_trace(json{{"prompt", "Q"}, {"completion", "<think>\nr\n</think>\nA"}}, "r1.jsonl:3");
  CHECK(plain.observations.empty());
  auto all = retort::tokenize_traces({s, plain}, tok, opt, &st, "mem");
  CHECK(st.with_tools == 1);
  CHECK(st.observation_tokens == all[0].observation_tokens);
  CHECK(all[0].observation_tokens == static_cast<int64_t>(tok.encode(obs1).size() + tok.encode(obs2).size()));
  CHECK(all[1].observation_tokens == 0);
}

TEST_CASE("malformed tool turns are one clear error naming the file and line", "[unit]") {
  const std::string call = "<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(1)\"}}\n</tool_call>";
  auto line = [](json msgs) { return json{{"messages", msgs}}.dump() + "\n"; };
  auto u = [](const char* c) { return json{{"role", "user"}, {"content", c}}; };
  auto a = [](const std::string& c) { return json{{"role", "assistant"}, {"content", c}}; };
  auto t = [](const char* c) { return json{{"role", "tool"}, {"content", c}}; };
  const std::string good = line({u("Q"), a(call), t("1"), a("done")});
  struct Bad {
    std::string line;
    std::vector<std::string> says;
  };
  const std::vector<Bad> cases = {
      {line({u("Q"), t("1"), a("done")}), {"tool turn (message 1) without a preceding call", "a 'user' turn"}},
      {line({u("Q"), a("no call here"), t("1"), a("done")}), {"tool turn (message 2) without a preceding call", "no call here"}},
      {line({u("Q"), a("<think>\n```python\nprint(1)\n```"), t("1"), t("2"), a("done")}), {"2 tool turns", "answer 1 call"}},
      {line({u("Q"), a(call), t("1"), t("2"), a("done")}), {"2 tool turns", "answer 1 call"}},
      {line({u("Q"), a(call), t("1"), u("again"), a("done")}), {"tool turn (message 2) outside the completion"}},
      {line({u("Q"), json{{"role", "assistant"}, {"content", ""}, {"tool_calls", json::array({{{"type", "function"}}})}}, t("1"), a("done")}),
       {"message 1 carries its calls in 'tool_calls'"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO("case " << i);
    const std::string path = write_file("traces_tool_bad_" + std::to_string(i) + ".jsonl", good + cases[i].line);
    try {
      retort::load_traces(path);
      FAIL("no error");
    } catch (const retort::Error& e) {
      const std::string what = e.what();
      INFO(what);
      CHECK(what.find("traces_tool_bad_" + std::to_string(i) + ".jsonl:2") != std::string::npos);
      for (const auto& say : cases[i].says) CHECK(what.find(say) != std::string::npos);
    }
  }
  CHECK(retort::load_traces(write_file("traces_tool_good.jsonl", good)).at(0).observations.size() == 1);
}
