// Line-oriented I/O of the tokenizer subcommands, kept in the library so tests cover it.
#pragma once

#include <istream>  // defines: std::istream
#include <ostream>  // defines: std::ostream
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

namespace retort {

class Tokenizer;

// `retort tokenize`: each input line {"text": ...} becomes {"ids": [...]}. A malformed
// line throws retort::Error naming `where` and the line number; lines already written stay.
// Returns the number of lines.
int64_t tokenize_jsonl(const Tokenizer& tok, std::istream& in, std::ostream& out, const std::string& where);

// Texts for tokenizer training from one file: a .jsonl file gives every string of the
// fields text, prompt, completion, problem, question, reasoning, generation, answer,
// solution and messages[].content of each line; any other file gives its lines.
std::vector<std::string> read_training_texts(const std::string& path);

}  // namespace retort
