// The Scheduler of the rollout engine: who runs, who waits (the policy), apart from the
// blocks (rollout/block_manager.h) and the forward pass (rollout/model_runner.h).
//
// The queue holds every sequence of the work. Each step is either a prefill step or a decode
// step:
//   prefill  waiting units, first come first served, up to max_prefill_tokens positions (a
//            long prompt takes several steps: chunked prefill). A fresh prompt is one unit
//            for its G completions: its KV is computed once into blocks that all G then hold
//            (reference counts); its partly filled last block is copied by each completion
//            on its first write. A preempted sequence is a unit of its own that recomputes
//            what it had generated, and its prompt unless it rejoins the prompt's full
//            blocks, which it keeps while its siblings hold them. Admission needs a free
//            slot in the batch (max_num_seqs) and the unit's blocks plus one per completion
//            to grow into.
//   decode   one new position for every running sequence; when no block is free, a
//            waiting unit's blocks that would free memory (a partly prefilled prompt, kept
//            blocks), then paused sequences' and then the most recently admitted running
//            sequences' are taken (preempted: back to the front of the queue).
// A finished sequence releases its blocks at once (finish()).
// Tool calls: pause() takes a running sequence out of the batch, keeping its blocks (it holds
// no batch slot while the sandbox runs its call); resume() queues it at the front as a unit of
// its own whose prefill computes positions [num_cached, length) into those blocks and samples
// from the last one. It counts against max_num_seqs like any admission. When blocks run out,
// paused sequences give theirs back (newest pause first) before a running one is preempted:
// they then recompute from position 0 when they resume, and a full cache never fails the run.
// What it deliberately is not: a priority or fairness policy beyond first come first served.
#pragma once

#include <cstdint>  // defines: int64_t
#include <deque>    // defines: std::deque
#include <vector>   // defines: std::vector

#include "rollout/block_manager.h"  // defines: BlockManager, BlockCopy
#include "rollout/sequence.h"       // defines: Sequence

namespace retort {

struct SchedulerOptions {
  int64_t max_num_seqs = 256;         // sequences decoded together at most
  int64_t max_prefill_tokens = 1024;  // positions computed by one prefill step (the chunk size for long prompts)
};

// One row of a forward pass: positions [start, start + count) of `source`'s tokens, whose
// keys/values go to (and are read from) `block_table`.
struct BatchItem {
  const Sequence* source = nullptr;
  int64_t start = 0, count = 0;
  const std::vector<int64_t>* block_table = nullptr;
  std::vector<Sequence*> samplers;  // sample their next token from this row's last logits (none: a chunk that does not end a prefill)
};

struct ScheduledBatch {
  bool prefill = false;
  std::vector<BatchItem> items;
  std::vector<BlockCopy> copies;  // to run before the forward pass
  int64_t preempted = 0;          // sequences preempted (running, or paused ones' kept blocks) to make room for this step
};

class Scheduler {
 public:
  Scheduler(BlockManager& blocks, const SchedulerOptions& opts);

  // Queues one prompt's fresh completions (all with the same prompt, none started).
  void add_group(std::vector<Sequence*> group);
  bool done() const { return waiting_.empty() && running_.empty() && paused_.empty(); }
  // Something can be scheduled (else only paused sequences remain: wait for a tool call).
  bool runnable() const { return !waiting_.empty() || !running_.empty(); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_paused() const { return static_cast<int64_t>(paused_.size()); }

  // The next step; its block tables are ready to be written. Never empty unless done().
  ScheduledBatch schedule();
  // After the forward pass: the prefilled units become running, decoded positions are cached.
  void postprocess(const ScheduledBatch& batch);
  // A running or paused sequence ended: its blocks are released now.
  void finish(Sequence* seq);
  // Between steps (after postprocess): a running sequence waits for a tool call, keeping its
  // blocks; later it resumes with its completion grown (see the top of this file).
  void pause(Sequence* seq);
  void resume(Sequence* seq);

 private:
  struct Unit {
    std::vector<Sequence*> seqs;   // G fresh completions of one prompt, or one preempted or resumed sequence
    int64_t tokens = 0;            // positions to compute (the prompt; or prompt + completion so far)
    int64_t done = 0;              // positions computed so far (resumed or preempted: those its kept blocks hold)
    std::vector<int64_t> table;    // blocks holding them
    bool partial = false;          // a chunk of its prefill ran, the rest has not: it holds its batch slots already
  };
  bool schedule_prefill(ScheduledBatch& out);
  void schedule_decode(ScheduledBatch& out);
  void preempt(Sequence* seq);
  // Gives back one waiting unit's blocks (with only_if_frees, only a unit holding a block no
  // one else holds); false when none qualifies.
  bool release_waiting_blocks(bool only_if_frees);
  bool release_paused();

  BlockManager& blocks_;
  SchedulerOptions opts_;
  // FIFO; a prefill step takes units from the front (they stay here, so that the batch's
  // pointers to their tables stay valid, until postprocess). std::deque: references survive
  // push_front/push_back.
  std::deque<Unit> waiting_;
  std::vector<Sequence*> running_;  // in admission order: the last is preempted first
  std::vector<Sequence*> paused_;   // waiting for a tool call, in pause order: the last gives its blocks first
};

}  // namespace retort
