// Evaluation (see eval.h for the stages, metrics and failure modes).
#include "train/eval.h"

#include <algorithm>   // defines: std::min, std::max
#include <cmath>       // defines: std::isnan, std::isfinite
#include <cstdio>      // defines: std::snprintf, std::fputs
#include <filesystem>  // defines: std::filesystem
#include <fstream>     // defines: std::ifstream
#include <memory>      // defines: std::unique_ptr
#include <set>         // defines: std::set
#include <unordered_map>  // defines: std::unordered_map

#include "audit/chain_log.h"          // defines: ChainLog, ChainEntry, verifier_cell
#include "common/config.h"            // defines: ConfigBinder, parse_config, apply_override, write_json_file_atomic
#include "common/error.h"             // defines: retort::Error
#include "common/hash.h"              // defines: mix_seed
#include "common/log.h"               // defines: log_info, ProgressBar, finite_or_null, fmt_pct
#include "common/platform.h"          // defines: now_seconds
#include "common/run_dir.h"           // defines: RunDir
#include "dist/dist.h"                // defines: DistContext, dist_context, shard_range
#include "model/checkpoint.h"         // defines: load_model
#include "rewards/extract.h"          // defines: split_think, extract_answer, last_code_block
#include "rewards/math/normalize.h"   // defines: normalize_answer
#include "rollout/score.h"            // defines: sample_and_score, sampler_stop_ids
#include "tokenizer/chat_template.h"  // defines: ChatTemplate
#include "tokenizer/tokenizer.h"      // defines: Tokenizer

namespace fs = std::filesystem;

namespace retort {

using nlohmann::json;

void EvalDatasetConfig::bind(ConfigBinder& b) {
  b.field("name", name);
  b.field("path", path);
  format.bind(b);  // beside the path: chat_template, system, math_instruction, code_instruction
  b.field("limit", limit, Range::at_least(0));
  b.field("verifiers", verifiers);
}

void EvalSamplingConfig::bind(ConfigBinder& b) {
  b.field("k", k, Range::at_least(1));
  b.field("temperature", temperature, Range::at_least(0).up_to(100));
  b.field("top_p", top_p, Range::above(0).up_to(1));
  b.field("top_k", top_k, Range::at_least(0));
  b.field("max_new_tokens", max_new_tokens, Range::at_least(1).up_to(1 << 20));
  b.field("greedy", greedy);
  b.field("kv_cache_mb", kv_cache_mb, Range::at_least(0).up_to(1 << 24));
}

void EvalConfig::bind(ConfigBinder& b) {
  b.field("run_dir", run_dir);
  b.field("model", model);
  b.field("tokenizer", tokenizer);
  b.field("dtype", dtype);
  b.field("output", output);
  b.field("runtime", runtime);
  b.field("format", format);
  b.field("datasets", datasets);
  b.field("sampling", sampling);
  b.field("tools", tools);
  b.field("rewards", rewards);
  b.field("batch_size", batch_size, Range::at_least(1));
  b.field("max_prompt_tokens", max_prompt_tokens, Range::at_least(0));
}

// ---- estimators ------------------------------------------------------------------------------

double pass_at_k(int64_t n, int64_t c, int64_t k) {
  if (n < 1 || c < 0 || c > n || k < 1 || k > n) {
    throw Error(ErrorInfo{"pass@k needs 0 <= c <= n and 1 <= k <= n", "pass_at_k", "0 <= c <= n, 1 <= k <= n",
                          "n " + std::to_string(n) + ", c " + std::to_string(c) + ", k " + std::to_string(k), ""});
  }
  if (n - c < k) return 1.0;  // every draw of k samples holds a passing one
  // C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i): no factorials, no overflow.
  double fail = 1.0;
  for (int64_t i = n - c + 1; i <= n; ++i) fail *= 1.0 - static_cast<double>(k) / static_cast<double>(i);
  return 1.0 - fail;
}

std::vector<int64_t> k_values(int64_t n) {
  std::vector<int64_t> out;
  for (int64_t k = 1; k <= n; k *= 2) out.push_back(k);
  if (n >= 1 && out.back() != n) out.push_back(n);
  return out;
}

MajorityVote majority_vote(const std::vector<std::string>& answers, const std::vector<bool>& passed) {
  if (answers.size() != passed.size()) {
    throw Error(ErrorInfo{"majority_vote needs one grade per answer", "majority_vote", std::to_string(answers.size()) + " grades",
                          std::to_string(passed.size()), ""});
  }
  // answer -> (votes, first index); the winner has the most votes, ties to the smaller first index.
  std::unordered_map<std::string, std::pair<int64_t, int64_t>> count;
  MajorityVote v;
  for (size_t i = 0; i < answers.size(); ++i) {
    if (answers[i].empty()) continue;  // no answer: no vote
    auto it = count.try_emplace(answers[i], 0, static_cast<int64_t>(i)).first;
    ++it->second.first;
    const int64_t votes = it->second.first, first = it->second.second;
    if (votes > v.votes || (votes == v.votes && first < v.winner)) {
      v.votes = votes;
      v.winner = first;
    }
  }
  if (v.winner >= 0) {
    v.answer = answers[static_cast<size_t>(v.winner)];
    v.passed = passed[static_cast<size_t>(v.winner)];
  }
  return v;
}

namespace {

// ---- config helpers --------------------------------------------------------------------------

// The top-level "format" fills the keys a dataset does not set itself (JSON level, so that the
// strict binder still checks both).
void apply_format_defaults(json& doc) {
  auto f = doc.find("format");
  auto d = doc.find("datasets");
  if (f == doc.end() || !f->is_object() || d == doc.end() || !d->is_array()) return;
  for (auto& ds : *d) {
    if (!ds.is_object()) continue;
    for (auto it = f->begin(); it != f->end(); ++it)
      if (!ds.contains(it.key())) ds[it.key()] = it.value();
  }
}

std::string dataset_name(const EvalDatasetConfig& d) {
  if (!d.name.empty()) return d.name;
  std::string stem = fs::path(d.path).filename().string();
  const std::string ext = ".jsonl";
  if (stem.size() > ext.size() && stem.compare(stem.size() - ext.size(), ext.size(), ext) == 0) stem.resize(stem.size() - ext.size());
  return stem;
}

// The verifier specs of one dataset: its named ones (an entry of rewards.verifiers by name,
// else a registry name with default args), or by row kinds when it names none.
std::vector<rewards::VerifierSpec> resolve_verifiers(const EvalDatasetConfig& d, size_t index, const std::vector<PromptRecord>& recs,
                                                     const rewards::RewardsConfig& rc, const rewards::Registry& registry,
                                                     const std::string& where) {
  std::vector<std::string> names = d.verifiers;
  if (names.empty()) {
    bool math = false, code = false;
    for (const auto& r : recs) (r.kind == "math" ? math : code) = true;
    if (math) names.push_back("math");
    if (code) names.push_back("code");
  }
  std::vector<rewards::VerifierSpec> out;
  std::set<std::string> seen;
  for (size_t j = 0; j < names.size(); ++j) {
    const std::string& n = names[j];
    if (!seen.insert(n).second) continue;
    auto it = std::find_if(rc.verifiers.begin(), rc.verifiers.end(), [&](const rewards::VerifierSpec& s) { return s.name == n; });
    if (it != rc.verifiers.end()) {
      out.push_back(*it);
      continue;
    }
    // Plugin verifiers register when the reward set loads them: let the reward set judge those.
    if (!registry.contains(n) && rc.plugins.empty()) {
      std::vector<std::string> known = registry.names();
      for (const auto& s : rc.verifiers) known.push_back(s.name);
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      std::string close = closest_match(n, known);
      throw Error(ErrorInfo{"unknown verifier '" + n + "'",
                            where + ": datasets[" + std::to_string(index) + "].verifiers[" + std::to_string(j) + "]",
                            "one of: " + list, n, close.empty() ? "add it to rewards.verifiers, or load a plugin" : "did you mean '" + close + "'?"});
    }
    rewards::VerifierSpec s;
    s.name = n;
    out.push_back(s);
  }
  return out;
}

// ---- voting --------------------------------------------------------------------------------

std::string collapse_whitespace(const std::string& s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

// The answer a sample votes for in maj@k: the math verifier's extracted answer (from its
// detail) normalised; else, for code rows, the last code block with whitespace collapsed; else
// the final answer extracted the way the math verifier does. "" = no answer (no vote).
std::string vote_key(const std::string& text, const PromptRecord& rec, const rewards::RewardTable& t, int row) {
  for (int j = 0; j < t.k; ++j) {
    const json& d = t.detail(row, j);
    if (!d.is_object()) continue;
    auto it = d.find("extracted");
    if (it != d.end() && it->is_string()) return rewards::math::normalize_answer(it->get<std::string>());
  }
  rewards::ThinkSplit split = rewards::split_think(text, rec.text);
  if (split.opened && !split.closed) return "";  // still reasoning at the token limit: no answer
  if (rec.kind != "math") {
    rewards::CodeBlock b = rewards::last_code_block(split.answer);
    return b.found ? collapse_whitespace(b.code) : "";
  }
  rewards::ExtractedAnswer a = rewards::extract_answer(split.answer);
  return a.method == "none" ? "" : rewards::math::normalize_answer(a.text);
}

// ---- per-dataset bookkeeping ------------------------------------------------------------------

// One sample's outcome per column: column 0 is "all", column 1 + j is verifier j.
struct SampleOutcome {
  std::vector<uint8_t> applicable;  // [1+K]
  std::vector<uint8_t> passed;      // [1+K]
  std::string vote;
  int64_t length = 0;
  bool truncated = false;
  double reward = 0;
};

EvalMetrics column_metrics(const std::string& name, size_t col, const std::vector<std::vector<SampleOutcome>>& per_prompt,
                           const std::vector<int64_t>& ks) {
  EvalMetrics m;
  m.verifier = name;
  std::map<int64_t, double> pass_sum, maj_sum;
  std::map<int64_t, int64_t> pass_n, maj_n;
  double pass1 = 0;
  for (const auto& samples : per_prompt) {
    std::vector<std::string> votes;
    std::vector<bool> ok;
    for (const auto& s : samples) {
      if (!s.applicable[col]) continue;
      votes.push_back(s.vote);
      ok.push_back(s.passed[col] != 0);
    }
    const int64_t n = static_cast<int64_t>(ok.size());
    if (n == 0) continue;
    const int64_t c = std::count(ok.begin(), ok.end(), true);
    ++m.prompts;
    m.samples += n;
    pass1 += static_cast<double>(c) / static_cast<double>(n);
    for (int64_t k : ks) {
      if (k > n) continue;  // fewer applicable samples than k: this prompt has no pass@k
      pass_sum[k] += pass_at_k(n, c, k);
      ++pass_n[k];
      // maj@k over the first k samples (the samples are exchangeable draws).
      std::vector<std::string> v(votes.begin(), votes.begin() + k);
      std::vector<bool> g(ok.begin(), ok.begin() + k);
      maj_sum[k] += majority_vote(v, g).passed ? 1.0 : 0.0;
      ++maj_n[k];
    }
  }
  m.pass1 = m.prompts ? pass1 / static_cast<double>(m.prompts) : std::nan("");
  for (const auto& kv : pass_sum) m.pass_at[kv.first] = kv.second / static_cast<double>(pass_n[kv.first]);
  for (const auto& kv : maj_sum) m.maj_at[kv.first] = kv.second / static_cast<double>(maj_n[kv.first]);
  return m;
}

json metrics_json(const EvalMetrics& m) {
  json pass = json::object(), maj = json::object();
  for (const auto& kv : m.pass_at) pass[std::to_string(kv.first)] = kv.second;
  for (const auto& kv : m.maj_at) maj[std::to_string(kv.first)] = kv.second;
  return json{{"prompts", m.prompts}, {"samples", m.samples}, {"pass@1", finite_or_null(m.pass1)}, {"pass@k", pass}, {"maj@k", maj}};
}

// The table printed at the end (stderr: stdout stays machine-readable).
void print_summary(const std::vector<EvalDatasetResult>& results, const std::string& output) {
  char line[512];
  std::string out = "\n";
  std::snprintf(line, sizeof line, "%-22s %-10s %7s %4s %8s %10s %10s %9s %6s\n", "dataset", "verifier", "prompts", "k", "pass@1",
                "pass@k", "maj@k", "mean len", "trunc");
  out += line;
  for (const auto& r : results) {
    for (const auto& m : r.metrics) {
      const double pk = m.pass_at.empty() ? std::nan("") : m.pass_at.rbegin()->second;
      const double mk = m.maj_at.empty() ? std::nan("") : m.maj_at.rbegin()->second;
      const bool first = &m == &r.metrics.front();
      char len[32] = "", trunc[32] = "";
      if (first) {
        std::snprintf(len, sizeof len, "%.1f", r.mean_length);
        std::snprintf(trunc, sizeof trunc, "%.1f%%", 100.0 * r.truncated_share);
      }
      std::snprintf(line, sizeof line, "%-22s %-10s %7lld %4lld %8s %10s %10s %9s %6s\n", first ? r.name.c_str() : "", m.verifier.c_str(),
                    static_cast<long long>(m.prompts), static_cast<long long>(r.k), fmt_pct(m.pass1, false).c_str(), fmt_pct(pk, false).c_str(),
                    fmt_pct(mk, false).c_str(), len, trunc);
      out += line;
    }
  }
  out += "(percent; pass@k and maj@k at k = the samples per prompt; all = every applicable verifier passed)\n";
  out += "wrote " + output + "\n";
  std::fputs(out.c_str(), stderr);
}

// ---- 1 setup ---------------------------------------------------------------------------------

// The config with the overrides and the top-level format applied, and the checks the binder
// cannot make: a model, at least one dataset, each with a path and a name of its own.
EvalConfig parse_eval_config(const json& doc_in, const std::string& where, const std::vector<std::string>& overrides) {
  json doc = doc_in;
  for (const auto& o : overrides) apply_override(doc, o);
  apply_format_defaults(doc);
  EvalConfig cfg = parse_config<EvalConfig>(doc, where);
  if (cfg.model.empty()) throw Error(ErrorInfo{"no model given", where + ": model", "a checkpoint folder", "\"\"", "set model=PATH"});
  if (cfg.datasets.empty()) {
    throw Error(ErrorInfo{"no dataset given", where + ": datasets", "a list of {\"name\", \"path\"}", "[]",
                          "e.g. \"datasets\": [{\"name\": \"gsm8k\", \"path\": \"../shared/data/gsm8k_test.jsonl\"}]"});
  }
  if (cfg.sampling.k < 1 || cfg.batch_size < 1 || cfg.sampling.max_new_tokens < 1) {
    throw Error(ErrorInfo{"sampling.k, sampling.max_new_tokens and batch_size must be positive", where,
                          "k >= 1, max_new_tokens >= 1, batch_size >= 1",
                          "k " + std::to_string(cfg.sampling.k) + ", max_new_tokens " + std::to_string(cfg.sampling.max_new_tokens) +
                              ", batch_size " + std::to_string(cfg.batch_size),
                          ""});
  }
  std::set<std::string> names;
  for (size_t i = 0; i < cfg.datasets.size(); ++i) {
    const auto& d = cfg.datasets[i];
    const std::string at = where + ": datasets[" + std::to_string(i) + "]";
    if (d.path.empty()) throw Error(ErrorInfo{"a dataset has no path", at + ".path", "a prompts JSONL file", "\"\"", ""});
    if (d.limit < 0) throw Error(ErrorInfo{"a dataset limit cannot be negative", at + ".limit", ">= 0 (0 = all)", std::to_string(d.limit), ""});
    if (!names.insert(dataset_name(d)).second) {
      throw Error(ErrorInfo{"two datasets have the name '" + dataset_name(d) + "'", at + ".name", "distinct names", dataset_name(d),
                            "give one of them a \"name\""});
    }
  }
  return cfg;
}

// The sampler's options shared by every dataset (k completions per prompt); the stop ids and
// the per-row seeds are set per dataset and per batch.
SamplerOptions base_sampler(const EvalConfig& cfg, int64_t k) {
  SamplerOptions base;
  base.group_size = k;
  base.max_new_tokens = cfg.sampling.max_new_tokens;
  base.greedy = cfg.sampling.greedy || cfg.sampling.temperature <= 0;
  base.temperature = cfg.sampling.temperature;
  base.top_p = cfg.sampling.top_p;
  base.top_k = cfg.sampling.top_k;
  base.pad_token_id = 0;
  base.kv_cache_mb = cfg.sampling.kv_cache_mb;
  base.tools = cfg.tools;  // the pool and the encoder come from sample_and_score
  return base;
}

// What every dataset's evaluation reads.
struct EvalContext {
  const EvalConfig& cfg;
  const Tokenizer& tok;
  Qwen2ForCausalLMImpl& model;         // in eval mode
  const rewards::Registry& registry;   // where verifier names resolve
  const SamplerOptions& base;          // base_sampler
  int64_t k;                           // samples per prompt (1 when greedy)
  const std::string& where;
  const DistContext& dist;             // data parallel: each rank samples a contiguous share of every dataset's prompts
  const std::string& samples_path;     // RUN_DIR/eval_samples.jsonl (rank 0 writes it)
};

// ---- 2 prompts -------------------------------------------------------------------------------

// A dataset's usable prompts: the first `limit` of the file, without the ones that tokenize
// to nothing or to more than max_prompt_tokens (counted in `skipped`).
struct DatasetPrompts {
  std::vector<PromptRecord> records;
  std::vector<std::vector<int32_t>> ids;  // [prompts][prompt tokens]
  int64_t skipped = 0;
};

DatasetPrompts load_dataset_prompts(const EvalContext& c, const EvalDatasetConfig& dc, const std::string& name) {
  DatasetPrompts out;
  std::vector<PromptRecord> all = load_prompts(dc.path, dc.format);
  if (dc.limit > 0 && static_cast<int64_t>(all.size()) > dc.limit) all.resize(static_cast<size_t>(dc.limit));
  for (auto& r : all) {
    std::vector<int32_t> t = c.tok.encode(r.text);
    if (t.empty() || (c.cfg.max_prompt_tokens > 0 && static_cast<int64_t>(t.size()) > c.cfg.max_prompt_tokens)) {
      ++out.skipped;
      continue;
    }
    out.records.push_back(std::move(r));
    out.ids.push_back(std::move(t));
  }
  if (out.records.empty()) {
    throw Error(ErrorInfo{"no usable prompt in dataset '" + name + "'", dc.path, "prompts of at most max_prompt_tokens tokens",
                          std::to_string(out.skipped) + " prompts, all too long", "raise max_prompt_tokens (0 = no limit)"});
  }
  return out;
}

// ---- 3 sample and score ----------------------------------------------------------------------

// One row of a scored batch as its outcome per column (K verifiers): a verifier applies when
// its reward is not NaN; "all" passes when every applicable verifier passed.
SampleOutcome grade_sample(const PromptRecord& rec, const ScoredRollout& s, int64_t row, size_t K) {
  const int r = static_cast<int>(row);
  SampleOutcome o;
  o.applicable.assign(1 + K, 0);
  o.passed.assign(1 + K, 0);
  bool all_pass = true, any = false;
  for (size_t j = 0; j < K; ++j) {
    const double rw = s.table.reward(r, static_cast<int>(j));
    const bool ok = s.table.passed[static_cast<size_t>(row) * K + j] != 0;
    if (!std::isnan(rw)) {
      o.applicable[1 + j] = 1;
      o.passed[1 + j] = ok;
      any = true;
      all_pass = all_pass && ok;
    }
  }
  o.applicable[0] = any;
  o.passed[0] = any && all_pass;
  o.vote = vote_key(s.texts[static_cast<size_t>(row)], rec, s.table, r);
  o.length = static_cast<int64_t>(s.rollout.completions[static_cast<size_t>(row)].size());
  o.truncated = s.rollout.truncated[static_cast<size_t>(row)];
  o.reward = s.table.total[static_cast<size_t>(row)];
  return o;
}

// Every prompt's k samples, graded: outcomes [prompts][k].
struct SampledDataset {
  std::vector<std::vector<SampleOutcome>> outcomes;
  double sample_s = 0, wait_s = 0;  // sampler wall time; wait for the verifiers after it returned
  int64_t tokens = 0;               // completion tokens sampled
};

json outcome_json(const SampleOutcome& o) { return json::array({o.applicable, o.passed, o.vote, o.length, o.truncated, o.reward}); }

SampleOutcome outcome_from_json(const json& j) {
  SampleOutcome o;
  o.applicable = j.at(0).get<std::vector<uint8_t>>();
  o.passed = j.at(1).get<std::vector<uint8_t>>();
  o.vote = j.at(2).get<std::string>();
  o.length = j.at(3).get<int64_t>();
  o.truncated = j.at(4).get<bool>();
  o.reward = j.at(5).is_number() ? j.at(5).get<double>() : std::nan("");
  return o;
}

// `batch_size` prompts x k completions per sampler call, each completion verified as soon as it
// finishes; one line per sample in the samples log (the chains.jsonl schema of audit/chain_log.h
// plus dataset, passed and vote). Dataset `index`'s streams: one per (prompt, sample), so a
// sample depends neither on batch_size nor on which rank draws it. Under data parallel each rank
// samples prompts shard_range(prompts, rank, world) and rank 0 gathers the outcomes (the other
// ranks return none and pass no log). The other ranks write their samples' lines to a file of
// their own (RUN_DIR/eval_samples.jsonl.rank<r>.<dataset index>), which rank 0 then appends to
// the samples log in rank order and deletes: at R1 lengths the lines are hundreds of MB, so
// they go through neither memory nor the rendezvous store at once.
SampledDataset sample_dataset(const EvalContext& c, size_t index, const std::string& name, const DatasetPrompts& dp,
                              SamplerOptions so, const rewards::RewardSet& reward_set, ChainLog* samples_log) {
  const int64_t k = c.k, prompts = static_cast<int64_t>(dp.records.size());
  const size_t K = reward_set.names().size();
  const ShardRange mine = shard_range(prompts, c.dist.rank(), c.dist.world_size());
  auto part_path = [&](int rank) { return c.samples_path + ".rank" + std::to_string(rank) + "." + std::to_string(index); };
  std::unique_ptr<ChainLog> part;  // this rank's lines under data parallel (ranks other than 0)
  if (c.dist.enabled() && !c.dist.is_main()) {
    fs::remove(part_path(c.dist.rank()));
    part = std::make_unique<ChainLog>(part_path(c.dist.rank()));
  }
  ChainLog* log = part ? part.get() : samples_log;
  SampledDataset out;
  out.outcomes.resize(dp.records.size());
  json shard = json::array();  // under data parallel: this rank's outcomes, sample by sample in order
  std::unique_ptr<ProgressBar> bar;
  if (c.dist.is_main()) bar = std::make_unique<ProgressBar>("eval " + name, mine.end - mine.begin, "prompt");
  const int64_t data_seed = static_cast<int64_t>(mix_seed(c.cfg.runtime.seed, static_cast<int64_t>(index), 0));
  for (int64_t b0 = mine.begin; b0 < mine.end; b0 += c.cfg.batch_size) {
    const int64_t nb = std::min(c.cfg.batch_size, mine.end - b0);
    std::vector<std::vector<int32_t>> batch_ids(dp.ids.begin() + b0, dp.ids.begin() + b0 + nb);
    std::vector<const PromptRecord*> batch_recs;
    for (int64_t i = b0; i < b0 + nb; ++i) batch_recs.push_back(&dp.records[static_cast<size_t>(i)]);
    so.row_seeds.clear();
    for (int64_t i = b0; i < b0 + nb; ++i)
      for (int64_t j = 0; j < k; ++j)
        so.row_seeds.push_back(mix_seed(data_seed, i, j));
    ScoredRollout s = sample_and_score(c.model, batch_ids, batch_recs, so, reward_set, c.tok);
    out.sample_s += s.sample_s;
    out.wait_s += s.score_wait_s;
    for (int64_t row = 0; row < nb * k; ++row) {
      const size_t p = static_cast<size_t>(b0 + row / k);
      const PromptRecord& rec = dp.records[p];
      SampleOutcome o = grade_sample(rec, s, row, K);
      out.tokens += o.length;
      ChainEntry e = chain_entry(rec, s, row);
      e.group = static_cast<int64_t>(p);
      json line = chain_line(e);
      line["dataset"] = name;
      line["passed"] = o.passed[0] != 0;
      line["vote"] = o.vote;
      log->write(std::move(line));
      if (c.dist.enabled()) shard.push_back(outcome_json(o));
      else out.outcomes[p].push_back(std::move(o));
    }
    if (bar) {
      char suffix[64];
      std::snprintf(suffix, sizeof suffix, "%.0f tok/s", out.sample_s > 0 ? out.tokens / out.sample_s : 0.0);
      bar->update(b0 + nb - mine.begin, suffix);
    }
  }
  if (bar) bar->finish();
  part.reset();  // written and closed before rank 0 reads it (the gather below waits for every rank)
  if (c.dist.enabled()) {
    // Shards are contiguous and gathered in rank order: the samples come back in prompt order.
    std::vector<std::string> outcomes = c.dist.gather_to_main(shard.dump(-1, ' ', false, json::error_handler_t::replace));
    out.tokens = static_cast<int64_t>(c.dist.sum(static_cast<double>(out.tokens)));
    out.sample_s = c.dist.max(out.sample_s);
    out.wait_s = c.dist.max(out.wait_s);
    int64_t row = 0;
    for (const auto& rank_outcomes : outcomes)
      for (const auto& o : json::parse(rank_outcomes)) out.outcomes.at(static_cast<size_t>(row++ / k)).push_back(outcome_from_json(o));
    if (samples_log) {
      for (int r = 1; r < c.dist.world_size(); ++r) {
        std::ifstream f(part_path(r));
        if (!f) {
          throw Error(ErrorInfo{"rank " + std::to_string(r) + " left no samples file", c.where, part_path(r), "missing",
                                "the run folder must be shared by the ranks (one machine, or a shared file system)"});
        }
        std::string line;
        while (std::getline(f, line))
          if (!line.empty()) samples_log->write(json::parse(line));
        f.close();
        fs::remove(part_path(r));
      }
    }
  }
  return out;
}

// ---- 4 measure -------------------------------------------------------------------------------

// The dataset's metrics ("all" first, then one per verifier), its mean length, truncated
// share and mean reward (set in `dr`). -> the per-prompt results of eval.json.
json measure(EvalDatasetResult& dr, const DatasetPrompts& dp, const SampledDataset& sd) {
  const size_t K = dr.verifiers.size();
  const std::vector<int64_t> ks = k_values(dr.k);
  dr.metrics.push_back(column_metrics("all", 0, sd.outcomes, ks));
  for (size_t j = 0; j < K; ++j) dr.metrics.push_back(column_metrics(dr.verifiers[j], 1 + j, sd.outcomes, ks));
  int64_t n_samples = 0, n_trunc = 0;
  double len_sum = 0, reward_sum = 0;
  json per_prompt = json::array();
  for (size_t p = 0; p < dp.records.size(); ++p) {
    const std::vector<SampleOutcome>& samples = sd.outcomes[p];
    std::vector<std::string> votes;
    std::vector<bool> ok;
    int64_t plen = 0, ptrunc = 0;
    json per_verifier = json::object();
    std::vector<int64_t> vn(K, 0), vc(K, 0);
    for (const auto& o : samples) {
      ++n_samples;
      len_sum += static_cast<double>(o.length);
      reward_sum += o.reward;
      n_trunc += o.truncated;
      plen += o.length;
      ptrunc += o.truncated;
      if (o.applicable[0]) {
        votes.push_back(o.vote);
        ok.push_back(o.passed[0] != 0);
      }
      for (size_t j = 0; j < K; ++j) {
        vn[j] += o.applicable[1 + j];
        vc[j] += o.passed[1 + j];
      }
    }
    for (size_t j = 0; j < K; ++j) per_verifier[dr.verifiers[j]] = {{"n", vn[j]}, {"passed", vc[j]}};
    const int64_t c = std::count(ok.begin(), ok.end(), true);
    MajorityVote mv = majority_vote(votes, ok);
    per_prompt.push_back({{"id", dp.records[p].id},
                          {"kind", dp.records[p].kind},
                          {"n", static_cast<int64_t>(ok.size())},
                          {"passed", c},
                          {"pass@1", ok.empty() ? json(nullptr) : json(static_cast<double>(c) / static_cast<double>(ok.size()))},
                          {"majority", {{"answer", mv.answer}, {"votes", mv.votes}, {"passed", mv.passed}}},
                          {"verifiers", per_verifier},
                          {"mean_length", samples.empty() ? 0.0 : static_cast<double>(plen) / samples.size()},
                          {"truncated", ptrunc}});
  }
  dr.mean_length = n_samples ? len_sum / n_samples : 0.0;
  dr.truncated_share = n_samples ? static_cast<double>(n_trunc) / n_samples : 0.0;
  dr.mean_reward = n_samples ? reward_sum / n_samples : 0.0;
  return per_prompt;
}

// One dataset end to end: its prompts, its verifiers' reward set, k samples per prompt scored
// as they finish, the metrics. -> its result; its entry of eval.json's "datasets" in `entry`.
EvalDatasetResult evaluate_dataset(const EvalContext& c, size_t index, ChainLog* samples_log, json& entry) {
  const EvalDatasetConfig& dc = c.cfg.datasets[index];
  const double t_ds = now_seconds();
  EvalDatasetResult dr;
  dr.name = dataset_name(dc);
  dr.k = c.k;
  const DatasetPrompts dp = load_dataset_prompts(c, dc, dr.name);
  dr.skipped = dp.skipped;
  dr.prompts = static_cast<int64_t>(dp.records.size());
  rewards::RewardsConfig rc = c.cfg.rewards;
  rc.verifiers = resolve_verifiers(dc, index, dp.records, c.cfg.rewards, c.registry, c.where);
  rewards::RewardSet reward_set(rc, c.registry);  // the sandbox pool, if a verifier needs one, starts on first use
  dr.verifiers = reward_set.names();
  SamplerOptions so = c.base;
  so.stop_token_ids = sampler_stop_ids(c.model.config(), c.tok, ChatTemplate::by_name(dc.format.chat_template));
  std::string verifier_list;
  for (const auto& v : dr.verifiers) verifier_list += (verifier_list.empty() ? "" : ", ") + v;
  log_info("eval " + dr.name + ": " + std::to_string(dr.prompts) + " prompts x " + std::to_string(c.k) + " samples, verifiers " +
           verifier_list + (dr.skipped ? " (" + std::to_string(dr.skipped) + " prompts skipped as too long)" : "") +
           (c.dist.enabled() ? ", over " + std::to_string(c.dist.world_size()) + " ranks" : ""));

  const SampledDataset sd = sample_dataset(c, index, dr.name, dp, so, reward_set, samples_log);
  if (!c.dist.is_main()) return dr;  // rank 0 measures
  json per_prompt = measure(dr, dp, sd);
  dr.time_s = now_seconds() - t_ds;

  json metrics = json::object();
  for (const auto& m : dr.metrics) metrics[m.verifier] = metrics_json(m);
  entry = {{"path", dc.path},
           {"chat_template", dc.format.chat_template},
           {"prompts", dr.prompts},
           {"skipped", dr.skipped},
           {"k", dr.k},
           {"verifiers", dr.verifiers},
           {"metrics", metrics},
           {"mean_length", dr.mean_length},
           {"truncated_share", dr.truncated_share},
           {"mean_reward", dr.mean_reward},
           {"time_s", dr.time_s},
           {"time_score_wait_s", sd.wait_s},
           {"sample_tokens_per_s", sd.sample_s > 0 ? sd.tokens / sd.sample_s : 0.0},
           {"per_prompt", std::move(per_prompt)}};
  return dr;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

EvalResult run_eval(const json& doc_in, const std::string& where, const std::vector<std::string>& overrides, const EvalHooks& hooks) {
  // ---- 1 setup: config, tokenizer, model -------------------------------------------------------
  EvalConfig cfg = parse_eval_config(doc_in, where, overrides);
  int64_t k = cfg.sampling.k;
  if (cfg.sampling.greedy && k > 1) {
    log_warn("sampling.greedy: the " + std::to_string(k) + " samples per prompt would be identical; using k = 1");
    k = 1;
  }
  log_info(apply_runtime(cfg.runtime));
  torch::Device device(resolve_device(cfg.runtime.device));
  // Data parallel (`retort launch -n N -- eval`, or the pipeline under launch): each rank
  // samples its share of the prompts; rank 0 writes the run folder.
  const DistContext& dist = dist_context(device);
  RunDir run(cfg.run_dir, /*lock=*/dist.is_main());
  if (dist.is_main()) run.save_resolved_config(config_to_json(cfg));
  const std::string output = cfg.output.empty() ? run.file("eval.json") : cfg.output;
  const std::string samples_path = run.file("eval_samples.jsonl");

  const std::string tok_path = !cfg.tokenizer.empty() ? cfg.tokenizer : (fs::path(cfg.model) / "tokenizer.json").string();
  Tokenizer tok = Tokenizer::from_file(tok_path);
  Qwen2ForCausalLM model = load_model(cfg.model, LoadOptions{device.str(), cfg.dtype});
  model->eval();
  if (model->config().vocab_size < tok.vocab_size()) {
    throw Error(ErrorInfo{"the tokenizer has more tokens than the model's vocabulary", where, "vocab_size >= " + std::to_string(tok.vocab_size()),
                          std::to_string(model->config().vocab_size), "use the model's own tokenizer"});
  }
  const rewards::Registry registry = hooks.registry ? *hooks.registry : rewards::builtin_registry();
  const SamplerOptions base = base_sampler(cfg, k);
  const EvalContext ctx{cfg, tok, *model, registry, base, k, where, dist, samples_path};

  if (dist.is_main()) fs::remove(samples_path);  // a fresh evaluation: the file holds this run's samples only
  EvalResult result;
  result.output = output;
  result.samples_path = samples_path;
  json report = {{"model", cfg.model},
                 {"tokenizer", tok_path},
                 {"sampling",
                  {{"k", k}, {"temperature", cfg.sampling.temperature}, {"top_p", cfg.sampling.top_p}, {"top_k", cfg.sampling.top_k},
                   {"max_new_tokens", cfg.sampling.max_new_tokens}, {"greedy", base.greedy}}},
                 {"seed", cfg.runtime.seed},
                 {"samples_file", samples_path},
                 {"datasets", json::object()}};
  const double t_start = now_seconds();

  // ---- 2-4 per dataset: prompts and verifiers, sample and score, measure ------------------------
  {
    std::unique_ptr<ChainLog> samples_log;
    if (dist.is_main()) samples_log = std::make_unique<ChainLog>(samples_path);
    for (size_t di = 0; di < cfg.datasets.size(); ++di) {
      json entry;
      EvalDatasetResult dr = evaluate_dataset(ctx, di, samples_log.get(), entry);
      report["datasets"][dr.name] = std::move(entry);
      result.datasets.push_back(std::move(dr));
    }
    if (samples_log) samples_log->flush();
  }
  if (!dist.is_main()) return result;  // rank 0 writes eval.json

  // ---- 5 write -------------------------------------------------------------------------------
  report["order"] = json::array();
  for (const auto& d : result.datasets) report["order"].push_back(d.name);
  report["time_s"] = now_seconds() - t_start;
  if (fs::path(output).has_parent_path()) make_dirs(fs::path(output).parent_path().string());
  write_json_file_atomic(output, report);
  result.report = std::move(report);
  print_summary(result.datasets, output);
  return result;
}

}  // namespace retort
