#include "train/distill.h"

#include <algorithm>  // defines: std::max, std::min
#include <cmath>  // defines: std::sqrt

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "model/checkpoint.h"
#include "model/lm_head.h"  // defines: chunked_head, head_token_logprobs
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
    : cfg_(cfg), schedule_(cfg.schedule), student_(&student) {
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

int64_t Distiller::teacher_hidden_size() const { return teacher_ ? teacher_->config().hidden_size : 0; }

ForwardOptions Distiller::student_options(const std::map<std::string, double>& w) const {
  ForwardOptions o;
  o.skip_lm_head = true;
  o.output_hidden_states = weight_of(w, "feature") > 0 && !feature_pairs_.empty();
  o.output_attentions = weight_of(w, "attention") > 0 && !attention_pairs_.empty();
  if (o.output_attentions)
    for (const auto& pr : attention_pairs_) o.attention_layers.push_back(pr.first);
  return o;
}

namespace {

// The rows of [B, T-1, ...] positions picked by idx [k] (flattened positions): [k, ...].
torch::Tensor pick_positions(const torch::Tensor& t, int64_t positions, const torch::Tensor& idx) {
  auto sizes = t.sizes().vec();
  std::vector<int64_t> flat{t.size(0) * positions};
  flat.insert(flat.end(), sizes.begin() + 2, sizes.end());
  return t.narrow(1, 0, positions).reshape(flat).index_select(0, idx);
}

}  // namespace

torch::Tensor summed_token_ce(const Qwen2ForCausalLMImpl& model, const ForwardOutput& out, const torch::Tensor& targets,
                              const torch::Tensor& loss_mask) {
  const int64_t P = targets.size(1);  // T - 1 predicting positions
  auto lm = loss_mask.reshape({-1});                                      // [B P]
  auto idx = lm.nonzero().squeeze(-1);                                    // [k] trained positions
  auto lp = head_token_logprobs(pick_positions(out.hidden, P, idx), model.head_weight(),
                                targets.reshape({-1}).index_select(0, idx));  // [k, 1]
  return -(lp.squeeze(-1) * lm.index_select(0, idx).to(torch::kFloat)).sum();
}

Distiller::Losses Distiller::losses(const ForwardOutput& so, const torch::Tensor& ids, const torch::Tensor& attention,
                                    const torch::Tensor& sequence_ids, const torch::Tensor& loss_mask,
                                    const std::map<std::string, double>& w, const StepTokens& n, const OfflineTopk& offline) {
  Losses out;
  const double wc = weight_of(w, "ce"), wl = weight_of(w, "logit"), wf = weight_of(w, "feature"), wa = weight_of(w, "attention");
  const auto& c = cfg_.logit;
  const int64_t T = ids.size(1), P = T - 1;
  const auto targets = ids.narrow(1, 1, P);  // [B, P]
  auto share = [](double denom) { return 1.0 / std::max(denom, 1.0); };

  ForwardOutput to;  // the teacher's outputs, computed only when a term needs them
  const bool need_teacher = (wl > 0 && c.kind != "offline") || (wf > 0 && !feature_pairs_.empty()) ||
                            (wa > 0 && !attention_pairs_.empty());
  if (need_teacher) {
    torch::NoGradGuard ng;
    ForwardOptions topt;
    topt.skip_lm_head = true;
    topt.sequence_ids = sequence_ids;
    topt.output_hidden_states = wf > 0 && !feature_pairs_.empty();
    topt.output_attentions = wa > 0 && !attention_pairs_.empty();
    if (topt.output_attentions)
      for (const auto& pr : attention_pairs_) topt.attention_layers.push_back(pr.second);
    to = teacher_->forward(ids, attention, topt);
  }

  // ---- ce and logit level: one chunked pass over the student's LM head
  torch::Tensor ce_sum, logit_sum;
  if (wl > 0) {
    if (c.kind == "offline" && !offline.ids.defined()) {
      throw Error(ErrorInfo{"logit.kind = offline needs the batch's teacher_topk", "distill.logit.kind", "teacher_topk in the traces",
                            "none", "write teacher_topk into the trace file or pick an online kind"});
    }
    auto lm = loss_mask.reshape({-1});                              // [B P]
    auto logit_mask = c.kind == "offline" ? (offline.mask * loss_mask).reshape({-1}) : lm;  // [B P]
    auto idx = lm.nonzero().squeeze(-1);                            // [k] trained positions
    auto tgt = targets.reshape({-1}).index_select(0, idx);          // [k]
    auto hs = pick_positions(so.hidden, P, idx);                    // [k, Cs]
    torch::Tensor ht, wt32, off_ids, off_lp;
    if (c.kind == "offline") {
      off_ids = pick_positions(offline.ids, P, idx);  // [k, K]
      off_lp = pick_positions(offline.logprobs, P, idx);
    } else {
      ht = pick_positions(to.hidden, P, idx);                // [k, Ct]
      wt32 = teacher_->head_weight().detach().to(torch::kFloat);  // [V, Ct]
    }
    const std::string kind = c.kind == "offline" ? "topk" : c.kind;
    const double beta = c.beta, tau = c.temperature;
    const int64_t top_k = c.top_k;
    // Per position: (log p_s(target), the logit loss); the teacher's logits of the same chunk
    // come from its hidden states, without autograd.
    HeadChunkFn fn = [=](const torch::Tensor& logits, int64_t b, int64_t cn) {
      torch::Tensor t, ids_k, lp_k;
      {
        torch::NoGradGuard ng;
        if (off_ids.defined()) {
          ids_k = off_ids.narrow(0, b, cn);
          lp_k = off_lp.narrow(0, b, cn);
        } else {
          t = torch::nn::functional::linear(ht.narrow(0, b, cn).to(torch::kFloat), wt32);  // [cn, V]
          if (kind == "topk") {
            auto top = torch::log_softmax(t, -1).topk(std::min<int64_t>(top_k, t.size(-1)), -1);
            lp_k = std::get<0>(top);
            ids_k = std::get<1>(top);
            t = torch::Tensor();
          }
        }
      }
      auto lp = logits.logsumexp({-1}, /*keepdim=*/true).neg().add(logits.gather(-1, tgt.narrow(0, b, cn).unsqueeze(-1)));  // [cn, 1]
      auto l = logit_loss_rows(kind, logits, t, ids_k, lp_k, beta, tau).unsqueeze(-1);                                       // [cn, 1]
      return torch::cat({lp, l}, -1);                                                                                        // [cn, 2]
    };
    auto q = chunked_head(hs, student_->head_weight(), 2, std::move(fn));  // [k, 2]
    ce_sum = -(q.select(1, 0) * lm.index_select(0, idx)).sum();
    logit_sum = (q.select(1, 1) * logit_mask.index_select(0, idx)).sum();
  } else {
    ce_sum = summed_token_ce(*student_, so, targets, loss_mask);
  }
  out.total = wc * ce_sum * share(n.targets);
  out.values["ce"] = ce_sum.item<double>() * share(n.targets);
  if (wl > 0) {
    const double d = share(c.kind == "offline" ? n.logit_targets : n.targets);
    out.total = out.total + wl * logit_sum * d;
    out.values["logit"] = logit_sum.item<double>() * d;
  }

  // ---- feature and structure levels: per-batch means turned back into sums over the real tokens
  auto token_mask = attention.to(torch::kFloat);  // [B, T]: every real token
  const double local_tokens = token_mask.sum().item<double>();
  if (wf > 0 && !feature_pairs_.empty()) {
    torch::Tensor sum = torch::zeros({}, token_mask.options());
    for (const auto& [si, ti] : feature_pairs_) {
      auto it = projections_.find(si);
      sum = sum + feature_loss(so.hidden_states.at(si), to.hidden_states.at(ti), token_mask,
                               it == projections_.end() ? torch::Tensor() : it->second, cfg_.feature.kind);
    }
    auto l = sum * (local_tokens / static_cast<double>(feature_pairs_.size()) * share(n.tokens));
    out.total = out.total + wf * l;
    out.values["feature"] = l.item<double>();
  }
  if (wa > 0 && !attention_pairs_.empty()) {
    torch::Tensor sum = torch::zeros({}, token_mask.options());
    for (const auto& [si, ti] : attention_pairs_)
      sum = sum + attention_loss(so.attentions.at(si), to.attentions.at(ti), token_mask, cfg_.attention.heads);
    auto l = sum * (local_tokens / static_cast<double>(attention_pairs_.size()) * share(n.tokens));
    out.total = out.total + wa * l;
    out.values["attention"] = l.item<double>();
  }
  return out;
}

}  // namespace retort
