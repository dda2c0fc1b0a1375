// The Qwen2-family decoder in LibTorch: Qwen2ForCausalLM = Qwen2Model (token embedding,
// decoder layers, final RMSNorm) + lm_head (or the tied embedding).
//
// One decoder layer, pre-norm:
//   x = x + o_proj(attention(rope(q), rope(k), v))      q/k/v from qkv_proj(rms_norm(x))
//   x = x + down_proj(silu(gate(h)) * up(h))            h = rms_norm(x)
// following the Hugging Face Qwen2/Llama definitions: rotate-half RoPE with rope_theta,
// RMSNorm computed in float32, grouped-query attention (query head h reads kv head
// h / (H/Hkv)), softmax in float32. What it deliberately is not: a paged-attention
// server; sliding-window attention and quantised weights are refused by the config.
//
// Parameters are stored fused (self_attn.qkv_proj = [q; k; v], mlp.gate_up_proj =
// [gate; up]) so that a layer runs 4 matrix multiplies instead of 7; hf_state_dict() and
// load_hf_state_dict() translate to and from the Hugging Face tensor names.
//
// Dimensions: B batch, T new tokens, S key positions (past + new), C hidden, H query heads,
// Hkv kv heads, D head dim, I intermediate, V vocab.
#pragma once

#include <map>     // defines: std::map
#include <string>  // defines: std::string
#include <vector>  // defines: std::vector

#include "common/torch_pch.h"  // defines: torch::nn::Module, torch::Tensor
#include "model/attention.h"   // defines: AttentionChunkOptions
#include "model/config.h"      // defines: ModelConfig

namespace retort {

// Keys and values of past tokens, preallocated for `capacity` positions of each of
// `batch` rows: decoding writes into slots, never reallocates per token.
struct KVCache {
  std::vector<torch::Tensor> k, v;  // per layer: [B, Hkv, capacity, D]
  torch::Tensor key_mask;           // [B, capacity] bool: the slot holds a real (non-padding) token
  torch::Tensor next_position;      // [B] int64: the position id of the row's next real token
  int64_t length = 0;               // slots filled so far (the same for every row)

  int64_t batch() const { return key_mask.defined() ? key_mask.size(0) : 0; }
  int64_t capacity() const { return key_mask.defined() ? key_mask.size(1) : 0; }

  static KVCache allocate(const ModelConfig& cfg, int64_t batch, int64_t capacity, torch::Dtype dtype,
                          torch::Device device);
  // Keeps the rows `rows` ([B'] int64, any order, repeats allowed): compaction of the active
  // batch when sequences finish, or the expansion of one prompt into a group of G rows.
  // Allocates once per call (never per token); the capacity is unchanged.
  void select_rows(const torch::Tensor& rows);
};

// The rollout engine's block KV cache as one forward pass sees it (rollout/model_runner.cpp
// fills it): a pool of fixed-size blocks per layer, flattened to slots (slot = block *
// block_size + offset), each row's keys read back through its slots in position order.
// Memory is proportional to the positions held, never rows x max length.
struct PagedKV {
  std::vector<torch::Tensor> k, v;  // per layer: [num_slots, Hkv, D], model dtype
  torch::Tensor write_slots;        // [B*T] int64: slot of each new token's key/value (padding -> a scratch slot)
  torch::Tensor read_slots;         // [B*S] int64: slots of each row's positions 0..S-1 (padded with the scratch slot)
  torch::Tensor allowed;            // [B, 1, T, S] bool: query t may attend position s
  int64_t S = 0;                    // key positions per row (the batch's longest)
  torch::Tensor lengths;            // [B] int64: positions each row holds after this step (its own S)
};

struct ForwardOptions {
  bool output_hidden_states = false;  // fill ForwardOutput::hidden_states (L + 1 tensors)
  bool output_attentions = false;     // fill ForwardOutput::attentions (eager attention; costs [B,H,T,S] per layer)
  KVCache* cache = nullptr;           // append the new tokens' keys/values and attend over the past ones
  torch::Tensor position_ids;         // [B, T] int64; undefined = derived from the mask (padding skipped)
  bool last_logits_only = false;      // logits for the last position only ([B, 1, V]): prefill and decode
  PagedKV* paged = nullptr;           // block KV cache of the rollout engine (position_ids required; no `cache`)
  // Training at long lengths (see lm_head.h and docs/long_traces.md):
  bool skip_lm_head = false;           // no logits: the caller takes ForwardOutput::hidden to a chunked head
  std::vector<int64_t> attention_layers;  // with output_attentions: only these layers' maps (empty = every layer);
                                          // the others keep the fused kernel and may be checkpointed
  bool checkpoint_layers = false;      // recompute each decoder layer in backward instead of keeping its
                                       // activations (only when grad mode is on and there is no cache)
  torch::Tensor sequence_ids;          // [B, T] int64: packing; a token attends only to earlier tokens of its
                                       // own sequence id, and positions restart at 0 with each sequence
  // Memory-efficient attention (model/attention.h): elements of one query chunk's [B, H, n, S]
  // float32 scores; used at layers without attention maps whenever autograd is on, and without
  // autograd when [B, H, T, S] would pass it. 0 = the eager attention everywhere.
  int64_t attention_chunk_elements = AttentionChunkOptions{}.chunk_elements;
  // Checkpointed layers run their MLP half in chunks of tokens whose [B, n, 2I] gate/up
  // activations stay under this many elements (2^23 = 32 MiB float32, 862 tokens of a 4864-wide
  // MLP); the MLP is per token, so only memory changes (~1 GB less at 8k tokens, Qwen2.5-0.5B).
  int64_t mlp_chunk_elements = int64_t{1} << 23;
};

struct ForwardOutput {
  torch::Tensor logits;                     // [B, T, V] (or [B, 1, V] with last_logits_only), model dtype
  std::vector<torch::Tensor> hidden_states; // L + 1 x [B, T, C]: embeddings, each layer's output; the last
                                            // one after the final norm (as in transformers)
  std::vector<torch::Tensor> attentions;    // L x [B, H, T, S] attention probabilities (undefined at layers
                                            // outside ForwardOptions::attention_layers)
  torch::Tensor hidden;                     // [B, T, C] after the final norm: the lm_head's input
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  // y = w * (x / sqrt(mean(x^2) + eps)), the statistics in float32, the product in x's dtype.
  torch::Tensor forward(const torch::Tensor& x);  // [..., C] -> [..., C]
  torch::Tensor weight;                           // [C]
  double eps;
};
TORCH_MODULE(RMSNorm);

// Per-forward tensors shared by every layer.
struct AttentionContext {
  torch::Tensor cos, sin;  // [B, 1, T, D] in the model dtype
  torch::Tensor allowed;   // [B, 1, T, S] bool: query t may attend key s (causal, no padding keys)
  int64_t past = 0;        // cache slots before the new tokens
  KVCache* cache = nullptr;
  bool want_probs = false;
  int64_t attention_chunk_elements = 0;  // ForwardOptions::attention_chunk_elements
  int64_t mlp_chunk_elements = 0;        // ForwardOptions::mlp_chunk_elements (checkpointed layers)
  PagedKV* paged = nullptr;  // the rollout engine's block KV cache (replaces `allowed`'s key axis by its S)
};

class Qwen2AttentionImpl : public torch::nn::Module {
 public:
  explicit Qwen2AttentionImpl(const ModelConfig& cfg);
  // x [B, T, C] -> [B, T, C]; *probs <- [B, H, T, S] when ctx.want_probs.
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, int64_t layer, torch::Tensor* probs);
  torch::nn::Linear qkv_proj{nullptr};  // C -> (H + 2 Hkv) D
  torch::nn::Linear o_proj{nullptr};    // H D -> C
  int64_t num_heads, num_kv_heads, head_dim;
};
TORCH_MODULE(Qwen2Attention);

class Qwen2MLPImpl : public torch::nn::Module {
 public:
  explicit Qwen2MLPImpl(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x);  // [B, T, C] -> [B, T, C]
  torch::nn::Linear gate_up_proj{nullptr};        // C -> 2 I ([gate; up])
  torch::nn::Linear down_proj{nullptr};           // I -> C
  int64_t intermediate;
};
TORCH_MODULE(Qwen2MLP);

class Qwen2DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit Qwen2DecoderLayerImpl(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, int64_t layer, torch::Tensor* probs);
  RMSNorm input_layernorm{nullptr};
  Qwen2Attention self_attn{nullptr};
  RMSNorm post_attention_layernorm{nullptr};
  Qwen2MLP mlp{nullptr};
};
TORCH_MODULE(Qwen2DecoderLayer);

class Qwen2ModelImpl : public torch::nn::Module {
 public:
  explicit Qwen2ModelImpl(const ModelConfig& cfg);
  torch::nn::Embedding embed_tokens{nullptr};  // [V, C]
  std::vector<Qwen2DecoderLayer> layers;
  RMSNorm norm{nullptr};
};
TORCH_MODULE(Qwen2Model);

class Qwen2ForCausalLMImpl : public torch::nn::Module {
 public:
  explicit Qwen2ForCausalLMImpl(ModelConfig cfg);

  // input_ids [B, T] int64; attention_mask [B, T] (1 = token, 0 = padding; undefined = all
  // tokens); with a cache, the mask covers the new tokens only. Prompts are left-padded.
  ForwardOutput forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                        const ForwardOptions& opts = {});

  // Normal(0, 0.02) weights, zero biases, unit norms; deterministic under torch::manual_seed.
  void init_weights();

  // The parameters under Hugging Face names (q/k/v and gate/up split; no lm_head when tied).
  // Detached views/copies of the live parameters, on their device.
  std::map<std::string, torch::Tensor> hf_state_dict() const;
  // Copies tensors with Hugging Face names into the parameters (any dtype/device; converted).
  // Every expected name must be present with its shape; an unexpected name is an error.
  // `where` names the checkpoint in errors.
  void load_hf_state_dict(const std::map<std::string, torch::Tensor>& tensors, const std::string& where);

  const ModelConfig& config() const { return cfg_; }
  torch::Dtype dtype() const;
  torch::Device device() const;
  // The LM head's weight [V, C]: lm_head's, or the embedding when tied.
  torch::Tensor head_weight() const;

  Qwen2Model model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // C -> V; null when tie_word_embeddings

 private:
  ModelConfig cfg_;
  torch::Tensor inv_freq_;  // [D/2] float32 RoPE frequencies (after rope_scaling), on the last forward's device
};
TORCH_MODULE(Qwen2ForCausalLM);

}  // namespace retort
