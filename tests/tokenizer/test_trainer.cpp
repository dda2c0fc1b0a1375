// BPE trainer: deterministic output that the Rust library encodes identically (reference
// ids of the committed trained tokenizer), sensible merges, option errors.
#include <catch2/catch.hpp>

#include "common/config.h"
#include "common/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"
#include "tokenizer_fixtures.h"

using retort::test::read_jsonl;
using retort::test::source_path;

namespace {
std::vector<std::string> corpus_texts() {
  std::vector<std::string> texts;
  for (const auto& j : read_jsonl(source_path("tests/fixtures/tokenizer/corpus.jsonl"))) texts.push_back(j["text"]);
  return texts;
}
}  // namespace

TEST_CASE("trained tokenizer is deterministic and matches the committed file", "[unit]") {
  retort::BpeTrainerOptions opt;
  opt.vocab_size = 600;
  retort::BpeTrainerStats stats;
  nlohmann::json doc = retort::train_bpe(corpus_texts(), opt, &stats);
  CHECK(stats.texts >= 500);
  CHECK(stats.merges == 600 - 256);
  CHECK(doc["model"]["vocab"].size() == 600u);
  nlohmann::json committed = retort::load_json_file(source_path("tests/fixtures/tokenizer/trained.tokenizer.json"));
  CHECK(doc["model"]["merges"] == committed["model"]["merges"]);
  CHECK(doc["model"]["vocab"] == committed["model"]["vocab"]);
  CHECK(doc["added_tokens"] == committed["added_tokens"]);
}

TEST_CASE("trained tokenizer encodes the corpus exactly as Hugging Face tokenizers does", "[unit]") {
  auto tok = retort::Tokenizer::from_file(source_path("tests/fixtures/tokenizer/trained.tokenizer.json"));
  auto corpus = corpus_texts();
  auto expected = read_jsonl(source_path("tests/fixtures/tokenizer/trained.ids.jsonl"));
  REQUIRE(expected.size() == corpus.size());
  int mismatches = 0;
  size_t total_ids = 0, total_bytes = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    auto ids = tok.encode(corpus[i]);
    total_ids += ids.size();
    total_bytes += corpus[i].size();
    if (ids != expected[i]["ids"].get<std::vector<int32_t>>()) ++mismatches;
    CHECK(tok.decode(ids) == tok.normalize(corpus[i]));
  }
  CHECK(mismatches == 0);
  // Training must compress: fewer ids than bytes by a clear margin.
  CHECK(total_ids * 10 < total_bytes * 8);
  // Special tokens come after the model vocabulary and are matched in text.
  auto think = tok.token_to_id("<think>");
  REQUIRE(think.has_value());
  CHECK(*think >= 600);
  CHECK(tok.encode("<think>")[0] == *think);
}

TEST_CASE("trainer refuses a vocabulary smaller than the byte alphabet", "[unit]") {
  retort::BpeTrainerOptions opt;
  opt.vocab_size = 100;
  CHECK_THROWS_AS(retort::train_bpe({"abc"}, opt), retort::Error);
  nlohmann::json bad = {{"vocab_size", 500}, {"normaliser", "NFC"}};
  CHECK_THROWS_WITH(retort::parse_config<retort::BpeTrainerOptions>(bad, "train.json"),
                    Catch::Contains("did you mean 'normalizer'"));
}
