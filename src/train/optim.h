// AdamW with decoupled weight decay, the warmup + cosine schedule, gradient clipping, and
// training checkpoints (model + optimizer + trainer_state.json) written atomically so that
// a run killed at any moment resumes exactly.
//
// AdamW is written out here rather than taken from torch::optim so that its state has
// stable names (the model's parameter names) in optimizer.safetensors and a resumed run
// reproduces an uninterrupted one bit for bit on CPU.
#pragma once

#include <map>       // defines: std::map
#include <optional>  // defines: std::optional
#include <string>    // defines: std::string
#include <vector>    // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "common/torch_pch.h"  // defines: torch::Tensor

namespace retort {

class ConfigBinder;
class Qwen2ForCausalLMImpl;

struct OptimConfig {
  double lr = 3e-4;            // peak learning rate
  double min_lr_ratio = 0.1;   // cosine floor, as a fraction of lr
  int64_t warmup_steps = 10;   // linear warmup from 0
  double weight_decay = 0.0;   // decoupled; never applied to norms, biases or other 1-d tensors
  double beta1 = 0.9;
  double beta2 = 0.95;         // 0.95, as most LLM recipes, for stability at small batch
  double eps = 1e-8;
  double grad_clip = 1.0;      // max global grad norm; 0 = off
  int64_t skip_nonfinite = 0;  // steps with a non-finite loss or grad norm skipped (no update) before the run stops
  void bind(ConfigBinder& b);
};

// lr at `step` (0-based) of `total`: linear warmup, then cosine from lr to lr * min_lr_ratio.
double learning_rate(const OptimConfig& cfg, int64_t step, int64_t total);

class AdamW {
 public:
  // `params`: name -> parameter (the model's named_parameters); 1-d tensors get no decay.
  AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, const OptimConfig& cfg);

  // One update with learning rate `lr`: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
  // p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + lr wd p  (Loshchilov & Hutter 2019).
  void step(double lr);
  void zero_grad();
  int64_t steps_taken() const { return t_; }

  // State for optimizer.safetensors: "<name>.exp_avg", "<name>.exp_avg_sq".
  std::map<std::string, torch::Tensor> state_tensors() const;
  void load_state(const std::map<std::string, torch::Tensor>& tensors, int64_t steps_taken, const std::string& where);

 private:
  struct Slot {
    std::string name;
    torch::Tensor param, m, v;
    bool decay;
  };
  std::vector<Slot> slots_;
  OptimConfig cfg_;
  int64_t t_ = 0;
};

// Clips the global L2 norm of the gradients to `max_norm` (0 = no clipping); returns the
// norm before clipping.
double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

// ---- non-finite steps -------------------------------------------------------------------------

// The one place where SFT, distillation and GRPO decide what a step with a non-finite loss or
// gradient norm does (a NaN in the weights spreads to every later step and checkpoint):
//   all finite                  -> the update goes ahead;
//   non-finite, skips left      -> no update (the caller zeroes the gradients as always), a warning;
//   non-finite, no skips left   -> retort::Error naming the stage, the step, the loss part(s)
//                                  that went non-finite and the last checkpoint to resume from.
// Each loop calls it once per optimizer step, right before AdamW::step:
//   if (guard.allows_update(step + 1, parts, grad_norm)) optim.step(lr);
class NonFiniteGuard {
 public:
  // `max_skips`: optim.skip_nonfinite; `run_dir`: where the last good checkpoint is named from.
  NonFiniteGuard(std::string stage, int64_t max_skips, std::string run_dir);
  // `step`: the 1-based step being taken; `losses`: each loss part's value this step.
  bool allows_update(int64_t step, const std::map<std::string, double>& losses, double grad_norm);
  int64_t skipped() const { return skipped_; }

 private:
  std::string stage_, run_dir_;
  int64_t max_skips_ = 0, skipped_ = 0;
};

// Throws retort::Error when a weight of `model` is NaN or infinite: no checkpoint or final
// model is ever written from non-finite weights.
void check_finite_weights(Qwen2ForCausalLMImpl& model, int64_t step, const std::string& what);

// ---- checkpoints ---------------------------------------------------------------------------

// Writes run_dir/checkpoints/step-N/ (model folder + optimizer.safetensors + trainer_state.json)
// through a temporary folder and one rename, then deletes all but the newest `keep_last`.
// `extra` tensors (e.g. distillation projections) go to distill_state.safetensors.
void save_training_checkpoint(const std::string& run_dir, int64_t step, Qwen2ForCausalLMImpl& model, const AdamW& optim,
                              const nlohmann::json& trainer_state, const std::string& tokenizer_dir, int keep_last,
                              const std::map<std::string, torch::Tensor>& extra = {});

// The newest complete checkpoint folder of a run, if any.
std::optional<std::string> latest_checkpoint(const std::string& run_dir);

// Loads weights and optimizer state from a checkpoint folder; returns its trainer_state.json.
nlohmann::json load_training_checkpoint(const std::string& dir, Qwen2ForCausalLMImpl& model, AdamW& optim);

}  // namespace retort
