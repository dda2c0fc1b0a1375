// Executor: interim implementation that answers every job with SandboxError while the pool
// is built; the interface in executor.h is final.
#include "sandbox/executor.h"

#include "common/error.h"     // defines: retort::Error
#include "common/platform.h"  // defines: cpu_count

namespace retort::sandbox {

class Executor::Impl {
 public:
  int workers = 1;
  std::string report = "not implemented";
};

Executor::Executor(const ExecutorConfig& cfg) : impl_(std::make_unique<Impl>()) {
  impl_->workers = cfg.workers > 0 ? cfg.workers : cpu_count();
}
Executor::~Executor() = default;

std::future<Result> Executor::submit(Job) {
  std::promise<Result> p;
  Result r;
  r.detail = "the executor pool is not built yet";
  p.set_value(r);
  return p.get_future();
}
void Executor::cancel_all() {}
void Executor::shutdown() {}
int Executor::workers() const { return impl_->workers; }
const std::string& Executor::host_report() const { return impl_->report; }

int run_jobs_jsonl(std::istream&, std::ostream&, const ExecutorConfig&) {
  throw Error("`retort sandbox run` is not implemented yet", "sandbox");
}

}  // namespace retort::sandbox
