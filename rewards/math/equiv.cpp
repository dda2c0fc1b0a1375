// Mathematical equivalence of answers (see equiv.h).
#include "rewards/math/equiv.h"

#include <algorithm>  // defines: std::sort, std::unique, std::max
#include <cmath>   // defines: std::isnan, std::isfinite
#include <cctype>  // defines: std::isdigit, std::isalpha
#include <cstdint> // defines: uint64_t
#include <string>  // defines: std::char_traits

#include "rewards/math/normalize.h"  // defines: normalize_answer, text_key

namespace retort::rewards::math {

namespace {

bool is_scalar(Kind k) {
  switch (k) {
    case Kind::Number: case Kind::Symbol: case Kind::Constant: case Kind::Infinity: case Kind::Add:
    case Kind::Mul: case Kind::Pow: case Kind::Neg: case Kind::Func: case Kind::Factorial:
      return true;
    default:
      return false;
  }
}

bool contains_pm(const Node& n) {
  if (n.kind == Kind::PlusMinus) return true;
  for (const auto& k : n.kids)
    if (contains_pm(*k)) return true;
  return false;
}

// All sign choices of the ± inside a scalar tree (at most `cap` of them).
std::vector<NodeP> expand_pm(const NodeP& n, size_t cap) {
  if (!contains_pm(*n)) return {n};
  if (n->kind == Kind::PlusMinus) {
    std::vector<NodeP> out;
    for (const auto& a : expand_pm(n->kids[0], cap))
      for (const auto& b : expand_pm(n->kids[1], cap)) {
        if (out.size() + 2 > cap) return out;
        auto plus = std::make_shared<Node>();
        plus->kind = Kind::Add;
        plus->kids = {a, b};
        auto neg = std::make_shared<Node>();
        neg->kind = Kind::Neg;
        neg->kids = {b};
        auto minus = std::make_shared<Node>();
        minus->kind = Kind::Add;
        minus->kids = {a, neg};
        out.push_back(plus);
        out.push_back(minus);
      }
    return out;
  }
  // Cartesian product over the children.
  std::vector<NodeP> out{n};
  for (size_t i = 0; i < n->kids.size(); ++i) {
    auto alts = expand_pm(n->kids[i], cap);
    if (alts.size() == 1) continue;
    std::vector<NodeP> next;
    for (const auto& partial : out)
      for (const auto& alt : alts) {
        if (next.size() >= cap) break;
        auto copy = std::make_shared<Node>(*partial);
        copy->kids[i] = alt;
        next.push_back(copy);
      }
    out.swap(next);
  }
  return out;
}

// Turns "1 \pm \sqrt 5" into the list {1 + sqrt 5, 1 - sqrt 5}, and splices such
// alternatives into the sets and lists that hold them.
NodeP lift_pm(const NodeP& n) {
  constexpr size_t kCap = 16;
  if (!contains_pm(*n)) return n;
  if (n->kind == Kind::Set) {
    auto s = std::make_shared<Node>(*n);
    s->kids.clear();
    for (const auto& k : n->kids) {
      NodeP lifted = lift_pm(k);
      if (lifted->kind == Kind::Set && lifted->bare && contains_pm(*k) && k->kind != Kind::Set) {
        for (const auto& alt : lifted->kids) s->kids.push_back(alt);
      } else {
        s->kids.push_back(lifted);
      }
    }
    return s;
  }
  if (is_scalar(n->kind) || n->kind == Kind::PlusMinus) {
    auto alts = expand_pm(n, kCap);
    if (alts.size() == 1) return alts[0];
    auto s = std::make_shared<Node>();
    s->kind = Kind::Set;
    s->bare = true;
    s->kids = std::move(alts);
    return s;
  }
  auto c = std::make_shared<Node>(*n);
  for (auto& k : c->kids) k = lift_pm(k);
  return c;
}

uint64_t splitmix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t hash_name(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

class Comparer {
 public:
  explicit Comparer(const EquivOptions& opt) : opt_(opt) {}
  std::string method = "structure";

  bool close(Complex x, Complex y, bool inf_ok) const {
    if (std::isnan(x.real()) || std::isnan(x.imag()) || std::isnan(y.real()) || std::isnan(y.imag())) return false;
    bool fx = std::isfinite(x.real()) && std::isfinite(x.imag());
    bool fy = std::isfinite(y.real()) && std::isfinite(y.imag());
    if (!fx || !fy) return inf_ok && x == y;  // overflow is not a value: 10^{10^{10}} decides nothing
    double diff = std::abs(x - y);
    double scale = std::max(std::abs(x), std::abs(y));
    return diff <= opt_.abs_tol || diff <= opt_.rel_tol * scale;
  }

  // Values at `opt_.random_points` deterministic points in [0.5, 3) per variable.
  std::vector<std::pair<std::string, Complex>> point(const std::vector<std::string>& syms, int p) const {
    std::vector<std::pair<std::string, Complex>> vars;
    for (const auto& s : syms) {
      uint64_t h = splitmix(hash_name(s) ^ splitmix(static_cast<uint64_t>(p) + 1));
      double u = static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
      vars.emplace_back(s, Complex(0.5 + 2.5 * u, 0));
    }
    return vars;
  }

  std::vector<std::string> symbols_of(const Node& a, const Node& b) const {
    auto sa = free_symbols(a), sb = free_symbols(b);
    sa.insert(sa.end(), sb.begin(), sb.end());
    std::sort(sa.begin(), sa.end());
    sa.erase(std::unique(sa.begin(), sa.end()), sa.end());
    return sa;
  }

  // Scalar equality: exact rationals, numeric values, or random points.
  //
  // One numeric rule: a number written in decimal notation is a rounding, so against a
  // non-integer value it compares with the tolerance, whether that value is rational or not
  // (0.0833333333333333 = 1/12 as 3.14159265 = \pi); an integer value compares exactly
  // (5 != 5.0000001, 1000000 != 1000000.4), as in the code verifier. Fractions written as
  // fractions compare exactly (333333/1000000 != 1/3).
  bool scalar(const Node& a, const Node& b) {
    auto ea = exact_value(a);
    if (ea) {
      auto eb = exact_value(b);
      if (eb) {
        method = "exact";
        if (*ea == *eb) return true;
        bool integer = denominator(*ea) == 1 || denominator(*eb) == 1;
        if (integer || !(has_decimal(a) || has_decimal(b))) return false;
        method = "numeric";
        return close(Complex(ea->convert_to<double>(), 0), Complex(eb->convert_to<double>(), 0), false);
      }
    }
    // Non-finite values are equal only when both sides write \infty: an overflow (10^{400},
    // 10^{10^{10}}) or a division by zero (\frac{1}{0}) is never a value.
    bool inf_ok = has_infinity(a) && has_infinity(b);
    auto syms = symbols_of(a, b);
    if (syms.empty()) {
      method = "numeric";
      return close(numeric_value(a, {}), numeric_value(b, {}), inf_ok);
    }
    method = "random_points";
    int valid = 0;
    for (int p = 0; p < opt_.random_points; ++p) {
      auto vars = point(syms, p);
      Complex va = numeric_value(a, vars), vb = numeric_value(b, vars);
      bool ok_a = std::isfinite(va.real()) && std::isfinite(va.imag());
      bool ok_b = std::isfinite(vb.real()) && std::isfinite(vb.imag());
      if (!ok_a || !ok_b) {
        if (ok_a != ok_b) return false;  // defined on one side only
        continue;
      }
      if (!close(va, vb, false)) return false;
      ++valid;
    }
    return valid >= 2;
  }

  // Equations a = b and c = d state the same thing when a - b is a constant non-zero
  // multiple of c - d ("5x - 7y = -4" against "10x - 14y + 8 = 0").
  bool proportional(const Node& l1, const Node& r1, const Node& l2, const Node& r2, bool positive) {
    auto diff = [](const Node& l, const Node& r) {
      auto neg = std::make_shared<Node>();
      neg->kind = Kind::Neg;
      neg->kids = {std::make_shared<Node>(r)};
      Node d;
      d.kind = Kind::Add;
      d.kids = {std::make_shared<Node>(l), neg};
      return d;
    };
    Node d1 = diff(l1, r1), d2 = diff(l2, r2);
    auto syms = symbols_of(d1, d2);
    if (syms.empty()) return false;
    method = "random_points";
    Complex ratio(0, 0);
    int valid = 0;
    for (int p = 0; p < opt_.random_points; ++p) {
      auto vars = point(syms, p);
      Complex v1 = numeric_value(d1, vars), v2 = numeric_value(d2, vars);
      if (!std::isfinite(v1.real()) || !std::isfinite(v2.real()) || std::abs(v2) < 1e-12) continue;
      Complex r = v1 / v2;
      if (valid == 0) {
        if (std::abs(r) < 1e-12) return false;
        if (positive && !(r.real() > 0 && std::abs(r.imag()) < 1e-12)) return false;
        ratio = r;
      } else if (!close(r, ratio, false)) {
        return false;
      }
      ++valid;
    }
    return valid >= 2;
  }

  bool unordered(const std::vector<NodeP>& a, const std::vector<NodeP>& b) {
    if (a.size() != b.size() || a.size() > 256) return false;
    std::vector<bool> used(b.size(), false);
    for (const auto& x : a) {
      bool found = false;
      for (size_t j = 0; j < b.size() && !found; ++j) {
        if (!used[j] && eq(*x, *b[j])) used[j] = found = true;
      }
      if (!found) return false;
    }
    method = "structure";
    return true;
  }

  bool ordered(const std::vector<NodeP>& a, const std::vector<NodeP>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!eq(*a[i], *b[i])) return false;
    method = "structure";
    return true;
  }

  static bool is_var(const Node& n) { return n.kind == Kind::Symbol; }

  // A name for a value, not an expression to solve: a variable, a tuple of variables
  // ("(p,q)"), a product or quotient of names ("AB", "NO/BO", "f(x)"), a function of names
  // ("|AB|"). "a + 3z" and "2x" are not labels.
  static bool is_label(const Node& n) {
    switch (n.kind) {
      case Kind::Symbol: return true;
      case Kind::Tuple:
      case Kind::Mul:
      case Kind::Func:
        for (const auto& k : n.kids)
          if (!is_label(*k)) return false;
        return !n.kids.empty();
      case Kind::Pow:  // a reciprocal, from a quotient
        return is_label(*n.kids[0]) && n.kids[1]->kind == Kind::Number && n.kids[1]->value == -1;
      default: return false;
    }
  }

  bool all_same(const std::vector<NodeP>& kids) {
    if (kids.size() > 8) return false;
    for (size_t i = 1; i < kids.size(); ++i)
      if (!is_scalar(kids[i]->kind) || !eq(*kids[0], *kids[i])) return false;
    return is_scalar(kids[0]->kind);
  }

  bool eq(const Node& a, const Node& b) {
    // Multiple choice: "(C)" against "(C)" or a bare "C".
    if (a.kind == Kind::Choice || b.kind == Kind::Choice) {
      method = "choice";
      const Node& c = a.kind == Kind::Choice ? a : b;
      const Node& o = a.kind == Kind::Choice ? b : a;
      return (o.kind == Kind::Choice || o.kind == Kind::Symbol) && o.name == c.name;
    }
    if (a.kind == Kind::Relation && b.kind == Kind::Relation) {
      const Node &l1 = *a.kids[0], &r1 = *a.kids[1], &l2 = *b.kids[0], &r2 = *b.kids[1];
      auto flipped = [](const std::string& op) {
        if (op == "<") return std::string(">");
        if (op == ">") return std::string("<");
        if (op == "\\le") return std::string("\\ge");
        if (op == "\\ge") return std::string("\\le");
        return op;
      };
      if (a.name == b.name && eq(l1, l2) && eq(r1, r2)) return true;
      if (flipped(a.name) == b.name && eq(l1, r2) && eq(r1, l2)) return true;
      if (a.name == "=" && b.name == "=") {
        // "y = 2x + 3" against "y = 3 + 2x" went above; same variable on the left, different right: no.
        if (is_var(l1) && is_var(l2) && l1.name == l2.name) return false;
        return proportional(l1, r1, l2, r2, /*positive=*/false);
      }
      // Inequalities of one strictness: "x < 1" against "-x > -1" when l - r of one is a
      // positive multiple of the other's, both written as "... < 0".
      auto less_form = [](const std::string& op, int& strict) {
        if (op == "<" || op == ">") strict = 1;
        else if (op == "\\le" || op == "\\ge") strict = 0;
        else return 0;
        return (op == "<" || op == "\\le") ? 1 : -1;
      };
      int s1 = -1, s2 = -1;
      int d1 = less_form(a.name, s1), d2 = less_form(b.name, s2);
      if (d1 != 0 && d2 != 0 && s1 == s2) {
        return d1 == d2 ? proportional(l1, r1, l2, r2, /*positive=*/true) : proportional(l1, r1, r2, l2, /*positive=*/true);
      }
      return false;
    }
    // "x = 3" against "3": the value assigned to a variable; and a labelled answer
    // ("(p,q) = (3,2)", "|AB| = 1", "f(x) = 1") against its value: the side without variables.
    if (a.kind == Kind::Relation || b.kind == Kind::Relation) {
      const Node& r = a.kind == Kind::Relation ? a : b;
      const Node& o = a.kind == Kind::Relation ? b : a;
      if (r.name != "=" || o.kind == Kind::Relation) return false;
      if (is_var(*r.kids[0])) return eq(*r.kids[1], o);
      if (is_var(*r.kids[1])) return eq(*r.kids[0], o);
      if (free_symbols(o).empty()) {
        if (is_label(*r.kids[0]) && free_symbols(*r.kids[1]).empty()) return eq(*r.kids[1], o);
        if (is_label(*r.kids[1]) && free_symbols(*r.kids[0]).empty()) return eq(*r.kids[0], o);
      }
      return false;
    }
    if (a.kind == Kind::Set && b.kind == Kind::Set) return unordered(a.kids, b.kids);
    if (a.kind == Kind::Union && b.kind == Kind::Union) return unordered(a.kids, b.kids);
    if (a.kind == Kind::Tuple && b.kind == Kind::Tuple)
      return a.open == b.open && a.close == b.close && ordered(a.kids, b.kids);
    // A bare list "3, 5" against a tuple "(3, 5)": the tuple's order.
    if (a.kind == Kind::Set && a.bare && b.kind == Kind::Tuple) return ordered(a.kids, b.kids);
    if (b.kind == Kind::Set && b.bare && a.kind == Kind::Tuple) return ordered(a.kids, b.kids);
    if (a.kind == Kind::Matrix && b.kind == Kind::Matrix)
      return a.rows == b.rows && a.cols == b.cols && ordered(a.kids, b.kids);
    // A row or column vector against a parenthesised tuple.
    if ((a.kind == Kind::Matrix && b.kind == Kind::Tuple) || (a.kind == Kind::Tuple && b.kind == Kind::Matrix)) {
      const Node& m = a.kind == Kind::Matrix ? a : b;
      const Node& t = a.kind == Kind::Matrix ? b : a;
      if ((m.rows == 1 || m.cols == 1) && t.open == '(' && t.close == ')') return ordered(m.kids, t.kids);
      return false;
    }
    // A bare list of one value written several ways ("15\frac{39}{40}, \frac{639}{40}") against
    // a scalar: that value. A list of different values stays a list (no credit for hedging).
    if (a.kind == Kind::Set && a.bare && a.kids.size() > 1 && is_scalar(b.kind) && all_same(a.kids)) return eq(*a.kids[0], b);
    if (b.kind == Kind::Set && b.bare && b.kids.size() > 1 && is_scalar(a.kind) && all_same(b.kids)) return eq(a, *b.kids[0]);
    // A one-element set or list against a scalar.
    if (a.kind == Kind::Set && a.kids.size() == 1 && is_scalar(b.kind)) return eq(*a.kids[0], b);
    if (b.kind == Kind::Set && b.kids.size() == 1 && is_scalar(a.kind)) return eq(a, *b.kids[0]);
    if (is_scalar(a.kind) && is_scalar(b.kind)) return scalar(a, b);
    return false;
  }

 private:
  const EquivOptions& opt_;
};

std::string strip_spaces(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s)
    if (c != ' ') out.push_back(c);
  return out;
}

}  // namespace

namespace {

// The top-level (outside brackets) relation signs of a normalised answer: position, length
// and the sign ("=", "\\approx", "<", ">", "\\le", "\\ge", "\\ne").
struct RelationSign {
  size_t pos, len;
  std::string op;
};

std::vector<RelationSign> top_level_relations(const std::string& s) {
  std::vector<RelationSign> out;
  int depth = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '(' || c == '[' || c == '{') ++depth;
    else if (c == ')' || c == ']' || c == '}') --depth;
    if (depth != 0) continue;
    if (c == '=' || c == '<' || c == '>') {
      out.push_back({i, 1, std::string(1, c)});
    } else if (c == '\\') {
      for (const char* op : {"\\approx", "\\le", "\\ge", "\\ne"}) {
        size_t n = std::char_traits<char>::length(op);
        if (s.compare(i, n, op) == 0 && !(i + n < s.size() && std::isalpha(static_cast<unsigned char>(s[i + n])))) {
          out.push_back({i, n, op});
          break;
        }
      }
    }
  }
  return out;
}

bool top_level_comma(const std::string& s) {
  int depth = 0;
  for (char c : s) {
    if (c == '(' || c == '[' || c == '{') ++depth;
    else if (c == ')' || c == ']' || c == '}') --depth;
    else if (c == ',' && depth == 0) return true;
  }
  return false;
}

bool has_digit(std::string_view s) { return s.find_first_of("0123456789") != std::string_view::npos; }

std::string trimmed(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return std::string(s);
}

// A chain of equalities states its last value: "x = 5+5+1 = 11" is "x = 11" (the name kept
// when the first side has no number), "1 = \\zzz = x = 0" is "0". An approximation after an
// exact value is dropped ("x = 1/3 \\approx 0.33" is "x = 1/3"); an approximation alone is
// the value ("x \\approx 11" is "x = 11").
std::string resolve_chain(const std::string& s) {
  auto rel = top_level_relations(s);
  if (rel.size() < 1 || top_level_comma(s)) return s;  // "AB = 4, CD = 5" is a list
  for (const auto& r : rel)
    if (r.op != "=" && r.op != "\\approx") return s;
  std::vector<std::string> parts;
  std::vector<std::string> ops;
  size_t from = 0;
  for (const auto& r : rel) {
    parts.push_back(trimmed(std::string_view(s).substr(from, r.pos - from)));
    ops.push_back(r.op);
    from = r.pos + r.len;
  }
  parts.push_back(trimmed(std::string_view(s).substr(from)));
  // Drop everything from the first \approx that follows an exact '='.
  for (size_t k = 0; k < ops.size(); ++k) {
    if (ops[k] == "\\approx" && k > 0) {
      parts.resize(k + 1);
      ops.resize(k);
      break;
    }
  }
  if (parts.size() == 2) return parts[0] + " = " + parts[1];
  if (parts.size() < 2) return parts.empty() ? s : parts[0];
  if (!has_digit(parts.front())) return parts.front() + " = " + parts.back();
  return parts.back();
}

// A gold written as a chain of inequalities around one expression ("-2 \\le x \\le 7",
// "0 < f(x) < 1") is the interval it describes: "[-2, 7]", "(0, 1)". Only the gold is read so,
// as Math-Verify does by default: a candidate inequality against an interval gold stays unequal.
std::string chain_to_interval(const std::string& s) {
  auto rel = top_level_relations(s);
  if (rel.size() != 2 || top_level_comma(s)) return s;
  auto dir = [](const std::string& op) { return op == "<" || op == "\\le" ? 1 : op == ">" || op == "\\ge" ? -1 : 0; };
  int d = dir(rel[0].op);
  if (d == 0 || dir(rel[1].op) != d) return s;
  std::string a = trimmed(std::string_view(s).substr(0, rel[0].pos));
  std::string b = trimmed(std::string_view(s).substr(rel[1].pos + rel[1].len));
  bool closed_a = rel[0].op == "\\le" || rel[0].op == "\\ge", closed_b = rel[1].op == "\\le" || rel[1].op == "\\ge";
  if (d < 0) std::swap(a, b), std::swap(closed_a, closed_b);
  return std::string(closed_a ? "[" : "(") + a + ", " + b + (closed_b ? "]" : ")");
}

// "1000,99" against "1000.99": a single comma between digits is a decimal comma when the
// other side writes the same number with a point.
bool decimal_comma_of(const std::string& comma, const std::string& point) {
  size_t c = comma.find(',');
  if (c == std::string::npos || comma.find(',', c + 1) != std::string::npos) return false;
  for (size_t i = 0; i < comma.size(); ++i)
    if (!(std::isdigit(static_cast<unsigned char>(comma[i])) || i == c || (i == 0 && comma[i] == '-'))) return false;
  if (c == 0 || c + 1 >= comma.size() || !std::isdigit(static_cast<unsigned char>(comma[c - 1]))) return false;
  std::string swapped = comma;
  swapped[c] = '.';
  return swapped == point;
}

}  // namespace

bool nodes_equivalent(const Node& gold, const Node& candidate, const EquivOptions& opt) {
  Comparer c(opt);
  return c.eq(*lift_pm(std::make_shared<Node>(gold)), *lift_pm(std::make_shared<Node>(candidate)));
}

EquivResult answers_equivalent(std::string_view gold, std::string_view candidate, const EquivOptions& opt) {
  EquivResult r;
  // Megabytes of candidate text are refused before any copying beyond the cap.
  if (candidate.size() > 8 * opt.limits.max_length) {
    r.method = "none";
    r.note = "candidate answer longer than " + std::to_string(8 * opt.limits.max_length) + " characters";
    return r;
  }
  std::string gold_units, candidate_units;
  r.gold_normalized = normalize_answer(gold, &gold_units);
  r.candidate_normalized = normalize_answer(candidate, &candidate_units);
  if (r.candidate_normalized.empty()) {
    r.method = "none";
    r.note = "empty answer";
    return r;
  }
  // Units compare as units: the same units on both sides, or units on one side only (a gold
  // of "10" against "10 cm"); different units make the pair not comparable ("10 cm" against
  // "10 m", "30^\circ" against "30 \text{ rad}").
  if (!gold_units.empty() && !candidate_units.empty() && gold_units != candidate_units) {
    r.method = "units";
    r.note = "units differ: '" + gold_units + "' vs '" + candidate_units + "'";
    return r;
  }
  // Words compare as text, not as products of one-letter variables ("no" vs "on").
  if (is_word_answer(r.gold_normalized) || is_word_answer(r.candidate_normalized)) {
    r.method = "text";
    r.equal = text_key(r.gold_normalized) == text_key(r.candidate_normalized);
    return r;
  }
  if (strip_spaces(r.gold_normalized) == strip_spaces(r.candidate_normalized)) {
    r.equal = true;
    r.method = "string";
    return r;
  }
  if (decimal_comma_of(r.gold_normalized, r.candidate_normalized) ||
      decimal_comma_of(r.candidate_normalized, r.gold_normalized)) {
    r.equal = true;
    r.method = "decimal_comma";
    return r;
  }
  const std::string gold_text = chain_to_interval(resolve_chain(r.gold_normalized));
  const std::string candidate_text = resolve_chain(r.candidate_normalized);
  ParseResult pg = parse_answer(gold_text, opt.limits);
  ParseResult pc = parse_answer(candidate_text, opt.limits);
  if (!pg.node || !pc.node) {
    r.method = "text";
    r.equal = text_key(r.gold_normalized) == text_key(r.candidate_normalized);
    if (!pg.node) r.note = "gold does not parse: " + pg.error;
    if (!pc.node) r.note += std::string(r.note.empty() ? "" : "; ") + "answer does not parse: " + pc.error;
    return r;
  }
  Comparer c(opt);
  r.equal = c.eq(*lift_pm(pg.node), *lift_pm(pc.node));
  r.method = c.method;
  if (!r.equal) {
    r.note = "gold " + to_string(*pg.node) + " vs answer " + to_string(*pc.node);
    if (r.note.size() > 400) r.note = r.note.substr(0, 400) + "...";
  }
  return r;
}

}  // namespace retort::rewards::math
