// ModelConfig from / to a Hugging Face config.json (see config.h for what is refused).
#include "model/config.h"

#include <cstdio>  // defines: std::snprintf
#include <set>     // defines: std::set

#include "common/config.h"  // defines: load_json_file
#include "common/error.h"   // defines: retort::Error
#include "common/platform.h"  // defines: check_fits_in_memory

namespace retort {

namespace {

using json = nlohmann::json;

// ---- typed reads with errors naming the key --------------------------------------------

[[noreturn]] void bad_value(const std::string& where, const std::string& key, const std::string& expected,
                            const json& got, const std::string& hint = "") {
  throw Error(ErrorInfo{"config.json key '" + key + "' has an unsupported value", where, expected,
                        quote_for_error(got.dump()), hint});
}

int64_t get_int(const json& doc, const std::string& where, const char* key, bool required, int64_t fallback) {
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) {
    if (required) {
      throw Error(ErrorInfo{std::string("config.json lacks the key '") + key + "'", where, "an integer", "nothing",
                            "a Hugging Face config.json of a Qwen2 or Llama model has it"});
    }
    return fallback;
  }
  if (!it->is_number_integer() && !it->is_number_unsigned()) bad_value(where, key, "an integer", *it);
  int64_t v = it->get<int64_t>();
  if (v < 0) bad_value(where, key, "a non-negative integer", *it);
  return v;
}

double get_double(const json& doc, const std::string& where, const char* key, double fallback) {
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) return fallback;
  if (!it->is_number()) bad_value(where, key, "a number", *it);
  return it->get<double>();
}

bool get_bool(const json& doc, const std::string& where, const char* key, bool fallback) {
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) bad_value(where, key, "true or false", *it);
  return it->get<bool>();
}

// Keys that carry no information for the forward pass (bookkeeping of transformers).
const std::set<std::string>& ignored_keys() {
  static const std::set<std::string> k = {"transformers_version", "_name_or_path", "initializer_range",
                                          "use_cache", "pad_token_id", "max_window_layers", "sliding_window",
                                          "bos_token_id", "eos_token_id", "torch_dtype", "dtype",
                                          "_attn_implementation_autoset"};
  return k;
}

const std::set<std::string>& model_keys() {
  static const std::set<std::string> k = {
      "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
      "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings",
      "rms_norm_eps", "tie_word_embeddings", "rope_theta", "rope_scaling", "use_sliding_window",
      "attention_dropout", "attention_bias", "mlp_bias", "pretraining_tp", "layer_types"};
  return k;
}

}  // namespace

int64_t ModelConfig::num_parameters() const {
  int64_t C = hidden_size;
  int64_t attn = C * (q_size() + 2 * kv_size()) + q_size() * C;
  if (qkv_bias) attn += q_size() + 2 * kv_size();
  if (o_bias) attn += C;
  int64_t mlp = 3 * C * intermediate_size;
  int64_t layer = attn + mlp + 2 * C;
  int64_t emb = vocab_size * C;
  return emb + num_hidden_layers * layer + C + (tie_word_embeddings ? 0 : emb);
}

void ModelConfig::validate(const std::string& where) const {
  auto positive = [&](const char* key, int64_t v) {
    if (v <= 0) bad_value(where, key, "a positive integer", json(v));
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("head_dim", head_dim);
  if (num_attention_heads % num_key_value_heads != 0) {
    throw Error(ErrorInfo{"num_attention_heads must be a multiple of num_key_value_heads (grouped-query attention)",
                          where, "a multiple of " + std::to_string(num_key_value_heads),
                          std::to_string(num_attention_heads), ""});
  }
  if (head_dim % 2 != 0) bad_value(where, "head_dim", "an even number (rotary embedding pairs)", json(head_dim));
  if (!(rms_norm_eps > 0)) bad_value(where, "rms_norm_eps", "a positive number", json(rms_norm_eps));
  if (!(rope_theta > 0)) bad_value(where, "rope_theta", "a positive number", json(rope_theta));
  // The weights alone, at 2 bytes a parameter (the smallest dtype any load uses), must fit:
  // counted in double, since the int64 count of an absurd config overflows.
  const double C = static_cast<double>(hidden_size), q = static_cast<double>(num_attention_heads) * head_dim,
               kv = static_cast<double>(num_key_value_heads) * head_dim;
  const double params = static_cast<double>(vocab_size) * C * (tie_word_embeddings ? 1 : 2) +
                        static_cast<double>(num_hidden_layers) * (C * (q + 2 * kv) + q * C + 3 * C * static_cast<double>(intermediate_size) + 2 * C);
  char count[32];
  std::snprintf(count, sizeof count, "%.3g", params);
  check_fits_in_memory(2.0 * params, std::string("the model's weights (") + count + " parameters)", where,
                       "check hidden_size, intermediate_size, num_hidden_layers and vocab_size");
}

ModelConfig ModelConfig::from_json(const json& doc, const std::string& where) {
  if (!doc.is_object()) {
    throw Error(ErrorInfo{"config.json must be a JSON object", where, "an object", doc.type_name(), ""});
  }
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (!model_keys().count(it.key()) && !ignored_keys().count(it.key())) {
      throw Error(ErrorInfo{"config.json key '" + it.key() + "' is not supported by this implementation", where,
                            "the keys of a Qwen2 or Llama config", it.key(),
                            "retort refuses keys it would not honour; remove it if it has no effect on the model"});
    }
  }
  ModelConfig c;
  // Architecture: model_type decides; "architectures", when present, must agree.
  auto mt = doc.find("model_type");
  if (mt == doc.end() || !mt->is_string()) {
    throw Error(ErrorInfo{"config.json lacks a string 'model_type'", where, "\"qwen2\" or \"llama\"",
                          mt == doc.end() ? "nothing" : quote_for_error(mt->dump()), ""});
  }
  c.model_type = mt->get<std::string>();
  if (c.model_type == "qwen2") {
    c.architecture = "Qwen2ForCausalLM";
  } else if (c.model_type == "llama") {
    c.architecture = "LlamaForCausalLM";
  } else {
    throw Error(ErrorInfo{"unsupported model_type '" + c.model_type + "'", where, "\"qwen2\" or \"llama\"",
                          c.model_type, "retort implements the Qwen2 family (Qwen2.5, R1-Distill-Qwen/Llama)"});
  }
  if (auto a = doc.find("architectures"); a != doc.end() && !a->is_null()) {
    if (!a->is_array() || a->size() != 1 || !(*a)[0].is_string() || (*a)[0].get<std::string>() != c.architecture) {
      bad_value(where, "architectures", "[\"" + c.architecture + "\"] for model_type " + c.model_type, *a);
    }
  }
  c.vocab_size = get_int(doc, where, "vocab_size", true, 0);
  c.hidden_size = get_int(doc, where, "hidden_size", true, 0);
  c.intermediate_size = get_int(doc, where, "intermediate_size", true, 0);
  c.num_hidden_layers = get_int(doc, where, "num_hidden_layers", true, 0);
  c.num_attention_heads = get_int(doc, where, "num_attention_heads", true, 0);
  c.num_key_value_heads = get_int(doc, where, "num_key_value_heads", false, c.num_attention_heads);
  c.head_dim = c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
  c.head_dim = get_int(doc, where, "head_dim", false, c.head_dim);
  c.rope_theta = get_double(doc, where, "rope_theta", 10000.0);
  c.rms_norm_eps = get_double(doc, where, "rms_norm_eps", 1e-6);
  c.max_position_embeddings = get_int(doc, where, "max_position_embeddings", false, 2048);
  c.tie_word_embeddings = get_bool(doc, where, "tie_word_embeddings", false);

  if (auto h = doc.find("hidden_act"); h != doc.end() && !(h->is_string() && h->get<std::string>() == "silu")) {
    bad_value(where, "hidden_act", "\"silu\" (SwiGLU)", *h);
  }
  if (get_bool(doc, where, "use_sliding_window", false)) {
    bad_value(where, "use_sliding_window", "false (sliding-window attention is not implemented)", json(true));
  }
  if (get_double(doc, where, "attention_dropout", 0.0) != 0.0) {
    bad_value(where, "attention_dropout", "0 (attention dropout is not implemented)", doc["attention_dropout"]);
  }
  if (get_bool(doc, where, "mlp_bias", false)) bad_value(where, "mlp_bias", "false", json(true));
  if (get_int(doc, where, "pretraining_tp", false, 1) != 1) bad_value(where, "pretraining_tp", "1", doc["pretraining_tp"]);
  if (auto lt = doc.find("layer_types"); lt != doc.end() && !lt->is_null()) {
    if (!lt->is_array()) bad_value(where, "layer_types", "a list of \"full_attention\"", *lt);
    for (const auto& t : *lt) {
      if (!t.is_string() || t.get<std::string>() != "full_attention") {
        bad_value(where, "layer_types", "only \"full_attention\" layers (sliding windows are not implemented)", t);
      }
    }
  }
  if (c.model_type == "qwen2") {
    if (doc.contains("attention_bias")) {
      bad_value(where, "attention_bias", "no such key for qwen2 (q/k/v always carry a bias)", doc["attention_bias"]);
    }
    c.qkv_bias = true;
    c.o_bias = false;
  } else {
    bool b = get_bool(doc, where, "attention_bias", false);
    c.qkv_bias = b;
    c.o_bias = b;
  }
  if (auto rs = doc.find("rope_scaling"); rs != doc.end() && !rs->is_null()) {
    if (!rs->is_object()) bad_value(where, "rope_scaling", "null or an object", *rs);
    std::string type;
    if (rs->contains("rope_type") && (*rs)["rope_type"].is_string()) type = (*rs)["rope_type"].get<std::string>();
    else if (rs->contains("type") && (*rs)["type"].is_string()) type = (*rs)["type"].get<std::string>();
    for (auto it = rs->begin(); it != rs->end(); ++it) {
      static const std::set<std::string> known = {"rope_type", "type", "factor", "low_freq_factor",
                                                  "high_freq_factor", "original_max_position_embeddings"};
      if (!known.count(it.key())) bad_value(where, "rope_scaling." + it.key(), "a key of linear or llama3 scaling", it.value());
    }
    if (type != "linear" && type != "llama3" && type != "default") {
      bad_value(where, "rope_scaling", "type \"linear\" or \"llama3\" (others are not implemented)", *rs);
    }
    if (type != "default") {
      c.rope_scaling.type = type;
      c.rope_scaling.factor = get_double(*rs, where, "factor", 1.0);
      c.rope_scaling.low_freq_factor = get_double(*rs, where, "low_freq_factor", 1.0);
      c.rope_scaling.high_freq_factor = get_double(*rs, where, "high_freq_factor", 4.0);
      c.rope_scaling.original_max_position_embeddings =
          get_int(*rs, where, "original_max_position_embeddings", false, 8192);
      if (!(c.rope_scaling.factor > 0)) bad_value(where, "rope_scaling.factor", "a positive number", (*rs)["factor"]);
    }
  }
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (auto d = doc.find(key); d != doc.end() && !d->is_null()) {
      if (!d->is_string()) bad_value(where, key, "a dtype name", *d);
      c.torch_dtype = d->get<std::string>();
    }
  }
  if (auto e = doc.find("eos_token_id"); e != doc.end() && !e->is_null()) {
    if (e->is_number_integer()) c.eos_token_ids.push_back(e->get<int64_t>());
    else if (e->is_array()) {
      for (const auto& x : *e) {
        if (!x.is_number_integer()) bad_value(where, "eos_token_id", "an integer or a list of integers", *e);
        c.eos_token_ids.push_back(x.get<int64_t>());
      }
    } else {
      bad_value(where, "eos_token_id", "an integer or a list of integers", *e);
    }
  }
  if (auto b = doc.find("bos_token_id"); b != doc.end() && b->is_number_integer()) c.bos_token_id = b->get<int64_t>();
  c.validate(where);
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) { return from_json(load_json_file(path), path); }

json ModelConfig::to_json() const {
  json j;
  j["architectures"] = json::array({architecture});
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["hidden_act"] = hidden_act;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["torch_dtype"] = torch_dtype;
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  j["attention_dropout"] = 0.0;
  if (model_type == "qwen2") {
    j["use_sliding_window"] = false;
    j["sliding_window"] = max_position_embeddings;
    j["max_window_layers"] = num_hidden_layers;
  } else {
    j["attention_bias"] = qkv_bias;
    j["mlp_bias"] = false;
    j["pretraining_tp"] = 1;
  }
  if (rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else {
    json rs;
    rs["rope_type"] = rope_scaling.type;
    rs["factor"] = rope_scaling.factor;
    if (rope_scaling.type == "llama3") {
      rs["low_freq_factor"] = rope_scaling.low_freq_factor;
      rs["high_freq_factor"] = rope_scaling.high_freq_factor;
      rs["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = rs;
  }
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  else if (!eos_token_ids.empty()) j["eos_token_id"] = eos_token_ids;
  j["transformers_version"] = "4.44.0";
  return j;
}

}  // namespace retort
