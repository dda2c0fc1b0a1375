// Byte-level BPE training: writes a tokenizer.json that Hugging Face tokenizers loads and
// encodes identically (NFC normalizer, the Qwen2 split pattern, ByteLevel, BPE).
#pragma once

#include <cstdint>  // defines: int64_t
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort {

class ConfigBinder;

struct BpeTrainerOptions {
  int vocab_size = 1024;       // model vocabulary (256 byte tokens + merges), special tokens come on top
  int64_t min_frequency = 2;   // a pair seen fewer times is never merged
  std::vector<std::string> special_tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"};
  std::string split_pattern;   // empty = the Qwen2 pattern
  std::string normalizer = "NFC";  // NFC | none
  void bind(ConfigBinder& b);
};

struct BpeTrainerStats {
  int64_t texts = 0, bytes = 0, unique_pieces = 0, merges = 0;
};

// Trains on `texts`; returns the tokenizer.json document.
nlohmann::json train_bpe(const std::vector<std::string>& texts, const BpeTrainerOptions& options,
                         BpeTrainerStats* stats = nullptr);

}  // namespace retort
