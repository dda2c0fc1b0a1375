#include "common/log.h"

#include <unistd.h>  // defines: isatty, ftruncate

#include <cerrno>   // defines: errno
#include <cstring>  // defines: std::strerror

#include <atomic>   // defines: std::atomic
#include <cmath>    // defines: std::isfinite
#include <cstdlib>  // defines: std::getenv
#include <ctime>    // defines: localtime_r

#include "common/error.h"

namespace retort {

namespace {

LogLevel initial_level() {
  const char* v = std::getenv("RETORT_LOG");
  if (!v) return LogLevel::Info;
  std::string s(v);
  if (s == "debug") return LogLevel::Debug;
  if (s == "warn") return LogLevel::Warn;
  if (s == "error") return LogLevel::Error;
  return LogLevel::Info;
}

std::atomic<int>& level_ref() {
  static std::atomic<int> level{static_cast<int>(initial_level())};
  return level;
}

std::mutex& stderr_mutex() {
  static std::mutex mu;
  return mu;
}

void emit(LogLevel level, const char* tag, const std::string& msg) {
  if (static_cast<int>(level) < level_ref().load()) return;
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char ts[16];
  std::strftime(ts, sizeof ts, "%H:%M:%S", &tm);
  std::lock_guard<std::mutex> lock(stderr_mutex());
  std::fprintf(stderr, "[%s %s] %s\n", ts, tag, msg.c_str());
}

}  // namespace

void set_log_level(LogLevel level) { level_ref().store(static_cast<int>(level)); }
LogLevel log_level() { return static_cast<LogLevel>(level_ref().load()); }

void log_debug(const std::string& msg) { emit(LogLevel::Debug, "debug", msg); }
void log_info(const std::string& msg) { emit(LogLevel::Info, "info", msg); }
void log_warn(const std::string& msg) { emit(LogLevel::Warn, "warn", msg); }
void log_error(const std::string& msg) { emit(LogLevel::Error, "error", msg); }

void append_whole_line(FILE* f, const std::string& line, const std::string& path) {
  const long start = std::ftell(f);
  errno = 0;
  const size_t n = std::fwrite(line.data(), 1, line.size(), f);
  if (n == line.size() && std::fflush(f) == 0) return;
  const int err = errno;
  std::clearerr(f);
  // Whatever reached the file of this line goes: the file keeps whole lines only.
  if (start >= 0 && ::ftruncate(fileno(f), start) == 0) std::fseek(f, 0, SEEK_END);
  throw Error(ErrorInfo{"cannot append a line to the file", path, "a complete write of " + std::to_string(line.size()) + " bytes",
                        err ? std::string(std::strerror(err)) : "a short write", "free some disk space (the run resumes from its last checkpoint)"});
}

MetricsWriter::MetricsWriter(const std::string& path, bool append) : path_(path) {
  file_ = std::fopen(path.c_str(), append ? "ab" : "wb");
  if (!file_) throw Error("cannot open the metrics file for writing", path, "check that the run folder is writable");
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

void MetricsWriter::write(const nlohmann::json& record) {
  if (!file_) return;
  // One fwrite per record, then flush: a line is either complete in the file or absent.
  std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::lock_guard<std::mutex> lock(mu_);
  append_whole_line(file_, line, path_);
}

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit, double plain_interval_s)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), plain_interval_s_(plain_interval_s) {
  tty_ = ::isatty(2) != 0;
  start_ = last_print_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() {
  if (!finished_) finish();
}

std::string ProgressBar::format_duration(double seconds) {
  if (seconds < 0 || seconds != seconds) return "?";
  long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lds", s);
  return buf;
}

void ProgressBar::update(int64_t done, const std::string& suffix) {
  done_ = done;
  suffix_ = suffix;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_print_).count();
  if (tty_ ? since >= 0.1 : since >= plain_interval_s_) {
    last_print_ = now;
    render(false);
  }
}

void ProgressBar::finish(const std::string& suffix) {
  if (finished_) return;
  finished_ = true;
  if (!suffix.empty()) suffix_ = suffix;
  render(true);
}

void ProgressBar::render(bool final_line) {
  if (log_level() > LogLevel::Info) return;  // RETORT_LOG=warn or error: progress is info
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = elapsed > 0 ? done_ / elapsed : 0.0;
  double eta = rate > 0 && total_ > 0 ? (total_ - done_) / rate : -1;
  char stats[160];
  std::snprintf(stats, sizeof stats, "%lld/%lld %s [%s<%s, %.2f %s/s]", static_cast<long long>(done_),
                static_cast<long long>(total_), unit_.c_str(), format_duration(elapsed).c_str(),
                final_line ? "0s" : format_duration(eta).c_str(), rate, unit_.c_str());
  std::lock_guard<std::mutex> lock(stderr_mutex());
  if (tty_) {
    const int width = 24;
    int filled = total_ > 0 ? static_cast<int>(width * std::min<double>(1.0, double(done_) / total_)) : 0;
    std::string bar(filled, '#');
    bar += std::string(width - filled, '.');
    std::fprintf(stderr, "\r\033[K%s |%s| %s %s%s", label_.c_str(), bar.c_str(), stats, suffix_.c_str(),
                 final_line ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s %s %s\n", label_.c_str(), stats, suffix_.c_str());
  }
  std::fflush(stderr);
}

nlohmann::json finite_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

std::string fmt_pct(double fraction, bool percent_sign) {
  if (!std::isfinite(fraction) || fraction < 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, percent_sign ? "%.1f%%" : "%.1f", 100.0 * fraction);
  return buf;
}

}  // namespace retort
