// Memory-efficient attention and paged decode attention (see attention.h).
#include "model/attention.h"

#include <algorithm>  // defines: std::min, std::max
#include <cmath>      // defines: std::sqrt
#include <limits>     // defines: std::numeric_limits
#include <string>     // defines: std::string, std::to_string
#include <vector>     // defines: std::vector

#include <ATen/Parallel.h>  // defines: at::parallel_for

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

namespace {

// The dot product of two float rows of width D, in 8 interleaved partial sums (so that the
// compiler vectorises it without reassociating: the order is fixed by the source, not by the
// instruction set), then the partial sums pairwise.
inline float dot8(const float* a, const float* b, int64_t D) {
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[d + l] * b[d + l];
  }
  for (; d < D; ++d) acc[d & 7] += a[d] * b[d];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// One (row, kv head) of paged_decode_attention: scores of its n_rep query heads over the L
// keys at `slots`, softmax, weighted sum of the values. `p` is scratch of n_rep * L floats.
// Built for AVX2 as well as the baseline where the compiler supports it: lanes are fixed by the
// source (dot8) and no FMA is enabled, so both builds round the same way.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void decode_item(const float* qh, const float* kp, const float* vp, const int64_t* slots, int64_t L, int64_t Hkv,
                 int64_t g, int64_t n_rep, int64_t D, float scale, float* p, float* oh) {
  for (int64_t s = 0; s < L; ++s) {
    const float* kr = kp + (slots[s] * Hkv + g) * D;
    for (int64_t r = 0; r < n_rep; ++r) p[r * L + s] = dot8(qh + r * D, kr, D) * scale;
  }
  std::fill(oh, oh + n_rep * D, 0.f);
  for (int64_t r = 0; r < n_rep; ++r) {
    float* pr = p + r * L;
    const float m = *std::max_element(pr, pr + L);
    for (int64_t s = 0; s < L; ++s) pr[s] = std::exp(pr[s] - m);
  }
  for (int64_t s = 0; s < L; ++s) {
    const float* vr = vp + (slots[s] * Hkv + g) * D;
    for (int64_t r = 0; r < n_rep; ++r) {
      const float w = p[r * L + s];
      float* o = oh + r * D;
      for (int64_t d = 0; d < D; ++d) o[d] += w * vr[d];
    }
  }
  for (int64_t r = 0; r < n_rep; ++r) {
    float z = 0.f;
    for (int64_t s = 0; s < L; ++s) z += p[r * L + s];
    const float inv = 1.f / z;
    for (int64_t d = 0; d < D; ++d) oh[r * D + d] *= inv;
  }
}

}  // namespace

torch::Tensor paged_decode_attention(const torch::Tensor& q, const torch::Tensor& k_pool, const torch::Tensor& v_pool,
                                     const torch::Tensor& read_slots, int64_t S, const torch::Tensor& lengths) {
  constexpr const char* where = "paged_decode_attention";
  const bool ok = q.dim() == 4 && q.size(2) == 1 && k_pool.dim() == 3 && v_pool.sizes() == k_pool.sizes() &&
                  k_pool.size(1) > 0 && q.size(1) % k_pool.size(1) == 0 && k_pool.size(2) == q.size(3) &&
                  q.scalar_type() == torch::kFloat && k_pool.scalar_type() == torch::kFloat &&
                  v_pool.scalar_type() == torch::kFloat && q.device().is_cpu() && k_pool.device().is_cpu() &&
                  read_slots.scalar_type() == torch::kLong && read_slots.numel() == q.size(0) * S &&
                  lengths.scalar_type() == torch::kLong && lengths.numel() == q.size(0) && k_pool.is_contiguous() &&
                  v_pool.is_contiguous();
  if (!ok) {
    throw Error(ErrorInfo{"paged decode attention inputs have inconsistent shapes, dtypes or devices", where,
                          "CPU float32 q [B, H, 1, D], contiguous k_pool and v_pool [slots, Hkv, D] with H a multiple "
                          "of Hkv, read_slots [B * S] and lengths [B] int64",
                          "q " + shape(q) + ", k_pool " + shape(k_pool) + ", v_pool " + shape(v_pool) + ", read_slots " +
                              shape(read_slots) + " with S " + std::to_string(S) + ", lengths " + shape(lengths),
                          "use the gathered (eager) attention for other devices, dtypes or several queries per row"});
  }
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3), Hkv = k_pool.size(1), n_rep = H / Hkv;
  const int64_t slots = k_pool.size(0);
  auto qc = q.contiguous();                          // [B, H, 1, D]
  auto rs = read_slots.contiguous();
  auto ln = lengths.contiguous();
  auto out = torch::empty({B, H, 1, D}, q.options());  // [B, H, 1, D]
  const float* qp = qc.data_ptr<float>();
  const float* kp = k_pool.data_ptr<float>();
  const float* vp = v_pool.data_ptr<float>();
  const int64_t* sp = rs.data_ptr<int64_t>();
  const int64_t* lp = ln.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    if (lp[b] < 1 || lp[b] > S) {
      throw Error(ErrorInfo{"a row's key count is outside its slot table", where, "1 <= lengths[b] <= S = " + std::to_string(S),
                            "lengths[" + std::to_string(b) + "] = " + std::to_string(lp[b]),
                            "pass each row's positions held, including the new token"});
    }
    for (int64_t p = 0; p < lp[b]; ++p) {
      const int64_t slot = sp[b * S + p];
      if (slot < 0 || slot >= slots) {
        throw Error(ErrorInfo{"a row's slot is outside the KV pool", where, "0 <= slot < " + std::to_string(slots),
                              "read_slots[" + std::to_string(b * S + p) + "] = " + std::to_string(slot),
                              "the block tables and the pool must come from the same engine"});
      }
    }
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  // One work item per (row, kv head): its n_rep query heads read each key and value once.
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> p;  // [n_rep, L] scores, then unnormalised probabilities
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / Hkv, g = item % Hkv, L = lp[b];
      p.resize(static_cast<size_t>(n_rep * L));
      decode_item(qp + (b * H + g * n_rep) * D, kp, vp, sp + b * S, L, Hkv, g, n_rep, D, scale, p.data(),
                  op + (b * H + g * n_rep) * D);
    }
  });
  return out;
}

}  // namespace retort
