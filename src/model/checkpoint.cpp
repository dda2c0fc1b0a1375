// Checkpoint I/O (see checkpoint.h): safetensors <-> torch tensors, model folders.
#include "model/checkpoint.h"

#include <cstdio>      // defines: std::snprintf
#include <cstring>     // defines: std::memcpy
#include <filesystem>  // defines: std::filesystem
#include <set>         // defines: std::set

#include "common/config.h"      // defines: load_json_file, write_json_file_atomic
#include "common/error.h"       // defines: retort::Error
#include "model/safetensors.h"  // defines: SafetensorsFile, write_safetensors

namespace retort {

namespace fs = std::filesystem;

namespace {

torch::Dtype to_torch(StDtype d) {
  switch (d) {
    case StDtype::F32: return torch::kFloat;
    case StDtype::BF16: return torch::kBFloat16;
    case StDtype::F16: return torch::kHalf;
  }
  return torch::kFloat;
}

StDtype to_st(torch::Dtype d, const std::string& name) {
  if (d == torch::kFloat) return StDtype::F32;
  if (d == torch::kBFloat16) return StDtype::BF16;
  if (d == torch::kHalf) return StDtype::F16;
  throw Error(ErrorInfo{"tensor '" + name + "' has a dtype safetensors checkpoints here do not hold",
                        "safetensors writer", "float32, bfloat16 or float16", std::string(c10::toString(d)), ""});
}

std::map<std::string, torch::Tensor> tensors_of(const SafetensorsFile& f) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& info : f.tensors()) {
    auto t = torch::empty(info.shape, torch::TensorOptions().dtype(to_torch(info.dtype)));
    // One copy out of the mapping (the host is little-endian, like the format).
    if (info.end > info.begin) std::memcpy(t.data_ptr(), f.data(info), info.end - info.begin);
    out.emplace(info.name, std::move(t));
  }
  return out;
}

}  // namespace

torch::Dtype dtype_from_name(const std::string& name, const std::string& where) {
  if (name == "float32") return torch::kFloat;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kHalf;
  throw Error(ErrorInfo{"unsupported dtype '" + name + "'", where, "float32, bfloat16 or float16", name, ""});
}

std::string dtype_name(torch::Dtype d) {
  if (d == torch::kBFloat16) return "bfloat16";
  if (d == torch::kHalf) return "float16";
  return "float32";
}

std::map<std::string, torch::Tensor> read_safetensors(const std::string& path) {
  return tensors_of(SafetensorsFile::open(path));
}

void write_safetensors_tensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;  // contiguous CPU copies, alive until written
  std::vector<StTensorView> views;
  for (const auto& [name, t] : tensors) {
    auto c = t.detach().to(torch::kCPU).contiguous();
    keep.push_back(c);
    views.push_back(StTensorView{name, to_st(c.scalar_type(), name), c.sizes().vec(), c.data_ptr(),
                                 static_cast<size_t>(c.numel()) * c.element_size()});
  }
  write_safetensors(path, views, metadata);
}

std::map<std::string, torch::Tensor> read_checkpoint_tensors(const std::string& dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) return read_safetensors(single.string());
  if (!fs::exists(index)) {
    throw Error(ErrorInfo{"no weights in the model folder", dir, "model.safetensors or model.safetensors.index.json",
                          "neither", "retort reads safetensors checkpoints (convert .bin files with transformers)"});
  }
  const std::string where = index.string();
  auto doc = load_json_file(where);
  if (!doc.is_object() || !doc.contains("weight_map") || !doc["weight_map"].is_object()) {
    throw Error(ErrorInfo{"the shard index lacks a weight_map object", where, "{\"weight_map\": {...}}", "", ""});
  }
  std::map<std::string, std::string> weight_map;  // tensor -> shard file
  std::set<std::string> shards;
  for (auto it = doc["weight_map"].begin(); it != doc["weight_map"].end(); ++it) {
    if (!it.value().is_string()) {
      throw Error(ErrorInfo{"weight_map entry '" + it.key() + "' is not a file name", where, "a string", "", ""});
    }
    std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..") {
      throw Error(ErrorInfo{"weight_map names a shard outside the model folder", where, "a plain file name",
                            quote_for_error(shard), ""});
    }
    weight_map[it.key()] = shard;
    shards.insert(shard);
  }
  std::map<std::string, torch::Tensor> out;
  for (const auto& shard : shards) {
    const std::string path = (fs::path(dir) / shard).string();
    auto part = read_safetensors(path);
    for (auto& [name, t] : part) {
      auto w = weight_map.find(name);
      if (w == weight_map.end() || w->second != shard) {
        throw Error(ErrorInfo{"shard holds tensor '" + name + "' that the index places elsewhere", path,
                              w == weight_map.end() ? "no such tensor in the index" : w->second, shard, ""});
      }
      out[name] = std::move(t);
    }
  }
  for (const auto& [name, shard] : weight_map) {
    if (!out.count(name)) {
      throw Error(ErrorInfo{"the index lists tensor '" + name + "' that its shard lacks", where, shard, "absent", ""});
    }
  }
  return out;
}

Qwen2ForCausalLM load_model(const std::string& dir, const LoadOptions& opts) {
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(cfg_path)) {
    throw Error(ErrorInfo{"the model folder has no config.json", dir, "a Hugging Face model folder", "", ""});
  }
  ModelConfig cfg = ModelConfig::from_file(cfg_path);
  torch::Device device(opts.device);
  torch::Dtype dtype = opts.dtype == "auto" ? (device.is_cuda() ? torch::kBFloat16 : torch::kFloat)
                                            : dtype_from_name(opts.dtype, "load_model dtype");
  Qwen2ForCausalLM model(cfg);
  model->to(device, dtype);
  model->load_hf_state_dict(read_checkpoint_tensors(dir), dir);
  model->eval();
  return model;
}

void save_model(Qwen2ForCausalLMImpl& model, const std::string& dir, const SaveOptions& opts) {
  fs::create_directories(dir);
  torch::Dtype dtype = opts.dtype == "auto" ? model.dtype() : dtype_from_name(opts.dtype, "save_model dtype");
  ModelConfig cfg = model.config();
  cfg.torch_dtype = dtype_name(dtype);
  write_json_file_atomic((fs::path(dir) / "config.json").string(), cfg.to_json());

  std::map<std::string, torch::Tensor> tensors;
  for (auto& [name, t] : model.hf_state_dict()) tensors[name] = t.to(torch::kCPU, dtype).contiguous();
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  if (opts.max_shard_bytes <= 0) {
    write_safetensors_tensors((fs::path(dir) / "model.safetensors").string(), tensors);
    fs::remove(index_path);  // a stale index would shadow nothing, but would mislead
  } else {
    // Greedy sharding in name order, as transformers' save_pretrained does.
    std::vector<std::map<std::string, torch::Tensor>> parts(1);
    int64_t in_part = 0, total = 0;
    for (auto& [name, t] : tensors) {
      int64_t bytes = t.numel() * t.element_size();
      if (in_part > 0 && in_part + bytes > opts.max_shard_bytes) {
        parts.emplace_back();
        in_part = 0;
      }
      parts.back()[name] = t;
      in_part += bytes;
      total += bytes;
    }
    nlohmann::json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = nlohmann::json::object();
    char buf[64];
    for (size_t i = 0; i < parts.size(); ++i) {
      std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", i + 1, parts.size());
      write_safetensors_tensors((fs::path(dir) / buf).string(), parts[i]);
      for (auto& kv : parts[i]) index["weight_map"][kv.first] = buf;
    }
    write_json_file_atomic(index_path.string(), index);
    fs::remove(fs::path(dir) / "model.safetensors");  // it would take precedence over the index
  }

  nlohmann::json gen = opts.generation_config;
  if (gen.is_null()) {
    gen = nlohmann::json::object();
    if (cfg.bos_token_id >= 0) gen["bos_token_id"] = cfg.bos_token_id;
    if (cfg.eos_token_ids.size() == 1) gen["eos_token_id"] = cfg.eos_token_ids[0];
    else if (!cfg.eos_token_ids.empty()) gen["eos_token_id"] = cfg.eos_token_ids;
    gen["do_sample"] = true;
    gen["transformers_version"] = "4.44.0";
  }
  write_json_file_atomic((fs::path(dir) / "generation_config.json").string(), gen);

  if (!opts.tokenizer_dir.empty() && fs::absolute(opts.tokenizer_dir) != fs::absolute(dir)) {
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                          "merges.txt", "added_tokens.json"}) {
      fs::path src = fs::path(opts.tokenizer_dir) / f;
      if (fs::exists(src)) fs::copy_file(src, fs::path(dir) / f, fs::copy_options::overwrite_existing);
    }
  }
}

void save_final_model(Qwen2ForCausalLMImpl& model, const std::string& dir, const SaveOptions& opts,
                      const std::string& tokenizer_file) {
  const std::string tmp = dir + ".tmp";
  fs::remove_all(tmp);
  save_model(model, tmp, opts);
  if (!tokenizer_file.empty() && !fs::exists(fs::path(tmp) / "tokenizer.json"))
    fs::copy_file(tokenizer_file, fs::path(tmp) / "tokenizer.json");
  fs::remove_all(dir);
  fs::rename(tmp, dir);
}

}  // namespace retort
