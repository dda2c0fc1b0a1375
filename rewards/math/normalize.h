// LaTeX answer normalisation: the string-level clean-up that runs before parsing, so that
// "\dfrac{1}{2}", "\left( \frac12 \right)", "50\%", "\$1,000", "90^\circ" and
// "5\text{ cm}^2" reach the parser in one canonical spelling.
//
// This is deliberately not where equivalence is decided: it only removes notation that
// never changes the value (sizing commands, spacing, units, currency and degree marks,
// thousands separators, trailing punctuation). Anything with mathematical meaning is left
// for the parser (math/expr.h).
#pragma once

#include <string>       // defines: std::string
#include <string_view>  // defines: std::string_view

namespace retort::rewards::math {

// The normalised form of one answer. Linear in the input length. When `units` is given, it
// receives the units the normalisation removed, in a canonical spelling ("cm^2", "mile",
// "deg" for a degree sign), joined by spaces; "" when there were none.
std::string normalize_answer(std::string_view answer, std::string* units = nullptr);

// Whether a normalised answer is a word (letters and spaces only, at least two letters, not a
// constant's name such as "pi" or "infinity"): such answers compare as text, never as a
// product of one-letter variables ("no" is not "on", "CAB" is not "ABC").
bool is_word_answer(std::string_view normalized);

// A key for plain-text comparison of answers that are not mathematics ("Evelyn",
// "\text{east}"): normalise, then drop whitespace, braces and backslash commands' leading
// backslash, and lower-case.
std::string text_key(std::string_view normalized);

}  // namespace retort::rewards::math
