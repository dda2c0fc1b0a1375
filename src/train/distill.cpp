#include "train/distill.h"

#include <cmath>  // defines: std::sqrt

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "model/checkpoint.h"
#include "tokenizer/tokenizer.h"

#include <filesystem>  // defines: std::filesystem

namespace fs = std::filesystem;

namespace retort {

void LogitDistillConfig::bind(ConfigBinder& b) {
  b.choice("kind", kind, {"forward_kl", "reverse_kl", "jsd", "topk", "offline"});
  b.field("temperature", temperature, Range::above(0).up_to(100));
  b.field("beta", beta, Range::between(0, 1));
  b.field("top_k", top_k, Range::at_least(1));
}
void FeatureDistillConfig::bind(ConfigBinder& b) {
  b.field("layer_map", layer_map);
  b.choice("kind", kind, {"mse", "cosine"});
}
void AttentionDistillConfig::bind(ConfigBinder& b) {
  b.field("layer_map", layer_map);
  b.choice("heads", heads, {"mapped", "mean"});
}
void DistillConfig::bind(ConfigBinder& b) {
  b.field("teacher", teacher);
  b.field("logit", logit);
  b.field("feature", feature);
  b.field("attention", attention);
  b.field("schedule", schedule);
  b.field("on_policy", on_policy, Range::between(0, 1));
  b.field("on_policy_max_new_tokens", on_policy_max_new_tokens, Range::at_least(1).up_to(1 << 20));
  b.field("on_policy_temperature", on_policy_temperature, Range::at_least(0).up_to(100));
}

namespace {

const std::vector<std::string> kLossNames = {"ce", "logit", "feature", "attention"};

std::vector<std::pair<int64_t, int64_t>> parse_map(const std::map<std::string, int64_t>& m, int64_t student_max,
                                                   int64_t teacher_max, const std::string& key) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const auto& [s, t] : m) {
    int64_t si = -1;
    try {
      size_t used = 0;
      si = std::stoll(s, &used);
      if (used != s.size()) si = -1;
    } catch (...) {
      si = -1;
    }
    if (si < 0 || si > student_max) {
      throw Error(ErrorInfo{"a layer map names a student layer that does not exist", key, "0.." + std::to_string(student_max),
                            quote_for_error(s), "indices count from 0"});
    }
    if (t < 0 || t > teacher_max) {
      throw Error(ErrorInfo{"a layer map names a teacher layer that does not exist", key + "." + s,
                            "0.." + std::to_string(teacher_max), std::to_string(t), ""});
    }
    out.emplace_back(si, t);
  }
  return out;
}

double weight_of(const std::map<std::string, double>& w, const char* k) {
  auto it = w.find(k);
  return it == w.end() ? 0.0 : it->second;
}

}  // namespace

Distiller::Distiller(const DistillConfig& cfg, Qwen2ForCausalLMImpl& student, const Tokenizer& student_tok, torch::Device device,
                     const std::string& where)
    : cfg_(cfg), schedule_(cfg.schedule) {
  if (schedule_.phases.empty()) {
    DistillPhase p;
    p.steps = 1;
    p.weights = {{"ce", 1.0}, {"logit", 1.0}};
    schedule_.phases.push_back(p);
  }
  schedule_.validate(kLossNames);

  if (cfg.teacher.empty()) {
    // Offline logit distillation: the teacher's top-k come from the trace file; the feature
    // and structure levels need the teacher's activations, which only a checkpoint has.
    if (cfg.logit.kind != "offline" || !cfg.feature.layer_map.empty() || !cfg.attention.layer_map.empty()) {
      throw Error(ErrorInfo{"distillation without a teacher checkpoint can only use the traces' teacher_topk", where + ": distill",
                            "distill.teacher set, or logit.kind = offline with no feature/attention layer maps",
                            "teacher \"\", logit.kind " + cfg.logit.kind, "set distill.teacher to a checkpoint folder"});
    }
    log_info("distill: offline logit distillation from the traces' teacher_topk (no teacher checkpoint)");
    return;
  }

  // The teacher must speak the student's tokens.
  fs::path teacher_tok = fs::path(cfg.teacher) / "tokenizer.json";
  if (fs::exists(teacher_tok)) {
    Tokenizer t = Tokenizer::from_file(teacher_tok.string());
    if (t.vocab_size() != student_tok.vocab_size() || t.to_json()["model"]["vocab"] != student_tok.to_json()["model"]["vocab"]) {
      throw Error(ErrorInfo{"the teacher's tokenizer differs from the student's", where + ": distill.teacher",
                            "the same tokenizer.json (" + std::to_string(student_tok.vocab_size()) + " tokens)",
                            teacher_tok.string() + " with " + std::to_string(t.vocab_size()) + " tokens",
                            "distil between models of one tokenizer family"});
    }
  }
  teacher_ = load_model(cfg.teacher, LoadOptions{device.str(), "float32"});
  teacher_->eval();
  for (auto& p : teacher_->parameters()) p.set_requires_grad(false);
  const ModelConfig& sc = student.config();
  const ModelConfig& tc = teacher_->config();
  if (sc.vocab_size != tc.vocab_size) {
    throw Error(ErrorInfo{"teacher and student have different vocabulary sizes", where + ": distill.teacher",
                          std::to_string(sc.vocab_size), std::to_string(tc.vocab_size), "logit distillation needs one vocabulary"});
  }
  feature_pairs_ = parse_map(cfg.feature.layer_map, sc.num_hidden_layers, tc.num_hidden_layers, "distill.feature.layer_map");
  attention_pairs_ = parse_map(cfg.attention.layer_map, sc.num_hidden_layers - 1, tc.num_hidden_layers - 1,
                               "distill.attention.layer_map");
  if (sc.hidden_size != tc.hidden_size) {
    torch::manual_seed(0x9e3779b9);
    for (const auto& [s, t] : feature_pairs_) {
      (void)t;
      // [Cs, Ct], scaled so that projected states start at the teacher's scale.
      projections_[s] = (torch::randn({sc.hidden_size, tc.hidden_size}) / std::sqrt(double(sc.hidden_size)))
                            .to(device)
                            .set_requires_grad(true);
    }
  }
  log_info("distill: teacher " + cfg.teacher + " (" + std::to_string(tc.num_parameters()) + " parameters), student " +
           std::to_string(sc.num_parameters()) + " parameters; " + std::to_string(feature_pairs_.size()) + " feature pairs, " +
           std::to_string(attention_pairs_.size()) + " attention pairs");
}

std::vector<std::pair<std::string, torch::Tensor>> Distiller::parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [s, p] : projections_) out.emplace_back("distill.projection." + std::to_string(s), p);
  return out;
}

void Distiller::load_parameters(const std::map<std::string, torch::Tensor>& tensors, const std::string& where) {
  torch::NoGradGuard ng;
  for (auto& [name, p] : parameters()) {
    auto it = tensors.find(name);
    if (it == tensors.end() || it->second.sizes() != p.sizes()) {
      throw Error(ErrorInfo{"the checkpoint lacks a distillation projection", where, name, "absent or of another shape",
                            "resume with the same distill settings"});
    }
    p.copy_(it->second);
  }
}

ForwardOptions Distiller::student_options(const std::map<std::string, double>& w) const {
  ForwardOptions o;
  o.output_hidden_states = weight_of(w, "feature") > 0 && !feature_pairs_.empty();
  o.output_attentions = weight_of(w, "attention") > 0 && !attention_pairs_.empty();
  return o;
}

Distiller::Losses Distiller::losses(const ForwardOutput& so, const torch::Tensor& ids, const torch::Tensor& attention,
                                    const torch::Tensor& loss_mask, const torch::Tensor& ce_mean,
                                    const std::map<std::string, double>& w, const OfflineTopk& offline) {
  Losses out;
  out.total = weight_of(w, "ce") * ce_mean;
  out.values["ce"] = ce_mean.item<double>();
  const double wl = weight_of(w, "logit"), wf = weight_of(w, "feature"), wa = weight_of(w, "attention");
  if (wl == 0 && wf == 0 && wa == 0) return out;

  const auto& c = cfg_.logit;
  const int64_t T = ids.size(1);
  ForwardOutput to;  // the teacher's outputs, computed only when a term needs them
  const bool need_teacher = (wl > 0 && c.kind != "offline") || (wf > 0 && !feature_pairs_.empty()) ||
                            (wa > 0 && !attention_pairs_.empty());
  if (need_teacher) {
    torch::NoGradGuard ng;
    to = teacher_->forward(ids, attention, student_options(w));
  }
  if (wl > 0) {
    // Positions that predict trained tokens: [B, T-1] (the same mask as the CE).
    auto s = so.logits.narrow(1, 0, T - 1);
    torch::Tensor t = need_teacher ? to.logits.narrow(1, 0, T - 1) : torch::Tensor();
    torch::Tensor l;
    if (c.kind == "offline") {
      if (!offline.ids.defined()) {
        throw Error(ErrorInfo{"logit.kind = offline needs the batch's teacher_topk", "distill.logit.kind", "teacher_topk in the traces",
                              "none", "write teacher_topk into the trace file or pick an online kind"});
      }
      l = topk_kl_loss(s, offline.ids, offline.logprobs, offline.mask * loss_mask, c.temperature);
    } else if (c.kind == "forward_kl") l = forward_kl_loss(s, t, loss_mask, c.temperature);
    else if (c.kind == "reverse_kl") l = reverse_kl_loss(s, t, loss_mask, c.temperature);
    else if (c.kind == "jsd") l = jsd_loss(s, t, loss_mask, c.beta, c.temperature);
    else {
      auto top = torch::log_softmax(t.to(torch::kFloat), -1).topk(std::min<int64_t>(c.top_k, t.size(-1)), -1);
      l = topk_kl_loss(s, std::get<1>(top), std::get<0>(top), loss_mask, c.temperature);
    }
    out.total = out.total + wl * l;
    out.values["logit"] = l.item<double>();
  }
  auto token_mask = attention.to(torch::kFloat);  // [B, T]: every real token
  if (wf > 0 && !feature_pairs_.empty()) {
    torch::Tensor sum = torch::zeros({}, token_mask.options());
    for (const auto& [si, ti] : feature_pairs_) {
      auto it = projections_.find(si);
      sum = sum + feature_loss(so.hidden_states.at(si), to.hidden_states.at(ti), token_mask,
                               it == projections_.end() ? torch::Tensor() : it->second, cfg_.feature.kind);
    }
    auto l = sum / static_cast<double>(feature_pairs_.size());
    out.total = out.total + wf * l;
    out.values["feature"] = l.item<double>();
  }
  if (wa > 0 && !attention_pairs_.empty()) {
    torch::Tensor sum = torch::zeros({}, token_mask.options());
    for (const auto& [si, ti] : attention_pairs_)
      sum = sum + attention_loss(so.attentions.at(si), to.attentions.at(ti), token_mask, cfg_.attention.heads);
    auto l = sum / static_cast<double>(attention_pairs_.size());
    out.total = out.total + wa * l;
    out.values["attention"] = l.item<double>();
  }
  return out;
}

}  // namespace retort
