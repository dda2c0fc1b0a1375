// FNV-1a, 64 bits: a stable hash of bytes (std::hash is not stable across standard
// libraries). Incremental: pass the previous value as `h` to hash a stream in pieces.
// Used for the synthetic data's split ownership and stream seeds, and for the pipeline's
// stage input fingerprints. mix_seed derives sampling seeds.
#pragma once

#include <cstdint>      // defines: uint64_t, int64_t
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

// splitmix64 of (seed, a, b): a different, reproducible stream per (a, b), e.g. per GRPO
// step and sampling round, or per prompt row and sample.
inline uint64_t mix_seed(int64_t seed, int64_t a, int64_t b) {
  uint64_t z = static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(a) << 20) ^ static_cast<uint64_t>(b);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace retort
