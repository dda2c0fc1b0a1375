// Job and Result as JSON, config binding of Limits / ExecutorConfig, and the JSON-lines driver
// behind `retort sandbox run`.
#include "sandbox/executor.h"

#include <chrono>   // defines: std::chrono::seconds
#include <deque>    // defines: std::deque
#include <istream>  // defines: std::istream, std::getline
#include <ostream>  // defines: std::ostream

#include "common/error.h"  // defines: retort::Error, quote_for_error
#include "common/log.h"    // defines: log_warn

namespace retort::sandbox {

// ---------------------------------------------------------------------------------------
// Status names

namespace {
constexpr const char* kStatusNames[] = {"ok",           "runtime_error", "compile_error", "time_limit",
                                        "memory_limit", "output_limit",  "sandbox_error"};
}  // namespace

const char* status_name(Status s) {
  int i = static_cast<int>(s);
  if (i < 0 || i >= 7) return "sandbox_error";
  return kStatusNames[i];
}

Status status_from_name(const std::string& name) {
  for (int i = 0; i < 7; ++i) {
    if (name == kStatusNames[i]) return static_cast<Status>(i);
  }
  throw Error(ErrorInfo{"unknown sandbox status", "", "one of: ok, runtime_error, compile_error, time_limit, "
                        "memory_limit, output_limit, sandbox_error", quote_for_error(name), ""});
}

// ---------------------------------------------------------------------------------------
// Config binding

void Limits::bind(ConfigBinder& b) {
  b.field("wall_s", wall_s, retort::Range::above(0));
  b.field("cpu_s", cpu_s, retort::Range::above(0));
  b.field("memory_mb", memory_mb, retort::Range::at_least(1));
  b.field("output_kb", output_kb, retort::Range::at_least(0));
  b.field("max_processes", max_processes, retort::Range::at_least(1));
  b.field("file_size_kb", file_size_kb, retort::Range::at_least(0));
  b.field("open_files", open_files);
  b.field("workdir_kb", workdir_kb);
}

void ExecutorConfig::bind(ConfigBinder& b) {
  b.field("workers", workers);
  b.field("queue_capacity", queue_capacity);
  b.choice("isolation", isolation, {"full", "rlimits-only"});
  b.field("warm_workers", warm_workers);
  b.field("default_limits", default_limits);
}

// ---------------------------------------------------------------------------------------
// JSON

namespace {

// Program output is arbitrary bytes; JSON strings must be UTF-8. Invalid sequences become
// U+FFFD so that every consumer can dump the result without an error handler.
std::string valid_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 0x2;
    if (ok && len == 2) ok = c >= 0xC2;  // overlong
    if (ok) {
      out.append(s, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

}  // namespace

nlohmann::json to_json(const Result& r) {
  nlohmann::json j;
  j["status"] = status_name(r.status);
  j["exit_code"] = r.exit_code;
  j["signal"] = r.signal;
  j["wall_s"] = r.wall_s;
  j["cpu_s"] = r.cpu_s;
  j["peak_memory_kb"] = r.peak_memory_kb;
  j["stdout"] = valid_utf8(r.stdout_text);
  j["stderr"] = valid_utf8(r.stderr_text);
  if (!r.detail.empty()) j["detail"] = r.detail;
  return j;
}

namespace {

[[noreturn]] void bad_job(const std::string& where, const std::string& what, const std::string& expected,
                          const nlohmann::json& got, const std::string& hint = "") {
  std::string g = got.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  throw Error(ErrorInfo{what, where, expected, quote_for_error(g), hint});
}

std::string get_string(const nlohmann::json& j, const char* key, const std::string& where) {
  const auto& v = j.at(key);
  if (!v.is_string()) bad_job(where, std::string("'") + key + "' must be a string", "a string", v);
  return v.get<std::string>();
}

}  // namespace

Job job_from_json(const nlohmann::json& j, const std::string& where) { return job_from_json(j, where, Limits{}); }

Job job_from_json(const nlohmann::json& j, const std::string& where, const Limits& defaults) {
  if (!j.is_object()) bad_job(where, "a job must be a JSON object", "an object", j);
  Job job;
  job.limits = defaults;
  static const char* kKeys[] = {"language", "source", "stdin", "files", "limits"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const char* k : kKeys) known = known || it.key() == k;
    if (!known) {
      throw Error(ErrorInfo{"unknown job key '" + it.key() + "'", where, "one of: language, source, stdin, files, limits",
                            it.key(), "check the spelling"});
    }
  }
  if (!j.contains("language")) bad_job(where, "a job needs 'language'", "\"python\" or \"cpp\"", j);
  if (!j.contains("source")) bad_job(where, "a job needs 'source'", "the program text", j);
  job.language = get_string(j, "language", where);
  job.source = get_string(j, "source", where);
  if (j.contains("stdin")) job.stdin_data = get_string(j, "stdin", where);
  if (j.contains("files")) {
    const auto& f = j.at("files");
    if (f.is_object()) {
      for (auto it = f.begin(); it != f.end(); ++it) {
        if (!it.value().is_string()) bad_job(where, "file contents must be strings", "a string", it.value());
        job.files.emplace_back(it.key(), it.value().get<std::string>());
      }
    } else if (f.is_array()) {
      for (const auto& e : f) {
        if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_string()) {
          bad_job(where, "each entry of 'files' must be [name, content]", "[\"name\", \"content\"]", e);
        }
        job.files.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
      }
    } else {
      bad_job(where, "'files' must be an object {name: content} or a list of [name, content]", "object or array", f);
    }
  }
  if (j.contains("limits")) {
    const auto& l = j.at("limits");
    if (!l.is_object()) bad_job(where, "'limits' must be an object", "an object", l);
    ConfigBinder b = ConfigBinder::reader(l, where, "limits");
    job.limits.bind(b);
    b.finish();
  }
  return job;
}

// ---------------------------------------------------------------------------------------
// `retort sandbox run`

int run_jobs_jsonl(std::istream& in, std::ostream& out, const ExecutorConfig& cfg) {
  Executor ex(cfg);
  struct Pending {
    std::future<Result> fut;
    bool immediate = false;
    Result ready;
  };
  std::deque<Pending> pending;
  int bad = 0;
  // Results leave in input order, as soon as the oldest one is done; the window of jobs in
  // flight is bounded so that a slow first job does not make memory grow without bound.
  size_t window = static_cast<size_t>(ex.workers()) + static_cast<size_t>(cfg.queue_capacity);
  auto emit_front = [&](bool wait) {
    while (!pending.empty()) {
      Pending& p = pending.front();
      if (!p.immediate) {
        if (!wait && p.fut.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
        p.ready = p.fut.get();
      }
      out << to_json(p.ready).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
      pending.pop_front();
    }
    out.flush();
  };
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string where = "stdin:" + std::to_string(line_no);
    Pending p;
    try {
      nlohmann::json j = parse_json_text(line, where);
      p.fut = ex.submit(job_from_json(j, where, cfg.default_limits));
    } catch (const Error& e) {
      // A bad line is answered in place (the output stays aligned with the input) and named
      // on stderr; the caller turns the count into the exit status.
      p.immediate = true;
      p.ready.status = Status::SandboxError;
      p.ready.detail = std::string("bad job: ") + e.what();
      log_warn(p.ready.detail);
      ++bad;
    }
    pending.push_back(std::move(p));
    emit_front(/*wait=*/pending.size() > window);
  }
  emit_front(/*wait=*/true);
  return bad;
}

}  // namespace retort::sandbox
