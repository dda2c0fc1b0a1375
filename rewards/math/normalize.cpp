// LaTeX answer normalisation (see normalize.h).
#include "rewards/math/normalize.h"

#include <cctype>  // defines: std::isdigit, std::isalpha, std::tolower
#include <vector>  // defines: std::vector

#include "rewards/math/chars.h"  // defines: is_space, is_digit, is_alpha

namespace retort::rewards::math {

namespace {

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty() || s.find(from) == std::string::npos) return;
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    size_t p = s.find(from, pos);
    if (p == std::string::npos) break;
    out.append(s, pos, p - pos);
    out.append(to);
    pos = p + from.size();
  }
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

// Removes the command `cmd` (e.g. "\left") where it is not the prefix of a longer command
// name ("\leftarrow" stays).
void remove_command(std::string& s, std::string_view cmd) {
  if (s.find(cmd) == std::string::npos) return;
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, cmd.size(), cmd) == 0 && !(i + cmd.size() < s.size() && is_alpha(s[i + cmd.size()]))) {
      i += cmd.size();
      continue;
    }
    out.push_back(s[i++]);
  }
  s.swap(out);
}

// Index one past the '}' matching the '{' at `open`, or npos.
size_t match_brace(const std::string& s, size_t open) {
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      ++i;
      continue;
    }
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return i + 1;
  }
  return std::string::npos;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool only_words(std::string_view s) {
  s = trim(s);
  if (s.empty()) return false;
  for (char c : s)
    if (!is_alpha(c) && c != ' ' && c != '.' && c != '-') return false;
  return true;
}

// The canonical spelling of a unit: lower case, no spaces, a plural "s" dropped ("Miles" and
// "mile" are one unit), an exponent without braces ("cm^{2}" is "cm^2").
void add_unit(std::string* units, std::string_view words, std::string_view exponent) {
  if (units == nullptr) return;
  std::string u;
  for (char c : words)
    if (!is_space(c) && c != '.') u.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (u.size() >= 3 && u.back() == 's' && u[u.size() - 2] != 's') u.pop_back();
  for (char c : exponent)
    if (c != '{' && c != '}' && !is_space(c)) {
      if (u.find('^') == std::string::npos) u.push_back('^');
      u.push_back(c);
    }
  if (u.empty()) return;
  if (!units->empty()) units->push_back(' ');
  *units += u;
}

// Text wrappers: \text{..}, \mathrm{..} and friends. The whole answer wrapped → its content;
// a wrapper holding only words after something else → units, removed with an exponent that
// follows ("5\text{ cm}^2"); "\text{ and }" / "\text{ or }" → a list comma; otherwise the
// content stays.
void unwrap_text(std::string& s, std::string* units) {
  static constexpr std::string_view kWrappers[] = {"\\text",   "\\textbf", "\\textit",   "\\textrm", "\\mathrm", "\\textnormal",
                                                   "\\mathbf", "\\mbox",   "\\mathit",   "\\mathsf", "\\textsf",
                                                   "\\operatorname", "\\mathtt", "\\texttt", "\\emph", "\\boxed"};
  for (int guard = 0; guard < 64; ++guard) {
    // Find the first wrapper.
    size_t best = std::string::npos, best_len = 0;
    for (std::string_view w : kWrappers) {
      size_t p = 0;
      while ((p = s.find(w, p)) != std::string::npos) {
        size_t after = p + w.size();
        while (after < s.size() && is_space(s[after])) ++after;
        if (after < s.size() && s[after] == '{') {
          if (p < best) best = p, best_len = w.size();
          break;
        }
        p += w.size();
      }
    }
    if (best == std::string::npos) return;
    size_t open = best + best_len;
    while (s[open] != '{') ++open;
    size_t end = match_brace(s, open);
    if (end == std::string::npos) return;
    std::string content = s.substr(open + 1, end - open - 2);
    std::string_view before = trim(std::string_view(s).substr(0, best));
    std::string_view tc = trim(content);
    std::string replacement;
    bool is_boxed = s.compare(best, best_len, "\\boxed") == 0;
    if (!is_boxed && (tc == "and" || tc == "or") && !before.empty()) {
      replacement = ",";
    } else if (!is_boxed && !before.empty() && only_words(content)) {
      // Units: drop, together with an exponent right after ("^2", "^{2}").
      size_t k = end;
      while (k < s.size() && is_space(s[k])) ++k;
      size_t exp_from = end;
      if (k < s.size() && s[k] == '^') {
        size_t e = k + 1;
        exp_from = e;
        if (e < s.size() && s[e] == '{') {
          size_t m = match_brace(s, e);
          if (m != std::string::npos) end = m;
        } else if (e < s.size()) {
          end = e + 1;
        }
      }
      add_unit(units, content, std::string_view(s).substr(exp_from, end - exp_from));
      replacement = "";
    } else {
      replacement = content;
    }
    s.replace(best, end - best, replacement);
  }
}

// "5.4 cents", "12 inches": a plain number followed by words only → the number.
void strip_plain_units(std::string& s, std::string* units) {
  size_t i = 0;
  if (i < s.size() && s[i] == '-') ++i;
  size_t num_start = i;
  while (i < s.size() && (is_digit(s[i]) || s[i] == '.' || s[i] == ',' || s[i] == '/')) ++i;
  if (i == num_start || i >= s.size() || !is_space(s[i])) return;
  size_t words = i;
  while (words < s.size() && is_space(s[words])) ++words;
  std::string_view rest = std::string_view(s).substr(words);
  // "^2" after a unit ("cm^2").
  size_t caret = rest.find('^');
  std::string_view word_part = caret == std::string_view::npos ? rest : rest.substr(0, caret);
  if (word_part.size() >= 2 && only_words(word_part)) {
    add_unit(units, word_part, caret == std::string_view::npos ? std::string_view() : rest.substr(caret + 1));
    s.resize(i);
  }
}

// "1,234,567" or "1 234 567" (the whole answer, optionally signed and with decimals, digits
// grouped by threes with `sep`) -> "1234567". A leading 0 group is never thousands ("0,111" is
// a decimal comma).
void strip_digit_groups(std::string& s, char sep) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  size_t group = 0;
  size_t first_digit = i;
  while (i < s.size() && is_digit(s[i])) ++i, ++group;
  if (group == 0 || group > 3 || i >= s.size() || s[i] != sep) return;
  if (s[first_digit] == '0') return;
  while (i < s.size() && s[i] == sep) {
    ++i;
    size_t g = 0;
    while (i < s.size() && is_digit(s[i])) ++i, ++g;
    if (g != 3) return;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && is_digit(s[i])) ++i;
  }
  if (i != s.size()) return;
  std::string out;
  for (char c : s)
    if (c != sep) out.push_back(c);
  s.swap(out);
}

// Replaces the command `cmd` ("\\lt") by `to` where it is not the prefix of a longer name.
void remove_command_as(std::string& s, std::string_view cmd, std::string_view to) {
  if (s.find(cmd) == std::string::npos) return;
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, cmd.size(), cmd) == 0 && !(i + cmd.size() < s.size() && is_alpha(s[i + cmd.size()]))) {
      out.append(to);
      i += cmd.size();
    } else {
      out.push_back(s[i++]);
    }
  }
  s.swap(out);
}

// Replaces the whole word `word` (no letter or backslash around it) by `to`.
void replace_word(std::string& s, std::string_view word, std::string_view to) {
  if (s.find(word) == std::string::npos) return;
  std::string out;
  for (size_t i = 0; i < s.size();) {
    bool whole = s.compare(i, word.size(), word) == 0 && (i == 0 || (!is_alpha(s[i - 1]) && s[i - 1] != '\\')) &&
                 (i + word.size() >= s.size() || !is_alpha(s[i + word.size()]));
    if (whole) {
      out.append(to);
      i += word.size();
    } else {
      out.push_back(s[i++]);
    }
  }
  s.swap(out);
}

// ", ," → "," (a list written "19, 46, and 82" has both).
void collapse_commas(std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == ',') {
      size_t k = out.size();
      while (k > 0 && is_space(out[k - 1])) --k;
      if (k > 0 && out[k - 1] == ',') {
        out.resize(k);
        continue;
      }
    }
    out.push_back(c);
  }
  s.swap(out);
}

// Removes every occurrence of `mark`; true when there was one.
bool remove_mark(std::string& s, std::string_view mark) {
  if (s.find(mark) == std::string::npos) return false;
  replace_all(s, mark, "");
  return true;
}

// Removes "\circ" written right after a number ("90\circ"); "f \circ g" (composition) stays.
bool remove_degree_command(std::string& s) {
  bool any = false;
  size_t p = 0;
  while ((p = s.find("\\circ", p)) != std::string::npos) {
    size_t q = p;
    while (q > 0 && is_space(s[q - 1])) --q;
    bool after_number = q > 0 && (is_digit(s[q - 1]) || s[q - 1] == '}');
    bool longer = p + 5 < s.size() && is_alpha(s[p + 5]);
    if (after_number && !longer) {
      s.erase(p, 5);
      any = true;
    } else {
      p += 5;
    }
  }
  return any;
}

}  // namespace

bool is_word_answer(std::string_view normalized) {
  std::string_view t = trim(normalized);
  size_t letters = 0;
  std::string lower;
  for (char c : t) {
    if (is_alpha(c)) {
      ++letters;
      lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    } else if (c != ' ') {
      return false;
    }
  }
  if (letters < 2) return false;
  return lower != "pi" && lower != "inf" && lower != "infty" && lower != "infinity";
}

std::string normalize_answer(std::string_view answer, std::string* units) {
  if (units != nullptr) units->clear();
  std::string s(trim(answer));
  // Unicode spellings models and datasets use.
  replace_all(s, "\xE2\x88\x92", "-");         // U+2212 minus
  replace_all(s, "\xC3\x97", "\\times ");      // ×
  replace_all(s, "\xC3\xB7", "\\div ");        // ÷
  replace_all(s, "\xCF\x80", "\\pi ");         // π
  replace_all(s, "\xE2\x88\x9A", "\\sqrt");    // √
  replace_all(s, "\xE2\x88\x9E", "\\infty ");  // ∞
  bool degrees = remove_mark(s, "\xC2\xB0");  // °
  replace_all(s, "\xE2\x89\xA4", "\\le ");     // ≤
  replace_all(s, "\xE2\x89\xA5", "\\ge ");     // ≥
  replace_all(s, "\xC2\xA0", " ");             // no-break space
  // Currency, percent, degrees: never change the graded value.
  replace_all(s, "\\$", "");
  replace_all(s, "$", "");
  replace_all(s, "\\%", "");
  replace_all(s, "%", "");
  // Degrees are a unit: "30^\\circ" against "30 \\text{ radians}" is not comparable.
  degrees = remove_mark(s, "{}^{\\circ}") | degrees;
  degrees = remove_mark(s, "{}^\\circ") | degrees;
  degrees = remove_mark(s, "^{\\circ}") | degrees;
  degrees = remove_mark(s, "^\\circ") | degrees;
  degrees = remove_degree_command(s) | degrees;
  if (s.find("\\degree") != std::string::npos) {
    remove_command(s, "\\degree");
    degrees = true;
  }
  if (degrees) add_unit(units, "deg", "");
  // LaTeX thousands separators: "10,\!080", "1{,}000".
  replace_all(s, "{,}", "");
  {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == ',' && s.compare(i + 1, 2, "\\!") == 0) {
        size_t k = i + 3;
        while (k < s.size() && is_space(s[k])) ++k;
        if (k + 2 < s.size() && is_digit(s[k]) && is_digit(s[k + 1]) && is_digit(s[k + 2])) {
          i = k - 1;
          continue;
        }
      }
      out.push_back(s[i]);
    }
    s.swap(out);
  }
  // "\\quad" is spacing even glued to a name ("\\quadx_2"); "\\\\le" is an escaped "\\le".
  replace_all(s, "\\qquad", " ");
  replace_all(s, "\\quad", " ");
  for (const char* rel : {"le", "ge", "lt", "gt", "ne"}) {
    std::string twice = std::string("\\\\") + rel;
    size_t p = 0;
    while ((p = s.find(twice, p)) != std::string::npos) {
      if (p + twice.size() >= s.size() || !is_alpha(s[p + twice.size()]) || s.compare(p + twice.size(), 1, "q") == 0) {
        s.erase(p, 1);
      } else {
        p += twice.size();
      }
    }
  }
  // Sizing and spacing commands.
  static constexpr std::string_view kDrop[] = {"\\left",  "\\right", "\\bigl",  "\\bigr",         "\\Bigl",
                                               "\\Bigr",  "\\biggl", "\\biggr", "\\big",          "\\Big",
                                               "\\bigg",  "\\Bigg",  "\\quad",  "\\qquad",        "\\displaystyle",
                                               "\\textstyle", "\\limits", "\\nolimits"};
  for (std::string_view c : kDrop) remove_command(s, c);
  {
    // Spacing commands \! \, \; \: and "\ " — but "\\" (a row break) stays whole.
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\\' && i + 1 < s.size()) {
        char n = s[i + 1];
        if (n == '\\') {
          out += "\\\\";
          ++i;
          continue;
        }
        if (n == '!' || n == ',' || n == ';' || n == ':' || n == ' ') {
          if (n != '!') out.push_back(' ');
          ++i;
          continue;
        }
      }
      out.push_back(s[i]);
    }
    s.swap(out);
  }
  replace_all(s, "~", " ");
  replace_all(s, "\\dfrac", "\\frac");
  replace_all(s, "\\tfrac", "\\frac");
  replace_all(s, "\\cfrac", "\\frac");
  replace_all(s, "\\dbinom", "\\binom");
  replace_all(s, "\\tbinom", "\\binom");
  replace_all(s, "\\leq", "\\le");
  replace_all(s, "\\geq", "\\ge");
  replace_all(s, "\\neq", "\\ne");
  replace_all(s, "\\varnothing", "\\emptyset");
  // Relations in plain text and their other LaTeX names.
  replace_all(s, ">=", "\\ge ");
  replace_all(s, "<=", "\\le ");
  replace_all(s, "!=", "\\ne ");
  remove_command_as(s, "\\lt", "<");
  remove_command_as(s, "\\gt", ">");
  replace_all(s, "\\mathbb{R}", "(-\\infty,\\infty)");
  replace_all(s, "\\mathbb R", "(-\\infty,\\infty)");
  unwrap_text(s, units);
  // Lists joined by ';', "and" or "or" ("(0;0;0)", "21, 16 or 11") are comma lists; a word
  // list of text answers stays text.
  if (s.find_first_of("0123456789\\") != std::string::npos) {
    replace_all(s, ";", ",");
    replace_word(s, "and", ",");
    replace_word(s, "or", ",");
    collapse_commas(s);
  }
  // "x \in [-2, 7]" → "[-2, 7]".
  {
    std::string_view t = trim(s);
    if (t.size() > 4 && is_alpha(t[0])) {
      size_t k = 1;
      while (k < t.size() && is_space(t[k])) ++k;
      if (t.compare(k, 3, "\\in") == 0 && !(k + 3 < t.size() && is_alpha(t[k + 3]))) s = std::string(t.substr(k + 3));
    }
  }
  // Trailing punctuation and whitespace ("5.", "x = 3,").
  while (true) {
    std::string_view t = trim(s);
    if (!t.empty() && (t.back() == '.' || t.back() == ',' || t.back() == ';' || t.back() == ':')) {
      // "\." is not punctuation, a decimal "5." is the same number.
      t.remove_suffix(1);
      s = std::string(t);
      continue;
    }
    if (t.size() >= 2 && t.substr(t.size() - 2) == "\\\\") {  // a trailing LaTeX line break
      t.remove_suffix(2);
      s = std::string(t);
      continue;
    }
    s = std::string(t);
    break;
  }
  strip_plain_units(s, units);
  strip_digit_groups(s, ',');
  strip_digit_groups(s, ' ');
  // Collapse whitespace runs to one space (a space still separates "\pi r").
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (is_space(c)) {
      if (!out.empty() && out.back() != ' ') out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string text_key(std::string_view normalized) {
  std::string out;
  out.reserve(normalized.size());
  for (char c : normalized) {
    if (is_space(c) || c == '{' || c == '}' || c == '\\') continue;
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

}  // namespace retort::rewards::math
