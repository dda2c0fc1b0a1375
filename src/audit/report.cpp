#include "audit/report.h"

#include <algorithm>   // defines: std::sort, std::min, std::max
#include <cmath>       // defines: std::isfinite
#include <cstdio>      // defines: std::snprintf
#include <filesystem>  // defines: std::filesystem::exists
#include <functional>  // defines: std::function
#include <map>         // defines: std::map
#include <memory>      // defines: std::shared_ptr
#include <random>      // defines: std::mt19937_64
#include <set>         // defines: std::set
#include <sstream>     // defines: std::ostringstream
#include <tuple>       // defines: std::tie

#include "audit/query_internal.h"  // defines: internal::fmt
#include "common/config.h"  // defines: load_json_file, write_file_atomic
#include "common/error.h"   // defines: retort::Error
#include "common/log.h"     // defines: log_warn
#include "common/run_dir.h"  // defines: make_dirs
#include "rewards/tool_calls.h"  // defines: find_tool_calls (where each call sits in the text)

namespace retort::audit {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------
// Escaping

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(ch);
    }
  }
  return out;
}

std::string json_for_script(const json& j) {
  // Invalid UTF-8 is replaced rather than thrown on: model text is not ours to vouch for.
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string out;
  out.reserve(s.size() + s.size() / 16);
  for (size_t i = 0; i < s.size(); ++i) {
    char ch = s[i];
    // These bytes only ever occur inside JSON strings, where \u escapes mean the same.
    if (ch == '<') out += "\\u003c";
    else if (ch == '>') out += "\\u003e";
    else if (ch == '&') out += "\\u0026";
    else if (ch == '\xE2' && i + 2 < s.size() && s[i + 1] == '\x80' && (s[i + 2] == '\xA8' || s[i + 2] == '\xA9')) {
      out += s[i + 2] == '\xA8' ? "\\u2028" : "\\u2029";
      i += 2;
    } else out.push_back(ch);
  }
  return out;
}

namespace {

using internal::fmt;

// A number for an SVG label: short, no exponent for ordinary magnitudes.
std::string num_label(double v) {
  if (v == 0) return "0";
  double a = std::abs(v);
  if (a >= 1e5 || a < 1e-3) return fmt("%.2e", v);
  if (a >= 100) return fmt("%.0f", v);
  return fmt("%.3g", v);
}

// Cuts every string in `j` (recursively) to `max` bytes: details may carry whole programs.
void cut_strings(json& j, size_t max) {
  if (j.is_string()) {
    const std::string& s = j.get_ref<const std::string&>();
    if (s.size() > max) j = cut_utf8(s, max);
  } else if (j.is_object() || j.is_array()) {
    for (auto& v : j) cut_strings(v, max);
  }
}

// ---------------------------------------------------------------------------------------
// SVG charts

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (step, value), finite only
};

const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

// A line chart: x = step, y = value; `unit_range` pins y to [0, 1] (rates).
std::string svg_chart(const std::string& title, const std::vector<Series>& series, bool unit_range = false) {
  const double W = 360, H = 190, L = 52, R = 10, T = 24, B = 28;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const auto& s : series)
    for (const auto& [x, y] : s.points) x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
  std::ostringstream o;
  o << "<figure class=\"chart\"><svg viewBox=\"0 0 " << W << " " << H << "\" width=\"" << W << "\" height=\"" << H
    << "\" role=\"img\"><title>" << html_escape(title) << "</title>";
  o << "<text x=\"" << L << "\" y=\"15\" class=\"ct\">" << html_escape(title) << "</text>";
  if (x0 > x1) {
    o << "<text x=\"" << L << "\" y=\"" << H / 2 << "\" class=\"cl\">no data</text></svg></figure>";
    return o.str();
  }
  if (unit_range) y0 = std::min(0.0, y0), y1 = std::max(1.0, y1);
  if (y1 == y0) {  // a constant: a band around it, not around zero
    double pad = y0 != 0 ? std::abs(y0) * 0.5 : 0.5;
    y0 -= pad, y1 += pad;
  }
  if (x1 == x0) x0 -= 0.5, x1 += 0.5;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return T + (1 - (y - y0) / (y1 - y0)) * (H - T - B); };
  o << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << W - L - R << "\" height=\"" << H - T - B
    << "\" class=\"frame\"/>";
  for (int k = 0; k <= 2; ++k) {  // three y gridlines with labels
    double y = y0 + (y1 - y0) * k / 2.0;
    o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << py(y) << "\" y2=\"" << py(y) << "\" class=\"grid\"/>";
    o << "<text x=\"" << L - 4 << "\" y=\"" << py(y) + 4 << "\" class=\"cl\" text-anchor=\"end\">" << num_label(y) << "</text>";
  }
  o << "<text x=\"" << L << "\" y=\"" << H - 10 << "\" class=\"cl\">" << num_label(x0) << "</text>";
  o << "<text x=\"" << W - R << "\" y=\"" << H - 10 << "\" class=\"cl\" text-anchor=\"end\">" << num_label(x1) << "</text>";
  o << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 10 << "\" class=\"cl\" text-anchor=\"middle\">step</text>";
  for (size_t i = 0; i < series.size(); ++i) {
    const char* color = kColors[i % (sizeof kColors / sizeof kColors[0])];
    const auto& pts = series[i].points;
    if (pts.size() == 1) {
      o << "<circle cx=\"" << px(pts[0].first) << "\" cy=\"" << py(pts[0].second) << "\" r=\"3\" fill=\"" << color << "\"/>";
    } else if (!pts.empty()) {
      o << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.5\" points=\"";
      for (const auto& [x, y] : pts) o << fmt("%.1f", px(x)) << "," << fmt("%.1f", py(y)) << " ";
      o << "\"/>";
    }
  }
  o << "</svg>";
  if (series.size() > 1) {
    o << "<figcaption>";
    for (size_t i = 0; i < series.size(); ++i)
      o << "<span class=\"key\" style=\"color:" << kColors[i % (sizeof kColors / sizeof kColors[0])] << "\">&#9632; "
        << html_escape(series[i].name) << "</span> ";
    o << "</figcaption>";
  }
  o << "</figure>";
  return o.str();
}

// Bars: (label, value) pairs.
std::string svg_bars(const std::string& title, const std::vector<std::pair<std::string, double>>& bars) {
  const double W = 560, H = 200, L = 40, R = 10, T = 24, B = 40;
  double most = 1;
  for (const auto& b : bars) most = std::max(most, b.second);
  std::ostringstream o;
  o << "<figure class=\"chart\"><svg viewBox=\"0 0 " << W << " " << H << "\" width=\"" << W << "\" height=\"" << H
    << "\" role=\"img\"><title>" << html_escape(title) << "</title>";
  o << "<text x=\"" << L << "\" y=\"15\" class=\"ct\">" << html_escape(title) << "</text>";
  double bw = bars.empty() ? 0 : (W - L - R) / static_cast<double>(bars.size());
  for (size_t i = 0; i < bars.size(); ++i) {
    double h = bars[i].second / most * (H - T - B);
    double x = L + bw * static_cast<double>(i);
    o << "<rect x=\"" << fmt("%.1f", x + 1) << "\" y=\"" << fmt("%.1f", H - B - h) << "\" width=\"" << fmt("%.1f", bw - 2)
      << "\" height=\"" << fmt("%.1f", h) << "\" fill=\"#1f77b4\"><title>" << html_escape(bars[i].first) << ": "
      << num_label(bars[i].second) << "</title></rect>";
    if (bars.size() <= 12 || i % ((bars.size() + 11) / 12) == 0)
      o << "<text x=\"" << fmt("%.1f", x + bw / 2) << "\" y=\"" << H - B + 14 << "\" class=\"cl\" text-anchor=\"middle\">"
        << html_escape(bars[i].first) << "</text>";
  }
  o << "<text x=\"" << L - 4 << "\" y=\"" << T + 4 << "\" class=\"cl\" text-anchor=\"end\">" << num_label(most) << "</text>";
  o << "</svg></figure>";
  return o.str();
}

// ---------------------------------------------------------------------------------------
// Tables

std::string cell(const json& v) {
  if (v.is_string()) return html_escape(v.get<std::string>());
  if (v.is_number_float()) return num_label(v.get<double>());
  return html_escape(v.dump(-1, ' ', false, json::error_handler_t::replace));
}

// Leaves of `j` as ("a.b.c", value); arrays are leaves.
void flatten(const json& j, const std::string& prefix, std::vector<std::pair<std::string, json>>& out) {
  if (j.is_object() && !j.empty()) {
    for (auto it = j.begin(); it != j.end(); ++it) flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
  } else {
    out.emplace_back(prefix, j);
  }
}

// eval.json has no fixed format: rows are the path to each leaf but its last key, columns
// the last keys ({"teacher": {"gsm8k": {"pass@1": 0.4}}} -> row "teacher / gsm8k", column "pass@1").
void leaves_with_path(const json& j, std::vector<std::string>& path,
                      std::vector<std::pair<std::vector<std::string>, json>>& out) {
  if (j.is_object() && !j.empty()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      path.push_back(it.key());
      leaves_with_path(it.value(), path, out);
      path.pop_back();
    }
  } else {
    out.emplace_back(path, j);
  }
}

std::string eval_table(const json& ev) {
  std::vector<std::pair<std::vector<std::string>, json>> leaves;
  std::vector<std::string> path;
  leaves_with_path(ev, path, leaves);
  std::vector<std::string> rows, cols;
  std::map<std::pair<std::string, std::string>, json> cells;
  for (const auto& [keys, v] : leaves) {
    std::string row, col = keys.empty() ? "value" : keys.back();
    for (size_t i = 0; i + 1 < keys.size(); ++i) row += (i ? " / " : "") + keys[i];
    if (std::find(rows.begin(), rows.end(), row) == rows.end()) rows.push_back(row);
    if (std::find(cols.begin(), cols.end(), col) == cols.end()) cols.push_back(col);
    cells[{row, col}] = v;
  }
  std::ostringstream o;
  o << "<table class=\"data\"><tr><th></th>";
  for (const auto& c : cols) o << "<th>" << html_escape(c) << "</th>";
  o << "</tr>";
  for (const auto& r : rows) {
    o << "<tr><th>" << html_escape(r.empty() ? "(top level)" : r) << "</th>";
    for (const auto& c : cols) {
      auto it = cells.find({r, c});
      o << "<td>" << (it == cells.end() ? "" : cell(it->second)) << "</td>";
    }
    o << "</tr>";
  }
  o << "</table>";
  return o.str();
}

// RUN_DIR/results.json, the table the page opens with: {"title": text, "columns": [text],
// "rows": [[a cell per column]], "notes": [text]} (the pipeline writes the held-out accuracy
// per stage this way). The first cell of a row heads it; cells are text or numbers.
std::string results_section(const json& t, const std::string& path) {
  auto bad = [&](const std::string& what, const std::string& got) {
    return Error(ErrorInfo{"results.json is not a results table", path, what, got,
                           "write {\"title\", \"columns\": [...], \"rows\": [[...], ...], \"notes\": [...]}, or remove the file"});
  };
  if (!t.is_object()) throw bad("a JSON object", t.type_name());
  const json& cols = t.contains("columns") ? t["columns"] : json();
  if (!cols.is_array() || cols.empty()) throw bad("\"columns\": a non-empty array of names", cols.dump());
  const json& rows = t.contains("rows") ? t["rows"] : json::array();
  if (!rows.is_array()) throw bad("\"rows\": an array of rows", rows.type_name());
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!rows[i].is_array() || rows[i].size() != cols.size())
      throw bad("row " + std::to_string(i) + " with " + std::to_string(cols.size()) + " cells, one per column", rows[i].dump());
  }
  std::ostringstream o;
  o << "<section id=\"results\"><h2>" << html_escape(t.value("title", std::string("Results"))) << "</h2><table class=\"data\"><tr>";
  for (const auto& c : cols) o << "<th>" << cell(c) << "</th>";
  o << "</tr>";
  for (const auto& r : rows) {
    o << "<tr><th>" << cell(r[0]) << "</th>";
    for (size_t j = 1; j < r.size(); ++j) o << "<td class=\"num\">" << cell(r[j]) << "</td>";
    o << "</tr>";
  }
  o << "</table>";
  if (t.contains("notes") && t["notes"].is_array())
    for (const auto& n : t["notes"]) o << "<p class=\"note\">" << cell(n) << "</p>";
  o << "</section>\n";
  return o.str();
}

// Metric names in the order a reader looks for them: reward, pass rate, KL, length, clipping.
int metric_rank(const std::string& k) {
  const char* const kOrder[] = {"reward", "pass", "acc", "kl", "len", "clip", "loss", "entropy", "lr"};
  for (size_t i = 0; i < sizeof kOrder / sizeof kOrder[0]; ++i)
    if (k.find(kOrder[i]) != std::string::npos) return static_cast<int>(i);
  return 100;
}

// ---------------------------------------------------------------------------------------
// Chain selection: reservoirs keep a uniform sample in one pass.

struct Picked {
  std::shared_ptr<json> chain;  // the compact chain for the page
  size_t line = 0;
  int64_t step = 0, group = 0, sample = 0;
};

class Reservoir {
 public:
  explicit Reservoir(size_t cap) : cap_(cap) {}
  void offer(const std::function<Picked()>& make, std::mt19937_64& rng) {
    ++seen_;
    if (items_.size() < cap_) {
      items_.push_back(make());
      return;
    }
    if (cap_ == 0) return;
    uint64_t k = std::uniform_int_distribution<uint64_t>(0, seen_ - 1)(rng);
    if (k < cap_) items_[k] = make();
  }
  const std::vector<Picked>& items() const { return items_; }
  int64_t seen() const { return seen_; }

 private:
  size_t cap_;
  int64_t seen_ = 0;
  std::vector<Picked> items_;
};

// The chain's tool calls for the browser: "tool_calls" (each record with its texts cut) and,
// for each of reasoning / answer that holds calls, "<field>_parts": the field split around
// them, ["text", {"call": k}, "text", ...], so that the page shows each call where it was made
// (its program and observation replaced by a box with the status, wall time and memory).
// A call is placed only when the text's k-th call has the program of the k-th record; calls
// that are not placed are listed after the answer.
void add_tool_calls(json& out, const json& chain, const ChainView& c, const std::string& reasoning,
                    const std::string& answer, size_t cap) {
  json calls = json::array();
  for (const auto& t : c.tool_calls)
    calls.push_back({{"status", t.status}, {"wall_s", t.wall_s}, {"peak_memory_kb", t.peak_memory_kb},
                     {"truncated", t.truncated}, {"code", cut_utf8(t.code(), cap)}, {"observation", cut_utf8(t.observation(), cap)}});
  out["tool_calls"] = std::move(calls);
  // The format shows in the text: a python-format chain has no <tool_call> tag. Python calls
  // count only inside the reasoning (a code block after </think> is an answer, not a call).
  const std::string text = chain_text(chain, "text");
  bool qwen = text.find("<tool_call>") != std::string::npos || answer.find("<tool_call>") != std::string::npos;
  rewards::ToolFormat format = qwen ? rewards::ToolFormat::Qwen : rewards::ToolFormat::Python;
  size_t k = 0;  // the next record to place
  for (int which = 0; which < 2; ++which) {
    const bool in_answer = which == 1;
    const std::string& f = in_answer ? answer : reasoning;
    const char* field = in_answer ? "answer" : "reasoning";
    if (in_answer && !qwen && !reasoning.empty()) break;  // after </think>: answers, not calls
    json parts = json::array();
    size_t pos = 0;
    bool placed = false;
    for (const auto& span : rewards::find_tool_calls(f, format)) {
      if (k >= c.tool_calls.size() || span.code != c.tool_calls[k].code()) break;
      parts.push_back(cut_utf8(f.substr(pos, span.call_begin - pos), cap));
      parts.push_back({{"call", k}});
      pos = span.answered ? span.obs_end : span.call_end;
      ++k;
      placed = true;
    }
    if (!placed) continue;
    parts.push_back(cut_utf8(f.substr(pos), cap));
    out[std::string(field) + "_parts"] = std::move(parts);
  }
}

json compact_chain(const json& chain, const ChainView& c, const std::vector<Flag>& flags, int64_t max_chars) {
  size_t cap = static_cast<size_t>(std::max<int64_t>(64, max_chars));
  json out = {{"step", c.step},          {"prompt_id", c.prompt_id}, {"group", c.group},
              {"sample", c.sample},      {"advantage", c.advantage}, {"length", c.length},
              {"truncated", c.truncated}, {"passed", c.passed_all()}};
  out["reward"] = std::isfinite(c.reward) ? json(c.reward) : json(nullptr);
  out["kl"] = c.kl ? json(*c.kl) : json(nullptr);
  std::string reasoning = chain_text(chain, "reasoning"), answer = chain_text(chain, "answer");
  out["prompt"] = cut_utf8(chain_text(chain, "prompt"), cap);
  out["reasoning"] = cut_utf8(reasoning, cap);
  out["answer"] = cut_utf8(answer, cap);
  // The split parts carry the text; the whole text only when nothing was split out.
  if (reasoning.empty() && answer.empty()) out["text"] = cut_utf8(chain_text(chain, "text"), cap);
  json verifiers = json::object();
  if (auto it = chain.find("verifiers"); it != chain.end() && it->is_object()) verifiers = *it;
  cut_strings(verifiers, std::min<size_t>(cap, 2000));
  out["verifiers"] = std::move(verifiers);
  json fl = json::array();
  for (const auto& f : flags) fl.push_back({{"code", f.code}, {"why", f.why}});
  out["flags"] = std::move(fl);
  out["reasons"] = failure_reasons_of(c);
  if (!c.tool_calls.empty()) add_tool_calls(out, chain, c, reasoning, answer, cap);
  return out;
}

// report.css, embedded at build time (src/CMakeLists.txt).
const char* kCss =
#include "report.css.inc"
    ;

// The browser: filters, a list and one chain in detail. Model text only reaches the page
// through textContent.
// report.js, embedded at build time (src/CMakeLists.txt).
const char* kJs =
#include "report.js.inc"
    ;

}  // namespace

// ---------------------------------------------------------------------------------------
// The page

ReportResult write_report(const ReportOptions& opt) {
  if (opt.run_dir.empty() || !fs::is_directory(opt.run_dir))
    throw Error(ErrorInfo{"the run directory does not exist", opt.run_dir, "a folder written by a run (runs/NAME)",
                          "no such folder", "pass the run_dir of the config, e.g. retort report runs/demo"});
  ReportResult res;
  res.path = opt.out.empty() ? opt.run_dir + "/report.html" : opt.out;
  const std::string chains_path = opt.run_dir + "/chains.jsonl", metrics_path = opt.run_dir + "/metrics.jsonl";
  const std::string config_path = opt.run_dir + "/config.resolved.json", eval_path = opt.run_dir + "/eval.json";
  const std::string results_path = opt.run_dir + "/results.json";
  bool have_chains = fs::exists(chains_path), have_metrics = fs::exists(metrics_path);
  if (!have_chains && !have_metrics)
    throw Error(ErrorInfo{"nothing to report", opt.run_dir, "chains.jsonl or metrics.jsonl in the run directory",
                          "neither", "a report needs a run that has done at least one step"});

  // 1. Metrics: every numeric field per step.
  std::map<std::string, Series> metrics;
  if (have_metrics) {
    JsonlReader r(metrics_path);
    json row;
    std::string raw;
    while (r.next(row, raw)) {
      ++res.metric_rows;
      double step = row.contains("step") && row["step"].is_number() ? row["step"].get<double>()
                                                                    : static_cast<double>(res.metric_rows);
      for (auto it = row.begin(); it != row.end(); ++it) {
        if (it.key() == "step" || !it->is_number()) continue;
        double v = it->get<double>();
        if (!std::isfinite(v)) continue;
        Series& s = metrics[it.key()];
        s.name = it.key();
        s.points.emplace_back(step, v);
      }
    }
  }

  // 2. Chains: one pass for the summary and the embedded selection.
  Summary summary(opt.flags);
  std::mt19937_64 rng(opt.seed);
  std::map<int64_t, Reservoir> per_step;
  Reservoir failures(static_cast<size_t>(std::max<int64_t>(0, opt.max_failures)));
  Reservoir flagged(static_cast<size_t>(std::max<int64_t>(0, opt.max_flagged)));
  size_t cut_lines = 0;
  if (have_chains) {
    JsonlReader r(chains_path);
    json chain;
    std::string raw;
    while (r.next(chain, raw)) {
      ChainView c = view_chain(chain, chains_path + ":" + std::to_string(r.line()));
      std::vector<Flag> flags = chain_flags(c, chain, opt.flags);
      summary.add(c, chain, flags);
      // Built at most once per chain, shared by the reservoirs that keep it.
      std::shared_ptr<json> compact;
      auto make = [&]() {
        if (!compact) compact = std::make_shared<json>(compact_chain(chain, c, flags, opt.max_field_chars));
        return Picked{compact, r.line(), c.step, c.group, c.sample};
      };
      per_step.try_emplace(c.step, static_cast<size_t>(std::max<int64_t>(0, opt.per_step))).first->second.offer(make, rng);
      bool any_applicable = false;
      for (const auto& v : c.verdicts) any_applicable = any_applicable || v.applicable();
      if (any_applicable && !c.passed_all()) failures.offer(make, rng);
      if (!flags.empty()) flagged.offer(make, rng);
    }
    cut_lines = r.cut_lines();
  }
  res.chains = summary.chains();

  // Flagged first, then failures, then the per-step samples round-robin over steps (each
  // step's first pick before any step's second), until max_chains.
  std::vector<Picked> chosen;
  std::set<size_t> lines;
  auto take = [&](const Picked& p) {
    if (static_cast<int64_t>(chosen.size()) >= opt.max_chains || !lines.insert(p.line).second) return;
    chosen.push_back(p);
  };
  for (const auto& p : flagged.items()) take(p);
  for (const auto& p : failures.items()) take(p);
  for (size_t k = 0;; ++k) {
    bool any = false;
    for (const auto& kv : per_step)
      if (k < kv.second.items().size()) take(kv.second.items()[k]), any = true;
    if (!any) break;
  }
  std::sort(chosen.begin(), chosen.end(), [](const Picked& a, const Picked& b) {
    return std::tie(a.step, a.group, a.sample, a.line) < std::tie(b.step, b.group, b.sample, b.line);
  });
  res.embedded = static_cast<int64_t>(chosen.size());

  json page_data;
  page_data["chains"] = json::array();
  for (const auto& p : chosen) page_data["chains"].push_back(*p.chain);
  page_data["verifiers"] = summary.verifier_names();
  json kinds = json::array();
  for (const auto& k : flag_kinds()) kinds.push_back({{"code", k.code}, {"title", k.title}});
  page_data["flag_kinds"] = std::move(kinds);
  page_data["tool_statuses"] = tool_statuses();

  json config;
  bool have_config = fs::exists(config_path);
  if (have_config) config = load_json_file(config_path);
  json eval;
  if (fs::exists(eval_path)) {
    eval = load_json_file(eval_path);
    res.eval = true;
  }
  std::string results;  // the opening table's section; "" = none
  if (fs::exists(results_path)) {
    results = results_section(load_json_file(results_path), results_path);
    res.results = true;
  }

  // 3. The page.
  std::string run_name = fs::path(opt.run_dir).filename().string();
  if (run_name.empty() || run_name == ".") run_name = fs::path(opt.run_dir).parent_path().filename().string();
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    << "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; img-src data:\">"
    << "<title>retort report: " << html_escape(run_name) << "</title><style>" << kCss << "</style></head><body>\n";
  h << "<header><h1>retort report: " << html_escape(run_name) << "</h1><div>" << html_escape(opt.run_dir) << "</div><nav>"
    << (res.results ? "<a href=\"#results\">results</a> " : "")
    << "<a href=\"#summary\">summary</a> <a href=\"#eval\">evaluation</a> <a href=\"#metrics\">metrics</a> "
       "<a href=\"#pass-rate\">pass rate</a> <a href=\"#lengths\">lengths</a> "
    << (summary.tools().calls > 0 ? "<a href=\"#tools\">tool calls</a> " : "") << "<a href=\"#failures\">failures</a> "
       "<a href=\"#flags\">flags</a> <a href=\"#chains\">chains</a></nav></header><main>\n";

  // The results table first: what the run achieved, before how it got there.
  h << results;

  // Run summary.
  h << "<section id=\"summary\"><h2>Run summary</h2><table class=\"data\">";
  int64_t first_step = summary.steps().empty() ? 0 : summary.steps().begin()->first;
  int64_t last_step = summary.steps().empty() ? 0 : summary.steps().rbegin()->first;
  int64_t passed = 0, applicable = 0, truncated = 0;
  for (const auto& kv : summary.steps()) {
    truncated += kv.second.truncated;
    if (auto it = kv.second.pass.find(kCombined); it != kv.second.pass.end())
      passed += it->second.passed, applicable += it->second.applicable;
  }
  h << "<tr><th>chains</th><td>" << summary.chains() << "</td></tr>";
  h << "<tr><th>steps</th><td>" << summary.steps().size();
  if (!summary.steps().empty()) h << " (" << first_step << " to " << last_step << ")";
  h << "</td></tr><tr><th>prompts</th><td>" << summary.prompts() << "</td></tr>";
  h << "<tr><th>passed every verifier</th><td>"
    << (applicable ? fmt("%.1f%%", 100.0 * static_cast<double>(passed) / static_cast<double>(applicable)) : "-") << " ("
    << passed << " of " << applicable << ")</td></tr>";
  h << "<tr><th>truncated</th><td>" << truncated << "</td></tr>";
  h << "<tr><th>metrics.jsonl</th><td>" << (have_metrics ? std::to_string(res.metric_rows) + " rows" : "missing") << "</td></tr>";
  if (cut_lines) h << "<tr><th>note</th><td>the last line of chains.jsonl was cut off (a killed run) and skipped</td></tr>";
  h << "</table>";
  if (have_config) {
    std::vector<std::pair<std::string, json>> leaves;
    flatten(config, "", leaves);
    h << "<details><summary>config.resolved.json (" << leaves.size() << " settings)</summary><table class=\"data\">";
    for (const auto& [k, v] : leaves) h << "<tr><th>" << html_escape(k) << "</th><td>" << cell(v) << "</td></tr>";
    h << "</table></details>";
  } else {
    h << "<p class=\"note\">No config.resolved.json in the run directory.</p>";
  }
  h << "</section>\n";

  // Evaluation.
  h << "<section id=\"eval\"><h2>Evaluation</h2>";
  if (res.eval) h << eval_table(eval);
  else h << "<p class=\"note\">No eval.json in the run directory (written by <code>retort eval</code>).</p>";
  h << "</section>\n";

  // Metric curves.
  h << "<section id=\"metrics\"><h2>Training metrics (metrics.jsonl)</h2><div class=\"charts\">";
  std::vector<std::string> names;
  for (const auto& kv : metrics) names.push_back(kv.first);
  std::stable_sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    int ra = metric_rank(a), rb = metric_rank(b);
    return ra != rb ? ra < rb : a < b;
  });
  for (const auto& n : names) h << svg_chart(n, {metrics[n]});
  if (names.empty()) h << "<p class=\"note\">No numeric metrics.</p>";
  h << "</div></section>\n";

  // Pass rate, reward, length per step, from the chains.
  h << "<section id=\"pass-rate\"><h2>Pass rate per step (chains.jsonl)</h2><div class=\"charts\">";
  {
    std::vector<Series> rates;
    for (const auto& name : summary.verifier_names()) {
      Series s;
      s.name = name == kCombined ? "passed all" : name;
      for (const auto& [step, st] : summary.steps())
        if (auto it = st.pass.find(name); it != st.pass.end() && it->second.applicable)
          s.points.emplace_back(static_cast<double>(step), it->second.rate());
      rates.push_back(std::move(s));
    }
    Series reward{"reward", {}}, length{"length", {}}, trunc{"truncated", {}};
    for (const auto& [step, st] : summary.steps()) {
      double x = static_cast<double>(step);
      if (st.reward_n) reward.points.emplace_back(x, st.reward_sum / static_cast<double>(st.reward_n));
      if (st.length_n) length.points.emplace_back(x, st.length_sum / static_cast<double>(st.length_n));
      trunc.points.emplace_back(x, static_cast<double>(st.truncated) / static_cast<double>(st.chains));
    }
    h << svg_chart("pass rate per verifier", rates, /*unit_range=*/true) << svg_chart("mean reward", {reward})
      << svg_chart("mean length (tokens)", {length}) << svg_chart("truncated fraction", {trunc}, /*unit_range=*/true);
  }
  h << "</div><table class=\"data\"><tr><th>step</th><th>chains</th><th>reward</th><th>length</th>";
  for (const auto& name : summary.verifier_names())
    h << "<th>" << html_escape(name == kCombined ? "passed all" : name) << "</th>";
  h << "</tr>";
  for (const auto& [step, st] : summary.steps()) {
    h << "<tr><td class=\"num\">" << step << "</td><td class=\"num\">" << st.chains << "</td><td class=\"num\">"
      << (st.reward_n ? fmt("%.3f", st.reward_sum / static_cast<double>(st.reward_n)) : "-") << "</td><td class=\"num\">"
      << (st.length_n ? fmt("%.1f", st.length_sum / static_cast<double>(st.length_n)) : "-") << "</td>";
    for (const auto& name : summary.verifier_names()) {
      auto it = st.pass.find(name);
      if (it == st.pass.end() || !it->second.applicable) h << "<td class=\"num\">-</td>";
      else h << "<td class=\"num\">" << fmt("%.2f", it->second.rate()) << " (" << it->second.passed << "/" << it->second.applicable << ")</td>";
    }
    h << "</tr>";
  }
  h << "</table></section>\n";

  // Lengths.
  h << "<section id=\"lengths\"><h2>Length distribution</h2>";
  {
    LengthStats ls = summary.lengths(20);
    h << "<table class=\"data\"><tr><th>n</th><th>mean</th>";
    for (const auto& q : {"min", "p10", "p25", "p50", "p75", "p90", "p99", "max"}) h << "<th>" << q << "</th>";
    h << "</tr><tr><td class=\"num\">" << ls.n << "</td><td class=\"num\">" << fmt("%.1f", ls.mean) << "</td>";
    for (const auto& q : {"min", "p10", "p25", "p50", "p75", "p90", "p99", "max"})
      h << "<td class=\"num\">" << (ls.quantiles.count(q) ? num_label(ls.quantiles.at(q)) : "-") << "</td>";
    h << "</tr></table>";
    std::vector<std::pair<std::string, double>> bars;
    for (const auto& [edge, count] : ls.histogram) bars.emplace_back(fmt("%.0f", edge), static_cast<double>(count));
    h << svg_bars("chains per completion length (tokens, bin lower edge)", bars);
  }
  h << "</section>\n";

  // Tool calls (runs whose chains called a tool).
  if (summary.tools().calls > 0) {
    const ToolStats& t = summary.tools();
    double chains = static_cast<double>(std::max<int64_t>(1, summary.chains()));
    h << "<section id=\"tools\"><h2>Tool calls</h2><p>" << t.calls << " calls in " << t.chains_with_calls << " of "
      << summary.chains() << " chains (" << fmt("%.2f", static_cast<double>(t.calls) / chains)
      << " per chain); wall time mean " << fmt("%.3f", t.wall_s_sum / static_cast<double>(t.calls)) << " s, max "
      << fmt("%.3f", t.wall_s_max) << " s; peak memory max " << t.peak_memory_kb_max << " kB; " << t.truncated
      << " observations truncated. <code>retort audit RUN_DIR --tool-status STATUS --show</code> lists the chains.</p>"
      << "<table class=\"data\"><tr><th>status</th><th>calls</th><th>share</th></tr>";
    for (const auto& [status, n] : t.by_status)
      h << "<tr><td><span class=\"badge tool-" << (status == "ok" ? "ok" : "bad") << "\">" << html_escape(status)
        << "</span></td><td class=\"num\">" << n << "</td><td class=\"num\">"
        << fmt("%.1f%%", 100.0 * static_cast<double>(n) / static_cast<double>(t.calls)) << "</td></tr>";
    h << "</table>";
    std::vector<std::pair<std::string, double>> bars;
    for (const auto& [n, count] : t.calls_per_chain) bars.emplace_back(std::to_string(n), static_cast<double>(count));
    h << svg_bars("chains per number of tool calls", bars) << "</section>\n";
  }

  // Failure reasons.
  h << "<section id=\"failures\"><h2>Most common failure reasons</h2>";
  {
    auto reasons = summary.failure_reasons(opt.top);
    if (reasons.empty()) h << "<p class=\"note\">No failed verifier.</p>";
    else {
      h << "<table class=\"data\"><tr><th>count</th><th>share of chains</th><th>reason</th><th>first seen</th></tr>";
      for (const auto& r : reasons)
        h << "<tr><td class=\"num\">" << r.count << "</td><td class=\"num\">"
          << fmt("%.1f%%", 100.0 * static_cast<double>(r.count) / static_cast<double>(std::max<int64_t>(1, summary.chains())))
          << "</td><td>" << html_escape(r.reason) << "</td><td>step " << r.example["step"].get<int64_t>() << ", prompt "
          << html_escape(r.example["prompt_id"].get<std::string>()) << ", sample " << r.example["sample"].get<int64_t>()
          << "</td></tr>";
      h << "</table>";
    }
  }
  h << "</section>\n";

  // Flags.
  h << "<section id=\"flags\"><h2>Reward-hacking and quality flags</h2>"
    << "<p class=\"note\">Heuristics: each is a reason to read the chains, not a verdict. "
       "<code>retort audit RUN_DIR --flag CODE --show</code> lists every flagged chain.</p>"
    << "<table class=\"data\"><tr><th>flag</th><th>chains</th><th>what it means</th><th>first example</th></tr>";
  for (const auto& k : flag_kinds()) {
    auto it = summary.flag_counts().find(k.code);
    int64_t n = it == summary.flag_counts().end() ? 0 : it->second.first;
    h << "<tr><td><span class=\"flagname\">" << k.code << "</span><br>" << html_escape(k.title) << "</td><td class=\"num\">" << n
      << "</td><td>" << html_escape(k.explanation) << "</td><td>";
    if (n) {
      const json& ex = it->second.second;
      h << "step " << ex["step"].get<int64_t>() << ", prompt " << html_escape(ex["prompt_id"].get<std::string>())
        << ", sample " << ex["sample"].get<int64_t>() << ": " << html_escape(ex["why"].get<std::string>());
    }
    h << "</td></tr>";
  }
  h << "</table><h3>Answers repeated verbatim across prompts</h3>";
  {
    auto reps = summary.repeated_answers(opt.top);
    if (reps.empty()) h << "<p class=\"note\">No answer was given verbatim to " << opt.flags.repeated_answer_prompts << " or more prompts.</p>";
    else {
      h << "<p class=\"note\">One answer text given to many prompts is a sign of a policy that found an answer the "
           "verifier accepts regardless of the question, most of all when it passes for prompts whose gold answers differ.</p>"
        << "<table class=\"data\"><tr><th>prompts</th><th>chains</th><th>passed</th><th>distinct gold answers</th><th>answer</th><th>some prompt ids</th></tr>";
      for (const auto& r : reps) {
        std::string ids;
        for (const auto& id : r.prompt_ids) ids += (ids.empty() ? "" : ", ") + id;
        h << "<tr><td class=\"num\">" << r.prompts << "</td><td class=\"num\">" << r.chains << "</td><td class=\"num\">" << r.passed
          << "</td><td class=\"num\">" << r.distinct_golds << "</td><td><pre class=\"json\">" << html_escape(r.answer)
          << "</pre></td><td>" << html_escape(ids) << "</td></tr>";
      }
      h << "</table>";
    }
  }
  h << "</section>\n";

  // Chain browser.
  h << "<section id=\"chains\"><h2>Chains</h2><p class=\"note\">" << res.embedded << " of " << res.chains
    << " chains are embedded in this page";
  if (res.embedded < res.chains) {
    h << " (left out: " << (res.chains - res.embedded) << "). The selection: every flagged chain up to "
      << opt.max_flagged << " (" << flagged.seen() << " flagged in all), failed chains up to " << opt.max_failures << " ("
      << failures.seen() << " in all), then up to " << opt.per_step << " sampled per step, at most " << opt.max_chains
      << " in all";
  }
  h << ". Texts are cut to " << opt.max_field_chars << " bytes. <code>retort audit " << html_escape(opt.run_dir)
    << "</code> queries every chain.</p>";
  h << "<div id=\"filters\">"
       "<label>step from<input id=\"f-step-min\" type=\"number\" size=\"6\"></label>"
       "<label>step to<input id=\"f-step-max\" type=\"number\" size=\"6\"></label>"
       "<label>prompt id<input id=\"f-prompt\" type=\"text\" size=\"12\"></label>"
       "<label>verdict<select id=\"f-verdict\"><option value=\"\">any</option></select></label>"
       "<label>flag<select id=\"f-flag\"><option value=\"\">any</option></select></label>"
       "<label>tool calls<select id=\"f-tool\"><option value=\"\">any</option><option value=\"with\">with calls</option>"
       "<option value=\"none\">without calls</option></select></label>"
       "<label>text search<input id=\"f-text\" type=\"search\" size=\"24\"></label>"
       "<label><span><input id=\"f-regex\" type=\"checkbox\"> regex</span></label>"
       "<label><span><input id=\"f-truncated\" type=\"checkbox\"> truncated only</span></label>"
       "<span id=\"count\"></span></div>";
  h << "<div id=\"browser\"><div id=\"list\"><table class=\"data\"><thead><tr><th>step</th><th>prompt</th><th>grp/s</th>"
       "<th>reward</th><th>verdict</th><th>length</th><th>tools</th><th>flags</th></tr></thead><tbody id=\"rows\"></tbody></table>"
       "<button id=\"more\" type=\"button\">show more</button></div><div id=\"detail\"><p class=\"note\">Select a chain.</p></div></div>";
  h << "</section>\n";

  h << "</main><script type=\"application/json\" id=\"chains-data\">" << json_for_script(page_data) << "</script>\n";
  h << "<script>" << kJs << "</script></body></html>\n";

  make_dirs(fs::path(res.path).parent_path().empty() ? "." : fs::path(res.path).parent_path().string());
  write_file_atomic(res.path, h.str());
  return res;
}

}  // namespace retort::audit
