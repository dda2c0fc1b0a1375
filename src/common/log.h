// Logging to stderr, metrics as JSON lines, and a progress bar.
//
// stdout belongs to the machine-readable output of subcommands (`retort tokenize`,
// `retort verify`, ...), so every human-facing line goes to stderr.
#pragma once

#include <chrono>   // defines: std::chrono::steady_clock
#include <cstdio>   // defines: FILE
#include <mutex>    // defines: std::mutex
#include <string>   // defines: std::string

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3 };

// Lines below this level are dropped; RETORT_LOG=debug|info|warn|error sets it at start-up.
void set_log_level(LogLevel level);
LogLevel log_level();

void log_debug(const std::string& msg);
void log_info(const std::string& msg);
void log_warn(const std::string& msg);
void log_error(const std::string& msg);

// A metric for a JSON line: the number, or null when it is NaN or infinite (JSON has none).
nlohmann::json finite_or_null(double v);

// A fraction as a percentage with one decimal: "46.2%" (or "46.2" without the sign); "-" for a
// value that is missing (negative, NaN or infinite).
std::string fmt_pct(double fraction, bool percent_sign = true);

// Appends `line` (ending in a newline) to `f` and flushes it. A failed or short write (disk
// full, I/O error) cuts the file back to where the line began, so that the file never holds
// a torn line, and throws retort::Error naming `path`: a lost log line is never silent.
void append_whole_line(FILE* f, const std::string& line, const std::string& path);

// Appends one JSON object per line to a file, flushed after every line so that a killed
// run leaves a valid file (at worst without its last line); a failed write throws
// (append_whole_line). Thread-safe.
class MetricsWriter {
 public:
  MetricsWriter() = default;
  explicit MetricsWriter(const std::string& path, bool append = true);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  void write(const nlohmann::json& record);
  bool is_open() const { return file_ != nullptr; }

 private:
  FILE* file_ = nullptr;
  std::string path_;
  std::mutex mu_;
};

// A progress bar with rate and ETA when stderr is a terminal; a plain line every
// `plain_interval_s` seconds otherwise (CI logs stay readable).
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, std::string unit = "it", double plain_interval_s = 10.0);
  ~ProgressBar();

  // Sets the absolute position and an optional suffix ("loss 2.31").
  void update(int64_t done, const std::string& suffix = "");
  void finish(const std::string& suffix = "");

  static std::string format_duration(double seconds);  // "1h02m", "3m05s", "12s"

 private:
  void render(bool final_line);

  std::string label_, unit_, suffix_;
  int64_t total_ = 0, done_ = 0;
  bool tty_ = false, finished_ = false;
  double plain_interval_s_;
  std::chrono::steady_clock::time_point start_, last_print_;
};

}  // namespace retort
