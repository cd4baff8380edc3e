// The chat-template subset of Jinja (see chat_template.h): a lexer that applies whitespace control,
// trim_blocks and lstrip_blocks; a recursive-descent parser into statement nodes and expression
// trees (everything outside the subset is refused here, at load time); an evaluator whose values are
// JSON values (undefined: a discarded JSON value).
#include "tokenizer/chat_template.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <functional>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "tokenizer/tokenizer.h"

namespace moepp {

using nlohmann::json;

namespace {

// Limits that keep a hostile template from exhausting the stack or memory: how deeply expressions and
// blocks may nest (checked when parsing), and how long a rendered text, string or list may grow.
constexpr int kMaxNesting = 200;
constexpr size_t kMaxTextBytes = size_t{16} << 20;
constexpr size_t kMaxListItems = size_t{1} << 20;

// Counts one level of nesting for as long as it lives; throws past kMaxNesting.
class Nesting {
 public:
  Nesting(int& depth, const std::function<Error(const std::string&)>& fail) : depth_(depth) {
    if (++depth_ > kMaxNesting) throw fail("nested more than " + std::to_string(kMaxNesting) + " levels deep");
  }
  ~Nesting() { --depth_; }
  Nesting(const Nesting&) = delete;
  Nesting& operator=(const Nesting&) = delete;

 private:
  int& depth_;
};

json undefined() { return json(json::value_t::discarded); }
bool is_undefined(const json& v) { return v.is_discarded(); }

bool truthy(const json& v) {
  if (is_undefined(v) || v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number_integer()) return v.get<int64_t>() != 0;
  if (v.is_number()) return v.get<double>() != 0.0;
  if (v.is_string()) return !v.get_ref<const std::string&>().empty();
  return !v.empty();
}

// A value as Python's repr() writes it (inside lists and dicts).
std::string repr(const json& v) {
  if (v.is_string()) {
    std::string out = "'";
    for (char c : v.get_ref<const std::string&>()) {
      if (c == '\\' || c == '\'') out += '\\';
      if (c == '\n') {
        out += "\\n";
        continue;
      }
      out += c;
    }
    return out + "'";
  }
  if (v.is_null()) return "None";
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_array() || v.is_object()) {
    std::string out = v.is_array() ? "[" : "{";
    bool first = true;
    for (auto it = v.begin(); it != v.end(); ++it) {
      out += first ? "" : ", ";
      first = false;
      if (v.is_object()) out += repr(it.key()) + ": ";
      out += repr(*it);
    }
    return out + (v.is_array() ? "]" : "}");
  }
  return v.dump();
}

// A value as {{ }} prints it (Python's str()).
std::string to_text(const json& v) {
  if (is_undefined(v)) return "";
  if (v.is_string()) return v.get<std::string>();
  return repr(v);
}

// ---- Expressions ----------------------------------------------------------------------------------

struct Expr;
using ExprP = std::shared_ptr<const Expr>;
struct Expr {
  enum Kind { kLiteral, kName, kList, kAttr, kIndex, kSlice, kCall, kMethod, kFilter, kUnary, kBinary, kTest, kIf };
  Kind kind;
  json value;               // literal
  std::string name;         // name, attribute, method, filter, test, operator
  std::vector<ExprP> args;  // operands / arguments (slice: object, start, stop, step; null entries allowed)
  bool negate = false;      // `is not`, `not in`
};

struct Token {
  enum Kind { kName, kString, kInt, kOp, kEnd } kind;
  std::string text;
  int64_t number = 0;
};

// Tokens of one {{ }} or {% %} tag's inside.
std::vector<Token> lex_expr(const std::string& s, const std::function<Error(const std::string&)>& fail) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Token::kName, s.substr(i, j - i)});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      if (j < s.size() && s[j] == '.') throw fail("floating-point literals are outside the supported subset");
      Token t{Token::kInt, s.substr(i, j - i)};
      for (char d : t.text) {
        if (t.number > (std::numeric_limits<int64_t>::max() - (d - '0')) / 10) throw fail("integer literal too large");
        t.number = t.number * 10 + (d - '0');
      }
      out.push_back(t);
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string v;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] != '\\' || j + 1 == s.size()) {
          v += s[j];
          continue;
        }
        const char e = s[++j];
        v += e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
      }
      if (j >= s.size()) throw fail("unterminated string literal");
      out.push_back({Token::kString, v});
      i = j + 1;
    } else {
      static const char* ops[] = {"==", "!=", "<=", ">=", "//", "(", ")", "[", "]", ",", ".",
                                  ":",  "|",  "+",  "-",  "*",  "/", "%", "~", "<", ">", "="};
      bool found = false;
      for (const char* op : ops) {
        const std::string o(op);
        if (s.compare(i, o.size(), o) == 0) {
          out.push_back({Token::kOp, o});
          i += o.size();
          found = true;
          break;
        }
      }
      if (!found) throw fail(std::string("unexpected character '") + c + "'");
    }
  }
  out.push_back({Token::kEnd, ""});
  return out;
}

class ExprParser {
 public:
  ExprParser(std::vector<Token> toks, std::function<Error(const std::string&)> fail)
      : t_(std::move(toks)), fail_(std::move(fail)) {}

  ExprP parse() { return ternary(); }
  bool at_end() const { return t_[i_].kind == Token::kEnd; }
  bool accept_name(const char* n) {
    if (t_[i_].kind == Token::kName && t_[i_].text == n) return ++i_, true;
    return false;
  }
  bool accept_op(const char* o) {
    if (t_[i_].kind == Token::kOp && t_[i_].text == o) return ++i_, true;
    return false;
  }
  void expect_op(const char* o) {
    if (!accept_op(o)) throw fail_(std::string("expected '") + o + "' near '" + t_[i_].text + "'");
  }
  std::string name() {
    if (t_[i_].kind != Token::kName) throw fail_("expected a name near '" + t_[i_].text + "'");
    return t_[i_++].text;
  }
  void expect_end() {
    if (!at_end()) throw fail_("unexpected '" + t_[i_].text + "'");
  }

 private:
  static ExprP make(Expr::Kind k, std::string name, std::vector<ExprP> args, json value = nullptr) {
    auto e = std::make_shared<Expr>();
    e->kind = k;
    e->name = std::move(name);
    e->args = std::move(args);
    e->value = std::move(value);
    return e;
  }
  bool peek_name(const char* n, size_t ahead = 0) const {
    const Token& t = t_[std::min(i_ + ahead, t_.size() - 1)];
    return t.kind == Token::kName && t.text == n;
  }

  // The arguments of a call, after its '(' up to its ')', appended to `args`.
  std::vector<ExprP> arguments(std::vector<ExprP> args) {
    if (!accept_op(")")) {
      do args.push_back(ternary());
      while (accept_op(","));
      expect_op(")");
    }
    return args;
  }

  ExprP ternary() {
    const Nesting n(depth_, fail_);
    ExprP a = or_();
    if (!accept_name("if")) return a;
    ExprP cond = or_();
    ExprP b = accept_name("else") ? ternary() : make(Expr::kLiteral, "", {}, undefined());
    return make(Expr::kIf, "", {cond, a, b});
  }
  ExprP or_() {
    ExprP a = and_();
    while (accept_name("or")) a = make(Expr::kBinary, "or", {a, and_()});
    return a;
  }
  ExprP and_() {
    ExprP a = not_();
    while (accept_name("and")) a = make(Expr::kBinary, "and", {a, not_()});
    return a;
  }
  ExprP not_() {
    const Nesting n(depth_, fail_);
    if (accept_name("not")) return make(Expr::kUnary, "not", {not_()});
    return compare();
  }
  ExprP compare() {
    ExprP a = additive();
    for (;;) {
      bool found = false;
      for (const char* op : {"==", "!=", "<=", ">=", "<", ">"}) {
        if (accept_op(op)) {
          a = make(Expr::kBinary, op, {a, additive()});
          found = true;
          break;
        }
      }
      if (found) continue;
      if (accept_name("in")) {
        a = make(Expr::kBinary, "in", {a, additive()});
      } else if (peek_name("not") && peek_name("in", 1)) {
        i_ += 2;
        auto e = std::make_shared<Expr>(*make(Expr::kBinary, "in", {a, additive()}));
        e->negate = true;
        a = e;
      } else if (accept_name("is")) {
        const bool neg = accept_name("not");
        static const std::set<std::string> tests = {"defined", "undefined", "none",     "string", "number",
                                                    "mapping", "sequence",  "iterable", "boolean"};
        const std::string t = name();
        if (!tests.count(t)) throw fail_("the test 'is " + t + "' is outside the supported subset");
        auto e = std::make_shared<Expr>(*make(Expr::kTest, t, {a}));
        e->negate = neg;
        a = e;
      } else {
        return a;
      }
    }
  }
  ExprP additive() {
    ExprP a = multiplicative();
    for (;;) {
      if (accept_op("+"))
        a = make(Expr::kBinary, "+", {a, multiplicative()});
      else if (accept_op("-"))
        a = make(Expr::kBinary, "-", {a, multiplicative()});
      else if (accept_op("~"))
        a = make(Expr::kBinary, "~", {a, multiplicative()});
      else
        return a;
    }
  }
  ExprP multiplicative() {
    ExprP a = unary();
    for (;;) {
      if (accept_op("*"))
        a = make(Expr::kBinary, "*", {a, unary()});
      else if (accept_op("//"))
        a = make(Expr::kBinary, "//", {a, unary()});
      else if (accept_op("/"))
        throw fail_("'/' (true division) is outside the supported subset");
      else if (accept_op("%"))
        a = make(Expr::kBinary, "%", {a, unary()});
      else
        return a;
    }
  }
  ExprP unary() {
    const Nesting n(depth_, fail_);
    if (accept_op("-")) return make(Expr::kUnary, "-", {unary()});
    return filtered();
  }
  ExprP filtered() {
    ExprP a = postfix();
    while (accept_op("|")) {
      static const std::set<std::string> filters = {"trim",  "length", "count", "upper",   "lower", "string",
                                                    "first", "last",   "join",  "default", "d"};
      const std::string f = name();
      if (!filters.count(f)) throw fail_("the filter '" + f + "' is outside the supported subset");
      a = make(Expr::kFilter, f, accept_op("(") ? arguments({a}) : std::vector<ExprP>{a});
    }
    return a;
  }
  ExprP postfix() {
    ExprP a = primary();
    for (;;) {
      if (accept_op(".")) {
        const std::string n = name();
        if (accept_op("(")) {
          static const std::set<std::string> methods = {"strip", "lstrip",     "rstrip",   "upper",
                                                        "lower", "startswith", "endswith", "get"};
          if (!methods.count(n)) throw fail_("the method '" + n + "()' is outside the supported subset");
          a = make(Expr::kMethod, n, arguments({a}));
        } else {
          a = make(Expr::kAttr, n, {a});
        }
      } else if (accept_op("[")) {
        ExprP start, stop, step;
        bool slice = false;
        if (!(t_[i_].kind == Token::kOp && t_[i_].text == ":")) start = ternary();
        if (accept_op(":")) {
          slice = true;
          if (!(t_[i_].kind == Token::kOp && (t_[i_].text == "]" || t_[i_].text == ":"))) stop = ternary();
          if (accept_op(":") && !(t_[i_].kind == Token::kOp && t_[i_].text == "]")) step = ternary();
        }
        expect_op("]");
        a = slice ? make(Expr::kSlice, "", {a, start, stop, step}) : make(Expr::kIndex, "", {a, start});
      } else if (t_[i_].kind == Token::kOp && t_[i_].text == "(") {
        throw fail_("calling this is outside the supported subset");
      } else {
        return a;
      }
    }
  }
  ExprP primary() {
    const Token t = t_[i_];
    if (t.kind == Token::kString) {
      ++i_;
      std::string s = t.text;
      while (t_[i_].kind == Token::kString) s += t_[i_++].text;  // adjacent literals concatenate
      return make(Expr::kLiteral, "", {}, s);
    }
    if (t.kind == Token::kInt) return ++i_, make(Expr::kLiteral, "", {}, t.number);
    if (accept_op("(")) {
      ExprP e = ternary();
      expect_op(")");
      return e;
    }
    if (accept_op("[")) {
      std::vector<ExprP> items;
      if (!accept_op("]")) {
        do items.push_back(ternary());
        while (accept_op(","));
        expect_op("]");
      }
      return make(Expr::kList, "", items);
    }
    if (t.kind == Token::kName) {
      ++i_;
      if (t.text == "true" || t.text == "True") return make(Expr::kLiteral, "", {}, true);
      if (t.text == "false" || t.text == "False") return make(Expr::kLiteral, "", {}, false);
      if (t.text == "none" || t.text == "None") return make(Expr::kLiteral, "", {}, nullptr);
      if (accept_op("(")) {
        if (t.text != "raise_exception") throw fail_("the function '" + t.text + "()' is outside the supported subset");
        return make(Expr::kCall, t.text, arguments({}));
      }
      return make(Expr::kName, t.text, {});
    }
    throw fail_("unexpected '" + t.text + "'");
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  std::function<Error(const std::string&)> fail_;
  int depth_ = 0;
};

}  // namespace

// ---- Statements -----------------------------------------------------------------------------------

struct ChatTemplate::Node {
  enum Kind { kText, kOutput, kIf, kFor, kSet } kind;
  std::string text;  // text; for: the loop variable; set: the name
  ExprP expr;        // output / for: the iterable / set: the value
  std::vector<std::pair<ExprP, std::vector<std::shared_ptr<Node>>>> branches;  // if: (condition, body); else: null
  std::vector<std::shared_ptr<Node>> body;                                     // for
};

namespace {

using NodeP = std::shared_ptr<ChatTemplate::Node>;
using Body = std::vector<NodeP>;

struct Piece {
  enum Kind { kText, kExpr, kStmt } kind;
  std::string text;
  int line = 1;
};

bool blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

// Splits the source into text, {{ }} and {% %} pieces, dropping comments and applying whitespace
// control ({%- -%}), trim_blocks (the newline after a block tag) and lstrip_blocks (blanks before a
// block tag at the start of a line).
std::vector<Piece> split_tags(const std::string& src, const std::function<Error(int, const std::string&)>& fail) {
  std::vector<Piece> out;
  size_t i = 0;
  int line = 1;
  bool strip_next = false, trim_newline = false;
  while (i <= src.size()) {
    const size_t open = src.find('{', i);
    size_t tag = std::string::npos;
    for (size_t p = open; p != std::string::npos && p + 1 < src.size(); p = src.find('{', p + 1)) {
      const char n = src[p + 1];
      if (n == '{' || n == '%' || n == '#') {
        tag = p;
        break;
      }
    }
    std::string text = src.substr(i, tag == std::string::npos ? std::string::npos : tag - i);
    size_t text_start = i;  // where text begins in src
    if (trim_newline && !text.empty() && text[0] == '\n') {
      text.erase(0, 1);
      ++text_start;
    }
    if (strip_next) {
      size_t k = 0;
      while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k]))) ++k;
      text.erase(0, k);
    }
    const int text_line = line;
    line += static_cast<int>(
        std::count(src.begin() + static_cast<std::ptrdiff_t>(i),
                   tag == std::string::npos ? src.end() : src.begin() + static_cast<std::ptrdiff_t>(tag), '\n'));
    if (tag == std::string::npos) {
      if (!text.empty()) out.push_back({Piece::kText, text, text_line});
      break;
    }
    const char kind = src[tag + 1];
    const bool block = kind == '%' || kind == '#';
    const bool minus_left = tag + 2 < src.size() && src[tag + 2] == '-';
    const bool plus_left = tag + 2 < src.size() && src[tag + 2] == '+';
    if (minus_left) {
      while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    } else if (block && !plus_left) {
      // lstrip_blocks: blanks between the start of the line and the tag go.
      const size_t nl = text.rfind('\n');
      const size_t from = nl == std::string::npos ? 0 : nl + 1;
      const bool line_start = nl != std::string::npos || text_start == 0 || src[text_start - 1] == '\n';
      if (line_start &&
          std::all_of(text.begin() + static_cast<std::ptrdiff_t>(from), text.end(), [](char ch) { return blank(ch); }))
        text.erase(from);
    }
    if (!text.empty()) out.push_back({Piece::kText, text, text_line});
    const std::string close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    const size_t start = tag + 2 + ((minus_left || plus_left) ? 1 : 0);
    const size_t end = src.find(close, start);
    if (end == std::string::npos) throw fail(line, "'" + src.substr(tag, 2) + "' is never closed");
    const bool minus_right = end > start && src[end - 1] == '-';
    std::string inner = src.substr(start, end - start - (minus_right ? 1 : 0));
    if (kind != '#') out.push_back({kind == '{' ? Piece::kExpr : Piece::kStmt, inner, line});
    line += static_cast<int>(std::count(inner.begin(), inner.end(), '\n'));
    strip_next = minus_right;
    trim_newline = block;  // trim_blocks
    i = end + 2;
  }
  return out;
}

class StmtParser {
 public:
  StmtParser(std::vector<Piece> pieces, std::string origin) : p_(std::move(pieces)), origin_(std::move(origin)) {}

  Body parse() {
    Body b = block({});
    if (i_ < p_.size()) throw fail(p_[i_].line, "unexpected '{% " + first_word(p_[i_].text) + " %}'");
    return b;
  }

  Error fail(int line, const std::string& msg) const {
    return Error(origin_ + ": chat_template line " + std::to_string(line) + ": " + msg);
  }

 private:
  static std::string first_word(const std::string& s) {
    size_t a = 0;
    while (a < s.size() && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
    size_t b = a;
    while (b < s.size() && (std::isalnum(static_cast<unsigned char>(s[b])) || s[b] == '_')) ++b;
    return s.substr(a, b - a);
  }

  ExprParser expr_parser(const Piece& p, const std::string& text) const {
    const int line = p.line;
    return ExprParser(lex_expr(text, [&](const std::string& m) { return fail(line, m); }),
                      [this, line](const std::string& m) { return fail(line, m); });
  }

  // Statements until one of `ends` (left for the caller), or the end of the template.
  Body block(const std::set<std::string>& ends) {
    Body body;
    while (i_ < p_.size()) {
      const Piece& p = p_[i_];
      if (p.kind == Piece::kText) {
        auto n = std::make_shared<ChatTemplate::Node>();
        n->kind = ChatTemplate::Node::kText;
        n->text = p.text;
        body.push_back(n);
        ++i_;
        continue;
      }
      if (p.kind == Piece::kExpr) {
        ExprParser e = expr_parser(p, p.text);
        auto n = std::make_shared<ChatTemplate::Node>();
        n->kind = ChatTemplate::Node::kOutput;
        n->expr = e.parse();
        e.expect_end();
        body.push_back(n);
        ++i_;
        continue;
      }
      const std::string word = first_word(p.text);
      if (ends.count(word)) return body;
      const std::string rest = p.text.substr(p.text.find(word) + word.size());
      if (word == "if") {
        body.push_back(if_block(p, rest));
      } else if (word == "for") {
        body.push_back(for_block(p, rest));
      } else if (word == "set") {
        ExprParser e = expr_parser(p, rest);
        auto n = std::make_shared<ChatTemplate::Node>();
        n->kind = ChatTemplate::Node::kSet;
        n->text = e.name();
        if (!e.accept_op("=")) throw fail(p.line, "only '{% set name = value %}' is supported");
        n->expr = e.parse();
        e.expect_end();
        body.push_back(n);
        ++i_;
      } else if (word == "endif" || word == "endfor" || word == "elif" || word == "else") {
        throw fail(p.line, "'{% " + word + " %}' without its opening tag");
      } else {
        throw fail(p.line, "the statement '{% " + word + " %}' is outside the supported subset");
      }
    }
    if (!ends.empty()) throw fail(p_.empty() ? 1 : p_.back().line, "missing '{% " + *ends.rbegin() + " %}'");
    return body;
  }

  NodeP if_block(const Piece& first, const std::string& cond) {
    const Nesting nest(depth_, [&](const std::string& m) { return fail(first.line, m); });
    auto n = std::make_shared<ChatTemplate::Node>();
    n->kind = ChatTemplate::Node::kIf;
    ExprParser e = expr_parser(first, cond);
    ExprP c = e.parse();
    e.expect_end();
    ++i_;
    for (;;) {
      Body b = block({"elif", "else", "endif"});
      n->branches.emplace_back(c, std::move(b));
      const Piece& p = p_[i_];
      const std::string word = first_word(p.text);
      ++i_;
      if (word == "endif") return n;
      if (word == "else") {
        if (!c) throw fail(p.line, "a second '{% else %}'");
        c = nullptr;
        continue;
      }
      if (!c) throw fail(p.line, "'{% elif %}' after '{% else %}'");
      ExprParser x = expr_parser(p, p.text.substr(p.text.find("elif") + 4));
      c = x.parse();
      x.expect_end();
    }
  }

  NodeP for_block(const Piece& p, const std::string& head) {
    const Nesting nest(depth_, [&](const std::string& m) { return fail(p.line, m); });
    auto n = std::make_shared<ChatTemplate::Node>();
    n->kind = ChatTemplate::Node::kFor;
    ExprParser e = expr_parser(p, head);
    n->text = e.name();
    if (e.accept_op(",")) throw fail(p.line, "unpacking in '{% for a, b in ... %}' is outside the supported subset");
    if (!e.accept_name("in")) throw fail(p.line, "expected '{% for name in expression %}'");
    n->expr = e.parse();
    if (!e.at_end()) throw fail(p.line, "only '{% for name in expression %}' is supported (no filter, no recursive)");
    ++i_;
    n->body = block({"endfor", "else"});
    if (first_word(p_[i_].text) == "else")
      throw fail(p_[i_].line, "'{% for %} ... {% else %}' is outside the supported subset");
    ++i_;
    return n;
  }

  std::vector<Piece> p_;
  size_t i_ = 0;
  std::string origin_;
  int depth_ = 0;
};

// ---- Evaluation -----------------------------------------------------------------------------------

class Renderer {
 public:
  explicit Renderer(json globals) { scopes_.push_back(std::move(globals)); }

  void run(const Body& body, std::string& out) {
    for (const NodeP& n : body) {
      switch (n->kind) {
        case ChatTemplate::Node::kText:
          out += n->text;
          break;
        case ChatTemplate::Node::kOutput:
          out += to_text(eval(*n->expr));
          break;
        case ChatTemplate::Node::kSet:
          scopes_.back()[n->text] = eval(*n->expr);
          break;
        case ChatTemplate::Node::kIf:
          for (const auto& [cond, b] : n->branches) {
            if (!cond || truthy(eval(*cond))) {
              run(b, out);
              break;
            }
          }
          break;
        case ChatTemplate::Node::kFor: {
          const json seq = eval(*n->expr);
          if (is_undefined(seq) || seq.is_null()) break;
          if (!seq.is_array())
            throw ChatTemplateError("chat template: '{% for %}' over a " + std::string(seq.type_name()));
          const int64_t len = static_cast<int64_t>(seq.size());
          for (int64_t k = 0; k < len; ++k) {
            json scope = json::object();
            scope[n->text] = seq[k];
            scope["loop"] = {
                {"index", k + 1},  {"index0", k},          {"revindex", len - k}, {"revindex0", len - k - 1},
                {"first", k == 0}, {"last", k == len - 1}, {"length", len}};
            scopes_.push_back(std::move(scope));
            run(n->body, out);
            scopes_.pop_back();
          }
          break;
        }
      }
      if (out.size() > kMaxTextBytes)
        type_error("the rendered prompt exceeds " + std::to_string(kMaxTextBytes) + " bytes");
    }
  }

 private:
  [[noreturn]] static void type_error(const std::string& what) { throw ChatTemplateError("chat template: " + what); }

  // A string or list that a template builds, checked against the limits.
  static json bounded(json v) {
    if (v.is_string() && v.get_ref<const std::string&>().size() > kMaxTextBytes)
      type_error("a string longer than " + std::to_string(kMaxTextBytes) + " bytes");
    if (v.is_array() && v.size() > kMaxListItems)
      type_error("a list of more than " + std::to_string(kMaxListItems) + " items");
    return v;
  }

  json lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it)
      if (auto f = it->find(name); f != it->end()) return *f;
    return undefined();
  }

  static int64_t as_int(const json& v, const char* what) {
    if (!v.is_number_integer()) type_error(std::string(what) + " must be an integer");
    return v.get<int64_t>();
  }

  static json item(const json& obj, const json& key) {
    if (obj.is_object() && key.is_string()) {
      auto f = obj.find(key.get<std::string>());
      return f == obj.end() ? undefined() : *f;
    }
    if ((obj.is_array() || obj.is_string()) && key.is_number_integer()) {
      const int64_t n = obj.is_array() ? static_cast<int64_t>(obj.size())
                                       : static_cast<int64_t>(obj.get_ref<const std::string&>().size());
      int64_t k = key.get<int64_t>();
      if (k < 0) k += n;
      if (k < 0 || k >= n) return undefined();
      if (obj.is_array()) return obj[static_cast<size_t>(k)];
      return std::string(1, obj.get_ref<const std::string&>()[static_cast<size_t>(k)]);
    }
    return undefined();
  }

  static json slice(const json& v, const json& a, const json& b, const json& c) {
    if (!v.is_array() && !v.is_string()) type_error("only lists and strings can be sliced");
    const int64_t n =
        v.is_array() ? static_cast<int64_t>(v.size()) : static_cast<int64_t>(v.get_ref<const std::string&>().size());
    const int64_t step = is_undefined(c) ? 1 : as_int(c, "a slice step");
    if (step == 0) type_error("slice step 0");
    auto bound = [&](const json& x, int64_t def) {
      if (is_undefined(x) || x.is_null()) return def;
      int64_t k = as_int(x, "a slice bound");
      if (k < 0) k += n;
      return step > 0 ? std::clamp<int64_t>(k, 0, n) : std::clamp<int64_t>(k, -1, n - 1);
    };
    const int64_t lo = bound(a, step > 0 ? 0 : n - 1), hi = bound(b, step > 0 ? n : -1);
    json out = v.is_array() ? json::array() : json("");
    for (int64_t k = lo; step > 0 ? k < hi : k > hi; k += step) {
      if (v.is_array())
        out.push_back(v[static_cast<size_t>(k)]);
      else
        out.get_ref<std::string&>() += v.get_ref<const std::string&>()[static_cast<size_t>(k)];
    }
    return out;
  }

  static std::string strip(const std::string& s, bool left, bool right, const std::string& chars = " \t\n\r\f\v") {
    size_t a = 0, b = s.size();
    if (left)
      while (a < b && chars.find(s[a]) != std::string::npos) ++a;
    if (right)
      while (b > a && chars.find(s[b - 1]) != std::string::npos) --b;
    return s.substr(a, b - a);
  }

  static const std::string& str(const json& v, const std::string& what) {
    if (!v.is_string()) type_error(what + " needs a string, not " + (is_undefined(v) ? "undefined" : v.type_name()));
    return v.get_ref<const std::string&>();
  }

  static int64_t length(const json& v) {
    if (v.is_string()) return static_cast<int64_t>(v.get_ref<const std::string&>().size());
    if (v.is_array() || v.is_object()) return static_cast<int64_t>(v.size());
    type_error("length of a " + std::string(is_undefined(v) ? "undefined" : v.type_name()) + " value");
  }

  static std::string lower_upper(std::string s, bool upper) {
    for (char& ch : s)
      ch = static_cast<char>(upper ? std::toupper(static_cast<unsigned char>(ch))
                                   : std::tolower(static_cast<unsigned char>(ch)));
    return s;
  }

  json eval(const Expr& e) {
    switch (e.kind) {
      case Expr::kLiteral:
        return e.value;
      case Expr::kName:
        return lookup(e.name);
      case Expr::kList: {
        json out = json::array();
        for (const ExprP& x : e.args) out.push_back(eval(*x));
        return out;
      }
      case Expr::kAttr:
        return item(eval(*e.args[0]), e.name);
      case Expr::kIndex:
        return item(eval(*e.args[0]), eval(*e.args[1]));
      case Expr::kSlice: {
        const auto opt = [&](const ExprP& x) { return x ? eval(*x) : undefined(); };
        return slice(eval(*e.args[0]), opt(e.args[1]), opt(e.args[2]), opt(e.args[3]));
      }
      case Expr::kCall:  // raise_exception
        throw ChatTemplateError(e.args.empty() ? "the chat template raised an exception" : to_text(eval(*e.args[0])));
      case Expr::kMethod:
        return method(e);
      case Expr::kFilter:
        return filter(e);
      case Expr::kUnary: {
        const json v = eval(*e.args[0]);
        if (e.name == "not") return !truthy(v);
        if (v.is_number_integer() && v.get<int64_t>() != std::numeric_limits<int64_t>::min()) return -v.get<int64_t>();
        type_error("unary minus of a non-integer (or of the smallest integer)");
      }
      case Expr::kBinary:
        return binary(e);
      case Expr::kTest: {
        const json v = eval(*e.args[0]);
        bool r = false;
        if (e.name == "defined")
          r = !is_undefined(v);
        else if (e.name == "undefined")
          r = is_undefined(v);
        else if (e.name == "none")
          r = v.is_null();
        else if (e.name == "string")
          r = v.is_string();
        else if (e.name == "number")
          r = v.is_number();
        else if (e.name == "boolean")
          r = v.is_boolean();
        else if (e.name == "mapping")
          r = v.is_object();
        else if (e.name == "sequence" || e.name == "iterable")
          r = v.is_array() || v.is_string() || v.is_object();
        return r != e.negate;
      }
      case Expr::kIf:
        return truthy(eval(*e.args[0])) ? eval(*e.args[1]) : eval(*e.args[2]);
    }
    return undefined();
  }

  json method(const Expr& e) {
    const json v = eval(*e.args[0]);
    std::vector<json> a;
    for (size_t k = 1; k < e.args.size(); ++k) a.push_back(eval(*e.args[k]));
    if (e.name == "get") {
      if (!v.is_object() || a.empty() || a.size() > 2) type_error("get() needs a mapping and 1 or 2 arguments");
      const json r = item(v, a[0]);
      return is_undefined(r) ? (a.size() == 2 ? a[1] : json(nullptr)) : r;
    }
    const std::string& s = str(v, e.name + "()");
    if (e.name == "strip" || e.name == "lstrip" || e.name == "rstrip") {
      const bool l = e.name != "rstrip", r = e.name != "lstrip";
      return a.empty() ? strip(s, l, r) : strip(s, l, r, str(a[0], e.name + "()"));
    }
    if (e.name == "upper" || e.name == "lower") return lower_upper(s, e.name == "upper");
    if (a.size() != 1) type_error(e.name + "() needs one argument");
    const std::string& x = str(a[0], e.name + "()");
    if (e.name == "startswith") return s.compare(0, x.size(), x) == 0;
    return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;  // endswith
  }

  json filter(const Expr& e) {
    const json v = eval(*e.args[0]);
    const std::string& f = e.name;
    if (f == "default" || f == "d") {
      const json def = e.args.size() > 1 ? eval(*e.args[1]) : json("");
      const bool boolean = e.args.size() > 2 && truthy(eval(*e.args[2]));
      return is_undefined(v) || (boolean && !truthy(v)) ? def : v;
    }
    if (f == "trim") return strip(str(v, "trim"), true, true);
    if (f == "upper" || f == "lower") return lower_upper(str(v, f), f == "upper");
    if (f == "length" || f == "count") return length(v);
    if (f == "string") return to_text(v);
    if (f == "first" || f == "last") {
      if (!v.is_array() && !v.is_string()) type_error(f + " of a " + std::string(v.type_name()));
      if (length(v) == 0) return undefined();
      return item(v, f == "first" ? 0 : -1);
    }
    // join
    if (!v.is_array()) type_error("join of a non-list");
    const std::string sep = e.args.size() > 1 ? to_text(eval(*e.args[1])) : "";
    std::string out;
    for (size_t k = 0; k < v.size() && out.size() <= kMaxTextBytes; ++k) out += (k ? sep : "") + to_text(v[k]);
    return bounded(out);
  }

  json binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      const json a = eval(*e.args[0]);
      return truthy(a) ? eval(*e.args[1]) : a;
    }
    if (op == "or") {
      const json a = eval(*e.args[0]);
      return truthy(a) ? a : eval(*e.args[1]);
    }
    const json a = eval(*e.args[0]), b = eval(*e.args[1]);
    if (op == "~") return bounded(to_text(a) + to_text(b));
    if (op == "==" || op == "!=") {
      const bool eq = is_undefined(a) || is_undefined(b) ? is_undefined(a) && is_undefined(b) : a == b;
      return eq == (op == "==");
    }
    if (op == "in") {
      bool r = false;
      if (b.is_string())
        r = b.get_ref<const std::string&>().find(str(a, "'in' of a string")) != std::string::npos;
      else if (b.is_array())
        r = std::find(b.begin(), b.end(), a) != b.end();
      else if (b.is_object())
        r = a.is_string() && b.contains(a.get<std::string>());
      else if (!is_undefined(b) && !b.is_null())
        type_error("'in' of a " + std::string(b.type_name()));
      return r != e.negate;
    }
    if (op == "+") {
      if (a.is_string() && b.is_string()) return bounded(a.get<std::string>() + b.get<std::string>());
      if (a.is_array() && b.is_array()) {
        json out = a;
        for (const json& x : b) out.push_back(x);
        return bounded(std::move(out));
      }
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      if (!((a.is_number() && b.is_number()) || (a.is_string() && b.is_string())))
        type_error("'" + op + "' between values of different types");
      if (op == "<") return a < b;
      if (op == ">") return a > b;
      if (op == "<=") return a <= b;
      return a >= b;
    }
    const int64_t x = as_int(a, ("the left side of '" + op + "'").c_str()),
                  y = as_int(b, ("the right side of '" + op + "'").c_str());
    int64_t r = 0;
    if (op == "+" || op == "-" || op == "*") {
      const bool overflow = op == "+"   ? __builtin_add_overflow(x, y, &r)
                            : op == "-" ? __builtin_sub_overflow(x, y, &r)
                                        : __builtin_mul_overflow(x, y, &r);
      if (overflow) type_error("integer overflow in '" + op + "'");
      return r;
    }
    if (y == 0) type_error("division by zero");
    if (x == std::numeric_limits<int64_t>::min() && y == -1) type_error("integer overflow in '" + op + "'");
    // Python's floor division and modulo (the sign of the divisor).
    int64_t q = x / y;
    r = x % y;
    if (r != 0 && ((r < 0) != (y < 0))) {
      --q;
      r += y;
    }
    return op == "//" ? q : r;
  }

  std::vector<json> scopes_;
};

}  // namespace

ChatTemplate::ChatTemplate(const std::string& source, const std::string& origin) : origin_(origin) {
  const auto fail = [&](int line, const std::string& m) {
    return Error(origin + ": chat_template line " + std::to_string(line) + ": " + m);
  };
  StmtParser p(split_tags(source, fail), origin);
  body_ = std::make_shared<const Body>(p.parse());
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 const std::string& bos_token, const std::string& eos_token) const {
  json msgs = json::array();
  for (const ChatMessage& m : messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
  Renderer r(json{{"messages", msgs},
                  {"add_generation_prompt", add_generation_prompt},
                  {"bos_token", bos_token},
                  {"eos_token", eos_token}});
  std::string out;
  r.run(*body_, out);
  return out;
}

std::optional<ChatTemplateConfig> load_chat_template(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  const json j = io::read_json_file(path, "the tokenizer config");
  if (!j.is_object()) throw Error(path + ": not a JSON object");
  auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) return std::nullopt;
  std::string source;
  if (it->is_string()) {
    source = it->get<std::string>();
  } else if (it->is_array()) {  // [{"name": ..., "template": ...}]: the default one
    bool found = false;
    for (const json& t : *it) {
      if (!t.is_object() || !t.contains("name") || !t.contains("template") || !t["template"].is_string())
        throw Error(path + ": chat_template: a list entry must be {\"name\": ..., \"template\": \"...\"}");
      if (t["name"] == "default") {
        source = t["template"].get<std::string>();
        found = true;
      }
    }
    if (!found) throw Error(path + ": chat_template: the list has no template named \"default\"");
  } else {
    throw Error(path + ": chat_template must be a string (or a list of named templates), not " +
                std::string(it->type_name()));
  }
  const auto token = [&](const char* key) -> std::string {
    auto t = j.find(key);
    if (t == j.end() || t->is_null()) return "";
    if (t->is_string()) return t->get<std::string>();
    if (t->is_object() && t->contains("content") && (*t)["content"].is_string())
      return (*t)["content"].get<std::string>();
    throw Error(path + ": " + key + " must be a string or {\"content\": \"...\"}");
  };
  return ChatTemplateConfig{path, ChatTemplate(source, path), token("bos_token"), token("eos_token")};
}

std::vector<int32_t> encode_with_specials(const Tokenizer& tok, const std::string& text,
                                          const std::vector<std::pair<std::string, int32_t>>& specials) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    size_t best = std::string::npos;
    const std::pair<std::string, int32_t>* which = nullptr;
    for (const auto& s : specials) {
      if (s.first.empty()) continue;
      const size_t p = text.find(s.first, i);
      if (p != std::string::npos && (p < best || (p == best && s.first.size() > which->first.size()))) {
        best = p;
        which = &s;
      }
    }
    const size_t end = which ? best : text.size();
    if (end > i)
      for (int32_t t : tok.encode(std::string_view(text).substr(i, end - i))) ids.push_back(t);
    if (!which) break;
    ids.push_back(which->second);
    i = best + which->first.size();
  }
  return ids;
}

}  // namespace moepp
