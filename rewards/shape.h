// Shape rewards: they grade how a completion is written, not whether it is right.
//   format       R1 format: reasoning closed by </think>, then a non-empty answer (strict | soft)
//   tag_count    partial credit per well-formed tag (<think>, </think>, <answer>, </answer>)
//   overlong     DAPO soft overlong penalty
//   cosine_length  correctness-aware cosine length reward (shorter correct answers earn more)
//   repetition   n-gram repetition penalty
#pragma once

#include <memory>  // defines: std::shared_ptr
#include <string>  // defines: std::string
#include <vector>  // defines: std::vector

#include "common/config.h"           // defines: retort::ConfigBinder
#include "rewards/math_verifier.h"   // defines: MathVerifierOptions
#include "rewards/verifier.h"        // defines: Verifier

namespace retort::rewards {

struct FormatOptions {
  std::string mode = "strict";  // strict: "<think>\n...\n</think>\n" + answer, tags once each | soft: a </think> then a non-empty answer
  bool require_boxed = false;   // the answer must also hold a \boxed{}
  void bind(retort::ConfigBinder& b);
};
std::shared_ptr<Verifier> make_format_verifier(const FormatOptions& opt);

struct TagCountOptions {
  std::vector<std::string> tags = {"think", "answer"};  // each tag earns 1/(2 * tags) for exactly one opening and one closing
  void bind(retort::ConfigBinder& b);
};
std::shared_ptr<Verifier> make_tag_count_verifier(const TagCountOptions& opt);

// How a length is measured: tokens (Sample::completion_tokens, else the row's
// "completion_tokens"), characters, or whitespace-separated words.
struct LengthUnit {
  std::string unit = "tokens";  // tokens | chars | words
  void bind(retort::ConfigBinder& b);
};

struct OverlongOptions {
  int64_t max_length = 4096;  // L_max: the generation limit
  int64_t cache_length = 512; // L_cache: the soft band below L_max where the penalty ramps to -1
  LengthUnit length;
  void bind(retort::ConfigBinder& b);
};
std::shared_ptr<Verifier> make_overlong_verifier(const OverlongOptions& opt);

struct CosineLengthOptions {
  int64_t max_length = 4096;     // T: length at which the cosine reaches its end value
  double correct_short = 1.0;    // correct answer at length 0
  double correct_long = 0.5;     // correct answer at max_length
  double wrong_short = -1.0;     // wrong answer at length 0 (short wrong answers are penalised most)
  double wrong_long = -0.5;      // wrong answer at max_length
  double exceed = -1.0;          // any answer longer than max_length
  LengthUnit length;
  MathVerifierOptions math;      // how correctness is decided
  void bind(retort::ConfigBinder& b);
};
std::shared_ptr<Verifier> make_cosine_length_verifier(const CosineLengthOptions& opt);

struct RepetitionOptions {
  int ngram = 3;             // n of the n-grams, over lower-cased whitespace-separated words
  double max_penalty = -1.0; // reward of a completion made of one repeated n-gram
  void bind(retort::ConfigBinder& b);
};
std::shared_ptr<Verifier> make_repetition_verifier(const RepetitionOptions& opt);

// The formulas, exposed for tests.
double dapo_overlong_penalty(int64_t length, int64_t max_length, int64_t cache_length);
double cosine_scaled(double progress, double start, double end);
double ngram_repetition_fraction(std::string_view text, int n);

}  // namespace retort::rewards
