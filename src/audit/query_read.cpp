// Reading a run's chains: the JSON-lines reader (a cut last line is skipped with a warning)
// and the typed view of one chain line. See query.h.
#include "audit/query.h"

#include <cmath>  // defines: std::floor, std::abs

#include "common/error.h"  // defines: retort::Error
#include "common/log.h"    // defines: log_warn

namespace retort::audit {

// ---------------------------------------------------------------------------------------
// Small helpers

namespace {

bool is_blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

const json& empty_object() {
  static const json kEmpty = json::object();
  return kEmpty;
}

std::string type_of(const json& j) { return j.type_name(); }

[[noreturn]] void bad_field(const std::string& where, const std::string& key, const std::string& expected, const json& got) {
  throw Error(ErrorInfo{"a chain has a field of the wrong type", where + " (field \"" + key + "\")", expected,
                        type_of(got) + " " + quote_for_error(got.dump()),
                        "chains.jsonl is written by `retort grpo`; a line edited by hand or by another tool may be off"});
}

int64_t get_int(const json& j, const char* key, const std::string& where, std::optional<int64_t> def) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (def) return *def;
    throw Error(ErrorInfo{std::string("a chain has no \"") + key + "\"", where, "an integer", "no such field",
                          "every chain line needs step, prompt_id, verifiers and reward"});
  }
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_number_float()) {
    double v = it->get<double>();
    if (std::floor(v) == v && std::abs(v) < 9e15) return static_cast<int64_t>(v);
  }
  bad_field(where, key, "an integer", *it);
}

}  // namespace

std::string cut_utf8(const std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // not inside a character
  return s.substr(0, n) + "\xE2\x80\xA6";
}

std::string chain_text(const json& chain, const char* key) {
  auto it = chain.find(key);
  return it != chain.end() && it->is_string() ? it->get<std::string>() : std::string();
}

json chain_ref(const ChainView& c) {
  return json{{"step", c.step}, {"prompt_id", c.prompt_id}, {"group", c.group}, {"sample", c.sample}};
}

// ---------------------------------------------------------------------------------------
// JsonlReader

JsonlReader::JsonlReader(std::string path) : path_(std::move(path)), in_(path_, std::ios::binary) {
  if (!in_)
    throw Error(ErrorInfo{"cannot open a run file", path_, "a readable JSON-lines file", "it does not open",
                          "check RUN_DIR: a run writes chains.jsonl and metrics.jsonl there"});
}

bool JsonlReader::next(json& value, std::string& raw) {
  while (std::getline(in_, raw)) {
    ++line_;
    if (is_blank(raw)) continue;
    try {
      value = json::parse(raw);
    } catch (const json::parse_error& e) {
      // Nothing but blank lines after it: the last line, which a killed writer may have cut.
      bool last = true;
      std::string rest;
      while (std::getline(in_, rest)) {
        if (!is_blank(rest)) {
          last = false;
          break;
        }
      }
      if (last) {
        ++cut_lines_;
        log_warn(path_ + ":" + std::to_string(line_) + ": the last line is cut off (a killed run?); skipped it");
        return false;
      }
      throw Error(ErrorInfo{"a line is not valid JSON", path_ + ":" + std::to_string(line_), "one JSON object per line",
                            quote_for_error(raw) + " (" + e.what() + ")",
                            "only the last line of a killed run may be cut off; this one is in the middle of the file"});
    }
    if (!value.is_object())
      throw Error(ErrorInfo{"a line is not a JSON object", path_ + ":" + std::to_string(line_), "one JSON object per line",
                            type_of(value) + " " + quote_for_error(raw), "check that the file is the one a run wrote"});
    return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------
// ChainView

ChainView view_chain(const json& chain, const std::string& where) {
  ChainView c;
  c.step = get_int(chain, "step", where, std::nullopt);
  auto pid = chain.find("prompt_id");
  if (pid == chain.end())
    throw Error(ErrorInfo{"a chain has no \"prompt_id\"", where, "a string or an integer", "no such field",
                          "every chain line needs step, prompt_id, verifiers and reward"});
  if (pid->is_string()) c.prompt_id = pid->get<std::string>();
  else if (pid->is_number_integer()) c.prompt_id = std::to_string(pid->get<int64_t>());
  else bad_field(where, "prompt_id", "a string", *pid);
  c.group = get_int(chain, "group", where, 0);
  c.sample = get_int(chain, "sample", where, 0);
  c.length = get_int(chain, "length", where, -1);

  auto rw = chain.find("reward");
  if (rw == chain.end())
    throw Error(ErrorInfo{"a chain has no \"reward\"", where, "a number", "no such field",
                          "every chain line needs step, prompt_id, verifiers and reward"});
  if (rw->is_number()) c.reward = rw->get<double>();
  else if (rw->is_null()) c.reward = std::nan("");  // NaN is written as null
  else bad_field(where, "reward", "a number", *rw);

  if (auto it = chain.find("advantage"); it != chain.end() && !it->is_null()) {
    if (!it->is_number()) bad_field(where, "advantage", "a number", *it);
    c.advantage = it->get<double>();
  }
  if (auto it = chain.find("kl"); it != chain.end() && !it->is_null()) {
    if (!it->is_number()) bad_field(where, "kl", "a number or null", *it);
    c.kl = it->get<double>();
  }
  if (auto it = chain.find("truncated"); it != chain.end()) {
    if (!it->is_boolean()) bad_field(where, "truncated", "true or false", *it);
    c.truncated = it->get<bool>();
  }

  auto vs = chain.find("verifiers");
  if (vs == chain.end())
    throw Error(ErrorInfo{"a chain has no \"verifiers\"", where, "an object {NAME: {reward, passed, detail}}",
                          "no such field", "every chain line needs step, prompt_id, verifiers and reward"});
  if (!vs->is_object()) bad_field(where, "verifiers", "an object {NAME: {reward, passed, detail}}", *vs);
  c.verdicts.reserve(vs->size());
  for (auto it = vs->begin(); it != vs->end(); ++it) {
    const json& v = it.value();
    std::string key = "verifiers." + it.key();
    if (!v.is_object()) bad_field(where, key, "an object {reward, passed, detail}", v);
    Verdict d;
    d.name = it.key();
    if (auto r = v.find("reward"); r != v.end() && !r->is_null()) {
      if (!r->is_number()) bad_field(where, key + ".reward", "a number or null", *r);
      double x = r->get<double>();
      if (!std::isnan(x)) d.reward = x;
    }
    if (auto p = v.find("passed"); p != v.end()) {
      if (!p->is_boolean()) bad_field(where, key + ".passed", "true or false", *p);
      d.passed = p->get<bool>();
    }
    d.detail = &empty_object();
    if (auto de = v.find("detail"); de != v.end() && de->is_object()) d.detail = &*de;
    c.verdicts.push_back(std::move(d));
  }

  if (auto tc = chain.find("tool_calls"); tc != chain.end() && !tc->is_null()) {
    const char* kShape = "an array of {code, observation, status, wall_s, peak_memory_kb, truncated}";
    if (!tc->is_array()) bad_field(where, "tool_calls", kShape, *tc);
    c.tool_calls.reserve(tc->size());
    for (size_t i = 0; i < tc->size(); ++i) {
      const json& r = (*tc)[i];
      std::string key = "tool_calls[" + std::to_string(i) + "]";
      if (!r.is_object()) bad_field(where, key, kShape, r);
      ToolCallView t;
      t.record = &r;
      auto st = r.find("status");
      if (st == r.end() || !st->is_string()) bad_field(where, key + ".status", "a status string such as \"ok\"", st == r.end() ? json(nullptr) : *st);
      t.status = st->get<std::string>();
      if (auto w = r.find("wall_s"); w != r.end() && !w->is_null()) {
        if (!w->is_number()) bad_field(where, key + ".wall_s", "a number", *w);
        t.wall_s = w->get<double>();
      }
      if (auto m = r.find("peak_memory_kb"); m != r.end() && !m->is_null()) {
        if (!m->is_number()) bad_field(where, key + ".peak_memory_kb", "an integer", *m);
        t.peak_memory_kb = m->get<int64_t>();
      }
      if (auto tr = r.find("truncated"); tr != r.end()) {
        if (!tr->is_boolean()) bad_field(where, key + ".truncated", "true or false", *tr);
        t.truncated = tr->get<bool>();
      }
      c.tool_calls.push_back(std::move(t));
    }
  }
  return c;
}

std::string ToolCallView::code() const { return record ? chain_text(*record, "code") : std::string(); }
std::string ToolCallView::observation() const { return record ? chain_text(*record, "observation") : std::string(); }

bool ChainView::passed_all() const {
  bool any = false;
  for (const auto& v : verdicts) {
    if (!v.applicable()) continue;
    any = true;
    if (!v.passed) return false;
  }
  return any;
}

const Verdict* ChainView::verdict(const std::string& name) const {
  for (const auto& v : verdicts)
    if (v.name == name) return &v;
  return nullptr;
}

std::vector<std::string> ChainView::sandbox_statuses() const {
  std::vector<std::string> out;
  auto add = [&](const std::string& s) {
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  };
  for (const auto& v : verdicts) {
    const json& d = *v.detail;
    bool any = false;
    if (auto s = d.find("sandbox_status"); s != d.end() && s->is_string()) add(s->get<std::string>()), any = true;
    if (auto f = d.find("first_failure"); f != d.end() && f->is_object()) {
      if (auto s = f->find("status"); s != f->end() && s->is_string()) add(s->get<std::string>()), any = true;
    }
    // A stdio code verdict records no status when every test ran cleanly.
    if (!any && v.applicable() && d.contains("language") && d.contains("tests")) add("ok");
  }
  return out;
}

}  // namespace retort::audit
