// safetensors reader (memory-mapped, validated) and writer; see safetensors.h.
#include "model/safetensors.h"

#include <fcntl.h>     // defines: open
#include <sys/mman.h>  // defines: mmap, munmap
#include <sys/stat.h>  // defines: fstat
#include <unistd.h>    // defines: close

#include <algorithm>  // defines: std::sort
#include <cerrno>     // defines: errno
#include <cstring>    // defines: std::memcpy, std::strerror

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "common/config.h"  // defines: write_file_atomic
#include "common/error.h"   // defines: retort::Error

namespace retort {

namespace {

using json = nlohmann::json;

// The reference implementation refuses headers above 100 MB; so do we.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

[[noreturn]] void refuse(const std::string& where, const std::string& what, const std::string& expected = "",
                         const std::string& got = "") {
  throw Error(ErrorInfo{"not a valid safetensors file: " + what, where, expected, got,
                        "the file is truncated or corrupt; re-download or re-save it"});
}

bool parse_dtype(const std::string& s, StDtype* out) {
  if (s == "F32") *out = StDtype::F32;
  else if (s == "BF16") *out = StDtype::BF16;
  else if (s == "F16") *out = StDtype::F16;
  else return false;
  return true;
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

const char* st_dtype_name(StDtype d) {
  switch (d) {
    case StDtype::F32: return "F32";
    case StDtype::BF16: return "BF16";
    case StDtype::F16: return "F16";
  }
  return "?";
}

size_t st_dtype_size(StDtype d) { return d == StDtype::F32 ? 4 : 2; }

int64_t StTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

// ---- parsing -------------------------------------------------------------------------

StHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& where) {
  if (size < 8) refuse(where, "shorter than the 8-byte header length", "at least 8 bytes", std::to_string(size) + " bytes");
  uint64_t n = read_le64(data);
  if (n > kMaxHeaderBytes) refuse(where, "header length too large", "at most 100 MB", std::to_string(n) + " bytes");
  if (n > size - 8) {
    refuse(where, "header length runs past the end of the file", "at most " + std::to_string(size - 8) + " bytes",
           std::to_string(n) + " bytes");
  }
  if (n < 2 || data[8] != '{') refuse(where, "the header is not a JSON object", "'{' at byte 8");
  json doc;
  try {
    // nlohmann rejects invalid UTF-8 with a parse error; no exceptions escape as crashes.
    doc = json::parse(reinterpret_cast<const char*>(data + 8), reinterpret_cast<const char*>(data + 8 + n));
  } catch (const json::exception& e) {
    refuse(where, std::string("the header is not valid JSON: ") + e.what());
  }
  if (!doc.is_object()) refuse(where, "the header is not a JSON object", "an object", doc.type_name());

  StHeader h;
  h.data_start = 8 + n;
  const uint64_t data_size = size - h.data_start;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) refuse(where, "__metadata__ is not an object", "an object of strings", v.type_name());
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) refuse(where, "__metadata__ value '" + m.key() + "' is not a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tw = "tensor '" + quote_for_error(name, 120) + "'";
    if (!v.is_object()) refuse(where, tw + " is not an object");
    for (auto f = v.begin(); f != v.end(); ++f) {
      if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets") {
        refuse(where, tw + " has an unknown field '" + quote_for_error(f.key()) + "'", "dtype, shape, data_offsets");
      }
    }
    StTensorInfo t;
    t.name = name;
    auto d = v.find("dtype");
    if (d == v.end() || !d->is_string()) refuse(where, tw + " lacks a string dtype");
    if (!parse_dtype(d->get<std::string>(), &t.dtype)) {
      refuse(where, tw + " has an unsupported dtype", "F32, BF16 or F16", quote_for_error(d->get<std::string>()));
    }
    auto s = v.find("shape");
    if (s == v.end() || !s->is_array()) refuse(where, tw + " lacks a shape array");
    if (s->size() > 16) refuse(where, tw + " has too many dimensions", "at most 16", std::to_string(s->size()));
    // Byte size with overflow checks: every factor is bounded by the data size.
    uint64_t bytes = st_dtype_size(t.dtype);
    bool zero = false;
    for (const auto& dim : *s) {
      if (!dim.is_number_unsigned() && !(dim.is_number_integer() && dim.get<int64_t>() >= 0)) {
        refuse(where, tw + " has a shape entry that is not a non-negative integer", "", quote_for_error(dim.dump()));
      }
      uint64_t x = dim.get<uint64_t>();
      if (x > static_cast<uint64_t>(INT64_MAX)) refuse(where, tw + " has a dimension too large");
      t.shape.push_back(static_cast<int64_t>(x));
      if (x == 0) zero = true;
      if (!zero && x > data_size) refuse(where, tw + " has a dimension larger than the data section");
      if (!zero) {
        if (x != 0 && bytes > data_size / x + 1) refuse(where, tw + " has a shape larger than the data section");
        bytes *= x;
      }
    }
    if (zero) bytes = 0;
    auto o = v.find("data_offsets");
    if (o == v.end() || !o->is_array() || o->size() != 2 || !(*o)[0].is_number_unsigned() ||
        !(*o)[1].is_number_unsigned()) {
      refuse(where, tw + " lacks data_offsets [begin, end] of non-negative integers");
    }
    t.begin = (*o)[0].get<uint64_t>();
    t.end = (*o)[1].get<uint64_t>();
    if (t.begin > t.end) refuse(where, tw + " has data_offsets with begin after end");
    if (t.end > data_size) {
      refuse(where, tw + " has data_offsets past the end of the file",
             "end <= " + std::to_string(data_size), std::to_string(t.end));
    }
    if (t.end - t.begin != bytes) {
      refuse(where, tw + " has a byte size that does not match its shape and dtype", std::to_string(bytes) + " bytes",
             std::to_string(t.end - t.begin) + " bytes");
    }
    h.tensors.push_back(std::move(t));
  }
  // Tensors must tile the data section exactly: no overlaps, no holes, nothing after.
  std::sort(h.tensors.begin(), h.tensors.end(), [](const StTensorInfo& a, const StTensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  for (const auto& t : h.tensors) {
    if (t.begin < pos) refuse(where, "tensor '" + quote_for_error(t.name) + "' overlaps the tensor before it");
    if (t.begin > pos) refuse(where, "a gap in the data section before tensor '" + quote_for_error(t.name) + "'");
    pos = t.end;
  }
  if (pos != data_size) {
    refuse(where, "the data section's size does not match the tensors", std::to_string(pos) + " bytes",
           std::to_string(data_size) + " bytes");
  }
  return h;
}

// ---- memory-mapped file --------------------------------------------------------------

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr != nullptr && addr != MAP_FAILED) munmap(addr, size);
  }
};

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw Error(ErrorInfo{std::string("cannot open safetensors file: ") + std::strerror(errno), path, "", "",
                          "check the path"});
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorInfo{"not a regular file", path, "a safetensors file", "", ""});
  }
  SafetensorsFile f;
  f.path_ = path;
  f.map_ = std::make_shared<Mapping>();
  f.map_->size = static_cast<size_t>(st.st_size);
  static const uint8_t kEmpty[1] = {0};
  const uint8_t* base = kEmpty;
  if (f.map_->size > 0) {
    f.map_->addr = mmap(nullptr, f.map_->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f.map_->addr == MAP_FAILED) {
      ::close(fd);
      throw Error(ErrorInfo{std::string("cannot map safetensors file: ") + std::strerror(errno), path, "", "", ""});
    }
    base = static_cast<const uint8_t*>(f.map_->addr);
  }
  ::close(fd);
  f.header_ = parse_safetensors(base, f.map_->size, path);
  for (size_t i = 0; i < f.header_.tensors.size(); ++i) f.index_[f.header_.tensors[i].name] = i;
  return f;
}

const StTensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

const uint8_t* SafetensorsFile::data(const StTensorInfo& t) const {
  return static_cast<const uint8_t*>(map_->addr) + header_.data_start + t.begin;
}

// ---- writing -------------------------------------------------------------------------

std::string serialize_safetensors(const std::vector<StTensorView>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  std::vector<const StTensorView*> order;
  for (const auto& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const StTensorView* a, const StTensorView* b) { return a->name < b->name; });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t pos = 0;
  for (const StTensorView* t : order) {
    uint64_t expect = st_dtype_size(t->dtype);
    for (int64_t d : t->shape) expect *= static_cast<uint64_t>(d);
    if (expect != t->nbytes) {
      throw Error(ErrorInfo{"tensor byte size does not match its shape", "safetensors writer: " + t->name,
                            std::to_string(expect) + " bytes", std::to_string(t->nbytes) + " bytes", ""});
    }
    if (t->name == "__metadata__" || header.contains(t->name)) {
      throw Error(ErrorInfo{"duplicate or reserved tensor name", "safetensors writer", "unique names", t->name, ""});
    }
    header[t->name] = {{"dtype", st_dtype_name(t->dtype)}, {"shape", t->shape}, {"data_offsets", {pos, pos + t->nbytes}}};
    pos += t->nbytes;
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');  // the data section starts 8-byte aligned
  std::string out;
  out.reserve(8 + h.size() + pos);
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += h;
  for (const StTensorView* t : order) out.append(static_cast<const char*>(t->data), t->nbytes);
  return out;
}

void write_safetensors(const std::string& path, const std::vector<StTensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, serialize_safetensors(tensors, metadata));
}

}  // namespace retort
