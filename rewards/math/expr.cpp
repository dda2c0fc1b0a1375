// The math answer parser and evaluators (see expr.h for the grammar).
#include "rewards/math/expr.h"

#include <algorithm>  // defines: std::sort, std::unique
#include <cmath>      // defines: std::pow, std::tgamma, std::isfinite
#include <cstring>    // defines: std::strchr
#include <limits>     // defines: std::numeric_limits

#include "rewards/math/chars.h"  // defines: is_space, is_digit, is_alpha

namespace retort::rewards::math {

namespace {

// ---------------------------------------------------------------------------------------
// Construction helpers

NodeP make(Kind k, std::vector<NodeP> kids = {}, std::string name = "") {
  auto n = std::make_shared<Node>();
  n->kind = k;
  n->kids = std::move(kids);
  n->name = std::move(name);
  return n;
}

NodeP number(Rational v) {
  auto n = std::make_shared<Node>();
  n->kind = Kind::Number;
  n->value = std::move(v);
  return n;
}

NodeP reciprocal(NodeP x) { return make(Kind::Pow, {std::move(x), number(-1)}); }


// Functions written as words or as commands.
const char* const kFunctions[] = {"sin",  "cos",    "tan",    "sec",    "csc",  "cot",  "arcsin", "arccos",
                                  "arctan", "asin", "acos",   "atan",   "sinh", "cosh", "tanh",   "ln",
                                  "log",  "exp",    "sqrt",   "abs",    "floor", "ceil", "lg",    "det",
                                  "gcd",  "lcm",    "max",    "min"};
bool is_function(std::string_view w) {
  for (const char* f : kFunctions)
    if (w == f) return true;
  return false;
}

// Greek letters and other commands that are plain variables.
const char* const kGreek[] = {"alpha", "beta",  "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta",
                              "theta", "vartheta", "iota", "kappa", "lambda", "mu",        "nu",   "xi",
                              "rho",   "sigma", "tau",   "upsilon", "phi",    "varphi",    "chi",  "psi",
                              "omega", "Gamma", "Delta", "Theta", "Lambda",  "Xi",         "Sigma", "Phi",
                              "Psi",   "Omega", "ell"};
bool is_greek(std::string_view w) {
  for (const char* g : kGreek)
    if (w == g) return true;
  return false;
}

struct ParseFail {
  std::string why;
};

// ---------------------------------------------------------------------------------------
// Parser

class Parser {
 public:
  Parser(std::string_view s, const ParseLimits& lim) : s_(s), lim_(lim) {}

  NodeP parse() {
    skip();
    if (at_end()) fail("empty answer");
    if (NodeP c = try_choice()) return c;
    NodeP n = list_level();
    skip();
    if (!at_end()) fail("unexpected '" + std::string(s_.substr(pos_, 12)) + "' at offset " + std::to_string(pos_));
    return n;
  }

 private:
  // ---- lexing helpers
  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[pos_]; }
  void skip() {
    while (!at_end() && is_space(s_[pos_])) ++pos_;
  }
  bool starts(std::string_view t) const { return s_.compare(pos_, t.size(), t) == 0; }
  // The command name at pos_ ("\frac" → "frac"), without consuming; "" when not a command.
  std::string_view command() const {
    if (peek() != '\\' || pos_ + 1 >= s_.size()) return {};
    size_t e = pos_ + 1;
    if (!is_alpha(s_[e])) return s_.substr(pos_ + 1, 1);  // \{ \} \\ \, ...
    while (e < s_.size() && is_alpha(s_[e])) ++e;
    return s_.substr(pos_ + 1, e - pos_ - 1);
  }
  bool command_is(std::string_view name) const { return command() == name; }
  void eat_command() { pos_ += 1 + command().size(); }
  bool accept(char c) {
    skip();
    if (peek() == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!accept(c)) fail(std::string("expected '") + c + "' at offset " + std::to_string(pos_));
  }
  [[noreturn]] void fail(std::string why) const { throw ParseFail{std::move(why)}; }

  NodeP count(NodeP n) {
    if (++nodes_ > lim_.max_nodes) fail("more than " + std::to_string(lim_.max_nodes) + " nodes");
    return n;
  }

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > p.lim_.max_depth) p.fail("nested deeper than " + std::to_string(p.lim_.max_depth));
    }
    ~DepthGuard() { --p.depth_; }
  };

  // "(C)", "(C) 12", "C)" alone — a multiple-choice letter A..E.
  NodeP try_choice() {
    std::string_view t = s_.substr(pos_);
    if (t.size() >= 3 && t[0] == '(' && t[1] >= 'A' && t[1] <= 'E' && t[2] == ')') {
      if (t.size() == 3 || is_space(t[3])) return make(Kind::Choice, {}, std::string(1, t[1]));
    }
    return nullptr;
  }

  // ---- grammar
  NodeP list_level() {
    std::vector<NodeP> items{union_level()};
    while (accept(',')) items.push_back(union_level());
    if (items.size() == 1) return items[0];
    auto n = std::make_shared<Node>();
    n->kind = Kind::Set;
    n->kids = std::move(items);
    n->bare = true;
    return count(n);
  }

  NodeP union_level() {
    std::vector<NodeP> parts{relation()};
    while (true) {
      skip();
      if (!command_is("cup")) break;
      eat_command();
      parts.push_back(relation());
    }
    if (parts.size() == 1) return parts[0];
    return count(make(Kind::Union, std::move(parts)));
  }

  NodeP relation() {
    NodeP lhs = expr();
    skip();
    std::string op;
    if (peek() == '=') {
      ++pos_;
      op = "=";
    } else if (peek() == '<' || peek() == '>') {
      op = std::string(1, s_[pos_++]);
      if (peek() == '=') ++pos_, op = op == "<" ? "\\le" : "\\ge";
    } else if (command_is("le") || command_is("ge") || command_is("ne") || command_is("lt") || command_is("gt")) {
      std::string_view c = command();
      op = c == "lt" ? "<" : c == "gt" ? ">" : "\\" + std::string(c);
      eat_command();
    } else {
      return lhs;
    }
    NodeP rhs = relation();  // "x = y = 3" chains to the right
    if (rhs->kind == Kind::Relation && op == "=" && rhs->name == "=") rhs = rhs->kids[1];
    return count(make(Kind::Relation, {lhs, rhs}, op));
  }

  NodeP expr() {
    DepthGuard g(*this);
    skip();
    NodeP acc;
    if (command_is("pm")) {  // "\pm 3"
      eat_command();
      acc = count(make(Kind::PlusMinus, {number(0), term()}));
    } else {
      acc = term();
    }
    std::vector<NodeP> terms{acc};
    while (true) {
      skip();
      if (peek() == '+') {
        ++pos_;
        terms.push_back(term());
      } else if (peek() == '-') {
        ++pos_;
        terms.push_back(count(make(Kind::Neg, {term()})));
      } else if (command_is("pm") || command_is("mp")) {
        bool mp = command_is("mp");
        eat_command();
        NodeP left = terms.size() == 1 ? terms[0] : count(make(Kind::Add, terms));
        NodeP right = term();
        if (mp) right = count(make(Kind::Neg, {right}));
        terms = {count(make(Kind::PlusMinus, {left, right}))};
      } else {
        break;
      }
    }
    return terms.size() == 1 ? terms[0] : count(make(Kind::Add, std::move(terms)));
  }

  // Whether the text at pos_ can start a factor of an implicit product ("2x", "3\sqrt2", "(a)(b)").
  bool starts_factor() {
    skip();
    char c = peek();
    if (is_digit(c) || is_alpha(c) || c == '(' || c == '{') return true;
    if (c == '.' && pos_ + 1 < s_.size() && is_digit(s_[pos_ + 1])) return true;
    if (c == '\\') {
      std::string_view cmd = command();
      return cmd == "frac" || cmd == "sqrt" || cmd == "pi" || cmd == "binom" || cmd == "infty" || cmd == "lfloor" ||
             cmd == "lceil" || is_function(cmd) || is_greek(cmd) || cmd == "operatorname";
    }
    return false;
  }

  NodeP term() {
    DepthGuard g(*this);
    std::vector<NodeP> factors{unary()};
    while (true) {
      skip();
      if (peek() == '*' || command_is("cdot") || command_is("times") || command_is("ast")) {
        if (peek() == '*') ++pos_; else eat_command();
        factors.push_back(unary());
      } else if (peek() == '/' || peek() == ':' || command_is("div")) {  // a ratio "7:32" is a quotient
        if (peek() == '/' || peek() == ':') ++pos_; else eat_command();
        factors.push_back(count(reciprocal(unary())));
      } else if (starts_factor()) {
        factors.push_back(power());  // implicit: no unary minus ("2 -3" is a difference)
      } else {
        break;
      }
    }
    return factors.size() == 1 ? factors[0] : count(make(Kind::Mul, std::move(factors)));
  }

  NodeP unary() {
    DepthGuard g(*this);
    skip();
    if (peek() == '-') {
      ++pos_;
      return count(make(Kind::Neg, {unary()}));
    }
    if (peek() == '+') {
      ++pos_;
      return unary();
    }
    return power();
  }

  NodeP power() {
    DepthGuard g(*this);
    NodeP base = postfix();
    skip();
    if (peek() == '^') {
      ++pos_;
      NodeP exponent = exponent_arg();
      base = count(make(Kind::Pow, {base, exponent}));
      skip();
      while (peek() == '!') ++pos_, base = count(make(Kind::Factorial, {base}));
    }
    return base;
  }

  // After '^': a braced group, or a signed run of digits ("2^10", "x^-1"), or one factor.
  NodeP exponent_arg() {
    skip();
    if (peek() == '{') return group('{', '}');
    if (peek() == '-') {
      ++pos_;
      return count(make(Kind::Neg, {exponent_arg()}));
    }
    if (is_digit(peek())) {
      NodeP e = number_literal();
      skip();
      if (peek() == '^') {  // "2^3^2" is 2^(3^2)
        ++pos_;
        e = count(make(Kind::Pow, {e, exponent_arg()}));
      }
      return e;
    }
    return power();
  }

  NodeP postfix() {
    NodeP p = primary();
    skip();
    while (peek() == '!') {
      ++pos_;
      p = count(make(Kind::Factorial, {p}));
      skip();
    }
    return p;
  }

  // A braced or bracketed group that must hold one expression: {x}, (x).
  NodeP group(char open, char close) {
    DepthGuard g(*this);
    expect(open);
    NodeP n = list_level();
    expect(close);
    return n;
  }

  // The argument of \frac, \sqrt, \binom: a braced group, or one character / command ("\frac12").
  NodeP macro_arg() {
    skip();
    if (peek() == '{') return group('{', '}');
    if (is_digit(peek())) {
      Rational v = s_[pos_++] - '0';
      return count(number(v));
    }
    if (is_alpha(peek())) return symbol_or_constant(std::string(1, s_[pos_++]));
    if (peek() == '\\') return primary();
    fail("missing argument at offset " + std::to_string(pos_));
  }

  NodeP number_literal() {
    size_t start = pos_;
    Integer digits = 0;
    int frac_digits = 0;
    bool seen_dot = false, any = false;
    while (!at_end()) {
      char c = s_[pos_];
      if (is_digit(c)) {
        digits = digits * 10 + (c - '0');
        if (seen_dot) ++frac_digits;
        any = true;
        ++pos_;
      } else if (c == '.' && !seen_dot && pos_ + 1 < s_.size() && is_digit(s_[pos_ + 1])) {
        seen_dot = true;
        ++pos_;
      } else if (c == '.' && !seen_dot && any && !(pos_ + 1 < s_.size() && s_[pos_ + 1] == '.')) {
        seen_dot = true;  // "5." is 5
        ++pos_;
      } else {
        break;
      }
    }
    if (!any) fail("bad number at offset " + std::to_string(start));
    Rational v(digits);
    if (frac_digits > 0) v /= boost::multiprecision::pow(Integer(10), frac_digits);
    // Scientific notation: 1.5e-3, 2E10 (an 'e' followed by a signed digit run).
    if (!at_end() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      size_t k = pos_ + 1;
      bool neg = false;
      if (k < s_.size() && (s_[k] == '+' || s_[k] == '-')) neg = s_[k] == '-', ++k;
      if (k < s_.size() && is_digit(s_[k])) {
        long e = 0;
        while (k < s_.size() && is_digit(s_[k])) {
          e = e * 10 + (s_[k] - '0');
          if (e > 4000) fail("exponent of scientific notation too large");
          ++k;
        }
        pos_ = k;
        Rational scale(boost::multiprecision::pow(Integer(10), static_cast<unsigned>(e)));
        if (neg) v /= scale; else v *= scale;
      }
    }
    auto n = std::make_shared<Node>();
    n->kind = Kind::Number;
    n->value = std::move(v);
    n->decimal = decimal_written(start);
    return count(NodeP(std::move(n)));
  }

  // Whether the literal at [start, pos_) has a '.' or an exponent.
  bool decimal_written(size_t start) const {
    for (size_t k = start; k < pos_; ++k)
      if (s_[k] == '.' || s_[k] == 'e' || s_[k] == 'E') return true;
    return false;
  }

  NodeP symbol_or_constant(std::string name) {
    if (name == "e") return count(make(Kind::Constant, {}, "e"));
    if (name == "i") return count(make(Kind::Constant, {}, "i"));
    if (name == "pi") return count(make(Kind::Constant, {}, "pi"));
    // Subscript: x_1, a_{n}.
    if (peek() == '_') {
      ++pos_;
      name += "_" + subscript_text();
    }
    return count(make(Kind::Symbol, {}, std::move(name)));
  }

  std::string subscript_text() {
    skip();
    if (peek() == '{') {
      size_t start = pos_ + 1;
      int depth = 0;
      while (!at_end()) {
        char c = s_[pos_++];
        if (c == '{') ++depth;
        if (c == '}' && --depth == 0) {
          std::string t;
          for (char ch : s_.substr(start, pos_ - 1 - start))
            if (!is_space(ch)) t.push_back(ch);
          return t;
        }
      }
      fail("unbalanced subscript");
    }
    if (at_end()) fail("empty subscript");
    if (is_digit(peek())) {  // "x_12": digits run
      size_t start = pos_;
      while (!at_end() && is_digit(peek())) ++pos_;
      return std::string(s_.substr(start, pos_ - start));
    }
    return std::string(1, s_[pos_++]);
  }

  // Function application after its name: \sin x, \sin(x), \sin^2 x, \log_2 8.
  NodeP function(std::string name) {
    if (name == "asin") name = "arcsin";
    if (name == "acos") name = "arccos";
    if (name == "atan") name = "arctan";
    if (name == "lg") name = "log10";
    NodeP base;
    skip();
    if (name == "log" && peek() == '_') {
      ++pos_;
      skip();
      base = peek() == '{' ? group('{', '}') : macro_arg();
    }
    NodeP pow_exp;
    skip();
    if (peek() == '^') {
      ++pos_;
      pow_exp = exponent_arg();
    }
    skip();
    std::vector<NodeP> args;
    if (peek() == '(') {
      ++pos_;
      args.push_back(list_level_no_set());
      while (accept(',')) args.push_back(union_level());
      expect(')');
    } else if (peek() == '{') {
      args.push_back(group('{', '}'));
    } else {
      args.push_back(power());
    }
    if (name == "sqrt") {
      if (args.size() != 1) fail("sqrt takes one argument");
      NodeP r = count(make(Kind::Pow, {args[0], number(Rational(1, 2))}));
      return pow_exp ? count(make(Kind::Pow, {r, pow_exp})) : r;
    }
    if (base) args.push_back(base);
    NodeP f = count(make(Kind::Func, std::move(args), name));
    // \sin^{-1} x is arcsin, \sin^2 x is (sin x)^2.
    if (pow_exp) {
      if (pow_exp->kind == Kind::Neg && pow_exp->kids[0]->kind == Kind::Number && pow_exp->kids[0]->value == 1 &&
          (name == "sin" || name == "cos" || name == "tan")) {
        auto g = std::make_shared<Node>(*f);
        g->name = "arc" + name;
        return g;
      }
      f = count(make(Kind::Pow, {f, pow_exp}));
    }
    return f;
  }

  NodeP list_level_no_set() { return union_level(); }

  // Brackets: ( ) [ ] and mixed intervals; one element in parentheses is grouping.
  NodeP bracket() {
    DepthGuard g(*this);
    char open = s_[pos_++];
    skip();
    std::vector<NodeP> items;
    if (peek() != ')' && peek() != ']') {
      items.push_back(union_level());
      while (accept(',')) items.push_back(union_level());
    }
    skip();
    if (peek() != ')' && peek() != ']') fail("unclosed '" + std::string(1, open) + "'");
    char close = s_[pos_++];
    if (items.size() == 1 && ((open == '(' && close == ')') || (open == '[' && close == ']'))) return items[0];
    auto n = std::make_shared<Node>();
    n->kind = Kind::Tuple;
    n->kids = std::move(items);
    n->open = open;
    n->close = close;
    return count(n);
  }

  NodeP set_literal() {  // after "\{"
    DepthGuard g(*this);
    skip();
    std::vector<NodeP> items;
    if (!(peek() == '\\' && command_is("}"))) {
      items.push_back(union_level());
      while (accept(',')) items.push_back(union_level());
    }
    skip();
    if (!command_is("}")) fail("unclosed '\\{'");
    eat_command();
    auto n = std::make_shared<Node>();
    n->kind = Kind::Set;
    n->kids = std::move(items);
    return count(n);
  }

  NodeP matrix(std::string_view env) {
    DepthGuard g(*this);
    std::vector<std::vector<NodeP>> rows(1);
    if (env == "array") {  // \begin{array}{cc}: skip the column spec
      skip();
      if (peek() == '{') {
        while (!at_end() && s_[pos_] != '}') ++pos_;
        ++pos_;
      }
    }
    while (true) {
      skip();
      if (command_is("end")) {
        eat_command();
        skip();
        if (peek() == '{') {
          while (!at_end() && s_[pos_] != '}') ++pos_;
          ++pos_;
        }
        break;
      }
      if (at_end()) fail("unclosed matrix");
      rows.back().push_back(expr());
      skip();
      if (peek() == '&') {
        ++pos_;
      } else if (starts("\\\\")) {
        pos_ += 2;
        skip();
        if (command_is("end")) continue;  // a trailing \\ before \end
        rows.emplace_back();
      } else if (!command_is("end")) {
        fail("unexpected text in matrix at offset " + std::to_string(pos_));
      }
    }
    size_t cols = rows[0].size();
    for (const auto& r : rows)
      if (r.size() != cols || cols == 0) fail("ragged matrix");
    auto n = std::make_shared<Node>();
    n->kind = Kind::Matrix;
    n->rows = static_cast<int>(rows.size());
    n->cols = static_cast<int>(cols);
    for (auto& r : rows)
      for (auto& c : r) n->kids.push_back(std::move(c));
    return count(n);
  }

  // Mixed number after an integer: "1\frac{4}{5}", "137 \frac{1}{2}" (integer parts only).
  NodeP maybe_mixed(NodeP whole) {
    if (whole->kind != Kind::Number || denominator(whole->value) != 1) return whole;
    size_t save = pos_;
    skip();
    if (!command_is("frac")) return whole;
    eat_command();
    size_t after = pos_;
    try {
      NodeP a = macro_arg();
      NodeP b = macro_arg();
      if (a->kind == Kind::Number && b->kind == Kind::Number && denominator(a->value) == 1 &&
          denominator(b->value) == 1 && b->value != 0 && a->value < b->value) {
        return count(number(whole->value + a->value / b->value));
      }
    } catch (const ParseFail&) {
    }
    (void)after;
    pos_ = save;
    return whole;
  }

  NodeP primary() {
    DepthGuard g(*this);
    skip();
    if (at_end()) fail("unexpected end");
    char c = peek();
    if (is_digit(c) || (c == '.' && pos_ + 1 < s_.size() && is_digit(s_[pos_ + 1]))) {
      NodeP n = number_literal();
      if (peek() == '_') {  // a number in another base: "204_5"
        ++pos_;
        std::string name = "base:" + to_string(*n) + "_" + subscript_text();
        return count(make(Kind::Symbol, {}, name));
      }
      return maybe_mixed(n);
    }
    if (is_alpha(c)) {
      size_t start = pos_;
      while (!at_end() && is_alpha(peek())) ++pos_;
      std::string word(s_.substr(start, pos_ - start));
      if (is_function(word)) return function(word);
      if (word == "pi") return symbol_or_constant("pi");
      if (word == "inf" || word == "infty" || word == "infinity") return count(make(Kind::Infinity));
      // Words of four letters or more are names ("Evelyn", "even"); shorter runs are
      // products of one-letter variables ("xy", "abc").
      if (word.size() >= 4) {
        for (char& ch : word) ch = static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);  // "East" = "east"
        return count(make(Kind::Symbol, {}, word));
      }
      pos_ = start + 1;
      return symbol_or_constant(word.substr(0, 1));
    }
    if (c == '(' || c == '[') return bracket();
    if (c == '{') {
      DepthGuard g2(*this);
      ++pos_;
      skip();
      if (peek() == '}') fail("empty group");
      NodeP n = list_level();
      expect('}');
      if (n->kind == Kind::Set && n->bare) {  // "{1,2}" written with plain braces: a set
        auto m = std::make_shared<Node>(*n);
        m->bare = false;
        return m;
      }
      return n;
    }
    if (c == '|') {
      ++pos_;
      NodeP inner = expr();
      expect('|');
      return count(make(Kind::Func, {inner}, "abs"));
    }
    if (c == '\\') {
      std::string cmd(command());
      if (cmd == "{") {
        eat_command();
        return set_literal();
      }
      eat_command();
      if (cmd == "frac" || cmd == "over") {
        NodeP a = macro_arg();
        NodeP b = macro_arg();
        return count(make(Kind::Mul, {a, count(reciprocal(b))}));
      }
      if (cmd == "sqrt") {
        skip();
        NodeP index;
        if (peek() == '[') {
          ++pos_;
          index = expr();
          expect(']');
        }
        NodeP arg = macro_arg();
        NodeP e = index ? count(reciprocal(index)) : number(Rational(1, 2));
        return count(make(Kind::Pow, {arg, e}));
      }
      if (cmd == "binom" || cmd == "choose") {
        NodeP a = macro_arg();
        NodeP b = macro_arg();
        return count(make(Kind::Func, {a, b}, "binom"));
      }
      if (cmd == "pi") return count(make(Kind::Constant, {}, "pi"));
      if (cmd == "infty" || cmd == "infin") return count(make(Kind::Infinity));
      if (cmd == "emptyset") return count(make(Kind::Set));
      if (cmd == "lfloor" || cmd == "lceil") {
        NodeP inner = expr();
        skip();
        std::string closer = cmd == "lfloor" ? "rfloor" : "rceil";
        if (!command_is(closer)) fail("missing \\" + closer);
        eat_command();
        return count(make(Kind::Func, {inner}, cmd == "lfloor" ? "floor" : "ceil"));
      }
      if (cmd == "operatorname") {
        skip();
        expect('{');
        size_t start = pos_;
        while (!at_end() && peek() != '}') ++pos_;
        std::string name(s_.substr(start, pos_ - start));
        expect('}');
        if (is_function(name)) return function(name);
        return count(make(Kind::Symbol, {}, name));
      }
      if (is_function(cmd)) return function(cmd);
      if (is_greek(cmd)) return symbol_or_constant(cmd);
      if (cmd == "begin") {
        skip();
        expect('{');
        size_t start = pos_;
        while (!at_end() && peek() != '}') ++pos_;
        std::string env(s_.substr(start, pos_ - start));
        expect('}');
        if (env == "pmatrix" || env == "bmatrix" || env == "matrix" || env == "Bmatrix" || env == "vmatrix" ||
            env == "smallmatrix" || env == "array")
          return matrix(env);
        fail("unsupported environment " + env);
      }
      fail("unsupported command \\" + cmd);
    }
    fail(std::string("unexpected '") + c + "' at offset " + std::to_string(pos_));
  }

  std::string_view s_;
  const ParseLimits& lim_;
  size_t pos_ = 0;
  int depth_ = 0;
  int nodes_ = 0;
};

// ---------------------------------------------------------------------------------------
// Exact evaluation

// Bit budget of one exact power: beyond it (10^{10^{10}}) the value is decided numerically.
constexpr double kMaxPowerBits = 1 << 16;

std::optional<Integer> exact_root(const Integer& x, unsigned q) {
  // Integer q-th root of x >= 0 by Newton's method; nullopt when x is not a perfect power.
  if (x < 0) return std::nullopt;
  if (x < 2) return x;
  size_t bits = boost::multiprecision::msb(x) + 1;
  Integer r = Integer(1) << ((bits + q - 1) / q);  // r >= root
  while (true) {
    Integer rq1 = boost::multiprecision::pow(r, q - 1);
    Integer next = ((q - 1) * r + x / rq1) / q;
    if (next >= r) break;
    r = next;
  }
  if (boost::multiprecision::pow(r, q) == x) return r;
  return std::nullopt;
}

double bits_of(const Rational& r) {
  Integer n = abs(numerator(r)), d = denominator(r);
  double bn = n == 0 ? 0 : boost::multiprecision::msb(n) + 1;
  double bd = boost::multiprecision::msb(d) + 1;
  return bn + bd;
}

std::optional<Rational> exact_pow(const Rational& b, const Rational& e) {
  if (denominator(e) == 1) {
    if (abs(numerator(e)) > 100000) {
      if (b == 1) return b;
      if (b == 0 && e > 0) return b;
      return std::nullopt;
    }
    long k = numerator(e).convert_to<long>();
    if (b == 0 && k < 0) return std::nullopt;  // division by zero: not a value
    if (bits_of(b) * std::abs(static_cast<double>(k)) > kMaxPowerBits) return std::nullopt;
    unsigned uk = static_cast<unsigned>(std::abs(k));
    Rational p(boost::multiprecision::pow(numerator(b), uk), boost::multiprecision::pow(denominator(b), uk));
    if (k < 0) p = 1 / p;
    return p;
  }
  // Rational exponent p/q: exact only for perfect q-th powers (sqrt(4), 8^{2/3}).
  Integer q = denominator(e);
  if (q > 64) return std::nullopt;
  unsigned uq = q.convert_to<unsigned>();
  bool neg = b < 0;
  if (neg && uq % 2 == 0) return std::nullopt;  // complex
  auto rn = exact_root(abs(numerator(b)), uq);
  auto rd = exact_root(denominator(b), uq);
  if (!rn || !rd) return std::nullopt;
  Rational root(*rn, *rd);
  if (neg) root = -root;
  return exact_pow(root, Rational(numerator(e)));
}

std::optional<Rational> exact(const Node& n) {
  switch (n.kind) {
    case Kind::Number:
      return n.value;
    case Kind::Neg: {
      auto v = exact(*n.kids[0]);
      if (!v) return std::nullopt;
      return -*v;
    }
    case Kind::Add: {
      Rational acc = 0;
      for (const auto& k : n.kids) {
        auto v = exact(*k);
        if (!v) return std::nullopt;
        acc += *v;
      }
      return acc;
    }
    case Kind::Mul: {
      Rational acc = 1;
      for (const auto& k : n.kids) {
        auto v = exact(*k);
        if (!v) return std::nullopt;
        acc *= *v;
        if (bits_of(acc) > kMaxPowerBits) return std::nullopt;
      }
      return acc;
    }
    case Kind::Pow: {
      auto b = exact(*n.kids[0]);
      if (!b) return std::nullopt;
      auto e = exact(*n.kids[1]);
      if (!e) return std::nullopt;
      return exact_pow(*b, *e);
    }
    case Kind::Factorial: {
      auto v = exact(*n.kids[0]);
      if (!v || denominator(*v) != 1 || *v < 0 || *v > 2000) return std::nullopt;
      Integer f = 1;
      for (long k = 2; k <= v->convert_to<long>(); ++k) f *= k;
      return Rational(f);
    }
    case Kind::Func: {
      if (n.name == "abs" && n.kids.size() == 1) {
        auto v = exact(*n.kids[0]);
        if (!v) return std::nullopt;
        return abs(*v);
      }
      if ((n.name == "floor" || n.name == "ceil") && n.kids.size() == 1) {
        auto v = exact(*n.kids[0]);
        if (!v) return std::nullopt;
        Integer q = numerator(*v) / denominator(*v);  // truncates toward zero
        Rational t(q);
        if (n.name == "floor" && t > *v) t -= 1;
        if (n.name == "ceil" && t < *v) t += 1;
        return t;
      }
      if (n.name == "binom" && n.kids.size() == 2) {
        auto a = exact(*n.kids[0]);
        auto b = exact(*n.kids[1]);
        if (!a || !b || denominator(*a) != 1 || denominator(*b) != 1 || *b < 0 || *a > 100000) return std::nullopt;
        long nn = a->convert_to<long>(), kk = b->convert_to<long>();
        if (kk > nn && nn >= 0) return Rational(0);
        if (kk > 5000) return std::nullopt;
        Rational r = 1;
        for (long j = 1; j <= kk; ++j) r = r * (nn - kk + j) / j;
        return r;
      }
      return std::nullopt;
    }
    default:
      return std::nullopt;
  }
}

// ---------------------------------------------------------------------------------------
// Numeric evaluation

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Complex numeric(const Node& n, const std::vector<std::pair<std::string, Complex>>& vars) {
  switch (n.kind) {
    case Kind::Number:
      return {n.value.convert_to<double>(), 0};
    case Kind::Symbol:
      for (const auto& v : vars)
        if (v.first == n.name) return v.second;
      return {kNaN, kNaN};
    case Kind::Constant:
      if (n.name == "pi") return {M_PI, 0};
      if (n.name == "e") return {M_E, 0};
      return {0, 1};
    case Kind::Infinity:
      return {std::numeric_limits<double>::infinity(), 0};
    case Kind::Neg:
      return -numeric(*n.kids[0], vars);
    case Kind::Add: {
      Complex acc = 0;
      for (const auto& k : n.kids) acc += numeric(*k, vars);
      return acc;
    }
    case Kind::Mul: {
      Complex acc = 1;
      for (const auto& k : n.kids) {
        Complex v = numeric(*k, vars);
        // inf * 0 and similar stay NaN; a real product keeps a zero imaginary part.
        acc = (acc.imag() == 0 && v.imag() == 0) ? Complex(acc.real() * v.real(), 0) : acc * v;
      }
      return acc;
    }
    case Kind::Pow: {
      Complex b = numeric(*n.kids[0], vars);
      const Node& en = *n.kids[1];
      auto e_exact = exact(en);
      if (e_exact && b.imag() == 0) {
        // Real base and rational exponent p/q with odd q: the real root (cube root of -8 is -2).
        Integer q = denominator(*e_exact);
        double e = e_exact->convert_to<double>();
        if (b.real() >= 0) return {std::pow(b.real(), e), 0};
        if (q % 2 == 1) {
          double mag = std::pow(-b.real(), e);
          bool odd_p = (numerator(*e_exact) % 2) != 0;
          return {odd_p ? -mag : mag, 0};
        }
      }
      Complex e = numeric(en, vars);
      if (b == Complex(0, 0)) return e.real() > 0 ? Complex(0, 0) : Complex(kNaN, kNaN);
      if (b.imag() == 0 && e.imag() == 0 && b.real() > 0) return {std::pow(b.real(), e.real()), 0};
      return std::pow(b, e);
    }
    case Kind::Factorial: {
      Complex v = numeric(*n.kids[0], vars);
      return {std::tgamma(v.real() + 1), 0};
    }
    case Kind::Func: {
      std::vector<Complex> a;
      for (const auto& k : n.kids) a.push_back(numeric(*k, vars));
      const std::string& f = n.name;
      Complex x = a.empty() ? Complex(kNaN, 0) : a[0];
      auto real_fn = [&](double (*fn)(double), Complex (*cfn)(const Complex&)) -> Complex {
        if (x.imag() == 0) return {fn(x.real()), 0};
        return cfn(x);
      };
      if (f == "sin") return real_fn(std::sin, std::sin);
      if (f == "cos") return real_fn(std::cos, std::cos);
      if (f == "tan") return real_fn(std::tan, std::tan);
      if (f == "sec") return 1.0 / real_fn(std::cos, std::cos);
      if (f == "csc") return 1.0 / real_fn(std::sin, std::sin);
      if (f == "cot") return 1.0 / real_fn(std::tan, std::tan);
      if (f == "sinh") return real_fn(std::sinh, std::sinh);
      if (f == "cosh") return real_fn(std::cosh, std::cosh);
      if (f == "tanh") return real_fn(std::tanh, std::tanh);
      if (f == "arcsin") return std::asin(x);
      if (f == "arccos") return std::acos(x);
      if (f == "arctan") return std::atan(x);
      if (f == "exp") return real_fn(std::exp, std::exp);
      if (f == "abs") return {std::abs(x), 0};
      if (f == "floor") return {std::floor(x.real()), 0};
      if (f == "ceil") return {std::ceil(x.real()), 0};
      if (f == "ln" || f == "log" || f == "log10") {
        Complex l = (x.imag() == 0 && x.real() > 0) ? Complex(std::log(x.real()), 0) : std::log(x);
        if (f == "log10") return l / std::log(10.0);
        if (a.size() == 2) {  // \log_b x
          Complex lb = (a[1].imag() == 0 && a[1].real() > 0) ? Complex(std::log(a[1].real()), 0) : std::log(a[1]);
          return l / lb;
        }
        return l;
      }
      if (f == "binom" && a.size() == 2) {
        double nn = a[0].real(), kk = a[1].real();
        return {std::tgamma(nn + 1) / (std::tgamma(kk + 1) * std::tgamma(nn - kk + 1)), 0};
      }
      if ((f == "max" || f == "min") && !a.empty()) {
        double best = a[0].real();
        for (const auto& v : a) best = f == "max" ? std::max(best, v.real()) : std::min(best, v.real());
        return {best, 0};
      }
      return {kNaN, kNaN};
    }
    default:
      return {kNaN, kNaN};
  }
}

void collect_symbols(const Node& n, std::vector<std::string>& out) {
  if (n.kind == Kind::Symbol) out.push_back(n.name);
  for (const auto& k : n.kids) collect_symbols(*k, out);
}

}  // namespace

// ---------------------------------------------------------------------------------------

ParseResult parse_answer(std::string_view normalized, const ParseLimits& limits) {
  ParseResult r;
  if (normalized.size() > limits.max_length) {
    r.error = "answer longer than " + std::to_string(limits.max_length) + " characters";
    return r;
  }
  try {
    Parser p(normalized, limits);
    r.node = p.parse();
  } catch (const ParseFail& f) {
    r.error = f.why;
  }
  return r;
}

std::optional<Rational> exact_value(const Node& n) { return exact(n); }

Complex numeric_value(const Node& n, const std::vector<std::pair<std::string, Complex>>& vars) {
  return numeric(n, vars);
}

std::vector<std::string> free_symbols(const Node& n) {
  std::vector<std::string> out;
  collect_symbols(n, out);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

bool has_infinity(const Node& n) {
  if (n.kind == Kind::Infinity) return true;
  for (const auto& k : n.kids)
    if (has_infinity(*k)) return true;
  return false;
}

bool has_decimal(const Node& n) {
  if (n.kind == Kind::Number && n.decimal) return true;
  for (const auto& k : n.kids)
    if (has_decimal(*k)) return true;
  return false;
}

std::string to_string(const Node& n) {
  auto join = [&](const char* sep) {
    std::string s;
    for (size_t i = 0; i < n.kids.size(); ++i) {
      if (i) s += sep;
      s += to_string(*n.kids[i]);
    }
    return s;
  };
  switch (n.kind) {
    case Kind::Number: {
      std::string s = numerator(n.value).str();
      if (denominator(n.value) != 1) s += "/" + denominator(n.value).str();
      return s;
    }
    case Kind::Symbol:
    case Kind::Constant:
      return n.name;
    case Kind::Infinity:
      return "inf";
    case Kind::Add:
      return "(+ " + join(" ") + ")";
    case Kind::Mul:
      return "(* " + join(" ") + ")";
    case Kind::Pow:
      return "(^ " + join(" ") + ")";
    case Kind::Neg:
      return "(- " + join(" ") + ")";
    case Kind::Func:
      return "(" + n.name + " " + join(" ") + ")";
    case Kind::Factorial:
      return "(! " + join(" ") + ")";
    case Kind::PlusMinus:
      return "(+- " + join(" ") + ")";
    case Kind::Tuple:
      return std::string(1, n.open) + join(", ") + std::string(1, n.close);
    case Kind::Set:
      return (n.bare ? "list{" : "set{") + join(", ") + "}";
    case Kind::Union:
      return "(union " + join(" ") + ")";
    case Kind::Matrix:
      return "matrix" + std::to_string(n.rows) + "x" + std::to_string(n.cols) + "[" + join(", ") + "]";
    case Kind::Relation:
      return "(" + n.name + " " + join(" ") + ")";
    case Kind::Choice:
      return "choice(" + n.name + ")";
  }
  return "?";
}

}  // namespace retort::rewards::math
