#include "audit/chain_log.h"

#include <cerrno>   // defines: errno
#include <cstring>  // defines: std::strerror

#include "common/config.h"  // defines: write_file_atomic
#include "common/error.h"   // defines: retort::Error
#include "common/log.h"     // defines: append_whole_line, finite_or_null

namespace retort {

using nlohmann::json;

json verifier_cell(double reward, bool passed, const json& detail) {
  return json{{"reward", finite_or_null(reward)}, {"passed", passed}, {"detail", detail.is_null() ? json::object() : detail}};
}

json chain_line(const ChainEntry& e) {
  json j = json::object();
  j["step"] = e.step;
  j["prompt_id"] = e.prompt_id;
  j["group"] = e.group;
  j["sample"] = e.sample;
  j["prompt"] = e.prompt;
  j["text"] = e.text;
  j["reasoning"] = e.reasoning;
  j["answer"] = e.answer;
  j["verifiers"] = e.verifiers.is_object() ? e.verifiers : json::object();
  j["reward"] = finite_or_null(e.reward);
  j["advantage"] = finite_or_null(e.advantage);
  j["kl"] = e.kl ? finite_or_null(*e.kl) : json(nullptr);
  j["length"] = e.length;
  j["truncated"] = e.truncated;
  if (e.opd_advantage) j["opd_advantage"] = finite_or_null(*e.opd_advantage);
  if (e.tool_calls.is_array() && !e.tool_calls.empty()) j["tool_calls"] = e.tool_calls;
  return j;
}

ChainLog::ChainLog(const std::string& path) : path_(path) {
  file_ = std::fopen(path.c_str(), "ab");
  if (!file_) {
    throw Error(ErrorInfo{"cannot open the chain log for appending", path, "a writable file", std::strerror(errno),
                          "check that the run directory is writable"});
  }
  thread_ = std::thread([this] { loop(); });
}

ChainLog::~ChainLog() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (file_) std::fclose(file_);
}

void ChainLog::write(json line) {
  // Serialised on the caller's thread: the JSON object may hold views of the caller's data
  // only while this call runs. Invalid UTF-8 (a model can emit any bytes) becomes U+FFFD.
  std::string s = line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!error_.empty()) throw Error(error_, path_, "free some disk space (the run resumes from its last checkpoint)");
    queue_.push_back(std::move(s));
  }
  cv_.notify_one();
}

void ChainLog::flush() {
  std::unique_lock<std::mutex> lk(mu_);
  drained_.wait(lk, [this] { return queue_.empty() && !busy_; });
  if (!error_.empty()) throw Error(error_, path_, "free some disk space (the run resumes from its last checkpoint)");
}

int64_t ChainLog::lines_written() const {
  std::lock_guard<std::mutex> lk(mu_);
  return written_;
}

void ChainLog::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty() && stop_) break;
    std::deque<std::string> batch;
    batch.swap(queue_);
    busy_ = true;
    lk.unlock();
    std::string failed;
    for (const auto& s : batch) {
      // One line at a time: a line is either whole in the file or absent.
      try {
        append_whole_line(file_, s, path_);
      } catch (const Error& e) {
        failed = std::string("cannot append a line to the chain log: ") + e.info().got;
        break;
      }
    }
    lk.lock();
    if (!failed.empty() && error_.empty()) {
      error_ = failed;
      queue_.clear();  // nothing more is written after a lost line
    }
    written_ += static_cast<int64_t>(batch.size());
    busy_ = false;
    if (queue_.empty()) drained_.notify_all();
  }
  busy_ = false;
  drained_.notify_all();
}

}  // namespace retort
