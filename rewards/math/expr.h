// The answer language of the math verifier: an expression tree, its parser (LaTeX and
// plain-text notation), exact evaluation over big rationals, and numeric evaluation over
// complex doubles.
//
// Grammar, loosest binding first (after math/normalize.h has run):
//   answer   := list                                   "1, -2" is an unordered list
//   list     := union (',' union)*
//   union    := relation ('\cup' relation)*            "(-\infty, 2) \cup (3, \infty)"
//   relation := expr (('=' | '<' | '\le' | ...) expr)?
//   expr     := ['\pm'] term (('+' | '-' | '\pm' | '\mp') term)*
//   term     := unary (('\cdot' | '\times' | '*' | '/' | '\div' | <implicit>) unary)*
//   unary    := ('-' | '+') unary | power
//   power    := postfix ('^' unary)?                   right-associative
//   postfix  := primary '!'*
//   primary  := number | mixed number ("1\frac{4}{5}") | base number ("204_5") | variable |
//               \pi e i \infty | \frac \sqrt[n] \binom | function | |x| | ( ) [ ] { } \{ \} groups,
//               tuples, intervals and sets | \begin{pmatrix} ... \end{pmatrix}
//
// Deliberately bounded: input length, nesting depth and node count are capped (a hostile
// answer fails to parse instead of exhausting the stack), and exact evaluation refuses
// powers whose result would exceed a bit budget (10^{10^{10}} is decided numerically).
#pragma once

#include <complex>      // defines: std::complex
#include <memory>       // defines: std::shared_ptr
#include <optional>     // defines: std::optional
#include <string>       // defines: std::string
#include <string_view>  // defines: std::string_view
#include <utility>      // defines: std::pair
#include <vector>       // defines: std::vector

#include <boost/multiprecision/cpp_int.hpp>  // defines: boost::multiprecision::cpp_rational (exact, any size)

namespace retort::rewards::math {

using Rational = boost::multiprecision::cpp_rational;
using Integer = boost::multiprecision::cpp_int;
using Complex = std::complex<double>;

enum class Kind {
  Number,    // exact rational `value`
  Symbol,    // a variable or a word; `name`
  Constant,  // "pi" | "e" | "i"
  Infinity,  // \infty
  Add,       // kids: terms
  Mul,       // kids: factors (division is a factor ^ -1)
  Pow,       // kids: base, exponent
  Neg,       // kids: operand
  Func,      // `name` (sin, cos, ..., sqrt is a Pow, abs, floor, ceil, binom, log with base as 2nd kid)
  Factorial, // kids: operand
  PlusMinus, // kids: a, b — a ± b, expanded into two answers before comparison
  Tuple,     // kids: elements; `open`/`close` are the brackets: (a,b) [a,b] (a,b] [a,b)
  Set,       // kids: elements; unordered. `bare` when written as a plain comma list
  Union,     // kids: parts (intervals)
  Matrix,    // kids: rows*cols cells, row-major; `rows`, `cols`
  Relation,  // kids: lhs, rhs; `name` is "=", "<", ">", "\le", "\ge", "\ne"
  Choice,    // multiple-choice letter in `name` ("(C)")
};

struct Node;
using NodeP = std::shared_ptr<const Node>;

struct Node {
  Kind kind = Kind::Number;
  Rational value;          // Number
  std::string name;        // Symbol, Constant, Func, Relation, Choice
  std::vector<NodeP> kids;
  char open = 0, close = 0;  // Tuple brackets
  int rows = 0, cols = 0;    // Matrix shape
  bool bare = false;         // Set written without braces
  bool decimal = false;      // Number written with a decimal point or an exponent ("0.333", "1e-3")
};

struct ParseLimits {
  size_t max_length = 4096;  // characters of one answer
  int max_depth = 256;       // recursion depth of the parser (about 6 per nesting level of brackets)
  int max_nodes = 4096;      // tree size
};

struct ParseResult {
  NodeP node;         // null when parsing failed
  std::string error;  // why, for the detail log
};

// Parses one normalised answer (math/normalize.h).
ParseResult parse_answer(std::string_view normalized, const ParseLimits& limits = {});

// Exact value when the tree is a rational number computable within the budgets (no
// variables, no transcendental functions, powers with small exponents, perfect roots).
std::optional<Rational> exact_value(const Node& n);

// Numeric value with `vars` bound (name → value). NaN when undefined or an unbound symbol.
Complex numeric_value(const Node& n, const std::vector<std::pair<std::string, Complex>>& vars);

// The free symbols of a tree, sorted and unique.
std::vector<std::string> free_symbols(const Node& n);

// Whether the tree contains an explicit \infty (non-finite values are comparable then).
bool has_infinity(const Node& n);

// Whether the tree contains a number written in decimal notation (Node::decimal).
bool has_decimal(const Node& n);

// Debug rendering (prefix form), for the detail log and test failure messages.
std::string to_string(const Node& n);

}  // namespace retort::rewards::math
