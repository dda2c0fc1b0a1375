// Mathematical equivalence of two answers: the decision the math verifier rewards.
//
// Order of tests, cheapest first: identical normalised strings; then both parsed
// (math/expr.h) and compared by structure — tuples elementwise with matching brackets,
// sets and bare lists unordered, unions of intervals unordered, matrices by shape and cell,
// equations side by side (or "x = 3" against "3"), ± expanded into both signs — and
// scalars by value: exact rational equality when both sides are rational, a relative
// tolerance on numeric values otherwise, and evaluation at random points when variables
// occur. Answers that do not parse are compared as plain text.
#pragma once

#include <string>       // defines: std::string
#include <string_view>  // defines: std::string_view

#include "rewards/math/expr.h"  // defines: Node, ParseLimits

namespace retort::rewards::math {

struct EquivOptions {
  double rel_tol = 1e-6;     // numeric comparison: |a - b| <= rel_tol * max(|a|, |b|) ...
  double abs_tol = 1e-9;     // ... or |a - b| <= abs_tol (values near zero)
  int random_points = 6;     // evaluation points for expressions with variables
  ParseLimits limits;        // bounds on each answer's parse
};

struct EquivResult {
  bool equal = false;
  std::string method;  // "string" | "exact" | "numeric" | "random_points" | "structure" | "text" | "choice"
  std::string gold_normalized, candidate_normalized;
  std::string note;    // why not equal / parse errors
};

// Whether `candidate` states the same answer as `gold`. Both are raw answers (as boxed);
// they are normalised here. Bounded time for any input: see the limits in expr.h.
EquivResult answers_equivalent(std::string_view gold, std::string_view candidate, const EquivOptions& opt = {});

// The same on parsed trees.
bool nodes_equivalent(const Node& gold, const Node& candidate, const EquivOptions& opt);

}  // namespace retort::rewards::math
