// The tiny Qwen2 that the training tests train from random weights (2 layers, width 32, GQA
// 4/2 heads), sized for the committed test tokenizer (tests/fixtures/tokenizer, 608 ids).
#pragma once

#include <string>  // defines: std::string

#include <nlohmann/json.hpp>  // defines: nlohmann::json
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

// A config.json for ModelConfig (the "model_config" key of the sft, grpo and eval configs).
inline nlohmann::json tiny_model_config() {
  return nlohmann::json{{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"}, {"vocab_size", 608},
                        {"hidden_size", 32}, {"intermediate_size", 64}, {"num_hidden_layers", 2},
                        {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"max_position_embeddings", 256},
                        {"rope_theta", 10000.0}, {"rms_norm_eps", 1e-6}, {"tie_word_embeddings", true}};
}

// The byte-level BPE tokenizer trained on the test traces (committed).
inline std::string tiny_tokenizer_path() { return std::string(RETORT_SOURCE_DIR) + "/tests/fixtures/tokenizer/trained.tokenizer.json"; }
