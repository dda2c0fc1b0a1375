// `retort tokenize` and `retort tokenizer train`.
#include <iostream>  // defines: std::cin, std::cout

#include "cli/commands.h"
#include "common/config.h"
#include "common/log.h"
#include "tokenizer/text_io.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"

namespace retort::cli {

void register_tokenizer_commands(CLI::App& app) {
  // ---- retort tokenize
  CLI::App* tokenize = app.add_subcommand(
      "tokenize", "stdin: {\"text\": ...} per line; stdout: {\"ids\": [...]} per line (no special tokens added)");
  auto tokenizer_path = std::make_shared<std::string>();
  tokenize->add_option("--tokenizer", *tokenizer_path, "a Hugging Face tokenizer.json")->required();
  tokenize->callback([tokenizer_path] {
    Tokenizer tok = Tokenizer::from_file(*tokenizer_path);
    std::ios::sync_with_stdio(false);
    tokenize_jsonl(tok, std::cin, std::cout, "stdin");
  });

  // ---- retort tokenizer train
  CLI::App* group = app.add_subcommand("tokenizer", "tokenizer tools");
  group->require_subcommand(1);
  CLI::App* train = group->add_subcommand("train", "train a byte-level BPE tokenizer.json on text or JSONL files");
  struct TrainArgs {
    std::vector<std::string> inputs;
    std::string out = "tokenizer.json";
    std::string config;
    int vocab_size = 0;
  };
  auto args = std::make_shared<TrainArgs>();
  train->add_option("--input", args->inputs, "text file (one text per line) or JSONL (text/prompt/completion/... fields)")
      ->required();
  train->add_option("--out", args->out, "where to write tokenizer.json")->capture_default_str();
  train->add_option("--vocab-size", args->vocab_size, "model vocabulary size (overrides the config)");
  train->add_option("--config", args->config, "JSON file with trainer options (vocab_size, min_frequency, special_tokens, ...)");
  train->callback([args] {
    BpeTrainerOptions opt;
    if (!args->config.empty()) opt = parse_config<BpeTrainerOptions>(load_json_file(args->config), args->config);
    if (args->vocab_size > 0) opt.vocab_size = args->vocab_size;
    std::vector<std::string> texts;
    for (const auto& path : args->inputs) {
      auto t = read_training_texts(path);
      texts.insert(texts.end(), t.begin(), t.end());
    }
    BpeTrainerStats stats;
    nlohmann::json doc = train_bpe(texts, opt, &stats);
    write_json_file_atomic(args->out, doc, 2);
    log_info("trained " + std::to_string(stats.merges) + " merges on " + std::to_string(stats.texts) + " texts (" +
             std::to_string(stats.bytes) + " bytes, " + std::to_string(stats.unique_pieces) + " distinct pieces) -> " +
             args->out);
  });
}

}  // namespace retort::cli
