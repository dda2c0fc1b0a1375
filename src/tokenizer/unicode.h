// UTF-8 helpers, Unicode normalisation (through ICU) and the GPT-2 byte-to-unicode map
// that byte-level BPE vocabularies are written in.
#pragma once

#include <array>        // defines: std::array
#include <cstdint>      // defines: uint8_t, uint32_t
#include <string>       // defines: std::string
#include <string_view>  // defines: std::string_view

namespace retort::unicode {

// Decodes the code point at s[i] and advances i; invalid bytes decode as U+FFFD, one byte each.
uint32_t next_code_point(std::string_view s, size_t& i);
void append_utf8(std::string& out, uint32_t cp);
bool is_valid_utf8(std::string_view s);

// NFC, NFD, NFKC, NFKD through ICU. `form` is one of those names; throws retort::Error otherwise.
std::string normalize(std::string_view s, const std::string& form);

// The Unicode version of ICU's character database ("15.0").
std::string icu_unicode_version();

// The code points that have the Unicode property `property` (an ICU property expression:
// "L", "N", "Lu", "Nd", "P", "S", "M", "Han", ...) in ICU's tables and that were assigned
// after Unicode `since` ("14.0"), as items of a PCRE2 character class ("\x{1E4D0}-\x{1E4EB}...").
// "" when there are none (ICU no newer than `since`). Throws retort::Error for a property ICU
// does not know.
std::string property_additions_since(const std::string& property, const std::string& since);

// Unicode whitespace (char::is_whitespace in Rust: the White_Space property).
bool is_whitespace(uint32_t cp);
// Unicode numeric (general category N*: Nd, Nl, No), char::is_numeric in Rust.
bool is_numeric(uint32_t cp);
bool is_alphanumeric(uint32_t cp);

// GPT-2 byte-level alphabet: each byte maps to one printable code point, so that every
// byte string has a lossless printable spelling. Bytes in !..~, ¡..¬, ®..ÿ map to
// themselves; the other 68 bytes map to U+0100 + n in order.
struct ByteLevelAlphabet {
  std::array<uint32_t, 256> byte_to_cp;     // byte -> code point
  std::array<std::string, 256> byte_to_utf8;  // byte -> that code point in UTF-8
  // code point -> byte, for code points < 0x200; -1 for code points outside the alphabet
  std::array<int16_t, 0x200> cp_to_byte;
};
const ByteLevelAlphabet& byte_level_alphabet();

// Spells raw bytes in the byte-level alphabet ("Ġhello" for " hello").
std::string bytes_to_byte_level(std::string_view bytes);
// The inverse; returns false when a code point is outside the alphabet.
bool byte_level_to_bytes(std::string_view text, std::string& out);

}  // namespace retort::unicode
