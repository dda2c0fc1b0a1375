// Warm workers (see warm.h).
#include "sandbox/warm.h"

namespace retort::sandbox {

class WarmPool::Impl {};

WarmPool::WarmPool(boost::asio::io_context&, bool, int, int) : impl_(std::make_unique<Impl>()) {}
WarmPool::~WarmPool() = default;
std::shared_ptr<WarmLease> WarmPool::run(const Job&, Strand&, int, std::function<void(Result)>) { return nullptr; }

}  // namespace retort::sandbox
