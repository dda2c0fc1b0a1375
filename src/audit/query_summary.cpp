// Summaries of a run's chains: pass rates per step and verifier, lengths, failure reasons,
// repeated answers, flags, one prompt's history; as JSON or as text tables. See query.h.
#include "audit/query.h"

#include <algorithm>  // defines: std::sort
#include <cmath>      // defines: std::isnan, std::floor, std::ceil
#include <sstream>    // defines: std::ostringstream

#include "audit/query_internal.h"  // defines: trim, fmt

namespace retort::audit {

using internal::fmt;
using internal::trim;

// ---------------------------------------------------------------------------------------
// Failure reasons

namespace {
// Keeps the kind of a message, not its values: "wrong answer: line 2 differs" -> "wrong answer".
std::string reason_kind(std::string s) {
  for (char& ch : s)
    if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
  size_t colon = s.find(": ");
  if (colon != std::string::npos && colon > 0) s = s.substr(0, colon);
  return cut_utf8(trim(s), 80);
}
}  // namespace

std::vector<std::string> failure_reasons_of(const ChainView& c) {
  std::vector<std::string> out;
  for (const auto& v : c.verdicts) {
    if (!v.applicable() || v.passed) continue;
    const json& d = *v.detail;
    std::string r;
    if (auto e = d.find("error"); e != d.end() && e->is_string()) {
      r = reason_kind(e->get<std::string>());
    } else if (auto f = d.find("first_failure"); f != d.end() && f->is_object()) {
      // Status "ok" with a failure is a wrong answer: the why says so on its own.
      std::string status = f->value("status", std::string("failed"));
      std::string why = f->value("why", std::string());
      r = status == "ok" && !why.empty() ? reason_kind(why) : status + (why.empty() ? "" : ": " + reason_kind(why));
    } else if (auto s = d.find("sandbox_status"); s != d.end() && s->is_string() && *s != "ok") {
      r = "sandbox " + s->get<std::string>();
    } else if (d.contains("extracted")) {
      r = "wrong answer";
    } else {
      r = "not passed";
    }
    out.push_back(v.name + ": " + r);
  }
  if (c.truncated && !out.empty()) out.push_back("truncated at the length limit");
  return out;
}

// ---------------------------------------------------------------------------------------
// Summary

Summary::Summary(FlagOptions flag_options) : flag_options_(flag_options) {}

void Summary::add(const ChainView& c, const json& chain) { add(c, chain, chain_flags(c, chain, flag_options_)); }

void Summary::add(const ChainView& c, const json& chain, const std::vector<Flag>& flags) {
  ++chains_;
  StepStats& st = steps_[c.step];
  ++st.chains;
  if (c.truncated) ++st.truncated;
  if (!std::isnan(c.reward)) st.reward_sum += c.reward, ++st.reward_n;
  if (c.length >= 0) {
    st.length_sum += static_cast<double>(c.length), ++st.length_n;
    lengths_.push_back(static_cast<int32_t>(std::min<int64_t>(c.length, INT32_MAX)));
  }
  bool any_applicable = false;
  for (const auto& v : c.verdicts) {
    if (std::find(verifier_order_.begin(), verifier_order_.end(), v.name) == verifier_order_.end())
      verifier_order_.push_back(v.name);
    if (!v.applicable()) continue;
    any_applicable = true;
    PassCount& pc = st.pass[v.name];
    ++pc.applicable;
    if (v.passed) ++pc.passed;
  }
  bool passed = c.passed_all();
  if (any_applicable) {
    PassCount& pc = st.pass[kCombined];
    ++pc.applicable;
    if (passed) ++pc.passed;
  }

  const int64_t calls = static_cast<int64_t>(c.tool_calls.size());
  ++tools_.calls_per_chain[calls];
  if (calls > 0) ++tools_.chains_with_calls;
  for (const auto& t : c.tool_calls) {
    ++tools_.calls;
    ++tools_.by_status[t.status];
    tools_.wall_s_sum += t.wall_s;
    tools_.wall_s_max = std::max(tools_.wall_s_max, t.wall_s);
    tools_.peak_memory_kb_max = std::max(tools_.peak_memory_kb_max, t.peak_memory_kb);
    if (t.truncated) ++tools_.truncated;
  }

  for (const auto& r : failure_reasons_of(c)) {
    FailureReason& fr = reasons_[r];
    if (fr.count++ == 0) fr.reason = r, fr.example = chain_ref(c);
  }
  for (const auto& f : flags) {
    auto& fc = flag_counts_[f.code];
    if (fc.first++ == 0) fc.second = chain_ref(c), fc.second["why"] = f.why;
  }

  PromptStep& ps = prompt_steps_[c.prompt_id][c.step];
  ++ps.chains;
  if (passed) ++ps.passed;
  if (!std::isnan(c.reward)) ps.reward_sum += c.reward, ++ps.reward_n;
  if (c.length >= 0) ps.length_sum += static_cast<double>(c.length), ++ps.length_n;

  std::string answer = trim(chain_text(chain, "answer"));
  if (!answer.empty()) {
    constexpr size_t kMaxIds = 64;  // distinct prompts counted exactly up to this many
    AnswerGroup& g = answers_[std::hash<std::string>{}(answer)];
    if (g.chains++ == 0) g.answer = cut_utf8(answer, 200);
    if (passed) ++g.passed;
    if (g.prompt_ids.size() < kMaxIds &&
        std::find(g.prompt_ids.begin(), g.prompt_ids.end(), c.prompt_id) == g.prompt_ids.end()) {
      g.prompt_ids.push_back(c.prompt_id);
      ++g.prompts;
    }
    for (const auto& v : c.verdicts) {
      auto gold = v.detail->find("gold");
      if (gold == v.detail->end() || !gold->is_string()) continue;
      std::string gs = gold->get<std::string>();
      if (g.golds.size() < kMaxIds && std::find(g.golds.begin(), g.golds.end(), gs) == g.golds.end()) g.golds.push_back(gs);
    }
  }
}

std::vector<std::string> Summary::verifier_names() const {
  std::vector<std::string> v = verifier_order_;
  v.push_back(kCombined);
  return v;
}

LengthStats Summary::lengths(int bins) const {
  LengthStats s;
  s.n = static_cast<int64_t>(lengths_.size());
  if (lengths_.empty()) return s;
  std::vector<int32_t> v = lengths_;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (int32_t x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  // Linear interpolation between the closest ranks (numpy's default).
  auto q = [&](double p) {
    double pos = p * static_cast<double>(v.size() - 1);
    size_t lo = static_cast<size_t>(std::floor(pos));
    size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
  };
  const std::pair<const char*, double> kQ[] = {{"min", 0},     {"p10", 0.10}, {"p25", 0.25}, {"p50", 0.50},
                                               {"p75", 0.75},  {"p90", 0.90}, {"p99", 0.99}, {"max", 1.0}};
  for (const auto& [name, p] : kQ) s.quantiles[name] = q(p);
  // Integer bins of equal width covering [min, max].
  int64_t lo = v.front(), hi = v.back();
  int64_t width = std::max<int64_t>(1, (hi - lo + bins) / std::max(1, bins));  // ceil((hi-lo+1)/bins)
  s.bin_width = static_cast<double>(width);
  int64_t nb = (hi - lo) / width + 1;
  s.histogram.assign(static_cast<size_t>(nb), {0.0, 0});
  for (int64_t b = 0; b < nb; ++b) s.histogram[static_cast<size_t>(b)].first = static_cast<double>(lo + b * width);
  for (int32_t x : v) ++s.histogram[static_cast<size_t>((x - lo) / width)].second;
  return s;
}

std::vector<FailureReason> Summary::failure_reasons(size_t top) const {
  std::vector<FailureReason> v;
  v.reserve(reasons_.size());
  for (const auto& kv : reasons_) v.push_back(kv.second);
  std::sort(v.begin(), v.end(), [](const FailureReason& a, const FailureReason& b) {
    return a.count != b.count ? a.count > b.count : a.reason < b.reason;
  });
  if (v.size() > top) v.resize(top);
  return v;
}

std::vector<RepeatedAnswer> Summary::repeated_answers(size_t top) const {
  std::vector<RepeatedAnswer> v;
  for (const auto& kv : answers_) {
    const AnswerGroup& g = kv.second;
    if (g.prompts < flag_options_.repeated_answer_prompts) continue;
    RepeatedAnswer r;
    r.answer = g.answer;
    r.prompts = g.prompts;
    r.chains = g.chains;
    r.passed = g.passed;
    r.prompt_ids.assign(g.prompt_ids.begin(), g.prompt_ids.begin() + std::min<size_t>(5, g.prompt_ids.size()));
    r.distinct_golds = static_cast<int64_t>(g.golds.size());
    v.push_back(std::move(r));
  }
  // The suspicious first: one answer passing for prompts whose gold answers differ.
  std::sort(v.begin(), v.end(), [](const RepeatedAnswer& a, const RepeatedAnswer& b) {
    bool sa = a.passed > 0 && a.distinct_golds > 1, sb = b.passed > 0 && b.distinct_golds > 1;
    if (sa != sb) return sa;
    if (a.prompts != b.prompts) return a.prompts > b.prompts;
    return a.answer < b.answer;
  });
  if (v.size() > top) v.resize(top);
  return v;
}

std::map<int64_t, PromptStep> Summary::prompt_history(const std::string& prompt_id) const {
  auto it = prompt_steps_.find(prompt_id);
  return it == prompt_steps_.end() ? std::map<int64_t, PromptStep>{} : it->second;
}

json Summary::to_json(size_t top, const std::string& history_prompt) const {
  json j;
  j["chains"] = chains_;
  j["prompts"] = prompts();
  int64_t truncated = 0;
  json steps = json::array();
  for (const auto& [step, st] : steps_) {
    truncated += st.truncated;
    json s = {{"step", step}, {"chains", st.chains}, {"truncated", st.truncated}};
    s["reward_mean"] = st.reward_n ? json(st.reward_sum / static_cast<double>(st.reward_n)) : json(nullptr);
    s["length_mean"] = st.length_n ? json(st.length_sum / static_cast<double>(st.length_n)) : json(nullptr);
    json pass = json::object();
    for (const auto& [name, pc] : st.pass)
      pass[name] = {{"applicable", pc.applicable}, {"passed", pc.passed}, {"rate", pc.rate()}};
    s["pass"] = std::move(pass);
    steps.push_back(std::move(s));
  }
  j["truncated"] = truncated;
  j["steps"] = std::move(steps);
  j["verifiers"] = verifier_names();

  LengthStats ls = lengths();
  json hist = json::array();
  for (const auto& [edge, count] : ls.histogram) hist.push_back({{"from", edge}, {"to", edge + ls.bin_width}, {"count", count}});
  j["length"] = {{"n", ls.n}, {"mean", ls.mean}, {"quantiles", ls.quantiles}, {"histogram", std::move(hist)}};

  {
    const ToolStats& t = tools_;
    json per_chain = json::array();
    for (const auto& [n, chains] : t.calls_per_chain) per_chain.push_back({{"calls", n}, {"chains", chains}});
    json by_status = json::array();
    for (const auto& [status, n] : t.by_status)
      by_status.push_back({{"status", status}, {"calls", n}, {"share", static_cast<double>(n) / static_cast<double>(t.calls)}});
    j["tool_calls"] = {{"calls", t.calls},
                       {"chains_with_calls", t.chains_with_calls},
                       {"calls_per_chain_mean", chains_ ? static_cast<double>(t.calls) / static_cast<double>(chains_) : 0.0},
                       {"calls_per_chain", std::move(per_chain)},
                       {"by_status", std::move(by_status)},
                       {"wall_s_mean", t.calls ? t.wall_s_sum / static_cast<double>(t.calls) : 0.0},
                       {"wall_s_max", t.wall_s_max},
                       {"peak_memory_kb_max", t.peak_memory_kb_max},
                       {"truncated_observations", t.truncated}};
  }

  json reasons = json::array();
  for (const auto& r : failure_reasons(top)) reasons.push_back({{"reason", r.reason}, {"count", r.count}, {"example", r.example}});
  j["failure_reasons"] = std::move(reasons);

  json flags = json::array();
  for (const auto& k : flag_kinds()) {
    auto it = flag_counts_.find(k.code);
    flags.push_back({{"flag", k.code}, {"title", k.title}, {"explanation", k.explanation},
                     {"count", it == flag_counts_.end() ? 0 : it->second.first},
                     {"example", it == flag_counts_.end() ? json(nullptr) : it->second.second}});
  }
  j["flags"] = std::move(flags);

  json rep = json::array();
  for (const auto& r : repeated_answers(top))
    rep.push_back({{"answer", r.answer}, {"prompts", r.prompts}, {"chains", r.chains}, {"passed", r.passed},
                   {"distinct_golds", r.distinct_golds}, {"prompt_ids", r.prompt_ids}});
  j["repeated_answers"] = std::move(rep);

  if (!history_prompt.empty()) {
    json h = json::array();
    for (const auto& [step, ps] : prompt_history(history_prompt))
      h.push_back({{"step", step}, {"chains", ps.chains}, {"passed", ps.passed},
                   {"reward_mean", ps.reward_n ? json(ps.reward_sum / static_cast<double>(ps.reward_n)) : json(nullptr)},
                   {"length_mean", ps.length_n ? json(ps.length_sum / static_cast<double>(ps.length_n)) : json(nullptr)}});
    j["prompt_history"] = {{"prompt_id", history_prompt}, {"steps", std::move(h)}};
  }
  return j;
}

namespace {
// Columns padded to their widest cell; align: 'l' or 'r' per column.
std::string render_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                         const std::string& align) {
  std::vector<size_t> w(header.size(), 0);
  auto width = [](const std::string& s) {  // display width: code points
    size_t n = 0;
    for (unsigned char ch : s) n += (ch & 0xC0) != 0x80;
    return n;
  };
  for (size_t i = 0; i < header.size(); ++i) w[i] = width(header[i]);
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], width(r[i]));
  std::ostringstream out;
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t i = 0; i < w.size(); ++i) {
      std::string cell = i < r.size() ? r[i] : "";
      std::string pad(w[i] - width(cell), ' ');
      bool right = i < align.size() && align[i] == 'r';
      s += (i ? "  " : "") + (right ? pad + cell : (i + 1 == w.size() ? cell : cell + pad));
    }
    out << s << "\n";
  };
  line(header);
  for (const auto& r : rows) line(r);
  return out.str();
}
}  // namespace

std::string Summary::to_text(size_t top, const std::string& history_prompt) const {
  std::ostringstream out;
  int64_t truncated = 0;
  for (const auto& kv : steps_) truncated += kv.second.truncated;
  out << "chains " << chains_ << "  steps " << steps_.size();
  if (!steps_.empty()) out << " (" << steps_.begin()->first << ".." << steps_.rbegin()->first << ")";
  out << "  prompts " << prompts() << "  truncated " << truncated;
  if (chains_) out << " (" << fmt("%.1f%%", 100.0 * static_cast<double>(truncated) / static_cast<double>(chains_)) << ")";
  out << "\n\n";
  if (chains_ == 0) return out.str();

  // Pass rate per step.
  {
    std::vector<std::string> names = verifier_names();
    std::vector<std::string> header = {"step", "chains", "reward", "length"};
    std::string align = "rrrr";
    for (const auto& n : names) header.push_back(n == kCombined ? "passed all" : n), align += 'r';
    std::vector<std::vector<std::string>> rows;
    for (const auto& [step, st] : steps_) {
      std::vector<std::string> r = {std::to_string(step), std::to_string(st.chains),
                                    st.reward_n ? fmt("%.3f", st.reward_sum / static_cast<double>(st.reward_n)) : "-",
                                    st.length_n ? fmt("%.1f", st.length_sum / static_cast<double>(st.length_n)) : "-"};
      for (const auto& n : names) {
        auto it = st.pass.find(n);
        if (it == st.pass.end() || it->second.applicable == 0) r.push_back("-");
        else r.push_back(fmt("%.2f", it->second.rate()) + " (" + std::to_string(it->second.passed) + "/" +
                         std::to_string(it->second.applicable) + ")");
      }
      rows.push_back(std::move(r));
    }
    out << "pass rate per step (passed/applicable)\n" << render_table(header, rows, align) << "\n";
  }

  // Lengths.
  {
    LengthStats ls = lengths();
    out << "length (completion tokens) n=" << ls.n << " mean " << fmt("%.1f", ls.mean);
    for (const char* q : {"min", "p10", "p25", "p50", "p75", "p90", "p99", "max"})
      if (ls.quantiles.count(q)) out << "  " << q << " " << fmt("%g", ls.quantiles.at(q));
    out << "\n";
    int64_t most = 1;
    for (const auto& b : ls.histogram) most = std::max(most, b.second);
    std::vector<std::vector<std::string>> rows;
    for (const auto& [edge, count] : ls.histogram)
      rows.push_back({fmt("%.0f", edge) + ".." + fmt("%.0f", edge + ls.bin_width - 1), std::to_string(count),
                      std::string(static_cast<size_t>(40 * count / most), '#')});
    out << render_table({"tokens", "chains", ""}, rows, "rrl") << "\n";
  }

  // Tool calls (only runs whose chains called a tool).
  if (tools_.calls > 0) {
    const ToolStats& t = tools_;
    out << "tool calls " << t.calls << " in " << t.chains_with_calls << " of " << chains_ << " chains ("
        << fmt("%.2f", static_cast<double>(t.calls) / static_cast<double>(chains_)) << " per chain)  wall mean "
        << fmt("%.3f", t.wall_s_sum / static_cast<double>(t.calls)) << " s, max " << fmt("%.3f", t.wall_s_max)
        << " s  peak memory max " << t.peak_memory_kb_max << " kB  observations truncated " << t.truncated << "\n";
    std::vector<std::vector<std::string>> rows;
    for (const auto& [status, n] : t.by_status)
      rows.push_back({status, std::to_string(n), fmt("%.1f%%", 100.0 * static_cast<double>(n) / static_cast<double>(t.calls))});
    out << render_table({"status", "calls", "share"}, rows, "lrr");
    rows.clear();
    for (const auto& [n, chains] : t.calls_per_chain)
      rows.push_back({std::to_string(n), std::to_string(chains),
                      fmt("%.1f%%", 100.0 * static_cast<double>(chains) / static_cast<double>(chains_))});
    out << render_table({"calls", "chains", "share"}, rows, "rrr") << "\n";
  }

  // Failure reasons.
  {
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : failure_reasons(top))
      rows.push_back({std::to_string(r.count), fmt("%.1f%%", 100.0 * static_cast<double>(r.count) / static_cast<double>(chains_)),
                      r.reason, "step " + std::to_string(r.example["step"].get<int64_t>()) + " prompt " +
                                    r.example["prompt_id"].get<std::string>() + " sample " +
                                    std::to_string(r.example["sample"].get<int64_t>())});
    out << "most common failure reasons\n";
    out << (rows.empty() ? "(no failures)\n" : render_table({"count", "share", "reason", "first seen"}, rows, "rrll")) << "\n";
  }

  // Flags.
  {
    std::vector<std::vector<std::string>> rows;
    for (const auto& k : flag_kinds()) {
      auto it = flag_counts_.find(k.code);
      int64_t n = it == flag_counts_.end() ? 0 : it->second.first;
      std::string ex = n ? "step " + std::to_string(it->second.second["step"].get<int64_t>()) + " prompt " +
                               it->second.second["prompt_id"].get<std::string>() + ": " +
                               it->second.second["why"].get<std::string>()
                         : "";
      rows.push_back({k.code, std::to_string(n), cut_utf8(ex, 120)});
    }
    out << "reward-hacking and quality flags (retort audit --flag CODE lists the chains)\n"
        << render_table({"flag", "chains", "first example"}, rows, "lrl");
    for (const auto& k : flag_kinds()) out << "  " << k.code << ": " << k.explanation << "\n";
    out << "\n";
  }

  // Repeated answers.
  {
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : repeated_answers(top)) {
      std::string a = r.answer;
      for (char& ch : a)
        if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
      rows.push_back({std::to_string(r.prompts), std::to_string(r.chains), std::to_string(r.passed),
                      std::to_string(r.distinct_golds), cut_utf8(a, 80)});
    }
    out << "answers repeated verbatim across " << flag_options_.repeated_answer_prompts
        << "+ prompts (suspicious when they pass for prompts with different gold answers)\n";
    out << (rows.empty() ? "(none)\n" : render_table({"prompts", "chains", "passed", "golds", "answer"}, rows, "rrrrl")) << "\n";
  }

  if (!history_prompt.empty()) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& [step, ps] : prompt_history(history_prompt))
      rows.push_back({std::to_string(step), std::to_string(ps.chains), std::to_string(ps.passed),
                      ps.reward_n ? fmt("%.3f", ps.reward_sum / static_cast<double>(ps.reward_n)) : "-",
                      ps.length_n ? fmt("%.1f", ps.length_sum / static_cast<double>(ps.length_n)) : "-"});
    out << "prompt " << history_prompt << " across steps\n";
    out << (rows.empty() ? "(no chains of this prompt)\n"
                         : render_table({"step", "chains", "passed all", "reward", "length"}, rows, "rrrrr"))
        << "\n";
  }
  return out.str();
}

}  // namespace retort::audit
