// Torch runtime settings: threads from config, device resolution.
#include <catch2/catch.hpp>

#include "common/error.h"
#include "common/platform.h"
#include "common/runtime.h"

TEST_CASE("runtime sets intra-op threads to the core count by default", "[unit]") {
  retort::RuntimeConfig cfg;
  cfg.device = "cpu";
  std::string desc = retort::apply_runtime(cfg);
  CHECK(at::get_num_threads() == retort::cpu_count());
  CHECK(desc.find("intra-op threads") != std::string::npos);
  cfg.threads = 1;
  retort::apply_runtime(cfg);
  CHECK(at::get_num_threads() == 1);
  CHECK_THROWS_AS(retort::resolve_device("tpu"), retort::Error);
}
