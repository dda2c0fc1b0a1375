// Extraction of answers and code from completions (see extract.h).
#include "rewards/extract.h"

#include <algorithm>  // defines: std::min
#include <cctype>     // defines: std::isdigit, std::tolower
#include <vector>     // defines: std::vector

namespace retort::rewards {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Case-insensitive search for `needle` (lower-case ASCII) starting at `from`; npos if absent.
size_t find_ci(std::string_view hay, std::string_view needle, size_t from = 0) {
  if (needle.size() > hay.size()) return std::string_view::npos;
  for (size_t i = from; i + needle.size() <= hay.size(); ++i) {
    size_t k = 0;
    while (k < needle.size() && std::tolower(static_cast<unsigned char>(hay[i + k])) == needle[k]) ++k;
    if (k == needle.size()) return i;
  }
  return std::string_view::npos;
}

// Given `open` at text[pos] == '{', the index one past its matching '}', or npos.
size_t match_brace(std::string_view text, size_t pos) {
  int depth = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {  // \{ and \} are literal braces, not grouping
      ++i;
      continue;
    }
    if (c == '{') ++depth;
    if (c == '}' && --depth == 0) return i + 1;
  }
  return std::string_view::npos;
}

}  // namespace

// ---------------------------------------------------------------------------------------

ThinkSplit split_think(std::string_view completion, std::string_view prompt) {
  static constexpr std::string_view kOpen = "<think>", kClose = "</think>";
  ThinkSplit out;
  size_t open = completion.find(kOpen);
  size_t close = completion.find(kClose);
  // A prompt that ends inside an open think block (R1-Distill: "...<｜Assistant｜><think>\n").
  size_t p_open = prompt.rfind(kOpen);
  bool prompt_open = p_open != std::string_view::npos && prompt.find(kClose, p_open) == std::string_view::npos;
  out.opened = prompt_open || (open != std::string_view::npos && (close == std::string_view::npos || open < close));
  if (close != std::string_view::npos) {
    out.closed = true;
    out.opened = true;
    size_t start = (open != std::string_view::npos && open < close) ? open + kOpen.size() : 0;
    out.reasoning = completion.substr(start, close - start);
    out.answer = completion.substr(close + kClose.size());
    return out;
  }
  if (out.opened) {
    size_t start = open != std::string_view::npos ? open + kOpen.size() : 0;
    out.reasoning = completion.substr(start);
    out.answer = completion.substr(completion.size());
    return out;
  }
  out.answer = completion;
  return out;
}

std::optional<std::string> last_boxed(std::string_view text) {
  // The last occurrence of any of the box commands wins.
  static constexpr std::string_view kCommands[] = {"\\boxed", "\\fbox", "\\framebox"};
  size_t best = std::string_view::npos, best_len = 0;
  for (std::string_view cmd : kCommands) {
    size_t from = text.size();
    while (true) {
      size_t p = text.rfind(cmd, from);
      if (p == std::string_view::npos) break;
      size_t after = p + cmd.size();
      // A longer command name (\boxedfoo) is not a box.
      if (after < text.size() && std::isalpha(static_cast<unsigned char>(text[after]))) {
        if (p == 0) break;
        from = p - 1;
        continue;
      }
      if (best == std::string_view::npos || p > best) best = p, best_len = cmd.size();
      break;
    }
  }
  if (best == std::string_view::npos) return std::nullopt;
  size_t i = best + best_len;
  if (text.substr(best, best_len) == "\\framebox" && i < text.size() && text[i] == '[') {  // \framebox[w]{..}
    size_t close = text.find(']', i);
    if (close == std::string_view::npos) return std::nullopt;
    i = close + 1;
  }
  while (i < text.size() && is_space(text[i])) ++i;
  if (i >= text.size()) return std::nullopt;
  if (text[i] == '{') {
    size_t end = match_brace(text, i);
    if (end == std::string_view::npos) return std::nullopt;
    return std::string(trim(text.substr(i + 1, end - i - 2)));
  }
  // `\boxed 5`: one token, up to whitespace, '$' or the end.
  size_t j = i;
  while (j < text.size() && !is_space(text[j]) && text[j] != '$') ++j;
  std::string_view tok = text.substr(i, j - i);
  while (!tok.empty() && (tok.back() == '.' || tok.back() == ',')) tok.remove_suffix(1);
  if (tok.empty()) return std::nullopt;
  return std::string(tok);
}

std::optional<std::string> answer_tag(std::string_view text) {
  size_t open = text.rfind("<answer>");
  if (open == std::string_view::npos) return std::nullopt;
  size_t start = open + 8;
  size_t close = text.find("</answer>", start);
  if (close == std::string_view::npos) return std::nullopt;
  return std::string(trim(text.substr(start, close - start)));
}

std::optional<std::string> gsm8k_answer(std::string_view text) {
  size_t p = text.rfind("####");
  if (p == std::string_view::npos) return std::nullopt;
  size_t start = p + 4;
  size_t end = text.find('\n', start);
  std::string_view a = trim(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
  if (a.empty()) return std::nullopt;
  return std::string(a);
}

std::optional<std::string> answer_is(std::string_view text) {
  static constexpr std::string_view kPhrase = "answer is";
  // The last occurrence: scan forward, keep the last (find_ci is linear per start; bounded by
  // checking occurrences of the first letter only through find).
  size_t last = std::string_view::npos;
  for (size_t p = find_ci(text, kPhrase); p != std::string_view::npos; p = find_ci(text, kPhrase, p + 1)) last = p;
  if (last == std::string_view::npos) return std::nullopt;
  size_t i = last + kPhrase.size();
  while (i < text.size() && (is_space(text[i]) || text[i] == ':')) ++i;
  size_t end = i;
  int depth = 0;
  while (end < text.size()) {
    char c = text[end];
    if (c == '\n') break;
    if (c == '{' || c == '(' || c == '[') ++depth;
    if (c == '}' || c == ')' || c == ']') --depth;
    if (c == '.' && depth <= 0 && (end + 1 == text.size() || is_space(text[end + 1]))) break;
    ++end;
  }
  std::string_view a = trim(text.substr(i, end - i));
  // Drop $...$ and \( \) math delimiters around the answer.
  while (a.size() >= 2 && a.front() == '$' && a.back() == '$') a = trim(a.substr(1, a.size() - 2));
  if (a.size() >= 4 && a.substr(0, 2) == "\\(" && a.substr(a.size() - 2) == "\\)") a = trim(a.substr(2, a.size() - 4));
  if (a.empty()) return std::nullopt;
  // "the answer is \boxed{5}" — the box content.
  if (auto b = last_boxed(a)) return b;
  return std::string(a);
}

std::optional<std::string> last_number(std::string_view text) {
  // Scan backwards to the last digit, then extend to the number's start.
  size_t end = text.size();
  while (end > 0 && !std::isdigit(static_cast<unsigned char>(text[end - 1]))) --end;
  if (end == 0) return std::nullopt;
  size_t start = end;
  while (start > 0) {
    char c = text[start - 1];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      --start;
    } else if ((c == '.' || c == ',' || c == '/') && start >= 2 &&
               std::isdigit(static_cast<unsigned char>(text[start - 2]))) {
      --start;
    } else {
      break;
    }
  }
  if (start > 0 && text[start - 1] == '-') --start;
  // Digits inside a word ("AZYUK2A") are not a number: look further back.
  if (start > 0 && std::isalpha(static_cast<unsigned char>(text[start - 1]))) return last_number(text.substr(0, start));
  if (start > 0 && text[start - 1] == '.') --start;  // ".4"
  return std::string(text.substr(start, end - start));
}

namespace {

// Whether the text between two answers only joins them: spaces, punctuation, math delimiters,
// \quad, \text{ and }, "and", "or" ("\boxed{1} and \boxed{2}", "$1$, $2$ or $3$").
bool only_connective(std::string_view between) {
  if (between.size() > 64) return false;
  std::string word;
  auto word_ok = [&] {
    bool ok = word.empty() || word == "and" || word == "or" || word == "text" || word == "quad" || word == "qquad" ||
              word == "textrm" || word == "mbox";
    word.clear();
    return ok;
  };
  for (char c : between) {
    if (std::isalpha(static_cast<unsigned char>(c))) {
      word.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
      continue;
    }
    if (!word_ok()) return false;
    if (!(is_space(c) || c == '$' || c == ',' || c == ';' || c == '.' || c == '\\' || c == '(' || c == ')' ||
          c == '[' || c == ']' || c == '{' || c == '}' || c == '~' || c == '&')) {
      return false;
    }
  }
  return word_ok();
}

struct Span {
  size_t start, end;  // of the whole span, delimiters included
  std::string content;
};

// Every \boxed{...} (balanced), in order.
std::vector<Span> boxes(std::string_view text) {
  std::vector<Span> out;
  size_t p = 0;
  while ((p = text.find("\\boxed", p)) != std::string_view::npos) {
    size_t i = p + 6;
    while (i < text.size() && is_space(text[i])) ++i;
    if (i < text.size() && text[i] == '{') {
      size_t end = match_brace(text, i);
      if (end == std::string_view::npos) break;
      out.push_back({p, end, std::string(trim(text.substr(i + 1, end - i - 2)))});
      p = end;
    } else {
      p += 6;
    }
  }
  return out;
}

// Every math span: $$..$$, $..$, \[..\], \(..\), in order ("\$" is a dollar sign).
std::vector<Span> math_spans(std::string_view text) {
  std::vector<Span> out;
  size_t i = 0;
  while (i < text.size()) {
    std::string_view open, close;
    if (text.compare(i, 2, "$$") == 0) open = close = "$$";
    else if (text[i] == '$' && (i == 0 || text[i - 1] != '\\')) open = close = "$";
    else if (text.compare(i, 2, "\\[") == 0) open = "\\[", close = "\\]";
    else if (text.compare(i, 2, "\\(") == 0) open = "\\(", close = "\\)";
    if (open.empty()) {
      ++i;
      continue;
    }
    size_t from = i + open.size(), end = from;
    while (true) {
      end = text.find(close, end);
      if (end == std::string_view::npos || close != "$" || text[end - 1] != '\\') break;
      ++end;  // an escaped dollar inside
    }
    if (end == std::string_view::npos) break;
    std::string_view inner = trim(text.substr(from, end - from));
    // Inline math ($..$, \(..\)) stays on one line; display math may span lines.
    bool inline_math = open == "$" || open == "\\(";
    if (inline_math && text.substr(from, end - from).find('\n') != std::string_view::npos) {
      i = end + close.size();
      continue;
    }
    if (!inner.empty()) out.push_back({i, end + close.size(), std::string(inner)});
    i = end + close.size();
  }
  return out;
}

// The last span, joined with the spans before it that only a connective separates
// ("\boxed{2}, \boxed{3}" is the list "2, 3").
std::string join_trailing(std::string_view text, const std::vector<Span>& spans) {
  size_t first = spans.size() - 1;
  while (first > 0 && only_connective(text.substr(spans[first - 1].end, spans[first].start - spans[first - 1].end)))
    --first;
  std::string out;
  for (size_t k = first; k < spans.size(); ++k) out += (out.empty() ? "" : ", ") + spans[k].content;
  return out;
}

// A short text that is itself an answer: no math delimiters, no word of three letters or more
// outside a LaTeX command ("-5", "7,425,000", "\frac{10}{9}", "x = 3").
bool bare_answer(std::string_view t) {
  if (t.empty() || t.size() > 200 || t.find('$') != std::string_view::npos) return false;
  size_t run = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    if (std::isalpha(static_cast<unsigned char>(t[i]))) {
      if (run == 0 && i > 0 && t[i - 1] == '\\') {  // a command name: skip it
        while (i + 1 < t.size() && std::isalpha(static_cast<unsigned char>(t[i + 1]))) ++i;
        continue;
      }
      if (++run >= 3) return false;
    } else {
      run = 0;
    }
  }
  return true;
}

}  // namespace

ExtractedAnswer extract_answer(std::string_view text, bool allow_last_number) {
  if (auto a = last_boxed(text)) {
    // Several boxes that end the text, joined only by "and", commas or spacing, are one list.
    std::vector<Span> b = boxes(text);
    if (b.size() > 1 && b.back().content == *a && trim(text.substr(b.back().end)).size() <= 64)
      return {join_trailing(text, b), "boxed"};
    return {std::move(*a), "boxed"};
  }
  if (auto a = answer_tag(text)) return {std::move(*a), "answer_tag"};
  if (auto a = gsm8k_answer(text)) return {std::move(*a), "gsm8k"};
  if (auto a = answer_is(text)) return {std::move(*a), "answer_is"};
  // Free text: the last math span (with the spans a connective joins to it), the whole text
  // when it is a bare answer, then (when allowed) the last number.
  std::vector<Span> m = math_spans(text);
  if (!m.empty()) return {join_trailing(text, m), "math_span"};
  std::string_view t = trim(text);
  if (bare_answer(t)) return {std::string(t), "bare"};
  if (allow_last_number) {
    if (auto a = last_number(text)) return {std::move(*a), "last_number"};
  }
  return {"", "none"};
}

// ---------------------------------------------------------------------------------------

namespace {

std::string canonical_language(std::string tag) {
  for (char& c : tag) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (tag == "py" || tag == "python3" || tag == "py3") return "python";
  if (tag == "c++" || tag == "cc" || tag == "cxx" || tag == "c++17") return "cpp";
  return tag;
}

}  // namespace

CodeBlock last_code_block(std::string_view text, std::string_view prefer_language) {
  // Walk the fences line by line: an opening fence starts a block, the next fence of the same
  // kind at the start of a line closes it.
  std::string prefer = canonical_language(std::string(prefer_language));
  CodeBlock last, last_preferred;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t line_end = text.find('\n', pos);
    if (line_end == std::string_view::npos) line_end = text.size();
    std::string_view line = text.substr(pos, line_end - pos);
    std::string_view t = line;
    while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
    if (t.size() >= 3 && (t.substr(0, 3) == "```" || t.substr(0, 3) == "~~~")) {
      std::string_view fence = t.substr(0, 3);
      std::string_view tag = trim(t.substr(3));
      while (!tag.empty() && tag.front() == fence[0]) tag.remove_prefix(1);
      size_t sp = tag.find_first_of(" \t{");
      if (sp != std::string_view::npos) tag = tag.substr(0, sp);
      size_t body = line_end < text.size() ? line_end + 1 : text.size();
      // Find the closing fence at the start of a line.
      size_t scan = body, close_start = std::string_view::npos, close_end = text.size();
      while (scan < text.size()) {
        size_t le = text.find('\n', scan);
        if (le == std::string_view::npos) le = text.size();
        std::string_view l = text.substr(scan, le - scan);
        while (!l.empty() && (l.front() == ' ' || l.front() == '\t')) l.remove_prefix(1);
        if (l.size() >= 3 && l.substr(0, 3) == fence) {
          close_start = scan;
          close_end = le;
          break;
        }
        scan = le + 1;
      }
      CodeBlock b;
      b.found = true;
      b.language = canonical_language(std::string(tag));
      size_t code_end = close_start == std::string_view::npos ? text.size() : close_start;
      b.code = std::string(text.substr(body, code_end > body ? code_end - body : 0));
      if (!prefer.empty() && b.language == prefer) last_preferred = b;
      last = std::move(b);
      pos = close_start == std::string_view::npos ? text.size() : close_end + 1;
      continue;
    }
    pos = line_end + 1;
  }
  if (last_preferred.found) return last_preferred;
  return last;
}

}  // namespace retort::rewards
