// The Scheduler (see scheduler.h for the policy).
#include "rollout/scheduler.h"

#include <algorithm>  // defines: std::min, std::find, std::none_of

#include "common/error.h"  // defines: retort::Error

namespace retort {

Scheduler::Scheduler(BlockManager& blocks, const SchedulerOptions& opts) : blocks_(blocks), opts_(opts) {
  if (opts_.max_num_seqs < 1 || opts_.max_prefill_tokens < 1) {
    throw Error(ErrorInfo{"the scheduler needs room for one sequence and one prefill token", "rollout: scheduler",
                          "max_num_seqs >= 1, max_prefill_tokens >= 1",
                          std::to_string(opts_.max_num_seqs) + ", " + std::to_string(opts_.max_prefill_tokens), ""});
  }
}

void Scheduler::add_group(std::vector<Sequence*> group) {
  Unit u;
  u.tokens = group.front()->prompt_length();
  u.seqs = std::move(group);
  waiting_.push_back(std::move(u));
}

ScheduledBatch Scheduler::schedule() {
  ScheduledBatch out;
  // Prefill first (new work joins between decode steps), as nano-vllm and vLLM do.
  if (schedule_prefill(out)) return out;
  schedule_decode(out);
  // Every running sequence was preempted to make room for another: the queue goes on.
  if (out.items.empty() && !waiting_.empty()) schedule_prefill(out);
  // Nothing runs and the queue's head does not fit: paused sequences give back their blocks.
  // Then waiting units' kept blocks, even those shared with other waiting units.
  while (out.items.empty() && !waiting_.empty() && (release_paused() || release_waiting_blocks(false))) {
    ++out.preempted;
    schedule_prefill(out);
  }
  if (out.items.empty() && !done()) {
    throw Error(ErrorInfo{"the rollout scheduler found nothing to run", "rollout: scheduler", "a prefill or a decode step",
                          std::to_string(waiting_.size()) + " waiting, " + std::to_string(running_.size()) + " running, " +
                              std::to_string(blocks_.num_free()) + " of " + std::to_string(blocks_.num_blocks()) + " blocks free",
                          "this is a bug: the engine checks that every sequence fits the cache"});
  }
  return out;
}

bool Scheduler::schedule_prefill(ScheduledBatch& out) {
  int64_t budget = opts_.max_prefill_tokens;
  int64_t seqs = static_cast<int64_t>(running_.size());
  for (Unit& u : waiting_) {
    const int64_t chunk = std::min(u.tokens - u.done, budget);
    if (chunk <= 0) break;
    const bool completes = u.done + chunk == u.tokens;
    const bool idle = running_.empty() && out.items.empty();  // nothing else could free blocks: admit what fits at all
    if (!u.partial && !idle && seqs + static_cast<int64_t>(u.seqs.size()) > opts_.max_num_seqs) break;
    // One block per completion to grow into, so that admission does not preempt at once.
    const int64_t reserve = completes && !idle ? static_cast<int64_t>(u.seqs.size()) : 0;
    if (blocks_.blocks_needed(u.table, u.done, u.done + chunk) + reserve > blocks_.num_free()) break;
    blocks_.append_slots(u.table, u.done, u.done + chunk, &out.copies);
    BatchItem it;
    it.source = u.seqs.front();
    it.start = u.done;
    it.count = chunk;
    it.block_table = &u.table;
    if (completes) it.samplers = u.seqs;
    out.items.push_back(std::move(it));
    seqs += static_cast<int64_t>(u.seqs.size());
    budget -= chunk;
    if (!completes || budget == 0) break;
  }
  out.prefill = !out.items.empty();
  return out.prefill;
}

void Scheduler::schedule_decode(ScheduledBatch& out) {
  for (size_t i = 0; i < running_.size(); ++i) {
    Sequence* seq = running_[i];
    bool skipped = false;
    while (!blocks_.append_slots(seq->block_table, seq->num_cached, seq->num_cached + 1, &out.copies)) {
      if (release_waiting_blocks(true)) continue;
      if (release_paused()) {
        ++out.preempted;
        continue;
      }
      Sequence* victim = running_.back();
      preempt(victim);
      running_.pop_back();
      ++out.preempted;
      if (victim == seq) {
        skipped = true;
        break;
      }
    }
    if (skipped) break;  // seq was the last running one
    BatchItem it;
    it.source = seq;
    it.start = seq->num_cached;
    it.count = 1;
    it.block_table = &seq->block_table;
    it.samplers = {seq};
    out.items.push_back(std::move(it));
  }
}

void Scheduler::postprocess(const ScheduledBatch& batch) {
  if (!batch.prefill) {
    for (const auto& it : batch.items) const_cast<Sequence*>(it.source)->num_cached += 1;
    return;
  }
  // The scheduled units are the first batch.items.size() of the queue, in order.
  for (size_t i = 0; i < batch.items.size(); ++i) {
    Unit& u = waiting_.front();
    u.done += batch.items[i].count;
    u.partial = u.done < u.tokens;
    if (u.partial) break;  // a chunk: the unit stays at the front
    for (size_t j = 0; j < u.seqs.size(); ++j) {
      Sequence* s = u.seqs[j];
      s->block_table = u.table;
      if (j > 0)
        for (int64_t b : u.table) blocks_.retain(b);  // the G completions share the prompt's blocks
      s->num_cached = u.tokens;
      s->status = SequenceStatus::Running;
      running_.push_back(s);
    }
    waiting_.pop_front();
  }
}

void Scheduler::finish(Sequence* seq) {
  blocks_.release_all(seq->block_table);
  seq->status = SequenceStatus::Finished;
  auto it = std::find(running_.begin(), running_.end(), seq);
  if (it != running_.end()) running_.erase(it);
  auto pt = std::find(paused_.begin(), paused_.end(), seq);
  if (pt != paused_.end()) paused_.erase(pt);
}

void Scheduler::pause(Sequence* seq) {
  auto it = std::find(running_.begin(), running_.end(), seq);
  if (it == running_.end()) {
    throw Error(ErrorInfo{"only a running sequence can pause for a tool call", "rollout: scheduler",
                          "a running sequence", "sequence " + std::to_string(seq->id) + " is not running",
                          "this is a bug in the engine loop"});
  }
  running_.erase(it);
  seq->status = SequenceStatus::Paused;
  paused_.push_back(seq);
}

void Scheduler::resume(Sequence* seq) {
  auto it = std::find(paused_.begin(), paused_.end(), seq);
  if (it == paused_.end()) {
    throw Error(ErrorInfo{"only a paused sequence can resume", "rollout: scheduler", "a paused sequence",
                          "sequence " + std::to_string(seq->id) + " is not paused", "this is a bug in the engine loop"});
  }
  paused_.erase(it);
  // Its kept blocks hold [0, num_cached) (none when they were given back); the unit computes
  // the rest: the token that closed the call, then the observation.
  Unit u;
  u.seqs = {seq};
  u.tokens = seq->length();
  u.done = seq->num_cached;
  u.table = std::move(seq->block_table);
  seq->block_table.clear();
  seq->status = SequenceStatus::Waiting;
  waiting_.push_front(std::move(u));
}

void Scheduler::preempt(Sequence* seq) {
  // Recompute later (vLLM's recompute preemption): cheaper than swapping for short chains.
  // The leading full blocks that other sequences also hold (its prompt's, shared with running
  // siblings) are kept: giving them back would free nothing, and on re-admission the sequence
  // rejoins them and recomputes only from their end.
  std::vector<int64_t>& table = seq->block_table;
  const int64_t bs = blocks_.block_size();
  size_t keep = 0;
  while (keep < table.size() && blocks_.ref_count(table[keep]) > 1 && static_cast<int64_t>(keep + 1) * bs <= seq->num_cached)
    ++keep;
  for (size_t i = keep; i < table.size(); ++i) blocks_.release(table[i]);
  table.resize(keep);
  Unit u;
  u.seqs = {seq};
  u.tokens = seq->length();
  u.done = static_cast<int64_t>(keep) * bs;
  u.table = std::move(table);
  table.clear();
  seq->num_cached = 0;
  seq->status = SequenceStatus::Waiting;
  ++seq->preemptions;
  waiting_.push_front(std::move(u));
}

bool Scheduler::release_waiting_blocks(bool only_if_frees) {
  // A partly prefilled unit, a resumed sequence's kept blocks or a preempted one's shared
  // prompt blocks: it recomputes from 0.
  for (Unit& u : waiting_) {
    if (u.table.empty()) continue;
    if (only_if_frees && std::none_of(u.table.begin(), u.table.end(), [&](int64_t b) { return blocks_.ref_count(b) == 1; }))
      continue;
    blocks_.release_all(u.table);
    u.done = 0;
    u.partial = false;
    return true;
  }
  return false;
}

bool Scheduler::release_paused() {
  for (auto it = paused_.rbegin(); it != paused_.rend(); ++it) {
    Sequence* s = *it;
    if (s->block_table.empty()) continue;
    blocks_.release_all(s->block_table);
    s->num_cached = 0;
    ++s->preemptions;
    return true;
  }
  return false;
}

}  // namespace retort
