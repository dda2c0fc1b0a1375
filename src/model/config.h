// ModelConfig — the architecture of a Qwen2-family decoder, read from and written to a
// Hugging Face `config.json`.
//
// Two architectures: "Qwen2ForCausalLM" (model_type "qwen2": q/k/v projections with bias,
// o without; Qwen2.5, DeepSeek-R1-Distill-Qwen) and "LlamaForCausalLM" (model_type "llama":
// no bias unless attention_bias; R1-Distill-Llama, with its "llama3" RoPE scaling).
// Anything this implementation would compute differently (sliding-window attention, other
// activations, other RoPE scalings, quantisation) is refused with an error naming the key,
// never silently ignored. This file is deliberately free of Torch.
#pragma once

#include <cstdint>  // defines: int64_t
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort {

// RoPE frequency scaling ("rope_scaling" in config.json). type "" = none.
struct RopeScaling {
  std::string type;                           // "", "linear" or "llama3"
  double factor = 1.0;                        // linear and llama3
  double low_freq_factor = 1.0;               // llama3
  double high_freq_factor = 4.0;              // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelConfig {
  std::string architecture = "Qwen2ForCausalLM";  // or "LlamaForCausalLM"
  std::string model_type = "qwen2";               // or "llama"
  int64_t vocab_size = 0;                         // V
  int64_t hidden_size = 0;                        // C
  int64_t intermediate_size = 0;                  // I (SwiGLU inner width)
  int64_t num_hidden_layers = 0;                  // number of decoder layers
  int64_t num_attention_heads = 0;                // H
  int64_t num_key_value_heads = 0;                // Hkv (GQA: H % Hkv == 0)
  int64_t head_dim = 0;                           // D; hidden_size / H unless config.json says otherwise
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;  // lm_head shares model.embed_tokens.weight
  bool qkv_bias = true;              // Qwen2: always; Llama: attention_bias
  bool o_bias = false;               // Llama with attention_bias only
  RopeScaling rope_scaling;
  std::string hidden_act = "silu";
  std::string torch_dtype = "float32";  // the dtype of the stored weights ("float32", "bfloat16", "float16")
  std::vector<int64_t> eos_token_ids;    // from config.json "eos_token_id" (int or list)
  int64_t bos_token_id = -1;             // -1: none

  // Derived sizes.
  int64_t q_size() const { return num_attention_heads * head_dim; }    // H*D
  int64_t kv_size() const { return num_key_value_heads * head_dim; }   // Hkv*D
  int64_t num_parameters() const;

  // Throws retort::Error when the sizes are inconsistent; `where` names the source.
  void validate(const std::string& where) const;

  // Parses a Hugging Face config.json document; unknown architectures and unsupported
  // keys are refused. `where` names the file in errors.
  static ModelConfig from_json(const nlohmann::json& doc, const std::string& where);
  static ModelConfig from_file(const std::string& path);
  // The Hugging Face config.json document for this config (keys of its model_type).
  nlohmann::json to_json() const;
};

}  // namespace retort
