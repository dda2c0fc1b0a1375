#include "tokenizer/unicode.h"

#include <cstdio>  // defines: std::snprintf

#include <unicode/normalizer2.h>  // defines: icu::Normalizer2
#include <unicode/uchar.h>        // defines: u_charType, u_hasBinaryProperty
#include <unicode/uniset.h>       // defines: icu::UnicodeSet
#include <unicode/unistr.h>       // defines: icu::UnicodeString

#include "common/error.h"

namespace retort::unicode {

std::string icu_unicode_version() {
  UVersionInfo v;
  u_getUnicodeVersion(v);
  return std::to_string(v[0]) + "." + std::to_string(v[1]);
}

namespace {

// The characters Unicode 15.1 assigned (DerivedAge.txt, "15.1"; 627 code points), for an ICU
// whose tables stop at 15.0 (Debian 12's ICU 72). Hugging Face tokenizers already know them.
struct Assigned {
  UChar32 first, last;
  const char* category;  // general category
  const char* script;
};
constexpr Assigned kUnicode151[] = {
    {0x2EBF0, 0x2EE5D, "Lo", "Han"},   // CJK Unified Ideographs Extension I
    {0x2FFC, 0x2FFF, "So", "Common"},  // ideographic description characters
    {0x31EF, 0x31EF, "So", "Common"},  // CJK stroke HXG
};

}  // namespace

std::string property_additions_since(const std::string& property, const std::string& since) {
  // ICU's [:Age=V:] is every code point assigned in Unicode V or earlier.
  std::string expr = "[\\p{" + property + "}-\\p{Age=" + since + "}]";
  UErrorCode status = U_ZERO_ERROR;
  icu::UnicodeSet set(icu::UnicodeString::fromUTF8(expr), status);
  if (U_FAILURE(status))
    throw Error(ErrorInfo{"ICU does not know the Unicode property in a split pattern", "tokenizer pre-tokenizer",
                          "a property such as L, N, Lu, P or Han", "\\p{" + property + "}", u_errorName(status)});
  UVersionInfo icu_version;
  u_getUnicodeVersion(icu_version);
  if (icu_version[0] < 15 || (icu_version[0] == 15 && icu_version[1] < 1)) {
    for (const Assigned& a : kUnicode151) {
      std::string gc(a.category);
      if (property == gc || property == gc.substr(0, 1) || property == a.script) set.add(a.first, a.last);
    }
  }
  std::string items;
  char buf[32];
  for (int32_t r = 0; r < set.getRangeCount(); ++r) {
    UChar32 a = set.getRangeStart(r), b = set.getRangeEnd(r);
    if (a == b) std::snprintf(buf, sizeof buf, "\\x{%X}", static_cast<unsigned>(a));
    else std::snprintf(buf, sizeof buf, "\\x{%X}-\\x{%X}", static_cast<unsigned>(a), static_cast<unsigned>(b));
    items += buf;
  }
  return items;
}

uint32_t next_code_point(std::string_view s, size_t& i) {
  auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  int len = (b0 & 0xE0) == 0xC0 ? 2 : (b0 & 0xF0) == 0xE0 ? 3 : (b0 & 0xF8) == 0xF0 ? 4 : 0;
  if (len == 0 || i + len > s.size()) {
    ++i;
    return 0xFFFD;
  }
  uint32_t cp = b0 & (0x7F >> len);
  for (int k = 1; k < len; ++k) {
    auto b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) {
      ++i;
      return 0xFFFD;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  i += len;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_valid_utf8(std::string_view s) {
  UErrorCode status = U_ZERO_ERROR;
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  std::string back;
  u.toUTF8String(back);
  (void)status;
  return back == s;
}

std::string normalize(std::string_view s, const std::string& form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  if (form == "NFC") n = icu::Normalizer2::getNFCInstance(status);
  else if (form == "NFD") n = icu::Normalizer2::getNFDInstance(status);
  else if (form == "NFKC") n = icu::Normalizer2::getNFKCInstance(status);
  else if (form == "NFKD") n = icu::Normalizer2::getNFKDInstance(status);
  else throw Error(ErrorInfo{"unknown Unicode normalisation form", "tokenizer normalizer", "NFC, NFD, NFKC or NFKD", form, ""});
  if (U_FAILURE(status)) throw Error("ICU could not provide the normaliser " + form, "tokenizer normalizer");
  // Fast path: ASCII is invariant under every form.
  bool ascii = true;
  for (char c : s) ascii = ascii && static_cast<uint8_t>(c) < 0x80;
  if (ascii) return std::string(s);
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  if (n->isNormalized(u, status) && U_SUCCESS(status)) return std::string(s);
  icu::UnicodeString out = n->normalize(u, status);
  if (U_FAILURE(status)) throw Error("Unicode normalisation failed", "tokenizer normalizer");
  std::string r;
  out.toUTF8String(r);
  return r;
}

bool is_whitespace(uint32_t cp) { return u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_WHITE_SPACE); }

bool is_numeric(uint32_t cp) {
  int8_t t = u_charType(static_cast<UChar32>(cp));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

bool is_alphanumeric(uint32_t cp) {
  return is_numeric(cp) || u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_ALPHABETIC);
}

const ByteLevelAlphabet& byte_level_alphabet() {
  static const ByteLevelAlphabet alphabet = [] {
    ByteLevelAlphabet a{};
    a.cp_to_byte.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      uint32_t cp = printable ? static_cast<uint32_t>(b) : 0x100u + extra++;
      a.byte_to_cp[b] = cp;
      a.cp_to_byte[cp] = static_cast<int16_t>(b);
      std::string u;
      append_utf8(u, cp);
      a.byte_to_utf8[b] = u;
    }
    return a;
  }();
  return alphabet;
}

std::string bytes_to_byte_level(std::string_view bytes) {
  const auto& a = byte_level_alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += a.byte_to_utf8[static_cast<uint8_t>(c)];
  return out;
}

bool byte_level_to_bytes(std::string_view text, std::string& out) {
  const auto& a = byte_level_alphabet();
  size_t i = 0;
  while (i < text.size()) {
    uint32_t cp = next_code_point(text, i);
    if (cp >= 0x200 || a.cp_to_byte[cp] < 0) return false;
    out += static_cast<char>(a.cp_to_byte[cp]);
  }
  return true;
}

}  // namespace retort::unicode
