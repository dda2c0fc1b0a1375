// The teacher-guided losses of hierarchical distillation, as pure functions of tensors,
// and the progressive schedule that weights them.
//
//   logic level:     temperature-softened output distributions (KL, reverse KL, GKD's
//                    generalised JSD, a top-k sparse KL, offline top-k from the trace file)
//   feature level:   hidden states at mapped layers, through a learned projection when the
//                    widths differ (MSE or cosine)
//   structure level: attention distributions at mapped layers (KL per query row)
//
// Shapes: N sequences, T positions, V vocabulary, C width, H heads, K top-k.
// Every loss averages over the positions where `mask` [N, T] is 1.
#pragma once

#include <map>     // defines: std::map
#include <string>  // defines: std::string
#include <vector>  // defines: std::vector

#include <torch/torch.h>  // defines: torch::Tensor

namespace retort {

class ConfigBinder;

// The logit losses per position, on logits of any leading shape [..., V] float32 (the chunked
// LM head passes [n, V] chunks): kind forward_kl | reverse_kl | jsd | topk, as defined below,
// already scaled by tau^2 -> [...]. `teacher` is [..., V] for forward_kl, reverse_kl and jsd;
// topk takes topk_ids [..., K] int64 and topk_logprobs [..., K] instead (`teacher` undefined).
torch::Tensor logit_loss_rows(const std::string& kind, const torch::Tensor& student, const torch::Tensor& teacher,
                              const torch::Tensor& topk_ids, const torch::Tensor& topk_logprobs, double beta,
                              double temperature);

// KL(teacher || student) at temperature tau, scaled by tau^2 so that gradients keep their
// size as tau changes (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"):
//   tau^2 * sum_v p_t(v) (log p_t(v) - log p_s(v)),  p = softmax(logits / tau)
torch::Tensor forward_kl_loss(const torch::Tensor& student_logits /*[N,T,V]*/, const torch::Tensor& teacher_logits /*[N,T,V]*/,
                              const torch::Tensor& mask /*[N,T]*/, double temperature);

// KL(student || teacher), mode-seeking (MiniLLM, Gu et al. 2024), tau^2-scaled likewise.
torch::Tensor reverse_kl_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                              const torch::Tensor& mask, double temperature);

// Generalised JSD (GKD, Agarwal et al. 2024, eq. 3) with M = beta p_t + (1 - beta) p_s:
//   beta KL(p_t || M) + (1 - beta) KL(p_s || M),
// symmetric at beta = 0.5; beta = 0 is taken as forward KL and beta = 1 as reverse KL,
// the limits TRL's GKD trainer uses. tau^2-scaled.
torch::Tensor jsd_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                       const torch::Tensor& mask, double beta, double temperature);

// Sparse KL on the teacher's top-k support: the teacher's top-k log-probs are renormalised
// over the k ids; the student keeps its full-vocabulary log-softmax:
//   tau^2 * sum_k q_k (log q_k - log p_s(id_k)),  q = softmax(teacher_topk_logprobs / tau)
// Used online (top-k of the teacher's logits) and offline (teacher_topk from the trace file).
torch::Tensor topk_kl_loss(const torch::Tensor& student_logits /*[N,T,V]*/, const torch::Tensor& topk_ids /*[N,T,K] int64*/,
                           const torch::Tensor& topk_logprobs /*[N,T,K]*/, const torch::Tensor& mask, double temperature);

// Hidden-state alignment: mean over masked positions of ||h_s W - h_t||^2 / C_t ("mse") or
// 1 - cos(h_s W, h_t) ("cosine"); `projection` may be undefined when the widths match.
torch::Tensor feature_loss(const torch::Tensor& student_hidden /*[N,T,Cs]*/, const torch::Tensor& teacher_hidden /*[N,T,Ct]*/,
                           const torch::Tensor& mask, const torch::Tensor& projection /*[Cs,Ct] or undefined*/,
                           const std::string& kind);

// Attention alignment: KL(teacher row || student row) per query position, averaged over
// masked queries. Heads: equal counts map one to one; otherwise each side is averaged
// down to gcd(Hs, Ht) groups of consecutive heads ("mapped"), or to one ("mean").
torch::Tensor attention_loss(const torch::Tensor& student_attn /*[N,Hs,T,T]*/, const torch::Tensor& teacher_attn /*[N,Ht,T,T]*/,
                             const torch::Tensor& mask, const std::string& heads);

// ---- progressive schedule -----------------------------------------------------------

// One phase: `steps` long, with a weight per loss name (ce, logit, feature, attention).
struct DistillPhase {
  int64_t steps = 0;
  std::map<std::string, double> weights;
  void bind(ConfigBinder& b);
};

struct DistillSchedule {
  std::string mode = "phases";       // phases: piecewise constant; ramp: linear between phase starts
  std::vector<DistillPhase> phases;  // the last phase holds for all later steps
  void bind(ConfigBinder& b);

  // Weights at `step` (0-based). Loss names missing from a phase weigh 0 there.
  std::map<std::string, double> weights_at(int64_t step) const;
  // Throws retort::Error for an empty schedule, a non-positive phase length, or a loss name
  // outside `known` (naming the phase and the known names).
  void validate(const std::vector<std::string>& known) const;
};

}  // namespace retort
