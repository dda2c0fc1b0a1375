// The chain log: RUN_DIR/chains.jsonl, one JSON line per sampled chain (DESIGN.md section 5),
// written by a background thread so that the trainer never waits on the disk.
//
// The line schema is fixed (`retort audit` and the HTML report read it):
//   {"step": int, "prompt_id": string, "group": int (the prompt's index in the step's batch),
//    "sample": int (0..G-1), "prompt": string, "text": string (the full completion),
//    "reasoning": string, "answer": string (the split at </think>),
//    "verifiers": {"<name>": {"reward": number|null (null = not applicable), "passed": bool, "detail": object}},
//    "reward": number (combined), "advantage": number,
//    "kl": number|null (mean per-token KL estimate to the anchor; null without an anchor),
//    "length": int (completion tokens), "truncated": bool,
//    "opd_advantage": number (only in GRPO runs with on-policy distillation: the chain's mean
//                     per-token distillation advantage, opd.weight x (log pi_teacher - log pi_sampler)),
//    "tool_calls": [{"code", "observation", "status", "wall_s", "peak_memory_kb", "obs_start",
//                    "obs_tokens", "truncated"}] (only in chains that called a tool: one record per
//                    call, rewards::to_json(ToolCallRecord), rewards/tool_calls.h)}
// Sandbox status, time and memory sit in the code verifier's detail.
//
// Crash safety: each line is written with one fwrite and flushed, so a killed run leaves
// whole lines only (at worst the last one cut, which the reader and the resume drop). On
// resume the lines of steps after the checkpoint are dropped (truncate_jsonl_after_step, run_dir.h):
// the resumed run writes them again.
//
// What it deliberately is not: the reader or the queries (src/audit's audit command).
#pragma once

#include <condition_variable>  // defines: std::condition_variable
#include <cstdint>             // defines: int64_t
#include <cstdio>              // defines: FILE
#include <deque>               // defines: std::deque
#include <mutex>               // defines: std::mutex
#include <optional>            // defines: std::optional
#include <string>              // defines: std::string
#include <thread>              // defines: std::thread

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort {

// One sampled chain, as the trainer knows it.
struct ChainEntry {
  int64_t step = 0;
  std::string prompt_id;
  int64_t group = 0;   // the prompt's index in the step's batch
  int64_t sample = 0;  // 0..G-1 within the group
  std::string prompt;
  std::string text;
  std::string reasoning;
  std::string answer;
  nlohmann::json verifiers = nlohmann::json::object();  // name -> {"reward", "passed", "detail"}
  double reward = 0;
  double advantage = 0;
  std::optional<double> kl;  // nullopt: no anchor
  std::optional<double> opd_advantage;  // nullopt: no on-policy distillation (the key is left out)
  int64_t length = 0;
  bool truncated = false;
  nlohmann::json tool_calls = nlohmann::json::array();  // to_json(ToolCallRecord) per call; the key is left out when empty
};

// The JSON line of one chain (the schema above). Non-finite numbers become null.
nlohmann::json chain_line(const ChainEntry& e);

// One verifier's cell for ChainEntry::verifiers; NaN reward = not applicable -> null.
nlohmann::json verifier_cell(double reward, bool passed, const nlohmann::json& detail);

class ChainLog {
 public:
  // Opens `path` for appending and starts the writer thread. Call truncate_jsonl_after_step
  // (common/run_dir.h) first when resuming.
  explicit ChainLog(const std::string& path);
  // Writes what is queued, then stops the thread.
  ~ChainLog();
  ChainLog(const ChainLog&) = delete;
  ChainLog& operator=(const ChainLog&) = delete;

  // Queues one line; returns at once.
  void write(nlohmann::json line);
  void write(const ChainEntry& e) { write(chain_line(e)); }
  // Blocks until every queued line is in the file (called before a checkpoint, so that a
  // checkpoint never precedes its step's chains on disk).
  void flush();
  int64_t lines_written() const;

 private:
  void loop();

  FILE* file_ = nullptr;
  std::string path_;
  mutable std::mutex mu_;
  std::condition_variable cv_, drained_;
  std::deque<std::string> queue_;
  bool stop_ = false, busy_ = false;
  std::string error_;  // a failed write: the writer stops, write() and flush() throw it
  int64_t written_ = 0;
  std::thread thread_;
};

}  // namespace retort
