// The Qwen2-family decoder (see transformer.h for the ladder and the dimension legend).
#include "model/transformer.h"

#include <algorithm>  // defines: std::find
#include <cmath>   // defines: std::sqrt, M_PI
#include <limits>  // defines: std::numeric_limits
#include <set>    // defines: std::set

#include <torch/version.h>  // defines: TORCH_VERSION_MAJOR

#include "common/error.h"      // defines: retort::Error
#include "model/attention.h"  // defines: chunked_attention, paged_decode_attention

namespace retort {

// ---- KV cache --------------------------------------------------------------------------

KVCache KVCache::allocate(const ModelConfig& cfg, int64_t batch, int64_t capacity, torch::Dtype dtype,
                          torch::Device device) {
  KVCache c;
  auto opts = torch::TensorOptions().dtype(dtype).device(device);
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    c.k.push_back(torch::zeros({batch, cfg.num_key_value_heads, capacity, cfg.head_dim}, opts));  // [B, Hkv, S, D]
    c.v.push_back(torch::zeros({batch, cfg.num_key_value_heads, capacity, cfg.head_dim}, opts));  // [B, Hkv, S, D]
  }
  c.key_mask = torch::zeros({batch, capacity}, torch::TensorOptions().dtype(torch::kBool).device(device));
  c.next_position = torch::zeros({batch}, torch::TensorOptions().dtype(torch::kLong).device(device));
  c.length = 0;
  return c;
}

void KVCache::select_rows(const torch::Tensor& rows) {
  torch::NoGradGuard no_grad;
  auto r = rows.to(key_mask.device(), torch::kLong);
  for (auto& t : k) t = t.index_select(0, r);
  for (auto& t : v) t = t.index_select(0, r);
  key_mask = key_mask.index_select(0, r);
  next_position = next_position.index_select(0, r);
}

// ---- layers ----------------------------------------------------------------------------

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  auto xf = x.to(torch::kFloat);                                 // [..., C] float32
  auto var = xf.pow(2).mean(-1, /*keepdim=*/true);               // [..., 1]
  auto y = (xf * torch::rsqrt(var + eps)).to(x.scalar_type());   // back to the input dtype, as transformers does
  return weight * y;
}

namespace {

// rotate_half(x) = [-x2, x1] for x = [x1, x2] split in halves along D.
torch::Tensor rotate_half(const torch::Tensor& x) {
  int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  return x * cos + rotate_half(x) * sin;  // x [B, h, T, D], cos/sin [B, 1, T, D]
}

}  // namespace

Qwen2AttentionImpl::Qwen2AttentionImpl(const ModelConfig& cfg)
    : num_heads(cfg.num_attention_heads), num_kv_heads(cfg.num_key_value_heads), head_dim(cfg.head_dim) {
  qkv_proj = register_module(
      "qkv_proj", torch::nn::Linear(torch::nn::LinearOptions(cfg.hidden_size, cfg.q_size() + 2 * cfg.kv_size())
                                        .bias(cfg.qkv_bias)));
  o_proj = register_module("o_proj",
                           torch::nn::Linear(torch::nn::LinearOptions(cfg.q_size(), cfg.hidden_size).bias(cfg.o_bias)));
}

torch::Tensor Qwen2AttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx, int64_t layer,
                                          torch::Tensor* probs) {
  const int64_t B = x.size(0), T = x.size(1), H = num_heads, Hkv = num_kv_heads, D = head_dim;
  const int64_t n_rep = H / Hkv;
  auto qkv = qkv_proj(x);                                                      // [B, T, (H + 2 Hkv) D]
  auto q = qkv.narrow(-1, 0, H * D).view({B, T, H, D}).transpose(1, 2);        // [B, H, T, D]
  auto k = qkv.narrow(-1, H * D, Hkv * D).view({B, T, Hkv, D}).transpose(1, 2);        // [B, Hkv, T, D]
  auto v = qkv.narrow(-1, (H + Hkv) * D, Hkv * D).view({B, T, Hkv, D}).transpose(1, 2);  // [B, Hkv, T, D]
  q = apply_rope(q, ctx.cos, ctx.sin);
  k = apply_rope(k, ctx.cos, ctx.sin);
  torch::Tensor k_all = k, v_all = v;  // [B, Hkv, S, D]
  if (ctx.cache != nullptr) {
    // hot loop: no allocation — the new keys/values go into preallocated slots.
    ctx.cache->k[layer].narrow(2, ctx.past, T).copy_(k);
    ctx.cache->v[layer].narrow(2, ctx.past, T).copy_(v);
    k_all = ctx.cache->k[layer].narrow(2, 0, ctx.past + T);
    v_all = ctx.cache->v[layer].narrow(2, 0, ctx.past + T);
  }
  if (ctx.paged != nullptr) {
    // Block KV cache (rollout engine): the new keys/values go to their slots, then each row's
    // keys are gathered in position order: [B*S, Hkv, D] -> [B, Hkv, S, D], the rows held only.
    auto& pk = ctx.paged->k[layer];
    auto& pv = ctx.paged->v[layer];
    pk.index_copy_(0, ctx.paged->write_slots, k.transpose(1, 2).reshape({B * T, Hkv, D}));
    pv.index_copy_(0, ctx.paged->write_slots, v.transpose(1, 2).reshape({B * T, Hkv, D}));
    const int64_t Sp = ctx.paged->S;
    if (T == 1 && !ctx.want_probs && x.device().is_cpu() && x.scalar_type() == torch::kFloat &&
        !torch::GradMode::is_enabled() && ctx.paged->lengths.defined()) {
      // A decode step on the CPU: read the blocks in place (model/attention.h).
      auto o = paged_decode_attention(q, pk, pv, ctx.paged->read_slots, Sp, ctx.paged->lengths);  // [B, H, 1, D]
      return o_proj(o.transpose(1, 2).reshape({B, T, H * D}));                                      // [B, T, C]
    }
    k_all = pk.index_select(0, ctx.paged->read_slots).view({B, Sp, Hkv, D}).transpose(1, 2);
    v_all = pv.index_select(0, ctx.paged->read_slots).view({B, Sp, Hkv, D}).transpose(1, 2);
  }
  const int64_t S = k_all.size(2);
  torch::Tensor out;  // [B, H, T, D]
#if TORCH_VERSION_MAJOR >= 2
  if (!ctx.want_probs) {
    // Fused attention (flash / memory-efficient / CPU kernels) when no probabilities are asked for.
    auto kk = n_rep == 1 ? k_all : k_all.unsqueeze(2).expand({B, Hkv, n_rep, S, D}).reshape({B, H, S, D});
    auto vv = n_rep == 1 ? v_all : v_all.unsqueeze(2).expand({B, Hkv, n_rep, S, D}).reshape({B, H, S, D});
    out = at::scaled_dot_product_attention(q, kk, vv, ctx.allowed);
  }
#endif
  // Memory-efficient attention (model/attention.h) unless the maps are asked for: always when
  // autograd is on (training keeps O(chunk x S) per layer instead of [B, H, T, S] scores and
  // probabilities), and without autograd when the eager scores would pass one chunk's budget
  // (long prefill, scoring, a checkpointed layer's first run); decoding steps stay eager.
  if (!out.defined() && !ctx.want_probs && ctx.attention_chunk_elements > 0 &&
      (torch::GradMode::is_enabled() || B * H * T * S > ctx.attention_chunk_elements)) {
    out = chunked_attention(q, k_all, v_all, ctx.allowed, AttentionChunkOptions{ctx.attention_chunk_elements});
  }
  if (!out.defined()) {
    // Eager attention. GQA without copying the kv heads: the n_rep query heads that share a
    // kv head are stacked along the row axis of one matrix multiply.
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    auto qg = q.reshape({B, Hkv, n_rep * T, D});                                 // [B, Hkv, n_rep T, D]
    auto scores = torch::matmul(qg, k_all.transpose(-2, -1)).view({B, H, T, S});  // [B, H, T, S]
    scores = (scores * scale).masked_fill(ctx.allowed.logical_not(), -std::numeric_limits<float>::infinity());
    auto p = torch::softmax(scores, -1, torch::kFloat).to(q.scalar_type());      // [B, H, T, S], float32 softmax
    if (probs != nullptr) *probs = p;
    out = torch::matmul(p.view({B, Hkv, n_rep * T, S}), v_all).view({B, H, T, D});
  }
  return o_proj(out.transpose(1, 2).reshape({B, T, H * D}));  // [B, T, C]
}

Qwen2MLPImpl::Qwen2MLPImpl(const ModelConfig& cfg) : intermediate(cfg.intermediate_size) {
  gate_up_proj = register_module(
      "gate_up_proj", torch::nn::Linear(torch::nn::LinearOptions(cfg.hidden_size, 2 * cfg.intermediate_size).bias(false)));
  down_proj = register_module(
      "down_proj", torch::nn::Linear(torch::nn::LinearOptions(cfg.intermediate_size, cfg.hidden_size).bias(false)));
}

// SwiGLU: down(silu(gate(x)) * up(x)).
torch::Tensor Qwen2MLPImpl::forward(const torch::Tensor& x) {
  auto gu = gate_up_proj(x);  // [B, T, 2 I]
  return down_proj(torch::silu(gu.narrow(-1, 0, intermediate)) * gu.narrow(-1, intermediate, intermediate));
}

Qwen2DecoderLayerImpl::Qwen2DecoderLayerImpl(const ModelConfig& cfg) {
  input_layernorm = register_module("input_layernorm", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps));
  self_attn = register_module("self_attn", Qwen2Attention(cfg));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps));
  mlp = register_module("mlp", Qwen2MLP(cfg));
}

torch::Tensor Qwen2DecoderLayerImpl::forward(const torch::Tensor& x, const AttentionContext& ctx, int64_t layer,
                                             torch::Tensor* probs) {
  auto h = x + self_attn->forward(input_layernorm(x), ctx, layer, probs);  // [B, T, C]
  return h + mlp(post_attention_layernorm(h));
}

Qwen2ModelImpl::Qwen2ModelImpl(const ModelConfig& cfg) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(cfg.vocab_size, cfg.hidden_size));
  auto list = register_module("layers", torch::nn::ModuleList());  // names "layers.N.*", as in transformers
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    layers.push_back(Qwen2DecoderLayer(cfg));
    list->push_back(layers.back());
  }
  norm = register_module("norm", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps));
}

// ---- activation checkpointing ------------------------------------------------------------

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What a checkpointed layer needs to run again in backward: the layer and the per-forward
// tensors (RoPE tables, mask), held in the context as a capsule.
struct CheckpointSpec : torch::CustomClassHolder {
  Qwen2DecoderLayer layer{nullptr};
  AttentionContext ctx;
  int64_t index = 0;
};

// Tokens per chunk of a checkpointed layer's MLP half: its [B, n, 2I] gate/up activations
// stay under ForwardOptions::mlp_chunk_elements. The MLP is per token, so running it chunk by
// chunk changes nothing but memory: at 8k tokens its whole-sequence activations and their
// gradients are ~1 GB (gate/up [T, 2I], silu, product, at Qwen2.5-0.5B's I = 4864).
int64_t mlp_chunk_tokens(const Qwen2DecoderLayerImpl& layer, const AttentionContext& ctx, int64_t B) {
  if (ctx.mlp_chunk_elements <= 0) return std::numeric_limits<int64_t>::max();
  return std::max<int64_t>(1, ctx.mlp_chunk_elements / std::max<int64_t>(1, B * 2 * layer.mlp->intermediate));
}

// A decoder layer that keeps only its input: forward runs without autograd (no activations
// saved), backward runs the layer again with autograd and differentiates it (what
// torch.utils.checkpoint does, which LibTorch C++ lacks). The layer's parameters are inputs
// so that their gradients reach the optimizer. Both passes take the MLP half in chunks of
// tokens (mlp_chunk_tokens) and the attention half whole (the attention itself is chunked,
// model/attention.h), so a layer's transient memory does not grow with T times the MLP width.
// x [B, T, C] -> [B, T, C].
class CheckpointedLayerFunction : public torch::autograd::Function<CheckpointedLayerFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, at::TensorList params,
                               c10::intrusive_ptr<CheckpointSpec> spec) {
    (void)params;  // read again from the layer in backward
    ctx->save_for_backward({x});
    auto& layer = *spec->layer;
    auto h = x + layer.self_attn->forward(layer.input_layernorm(x), spec->ctx, spec->index, nullptr);  // [B, T, C]
    auto y = torch::empty_like(h);
    const int64_t T = h.size(1), n = std::min(T, mlp_chunk_tokens(layer, spec->ctx, h.size(0)));
    for (int64_t t0 = 0; t0 < T; t0 += n) {
      auto hc = h.narrow(1, t0, std::min(n, T - t0));  // [B, n, C]
      y.narrow(1, t0, hc.size(1)).copy_(hc + layer.mlp(layer.post_attention_layernorm(hc)));
    }
    ctx->saved_data["spec"] = c10::IValue::make_capsule(std::move(spec));
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);  // [B, T, C]
    auto holder = ctx->saved_data["spec"].toCapsule();
    auto& spec = *static_cast<CheckpointSpec*>(holder.get());
    auto& layer = *spec.layer;
    auto params = layer.parameters();
    // Gradients by parameter, accumulated over the MLP chunks and the attention half.
    variable_list pg(params.size());
    auto slot_of = [&](const torch::Tensor& p) {
      for (size_t i = 0; i < params.size(); ++i)
        if (params[i].unsafeGetTensorImpl() == p.unsafeGetTensorImpl()) return i;
      return params.size();
    };
    auto grad_into = [&](const torch::Tensor& out, const torch::Tensor& gout, variable_list inputs,
                         const std::vector<torch::Tensor>& ps) {
      for (const auto& p : ps)
        if (p.requires_grad()) inputs.push_back(p);
      auto g = torch::autograd::grad({out}, inputs, {gout}, /*retain_graph=*/false, /*create_graph=*/false,
                                     /*allow_unused=*/true);
      size_t j = 1;
      for (const auto& p : ps) {
        if (!p.requires_grad()) continue;
        const auto& gj = g[j++];
        if (!gj.defined()) continue;
        auto& acc = pg[slot_of(p)];
        acc = acc.defined() ? acc.add_(gj) : gj;
      }
      return g[0];
    };
    std::vector<torch::Tensor> mlp_params = layer.post_attention_layernorm->parameters();
    for (const auto& p : layer.mlp->parameters()) mlp_params.push_back(p);
    std::vector<torch::Tensor> attn_params = layer.input_layernorm->parameters();
    for (const auto& p : layer.self_attn->parameters()) attn_params.push_back(p);
    torch::Tensor dx;
    {
      torch::AutoGradMode on(true);
      auto h = x + layer.self_attn->forward(layer.input_layernorm(x), spec.ctx, spec.index, nullptr);  // recomputed
      // y = h + mlp(ln2(h)): dL/dh = dL/dy + the MLP's share, chunk by chunk of tokens.
      auto hd = h.detach();
      auto dh = grads[0].clone();  // [B, T, C]
      const int64_t T = h.size(1), n = std::min(T, mlp_chunk_tokens(layer, spec.ctx, h.size(0)));
      for (int64_t t0 = 0; t0 < T; t0 += n) {
        const int64_t m = std::min(n, T - t0);
        auto hc = hd.narrow(1, t0, m).detach().requires_grad_(true);  // [B, m, C]
        auto out = layer.mlp(layer.post_attention_layernorm(hc));
        dh.narrow(1, t0, m).add_(grad_into(out, grads[0].narrow(1, t0, m), {hc}, mlp_params));
      }
      dx = grad_into(h, dh, {x}, attn_params);
    }
    variable_list out(params.size() + 2);  // x, each parameter, the spec
    out[0] = dx;
    for (size_t i = 0; i < params.size(); ++i) out[1 + i] = pg[i];
    return out;
  }
};

}  // namespace

// ---- the causal LM -----------------------------------------------------------------------

namespace {

// RoPE inverse frequencies 1 / theta^(2i/D), then the config's scaling (transformers'
// _compute_default_rope_parameters, _compute_linear_scaling_rope_parameters and
// _compute_llama3_parameters).
torch::Tensor rope_inv_freq(const ModelConfig& cfg) {
  const int64_t D = cfg.head_dim;
  auto exponent = torch::arange(0, D, 2, torch::kLong).to(torch::kFloat) / static_cast<double>(D);
  auto inv = 1.0 / torch::pow(cfg.rope_theta, exponent);  // [D/2] float32
  const auto& rs = cfg.rope_scaling;
  if (rs.type == "linear") {
    inv = inv / rs.factor;
  } else if (rs.type == "llama3") {
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor, high_wavelen = old_len / rs.high_freq_factor;
    auto wavelen = 2 * M_PI / inv;
    auto scaled = torch::where(wavelen > low_wavelen, inv / rs.factor, inv);
    auto smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    auto smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
    auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = torch::where(medium, smoothed, scaled);
  }
  return inv;
}

}  // namespace

Qwen2ForCausalLMImpl::Qwen2ForCausalLMImpl(ModelConfig cfg) : cfg_(std::move(cfg)) {
  cfg_.validate("model config");
  model = register_module("model", Qwen2Model(cfg_));
  if (!cfg_.tie_word_embeddings) {
    lm_head = register_module(
        "lm_head", torch::nn::Linear(torch::nn::LinearOptions(cfg_.hidden_size, cfg_.vocab_size).bias(false)));
  }
  inv_freq_ = rope_inv_freq(cfg_);  // not a buffer: it stays float32 when the model moves to bf16
  init_weights();
}

torch::Dtype Qwen2ForCausalLMImpl::dtype() const { return model->embed_tokens->weight.scalar_type(); }
torch::Device Qwen2ForCausalLMImpl::device() const { return model->embed_tokens->weight.device(); }
torch::Tensor Qwen2ForCausalLMImpl::head_weight() const { return lm_head ? lm_head->weight : model->embed_tokens->weight; }

void Qwen2ForCausalLMImpl::init_weights() {
  torch::NoGradGuard no_grad;
  for (auto& p : named_parameters(/*recurse=*/true)) {
    const std::string& name = p.key();
    auto& t = p.value();
    if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) t.zero_();
    else if (t.dim() == 1) t.fill_(1.0);  // RMSNorm weights
    else t.normal_(0.0, 0.02);
  }
}

ForwardOutput Qwen2ForCausalLMImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                            const ForwardOptions& opts) {
  if (input_ids.dim() != 2) {
    throw Error(ErrorInfo{"input_ids must be a [B, T] tensor", "Qwen2ForCausalLM::forward", "2 dimensions",
                          std::to_string(input_ids.dim()), ""});
  }
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  const auto dev = input_ids.device();
  if (attention_mask.defined() && (attention_mask.dim() != 2 || attention_mask.size(0) != B || attention_mask.size(1) != T)) {
    throw Error(ErrorInfo{"attention_mask must have the shape of input_ids", "Qwen2ForCausalLM::forward",
                          "[" + std::to_string(B) + ", " + std::to_string(T) + "]", attention_mask.sizes().vec().size() == 2
                              ? "[" + std::to_string(attention_mask.size(0)) + ", " + std::to_string(attention_mask.size(1)) + "]"
                              : std::to_string(attention_mask.dim()) + " dimensions", ""});
  }
  KVCache* cache = opts.cache;
  const int64_t past = cache ? cache->length : 0;
  const int64_t S = past + T;
  if (cache != nullptr) {
    if (cache->batch() != B || S > cache->capacity()) {
      throw Error(ErrorInfo{"the KV cache cannot hold this step", "Qwen2ForCausalLM::forward",
                            "batch " + std::to_string(cache->batch()) + " and at most " +
                                std::to_string(cache->capacity()) + " positions",
                            "batch " + std::to_string(B) + " and " + std::to_string(S) + " positions",
                            "allocate the cache for the prompt plus the new tokens"});
    }
  }

  // ---- masks and positions (computed once, shared by every layer)
  auto mask = attention_mask.defined() ? attention_mask.to(dev, torch::kBool)
                                       : torch::ones({B, T}, torch::TensorOptions().dtype(torch::kBool).device(dev));  // [B, T]
  torch::Tensor key_valid = mask;  // [B, S]
  if (cache != nullptr) {
    cache->key_mask.narrow(1, past, T).copy_(mask);
    key_valid = cache->key_mask.narrow(1, 0, S);
  }
  torch::Tensor seg;  // [B, T] int64 sequence ids of a packed batch
  if (opts.sequence_ids.defined()) {
    if (cache != nullptr || opts.sequence_ids.sizes() != input_ids.sizes()) {
      throw Error(ErrorInfo{"sequence_ids (packing) need the shape of input_ids and no KV cache", "Qwen2ForCausalLM::forward",
                            "[" + std::to_string(B) + ", " + std::to_string(T) + "] without a cache",
                            c10::str(opts.sequence_ids.sizes()) + (cache ? " with a cache" : ""), "pack only for training and scoring"});
    }
    seg = opts.sequence_ids.to(dev, torch::kLong);
  }
  torch::Tensor pos = opts.position_ids;  // [B, T]
  if (!pos.defined() && seg.defined()) {
    // Positions restart at 0 where the sequence id changes: t - (start of t's sequence).
    auto t_idx = torch::arange(T, torch::TensorOptions().dtype(torch::kLong).device(dev)).unsqueeze(0).expand({B, T});
    auto starts = torch::ones({B, T}, torch::TensorOptions().dtype(torch::kBool).device(dev));
    if (T > 1) starts.narrow(1, 1, T - 1).copy_(seg.narrow(1, 1, T - 1) != seg.narrow(1, 0, T - 1));
    auto start_of = std::get<0>(torch::where(starts, t_idx, torch::zeros_like(t_idx)).cummax(1));  // [B, T]
    pos = t_idx - start_of;
  }
  if (!pos.defined()) {
    pos = mask.to(torch::kLong).cumsum(1) - 1;  // padding skipped: the first real token is position 0
    if (cache != nullptr) pos = pos + cache->next_position.unsqueeze(1);
    pos = pos.clamp_min(0);
  }
  if (cache != nullptr) cache->next_position.add_(mask.to(torch::kLong).sum(1));
  auto kopts = torch::TensorOptions().dtype(torch::kLong).device(dev);
  auto q_idx = torch::arange(past, S, kopts).unsqueeze(1);  // [T, 1]
  auto k_idx = torch::arange(0, S, kopts).unsqueeze(0);     // [1, S]
  // A query attends to earlier real tokens and to itself (so that a padding query has one
  // key and its softmax stays finite; its output is never used).
  auto allowed = (k_idx <= q_idx).unsqueeze(0).logical_and(key_valid.unsqueeze(1).logical_or((k_idx == q_idx).unsqueeze(0)));
  if (seg.defined()) allowed = allowed.logical_and(seg.unsqueeze(2) == seg.unsqueeze(1));  // block-diagonal [B, T, T]
  AttentionContext ctx;
  ctx.allowed = allowed.unsqueeze(1);  // [B, 1, T, S]
  ctx.past = past;
  ctx.cache = cache;
  ctx.want_probs = opts.output_attentions;
  ctx.attention_chunk_elements = opts.attention_chunk_elements;
  ctx.mlp_chunk_elements = opts.mlp_chunk_elements;
  if (opts.paged != nullptr) {
    if (cache != nullptr || !opts.position_ids.defined()) {
      throw Error(ErrorInfo{"a forward pass over the block KV cache needs position ids and no dense cache", "Qwen2ForCausalLM::forward",
                            "ForwardOptions::position_ids set, cache null", cache ? "a dense cache too" : "no position ids", ""});
    }
    ctx.paged = opts.paged;
    ctx.allowed = opts.paged->allowed;  // [B, 1, T, S]
  }
  if (inv_freq_.device() != dev) inv_freq_ = inv_freq_.to(dev);
  auto freqs = pos.to(torch::kFloat).unsqueeze(-1) * inv_freq_.view({1, 1, -1});  // [B, T, D/2] float32
  auto emb = torch::cat({freqs, freqs}, -1);                                                // [B, T, D]
  const auto dt = dtype();
  ctx.cos = emb.cos().to(dt).unsqueeze(1);  // [B, 1, T, D]
  ctx.sin = emb.sin().to(dt).unsqueeze(1);

  // ---- the decoder stack
  ForwardOutput out;
  auto x = model->embed_tokens(input_ids.to(dev, torch::kLong));  // [B, T, C]
  const int64_t L = cfg_.num_hidden_layers;
  const bool checkpoint = opts.checkpoint_layers && cache == nullptr && torch::GradMode::is_enabled();
  for (int64_t l = 0; l < L; ++l) {
    if (opts.output_hidden_states) out.hidden_states.push_back(x);
    // Attention maps only where asked: the other layers keep the fused kernel and may be recomputed.
    const bool probs_here = opts.output_attentions &&
                            (opts.attention_layers.empty() ||
                             std::find(opts.attention_layers.begin(), opts.attention_layers.end(), l) != opts.attention_layers.end());
    ctx.want_probs = probs_here;
    torch::Tensor probs;
    if (checkpoint && !probs_here) {
      auto spec = c10::make_intrusive<CheckpointSpec>();
      spec->layer = model->layers[l];
      spec->ctx = ctx;
      spec->index = l;
      auto params = model->layers[l]->parameters();
      x = CheckpointedLayerFunction::apply(x, at::TensorList(params), std::move(spec));
    } else {
      x = model->layers[l]->forward(x, ctx, l, probs_here ? &probs : nullptr);
    }
    if (opts.output_attentions) out.attentions.push_back(probs);
  }
  x = model->norm(x);  // [B, T, C]
  out.hidden = x;
  if (opts.output_hidden_states) out.hidden_states.push_back(x);
  if (cache != nullptr) cache->length = S;
  if (opts.skip_lm_head) return out;
  if (opts.last_logits_only) x = x.narrow(1, T - 1, 1);  // [B, 1, C]
  out.logits = lm_head ? lm_head(x) : torch::nn::functional::linear(x, model->embed_tokens->weight);  // [B, T, V]
  return out;
}

// ---- Hugging Face names ------------------------------------------------------------------

namespace {

// One Hugging Face tensor = rows [offset, offset + rows) of one of our parameters.
struct HfSlot {
  torch::Tensor param;
  int64_t offset = 0, rows = 0;
};

std::map<std::string, HfSlot> hf_slots(const Qwen2ForCausalLMImpl& m) {
  const ModelConfig& c = m.config();
  std::map<std::string, HfSlot> s;
  auto whole = [](const torch::Tensor& t) { return HfSlot{t, 0, t.size(0)}; };
  s["model.embed_tokens.weight"] = whole(m.model->embed_tokens->weight);
  s["model.norm.weight"] = whole(m.model->norm->weight);
  if (m.lm_head) s["lm_head.weight"] = whole(m.lm_head->weight);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const auto& layer = m.model->layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s[p + "input_layernorm.weight"] = whole(layer->input_layernorm->weight);
    s[p + "post_attention_layernorm.weight"] = whole(layer->post_attention_layernorm->weight);
    const auto& qkv = layer->self_attn->qkv_proj;
    const int64_t q = c.q_size(), kv = c.kv_size();
    s[p + "self_attn.q_proj.weight"] = HfSlot{qkv->weight, 0, q};
    s[p + "self_attn.k_proj.weight"] = HfSlot{qkv->weight, q, kv};
    s[p + "self_attn.v_proj.weight"] = HfSlot{qkv->weight, q + kv, kv};
    if (c.qkv_bias) {
      s[p + "self_attn.q_proj.bias"] = HfSlot{qkv->bias, 0, q};
      s[p + "self_attn.k_proj.bias"] = HfSlot{qkv->bias, q, kv};
      s[p + "self_attn.v_proj.bias"] = HfSlot{qkv->bias, q + kv, kv};
    }
    s[p + "self_attn.o_proj.weight"] = whole(layer->self_attn->o_proj->weight);
    if (c.o_bias) s[p + "self_attn.o_proj.bias"] = whole(layer->self_attn->o_proj->bias);
    const int64_t I = c.intermediate_size;
    s[p + "mlp.gate_proj.weight"] = HfSlot{layer->mlp->gate_up_proj->weight, 0, I};
    s[p + "mlp.up_proj.weight"] = HfSlot{layer->mlp->gate_up_proj->weight, I, I};
    s[p + "mlp.down_proj.weight"] = whole(layer->mlp->down_proj->weight);
  }
  return s;
}

std::string shape_str(at::IntArrayRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

std::map<std::string, torch::Tensor> Qwen2ForCausalLMImpl::hf_state_dict() const {
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, slot] : hf_slots(*this)) out[name] = slot.param.detach().narrow(0, slot.offset, slot.rows);
  return out;
}

void Qwen2ForCausalLMImpl::load_hf_state_dict(const std::map<std::string, torch::Tensor>& tensors,
                                              const std::string& where) {
  torch::NoGradGuard no_grad;
  auto slots = hf_slots(*this);
  for (auto& [name, slot] : slots) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      throw Error(ErrorInfo{"the checkpoint lacks tensor '" + name + "'", where, "every tensor of the config's model",
                            "no such tensor",
                            "check that config.json belongs to these weights (tie_word_embeddings, num_hidden_layers)"});
    }
    auto dst = slot.param.narrow(0, slot.offset, slot.rows);
    if (it->second.sizes() != dst.sizes()) {
      throw Error(ErrorInfo{"tensor '" + name + "' has the wrong shape", where, shape_str(dst.sizes()),
                            shape_str(it->second.sizes()), "check that config.json belongs to these weights"});
    }
    dst.copy_(it->second);
  }
  for (auto& [name, t] : tensors) {
    if (slots.count(name)) continue;
    if (name == "lm_head.weight" && cfg_.tie_word_embeddings) continue;  // some writers store the tied copy
    static const std::string kInvFreq = "self_attn.rotary_emb.inv_freq";  // stored by old transformers versions
    if (name.size() > kInvFreq.size() && name.compare(name.size() - kInvFreq.size(), kInvFreq.size(), kInvFreq) == 0) continue;
    throw Error(ErrorInfo{"the checkpoint holds an unexpected tensor '" + name + "'", where,
                          "only the tensors of the config's model", name,
                          "check that config.json belongs to these weights"});
  }
}

}  // namespace retort
