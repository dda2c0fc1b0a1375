// Data parallel training over torch.distributed c10d: one process per device, Gloo on CPU,
// NCCL on GPU (when the Torch build has it), configured by the usual environment variables
//   RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
// (`retort launch -n N -- SUBCOMMAND ...` sets them for N processes on one machine).
//
// What it is: the few collectives the recipes need (broadcast the initial parameters from
// rank 0, sum the gradients in one flat buffer per dtype, sum or max a handful of scalars,
// a barrier). What it deliberately is not: a DistributedDataParallel with bucketed
// overlap of backward and communication; the models here are small and the step is
// dominated by sampling.
//
// Without RANK/WORLD_SIZE in the environment there is no process group: every call below
// returns at once and leaves its input untouched (a single process pays nothing).
#pragma once

#include <memory>  // defines: std::shared_ptr
#include <string>  // defines: std::string
#include <vector>  // defines: std::vector

#include "common/torch_pch.h"  // defines: torch::Tensor, torch::Device

namespace retort {

class DistContext {
 public:
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_main() const { return rank_ == 0; }
  // True when a process group exists (WORLD_SIZE was set, even to 1).
  bool enabled() const { return impl_ != nullptr; }
  std::string backend() const;  // "gloo", "nccl" or "none"

  // Copies rank 0's values into every rank's tensors (in place), so that all ranks start
  // from the same weights whatever their own initialisation drew.
  void broadcast(const std::vector<torch::Tensor>& tensors) const;
  // Sums the gradients of `params` over the ranks, in place: one flat buffer and one
  // all-reduce per dtype. A parameter without a gradient contributes zeros (and gets a
  // zero gradient when another rank has one), so that every rank reduces the same layout.
  // The recipes scale their losses by global counts, so the SUM is the combined batch's gradient.
  void all_reduce_gradients(const std::vector<torch::Tensor>& params) const;
  // Element-wise sum / max over the ranks of a few scalars (token counts, metrics).
  std::vector<double> sum(std::vector<double> values) const;
  double sum(double value) const { return sum(std::vector<double>{value})[0]; }
  double max(double value) const;
  // The ranks' vectors (of any lengths) concatenated in rank order, on every rank;
  // `counts`, when given, receives each rank's length. A single process gets `local` back.
  std::vector<double> all_gather(const std::vector<double>& local, std::vector<int64_t>* counts = nullptr) const;
  // Every rank's string, in rank order, on rank 0 (through the rendezvous store); the
  // other ranks get an empty vector. For logs that only rank 0 writes.
  std::vector<std::string> gather_to_main(const std::string& local) const;
  void barrier() const;
  // A resumed run must have the checkpoint's world size: the shards of a global batch, and
  // so the data order after the resume, depend on it. Throws retort::Error otherwise.
  void check_resume(int64_t saved_world_size, const std::string& checkpoint) const;

  struct Impl;

 private:
  friend const DistContext& dist_context(const torch::Device& device);
  int rank_ = 0;
  int world_size_ = 1;
  std::shared_ptr<Impl> impl_;
};

// The process's context, created on the first call from the environment and reused after
// (a pipeline runs several stages in one process over one process group). `device` picks
// the backend on the first call: NCCL for CUDA when built in, Gloo otherwise.
// Throws retort::Error for malformed variables (RANK outside [0, WORLD_SIZE), a port that
// is not a number, MASTER_ADDR missing) and when the rendezvous times out
// (RETORT_DIST_TIMEOUT_S, default 120 s).
const DistContext& dist_context(const torch::Device& device);

// Shard [begin, end) of `n` items for `rank` of `world`: contiguous, sizes differing by at
// most one, earlier ranks taking the remainder.
struct ShardRange {
  int64_t begin = 0, end = 0;
};
ShardRange shard_range(int64_t n, int rank, int world);

}  // namespace retort
