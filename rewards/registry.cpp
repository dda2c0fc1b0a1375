// The verifier registry and the one explicit list of built-in verifiers.
#include <algorithm>  // defines: std::min

#include "common/config.h"          // defines: parse_config, closest_match
#include "common/error.h"           // defines: retort::Error
#include "rewards/code_verifier.h"  // defines: make_code_verifier
#include "rewards/external.h"       // defines: make_external_verifier
#include "rewards/math_verifier.h"  // defines: make_math_verifier
#include "rewards/shape.h"          // defines: make_format_verifier, ...
#include "rewards/tool_verifier.h"  // defines: make_tool_verifier
#include "rewards/verifier.h"

namespace retort::rewards {

void Registry::check(const std::string& source) const {
  if (duplicates_.empty()) return;
  std::string names;
  for (const auto& n : duplicates_) names += (names.empty() ? "" : ", ") + n;
  throw Error(ErrorInfo{"verifier name registered twice", source, "names not yet taken", names,
                        "rename the plugin's verifier"});
}

std::shared_ptr<Verifier> Registry::create(const std::string& name, const json& args, const VerifierContext& ctx) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    std::string known;
    for (const auto& n : names()) known += (known.empty() ? "" : ", ") + n;
    std::string close = closest_match(name, names());
    throw Error(ErrorInfo{"unknown verifier '" + name + "'", "rewards.verifiers", "one of: " + known, name,
                          close.empty() ? "plugins add names: list their .so files under rewards.plugins"
                                        : "did you mean '" + close + "'?"});
  }
  return it->second.factory(args.is_null() ? json::object() : args, ctx);
}

namespace {

// Parses a verifier's args strictly: unknown keys and wrong types name the verifier and key.
template <class Options>
Options parse_args(const json& args, const std::string& name) {
  return parse_config<Options>(args, "rewards verifier '" + name + "'", "args");
}

}  // namespace

void register_builtin_verifiers(Registry& r) {
  r.add("math", "final answer (\\boxed{}, <answer>, ####) equivalent to the row's gold answer",
        [](const json& a, const VerifierContext&) { return make_math_verifier(parse_args<MathVerifierOptions>(a, "math")); });
  r.add("code", "program from the last code block passes the row's tests in the sandbox",
        [](const json& a, const VerifierContext& ctx) {
          return make_code_verifier(parse_args<CodeVerifierOptions>(a, "code"), ctx);
        });
  r.add("format", "R1 format: reasoning closed by </think>, then a non-empty answer",
        [](const json& a, const VerifierContext&) { return make_format_verifier(parse_args<FormatOptions>(a, "format")); });
  r.add("tag_count", "partial credit for each well-formed tag",
        [](const json& a, const VerifierContext&) {
          return make_tag_count_verifier(parse_args<TagCountOptions>(a, "tag_count"));
        });
  r.add("overlong", "DAPO soft overlong penalty",
        [](const json& a, const VerifierContext&) {
          return make_overlong_verifier(parse_args<OverlongOptions>(a, "overlong"));
        });
  r.add("cosine_length", "cosine-scaled length reward on top of math correctness",
        [](const json& a, const VerifierContext&) {
          return make_cosine_length_verifier(parse_args<CosineLengthOptions>(a, "cosine_length"));
        });
  r.add("repetition", "n-gram repetition penalty",
        [](const json& a, const VerifierContext&) {
          return make_repetition_verifier(parse_args<RepetitionOptions>(a, "repetition"));
        });
  r.add("tool", "tool calls of the chain: bonus for calls that ran, penalties for failures, time limits, budget",
        [](const json& a, const VerifierContext&) { return make_tool_verifier(parse_args<ToolVerifierOptions>(a, "tool")); });
  r.add("external", "any executable reading one JSON sample per line and answering one JSON score per line",
        [](const json& a, const VerifierContext&) {
          return make_external_verifier(parse_args<ExternalVerifierOptions>(a, "external"));
        });
}

Registry builtin_registry() {
  Registry r;
  register_builtin_verifiers(r);
  r.check("built-in verifiers");
  return r;
}

}  // namespace retort::rewards
