// The LM head in chunks (see lm_head.h).
#include "model/lm_head.h"

#include <algorithm>  // defines: std::min, std::max
#include <string>     // defines: std::to_string

#include <ATen/autocast_mode.h>  // defines: at::autocast::is_enabled

#include "common/error.h"  // defines: retort::Error

namespace retort {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What a call needs in backward besides its tensors: the quantity and the chunk size. Held in
// the context as a capsule (an IValue holding any CustomClassHolder).
struct HeadChunkSpec : torch::CustomClassHolder {
  HeadChunkFn fn;
  int64_t K = 1;
  int64_t chunk = 1;
};

// Mixed precision (runtime.precision = bf16) runs the model under autocast; the head's logits
// and every quantity of them stay float32 (log-probs for GRPO's ratio and KL, the losses).
struct AutocastOff {
  bool was = at::autocast::is_enabled();
  AutocastOff() { at::autocast::set_enabled(false); }
  ~AutocastOff() { at::autocast::set_enabled(was); }
};

// One chunk's logits [n, V] float32 from hidden rows [n, C] and the float32 weight [V, C].
torch::Tensor chunk_logits(const torch::Tensor& hidden, const torch::Tensor& w32, int64_t begin, int64_t n) {
  return torch::nn::functional::linear(hidden.narrow(0, begin, n).to(torch::kFloat), w32);
}

torch::Tensor check_chunk_output(const torch::Tensor& q, int64_t n, int64_t K) {
  if (q.dim() != 2 || q.size(0) != n || q.size(1) != K) {
    throw Error(ErrorInfo{"a chunked-head quantity returned the wrong shape", "chunked_head",
                          "[" + std::to_string(n) + ", " + std::to_string(K) + "]", c10::str(q.sizes()),
                          "the function must return one row of K values per token of its chunk"});
  }
  return q;
}

class ChunkedHeadFunction : public torch::autograd::Function<ChunkedHeadFunction> {
 public:
  // hidden [N, C], weight [V, C] -> [N, K] float32. Runs with autograd off (Function::apply).
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& hidden, const torch::Tensor& weight,
                               c10::intrusive_ptr<HeadChunkSpec> spec) {
    ctx->save_for_backward({hidden, weight});
    AutocastOff fp32;
    const int64_t N = hidden.size(0);
    auto out = torch::empty({N, spec->K}, hidden.options().dtype(torch::kFloat));  // [N, K]
    auto w32 = weight.to(torch::kFloat);  // [V, C]; no copy for a float32 model
    for (int64_t b = 0; b < N; b += spec->chunk) {
      const int64_t n = std::min(spec->chunk, N - b);
      out.narrow(0, b, n).copy_(check_chunk_output(spec->fn(chunk_logits(hidden, w32, b, n), b, n), n, spec->K));
    }
    ctx->saved_data["spec"] = c10::IValue::make_capsule(std::move(spec));
    return out;
  }

  // grads[0] [N, K] -> d hidden [N, C], d weight [V, C], nothing for the spec.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& hidden = saved[0];
    const torch::Tensor& weight = saved[1];
    auto holder = ctx->saved_data["spec"].toCapsule();
    const auto& spec = *static_cast<HeadChunkSpec*>(holder.get());
    const bool want_h = ctx->needs_input_grad(0), want_w = ctx->needs_input_grad(1);
    AutocastOff fp32;
    torch::Tensor g = grads[0];  // [N, K]
    const int64_t N = hidden.size(0);
    auto w32 = weight.to(torch::kFloat);  // [V, C]
    torch::Tensor grad_h, grad_w;
    if (want_h) grad_h = torch::zeros(hidden.sizes(), hidden.options().dtype(torch::kFloat));  // [N, C]
    if (want_w) grad_w = torch::zeros(w32.sizes(), w32.options());                           // [V, C] float32
    if (g.defined()) {
      g = g.to(torch::kFloat);
      for (int64_t b = 0; b < N; b += spec.chunk) {
        const int64_t n = std::min(spec.chunk, N - b);
        torch::Tensor dlogits;  // [n, V]
        {
          torch::AutoGradMode on(true);
          auto logits = chunk_logits(hidden.detach(), w32.detach(), b, n).requires_grad_(true);  // [n, V]
          auto q = check_chunk_output(spec.fn(logits, b, n), n, spec.K);                         // [n, K]
          if (!q.requires_grad()) continue;  // the quantity does not depend on these logits
          dlogits = torch::autograd::grad({q}, {logits}, {g.narrow(0, b, n)}, /*retain_graph=*/false,
                                          /*create_graph=*/false, /*allow_unused=*/true)[0];
        }
        if (!dlogits.defined()) continue;
        if (want_h) grad_h.narrow(0, b, n).copy_(torch::matmul(dlogits, w32));           // [n, C]
        if (want_w) grad_w.addmm_(dlogits.t(), hidden.narrow(0, b, n).to(torch::kFloat));  // [V, C] += [V, n] [n, C]
      }
    }
    return {want_h ? grad_h.to(hidden.scalar_type()) : torch::Tensor(),
            want_w ? grad_w.to(weight.scalar_type()) : torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor chunked_head(const torch::Tensor& hidden, const torch::Tensor& weight, int64_t K, HeadChunkFn fn,
                           const HeadChunkOptions& opts) {
  if (hidden.dim() != 2 || weight.dim() != 2 || hidden.size(1) != weight.size(1)) {
    throw Error(ErrorInfo{"chunked_head needs hidden states [N, C] and a head weight [V, C]", "chunked_head",
                          "[N, C] and [V, C] with equal C", c10::str(hidden.sizes()) + " and " + c10::str(weight.sizes()),
                          "flatten the batch to rows first (hidden.reshape({-1, C}))"});
  }
  auto spec = c10::make_intrusive<HeadChunkSpec>();
  spec->fn = std::move(fn);
  spec->K = K;
  spec->chunk = std::max<int64_t>(1, opts.chunk_elements / std::max<int64_t>(1, weight.size(0)));
  return ChunkedHeadFunction::apply(hidden, weight, std::move(spec));
}

torch::Tensor head_token_logprobs(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& targets,
                                  double temperature, bool entropy, const HeadChunkOptions& opts) {
  if (targets.dim() != 1 || targets.size(0) != hidden.size(0)) {
    throw Error(ErrorInfo{"head_token_logprobs needs one target per hidden row", "head_token_logprobs",
                          "[" + std::to_string(hidden.size(0)) + "]", c10::str(targets.sizes()), ""});
  }
  auto tgt = targets.to(hidden.device(), torch::kLong);  // [N]
  HeadChunkFn fn = [tgt, temperature, entropy](const torch::Tensor& logits, int64_t b, int64_t n) {
    auto z = temperature != 1.0 ? logits / temperature : logits;  // [n, V]
    auto lse = z.logsumexp({-1}, /*keepdim=*/true);                 // [n, 1]
    auto lp = z.gather(-1, tgt.narrow(0, b, n).unsqueeze(-1)) - lse;  // [n, 1]
    if (!entropy) return lp;
    auto h = lse.squeeze(-1) - (torch::softmax(z, -1) * z).sum(-1);  // [n]
    return torch::stack({lp.squeeze(-1), h}, -1);                    // [n, 2]
  };
  return chunked_head(hidden, weight, entropy ? 2 : 1, std::move(fn), opts);
}

}  // namespace retort
