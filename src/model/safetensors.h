// safetensors — reading and writing the format, without Torch.
//
// The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length N, N bytes of a JSON object {"name": {"dtype", "shape", "data_offsets": [b, e]},
// "__metadata__": {str: str}}, then the data section, where each tensor's bytes lie at
// [b, e) relative to the section's start, row-major, little-endian. Writers pad the header
// with spaces so that the data section starts 8-byte aligned.
//
// Reading memory-maps the file and validates every header field before any byte of data is
// handed out: header length within the file, valid UTF-8 JSON object, known dtype, shape of
// non-negative integers whose byte size (without overflow) equals e - b, offsets in bounds,
// tensors neither overlapping nor leaving holes, the data section fully covered. A
// truncated or hostile file is refused with retort::Error naming the file and the reason.
// Only F32, BF16 and F16 tensors are accepted (what Qwen2-family checkpoints hold).
#pragma once

#include <cstddef>  // defines: size_t
#include <cstdint>  // defines: int64_t, uint64_t, uint8_t
#include <map>      // defines: std::map
#include <memory>   // defines: std::shared_ptr
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

namespace retort {

enum class StDtype { F32, BF16, F16 };

const char* st_dtype_name(StDtype d);  // "F32", "BF16", "F16"
size_t st_dtype_size(StDtype d);       // 4, 2, 2

struct StTensorInfo {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data section
  int64_t numel() const;
};

// The parsed, validated header of a safetensors buffer.
struct StHeader {
  std::vector<StTensorInfo> tensors;            // in file order of their data
  std::map<std::string, std::string> metadata;  // "__metadata__"
  uint64_t data_start = 0;                      // 8 + N
};

// Validates `size` bytes at `data` as a whole safetensors file; `where` (the file name)
// prefixes every error.
StHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& where);

// A memory-mapped, validated safetensors file. Copies share the mapping.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<StTensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const StTensorInfo* find(const std::string& name) const;  // nullptr when absent
  // The tensor's bytes (e - b of them), inside the mapping.
  const uint8_t* data(const StTensorInfo& t) const;

 private:
  struct Mapping;
  std::shared_ptr<Mapping> map_;
  std::string path_;
  StHeader header_;
  std::map<std::string, size_t> index_;
};

// One tensor to write: `nbytes` bytes at `data` (row-major, little-endian).
struct StTensorView {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Serialises tensors (sorted by name, as the reference writer does) with a space-padded
// header; throws when a view's nbytes disagrees with its shape.
std::string serialize_safetensors(const std::vector<StTensorView>& tensors,
                                  const std::map<std::string, std::string>& metadata);
// serialize_safetensors, written atomically to `path`.
void write_safetensors(const std::string& path, const std::vector<StTensorView>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace retort
