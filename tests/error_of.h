// What a test asks of a failure: the message of the retort::Error that `f` throws, or "" when
// it throws none.
#pragma once

#include <functional>  // defines: std::function
#include <string>      // defines: std::string

#include "common/error.h"  // defines: retort::Error

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const retort::Error& e) {
    return e.what();
  }
  return "";
}
