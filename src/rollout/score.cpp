// Sampling with overlapped verification (see score.h).
#include "rollout/score.h"

#include <condition_variable>  // defines: std::condition_variable
#include <exception>           // defines: std::exception_ptr
#include <memory>              // defines: std::make_shared
#include <mutex>               // defines: std::mutex
#include <set>                 // defines: std::set
#include <thread>              // defines: std::thread
#include <utility>             // defines: std::pair

#include "common/error.h"     // defines: retort::Error
#include "common/platform.h"  // defines: now_seconds
#include "rewards/extract.h"   // defines: rewards::split_think

namespace retort {

using nlohmann::json;

namespace {

// Scores completions while the sampler still decodes others: submit() (from the sampler's
// on_finished callback, on the sampling thread) queues a row; a worker thread scores
// whatever is queued with RewardSet::score and files the cells by row; finish() waits and
// returns the N x K table.
class StreamingScorer {
 public:
  StreamingScorer(const rewards::RewardSet& set, int64_t n) : set_(set) {
    const size_t k = set.names().size();
    table_.n = static_cast<int>(n);
    table_.k = static_cast<int>(k);
    table_.names = set.names();
    table_.weights = set.weights();
    table_.rewards.assign(static_cast<size_t>(n) * k, 0.0);
    table_.passed.assign(static_cast<size_t>(n) * k, 0);
    table_.details.assign(static_cast<size_t>(n) * k, json::object());
    submitted_.assign(static_cast<size_t>(n), false);
    worker_ = std::thread([this] { loop(); });
  }
  ~StreamingScorer() {
    close();
    if (worker_.joinable()) worker_.join();
  }
  StreamingScorer(const StreamingScorer&) = delete;
  StreamingScorer& operator=(const StreamingScorer&) = delete;

  void submit(int64_t row, rewards::ScoreInput in) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (submitted_[static_cast<size_t>(row)]) return;
      submitted_[static_cast<size_t>(row)] = true;
      pending_.emplace_back(row, std::move(in));
    }
    cv_.notify_one();
  }
  bool submitted(int64_t row) const {
    std::lock_guard<std::mutex> lk(mu_);
    return submitted_[static_cast<size_t>(row)];
  }

  // Waits for every submitted row; returns the table with the weighted totals.
  rewards::RewardTable finish() {
    close();
    if (worker_.joinable()) worker_.join();
    if (error_) std::rethrow_exception(error_);
    table_.total = rewards::combine_rewards(table_);
    return table_;
  }
  double busy_s() const { return busy_s_; }  // read after finish(): summed over batches that overlap

 private:
  void close() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      closed_ = true;
    }
    cv_.notify_one();
  }
  // Each batch the worker drains is scored on a thread of its own, so that the verifiers'
  // deadlines run side by side: no cell waits longer than deadline_s after its completion
  // finished, and the whole step waits at most deadline_s after the last one (a serial
  // queue would add the deadlines up).
  void loop() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [this] { return closed_ || !pending_.empty(); });
      if (pending_.empty()) break;  // closed and drained
      auto work = std::make_shared<std::vector<std::pair<int64_t, rewards::ScoreInput>>>();
      work->swap(pending_);
      batches_.emplace_back([this, work] { score_batch(*work); });
    }
    lk.unlock();
    for (auto& t : batches_) t.join();
  }
  void score_batch(std::vector<std::pair<int64_t, rewards::ScoreInput>>& work) {
    try {
      const double t0 = now_seconds();
      std::vector<rewards::ScoreInput> inputs;
      inputs.reserve(work.size());
      for (auto& w : work) inputs.push_back(std::move(w.second));
      rewards::RewardTable part = set_.score(inputs);  // blocks until answered or the deadline
      const size_t k = static_cast<size_t>(table_.k);
      std::lock_guard<std::mutex> lk(mu_);
      for (size_t i = 0; i < work.size(); ++i) {
        const size_t row = static_cast<size_t>(work[i].first);
        for (size_t j = 0; j < k; ++j) {
          table_.rewards[row * k + j] = part.rewards[i * k + j];
          table_.passed[row * k + j] = part.passed[i * k + j];
          table_.details[row * k + j] = std::move(part.details[i * k + j]);
        }
      }
      busy_s_ += now_seconds() - t0;
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu_);
      error_ = std::current_exception();
    }
  }

  const rewards::RewardSet& set_;
  rewards::RewardTable table_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<int64_t, rewards::ScoreInput>> pending_;
  std::vector<bool> submitted_;
  bool closed_ = false;
  double busy_s_ = 0;
  std::exception_ptr error_;
  std::vector<std::thread> batches_;  // one per drained batch; joined by the worker before it ends
  std::thread worker_;
};

}  // namespace

ScoredRollout sample_and_score(Qwen2ForCausalLMImpl& model, const std::vector<std::vector<int32_t>>& prompt_ids,
                               const std::vector<const PromptRecord*>& records, SamplerOptions opts,
                               const rewards::RewardSet& rewards, const Tokenizer& tok) {
  if (prompt_ids.size() != records.size()) {
    throw Error(ErrorInfo{"sample_and_score needs one record per prompt", "rollout/score", std::to_string(prompt_ids.size()) + " records",
                          std::to_string(records.size()), "pass the records the prompt ids were encoded from"});
  }
  ScoredRollout s;
  const int64_t G = opts.group_size;
  const int64_t N = static_cast<int64_t>(prompt_ids.size()) * G;
  const std::set<int64_t> stops(opts.stop_token_ids.begin(), opts.stop_token_ids.end());
  s.texts.assign(static_cast<size_t>(N), "");
  StreamingScorer scorer(rewards, N);
  auto to_input = [&](int64_t row, const std::vector<int32_t>& ids) {
    std::vector<int32_t> c = ids;
    if (!c.empty() && stops.count(c.back())) c.pop_back();  // the stop token is not part of the text
    s.texts[static_cast<size_t>(row)] = tok.decode(c, /*skip_special=*/false);
    const PromptRecord& rec = *records[static_cast<size_t>(row / G)];
    return rewards::ScoreInput{rec.text, s.texts[static_cast<size_t>(row)], rec.row, static_cast<int64_t>(ids.size())};
  };
  // Verification starts here, on the scorer's thread, while the sampler decodes the other rows.
  opts.on_finished = [&](int64_t row, const std::vector<int32_t>& ids) { scorer.submit(row, to_input(row, ids)); };
  // Tool calls: observations are encoded by the policy's tokenizer and run in the pool the
  // code verifiers share (made from rewards.sandbox when none exists yet).
  DecodeFn decode;
  if (opts.tools.enabled) {
    if (!opts.encode) opts.encode = [&tok](const std::string& text) { return tok.encode(text); };
    if (!opts.executor) opts.executor = rewards.executor().get();
    decode = [&tok](const std::vector<int32_t>& ids) { return tok.decode(ids, /*skip_special=*/false); };
  }
  const double t0 = now_seconds();
  s.rollout = sample(model, prompt_ids, opts, decode);
  const double t1 = now_seconds();
  for (int64_t row = 0; row < N; ++row)  // every row is reported by the sampler; this is a safety net
    if (!scorer.submitted(row)) scorer.submit(row, to_input(row, s.rollout.completions[static_cast<size_t>(row)]));
  s.table = scorer.finish();  // sync point: the verifiers' last answers
  s.sample_s = t1 - t0;
  s.score_wait_s = now_seconds() - t1;
  s.verify_busy_s = scorer.busy_s();
  return s;
}

ChainEntry chain_entry(const PromptRecord& rec, const ScoredRollout& s, int64_t row) {
  const auto r = static_cast<size_t>(row);
  ChainEntry e;
  e.prompt_id = rec.id;
  e.sample = row % s.rollout.group_size;
  e.prompt = rec.text;
  e.text = s.texts[r];
  rewards::ThinkSplit split = rewards::split_think(e.text, rec.text);
  e.reasoning = std::string(split.reasoning);
  e.answer = std::string(split.answer);
  for (int k = 0; k < s.table.k; ++k)
    e.verifiers[s.table.names[static_cast<size_t>(k)]] =
        verifier_cell(s.table.reward(static_cast<int>(row), k), s.table.passed[r * static_cast<size_t>(s.table.k) + k] != 0,
                      s.table.detail(static_cast<int>(row), k));
  e.reward = s.table.total[r];
  e.length = static_cast<int64_t>(s.rollout.completions[r].size());
  e.truncated = s.rollout.truncated[r];
  if (r < s.rollout.tool_calls.size())
    for (const auto& call : s.rollout.tool_calls[r]) e.tool_calls.push_back(rewards::to_json(call));
  return e;
}

std::vector<int64_t> sampler_stop_ids(const ModelConfig& mc, const Tokenizer& tok, const ChatTemplate& tmpl) {
  std::set<int64_t> ids(mc.eos_token_ids.begin(), mc.eos_token_ids.end());
  for (const auto& s : tmpl.stop_strings())
    if (auto id = tok.token_to_id(s)) ids.insert(*id);
  return {ids.begin(), ids.end()};
}

}  // namespace retort
