// Tool-call settings and observations (see tools.h).
#include "rollout/tools.h"

#include <algorithm>    // defines: std::min, std::max
#include <string_view>  // defines: std::string_view

#include "common/config.h"  // defines: ConfigBinder, Range

namespace retort {

void ToolOptions::bind(ConfigBinder& b) {
  b.field("enabled", enabled);
  b.choice("format", format, {"python", "qwen"});
  b.field("max_calls", max_calls, Range::at_least(0).up_to(1024));
  // 32: room for the delimiters and a status line with its detail, so that a cut body still says how the call ended.
  b.field("max_observation_tokens", max_observation_tokens, Range::at_least(32).up_to(1 << 20));
  b.field("max_tool_time_s", max_tool_time_s, Range::above(0).up_to(86400));
  b.field("limits", limits);
}

namespace {

// The longest prefix of `s` not longer than `n` bytes that ends on a UTF-8 character boundary.
size_t utf8_floor(const std::string& s, size_t n) {
  if (n >= s.size()) return s.size();
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // s[n] continues a character
  return n;
}

// The largest n in [0, hi] (on UTF-8 boundaries of `s`) with fits(n), given fits(0); by
// bisection, so about log2(hi) encodes of at most hi bytes. Token counts grow with the
// prefix length almost everywhere; where they do not, the answer still fits, it may only be
// a few bytes shorter than the longest that would.
template <class Fits>
size_t longest_prefix(const std::string& s, size_t hi, Fits fits) {
  size_t lo = 0;
  hi = utf8_floor(s, hi);
  if (fits(hi)) return hi;
  while (hi - lo > 1) {
    const size_t mid = utf8_floor(s, lo + (hi - lo) / 2);
    if (mid <= lo) break;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo;
}

// The smallest start in [0, s.size()] (on UTF-8 boundaries, preferring line starts) with
// fits(start), given fits(s.size()): the longest suffix that fits, by bisection.
template <class Fits>
size_t longest_suffix(const std::string& s, Fits fits) {
  size_t lo = 0, hi = s.size();  // fits(hi) holds
  if (fits(0)) return 0;
  while (hi - lo > 1) {
    size_t mid = utf8_floor(s, lo + (hi - lo) / 2);
    if (mid <= lo) mid = lo + 1;
    while (mid < hi && (static_cast<unsigned char>(s[mid]) & 0xC0) == 0x80) ++mid;
    if (mid >= hi) break;
    (fits(mid) ? hi : lo) = mid;
  }
  // Start at the next line when one begins inside the kept part (a traceback's whole lines).
  if (s[hi - 1] == '\n') return hi;
  const size_t nl = s.find('\n', hi);
  if (nl != std::string::npos && nl + 1 < s.size()) return nl + 1;
  return hi;
}

}  // namespace

Observation fit_observation(rewards::ToolFormat f, const std::string& status, const std::string& stdout_text,
                            const std::string& stderr_text, const std::string& detail, int64_t max_tokens,
                            const EncodeFn& encode) {
  const auto cap = static_cast<size_t>(std::max<int64_t>(0, max_tokens));
  Observation o;
  o.body = rewards::observation_body(status, stdout_text, stderr_text, detail, false);
  o.ids = encode(rewards::render_observation(f, o.body));
  if (o.ids.size() <= cap) return o;

  // Cut: a token holds at most a few dozen bytes, so no prefix longer than cap * 64 bytes can fit.
  o.truncated = true;
  const size_t max_bytes = cap * 64;
  const std::string& err = status == "ok" ? std::string() : stderr_text;
  auto ids_for = [&](const std::string& out, const std::string& e) {
    return encode(rewards::render_observation(f, rewards::observation_body(status, out, e, detail, true)));
  };
  std::string out_kept, err_kept = err;
  if (ids_for("", err).size() <= cap) {
    const size_t n = longest_prefix(stdout_text, std::min(stdout_text.size(), max_bytes),
                                    [&](size_t k) { return ids_for(stdout_text.substr(0, k), err).size() <= cap; });
    out_kept = stdout_text.substr(0, n);
  } else if (ids_for("", "").size() <= cap) {
    // The stderr tail alone is too long: keep its last lines that fit (where a traceback
    // names the error); no stdout.
    const size_t from = longest_suffix(err, [&](size_t k) { return ids_for("", err.substr(k)).size() <= cap; });
    err_kept = err.substr(from);
  } else {
    out_kept.clear();
    err_kept.clear();
  }
  o.body = rewards::observation_body(status, out_kept, err_kept, detail, true);
  o.ids = encode(rewards::render_observation(f, o.body));
  if (o.ids.size() > cap) o.ids.resize(cap);  // the delimiters and status line alone exceed the cap
  return o;
}

std::string observation_detail(const sandbox::Result& r) {
  if (!r.detail.empty()) return r.detail;
  if (r.status != sandbox::Status::RuntimeError) return "";
  if (r.signal != 0) return "killed by signal " + std::to_string(r.signal);
  return "exit code " + std::to_string(r.exit_code);
}

}  // namespace retort
