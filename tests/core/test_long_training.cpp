// Training at real shapes: the chunked LM head, activation checkpointing and packing each
// against the plain computation written directly from the math with full tensors
// (log_softmax of the whole [N, V] logits, a model run per sequence, no recomputation).
// Values and gradients must agree within 1e-5 relative.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "model/attention.h"     // defines: chunked_attention
#include "model/config.h"        // defines: ModelConfig
#include "model/lm_head.h"       // defines: chunked_head, head_token_logprobs
#include "model/transformer.h"   // defines: Qwen2ForCausalLM
#include "rollout/logprobs.h"    // defines: token_logprobs
#include "train/distill_losses.h"  // defines: logit_loss_rows
#include "train/micro_batch.h"   // defines: split_by_token_budget, MicroBatchConfig
#include "train/optim.h"         // defines: AdamW

// Last: Torch's logging headers define CHECK too; Catch's must win.
#include <catch2/catch.hpp>

using Catch::Detail::Approx;

namespace {

// max |a - b| <= 1e-5 max |b|: relative to the tensor's scale (float32 rounding makes entries
// near 0 differ by ~1e-7 |b|max whatever the order of the sums, so an elementwise relative
// bound would test the rounding, not the computation). `floor` bounds the scale from below.
bool close(const torch::Tensor& a, const torch::Tensor& b, double floor = 1e-6) {
  if (a.sizes() != b.sizes()) return false;
  auto x = a.to(torch::kDouble), y = b.to(torch::kDouble);
  const double scale = std::max(y.abs().max().item<double>(), floor);
  const double err = (x - y).abs().max().item<double>();
  if (err <= 1e-5 * scale) return true;
  UNSCOPED_INFO("max |a - b| = " << err << ", max |b| = " << scale);
  return false;
}

retort::ModelConfig tiny(int64_t vocab = 97, bool tied = false) {
  nlohmann::json j = {{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"}, {"vocab_size", vocab},
                      {"hidden_size", 32}, {"intermediate_size", 48}, {"num_hidden_layers", 3},
                      {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"max_position_embeddings", 128},
                      {"rope_theta", 10000.0}, {"rms_norm_eps", 1e-6}, {"tie_word_embeddings", tied}};
  return retort::ModelConfig::from_json(j, "test");
}

retort::Qwen2ForCausalLM make_model(uint64_t seed, bool tied = false) {
  torch::manual_seed(seed);
  retort::Qwen2ForCausalLM m(tiny(97, tied));
  // Larger weights than the 0.02 init so that the distributions are far from uniform.
  torch::NoGradGuard ng;
  for (auto& p : m->parameters())
    if (p.dim() == 2) p.normal_(0.0, 0.2);
  return m;
}

std::vector<torch::Tensor> grads_of(torch::nn::Module& m) {
  std::vector<torch::Tensor> g;
  for (auto& p : m.parameters()) g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return g;
}

void zero_grads(torch::nn::Module& m) {
  for (auto& p : m.parameters())
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
}

}  // namespace

// ---- the chunked LM head -----------------------------------------------------------------

TEST_CASE("chunked head: token log-probs and entropy equal the full log_softmax, values and gradients", "[unit]") {
  torch::manual_seed(3);
  const int64_t N = 37, C = 16, V = 50;
  for (double tau : {1.0, 0.7}) {
    auto h = (torch::randn({N, C}) * 2).requires_grad_(true);
    auto w = torch::randn({V, C}).requires_grad_(true);
    auto tgt = torch::randint(0, V, {N}, torch::kLong);
    auto weights = torch::randn({N, 2});  // a random linear functional of the outputs, for the gradients

    // Chunks of 5 tokens (250 elements / V): 8 chunks, the last one short.
    retort::HeadChunkOptions o;
    o.chunk_elements = 5 * V;
    auto got = retort::head_token_logprobs(h, w, tgt, tau, /*entropy=*/true, o);  // [N, 2]
    (got * weights).sum().backward();
    auto gh = h.grad().clone(), gw = w.grad().clone();
    h.mutable_grad() = torch::Tensor();
    w.mutable_grad() = torch::Tensor();

    // Reference from the definitions: z = h W^T / tau over the whole vocabulary at once.
    auto z = torch::matmul(h, w.t()) / tau;                        // [N, V]
    auto logp = torch::log_softmax(z, -1);                         // [N, V]
    auto lp = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1);      // [N]
    auto ent = -(logp.exp() * logp).sum(-1);                       // [N]
    auto ref = torch::stack({lp, ent}, -1);
    (ref * weights).sum().backward();
    INFO("tau " << tau);
    CHECK(close(got.detach(), ref.detach()));
    CHECK(close(gh, h.grad()));
    CHECK(close(gw, w.grad()));
  }
}

TEST_CASE("chunked head: logit distillation losses with teacher logits from teacher hidden states per chunk", "[unit]") {
  torch::manual_seed(5);
  const int64_t N = 23, Cs = 12, Ct = 20, V = 40, K = 6;
  auto hs = torch::randn({N, Cs}).requires_grad_(true);
  auto ws = torch::randn({V, Cs}).requires_grad_(true);
  auto ht = torch::randn({N, Ct});
  auto wt = torch::randn({V, Ct});
  auto mask = (torch::rand({N}) > 0.3).to(torch::kFloat);  // positions that count
  const double tau = 2.0;
  struct Case { std::string kind; double beta; };
  for (const Case& c : {Case{"forward_kl", 0.5}, Case{"reverse_kl", 0.5}, Case{"jsd", 0.5}, Case{"jsd", 0.1}, Case{"topk", 0.5}}) {
    INFO(c.kind << " beta " << c.beta);
    retort::HeadChunkOptions o;
    o.chunk_elements = 4 * V;  // 4 tokens a chunk
    auto fn = [&](const torch::Tensor& logits, int64_t b, int64_t n) {
      torch::Tensor t, ids, lp;
      {
        torch::NoGradGuard ng;
        t = torch::matmul(ht.narrow(0, b, n), wt.t());
        if (c.kind == "topk") {
          auto top = torch::log_softmax(t, -1).topk(K, -1);
          lp = std::get<0>(top);
          ids = std::get<1>(top);
          t = torch::Tensor();
        }
      }
      return retort::logit_loss_rows(c.kind, logits, t, ids, lp, c.beta, tau).unsqueeze(-1);
    };
    auto got = (retort::chunked_head(hs, ws, 1, fn, o).squeeze(-1) * mask).sum() / mask.sum();
    got.backward();
    auto gh = hs.grad().clone(), gw = ws.grad().clone();
    hs.mutable_grad() = torch::Tensor();
    ws.mutable_grad() = torch::Tensor();

    // Reference from the papers' formulas on the full [N, V] logits.
    auto ls = torch::log_softmax(torch::matmul(hs, ws.t()) / tau, -1);   // student log p_s
    auto tl = torch::matmul(ht, wt.t());
    auto lt = torch::log_softmax(tl / tau, -1);                          // teacher log p_t
    auto ps = ls.exp(), pt = lt.exp();
    torch::Tensor per;
    if (c.kind == "forward_kl") {
      per = (pt * (lt - ls)).sum(-1);
    } else if (c.kind == "reverse_kl") {
      per = (ps * (ls - lt)).sum(-1);
    } else if (c.kind == "jsd") {
      auto m = c.beta * pt + (1 - c.beta) * ps;
      per = c.beta * (pt * (lt - m.log())).sum(-1) + (1 - c.beta) * (ps * (ls - m.log())).sum(-1);
    } else {
      auto top = torch::log_softmax(tl, -1).topk(K, -1);
      auto q = torch::softmax(std::get<0>(top) / tau, -1);  // teacher renormalised on its top-k
      per = (q * (q.log() - ls.gather(-1, std::get<1>(top)))).sum(-1);
    }
    auto ref = tau * tau * (per * mask).sum() / mask.sum();
    ref.backward();
    CHECK(close(got.detach(), ref.detach()));
    CHECK(close(gh, hs.grad()));
    CHECK(close(gw, ws.grad()));
    hs.mutable_grad() = torch::Tensor();
    ws.mutable_grad() = torch::Tensor();
  }
}

TEST_CASE("token_logprobs: the chunked path equals log_softmax of the model's full logits (tied and untied heads)", "[model]") {
  for (bool tied : {false, true}) {
    INFO("tied " << tied);
    auto model = make_model(11, tied);
    // Two rows: a left-padded prompt with a right-padded completion, and a full row.
    auto ids = torch::randint(1, 97, {2, 9}, torch::kLong);
    auto mask = torch::ones({2, 9}, torch::kLong);
    mask[0][0] = 0, mask[0][1] = 0, mask[0][8] = 0;
    retort::LogprobOptions lo;
    lo.temperature = 0.8;
    lo.head.chunk_elements = 3 * 97;  // 3 tokens a chunk
    auto got = retort::token_logprobs(*model, ids, mask, lo);  // [2, 8]
    auto weights = torch::randn({2, 8});
    (got * weights).sum().backward();
    auto g = grads_of(*model);
    zero_grads(*model);

    auto logits = model->forward(ids, mask).logits.narrow(1, 0, 8) / 0.8;  // [2, 8, V]
    auto lp = torch::log_softmax(logits, -1).gather(-1, ids.narrow(1, 1, 8).unsqueeze(-1)).squeeze(-1);
    auto valid = (mask.narrow(1, 1, 8) * mask.narrow(1, 0, 8)).to(torch::kFloat);
    auto ref = lp * valid;
    (ref * weights).sum().backward();
    auto gr = grads_of(*model);
    CHECK(close(got.detach(), ref.detach()));
    for (size_t i = 0; i < g.size(); ++i) CHECK(close(g[i], gr[i]));

    // first = 4: the last four positions only.
    torch::NoGradGuard ng;
    lo.first = 4;
    CHECK(close(retort::token_logprobs(*model, ids, mask, lo), ref.detach().narrow(1, 4, 4)));
  }
}

// ---- activation checkpointing ----------------------------------------------------------------

TEST_CASE("activation checkpointing: the same loss and gradients as keeping the activations", "[model]") {
  auto model = make_model(21);
  auto ids = torch::randint(1, 97, {2, 11}, torch::kLong);
  auto mask = torch::ones({2, 11}, torch::kLong);
  mask[1][10] = 0;
  auto probe = torch::randn({2, 11, 32});
  // A loss through the logits, every hidden state and the attention map of layer 1 (what
  // feature and attention distillation read): layer 1 runs eagerly, layers 0 and 2 recompute.
  auto run = [&](bool checkpoint) {
    retort::ForwardOptions o;
    o.checkpoint_layers = checkpoint;
    o.output_hidden_states = true;
    o.output_attentions = true;
    o.attention_layers = {1};
    auto out = model->forward(ids, mask, o);
    REQUIRE(out.attentions.size() == 3);
    CHECK(!out.attentions[0].defined());
    CHECK(out.attentions[1].defined());
    auto loss = torch::log_softmax(out.logits, -1).select(-1, 5).sum() + (out.hidden_states[1] * probe).sum() + (out.hidden_states[3] * probe).sum() +
                out.attentions[1].pow(2).sum();
    loss.backward();
    auto g = grads_of(*model);
    zero_grads(*model);
    return std::make_pair(loss.item<double>(), g);
  };
  auto plain = run(false), ck = run(true);
  CHECK(ck.first == Approx(plain.first).epsilon(1e-6));
  for (size_t i = 0; i < plain.second.size(); ++i) {
    INFO("parameter " << i);
    CHECK(close(ck.second[i], plain.second[i]));
  }
}

// ---- packing ---------------------------------------------------------------------------------

TEST_CASE("packing: logits, hidden states and attention maps of a packed row equal each sequence's own", "[model]") {
  auto model = make_model(31);
  torch::NoGradGuard ng;
  const std::vector<int64_t> lens = {5, 8, 3};
  std::vector<torch::Tensor> seqs;
  for (int64_t l : lens) seqs.push_back(torch::randint(1, 97, {1, l}, torch::kLong));
  auto packed = torch::cat(seqs, 1);  // [1, 16]
  std::vector<torch::Tensor> sid;
  for (size_t i = 0; i < lens.size(); ++i) sid.push_back(torch::full({1, lens[i]}, static_cast<int64_t>(i), torch::kLong));
  retort::ForwardOptions o;
  o.output_hidden_states = true;
  o.output_attentions = true;
  auto po = o;
  po.sequence_ids = torch::cat(sid, 1);
  auto p = model->forward(packed, {}, po);
  int64_t start = 0;
  for (size_t i = 0; i < lens.size(); ++i) {
    INFO("sequence " << i);
    const int64_t l = lens[i];
    auto s = model->forward(seqs[i], {}, o);
    CHECK(close(p.logits.narrow(1, start, l), s.logits));
    for (size_t k = 0; k < s.hidden_states.size(); ++k) CHECK(close(p.hidden_states[k].narrow(1, start, l), s.hidden_states[k]));
    for (size_t k = 0; k < s.attentions.size(); ++k) {
      auto block = p.attentions[k].narrow(2, start, l);  // [1, H, l, 16]
      CHECK(close(block.narrow(3, start, l), s.attentions[k]));
      CHECK(block.sum().item<double>() == Approx(static_cast<double>(4 * l)).epsilon(1e-5));  // no mass outside the block
    }
    start += l;
  }
  // Packed log-probs: a position whose next token starts another sequence scores 0, the others
  // equal the per-sequence ones.
  retort::LogprobOptions lo;
  lo.sequence_ids = po.sequence_ids;
  auto lp = retort::token_logprobs(*model, packed, {}, lo);  // [1, 15]
  CHECK(lp[0][4].item<double>() == 0.0);
  CHECK(close(lp.narrow(1, 5, 7), retort::token_logprobs(*model, seqs[1], {}, {})));
}

// ---- memory-efficient attention ----------------------------------------------------------------

namespace {

// The attention written from its definition with every kv head copied to its n_rep query
// heads (repeat_interleave: query head h reads kv head h / n_rep) and the whole [B, H, T, S]
// softmax: q [B, H, T, D], k, v [B, Hkv, S, D], allowed [B|1, 1, T, S] -> [B, H, T, D].
torch::Tensor reference_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& allowed) {
  const int64_t n_rep = q.size(1) / k.size(1);
  auto kk = k.repeat_interleave(n_rep, 1), vv = v.repeat_interleave(n_rep, 1);  // [B, H, S, D]
  auto s = torch::matmul(q, kk.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1)));
  s = s.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(s, -1), vv);
}

// max |a - b| <= tol max |b| (see close(); tolerance by dtype).
bool close_tol(const torch::Tensor& a, const torch::Tensor& b, double tol) {
  if (a.sizes() != b.sizes()) return false;
  auto x = a.to(torch::kDouble), y = b.to(torch::kDouble);
  const double scale = std::max(y.abs().max().item<double>(), 1e-12);
  const double err = (x - y).abs().max().item<double>();
  if (err <= tol * scale) return true;
  UNSCOPED_INFO("max |a - b| = " << err << ", max |b| = " << scale);
  return false;
}

}  // namespace

TEST_CASE("memory-efficient attention: outputs and gradients equal the eager softmax attention", "[model]") {
  torch::manual_seed(41);
  const int64_t B = 2, T = 13, D = 8;
  auto ti = torch::arange(T, torch::kLong);
  auto causal = (ti.unsqueeze(0) <= ti.unsqueeze(1));  // [T, T]: key s <= query t
  // Padded: row 1 has 4 left-padding tokens; a padding query attends only itself (as the model does).
  auto key_valid = torch::ones({B, T}, torch::kBool);
  key_valid[1].narrow(0, 0, 4).fill_(false);
  auto padded = causal.unsqueeze(0).logical_and(key_valid.unsqueeze(1).logical_or(torch::eye(T, torch::kBool).unsqueeze(0)));
  // Packed: sequences of 5, 3 and 5 tokens in one row, block-diagonal causal.
  auto seg = torch::tensor({0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2}, torch::kLong);
  auto packed = causal.logical_and(seg.unsqueeze(0) == seg.unsqueeze(1));  // [T, T]
  struct Case {
    std::string name;
    int64_t H, Hkv, S;
    torch::Tensor allowed;  // [B|1, 1, T, S]
    int64_t chunk_rows;     // queries per chunk
  };
  // 5 past keys before the 13 queries (a cache): query t may attend keys 0 .. t + 5.
  auto past = (torch::arange(T + 5, torch::kLong).unsqueeze(0) <= (ti + 5).unsqueeze(1));  // [T, T + 5]
  std::vector<Case> cases = {
      {"causal, GQA n_rep 2, 5 chunks of 3 (the last short)", 4, 2, T, causal.view({1, 1, T, T}), 3},
      {"causal, one chunk", 4, 2, T, causal.view({1, 1, T, T}), T},
      {"padded rows, GQA n_rep 4", 4, 1, T, padded.unsqueeze(1), 4},
      {"packed block-diagonal, no GQA", 2, 2, T, packed.view({1, 1, T, T}), 2},
      {"packed, 1 query a chunk, GQA n_rep 3", 6, 2, T, packed.view({1, 1, T, T}), 1},
      {"past keys (S > T)", 4, 2, T + 5, past.view({1, 1, T, T + 5}), 4},
  };
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    const double tol = dtype == torch::kFloat ? 1e-5 : 1e-10;
    for (const auto& c : cases) {
      INFO(c.name << (dtype == torch::kFloat ? ", float32" : ", float64"));
      auto opt = torch::TensorOptions().dtype(dtype);
      auto q = (torch::randn({B, c.H, T, D}, opt) * 1.5).requires_grad_(true);
      auto k = (torch::randn({B, c.Hkv, c.S, D}, opt) * 1.5).requires_grad_(true);
      auto v = torch::randn({B, c.Hkv, c.S, D}, opt).requires_grad_(true);
      auto w = torch::randn({B, c.H, T, D}, opt);  // a random linear functional of the output, for the gradients
      retort::AttentionChunkOptions o;
      o.chunk_elements = c.chunk_rows * B * c.H * c.S;
      auto got = retort::chunked_attention(q, k, v, c.allowed, o);
      auto g = torch::autograd::grad({(got * w).sum()}, {q, k, v});
      auto ref = reference_attention(q, k, v, c.allowed);
      auto gr = torch::autograd::grad({(ref * w).sum()}, {q, k, v});
      CHECK(got.scalar_type() == dtype);
      CHECK(close_tol(got.detach(), ref.detach(), tol));
      for (size_t i = 0; i < 3; ++i) {
        INFO("gradient " << "qkv"[i]);
        CHECK(close_tol(g[i], gr[i], tol));
      }
    }
  }

  SECTION("a query with no allowed key gives 0 and no NaN; the other rows are unchanged") {
    auto q = torch::randn({1, 2, 6, D}).requires_grad_(true);
    auto k = torch::randn({1, 1, 6, D}).requires_grad_(true);
    auto v = torch::randn({1, 1, 6, D}).requires_grad_(true);
    auto allowed = causal.narrow(0, 0, 6).narrow(1, 0, 6).clone().view({1, 1, 6, 6});
    allowed[0][0][3].fill_(false);  // query 3 attends nothing (the eager softmax gives NaN there)
    auto w = torch::randn({1, 2, 6, D});
    w.select(2, 3).zero_();  // the reference's row 3 is NaN; leave it out of the loss
    retort::AttentionChunkOptions o;
    o.chunk_elements = 2 * 2 * 6;  // 2 queries a chunk: the masked row shares a chunk with a real one
    auto got = retort::chunked_attention(q, k, v, allowed, o);
    auto g = torch::autograd::grad({(got * w).sum()}, {q, k, v});
    CHECK(got.isnan().any().item<bool>() == false);
    CHECK(got.detach().select(2, 3).abs().max().item<double>() == 0.0);
    for (const auto& t : g) CHECK(t.isnan().any().item<bool>() == false);
    CHECK(g[0].select(2, 3).abs().max().item<double>() == 0.0);
    // Reference: the same mask with query 3 given its own key (its output is left out of the loss).
    auto allowed_ref = allowed.clone();
    allowed_ref[0][0][3][3] = true;
    auto ref = reference_attention(q, k, v, allowed_ref);
    auto gr = torch::autograd::grad({(ref * w).sum()}, {q, k, v});
    for (int64_t t : {0, 1, 2, 4, 5}) CHECK(close(got.detach().select(2, t), ref.detach().select(2, t)));
    for (size_t i = 0; i < 3; ++i) CHECK(close(g[i], gr[i]));
  }
}

TEST_CASE("memory-efficient attention and checkpointed MLP chunks: the model's logits and gradients equal the eager attention's", "[model]") {
  auto model = make_model(51);
  const int64_t T = 11;
  auto ids = torch::randint(1, 97, {2, T}, torch::kLong);
  auto mask = torch::ones({2, T}, torch::kLong);
  mask[0].narrow(0, 0, 3).fill_(0);  // left padding
  mask[1][T - 1] = 0;               // right padding
  auto seq = torch::tensor({0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2}, torch::kLong).unsqueeze(0).expand({2, T}).contiguous();
  auto weights = torch::randn({2, T, 97});
  auto valid = mask.unsqueeze(-1).to(torch::kFloat);  // the loss reads real tokens only
  // chunk_elements: 0 = eager; 2 x B H S = 2 queries a chunk (6 chunks, the last short).
  // Checkpointed layers also take their MLP half 3 tokens at a time (B 2I = 192 elements a
  // token), against the eager run's unchunked, uncheckpointed layers.
  auto run = [&](int64_t chunk_elements, bool checkpoint, bool pack) {
    retort::ForwardOptions o;
    o.attention_chunk_elements = chunk_elements;
    o.checkpoint_layers = checkpoint;
    o.mlp_chunk_elements = 3 * 2 * 2 * 48;
    if (pack) o.sequence_ids = seq;
    auto logits = model->forward(ids, mask, o).logits;  // [2, T, V]
    auto loss = (torch::log_softmax(logits, -1) * weights * valid).sum();
    loss.backward();
    auto g = grads_of(*model);
    zero_grads(*model);
    return std::make_pair(logits.detach(), g);
  };
  for (bool pack : {false, true}) {
    for (bool checkpoint : {false, true}) {
      INFO((pack ? "packed" : "padded") << ", checkpointing " << (checkpoint ? "on" : "off"));
      auto eager = run(0, false, pack), chunked = run(2 * 2 * 4 * T, checkpoint, pack);
      CHECK(chunked.first.isnan().any().item<bool>() == false);
      CHECK(close(chunked.first, eager.first));
      for (size_t i = 0; i < eager.second.size(); ++i) {
        INFO("parameter " << i);
        CHECK(close(chunked.second[i], eager.second[i]));
      }
    }
  }
  // Without autograd the chunked path runs when [B, H, T, S] passes the budget: same logits.
  torch::NoGradGuard ng;
  retort::ForwardOptions eager, chunked;
  eager.attention_chunk_elements = 0;
  chunked.attention_chunk_elements = 3 * 2 * 4 * T;
  CHECK(close(model->forward(ids, mask, chunked).logits, model->forward(ids, mask, eager).logits));
}

// ---- the optimizer's memory ------------------------------------------------------------------

TEST_CASE("AdamW: a parameter updated in slices of rows equals torch::optim::AdamW", "[unit]") {
  // [2100, 2048] = 4.3M elements: two slices of 2^22 elements (2048 rows, then 52).
  torch::manual_seed(61);
  // Small weights: the updates (~1e-3) are compared through p - p0, exact only to float32's
  // resolution of p itself.
  auto w = (torch::randn({2100, 2048}) * 1e-3).requires_grad_(true);
  auto b = (torch::randn({7}) * 1e-3).requires_grad_(true);
  auto w_ref = w.detach().clone().requires_grad_(true), b_ref = b.detach().clone().requires_grad_(true);
  retort::OptimConfig oc;
  oc.weight_decay = 0.1;  // decoupled, on 2-d tensors only
  retort::AdamW ours({{"w", w}, {"b", b}}, oc);
  torch::optim::AdamW ref_w({w_ref}, torch::optim::AdamWOptions(1e-3).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1));
  torch::optim::AdamW ref_b({b_ref}, torch::optim::AdamWOptions(1e-3).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0));
  const auto w0 = w.detach().clone(), b0 = b.detach().clone();
  for (int step = 0; step < 3; ++step) {
    auto gw = torch::randn({2100, 2048}), gb = torch::randn({7});
    w.mutable_grad() = gw.clone(), b.mutable_grad() = gb.clone();
    w_ref.mutable_grad() = gw.clone(), b_ref.mutable_grad() = gb.clone();
    ours.step(1e-3);
    ref_w.step();
    ref_b.step();
  }
  // The updates (not the parameters, which would hide them under the initial values).
  CHECK(close(w.detach() - w0, w_ref.detach() - w0));
  CHECK(close(b.detach() - b0, b_ref.detach() - b0));
}

TEST_CASE("split_by_token_budget: packed sums and padded rectangles stay within the budget", "[unit]") {
  using V = std::vector<std::vector<int64_t>>;
  CHECK(retort::split_by_token_budget({5, 4, 3, 9, 1}, 10, /*packed=*/true) == V{{0, 1}, {2}, {3, 4}});
  CHECK(retort::split_by_token_budget({5, 4, 3, 9, 1}, 10, /*packed=*/false) == V{{0, 1}, {2}, {3}, {4}});
  CHECK(retort::split_by_token_budget({12, 2}, 10, /*packed=*/true) == V{{0}, {1}});  // longer than the budget: alone
  CHECK(retort::split_by_token_budget({}, 10, true).empty());
}

TEST_CASE("compact_heap: auto compacts the long steps of real shapes and leaves the demo's alone", "[unit]") {
  retort::MicroBatchConfig t;  // compact_heap = "auto"
  // The demo's GRPO update: 64 rows of 270 tokens, the anchor teacher 96 wide (6.6 MB a hidden state).
  CHECK_FALSE(t.compact_heap_for(64 * 270, 96));
  // The demo's teacher SFT: 16 traces padded to 384 tokens, 96 wide.
  CHECK_FALSE(t.compact_heap_for(16 * 384, 96));
  // Qwen2.5-0.5B (896 wide): 8k and 4k tokens compact, 2k not (the measured cost is 5% there).
  CHECK(t.compact_heap_for(8192, 896));
  CHECK(t.compact_heap_for(4096, 896));
  CHECK_FALSE(t.compact_heap_for(2048, 896));
  // R1-Distill-Qwen-1.5B (1536 wide) from 2k tokens a micro-batch.
  CHECK(t.compact_heap_for(2048, 1536));
  CHECK_FALSE(t.compact_heap_for(1024, 1536));
  t.compact_heap = "on";
  CHECK(t.compact_heap_for(1, 1));
  t.compact_heap = "off";
  CHECK_FALSE(t.compact_heap_for(16384, 1536));
}
