// An example verifier plugin: a shared library that adds the verifier "keyword" to the
// registry. Load it with "plugins": ["build/rewards/examples/example_plugin.so"] in the
// rewards config (or `retort verify keyword --plugin ...`).
//
// "keyword" rewards 1 when the answer part of the completion (after </think>) contains the
// keyword — the row's "keyword" field, else args.keyword — and is not applicable when
// neither gives one. Deliberately small: it shows the contract (thread-safe const verify,
// NaN for "not applicable", a detail for the audit log, args checked in the factory).
#include <algorithm>  // defines: std::search
#include <cctype>     // defines: std::tolower
#include <stdexcept>  // defines: std::invalid_argument

#include "rewards/verifier.h"  // defines: Verifier, Registry, Sample, Score (header-only for plugins)

namespace {

using retort::rewards::json;

class KeywordVerifier : public retort::rewards::Verifier {
 public:
  KeywordVerifier(std::string keyword, bool case_sensitive) : keyword_(std::move(keyword)), case_sensitive_(case_sensitive) {}

  retort::rewards::Score verify(const retort::rewards::Sample& s) const override {
    std::string keyword = keyword_;
    if (s.row.is_object() && s.row.contains("keyword") && s.row["keyword"].is_string())
      keyword = s.row["keyword"].get<std::string>();
    if (keyword.empty()) return retort::rewards::Score::not_applicable("no keyword in the row or the args");
    std::string_view text = s.completion;
    size_t close = text.find("</think>");
    if (close != std::string_view::npos) text.remove_prefix(close + 8);
    auto eq = [&](char a, char b) {
      return case_sensitive_ ? a == b
                             : std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
    };
    bool found = std::search(text.begin(), text.end(), keyword.begin(), keyword.end(), eq) != text.end();
    retort::rewards::Score sc;
    sc.reward = found ? 1.0 : 0.0;
    sc.passed = found;
    sc.detail = {{"keyword", keyword}, {"found", found}};
    return sc;
  }

 private:
  std::string keyword_;
  bool case_sensitive_;
};

}  // namespace

extern "C" void retort_register_verifiers(retort::rewards::Registry& registry) {
  registry.add("keyword", "the answer contains a keyword (example plugin)",
               [](const json& args, const retort::rewards::VerifierContext&) -> std::shared_ptr<retort::rewards::Verifier> {
                 // Args are checked here; the message names the key and the allowed ones.
                 for (auto it = args.begin(); it != args.end(); ++it)
                   if (it.key() != "keyword" && it.key() != "case_sensitive")
                     throw std::invalid_argument("verifier 'keyword': unknown args key '" + it.key() +
                                                 "' (allowed: keyword, case_sensitive)");
                 std::string keyword = args.value("keyword", std::string());
                 bool cs = args.value("case_sensitive", false);
                 return std::make_shared<KeywordVerifier>(keyword, cs);
               });
}
