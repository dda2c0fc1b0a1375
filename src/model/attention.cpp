// Memory-efficient attention (see attention.h).
#include "model/attention.h"

#include <algorithm>  // defines: std::min, std::max
#include <cmath>      // defines: std::sqrt
#include <limits>     // defines: std::numeric_limits
#include <string>     // defines: std::string, std::to_string
#include <vector>     // defines: std::vector

#include "common/error.h"  // defines: retort::Error

namespace retort {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr const char* kWhere = "chunked_attention";

// Scores, softmax statistics and gradient accumulators: float32, or float64 for float64 inputs.
torch::ScalarType acc_type(const torch::Tensor& q) {
  return q.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
}

// The keys [s0, s1) that any query of rows [t0, t0 + n) may attend, from the mask
// allowed [B or 1, 1, T, S]; s0 = s1 = 0 when none may attend any key. For a causal mask this
// is the prefix 0 .. t0 + n - 1; for a packed batch the blocks of the sequences the chunk meets.
std::pair<int64_t, int64_t> key_range(const torch::Tensor& allowed, int64_t t0, int64_t n) {
  auto cols = allowed.narrow(2, t0, n).any(2).any(0).view({-1});  // [S] bool
  auto nz = cols.nonzero().view({-1}).cpu();                       // [K] int64
  if (nz.numel() == 0) return {0, 0};
  return {nz[0].item<int64_t>(), nz[nz.numel() - 1].item<int64_t>() + 1};
}

// One chunk's scaled, masked scores over keys [s0, s0 + Sb):
//   qc [B, Hkv, n_rep n, D], kb [B, Hkv, Sb, D], mask [B or 1, 1, n, Sb]
//   -> [B, H, n, Sb] in `acc` (-inf where masked).
torch::Tensor chunk_scores(const torch::Tensor& qc, const torch::Tensor& kb, const torch::Tensor& mask, int64_t H,
                           torch::ScalarType acc, double scale) {
  const int64_t B = qc.size(0), n = mask.size(2), Sb = kb.size(2);
  auto s = torch::matmul(qc, kb.transpose(-2, -1)).to(acc).view({B, H, n, Sb});  // [B, H, n, Sb]
  return s.mul_(scale).masked_fill_(mask.logical_not(), -std::numeric_limits<double>::infinity());
}

class ChunkedAttentionFunction : public torch::autograd::Function<ChunkedAttentionFunction> {
 public:
  // q [B, H, T, D], k, v [B, Hkv, S, D], allowed [B or 1, 1, T, S] -> [B, H, T, D]. Runs with
  // autograd off (Function::apply); saves q, k, v, the output and lse [B, H, T].
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& q_in, const torch::Tensor& k_in,
                               const torch::Tensor& v_in, const torch::Tensor& allowed, int64_t chunk) {
    const int64_t B = q_in.size(0), H = q_in.size(1), T = q_in.size(2), D = q_in.size(3);
    const int64_t Hkv = k_in.size(1), n_rep = H / Hkv;  // S = k_in.size(2) keys, read per chunk below
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    auto out = torch::zeros({B, H, T, D}, q.options());                                   // [B, H, T, D]
    auto lse = torch::zeros({B, H, T}, q.options().dtype(acc_type(q)));                  // [B, H, T]
    std::vector<int64_t> ranges;  // per chunk: s0, s1
    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
      const int64_t n = std::min(chunk, T - t0);
      auto [s0, s1] = key_range(allowed, t0, n);
      ranges.push_back(s0);
      ranges.push_back(s1);
      if (s1 == s0) continue;  // no query of the chunk attends anything: output 0, lse 0
      const int64_t Sb = s1 - s0;
      // GQA without copying kv heads: the n_rep query heads of one kv head stacked on the row axis.
      auto qc = q.narrow(2, t0, n).reshape({B, Hkv, n_rep * n, D});                      // [B, Hkv, n_rep n, D]
      auto kb = k.narrow(2, s0, Sb), vb = v.narrow(2, s0, Sb);                           // [B, Hkv, Sb, D]
      auto mask = allowed.narrow(2, t0, n).narrow(3, s0, Sb);                            // [B|1, 1, n, Sb]
      auto s = chunk_scores(qc, kb, mask, H, acc_type(q), scale);                        // [B, H, n, Sb]
      auto l = torch::logsumexp(s, -1);                                                  // [B, H, n]
      l.masked_fill_(l.isinf(), 0.0);  // a row with no allowed key: P = exp(-inf - 0) = 0, no NaN
      lse.narrow(2, t0, n).copy_(l);
      auto p = s.sub_(l.unsqueeze(-1)).exp_();                                           // [B, H, n, Sb]
      auto o = torch::matmul(p.to(v.scalar_type()).view({B, Hkv, n_rep * n, Sb}), vb);  // [B, Hkv, n_rep n, D]
      out.narrow(2, t0, n).copy_(o.view({B, H, n, D}));
    }
    ctx->save_for_backward({q, k, v, out, lse, allowed});
    ctx->saved_data["chunk"] = chunk;
    ctx->saved_data["ranges"] = c10::List<int64_t>(ranges);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4], &allowed = saved[5];
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const auto ranges = ctx->saved_data["ranges"].toIntList().vec();
    const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
    const int64_t Hkv = k.size(1), S = k.size(2), n_rep = H / Hkv;
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    const auto acc = acc_type(q);
    auto dout = grads[0].contiguous();                                                   // [B, H, T, D]
    auto delta = (dout.to(acc) * out.to(acc)).sum(-1);                                   // [B, H, T] rowsum(dO * O)
    auto dq = torch::zeros({B, H, T, D}, q.options());
    auto dk = torch::zeros({B, Hkv, S, D}, q.options().dtype(acc));
    auto dv = torch::zeros({B, Hkv, S, D}, q.options().dtype(acc));
    size_t c = 0;
    for (int64_t t0 = 0; t0 < T; t0 += chunk, ++c) {
      const int64_t n = std::min(chunk, T - t0);
      const int64_t s0 = ranges[2 * c], s1 = ranges[2 * c + 1];
      if (s1 == s0) continue;
      const int64_t Sb = s1 - s0, R = n_rep * n;
      auto qc = q.narrow(2, t0, n).reshape({B, Hkv, R, D});                               // [B, Hkv, R, D]
      auto doc = dout.narrow(2, t0, n).reshape({B, Hkv, R, D});                           // [B, Hkv, R, D]
      auto kb = k.narrow(2, s0, Sb), vb = v.narrow(2, s0, Sb);                            // [B, Hkv, Sb, D]
      auto mask = allowed.narrow(2, t0, n).narrow(3, s0, Sb);
      // P recomputed from the saved lse: [B, H, n, Sb], 0 where masked.
      auto p = chunk_scores(qc, kb, mask, H, acc, scale).sub_(lse.narrow(2, t0, n).unsqueeze(-1)).exp_();
      auto pg = p.to(v.scalar_type()).view({B, Hkv, R, Sb});
      dv.narrow(2, s0, Sb).add_(torch::matmul(pg.transpose(-2, -1), doc.to(v.scalar_type())));  // [B, Hkv, Sb, D]
      auto ds = torch::matmul(doc.to(v.scalar_type()), vb.transpose(-2, -1)).to(acc).view({B, H, n, Sb});  // dP
      ds.sub_(delta.narrow(2, t0, n).unsqueeze(-1)).mul_(p).mul_(scale);                 // dS / sqrt(D)
      auto dsg = ds.to(q.scalar_type()).view({B, Hkv, R, Sb});
      dq.narrow(2, t0, n).copy_(torch::matmul(dsg, kb).view({B, H, n, D}));
      dk.narrow(2, s0, Sb).add_(torch::matmul(dsg.transpose(-2, -1), qc));                // [B, Hkv, Sb, D]
    }
    return {dq, dk.to(k.scalar_type()), dv.to(v.scalar_type()), torch::Tensor(), torch::Tensor()};
  }
};

std::string shape(const torch::Tensor& t) { return c10::str(t.sizes()); }

}  // namespace

torch::Tensor chunked_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const torch::Tensor& allowed, const AttentionChunkOptions& opts) {
  const bool ok = q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes() && k.size(0) == q.size(0) &&
                  k.size(3) == q.size(3) && k.size(1) > 0 && q.size(1) % k.size(1) == 0 && allowed.dim() == 4 &&
                  (allowed.size(0) == 1 || allowed.size(0) == q.size(0)) && allowed.size(1) == 1 &&
                  allowed.size(2) == q.size(2) && allowed.size(3) == k.size(2) && allowed.scalar_type() == torch::kBool &&
                  k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type();
  if (!ok) {
    throw Error(ErrorInfo{"attention inputs have inconsistent shapes or dtypes", kWhere,
                          "q [B, H, T, D], k and v [B, Hkv, S, D] of q's dtype with H a multiple of Hkv, "
                          "allowed [B or 1, 1, T, S] bool",
                          "q " + shape(q) + ", k " + shape(k) + ", v " + shape(v) + ", allowed " + shape(allowed) + " " +
                              std::string(c10::toString(allowed.scalar_type())),
                          "pass the projections reshaped to heads and the model's boolean mask"});
  }
  if (opts.chunk_elements <= 0) {
    throw Error(ErrorInfo{"the attention chunk size must be positive", kWhere, "chunk_elements >= 1",
                          std::to_string(opts.chunk_elements), "use the eager attention instead of a zero budget"});
  }
  const int64_t per_row = std::max<int64_t>(1, q.size(0) * q.size(1) * k.size(2));  // B H S scores per query
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(std::max<int64_t>(q.size(2), 1), opts.chunk_elements / per_row));
  return ChunkedAttentionFunction::apply(q, k, v, allowed, chunk);
}

}  // namespace retort
