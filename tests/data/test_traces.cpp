// Traces: every accepted format, R1 prompt/completion joining, loss masks, truncation,
// and errors that name the file and line.
#include <catch2/catch.hpp>

#include <fstream>

#include "common/error.h"
#include "data/traces.h"
#include "tokenizer/tokenizer.h"
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
