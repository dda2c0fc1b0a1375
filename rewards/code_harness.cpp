// The Python source of the assert-test harness (code_harness.py; see code_harness.h for its design).
#include "rewards/code_harness.h"

namespace retort::rewards {

const char* assert_harness_source() {
  // code_harness.py, embedded at build time (rewards/CMakeLists.txt).
  static const char* const kSource =
#include "code_harness.py.inc"
      ;
  return kSource;
}

}  // namespace retort::rewards
