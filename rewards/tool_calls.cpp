// Tool calls inside a reasoning chain: detection, observation text, read-back (see tool_calls.h).
//
// Everything here is a scan of the chain's text: the engine calls closed_tool_call after each
// sampled token that could close a call, so it looks only at the end of the text; find_tool_calls
// walks a finished chain once from the start.
#include "rewards/tool_calls.h"

#include <algorithm>  // defines: std::max, std::min
#include <array>      // defines: std::array

#include "common/error.h"  // defines: retort::Error

namespace retort::rewards {

namespace {

using sv = std::string_view;
constexpr size_t npos = sv::npos;

// python format delimiters
constexpr sv kPyOpen = "```python";    // then optional spaces and a newline
constexpr sv kPyClose = "\n```";       // a fence line of its own: followed by a newline or the end
constexpr sv kThinkClose = "</think>";
constexpr sv kPyObsOpen = "\n```output\n";
constexpr sv kPyObsClose = "\n```\n";
// qwen format delimiters
constexpr sv kQwOpen = "<tool_call>";
constexpr sv kQwClose = "</tool_call>";
constexpr sv kQwObsOpen = "<|im_end|>\n<|im_start|>user\n<tool_response>\n";
constexpr sv kQwObsClose = "\n</tool_response><|im_end|>\n<|im_start|>assistant\n";
constexpr sv kQwBodyEnd = "\n</tool_response>";

// The statuses a body's last line may carry (sandbox::status_name's values except ok, plus budget).
constexpr std::array<sv, 7> kStatuses = {"runtime_error", "compile_error", "time_limit", "memory_limit",
                                         "output_limit",  "sandbox_error", "budget"};
constexpr sv kTruncatedLine = "[truncated]";
// A failed call shows the end of its stderr (where a traceback names the error), at most this
// many bytes, cut at a line start: a runaway stderr must not crowd out the status line.
constexpr size_t kStderrTailBytes = 1000;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_hspace(char c) { return c == ' ' || c == '\t'; }

bool all_space(sv s) {
  for (char c : s)
    if (!is_space(c)) return false;
  return true;
}

sv strip_trailing_newlines(sv s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Position after `pos` skipping whitespace.
size_t skip_space(sv text, size_t pos) {
  while (pos < text.size() && is_space(text[pos])) ++pos;
  return pos;
}

// The end of a python call's opening line ("```python" + spaces + "\n") starting at `open`, or
// npos when the fence's tag is longer ("```python3" is not the tool's tag) or the line is not done.
size_t py_open_end(sv text, size_t open) {
  size_t p = open + kPyOpen.size();
  while (p < text.size() && is_hspace(text[p])) ++p;
  if (p < text.size() && text[p] == '\n') return p + 1;
  return npos;
}

// The first closing fence line at or after `from`: "\n```" followed by optional spaces and a
// newline, or by the end of the text. Returns the position of its '\n'; npos when none.
size_t py_close(sv text, size_t from) {
  for (size_t p = text.find(kPyClose, from); p != npos; p = text.find(kPyClose, p + 1)) {
    size_t q = p + kPyClose.size();
    while (q < text.size() && is_hspace(text[q])) ++q;
    if (q == text.size() || text[q] == '\n') return p;
  }
  return npos;
}

// The code of a qwen call's JSON: {"name": ..., "arguments": {"code": "..."}}; "arguments" may
// also be a JSON string holding that object (OpenAI style). "" when malformed or without "code".
std::string qwen_code(sv json_text) {
  nlohmann::json j = nlohmann::json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return "";
  auto args = j.find("arguments");
  if (args == j.end()) args = j.find("parameters");
  if (args == j.end()) return "";
  nlohmann::json a = *args;
  if (a.is_string()) a = nlohmann::json::parse(a.get<std::string>(), nullptr, /*allow_exceptions=*/false);
  if (!a.is_object()) return "";
  auto code = a.find("code");
  if (code == a.end() || !code->is_string()) return "";
  return code->get<std::string>();
}

// Status and truncation read back from a body's last lines.
void read_status(sv body, std::string& status, bool& truncated) {
  status = "ok";
  truncated = false;
  size_t nl = body.rfind('\n');
  sv last = nl == npos ? body : body.substr(nl + 1);
  sv before = nl == npos ? sv() : body.substr(0, nl);
  if (last.size() >= 3 && last.front() == '[' && last.back() == ']') {
    sv inner = last.substr(1, last.size() - 2);
    sv name = inner.substr(0, inner.find(':'));
    for (sv s : kStatuses)
      if (name == s && (name.size() == inner.size() || inner.substr(name.size(), 2) == ": ")) {
        status = std::string(s);
        size_t nl2 = before.rfind('\n');
        last = nl2 == npos ? before : before.substr(nl2 + 1);
        break;
      }
  }
  truncated = last == kTruncatedLine;
}

}  // namespace

// ---------------------------------------------------------------------------------------

ToolFormat tool_format_from_name(const std::string& name, const std::string& where) {
  if (name == "python") return ToolFormat::Python;
  if (name == "qwen") return ToolFormat::Qwen;
  throw Error(ErrorInfo{"unknown tool-call format", where, "python | qwen", quote_for_error(name),
                        "\"python\" pauses on a ```python block inside <think>; \"qwen\" on <tool_call>{json}</tool_call>"});
}

const char* tool_format_name(ToolFormat f) { return f == ToolFormat::Python ? "python" : "qwen"; }

// ---------------------------------------------------------------------------------------
// The engine's test

std::optional<std::string> closed_tool_call(std::string_view text, ToolFormat f) {
  if (f == ToolFormat::Python) {
    // The last opening fence; the call must be closed and nothing but whitespace may follow.
    size_t open = text.rfind(kPyOpen);
    if (open == npos) return std::nullopt;
    size_t body = py_open_end(text, open);
    if (body == npos) return std::nullopt;
    // "\n```" right after the opening line closes an empty program: search from body - 1.
    size_t close = py_close(text, body - 1);
    if (close == npos || !all_space(text.substr(close + kPyClose.size()))) return std::nullopt;
    // A code answer after the reasoning is not a call.
    size_t think_end = text.find(kThinkClose);
    if (think_end != npos && think_end < open) return std::nullopt;
    size_t code_end = std::max(close, body);
    return std::string(text.substr(body, code_end - body));
  }
  size_t close = text.rfind(kQwClose);
  if (close == npos || !all_space(text.substr(close + kQwClose.size()))) return std::nullopt;
  size_t open = text.rfind(kQwOpen, close);
  if (open == npos) return std::string();  // a close without an open: a malformed call
  return qwen_code(text.substr(open + kQwOpen.size(), close - open - kQwOpen.size()));
}

std::string render_observation(ToolFormat f, const std::string& body) {
  if (f == ToolFormat::Python) return std::string(kPyObsOpen) + body + std::string(kPyObsClose);
  return std::string(kQwObsOpen) + body + std::string(kQwObsClose);
}

// body := stdout (trailing newlines dropped)
//         [stderr tail]        only when status != ok
//         ["[truncated]"]      when cut
//         ["[status: detail]"] only when status != ok ("[status]" when detail is empty)
// Empty parts leave no empty line.
std::string observation_body(const std::string& status, const std::string& stdout_text, const std::string& stderr_text,
                             const std::string& detail, bool truncated) {
  std::string out;
  auto line = [&out](sv s) {
    if (!out.empty()) out += '\n';
    out.append(s.data(), s.size());
  };
  sv so = strip_trailing_newlines(stdout_text);
  if (!so.empty()) line(so);
  bool ok = status == "ok";
  if (!ok) {
    sv se = strip_trailing_newlines(stderr_text);
    if (se.size() > kStderrTailBytes) {
      se = se.substr(se.size() - kStderrTailBytes);
      size_t nl = se.find('\n');
      if (nl != npos && nl + 1 < se.size()) se = se.substr(nl + 1);
    }
    if (!se.empty()) line(se);
  }
  if (truncated) line(kTruncatedLine);
  if (!ok) line("[" + status + (detail.empty() ? "" : ": " + detail) + "]");
  return out;
}

// ---------------------------------------------------------------------------------------
// Read-back of a finished chain

std::vector<ToolCallSpan> find_tool_calls(std::string_view text, ToolFormat f) {
  std::vector<ToolCallSpan> calls;
  size_t think_end = f == ToolFormat::Python ? text.find(kThinkClose) : npos;
  size_t pos = 0;
  while (pos < text.size()) {
    ToolCallSpan c;
    size_t after = 0;  // where the observation would start
    if (f == ToolFormat::Python) {
      size_t open = text.find(kPyOpen, pos);
      if (open == npos || (think_end != npos && open > think_end)) break;
      size_t body = py_open_end(text, open);
      if (body == npos) {
        pos = open + kPyOpen.size();
        continue;
      }
      size_t close = py_close(text, body - 1);
      if (close == npos) break;  // an unclosed block (cut at the length limit) is not a call
      c.code = std::string(text.substr(body, std::max(close, body) - body));
      c.call_begin = open;
      c.call_end = close + kPyClose.size();
      after = c.call_end;
      // The rendered observation starts with "\n"; a newline the model wrote after the fence
      // (a "```\n" token) sits before it.
      size_t q = skip_space(text, after);
      sv open_fence = kPyObsOpen.substr(1);  // "```output\n"
      if (text.substr(q, open_fence.size()) == open_fence && q > after && text[q - 1] == '\n') {
        c.answered = true;
        c.obs_begin = q - 1;
        size_t b = q + open_fence.size();
        size_t e = py_close(text, b - 1);  // the first fence line closes the block
        if (e == npos) {                   // cut by the length limit: the rest is the body
          c.body = std::string(text.substr(b));
          c.obs_end = text.size();
        } else {
          c.body = std::string(text.substr(b, std::max(e, b) - b));
          c.obs_end = std::min(text.size(), e + kPyObsClose.size());
        }
      }
    } else {
      size_t open = text.find(kQwOpen, pos);
      if (open == npos) break;
      size_t close = text.find(kQwClose, open + kQwOpen.size());
      if (close == npos) break;
      // A second open before the close: the first one was never closed.
      size_t reopen = text.find(kQwOpen, open + kQwOpen.size());
      if (reopen != npos && reopen < close) {
        pos = reopen;
        continue;
      }
      c.code = qwen_code(text.substr(open + kQwOpen.size(), close - open - kQwOpen.size()));
      c.call_begin = open;
      c.call_end = close + kQwClose.size();
      after = c.call_end;
      size_t q = skip_space(text, after);
      if (text.substr(q, kQwObsOpen.size()) == kQwObsOpen) {
        c.answered = true;
        c.obs_begin = q;
        size_t b = q + kQwObsOpen.size();
        size_t e = text.find(kQwBodyEnd, b);
        if (e == npos) {
          c.body = std::string(text.substr(b));
          c.obs_end = text.size();
        } else {
          c.body = std::string(text.substr(b, e - b));
          // The closing delimiters as far as they are present (a length cut may end them early).
          size_t k = 0;
          while (e + k < text.size() && k < kQwObsClose.size() && text[e + k] == kQwObsClose[k]) ++k;
          c.obs_end = e + k;
        }
      }
    }
    if (c.answered) {
      read_status(c.body, c.status, c.truncated);
      pos = c.obs_end;
    } else {
      pos = c.call_end;
    }
    calls.push_back(std::move(c));
  }
  return calls;
}

nlohmann::json to_json(const ToolCallRecord& r) {
  return {{"code", r.code},
          {"observation", r.observation},
          {"status", r.status},
          {"wall_s", r.wall_s},
          {"peak_memory_kb", r.peak_memory_kb},
          {"obs_start", r.obs_start},
          {"obs_tokens", r.obs_tokens},
          {"truncated", r.truncated}};
}

}  // namespace retort::rewards
