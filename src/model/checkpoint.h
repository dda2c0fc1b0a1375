// Checkpoints: safetensors files as Torch tensors, and whole Hugging Face model folders.
//
// A model folder (DESIGN.md section 5): config.json (ModelConfig::to_json), model.safetensors
// or shards listed in model.safetensors.index.json (Hugging Face tensor names, metadata
// {"format": "pt"}), generation_config.json, and the tokenizer files copied from where the
// model came from. A folder written by transformers loads here, and one written here loads
// in transformers unchanged.
#pragma once

#include <map>     // defines: std::map
#include <string>  // defines: std::string

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "common/torch_pch.h"    // defines: torch::Tensor
#include "model/transformer.h"  // defines: Qwen2ForCausalLM

namespace retort {

// Every tensor of a safetensors file, copied out of the mapping, in its stored dtype, on CPU.
std::map<std::string, torch::Tensor> read_safetensors(const std::string& path);
// Writes CPU copies of `tensors` (F32, BF16 or F16 only), atomically. Metadata defaults to
// what transformers expects ({"format": "pt"}).
void write_safetensors_tensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                               const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
// Every tensor of a model folder: model.safetensors, or the shards that
// model.safetensors.index.json names (shard names must be plain files in `dir`; every
// tensor must be where the index says, and each shard must hold only indexed tensors).
std::map<std::string, torch::Tensor> read_checkpoint_tensors(const std::string& dir);

// "float32" | "bfloat16" | "float16" <-> torch dtype; anything else throws naming `where`.
torch::Dtype dtype_from_name(const std::string& name, const std::string& where);
std::string dtype_name(torch::Dtype dtype);

struct LoadOptions {
  std::string device = "cpu";  // "cpu" | "cuda" | "cuda:N"
  std::string dtype = "auto";  // "auto" = float32 on CPU, bfloat16 on CUDA; or float32 | bfloat16 | float16
};

// config.json + weights of `dir` -> a model on the requested device and dtype, in eval mode.
Qwen2ForCausalLM load_model(const std::string& dir, const LoadOptions& opts = {});

struct SaveOptions {
  std::string dtype = "auto";     // stored dtype: "auto" = the model's; or float32 | bfloat16 | float16
  int64_t max_shard_bytes = 0;    // > 0: split into model-0000i-of-0000n.safetensors + index; 0: one file
  std::string tokenizer_dir;      // copy the tokenizer files found there (tokenizer.json, ...); "" = none
  nlohmann::json generation_config;  // written as generation_config.json; null = derived from the config
};

// Writes the model folder `dir` (created when missing; files replaced atomically).
void save_model(Qwen2ForCausalLMImpl& model, const std::string& dir, const SaveOptions& opts = {});

// A training run's final model: written to DIR.tmp, completed with `tokenizer_file` as
// tokenizer.json when the folder has none (a tokenizer read from another file name must still
// load), then put in place of `dir` with one rename, so that `dir` is always a whole model.
void save_final_model(Qwen2ForCausalLMImpl& model, const std::string& dir, const SaveOptions& opts,
                      const std::string& tokenizer_file = "");

}  // namespace retort
