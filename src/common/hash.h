// FNV-1a, 64 bits: a stable hash of bytes (std::hash is not stable across standard
// libraries). Incremental: pass the previous value as `h` to hash a stream in pieces.
// Used for the synthetic data's split ownership and stream seeds, and for the pipeline's
// stage input fingerprints.
#pragma once

#include <cstdint>      // defines: uint64_t
#include <string_view>  // defines: std::string_view

namespace retort {

constexpr uint64_t kFnv1aOffset = 0xCBF29CE484222325ull;

inline uint64_t fnv1a(std::string_view s, uint64_t h = kFnv1aOffset) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  return h;
}

}  // namespace retort
