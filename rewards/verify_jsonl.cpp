// The `retort verify` loop (see verify_jsonl.h).
#include "rewards/verify_jsonl.h"

#include <cmath>     // defines: std::isnan
#include <istream>   // defines: std::getline
#include <ostream>   // defines: std::ostream

#include "common/error.h"      // defines: retort::Error
#include "rewards/combine.h"   // defines: RewardSet, RewardsConfig

namespace retort::rewards {

namespace {

void flush_batch(const RewardSet& set, std::vector<ScoreInput>& batch, std::ostream& out) {
  if (batch.empty()) return;
  RewardTable t = set.score(batch);
  for (int i = 0; i < t.n; ++i) {
    double r = t.reward(i, 0);
    json line = {{"reward", std::isnan(r) ? json(nullptr) : json(r)},
                 {"passed", static_cast<bool>(t.passed[static_cast<size_t>(i)])},
                 {"detail", t.detail(i, 0)}};
    out << line.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
  }
  out.flush();
  batch.clear();
}

}  // namespace

int verify_jsonl(std::istream& in, std::ostream& out, const VerifyCliOptions& opt) {
  RewardsConfig cfg;
  cfg.verifiers.push_back(VerifierSpec{opt.name, 1.0, opt.args.is_null() ? json::object() : opt.args});
  cfg.plugins = opt.plugins;
  cfg.sandbox = parse_config<sandbox::ExecutorConfig>(opt.sandbox, "rewards.sandbox");
  cfg.deadline_s = opt.deadline_s;
  RewardSet set(cfg, builtin_registry());
  std::vector<ScoreInput> batch;
  std::string line;
  int line_no = 0, scored = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const std::exception& e) {
      throw Error(ErrorInfo{"a sample line is not JSON", "stdin:" + std::to_string(line_no), "a JSON object",
                            quote_for_error(line), e.what()});
    }
    if (!j.is_object() || !j.contains("completion") || !j["completion"].is_string())
      throw Error(ErrorInfo{"a sample needs a string \"completion\"", "stdin:" + std::to_string(line_no),
                            "{\"completion\": \"...\", ...row fields}", quote_for_error(line),
                            "add the row's fields too: \"answer\" for math, \"tests\" for code"});
    ScoreInput si;
    si.completion = j["completion"].get<std::string>();
    if (j.contains("prompt") && j["prompt"].is_string()) si.prompt = j["prompt"].get<std::string>();
    if (j.contains("completion_tokens") && j["completion_tokens"].is_number_integer())
      si.completion_tokens = j["completion_tokens"].get<int64_t>();
    j.erase("completion");
    si.row = std::make_shared<const json>(std::move(j));
    batch.push_back(std::move(si));
    ++scored;
    if (static_cast<int>(batch.size()) >= opt.batch) flush_batch(set, batch, out);
  }
  flush_batch(set, batch, out);
  return scored;
}

}  // namespace retort::rewards
