// Model tests: config.json parsing, safetensors (round trips, truncated and hostile files),
// model folders (sharded, Hugging Face names), numerics against the independent Python
// reference (tests/fixtures/model, written by scripts/fixtures/model/make_fixtures.py),
// KV-cache and padding invariance, gradients.
#include <catch2/catch.hpp>

#include <unistd.h>  // defines: getpid

#include <cstdio>      // defines: std::remove
#include <functional>  // defines: std::function
#include <filesystem>  // defines: std::filesystem
#include <fstream>     // defines: std::ofstream

#include "common/config.h"      // defines: load_json_file, write_json_file_atomic
#include "common/error.h"       // defines: retort::Error
#include "model/checkpoint.h"   // defines: load_model, save_model, read_safetensors
#include "model/config.h"       // defines: ModelConfig
#include "model/safetensors.h"  // defines: parse_safetensors, serialize_safetensors
#include "model/transformer.h"  // defines: Qwen2ForCausalLM, KVCache
#include "rollout/logprobs.h"   // defines: token_logprobs
#include "error_of.h"  // defines: error_of
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace fs = std::filesystem;
using retort::json;
using retort::load_json_file;
using retort::write_json_file_atomic;

namespace {

std::string fixture(const std::string& name) { return std::string(RETORT_SOURCE_DIR) + "/tests/fixtures/model/" + name; }

std::string temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("retort_test_model_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

retort::ModelConfig tiny_config() {
  return retort::ModelConfig::from_file(fixture("qwen2_tiny") + "/config.json");
}

// max |a - b| over positions where mask [B, T] is 1 (a, b [B, T, ...] or [B, h, T, ...] with tdim).
double masked_max_diff(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& mask, int64_t tdim) {
  auto d = (a.to(torch::kFloat) - b.to(torch::kFloat)).abs();
  auto m = mask.to(torch::kFloat);
  std::vector<int64_t> shape(d.dim(), 1);
  shape[0] = m.size(0);
  shape[tdim] = m.size(1);
  return (d * m.view(shape)).max().item<double>();
}

}  // namespace

// ---- config -------------------------------------------------------------------------------

TEST_CASE("config.json of Qwen2 and Llama parse with their flags", "[unit]") {
  auto q = tiny_config();
  CHECK(q.architecture == "Qwen2ForCausalLM");
  CHECK(q.qkv_bias);
  CHECK_FALSE(q.o_bias);
  CHECK(q.tie_word_embeddings);
  CHECK(q.head_dim == 8);
  auto l = retort::ModelConfig::from_file(fixture("llama_tiny") + "/config.json");
  CHECK(l.architecture == "LlamaForCausalLM");
  CHECK_FALSE(l.qkv_bias);
  CHECK(l.head_dim == 16);  // given explicitly, not hidden/heads
  CHECK(l.rope_scaling.type == "llama3");
  CHECK(l.eos_token_ids == std::vector<int64_t>{2, 3});
  // to_json round trip
  auto back = retort::ModelConfig::from_json(l.to_json(), "round trip");
  CHECK(back.to_json() == l.to_json());
  CHECK(q.to_json()["architectures"][0] == "Qwen2ForCausalLM");
  CHECK(q.to_json()["model_type"] == "qwen2");
}

TEST_CASE("config.json with unsupported keys or values is refused", "[unit]") {
  json base = load_json_file(fixture("qwen2_tiny") + "/config.json");
  struct Case { const char* key; json value; const char* needle; };
  std::vector<Case> cases = {
      {"model_type", "mistral", "unsupported model_type"},
      {"architectures", json::array({"LlamaForCausalLM"}), "architectures"},
      {"use_sliding_window", true, "use_sliding_window"},
      {"hidden_act", "gelu", "hidden_act"},
      {"rope_scaling", json{{"rope_type", "yarn"}, {"factor", 4.0}}, "rope_scaling"},
      {"quantization_config", json::object(), "quantization_config"},
      {"num_key_value_heads", 3, "multiple"},
      {"hidden_size", "32", "hidden_size"},
      {"attention_bias", true, "attention_bias"},
  };
  for (const auto& c : cases) {
    json doc = base;
    doc[c.key] = c.value;
    std::string msg = error_of([&] { retort::ModelConfig::from_json(doc, "cfg.json"); });
    INFO(c.key << ": " << msg);
    CHECK(msg.find(c.needle) != std::string::npos);
    CHECK(msg.find("cfg.json") != std::string::npos);
  }
  json doc = base;
  doc.erase("vocab_size");
  CHECK_THROWS_AS(retort::ModelConfig::from_json(doc, "cfg.json"), retort::Error);
}

// ---- safetensors ----------------------------------------------------------------------------

namespace {

std::string small_safetensors() {
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> b = {0x3f80, 0x4000, 0x4040};
  retort::StTensorView va{"a", retort::StDtype::F32, {2, 3}, a.data(), a.size() * 4};
  retort::StTensorView vb{"b.weight", retort::StDtype::BF16, {3}, b.data(), b.size() * 2};
  return retort::serialize_safetensors({va, vb}, {{"format", "pt"}});
}

std::string with_header(const std::string& header_json, size_t data_bytes) {
  std::string out(8, '\0');
  uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header_json + std::string(data_bytes, '\0');
}

}  // namespace

TEST_CASE("safetensors round trip keeps F32, BF16 and F16 bit-exact", "[unit]") {
  std::string dir = temp_dir("st_roundtrip");
  std::map<std::string, torch::Tensor> in = {
      {"x.f32", torch::randn({3, 5})},
      {"x.bf16", torch::randn({4, 2}).to(torch::kBFloat16)},
      {"x.f16", torch::randn({7}).to(torch::kHalf)},
      {"empty", torch::zeros({0, 3})},
  };
  retort::write_safetensors_tensors(dir + "/t.safetensors", in);
  auto out = retort::read_safetensors(dir + "/t.safetensors");
  REQUIRE(out.size() == in.size());
  for (auto& [k, v] : in) {
    INFO(k);
    CHECK(out[k].scalar_type() == v.scalar_type());
    CHECK(out[k].sizes() == v.sizes());
    CHECK(torch::equal(out[k], v));
  }
  // The data section starts 8-byte aligned and the metadata is what transformers expects.
  auto f = retort::SafetensorsFile::open(dir + "/t.safetensors");
  CHECK(f.metadata().at("format") == "pt");
  std::string bytes = small_safetensors();
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  CHECK((8 + n) % 8 == 0);
  fs::remove_all(dir);
}

TEST_CASE("safetensors truncated at every offset is refused with the file name", "[unit]") {
  std::string dir = temp_dir("st_trunc");
  std::string bytes = small_safetensors();
  REQUIRE_NOTHROW(retort::parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "ok"));
  const std::string path = dir + "/cut.safetensors";
  int refused = 0;
  for (size_t len = 0; len < bytes.size(); ++len) {
    {
      std::ofstream f(path, std::ios::binary | std::ios::trunc);
      f.write(bytes.data(), static_cast<std::streamsize>(len));
    }
    std::string msg = error_of([&] { retort::SafetensorsFile::open(path); });
    INFO("length " << len << ": " << msg);
    CHECK(msg.find(path) != std::string::npos);
    refused += msg.empty() ? 0 : 1;
  }
  CHECK(refused == static_cast<int>(bytes.size()));
  fs::remove_all(dir);
}

TEST_CASE("safetensors with flipped header bytes never crashes and never yields out-of-bounds tensors", "[unit]") {
  std::string bytes = small_safetensors();
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  int refused = 0, accepted = 0;
  for (size_t pos = 0; pos < 8 + n; ++pos) {
    for (uint8_t mask : {0x01, 0x02, 0x10, 0x80, 0xff}) {
      std::string b = bytes;
      b[pos] = static_cast<char>(b[pos] ^ mask);
      try {
        auto h = retort::parse_safetensors(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "flipped.safetensors");
        // Accepted (e.g. a renamed tensor, whitespace): every tensor still lies inside the data.
        for (const auto& t : h.tensors) {
          CHECK(h.data_start + t.end <= b.size());
          CHECK(static_cast<uint64_t>(t.numel()) * retort::st_dtype_size(t.dtype) == t.end - t.begin);
        }
        ++accepted;
      } catch (const retort::Error& e) {
        CHECK(std::string(e.what()).find("flipped.safetensors") != std::string::npos);
        ++refused;
      }
    }
  }
  CHECK(refused > 0);
  CHECK(refused + accepted == static_cast<int>(5 * (8 + n)));
}

TEST_CASE("hostile safetensors headers are refused with the reason", "[unit]") {
  struct Case { std::string name, header; size_t data; std::string needle; };
  std::vector<Case> cases = {
      {"overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12, "overlaps"},
      {"gap", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 12, "gap"},
      {"past end", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 8, "past the end"},
      {"larger than the file", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8, "larger than the data"},
      {"shape mismatch", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", 8, "does not match its shape"},
      {"overflowing shape", R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", 8, "larger than the data"},
      {"negative dim", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, "non-negative"},
      {"bad dtype", R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8, "unsupported dtype"},
      {"begin after end", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8, "begin after end"},
      {"trailing bytes", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8, "does not match the tensors"},
      {"not an object", R"([1,2,3])", 0, "not a JSON object"},
      {"bad json", R"({"a":)", 0, "not valid JSON"},
      {"metadata not strings", R"({"__metadata__":{"x":1}})", 0, "not a string"},
      {"unknown field", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4, "unknown field"},
  };
  for (const auto& c : cases) {
    std::string b = with_header(c.header, c.data);
    std::string msg = error_of(
        [&] { retort::parse_safetensors(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "evil.safetensors"); });
    INFO(c.name << ": " << msg);
    CHECK(msg.find(c.needle) != std::string::npos);
    CHECK(msg.find("evil.safetensors") != std::string::npos);
  }
  // A header length far beyond the file.
  std::string b = small_safetensors();
  b[6] = 0x7f;
  CHECK_THROWS_AS(retort::parse_safetensors(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "x"), retort::Error);
}

// ---- model folders --------------------------------------------------------------------------

TEST_CASE("a model folder round-trips through save_model, sharded and unsharded, with HF names", "[unit]") {
  torch::manual_seed(7);
  retort::Qwen2ForCausalLM m(tiny_config());
  std::string dir = temp_dir("folder");
  retort::SaveOptions so;
  so.max_shard_bytes = 20000;  // several shards
  so.tokenizer_dir = fixture("qwen2_tiny");  // copies nothing there (no tokenizer files): must not fail
  retort::save_model(*m, dir, so);
  CHECK(fs::exists(dir + "/model.safetensors.index.json"));
  CHECK_FALSE(fs::exists(dir + "/model.safetensors"));
  CHECK(fs::exists(dir + "/generation_config.json"));
  auto idx = load_json_file(dir + "/model.safetensors.index.json");
  CHECK(idx["weight_map"].contains("model.layers.1.self_attn.q_proj.bias"));
  CHECK_FALSE(idx["weight_map"].contains("lm_head.weight"));  // tied
  // The names are exactly the reference fixture's names.
  auto ref = retort::read_safetensors(fixture("qwen2_tiny") + "/model.safetensors");
  auto mine = retort::read_checkpoint_tensors(dir);
  REQUIRE(ref.size() == mine.size());
  for (auto& kv : ref) CHECK(mine.count(kv.first) == 1);
  auto cfg = load_json_file(dir + "/config.json");
  CHECK(cfg["architectures"][0] == "Qwen2ForCausalLM");
  CHECK(cfg["torch_dtype"] == "float32");

  auto loaded = retort::load_model(dir);
  auto ids = torch::randint(0, 96, {2, 5}, torch::kLong);
  torch::NoGradGuard ng;
  CHECK(torch::equal(m->forward(ids).logits, loaded->forward(ids).logits));

  // bf16 unsharded save: one file, loads back within bf16 rounding.
  retort::SaveOptions so2;
  so2.dtype = "bfloat16";
  retort::save_model(*m, dir, so2);
  CHECK(fs::exists(dir + "/model.safetensors"));
  CHECK_FALSE(fs::exists(dir + "/model.safetensors.index.json"));
  CHECK(load_json_file(dir + "/config.json")["torch_dtype"] == "bfloat16");
  auto t = retort::read_safetensors(dir + "/model.safetensors");
  CHECK(t["model.embed_tokens.weight"].scalar_type() == torch::kBFloat16);
  auto lb = retort::load_model(dir);
  CHECK(torch::allclose(m->forward(ids).logits, lb->forward(ids).logits, 0.05, 0.05));

  // A hostile index: a shard outside the folder; a tensor missing from its shard.
  fs::remove(dir + "/model.safetensors");
  json bad = {{"weight_map", {{"model.norm.weight", "../../etc/passwd"}}}};
  write_json_file_atomic(dir + "/model.safetensors.index.json", bad);
  CHECK(error_of([&] { retort::read_checkpoint_tensors(dir); }).find("outside the model folder") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("loading weights that do not match config.json is refused with the tensor name", "[unit]") {
  std::string dir = temp_dir("mismatch");
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(fixture("qwen2_tiny") + "/" + f, dir + "/" + f);
  json cfg = load_json_file(dir + "/config.json");
  cfg["num_hidden_layers"] = 3;
  write_json_file_atomic(dir + "/config.json", cfg);
  CHECK(error_of([&] { retort::load_model(dir); }).find("model.layers.2.") != std::string::npos);
  cfg["num_hidden_layers"] = 2;
  cfg["intermediate_size"] = 65;
  write_json_file_atomic(dir + "/config.json", cfg);
  CHECK(error_of([&] { retort::load_model(dir); }).find("wrong shape") != std::string::npos);
  fs::remove_all(dir);
}

// ---- numerics against the Python reference --------------------------------------------------

TEST_CASE("logits, hidden states, attentions and log-probs match the independent Python reference", "[model]") {
  for (const char* name : {"qwen2_tiny", "llama_tiny"}) {
    INFO(name);
    auto model = retort::load_model(fixture(name));
    auto exp = retort::read_safetensors(fixture(name) + "/expected.safetensors");
    auto ids = exp["input_ids"].to(torch::kLong);        // [B, T]
    auto mask = exp["attention_mask"].to(torch::kLong);  // [B, T]
    torch::NoGradGuard ng;
    retort::ForwardOptions fo;
    fo.output_hidden_states = true;
    fo.output_attentions = true;
    auto out = model->forward(ids, mask, fo);
    const int64_t L = model->config().num_hidden_layers;
    REQUIRE(out.hidden_states.size() == static_cast<size_t>(L + 1));
    REQUIRE(out.attentions.size() == static_cast<size_t>(L));
    // Logits are O(1..10): float32 tolerance.
    CHECK(masked_max_diff(out.logits, exp["logits"], mask, 1) < 5e-5);
    for (int64_t i = 0; i <= L; ++i) {
      INFO("hidden state " << i);
      CHECK(masked_max_diff(out.hidden_states[i], exp["hidden_states." + std::to_string(i)], mask, 1) < 1e-4);
    }
    for (int64_t i = 0; i < L; ++i) {
      INFO("attention " << i);
      // Padding keys get exactly zero probability in both implementations.
      CHECK(masked_max_diff(out.attentions[i], exp["attentions." + std::to_string(i)], mask, 2) < 1e-5);
    }
    auto lp = retort::token_logprobs(*model, ids, mask);
    CHECK((lp - exp["logprobs"]).abs().max().item<double>() < 1e-4);
    // The test can fail: a wrong token in the batch changes the logits far beyond tolerance.
    auto ids2 = ids.clone();
    ids2[0][3] = (ids2[0][3].item<int64_t>() + 1) % model->config().vocab_size;
    CHECK(masked_max_diff(model->forward(ids2, mask).logits, exp["logits"], mask, 1) > 1e-2);
    // Without attention probabilities the logits are the same.
    CHECK(masked_max_diff(model->forward(ids, mask).logits, out.logits, mask, 1) < 1e-5);
  }
}

TEST_CASE("KV-cache decoding gives the logits of the full forward pass", "[model]") {
  auto model = retort::load_model(fixture("qwen2_tiny"));
  auto exp = retort::read_safetensors(fixture("qwen2_tiny") + "/expected.safetensors");
  auto ids = exp["input_ids"].to(torch::kLong);
  auto mask = exp["attention_mask"].to(torch::kLong);
  const int64_t B = ids.size(0), T = ids.size(1);
  torch::NoGradGuard ng;
  auto full = model->forward(ids, mask).logits;  // [B, T, V]
  for (int64_t prefill : {1, 4, 6}) {
    INFO("prefill " << prefill);
    auto cache = retort::KVCache::allocate(model->config(), B, T + 2, torch::kFloat, torch::kCPU);
    retort::ForwardOptions fo;
    fo.cache = &cache;
    std::vector<torch::Tensor> parts = {model->forward(ids.narrow(1, 0, prefill), mask.narrow(1, 0, prefill), fo).logits};
    for (int64_t t = prefill; t < T; ++t) parts.push_back(model->forward(ids.narrow(1, t, 1), mask.narrow(1, t, 1), fo).logits);
    auto inc = torch::cat(parts, 1);
    CHECK(cache.length == T);
    CHECK(masked_max_diff(inc, full, mask, 1) < 1e-4);
  }
  // The cache refuses a step beyond its capacity.
  auto small = retort::KVCache::allocate(model->config(), B, 2, torch::kFloat, torch::kCPU);
  retort::ForwardOptions fo;
  fo.cache = &small;
  CHECK_THROWS_AS(model->forward(ids, mask, fo), retort::Error);
}

TEST_CASE("left padding does not change a sequence's logits", "[model]") {
  auto model = retort::load_model(fixture("llama_tiny"));
  auto exp = retort::read_safetensors(fixture("llama_tiny") + "/expected.safetensors");
  auto ids = exp["input_ids"].to(torch::kLong);
  auto mask = exp["attention_mask"].to(torch::kLong);
  torch::NoGradGuard ng;
  auto batch = model->forward(ids, mask).logits;  // [B, T, V]
  for (int64_t b = 0; b < ids.size(0); ++b) {
    const int64_t n = mask[b].sum().item<int64_t>(), T = ids.size(1);
    auto alone = model->forward(ids[b].narrow(0, T - n, n).unsqueeze(0)).logits;  // [1, n, V]
    INFO("row " << b);
    CHECK((alone[0] - batch[b].narrow(0, T - n, n)).abs().max().item<double>() < 1e-4);
  }
  // Extra padding in front of the whole batch changes nothing either.
  auto pad = torch::zeros({ids.size(0), 3}, torch::kLong);
  auto more = model->forward(torch::cat({pad, ids}, 1), torch::cat({pad, mask}, 1)).logits.narrow(1, 3, ids.size(1));
  CHECK(masked_max_diff(more, batch, mask, 1) < 1e-4);
}

TEST_CASE("gradients flow to every parameter and a step lowers the loss", "[model]") {
  torch::manual_seed(3);
  retort::Qwen2ForCausalLM model(retort::ModelConfig::from_file(fixture("llama_tiny") + "/config.json"));
  model->train();
  auto ids = torch::randint(0, 80, {4, 12}, torch::kLong);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-2));
  auto loss_of = [&] {
    auto lp = retort::token_logprobs(*model, ids, {});
    return -lp.mean();
  };
  auto loss0 = loss_of();
  opt.zero_grad();
  loss0.backward();
  for (auto& p : model->named_parameters()) {
    INFO(p.key());
    REQUIRE(p.value().grad().defined());
    CHECK(p.value().grad().abs().sum().item<double>() > 0);
  }
  opt.step();
  for (int i = 0; i < 5; ++i) {
    opt.zero_grad();
    auto l = loss_of();
    l.backward();
    opt.step();
  }
  CHECK(loss_of().item<double>() < loss0.item<double>() - 0.1);
}
