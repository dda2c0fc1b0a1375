// Job and Result as JSON, config binding of Limits / ExecutorConfig, and the JSON-lines driver
// behind `retort sandbox run`.
#include "sandbox/executor.h"

#include <deque>    // defines: std::deque
#include <istream>  // defines: std::istream, std::getline
#include <ostream>  // defines: std::ostream

#include "common/error.h"  // defines: retort::Error, quote_for_error

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
  b.field("wall_s", wall_s);
  b.field("cpu_s", cpu_s);
  b.field("memory_mb", memory_mb);
  b.field("output_kb", output_kb);
  b.field("max_processes", max_processes);
  b.field("file_size_kb", file_size_kb);
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

nlohmann::json to_json(const Result& r) {
  nlohmann::json j;
  j["status"] = status_name(r.status);
  j["exit_code"] = r.exit_code;
  j["signal"] = r.signal;
  j["wall_s"] = r.wall_s;
  j["cpu_s"] = r.cpu_s;
  j["peak_memory_kb"] = r.peak_memory_kb;
  // Program output is arbitrary bytes; replace invalid UTF-8 instead of failing the dump.
  j["stdout"] = r.stdout_text;
  j["stderr"] = r.stderr_text;
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

}  // namespace retort::sandbox
