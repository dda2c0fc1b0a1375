// The math verifier (see math_verifier.h).
#include "rewards/math_verifier.h"

#include "rewards/extract.h"      // defines: split_think, extract_answer, last_boxed, gsm8k_answer
#include "rewards/math/equiv.h"   // defines: answers_equivalent

namespace retort::rewards {

void MathVerifierOptions::bind(retort::ConfigBinder& b) {
  b.field("answer_field", answer_field);
  b.choice("grade", grade, {"answer", "completion"});
  b.field("allow_last_number", allow_last_number);
  b.field("rel_tol", rel_tol, retort::Range::at_least(0));
  b.field("abs_tol", abs_tol, retort::Range::at_least(0));
  b.field("random_points", random_points, retort::Range::at_least(0));
  b.field("max_answer_chars", max_answer_chars, retort::Range::at_least(1));
}

std::string gold_answer(const json& row, const std::string& field) {
  auto as_text = [](const json& v) -> std::string {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_number() || v.is_boolean()) return v.dump();
    return "";
  };
  if (!row.is_object()) return "";
  if (!field.empty()) {
    auto it = row.find(field);
    return it == row.end() ? "" : as_text(*it);
  }
  if (auto it = row.find("answer"); it != row.end()) {
    std::string a = as_text(*it);
    if (it->is_string()) {
      if (auto g = gsm8k_answer(a)) return *g;  // GSM8K keeps the worked solution in "answer"
    }
    if (!a.empty()) return a;
  }
  if (auto it = row.find("final_answer"); it != row.end()) {
    std::string a = as_text(*it);
    if (!a.empty()) return a;
  }
  if (auto it = row.find("solution"); it != row.end() && it->is_string()) {
    if (auto b = last_boxed(it->get<std::string>())) return *b;
  }
  return "";
}

namespace {

class MathVerifier : public Verifier {
 public:
  explicit MathVerifier(const MathVerifierOptions& opt) : opt_(opt) {
    eq_.rel_tol = opt.rel_tol;
    eq_.abs_tol = opt.abs_tol;
    eq_.random_points = opt.random_points;
    eq_.limits.max_length = static_cast<size_t>(opt.max_answer_chars);
  }

  Score verify(const Sample& s) const override {
    std::string gold = gold_answer(s.row, opt_.answer_field);
    if (gold.empty()) return Score::not_applicable("the row has no gold answer");
    Score out;
    ThinkSplit split = split_think(s.completion, s.prompt);
    std::string_view graded = opt_.grade == "answer" ? split.answer : s.completion;
    out.detail["gold"] = truncate_for_detail(gold, 200);
    out.detail["think_closed"] = split.closed;
    if (opt_.grade == "answer" && split.opened && !split.closed) {
      out.detail["error"] = "the reasoning was never closed by </think>: no answer to grade";
      return out;
    }
    ExtractedAnswer ans = extract_answer(graded, opt_.allow_last_number);
    out.detail["extraction"] = ans.method;
    if (ans.method == "none") {
      out.detail["error"] = "no final answer found (\\boxed{}, <answer>, ####, \"the answer is\")";
      return out;
    }
    out.detail["extracted"] = truncate_for_detail(ans.text, 200);
    math::EquivResult r = math::answers_equivalent(gold, ans.text, eq_);
    out.detail["compared_by"] = r.method;
    if (!r.note.empty()) out.detail["note"] = truncate_for_detail(r.note, 400);
    out.passed = r.equal;
    out.reward = r.equal ? 1.0 : 0.0;
    return out;
  }

 private:
  MathVerifierOptions opt_;
  math::EquivOptions eq_;
};

}  // namespace

std::shared_ptr<Verifier> make_math_verifier(const MathVerifierOptions& opt) {
  return std::make_shared<MathVerifier>(opt);
}

}  // namespace retort::rewards
