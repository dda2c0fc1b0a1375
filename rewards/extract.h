// Extraction of the gradeable parts of a completion: the reasoning/answer split at
// </think>, the final answer (\boxed{}, \fbox{}, <answer>, "#### X", "the answer is X") and
// the last fenced code block. Shared by every verifier so that they all read a completion
// the same way.
//
// Everything here is linear in the input length and allocation-light: verifiers call it on
// every completion, and completions can be megabytes of degenerate text.
#pragma once

#include <optional>     // defines: std::optional
#include <string>       // defines: std::string
#include <string_view>  // defines: std::string_view

namespace retort::rewards {

// ---------------------------------------------------------------------------------------
// Reasoning / answer split

struct ThinkSplit {
  std::string_view reasoning;  // text before </think> (without an opening <think>)
  std::string_view answer;     // text after </think>; the whole completion when no think block is open
  bool closed = false;         // </think> was found
  bool opened = false;         // a think block was open: <think> in the completion, or at the end of the prompt
};

// Splits at the first </think>. R1-Distill chat templates end the prompt with "<think>\n", so
// the completion often starts inside the reasoning without an opening tag: `prompt` is
// consulted for that. When a think block is open but never closed, the answer is empty (the
// model ran out of tokens while reasoning); when there is no think block at all, the whole
// completion is the answer (non-reasoning models).
ThinkSplit split_think(std::string_view completion, std::string_view prompt = {});

// ---------------------------------------------------------------------------------------
// Final answers

// The content of the last \boxed{...} / \fbox{...} / \framebox{...} in `text`, found by
// brace matching (nested braces allowed), or the single token of `\boxed 5`. nullopt when
// none is found or the last one is unbalanced.
std::optional<std::string> last_boxed(std::string_view text);

// The content of the last <answer>...</answer>.
std::optional<std::string> answer_tag(std::string_view text);

// GSM8K style: the rest of the line after the last "#### ".
std::optional<std::string> gsm8k_answer(std::string_view text);

// "the answer is X" / "The final answer is X" (case-insensitive): X up to the end of the
// sentence (a period followed by space/end, or a newline). `$...$` around X is dropped.
std::optional<std::string> answer_is(std::string_view text);

// The last number in the text ("-1,234.5", "3/4"), used only when a verifier opts in.
std::optional<std::string> last_number(std::string_view text);

struct ExtractedAnswer {
  std::string text;    // the answer, unnormalised
  std::string method;  // "boxed" | "answer_tag" | "gsm8k" | "answer_is" | "math_span" | "bare" | "last_number" | "none"
};

// The final answer by the first method that finds one, in the order: boxed (several boxes
// that end the text, joined only by "and", commas or spacing, are one list: "\boxed{1} and
// \boxed{2}" is "1, 2"), <answer>, "####", "the answer is", the last math span ($..$, $$..$$,
// \[..\], \(..\), joined with the spans before it the same way), the whole text when it is a
// short bare answer ("-5", "\frac{10}{9}"), and (when allowed) the last number that is not
// part of a word.
ExtractedAnswer extract_answer(std::string_view text, bool allow_last_number = false);

// ---------------------------------------------------------------------------------------
// Code

struct CodeBlock {
  std::string language;  // the fence's tag, lower-cased ("python", "cpp", "" when untagged)
  std::string code;
  bool found = false;
};

// The last fenced (``` or ~~~) code block. An unterminated last fence takes the rest of the
// text (completions cut at the token limit). When `prefer_language` is not empty, the last
// block with that tag (or an alias: py/python3, c++/cpp/cc) wins over untagged ones.
CodeBlock last_code_block(std::string_view text, std::string_view prefer_language = {});

}  // namespace retort::rewards
