// Hierarchical distillation inside the SFT recipe: the teacher's logits (logic level),
// hidden states (feature level) and attention probabilities (structure level) guide the
// student, weighted by the progressive schedule. `retort distill CONFIG` is `retort sft`
// with a `distill` section whose `teacher` is set.
//
// Layer maps are JSON objects {"student index": teacher index}: feature maps index
// hidden states (0 = embeddings, i = output of layer i), attention maps index layers
// (0 = first). Loss names in the schedule: ce, logit, feature, attention.
#pragma once

#include <map>     // defines: std::map
#include <memory>  // defines: std::unique_ptr
#include <string>  // defines: std::string
#include <vector>  // defines: std::vector

#include "common/torch_pch.h"  // defines: torch::Tensor
#include "model/transformer.h"  // defines: Qwen2ForCausalLM
#include "train/distill_losses.h"

namespace retort {

class ConfigBinder;
class Tokenizer;

struct LogitDistillConfig {
  std::string kind = "forward_kl";  // forward_kl | reverse_kl | jsd | topk (teacher top-k support) |
                                    // offline (the traces' teacher_topk; no teacher checkpoint needed)
  double temperature = 2.0;         // tau of the softened distributions
  double beta = 0.5;                // jsd interpolation (GKD)
  int top_k = 20;                   // support of "topk" (online)
  void bind(ConfigBinder& b);
};

struct FeatureDistillConfig {
  std::map<std::string, int64_t> layer_map;  // student hidden-state index -> teacher hidden-state index
  std::string kind = "mse";                  // mse | cosine
  void bind(ConfigBinder& b);
};

struct AttentionDistillConfig {
  std::map<std::string, int64_t> layer_map;  // student layer -> teacher layer
  std::string heads = "mapped";              // mapped (group-average to gcd of head counts) | mean
  void bind(ConfigBinder& b);
};

struct DistillConfig {
  std::string teacher;  // teacher checkpoint folder; "" = plain SFT (or logit.kind = offline alone)
  LogitDistillConfig logit;
  FeatureDistillConfig feature;
  AttentionDistillConfig attention;
  DistillSchedule schedule;  // empty = {"ce": 1, "logit": 1} throughout
  // On-policy distillation (GKD's lambda, Agarwal et al. 2024): the share of steps whose
  // batch is the student's own completions of the batch's prompts instead of the traces; on
  // those steps the teacher's distribution is the only target (the ce weight is taken as 0).
  double on_policy = 0.0;
  int64_t on_policy_max_new_tokens = 128;
  double on_policy_temperature = 1.0;
  void bind(ConfigBinder& b);
};

// The teacher-side state of a distillation run: the frozen teacher, the learned
// projections, and the loss computation for one batch.
class Distiller {
 public:
  // Loads the teacher, checks it shares the student's tokenizer and vocabulary, validates
  // the layer maps against both models and creates one projection per feature pair whose
  // widths differ. Throws retort::Error naming the config key on any mismatch.
  Distiller(const DistillConfig& cfg, Qwen2ForCausalLMImpl& student, const Tokenizer& student_tok, torch::Device device,
            const std::string& where);

  // Named learnable tensors (projections) for the optimizer and the checkpoint.
  std::vector<std::pair<std::string, torch::Tensor>> parameters() const;
  void load_parameters(const std::map<std::string, torch::Tensor>& tensors, const std::string& where);

  // The denominators of one optimizer step, counted over ALL its micro-batches and ranks
  // before the first backward, so that the step's loss and gradients do not depend on how the
  // batch is split (micro-batches, packing, ranks): each loss is a sum over its positions
  // divided by its step-wide count.
  struct StepTokens {
    double targets = 0;        // trained targets (sum of loss_mask): ce, online logit losses
    double logit_targets = 0;  // targets with the traces' teacher_topk (logit.kind = offline)
    double tokens = 0;         // real tokens (feature and attention losses)
  };
  struct Losses {
    torch::Tensor total;                    // scalar: this micro-batch's share of the step's weighted loss, ce included
    std::map<std::string, double> values;   // this micro-batch's share of each loss's step value
  };
  // The offline teacher distribution of a batch (logit.kind = offline), aligned with the
  // targets: ids/logprobs [B, T-1, K], mask [B, T-1] (1 where the trace gave the teacher's top-k).
  struct OfflineTopk {
    torch::Tensor ids, logprobs, mask;
  };

  // Which student outputs the active weights require: hidden states, the attention maps of the
  // mapped layers only, no logits (the losses run the LM head in chunks).
  ForwardOptions student_options(const std::map<std::string, double>& weights) const;
  // The student's forward output `student_out` (ForwardOutput::hidden set) of ids/attention
  // [B, T] (sequence_ids [B, T] when packed, else undefined); loss_mask [B, T-1]. The ce and
  // the logit loss share one chunked pass over the LM head. `offline` is used only by
  // logit.kind = offline.
  Losses losses(const ForwardOutput& student_out, const torch::Tensor& ids, const torch::Tensor& attention,
                const torch::Tensor& sequence_ids, const torch::Tensor& loss_mask,
                const std::map<std::string, double>& weights, const StepTokens& n, const OfflineTopk& offline = {});
  bool offline() const { return cfg_.logit.kind == "offline"; }

  const DistillSchedule& schedule() const { return schedule_; }
  // The teacher's hidden width (C_t): its activations in a step can be wider than the student's.
  int64_t teacher_hidden_size() const;

 private:
  DistillConfig cfg_;
  DistillSchedule schedule_;
  Qwen2ForCausalLMImpl* student_ = nullptr;
  Qwen2ForCausalLM teacher_{nullptr};
  std::vector<std::pair<int64_t, int64_t>> feature_pairs_, attention_pairs_;
  std::map<int64_t, torch::Tensor> projections_;  // student index -> [Cs, Ct]
};

// Summed token cross-entropy of a forward output: sum over positions of
//   loss_mask[b, t] * -log p(targets[b, t] | ids[b, <=t])
// through the chunked LM head (hidden states of positions 0..T-2; the positions where loss_mask
// is 0 are not computed). out.hidden [B, T, C], targets [B, T-1] int64, loss_mask [B, T-1] -> scalar.
torch::Tensor summed_token_ce(const Qwen2ForCausalLMImpl& model, const ForwardOutput& out, const torch::Tensor& targets,
                              const torch::Tensor& loss_mask);

}  // namespace retort
