// ASCII character classes shared by the math normaliser and parser: locale-independent,
// unlike <cctype>, so that an answer parses the same under any C locale.
#pragma once

namespace retort::rewards::math {

inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
inline bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

}  // namespace retort::rewards::math
