// Warm workers: per running-job slot, one pre-started Python interpreter inside a full
// sandbox (namespaces, seccomp, unprivileged uid, slot cgroup) that forks one child per job.
// A job then costs a fork instead of a sandbox set-up plus an interpreter start-up.
#pragma once

#include <functional>  // defines: std::function
#include <memory>      // defines: std::shared_ptr

#include <boost/asio/io_context.hpp>  // defines: boost::asio::io_context

#include "sandbox/executor.h"  // defines: Job, Result
#include "sandbox/step.h"      // defines: Strand

namespace retort::sandbox {

// A job running in a warm worker; cancel() kills it (from the job's strand).
class WarmLease {
 public:
  virtual ~WarmLease() = default;
  virtual void cancel() = 0;
};

class WarmPool {
 public:
  WarmPool(boost::asio::io_context& io, bool full_isolation, int slots, int instance);
  ~WarmPool();  // kills every worker
  // Runs `job` (a python job) in the worker of `slot`, starting the worker when needed;
  // `done` is called once on `strand`. nullptr when warm mode cannot serve it (the caller
  // then runs the job in a fresh sandbox).
  std::shared_ptr<WarmLease> run(const Job& job, Strand& strand, int slot, std::function<void(Result)> done);

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace retort::sandbox
