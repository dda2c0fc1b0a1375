// c10d process group setup and the collectives of dist.h.
#include "dist/dist.h"

#include <chrono>   // defines: std::chrono::seconds
#include <cstdlib>  // defines: std::getenv
#include <map>      // defines: std::map
#include <mutex>    // defines: std::mutex

#include <torch/version.h>  // defines: TORCH_VERSION_MAJOR

#include <torch/csrc/distributed/c10d/TCPStore.hpp>  // defines: c10d::TCPStore

// ProcessGroupGloo.hpp compiles only with USE_C10D_GLOO, a macro of Torch's own build; the
// symbols are in libtorch_cpu whenever the Gloo headers were installed beside Torch's.
#if __has_include(<gloo/context.h>)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#define RETORT_DEFINED_USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>  // defines: c10d::ProcessGroupGloo
#define RETORT_HAVE_GLOO 1
#else
#define RETORT_HAVE_GLOO 0
#endif
// NCCL only where the build says so (a CUDA Torch whose build defines USE_C10D_NCCL).
#if defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>  // defines: c10d::ProcessGroupNCCL
#endif

#include "common/error.h"  // defines: retort::Error
#include "common/log.h"    // defines: log_info, set_log_level

namespace retort {

namespace {

// Torch 2 moved the collectives from ProcessGroup to Backend; both backends keep the same
// allreduce / broadcast / barrier signatures.
#if TORCH_VERSION_MAJOR >= 2
using PgBase = c10d::Backend;
#else
using PgBase = c10d::ProcessGroup;
#endif

const char* kHint = "launch with `retort launch -n N -- SUBCOMMAND ...`, or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT for every process";

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

int64_t env_int(const char* name, int64_t lo, int64_t hi, const std::string& fallback) {
  std::string s = env_or(name, fallback);
  size_t used = 0;
  int64_t v = -1;
  try {
    v = std::stoll(s, &used);
  } catch (...) {
    used = 0;
  }
  if (s.empty() || used != s.size() || v < lo || v > hi) {
    throw Error(ErrorInfo{std::string("the environment variable ") + name + " is not a valid value", "data parallel setup",
                          "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", quote_for_error(s), kHint});
  }
  return v;
}

}  // namespace

struct DistContext::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<PgBase> pg;
  std::string backend;  // gloo | nccl
  std::chrono::milliseconds timeout{0};
  torch::Device device{torch::kCPU};  // where NCCL's buffers live
  mutable int64_t gathers = 0;        // gather_to_main calls so far (store key prefix)

  // Gloo reduces host memory (unless Torch's Gloo was built with CUDA), NCCL device memory.
  torch::Tensor staged(const torch::Tensor& t) const {
    if (backend == "gloo" && !t.is_cpu()) return t.cpu();
    if (backend == "nccl" && t.is_cpu()) return t.to(device);
    return t;
  }

  // Runs one collective and waits; a peer that died or timed out becomes a retort::Error.
  void wait(c10::intrusive_ptr<c10d::Work> work, const char* what) const {
    try {
      work->wait();
    } catch (const std::exception& e) {
      throw Error(ErrorInfo{std::string("a data parallel ") + what + " failed: another rank died or did not answer", "dist",
                            "every rank at the same collective", e.what(),
                            "look at the other ranks' errors; `retort launch` stops all ranks when one fails"});
    }
  }

  // In place on `t`, through a staged copy where the backend needs other memory.
  void all_reduce(torch::Tensor& t, c10d::ReduceOp op) const {
    torch::Tensor host = staged(t);
    std::vector<at::Tensor> v{host};
    c10d::AllreduceOptions o;
    o.reduceOp = op;
    wait(pg->allreduce(v, o), "all-reduce");
    if (!host.is_same(t)) t.copy_(host);
  }
  void broadcast(torch::Tensor& t) const {
    torch::Tensor host = staged(t);
    std::vector<at::Tensor> v{host};
    c10d::BroadcastOptions o;
    o.rootRank = 0;
    wait(pg->broadcast(v, o), "broadcast");
    if (!host.is_same(t)) t.copy_(host);
  }
};

std::string DistContext::backend() const { return impl_ ? impl_->backend : "none"; }

ShardRange shard_range(int64_t n, int rank, int world) {
  const int64_t base = n / world, extra = n % world;
  ShardRange r;
  r.begin = rank * base + std::min<int64_t>(rank, extra);
  r.end = r.begin + base + (rank < extra ? 1 : 0);
  return r;
}

const DistContext& dist_context(const torch::Device& device) {
  static std::mutex mu;
  static std::unique_ptr<DistContext> ctx;
  std::lock_guard<std::mutex> lk(mu);
  if (ctx) return *ctx;
  ctx = std::make_unique<DistContext>();
  if (!std::getenv("WORLD_SIZE") && !std::getenv("RANK")) return *ctx;  // single process: no group

  const int world = static_cast<int>(env_int("WORLD_SIZE", 1, 1 << 16, ""));
  const int rank = static_cast<int>(env_int("RANK", 0, world - 1, ""));
  const std::string addr = env_or("MASTER_ADDR", "");
  if (addr.empty()) {
    throw Error(ErrorInfo{"the environment variable MASTER_ADDR is not set", "data parallel setup",
                          "the host of rank 0 (127.0.0.1 on one machine)", "nothing", kHint});
  }
  const int port = static_cast<int>(env_int("MASTER_PORT", 1, 65535, ""));
  const auto timeout = std::chrono::milliseconds(1000 * env_int("RETORT_DIST_TIMEOUT_S", 1, 86400, "120"));

  auto impl = std::make_shared<DistContext::Impl>();
  impl->timeout = timeout;
  impl->device = device;
  try {
    // Rendezvous: rank 0 serves the store and waits for every rank to connect.
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = rank == 0;
    so.numWorkers = static_cast<std::size_t>(world);
    so.waitWorkers = true;
    so.timeout = timeout;
    impl->store = c10::make_intrusive<c10d::TCPStore>(addr, so);
  } catch (const std::exception& e) {
    throw Error(ErrorInfo{"the data parallel rendezvous failed", "MASTER_ADDR=" + addr + " MASTER_PORT=" + std::to_string(port),
                          std::to_string(world) + " ranks connecting within " + std::to_string(timeout.count() / 1000) + " s",
                          e.what(),
                          "check that every rank was started with the same MASTER_ADDR/MASTER_PORT and that the port is free "
                          "(raise RETORT_DIST_TIMEOUT_S for slow starts)"});
  }
  try {
#if defined(USE_C10D_NCCL)
    if (device.is_cuda()) {
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      impl->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl->store, rank, world, opts);
      impl->backend = "nccl";
    }
#endif
    if (!impl->pg) {
#if RETORT_HAVE_GLOO
      // Collectives may wait on a slow peer (one rank's longer sampling) far longer than
      // the rendezvous: give them at least 30 minutes.
      auto opts = c10d::ProcessGroupGloo::Options::create(std::max(timeout, std::chrono::milliseconds(1800 * 1000)));
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname && *ifname) opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      else if (addr == "127.0.0.1" || addr == "localhost") opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      impl->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, rank, world, opts);
      impl->backend = "gloo";
#else
      throw Error(ErrorInfo{"this build has no Gloo backend for data parallel training", "dist", "Torch with the Gloo headers",
                            device.is_cuda() ? "a CUDA device without NCCL support compiled in" : "a CPU device",
                            "build against a Torch that ships gloo/ headers (and define USE_C10D_NCCL for NCCL)"});
#endif
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(ErrorInfo{"the data parallel process group could not be created", "rank " + std::to_string(rank) + " of " + std::to_string(world),
                          "a connected group", e.what(), kHint});
  }
  ctx->rank_ = rank;
  ctx->world_size_ = world;
  ctx->impl_ = impl;
  log_info("data parallel: rank " + std::to_string(rank) + " of " + std::to_string(world) + " over " + impl->backend + " (" + addr +
           ":" + std::to_string(port) + ")");
  // Only rank 0 reports progress; the others keep their warnings and errors.
  if (rank != 0 && log_level() < LogLevel::Warn) set_log_level(LogLevel::Warn);
  return *ctx;
}

void DistContext::broadcast(const std::vector<torch::Tensor>& tensors) const {
  if (!impl_ || world_size_ == 1) return;
  torch::NoGradGuard ng;
  // One flat buffer per (dtype, device): [sum of numel].
  std::map<std::pair<int, std::string>, std::vector<torch::Tensor>> groups;
  for (const auto& t : tensors) groups[{static_cast<int>(t.scalar_type()), t.device().str()}].push_back(t);
  for (auto& [key, ts] : groups) {
    std::vector<torch::Tensor> flat;
    for (const auto& t : ts) flat.push_back(t.detach().reshape({-1}));
    torch::Tensor buf = torch::cat(flat);
    impl_->broadcast(buf);
    int64_t off = 0;
    for (auto& t : ts) {
      t.detach().copy_(buf.narrow(0, off, t.numel()).view(t.sizes()));
      off += t.numel();
    }
  }
}

void DistContext::all_reduce_gradients(const std::vector<torch::Tensor>& params) const {
  if (!impl_ || world_size_ == 1) return;
  torch::NoGradGuard ng;
  std::map<std::pair<int, std::string>, std::vector<torch::Tensor>> groups;
  for (const auto& p : params) {
    if (!p.requires_grad()) continue;
    groups[{static_cast<int>(p.scalar_type()), p.device().str()}].push_back(p);
  }
  for (auto& [key, ps] : groups) {
    std::vector<torch::Tensor> flat;  // each [numel]
    for (const auto& p : ps) flat.push_back(p.grad().defined() ? p.grad().reshape({-1}) : torch::zeros({p.numel()}, p.options()));
    torch::Tensor buf = torch::cat(flat);  // [sum of numel]: one all-reduce for the whole model
    impl_->all_reduce(buf, c10d::ReduceOp::SUM);  // sync point
    int64_t off = 0;
    for (auto& p : ps) {
      auto slice = buf.narrow(0, off, p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(slice);
      else p.mutable_grad() = slice.clone();
      off += p.numel();
    }
  }
}

std::vector<double> DistContext::sum(std::vector<double> values) const {
  if (!impl_ || world_size_ == 1 || values.empty()) return values;
  torch::Tensor t = torch::tensor(values, torch::kDouble);  // [n]
  impl_->all_reduce(t, c10d::ReduceOp::SUM);  // sync point
  auto a = t.accessor<double, 1>();
  for (size_t i = 0; i < values.size(); ++i) values[i] = a[static_cast<int64_t>(i)];
  return values;
}

double DistContext::max(double value) const {
  if (!impl_ || world_size_ == 1) return value;
  torch::Tensor t = torch::tensor(std::vector<double>{value}, torch::kDouble);
  impl_->all_reduce(t, c10d::ReduceOp::MAX);  // sync point
  return t.item<double>();
}

std::vector<double> DistContext::all_gather(const std::vector<double>& local, std::vector<int64_t>* counts) const {
  if (!impl_ || world_size_ == 1) {
    if (counts) *counts = {static_cast<int64_t>(local.size())};
    return local;
  }
  // Lengths first, then one buffer where each rank fills its own slot and leaves zeros
  // elsewhere: the sum is the concatenation (x + 0 = x exactly, NaN included).
  std::vector<double> n(static_cast<size_t>(world_size_), 0.0);
  n[static_cast<size_t>(rank_)] = static_cast<double>(local.size());
  n = sum(n);
  std::vector<int64_t> c(n.size());
  int64_t total = 0, offset = 0;
  for (size_t r = 0; r < n.size(); ++r) {
    c[r] = static_cast<int64_t>(n[r]);
    if (static_cast<int>(r) < rank_) offset += c[r];
    total += c[r];
  }
  if (counts) *counts = c;
  if (total == 0) return {};
  torch::Tensor buf = torch::zeros({total}, torch::kDouble);  // [sum of lengths]
  if (!local.empty()) buf.narrow(0, offset, static_cast<int64_t>(local.size())).copy_(torch::tensor(local, torch::kDouble));
  impl_->all_reduce(buf, c10d::ReduceOp::SUM);  // sync point
  return std::vector<double>(buf.data_ptr<double>(), buf.data_ptr<double>() + total);
}

std::vector<std::string> DistContext::gather_to_main(const std::string& local) const {
  if (!impl_ || world_size_ == 1) return {local};
  // Keys are numbered per call: every rank makes the same calls in the same order.
  const std::string prefix = "retort/gather/" + std::to_string(impl_->gathers++) + "/";
  try {
    if (!is_main()) {
      impl_->store->set(prefix + std::to_string(rank_), std::vector<uint8_t>(local.begin(), local.end()));
      return {};
    }
    std::vector<std::string> out{local};
    for (int r = 1; r < world_size_; ++r) {
      const std::string key = prefix + std::to_string(r);
      std::vector<uint8_t> v = impl_->store->get(key);  // waits for rank r
      out.emplace_back(v.begin(), v.end());
      impl_->store->deleteKey(key);
    }
    return out;
  } catch (const std::exception& e) {
    throw Error(ErrorInfo{"a data parallel gather of log lines failed: another rank died or did not answer", "dist",
                          "every rank at the same gather", e.what(), "look at the other ranks' errors"});
  }
}

void DistContext::barrier() const {
  if (!impl_ || world_size_ == 1) return;
  // A one-element all-reduce: the same guarantee as barrier(), on every backend and version.
  torch::Tensor t = torch::zeros({1}, torch::kDouble);
  impl_->all_reduce(t, c10d::ReduceOp::SUM);
}

void DistContext::check_resume(int64_t saved_world_size, const std::string& checkpoint) const {
  if (saved_world_size == world_size_) return;
  throw Error(ErrorInfo{"the checkpoint was written by a run with another number of processes", checkpoint + "/trainer_state.json",
                        "world_size " + std::to_string(world_size_) + " (this run)", "world_size " + std::to_string(saved_world_size),
                        "resume with the same number of processes (retort launch -n " + std::to_string(saved_world_size) +
                            "), or start a new run_dir"});
}

}  // namespace retort

// In a unity file the sources after this one must not see this file's macros (src/CMakeLists.txt).
#undef RETORT_HAVE_GLOO
#ifdef RETORT_DEFINED_USE_C10D_GLOO
#undef USE_C10D_GLOO
#undef RETORT_DEFINED_USE_C10D_GLOO
#endif
