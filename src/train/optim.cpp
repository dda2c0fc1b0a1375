#include "train/optim.h"

#include <algorithm>   // defines: std::max, std::min
#include <cmath>       // defines: std::cos, std::sqrt
#include <filesystem>  // defines: std::filesystem
#include <fstream>     // defines: std::ifstream

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"  // defines: log_warn
#include "model/checkpoint.h"
#include "model/transformer.h"

namespace fs = std::filesystem;

namespace retort {

void OptimConfig::bind(ConfigBinder& b) {
  b.field("lr", lr, Range::at_least(0).up_to(1));
  b.field("min_lr_ratio", min_lr_ratio, Range::between(0, 1));
  b.field("warmup_steps", warmup_steps, Range::at_least(0));
  b.field("weight_decay", weight_decay, Range::between(0, 1));
  b.field("beta1", beta1, Range::at_least(0).below(1));
  b.field("beta2", beta2, Range::at_least(0).below(1));
  b.field("eps", eps, Range::above(0).up_to(1));
  b.field("grad_clip", grad_clip, Range::at_least(0));
  b.field("skip_nonfinite", skip_nonfinite, Range::at_least(0));
}

double learning_rate(const OptimConfig& c, int64_t step, int64_t total) {
  if (c.warmup_steps > 0 && step < c.warmup_steps) return c.lr * static_cast<double>(step + 1) / c.warmup_steps;
  int64_t decay_steps = std::max<int64_t>(1, total - c.warmup_steps);
  double progress = std::min(1.0, static_cast<double>(step - c.warmup_steps) / decay_steps);
  double floor = c.lr * c.min_lr_ratio;
  return floor + (c.lr - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, const OptimConfig& cfg) : cfg_(cfg) {
  for (auto& [name, p] : params) {
    if (!p.requires_grad()) continue;
    slots_.push_back({name, p, torch::zeros_like(p, torch::kFloat), torch::zeros_like(p, torch::kFloat), p.dim() >= 2});
  }
}

void AdamW::zero_grad() {
  for (auto& s : slots_)
    if (s.param.grad().defined()) s.param.mutable_grad().zero_();
}

void AdamW::step(double lr) {
  torch::NoGradGuard ng;
  ++t_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(t_));
  for (auto& s : slots_) {
    if (!s.param.grad().defined()) continue;
    auto grad = s.param.grad();
    // In slices of rows of about 2^22 elements: the update's temporaries stay ~16 MB instead of
    // two float32 copies of the parameter (1.1 GB for Qwen's [151936, 896] embedding, more than
    // a long step's activations). Elementwise, so the result does not depend on the slicing.
    const int64_t rows = s.param.dim() > 0 ? s.param.size(0) : 1;
    const int64_t slice = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(1, s.param.numel() / std::max<int64_t>(rows, 1)));
    for (int64_t b = 0; b < rows; b += slice) {
      const int64_t n = std::min(slice, rows - b);
      auto part = [&](const torch::Tensor& t) { return t.dim() > 0 ? t.narrow(0, b, n) : t; };
      auto p = part(s.param), m = part(s.m), v = part(s.v);
      auto g = part(grad).to(torch::kFloat);
      m.mul_(cfg_.beta1).add_(g, 1.0 - cfg_.beta1);
      v.mul_(cfg_.beta2).addcmul_(g, g, 1.0 - cfg_.beta2);
      auto denom = (v / bc2).sqrt_().add_(cfg_.eps);
      auto update = (m / bc1).div_(denom);
      if (s.decay && cfg_.weight_decay > 0) p.mul_(1.0 - lr * cfg_.weight_decay);
      p.add_(update.to(p.scalar_type()), -lr);
    }
  }
}

std::map<std::string, torch::Tensor> AdamW::state_tensors() const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& s : slots_) {
    out[s.name + ".exp_avg"] = s.m.detach().cpu().contiguous();
    out[s.name + ".exp_avg_sq"] = s.v.detach().cpu().contiguous();
  }
  return out;
}

void AdamW::load_state(const std::map<std::string, torch::Tensor>& tensors, int64_t steps_taken, const std::string& where) {
  torch::NoGradGuard ng;
  for (auto& s : slots_) {
    for (auto [suffix, dst] : {std::pair<const char*, torch::Tensor*>{".exp_avg", &s.m}, {".exp_avg_sq", &s.v}}) {
      auto it = tensors.find(s.name + suffix);
      if (it == tensors.end() || it->second.sizes() != dst->sizes()) {
        throw Error(ErrorInfo{"the optimizer state does not match the model", where, s.name + suffix + " of shape " + c10::str(dst->sizes()),
                              it == tensors.end() ? "absent" : c10::str(it->second.sizes()),
                              "resume with the same model configuration, or start a new run folder"});
      }
      dst->copy_(it->second);
    }
  }
  t_ = steps_taken;
}

double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard ng;
  double total = 0;
  for (const auto& p : params)
    if (p.grad().defined()) total += p.grad().to(torch::kFloat).pow(2).sum().item<double>();  // sync point
  double norm = std::sqrt(total);
  if (max_norm > 0 && norm > max_norm) {
    double scale = max_norm / (norm + 1e-6);
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().mul_(scale);
  }
  return norm;
}

// ---------------------------------------------------------------------------------------
// Non-finite steps

NonFiniteGuard::NonFiniteGuard(std::string stage, int64_t max_skips, std::string run_dir)
    : stage_(std::move(stage)), run_dir_(std::move(run_dir)), max_skips_(max_skips) {}

bool NonFiniteGuard::allows_update(int64_t step, const std::map<std::string, double>& losses, double grad_norm) {
  // "nan" whatever its sign bit (printf would say "-nan" for some), "inf" or "-inf".
  auto text = [](double v) { return std::isnan(v) ? std::string("nan") : v > 0 ? std::string("inf") : std::string("-inf"); };
  std::string bad;
  for (const auto& [part, value] : losses)
    if (!std::isfinite(value)) bad += (bad.empty() ? "" : ", ") + ("loss part '" + part + "' = " + text(value));
  if (!std::isfinite(grad_norm)) bad += (bad.empty() ? "" : ", ") + ("gradient norm = " + text(grad_norm));
  if (bad.empty()) return true;
  if (skipped_ < max_skips_) {
    ++skipped_;
    log_warn(stage_ + ": step " + std::to_string(step) + ": " + bad + "; update skipped (" + std::to_string(skipped_) + " of optim.skip_nonfinite=" +
             std::to_string(max_skips_) + ")");
    return false;
  }
  auto last = latest_checkpoint(run_dir_);
  throw Error(ErrorInfo{"training stopped at step " + std::to_string(step) + ": " + bad + " is not finite" +
                            (max_skips_ > 0 ? " (after skipping " + std::to_string(skipped_) + " such steps)" : ""),
                        stage_, "", "",
                        "no weights were updated or saved from it; " +
                            (last ? "the last good checkpoint is " + *last + " (a rerun resumes from it)" : std::string("no checkpoint was written yet")) +
                            "; lower optim.lr, check the data and the loss settings, or set optim.skip_nonfinite=N"});
}

void check_finite_weights(Qwen2ForCausalLMImpl& model, int64_t step, const std::string& what) {
  torch::NoGradGuard ng;
  for (const auto& p : model.named_parameters()) {
    if (torch::isfinite(p.value()).all().item<bool>()) continue;  // sync point
    throw Error(ErrorInfo{"the weights at step " + std::to_string(step) + " are not finite", what, "finite values in every tensor",
                          "NaN or infinity in " + p.key(), "nothing was written; lower optim.lr, or resume from the last good checkpoint"});
  }
}

// ---------------------------------------------------------------------------------------
// Checkpoints

namespace {
int64_t step_of(const fs::path& p) {
  std::string n = p.filename().string();
  if (n.rfind("step-", 0) != 0) return -1;
  try {
    size_t used = 0;
    int64_t v = std::stoll(n.substr(5), &used);
    return used == n.size() - 5 ? v : -1;
  } catch (...) {
    return -1;
  }
}
}  // namespace

void save_training_checkpoint(const std::string& run_dir, int64_t step, Qwen2ForCausalLMImpl& model, const AdamW& optim,
                              const nlohmann::json& trainer_state, const std::string& tokenizer_dir, int keep_last,
                              const std::map<std::string, torch::Tensor>& extra) {
  fs::path root = fs::path(run_dir) / "checkpoints";
  check_finite_weights(model, step, (root / ("step-" + std::to_string(step))).string());
  fs::create_directories(root);
  fs::path final_dir = root / ("step-" + std::to_string(step));
  fs::path tmp = root / (".tmp-step-" + std::to_string(step));
  fs::remove_all(tmp);
  SaveOptions so;
  so.tokenizer_dir = tokenizer_dir;
  save_model(model, tmp.string(), so);
  write_safetensors_tensors((tmp / "optimizer.safetensors").string(), optim.state_tensors());
  if (!extra.empty()) write_safetensors_tensors((tmp / "distill_state.safetensors").string(), extra);
  // trainer_state.json last: its presence marks a complete checkpoint.
  write_json_file_atomic((tmp / "trainer_state.json").string(), trainer_state);
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);  // one atomic step from invisible to complete

  std::vector<std::pair<int64_t, fs::path>> all;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && step_of(e.path()) >= 0) all.emplace_back(step_of(e.path()), e.path());
  std::sort(all.begin(), all.end());
  for (size_t i = 0; keep_last > 0 && i + static_cast<size_t>(keep_last) < all.size(); ++i) fs::remove_all(all[i].second);
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  fs::path root = fs::path(run_dir) / "checkpoints";
  if (!fs::exists(root)) return std::nullopt;
  int64_t best = -1;
  fs::path best_path;
  for (const auto& e : fs::directory_iterator(root)) {
    int64_t s = step_of(e.path());
    if (s > best && fs::exists(e.path() / "trainer_state.json")) {
      best = s;
      best_path = e.path();
    }
  }
  if (best < 0) return std::nullopt;
  return best_path.string();
}

nlohmann::json load_training_checkpoint(const std::string& dir, Qwen2ForCausalLMImpl& model, AdamW& optim) {
  nlohmann::json state = load_json_file((fs::path(dir) / "trainer_state.json").string());
  {
    torch::NoGradGuard ng;
    model.load_hf_state_dict(read_checkpoint_tensors(dir), dir);
  }
  optim.load_state(read_safetensors((fs::path(dir) / "optimizer.safetensors").string()), state.value("optimizer_steps", int64_t(0)),
                   (fs::path(dir) / "optimizer.safetensors").string());
  return state;
}

}  // namespace retort
