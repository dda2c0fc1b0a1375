#include "audit/audit_command.h"

#include <cmath>       // defines: std::isnan
#include <cstdio>      // defines: std::snprintf
#include <filesystem>  // defines: std::filesystem::is_regular_file
#include <sstream>     // defines: std::ostringstream

#include "common/error.h"  // defines: retort::Error
#include "common/log.h"    // defines: log_info

namespace retort::audit {

namespace fs = std::filesystem;

std::string chains_path(const std::string& run_dir) {
  if (fs::is_regular_file(run_dir)) return run_dir;
  std::string p = run_dir + "/chains.jsonl";
  if (!fs::exists(p)) {
    bool dir = fs::is_directory(run_dir);
    throw Error(ErrorInfo{dir ? "the run has no chains.jsonl" : "the run directory does not exist", dir ? p : run_dir,
                          "a run folder with chains.jsonl (written by retort grpo) or a chains .jsonl file",
                          dir ? "no chains.jsonl" : "no such file or folder",
                          dir ? "only GRPO runs sample chains; retort report RUN_DIR shows the metrics of other stages"
                              : "pass the run_dir of the config, e.g. retort audit runs/demo"});
  }
  return p;
}

namespace {
std::string num(double v, const char* f = "%.3f") {
  if (std::isnan(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}
// Each line of `text` behind `prefix`, so that a program and its output read as blocks.
std::string indent_block(const std::string& text, const char* prefix) {
  std::string out;
  size_t from = 0;
  while (from <= text.size()) {
    size_t nl = text.find('\n', from);
    out += prefix + text.substr(from, nl == std::string::npos ? std::string::npos : nl - from) + "\n";
    if (nl == std::string::npos) break;
    from = nl + 1;
  }
  return out;
}
}  // namespace

std::string show_chain(const ChainView& c, const json& chain, const FlagOptions& flags) {
  std::ostringstream o;
  o << "==== step " << c.step << " · prompt " << c.prompt_id << " · group " << c.group << " · sample " << c.sample
    << " · reward " << num(c.reward) << " · advantage " << num(c.advantage, "%+.3f");
  if (c.kl) o << " · kl " << num(*c.kl, "%.4f");
  o << " · length " << c.length << (c.truncated ? " (truncated)" : "") << "\n";
  std::string prompt = chain_text(chain, "prompt"), reasoning = chain_text(chain, "reasoning"),
              answer = chain_text(chain, "answer");
  if (!prompt.empty()) o << "--- prompt\n" << prompt << (prompt.back() == '\n' ? "" : "\n");
  if (reasoning.empty() && answer.empty()) {
    std::string text = chain_text(chain, "text");
    o << "--- completion (no reasoning/answer split)\n" << text << "\n";
  } else {
    o << "--- reasoning\n" << (reasoning.empty() ? "(empty)" : reasoning) << "\n";
    o << "--- answer\n" << (answer.empty() ? "(empty)" : answer) << "\n";
  }
  if (!c.tool_calls.empty()) {
    // The calls are in the text above too; here each with what the sandbox measured.
    o << "--- tool calls (" << c.tool_calls.size() << ")\n";
    for (size_t i = 0; i < c.tool_calls.size(); ++i) {
      const ToolCallView& t = c.tool_calls[i];
      o << "  [" << i + 1 << "] " << t.status << " · wall " << num(t.wall_s) << " s · memory " << t.peak_memory_kb << " kB"
        << (t.truncated ? " · observation truncated" : "") << "\n";
      std::string code = t.code(), obs = t.observation();
      o << indent_block(code.empty() ? "(no code)" : cut_utf8(code, 2000), "    code | ");
      o << indent_block(obs.empty() ? "(no output)" : cut_utf8(obs, 2000), "    out  | ");
    }
  }
  o << "--- verifiers\n";
  for (const auto& v : c.verdicts) {
    o << "  " << v.name << ": ";
    if (!v.applicable()) {
      o << "not applicable";
      if (auto na = v.detail->find("not_applicable"); na != v.detail->end() && na->is_string())
        o << " (" << na->get<std::string>() << ")";
      o << "\n";
      continue;
    }
    o << (v.passed ? "PASSED" : "FAILED") << " reward " << num(*v.reward);
    // The details a reader wants first; the rest is in the JSON line.
    for (const char* k : {"extracted", "gold", "error", "sandbox_status", "tests", "passed"})
      if (auto it = v.detail->find(k); it != v.detail->end()) o << " " << k << "=" << (it->is_string() ? it->get<std::string>() : it->dump());
    o << "\n";
    if (auto ff = v.detail->find("first_failure"); ff != v.detail->end() && ff->is_object()) {
      o << "    first failure: test " << ff->value("index", json(nullptr)).dump() << " " << ff->value("status", std::string())
        << ": " << ff->value("why", std::string()) << "\n";
      for (const char* k : {"input", "expected", "actual", "stderr"}) {
        std::string s = ff->value(k, std::string());
        if (!s.empty()) o << "    " << k << ": " << cut_utf8(s, 400) << "\n";
      }
    }
  }
  for (const auto& f : chain_flags(c, chain, flags)) o << "  flag " << f.code << ": " << f.why << "\n";
  o << "\n";
  return o.str();
}

AuditResult run_audit(const AuditOptions& opt, std::ostream& out) {
  const std::string path = chains_path(opt.run_dir);
  ChainQuery query(opt.filter, opt.flags);
  JsonlReader reader(path);
  Summary summary(opt.flags);
  AuditResult res;
  json chain;
  std::string raw;
  while (reader.next(chain, raw)) {
    ++res.scanned;
    ChainView c = view_chain(chain, path + ":" + std::to_string(reader.line()));
    if (!query.matches(c, chain)) continue;
    ++res.matched;
    if (opt.summary) summary.add(c, chain);
    bool print = (!opt.summary || opt.show) && (opt.limit < 0 || res.printed < opt.limit);
    if (print) {
      if (opt.show) out << show_chain(c, chain, opt.flags);
      else out << raw << '\n';
      ++res.printed;
    }
    // Without a summary nothing after the limit is needed: stop reading (the file can be huge).
    if (!opt.summary && opt.limit >= 0 && res.printed >= opt.limit) break;
  }
  if (res.matched == 0) {
    std::vector<std::string> unknown = query.unknown_verifiers();
    if (!unknown.empty()) {
      std::string seen;
      for (const auto& s : query.seen_verifiers()) seen += (seen.empty() ? "" : ", ") + s;
      throw Error(ErrorInfo{"no chain has a verifier named " + quote_for_error(unknown.front()), path,
                            "one of: " + (seen.empty() ? std::string("(no verifiers in the file)") : seen) + ", or 'all'",
                            quote_for_error(unknown.front()), "check the spelling; names are those of the config's rewards"});
    }
  }
  if (opt.summary) {
    std::string history = opt.filter.prompt_ids.size() == 1 ? opt.filter.prompt_ids.front() : "";
    if (opt.summary_json) out << summary.to_json(opt.top, history).dump() << "\n";
    else out << summary.to_text(opt.top, history);
  }
  out.flush();
  log_info("retort audit: " + std::to_string(res.matched) + " of " + std::to_string(res.scanned) + " chains read matched");
  return res;
}

}  // namespace retort::audit
