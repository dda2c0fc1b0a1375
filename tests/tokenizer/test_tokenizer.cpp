// Tokenizer: ids equal to Hugging Face tokenizers' on the project's corpus for the Qwen3
// and DeepSeek-V3 vocabularies; round trips; malformed files and bad fields refused.
#include <catch2/catch.hpp>

#include "common/error.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer_fixtures.h"

using retort::Tokenizer;
using retort::test::read_jsonl;
using retort::test::shared_data;
using retort::test::source_path;

namespace {

// Compares every corpus string's ids and decoded text with the reference file.
void check_against_reference(const std::string& tokenizer_file, const std::string& ids_file,
                             const std::string& corpus_file = "tests/fixtures/tokenizer/corpus.jsonl",
                             size_t min_lines = 500) {
  if (!retort::test::file_exists(tokenizer_file)) {
    WARN("skipped: " << tokenizer_file << " is absent (../shared/data is not beside the checkout)");
    return;
  }
  Tokenizer tok = Tokenizer::from_file(tokenizer_file);
  auto corpus = read_jsonl(source_path(corpus_file));
  auto expected = read_jsonl(source_path(ids_file));
  REQUIRE(corpus.size() >= min_lines);
  REQUIRE(corpus.size() == expected.size());
  int mismatches = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    std::string text = corpus[i]["text"];
    std::vector<int32_t> want = expected[i]["ids"].get<std::vector<int32_t>>();
    std::vector<int32_t> got = tok.encode(text);
    if (got != want) {
      ++mismatches;
      if (mismatches <= 5) {
        INFO("line " << i + 1 << " text " << retort::quote_for_error(text));
        CHECK(got == want);
      }
    }
    std::string decoded = tok.decode(got);
    CHECK(decoded == expected[i]["decoded"].get<std::string>());
    // decode(encode(x)) == normalize(x): byte-level BPE loses nothing but normalisation.
    CHECK(decoded == tok.normalize(text));
  }
  CHECK(mismatches == 0);
}

}  // namespace

TEST_CASE("Qwen3 vocabulary: ids equal Hugging Face tokenizers on the corpus", "[unit]") {
  check_against_reference(shared_data("tokenizers/qwen3.tokenizer.json"), "tests/fixtures/tokenizer/qwen3.ids.jsonl");
}

TEST_CASE("DeepSeek-V3 vocabulary: ids equal Hugging Face tokenizers on the corpus", "[unit]") {
  check_against_reference(shared_data("tokenizers/deepseek_v3.tokenizer.json"),
                          "tests/fixtures/tokenizer/deepseek_v3.ids.jsonl");
}

// Characters assigned in Unicode 15.0 and 15.1 (and U+180E, which left White_Space in 6.3),
// next to "'s" so that the split pattern's letter, number and space classes decide the pieces.
// The reference ids come from Hugging Face tokenizers (scripts/fixtures/tokenizer/gen_ids.js
// on unicode15.corpus.jsonl, whose "note" field names each character and its category).
TEST_CASE("Unicode 15 and 15.1 characters: ids equal Hugging Face tokenizers", "[unit]") {
  check_against_reference(shared_data("tokenizers/qwen3.tokenizer.json"),
                          "tests/fixtures/tokenizer/qwen3.unicode15.ids.jsonl",
                          "tests/fixtures/tokenizer/unicode15.corpus.jsonl", 17);
  check_against_reference(shared_data("tokenizers/deepseek_v3.tokenizer.json"),
                          "tests/fixtures/tokenizer/deepseek_v3.unicode15.ids.jsonl",
                          "tests/fixtures/tokenizer/unicode15.corpus.jsonl", 17);
}

TEST_CASE("special tokens, vocabulary size and skipping special tokens on decode", "[unit]") {
  std::string path = shared_data("tokenizers/qwen3.tokenizer.json");
  if (!retort::test::file_exists(path)) {
    WARN("skipped: " << path << " is absent");
    return;
  }
  Tokenizer tok = Tokenizer::from_file(path);
  auto im_end = tok.token_to_id("<|im_end|>");
  REQUIRE(im_end.has_value());
  CHECK(tok.is_special(*im_end));
  CHECK(tok.vocab_size() > *im_end);
  auto ids = tok.encode("hi<|im_end|>there");
  CHECK(std::count(ids.begin(), ids.end(), *im_end) == 1);
  CHECK(tok.decode(ids, /*skip_special=*/true) == "hithere");
  CHECK(tok.decode(ids) == "hi<|im_end|>there");
  CHECK(tok.id_to_token(*im_end) == "<|im_end|>");
  CHECK(tok.id_to_token(-5).empty());
}

TEST_CASE("byte-level alphabet round-trips every byte", "[unit]") {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  std::string spelled = retort::unicode::bytes_to_byte_level(all);
  std::string back;
  REQUIRE(retort::unicode::byte_level_to_bytes(spelled, back));
  CHECK(back == all);
  CHECK(retort::unicode::bytes_to_byte_level(" hello") == "\xC4\xA0hello");  // "Ġhello"
}

TEST_CASE("pre-tokenizer split behaviors follow the library's semantics", "[unit]") {
  using retort::tokenizer::Pieces;
  auto run = [](const std::string& behavior, const std::string& text) {
    nlohmann::json j = {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", false}};
    auto pre = retort::tokenizer::make_pre_tokenizer(j, "test");
    Pieces p;
    p.items.push_back(text);
    pre->split(p);
    std::vector<std::string> out(p.items.begin(), p.items.end());
    return out;
  };
  using V = std::vector<std::string>;
  CHECK(run("Isolated", "a-b--c") == V{"a", "-", "b", "-", "-", "c"});
  CHECK(run("Removed", "a-b--c") == V{"a", "b", "c"});
  CHECK(run("MergedWithPrevious", "a-b--c") == V{"a-", "b-", "-", "c"});
  CHECK(run("MergedWithNext", "a-b--c") == V{"a", "-b", "-", "-c"});
  CHECK(run("Contiguous", "a-b--c") == V{"a", "-", "b", "--", "c"});
}

TEST_CASE("malformed or unsupported tokenizer files are refused with the file and field", "[unit]") {
  auto error_of = [](const nlohmann::json& doc) {
    try {
      Tokenizer::from_json(doc, "bad.tokenizer.json");
    } catch (const retort::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  nlohmann::json base = {{"model", {{"type", "BPE"}, {"vocab", nlohmann::json::object()}, {"merges", nlohmann::json::array()}}},
                         {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
                         {"decoder", {{"type", "ByteLevel"}}}};
  // Without the 256 byte tokens.
  CHECK(error_of(base).find("lacks a byte") != std::string::npos);
  for (int b = 0; b < 256; ++b) base["model"]["vocab"][retort::unicode::bytes_to_byte_level(std::string(1, char(b)))] = b;
  CHECK(error_of(base).empty());
  auto doc = base;
  doc["model"]["type"] = "WordPiece";
  CHECK(error_of(doc).find("model.type") != std::string::npos);
  doc = base;
  doc.erase("model");
  CHECK(error_of(doc).find("missing field 'model'") != std::string::npos);
  doc = base;
  doc["pre_tokenizer"] = {{"type", "Metaspace"}};
  CHECK(error_of(doc).find("Metaspace") != std::string::npos);
  doc = base;
  doc["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  CHECK(error_of(doc).find("does not compile") != std::string::npos);
  doc["pre_tokenizer"] = base["pre_tokenizer"];
  doc["model"]["merges"] = {"a"};
  CHECK(error_of(doc).find("model.merges[0]") != std::string::npos);
  doc["model"]["merges"] = {"a q"};
  CHECK(error_of(doc).find("not in the vocabulary") != std::string::npos);
  CHECK_THROWS_AS(Tokenizer::from_file("/nonexistent/tokenizer.json"), retort::Error);
}
