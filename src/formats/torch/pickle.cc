// The pickle machine: Python's unpickler with every effect replaced by a node of a passive graph.
//
// What it follows: the argument formats of CPython's Lib/pickletools.py and the behaviour of
// CPython's C unpickler (Modules/_pickle.c), which is what torch.load runs: the same stack and
// MARK rules, the same memo numbering, the same reading of protocol-0 text (INT goes through
// strtol first, so "I010" is 8). It fails only where Python certainly fails too. Where Python
// *might* go on — a method call on an object this machine cannot know (APPEND to what a REDUCE
// built), an escape or float spelling Python would refuse, out-of-band buffers, STACK_GLOBAL on
// non-strings — it records what it can and goes on: a scanner must never stop earlier than
// Python, or it would miss the globals that follow.
//
// Costs: one pass, no recursion, no allocation sized by a number read from the file before that
// number has been checked against the bytes that remain. Memory is linear in the input: every
// node, stack slot and container item is paid for by at least one input byte.
#include "formats/torch/pickle.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/errors.h"

namespace ckptkit::pickle {
namespace {

// Opcode bytes, named as in pickletools.
enum Op : uint8_t {
  MARK = '(',
  STOP = '.',
  POP = '0',
  POP_MARK = '1',
  DUP = '2',
  FLOAT = 'F',
  INT = 'I',
  BININT = 'J',
  BININT1 = 'K',
  LONG = 'L',
  BININT2 = 'M',
  NONE = 'N',
  PERSID = 'P',
  BINPERSID = 'Q',
  REDUCE = 'R',
  STRING = 'S',
  BINSTRING = 'T',
  SHORT_BINSTRING = 'U',
  UNICODE = 'V',
  BINUNICODE = 'X',
  APPEND = 'a',
  BUILD = 'b',
  GLOBAL = 'c',
  DICT = 'd',
  EMPTY_DICT = '}',
  APPENDS = 'e',
  GET = 'g',
  BINGET = 'h',
  INST = 'i',
  LONG_BINGET = 'j',
  LIST = 'l',
  EMPTY_LIST = ']',
  OBJ = 'o',
  PUT = 'p',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  SETITEM = 's',
  TUPLE = 't',
  EMPTY_TUPLE = ')',
  SETITEMS = 'u',
  BINFLOAT = 'G',
  // protocol 2
  PROTO = 0x80,
  NEWOBJ = 0x81,
  EXT1 = 0x82,
  EXT2 = 0x83,
  EXT4 = 0x84,
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  LONG1 = 0x8a,
  LONG4 = 0x8b,
  // protocol 3
  BINBYTES = 'B',
  SHORT_BINBYTES = 'C',
  // protocol 4
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINBYTES8 = 0x8e,
  EMPTY_SET = 0x8f,
  ADDITEMS = 0x90,
  FROZENSET = 0x91,
  NEWOBJ_EX = 0x92,
  STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94,
  FRAME = 0x95,
  // protocol 5
  BYTEARRAY8 = 0x96,
  NEXT_BUFFER = 0x97,
  READONLY_BUFFER = 0x98,
};

struct OpName {
  uint8_t op;
  std::string_view name;
};

constexpr OpName kOpNames[] = {
    {MARK, "MARK"},
    {STOP, "STOP"},
    {POP, "POP"},
    {POP_MARK, "POP_MARK"},
    {DUP, "DUP"},
    {FLOAT, "FLOAT"},
    {INT, "INT"},
    {BININT, "BININT"},
    {BININT1, "BININT1"},
    {LONG, "LONG"},
    {BININT2, "BININT2"},
    {NONE, "NONE"},
    {PERSID, "PERSID"},
    {BINPERSID, "BINPERSID"},
    {REDUCE, "REDUCE"},
    {STRING, "STRING"},
    {BINSTRING, "BINSTRING"},
    {SHORT_BINSTRING, "SHORT_BINSTRING"},
    {UNICODE, "UNICODE"},
    {BINUNICODE, "BINUNICODE"},
    {APPEND, "APPEND"},
    {BUILD, "BUILD"},
    {GLOBAL, "GLOBAL"},
    {DICT, "DICT"},
    {EMPTY_DICT, "EMPTY_DICT"},
    {APPENDS, "APPENDS"},
    {GET, "GET"},
    {BINGET, "BINGET"},
    {INST, "INST"},
    {LONG_BINGET, "LONG_BINGET"},
    {LIST, "LIST"},
    {EMPTY_LIST, "EMPTY_LIST"},
    {OBJ, "OBJ"},
    {PUT, "PUT"},
    {BINPUT, "BINPUT"},
    {LONG_BINPUT, "LONG_BINPUT"},
    {SETITEM, "SETITEM"},
    {TUPLE, "TUPLE"},
    {EMPTY_TUPLE, "EMPTY_TUPLE"},
    {SETITEMS, "SETITEMS"},
    {BINFLOAT, "BINFLOAT"},
    {PROTO, "PROTO"},
    {NEWOBJ, "NEWOBJ"},
    {EXT1, "EXT1"},
    {EXT2, "EXT2"},
    {EXT4, "EXT4"},
    {TUPLE1, "TUPLE1"},
    {TUPLE2, "TUPLE2"},
    {TUPLE3, "TUPLE3"},
    {NEWTRUE, "NEWTRUE"},
    {NEWFALSE, "NEWFALSE"},
    {LONG1, "LONG1"},
    {LONG4, "LONG4"},
    {BINBYTES, "BINBYTES"},
    {SHORT_BINBYTES, "SHORT_BINBYTES"},
    {SHORT_BINUNICODE, "SHORT_BINUNICODE"},
    {BINUNICODE8, "BINUNICODE8"},
    {BINBYTES8, "BINBYTES8"},
    {EMPTY_SET, "EMPTY_SET"},
    {ADDITEMS, "ADDITEMS"},
    {FROZENSET, "FROZENSET"},
    {NEWOBJ_EX, "NEWOBJ_EX"},
    {STACK_GLOBAL, "STACK_GLOBAL"},
    {MEMOIZE, "MEMOIZE"},
    {FRAME, "FRAME"},
    {BYTEARRAY8, "BYTEARRAY8"},
    {NEXT_BUFFER, "NEXT_BUFFER"},
    {READONLY_BUFFER, "READONLY_BUFFER"},
};
static_assert(std::size(kOpNames) == 68, "pickletools defines 68 opcodes (protocols 0-5)");

constexpr std::array<std::string_view, 256> make_name_table() {
  std::array<std::string_view, 256> t{};
  for (auto& n : t) n = "unknown";
  for (const OpName& o : kOpNames) t[o.op] = o.name;
  return t;
}
constexpr std::array<std::string_view, 256> kNameOf = make_name_table();

// Python's int() refuses decimal strings longer than this (sys.int_info.default_max_str_digits,
// Python 3.11+), so torch.load cannot read a longer INT/LONG either. The cap also keeps the
// quadratic decimal-to-binary conversion below a few hundred thousand operations.
constexpr size_t kMaxDecimalDigits = 4300;

// Global names are copied into Program::globals. STACK_GLOBAL can name a memoized string again
// and again for 3 bytes each, so without a budget a 1 MB name repeated would need memory
// quadratic in the input. The budget is generous for any real pickle (names are ≤ 16× the bytes
// that reference them) and still linear.
constexpr uint64_t kGlobalNameBudgetFixed = 1u << 20;
constexpr uint64_t kGlobalNameBudgetPerByte = 16;

// Nodes are copied from this one rather than value-initialized: GCC zeroes a value-initialized
// Node with `rep stos`, which made node creation 4× slower (half the time of a whole data.pkl).
const Node kBlankNode{};

constexpr std::string_view kExtModule = "copyreg extension registry";
constexpr std::string_view kNonString = "<non-string>";

inline uint16_t load_le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t load_le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
inline uint64_t load_le64(const uint8_t* p) {
  return static_cast<uint64_t>(load_le32(p)) | (static_cast<uint64_t>(load_le32(p + 4)) << 32);
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// UTF-8 for any code point up to 0x10FFFF; surrogates get their 3-byte form, as Python's
// 'surrogatepass' writes them in BINUNICODE, so both spellings of a string give equal bytes.
void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Python 2's string-escape (codecs.escape_decode) of a STRING argument without its quotes.
// Malformed escapes (a \x without two hex digits, a trailing backslash) make Python fail; here
// they are kept as written so that scanning goes on.
std::string decode_string_escapes(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c != '\\' || i + 1 == s.size()) {
      out.push_back(c);
      continue;
    }
    const char e = s[++i];
    // The one-character escapes, then octal, \x and line continuation; anything else stays.
    constexpr std::string_view kFrom = "\\'\"abfnrtv";
    constexpr std::string_view kTo = "\\'\"\a\b\f\n\r\t\v";
    if (const size_t k = kFrom.find(e); k != std::string_view::npos) {
      out.push_back(kTo[k]);
    } else if (e >= '0' && e <= '7') {
      unsigned v = static_cast<unsigned>(e - '0');
      for (int n = 0; n < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; ++n)
        v = v * 8 + static_cast<unsigned>(s[++i] - '0');
      out.push_back(static_cast<char>(v & 0xFF));
    } else if (e == 'x' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
      i += 2;
    } else if (e != '\n') {
      out.push_back('\\');
      out.push_back(e);
    }
  }
  return out;
}

// Python's raw-unicode-escape decoder (UNICODE argument): every byte is a Latin-1 character,
// except that \uXXXX and \UXXXXXXXX are escapes when preceded by an odd number of backslashes.
// Malformed escapes make Python fail; here they are kept as written.
std::string decode_raw_unicode_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c != '\\') {
      append_utf8(out, c);
      ++i;
      continue;
    }
    size_t j = i;
    while (j < s.size() && s[j] == '\\') ++j;
    out.append(j - i, '\\');
    if (((j - i) & 1) == 1 && j < s.size() && (s[j] == 'u' || s[j] == 'U')) {
      const size_t digits = s[j] == 'u' ? 4 : 8;
      uint32_t cp = 0;
      bool ok = j + 1 + digits <= s.size();
      for (size_t k = 0; ok && k < digits; ++k) {
        const int h = hex_value(s[j + 1 + k]);
        ok = h >= 0;
        cp = cp * 16 + static_cast<uint32_t>(h < 0 ? 0 : h);
      }
      if (ok && cp <= 0x10FFFF) {
        out.pop_back();  // the escaping backslash
        append_utf8(out, cp);
        j += 1 + digits;
      }
    }
    i = j;
  }
  return out;
}

// Minimal little-endian two's complement of ±magnitude (magnitude as 32-bit limbs, least
// significant first), as Python's encode_long writes LONG1/LONG4.
std::string twos_complement(const std::vector<uint32_t>& limbs, bool negative) {
  std::string b;
  b.reserve(limbs.size() * 4 + 1);
  for (uint32_t l : limbs)
    for (int k = 0; k < 4; ++k) b.push_back(static_cast<char>((l >> (8 * k)) & 0xFF));
  b.push_back('\0');  // room for the sign bit
  if (negative) {
    unsigned carry = 1;
    for (char& ch : b) {
      const unsigned v = (~static_cast<unsigned>(static_cast<uint8_t>(ch)) & 0xFFu) + carry;
      ch = static_cast<char>(v & 0xFF);
      carry = v >> 8;
    }
  }
  while (b.size() > 1) {
    const auto last = static_cast<uint8_t>(b[b.size() - 1]);
    const auto prev = static_cast<uint8_t>(b[b.size() - 2]);
    if ((last == 0x00 && (prev & 0x80) == 0) || (last == 0xFF && (prev & 0x80) != 0))
      b.pop_back();
    else
      break;
  }
  return b;
}

struct ParsedInt {
  bool big = false;
  int64_t value = 0;
  std::string bytes;  // when big
};

std::string not_an_integer(std::string_view text) {
  return fmt::format("'{}' is not an integer",
                     fmt::string_view(text.data(), std::min<size_t>(text.size(), 40)));
}

// C's strtol(s, &end, 0) as CPython's load_int tries it first: leading whitespace, a sign,
// then "0x" hexadecimal, a leading "0" octal (so "I010" is 8, unlike Python's int()), or
// decimal; accepted when it fits a C long and stops at the end of the line or at a NUL byte.
bool parse_c_long(std::string_view line, int64_t& out) {
  size_t i = 0;
  while (i < line.size() && is_space(line[i])) ++i;
  bool negative = false;
  if (i < line.size() && (line[i] == '+' || line[i] == '-')) negative = line[i++] == '-';
  unsigned base = 10;
  if (i + 2 < line.size() && line[i] == '0' && (line[i + 1] | 0x20) == 'x' &&
      hex_value(line[i + 2]) >= 0) {
    base = 16;
    i += 2;
  } else if (i < line.size() && line[i] == '0') {
    base = 8;
  }
  const size_t first = i;
  uint64_t mag = 0;
  const uint64_t max = static_cast<uint64_t>(INT64_MAX) + (negative ? 1 : 0);
  for (; i < line.size(); ++i) {
    const int d = hex_value(line[i]);
    if (d < 0 || static_cast<unsigned>(d) >= base) break;
    if (mag > (max - static_cast<uint64_t>(d)) / base) return false;  // ERANGE
    mag = mag * base + static_cast<uint64_t>(d);
  }
  if (i == first) return !line.empty() && line[0] == '\0';  // no digits: end pointer = start
  if (i != line.size() && line[i] != '\0') return false;
  out = negative ? static_cast<int64_t>(0 - mag) : static_cast<int64_t>(mag);
  return true;
}

// Python's int(text, base) as CPython's PyLong_FromString reads it (base 0: a 0x/0o/0b prefix
// or decimal without leading zeros). The text ends at its first NUL byte, as the C string
// does; whitespace around, a sign, and single underscores between digits are allowed. Returns
// an error fragment on failure.
std::string parse_python_int(std::string_view text, unsigned base, ParsedInt& out) {
  std::string_view s = text.substr(0, std::min(text.size(), text.find('\0')));
  s = trim(s);
  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  bool prefixed = false;
  if (base == 0) {
    base = 10;
    if (s.size() >= 2 && s[0] == '0') {
      const char b = static_cast<char>(s[1] | 0x20);
      base = b == 'x' ? 16 : b == 'o' ? 8 : b == 'b' ? 2 : 10;
      prefixed = base != 10;
      if (prefixed) s.remove_prefix(2);
    }
    // Base 0 refuses "010": a decimal with a leading zero must be all zeros.
    if (!prefixed && s.find_first_not_of("0_") != std::string_view::npos && !s.empty() &&
        s[0] == '0')
      return not_an_integer(text);
  }
  // Digit values, most significant first. An underscore must follow a digit (or the prefix)
  // and precede one.
  std::vector<uint8_t> digits;
  digits.reserve(s.size());
  bool after_digit = prefixed;
  for (char c : s) {
    if (c == '_') {
      if (!after_digit) return not_an_integer(text);
      after_digit = false;
      continue;
    }
    const int v = hex_value(c);
    if (v < 0 || static_cast<unsigned>(v) >= base) return not_an_integer(text);
    digits.push_back(static_cast<uint8_t>(v));
    after_digit = true;
  }
  if (digits.empty() || !after_digit) return not_an_integer(text);
  if (base == 10 && digits.size() > kMaxDecimalDigits)
    return fmt::format("integer has {} decimal digits; Python refuses more than {}", digits.size(),
                       kMaxDecimalDigits);

  // Magnitude as 32-bit limbs, least significant first. Power-of-two bases place bits directly
  // (linear: Python has no digit limit for them); decimal multiplies and adds per digit.
  std::vector<uint32_t> limbs;
  if (base != 10) {
    const unsigned bits = base == 16 ? 4 : base == 8 ? 3 : 1;
    limbs.assign((digits.size() * bits + 31) / 32 + 1, 0);
    size_t at = 0;
    for (auto it = digits.rbegin(); it != digits.rend(); ++it, at += bits) {
      const uint64_t v = static_cast<uint64_t>(*it) << (at % 32);
      limbs[at / 32] |= static_cast<uint32_t>(v);
      if ((v >> 32) != 0) limbs[at / 32 + 1] |= static_cast<uint32_t>(v >> 32);
    }
  } else {
    limbs.reserve(digits.size() / 9 + 2);
    for (uint8_t d : digits) {
      uint64_t carry = d;
      for (uint32_t& l : limbs) {
        const uint64_t v = static_cast<uint64_t>(l) * base + carry;
        l = static_cast<uint32_t>(v);
        carry = v >> 32;
      }
      if (carry != 0) limbs.push_back(static_cast<uint32_t>(carry));
    }
  }
  while (!limbs.empty() && limbs.back() == 0) limbs.pop_back();

  if (limbs.size() <= 2) {
    const uint64_t mag =
        limbs.empty()
            ? 0
            : (limbs[0] | (limbs.size() == 2 ? static_cast<uint64_t>(limbs[1]) << 32 : 0));
    if (!negative && mag <= static_cast<uint64_t>(INT64_MAX)) {
      out.value = static_cast<int64_t>(mag);
      return {};
    }
    if (negative && mag <= static_cast<uint64_t>(INT64_MAX) + 1) {
      out.value = static_cast<int64_t>(0 - mag);  // two's complement wrap is exact here
      return {};
    }
  }
  out.big = true;
  out.bytes = twos_complement(limbs, negative);
  return {};
}

// Python's float() on a FLOAT argument: surrounding whitespace, an optional sign, underscores
// between digits, "inf"/"nan" in any case.
bool parse_float_text(std::string_view text, double& out) {
  std::string_view s = trim(text);
  std::string cleaned;
  if (s.find('_') != std::string_view::npos) {
    for (char c : s)
      if (c != '_') cleaned.push_back(c);
    s = cleaned;
  }
  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s.empty() || s.front() == '+' || s.front() == '-') return false;
  double v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() && ec != std::errc::result_out_of_range) return false;
  if (end != s.data() + s.size()) return false;
  if (ec == std::errc::result_out_of_range) {
    // Python rounds rather than failing: float('1e999') is inf, float('1e-999') is 0.0.
    const size_t e = s.find_first_of("eE");
    const bool tiny = e != std::string_view::npos && e + 1 < s.size() && s[e + 1] == '-';
    v = tiny ? 0.0 : HUGE_VAL;
  }
  out = negative ? -v : v;
  return true;
}

// Memo: index -> node. Python's pickler numbers entries 0, 1, 2, … so a dense array is the fast
// path; an index far beyond the entries stored so far goes to a hash map instead, so that the
// array never grows past twice the number of entries (an attacker's index of 2^32 - 1 costs one
// map entry, not 16 GiB).
class Memo {
 public:
  explicit Memo(uint64_t max_entries) : max_entries_(max_entries) {}

  /// False when storing a new entry would exceed max_entries.
  bool put(uint64_t index, NodeId id) {
    if (index < dense_.size()) {
      if (dense_[index] == kNoNode) {
        if (count_ >= max_entries_) return false;
        ++count_;
      }
      dense_[index] = id;
      return true;
    }
    const uint64_t cap = std::max<uint64_t>(kMinDense, 2 * (count_ + 1));
    if (index < cap) {
      if (count_ >= max_entries_) return false;
      dense_.resize(
          static_cast<size_t>(std::min(cap, std::max<uint64_t>(index + 1, 2 * dense_.size()))),
          kNoNode);
      dense_[index] = id;
      ++count_;
      return true;
    }
    auto [it, inserted] = sparse_.try_emplace(index, id);
    if (inserted) {
      if (count_ >= max_entries_) {
        sparse_.erase(it);
        return false;
      }
      ++count_;
    } else {
      it->second = id;
    }
    return true;
  }

  NodeId get(uint64_t index) const {
    if (index < dense_.size()) return dense_[index];
    auto it = sparse_.find(index);
    return it == sparse_.end() ? kNoNode : it->second;
  }

  /// Number of distinct indices stored: MEMOIZE's next index (len(memo) in Python).
  uint64_t count() const { return count_; }

 private:
  static constexpr uint64_t kMinDense = 1024;
  std::vector<NodeId> dense_;
  std::unordered_map<uint64_t, NodeId> sparse_;
  uint64_t count_ = 0;
  uint64_t max_entries_;
};

std::string_view kind_name(Kind k) {
  switch (k) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "a bool";
    case Kind::kInt:
      return "an int";
    case Kind::kBigInt:
      return "an int";
    case Kind::kFloat:
      return "a float";
    case Kind::kString:
      return "a str";
    case Kind::kBytes:
      return "bytes";
    case Kind::kTuple:
      return "a tuple";
    case Kind::kList:
      return "a list";
    case Kind::kDict:
      return "a dict";
    case Kind::kSet:
      return "a set";
    case Kind::kFrozenSet:
      return "a frozenset";
    case Kind::kGlobal:
      return "a global";
    case Kind::kCall:
      return "an object";
    case Kind::kPersistentId:
      return "a persistent object";
    case Kind::kPickleBuffer:
      return "a pickle buffer";
  }
  return "a value";
}

// Nodes whose Python value this machine cannot know (an object some callable built, a global,
// whatever persistent_load returns). Python calls their append/extend/__setitem__/add/
// __setstate__ methods, which may exist: container opcodes on them are recorded, never refused,
// because refusing would stop the scan where Python goes on.
bool is_opaque(Kind k) {
  return k == Kind::kCall || k == Kind::kGlobal || k == Kind::kPersistentId;
}

class Machine {
 public:
  Machine(std::span<const uint8_t> bytes, uint64_t base, const Limits& limits, Program& p)
      : data_(bytes.data()),
        size_(bytes.size()),
        base_(base),
        max_nodes_(std::min<uint64_t>(limits.max_nodes, kNoNode)),
        max_stack_(limits.max_stack),
        max_container_(limits.max_container),
        global_budget_(kGlobalNameBudgetFixed + kGlobalNameBudgetPerByte * bytes.size()),
        memo_(limits.max_memo),
        p_(p) {}

  void run() {
    p_.begin = base_;
    // A torch data.pkl has about one node per 8 bytes; reserving that avoids most regrowth
    // without touching memory a small pickle will not use.
    p_.nodes.reserve(static_cast<size_t>(std::min<uint64_t>(size_ / 8 + 16, max_nodes_)));
    stack_.reserve(64);
    marks_.reserve(16);
    while (true) {
      if (pos_ >= size_) {
        op_pos_ = size_;
        err_ = corrupt_at(base_ + size_, "pickle ends without STOP (after {} bytes, at 0x{:X})",
                          size_, base_ + size_);
        break;
      }
      op_pos_ = pos_;
      op_ = data_[pos_++];
      if (op_ == STOP) {
        if (!need(1)) break;
        p_.root = stack_.back();
        p_.end = base_ + pos_;
        return;
      }
      if (!step()) break;
    }
    p_.root = kNoNode;
    p_.end = base_ + op_pos_;
    p_.status = std::move(err_);
  }

 private:
  // ---- errors ---------------------------------------------------------------------------------

  [[gnu::cold]] [[gnu::noinline]] bool fail_with(ErrorCode code, std::string detail) {
    const uint64_t at = base_ + op_pos_;
    if (kNameOf[op_] == "unknown")
      err_ = Status(code, fmt::format("unknown pickle opcode 0x{:02X} at 0x{:X}", op_, at), {}, at);
    else
      err_ = Status(
          code,
          fmt::format("pickle opcode {} (0x{:02X}) at 0x{:X}: {}", kNameOf[op_], op_, at, detail),
          {}, at);
    return false;
  }
  template <typename... A>
  bool fail(fmt::format_string<A...> f, A&&... a) {
    return fail_with(ErrorCode::kCorrupt, fmt::format(f, std::forward<A>(a)...));
  }
  template <typename... A>
  bool limit(fmt::format_string<A...> f, A&&... a) {
    return fail_with(ErrorCode::kLimitExceeded, fmt::format(f, std::forward<A>(a)...));
  }

  // ---- input ----------------------------------------------------------------------------------

  size_t left() const { return size_ - pos_; }

  /// A fixed-size argument of n bytes.
  bool take(size_t n, const uint8_t*& out) {
    if (left() < n) return fail("argument needs {} bytes, {} left", n, left());
    out = data_ + pos_;
    pos_ += n;
    return true;
  }

  /// A length-prefixed argument whose length was just read: checked before anything is sized
  /// by it.
  bool take_len(uint64_t n, std::string_view what, std::string_view& out) {
    if (n > left())
      return fail("{} length {} reaches past the end of the pickle ({} bytes left)", what, n,
                  left());
    out = std::string_view(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return true;
  }

  /// A protocol-0 argument: the bytes up to the next newline (which is consumed).
  bool line(std::string_view& out) {
    const void* nl = left() == 0 ? nullptr : std::memchr(data_ + pos_, '\n', left());
    if (nl == nullptr)
      return fail("argument is not terminated by a newline ({} bytes left)", left());
    const size_t n = static_cast<size_t>(static_cast<const uint8_t*>(nl) - (data_ + pos_));
    out = std::string_view(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n + 1;
    return true;
  }

  // ---- nodes and the stack --------------------------------------------------------------------

  /// Appends a node; `id` receives its index. References into p_.nodes die here.
  bool node(Kind k, NodeId& id) {
    if (p_.nodes.size() >= max_nodes_)
      return limit("more than {} nodes (Limits::max_nodes)", max_nodes_);
    id = static_cast<NodeId>(p_.nodes.size());
    Node& n = p_.nodes.emplace_back(kBlankNode);
    n.kind = k;
    n.offset = base_ + op_pos_;
    return true;
  }
  Node& at(NodeId id) { return p_.nodes[id]; }

  bool push(NodeId id) {
    if (stack_.size() + marks_.size() >= max_stack_)
      return limit("stack deeper than {} (Limits::max_stack)", max_stack_);
    stack_.push_back(id);
    return true;
  }

  /// Creates a node and pushes it.
  bool push_node(Kind k, NodeId& id) { return node(k, id) && push(id); }

  size_t fence() const { return marks_.empty() ? 0 : marks_.back(); }
  size_t avail() const { return stack_.size() - fence(); }

  /// At least n values above the innermost MARK (Python cannot see through a MARK either).
  bool need(size_t n) {
    if (avail() >= n) return true;
    return fail("stack underflow (needs {} value{}, stack has {}{})", n, n == 1 ? "" : "s", avail(),
                marks_.empty() ? "" : " since the last MARK");
  }

  NodeId pop() {
    const NodeId id = stack_.back();
    stack_.pop_back();
    return id;
  }

  /// Pops the innermost MARK; its values are stack_[k, end).
  bool pop_mark(size_t& k) {
    if (marks_.empty()) return fail("no MARK to close");
    k = marks_.back();
    marks_.pop_back();
    return true;
  }

  bool check_container(uint64_t n) {
    if (n <= max_container_) return true;
    return limit("{} items in one container (Limits::max_container is {})", n, max_container_);
  }

  /// A container node built from stack_[k, end), which is then popped; pushes the node.
  bool collect(Kind kind, size_t k, bool as_kv) {
    NodeId id = kNoNode;
    if (!check_container(stack_.size() - k) || !node(kind, id)) return false;
    auto& dst = as_kv ? at(id).kv : at(id).items;
    dst.assign(stack_.begin() + static_cast<std::ptrdiff_t>(k), stack_.end());
    stack_.resize(k);
    return push(id);
  }

  /// APPEND(S)/SETITEM(S)/ADDITEMS: adds `n` values to the container `target`.
  bool add_to(NodeId target, const NodeId* values, size_t n, bool as_kv) {
    Node& t = at(target);
    // Bytes may be a bytearray (BYTEARRAY8), which Python can append to and assign into.
    bool ok_kind = is_opaque(t.kind) || t.kind == Kind::kBytes;
    switch (op_) {
      case APPEND:
      case APPENDS:
        ok_kind = ok_kind || t.kind == Kind::kList;
        break;
      case ADDITEMS:
        ok_kind = is_opaque(t.kind) || t.kind == Kind::kSet;
        break;
      default:  // SETITEM(S); Python assigns list items by index, too
        ok_kind = ok_kind || t.kind == Kind::kDict || t.kind == Kind::kList;
    }
    if (!ok_kind) return fail("cannot add items to {} (Python would fail too)", kind_name(t.kind));
    auto& dst = as_kv ? t.kv : t.items;
    if (!check_container((dst.size() + n) / (as_kv ? 2 : 1))) return false;
    dst.insert(dst.end(), values, values + n);
    return true;
  }

  /// The text of a string node, for STACK_GLOBAL; nullptr if it is not a string.
  const std::string* text_of(NodeId id) {
    const Node& n = at(id);
    // Py2 strings (BINSTRING …) are bytes here but str under torch.load (encoding="utf-8"), so
    // they name globals too.
    return n.kind == Kind::kString || n.kind == Kind::kBytes ? &n.s : nullptr;
  }

  /// Records a global reference and returns its index.
  bool record_global(std::string_view module, std::string_view name, GlobalOpcode how,
                     uint32_t& index) {
    global_bytes_ += module.size() + name.size();
    if (global_bytes_ > global_budget_)
      return limit("global names take more than {} bytes", global_budget_);
    if (p_.globals.size() >= max_nodes_)
      return limit("more than {} globals (Limits::max_nodes)", max_nodes_);
    index = static_cast<uint32_t>(p_.globals.size());
    Global& g = p_.globals.emplace_back();
    g.module.assign(module);
    g.name.assign(name);
    g.offset = base_ + op_pos_;
    g.opcode = how;
    g.klass = classify_global(g.module, g.name);
    return true;
  }

  bool push_global(uint32_t index) {
    NodeId id = kNoNode;
    if (!push_node(Kind::kGlobal, id)) return false;
    at(id).global_index = index;
    return true;
  }

  bool push_call(CallOpcode how, NodeId callable, NodeId args, NodeId kwargs) {
    NodeId id = kNoNode;
    if (!push_node(Kind::kCall, id)) return false;
    Node& n = at(id);
    n.call = how;
    n.callable = callable;
    n.args = args;
    n.kwargs = kwargs;
    return true;
  }

  bool push_int(int64_t v) {
    NodeId id = kNoNode;
    if (!push_node(Kind::kInt, id)) return false;
    at(id).i = v;
    return true;
  }

  bool push_text(Kind k, std::string_view s) {
    NodeId id = kNoNode;
    if (!push_node(k, id)) return false;
    at(id).s.assign(s);
    return true;
  }

  /// LONG1/LONG4 bytes: an int when they fit int64.
  bool push_long_bytes(std::string_view b) {
    const auto* u = reinterpret_cast<const uint8_t*>(b.data());
    const size_t n = b.size();
    bool fits = true;
    if (n > 8) {
      const uint8_t ext = (u[7] & 0x80) != 0 ? 0xFF : 0x00;
      for (size_t k = 8; k < n && fits; ++k) fits = u[k] == ext;
    }
    if (!fits) return push_text(Kind::kBigInt, b);
    uint64_t v = 0;
    const size_t m = std::min<size_t>(n, 8);
    for (size_t k = 0; k < m; ++k) v |= static_cast<uint64_t>(u[k]) << (8 * k);
    if (m > 0 && m < 8 && (u[m - 1] & 0x80) != 0) v |= ~uint64_t{0} << (8 * m);  // sign-extend
    return push_int(static_cast<int64_t>(v));
  }

  /// LONG's argument: Python's int(text, 0) on the line without its trailing 'L'.
  bool push_python_int(std::string_view text) {
    ParsedInt v;
    std::string err = parse_python_int(text, 0, v);
    if (!err.empty()) return fail("{}", err);
    if (v.big) return push_text(Kind::kBigInt, v.bytes);
    return push_int(v.value);
  }

  bool memo_put(uint64_t index) {
    if (!need(1)) return false;
    if (!memo_.put(index, stack_.back()))
      return limit("more than {} memo entries (Limits::max_memo)", memo_.count());
    return true;
  }

  bool memo_get(uint64_t index) {
    const NodeId id = memo_.get(index);
    if (id == kNoNode) return fail("memo index {} was never stored", index);
    return push(id);
  }

  /// A decimal GET/PUT argument (CPython: int(line, 10), then a non-negative Py_ssize_t).
  bool memo_index_text(uint64_t& index) {
    std::string_view s;
    if (!line(s)) return false;
    ParsedInt v;
    if (!parse_python_int(s, 10, v).empty() || v.big || v.value < 0)
      return fail("memo index '{}' is not a non-negative integer",
                  fmt::string_view(s.data(), std::min<size_t>(s.size(), 40)));
    index = static_cast<uint64_t>(v.value);
    return true;
  }

  bool stack_global(std::string_view module, std::string_view name, GlobalOpcode how) {
    uint32_t index = 0;
    return record_global(module, name, how, index) && push_global(index);
  }

  bool ext(int64_t code) {
    uint32_t index = 0;
    return record_global(kExtModule, fmt::format("{}", code), GlobalOpcode::kExt, index) &&
           push_global(index);
  }

  // ---- the interpreter ------------------------------------------------------------------------

  bool step() {
    const uint8_t* a = nullptr;
    std::string_view s;
    NodeId id = kNoNode;
    switch (op_) {
      case MARK:
        if (stack_.size() + marks_.size() >= max_stack_)
          return limit("stack deeper than {} (Limits::max_stack)", max_stack_);
        marks_.push_back(stack_.size());
        return true;
      case POP:
        // A MARK on top is popped like a value (as both CPython unpicklers do).
        if (!marks_.empty() && marks_.back() == stack_.size()) {
          marks_.pop_back();
          return true;
        }
        if (!need(1)) return false;
        stack_.pop_back();
        return true;
      case POP_MARK: {
        size_t k = 0;
        if (!pop_mark(k)) return false;
        stack_.resize(k);
        return true;
      }
      case DUP:
        return need(1) && push(stack_.back());

      // -- constants ----------------------------------------------------------------------------
      case NONE:
        return push_node(Kind::kNone, id);
      case NEWTRUE:
      case NEWFALSE:
        if (!push_node(Kind::kBool, id)) return false;
        at(id).b = op_ == NEWTRUE;
        return true;
      case INT: {
        if (!line(s)) return false;
        int64_t v = 0;
        if (!parse_c_long(s, v)) return push_python_int(s);
        // Protocol 0 writes bools as "I01"/"I00"; CPython takes any 2-character line that
        // strtol reads as 0 or 1 for one.
        if (s.size() == 2 && (v == 0 || v == 1)) {
          if (!push_node(Kind::kBool, id)) return false;
          at(id).b = v == 1;
          return true;
        }
        return push_int(v);
      }
      case LONG:
        if (!line(s)) return false;
        if (!s.empty() && s.back() == 'L') s.remove_suffix(1);
        return push_python_int(s);
      case BININT:
        return take(4, a) && push_int(static_cast<int32_t>(load_le32(a)));
      case BININT1:
        return take(1, a) && push_int(a[0]);
      case BININT2:
        return take(2, a) && push_int(load_le16(a));
      case LONG1:
        return take(1, a) && take_len(a[0], "integer", s) && push_long_bytes(s);
      case LONG4: {
        if (!take(4, a)) return false;
        const auto n = static_cast<int32_t>(load_le32(a));
        if (n < 0) return fail("negative integer length {}", n);
        return take_len(static_cast<uint64_t>(n), "integer", s) && push_long_bytes(s);
      }
      case FLOAT: {
        if (!line(s)) return false;
        double v = 0;
        if (!parse_float_text(s, v))
          return fail("'{}' is not a float",
                      fmt::string_view(s.data(), std::min<size_t>(s.size(), 40)));
        if (!push_node(Kind::kFloat, id)) return false;
        at(id).f = v;
        return true;
      }
      case BINFLOAT: {
        if (!take(8, a)) return false;
        uint64_t bits = 0;
        for (int k = 0; k < 8; ++k) bits = (bits << 8) | a[k];  // big-endian, unlike the rest
        if (!push_node(Kind::kFloat, id)) return false;
        at(id).f = std::bit_cast<double>(bits);
        return true;
      }

      // -- strings and bytes --------------------------------------------------------------------
      case STRING: {
        if (!line(s)) return false;
        if (s.size() < 2 || s.front() != s.back() || (s.front() != '\'' && s.front() != '"'))
          return fail("argument must be a quoted string");
        if (!push_node(Kind::kBytes, id)) return false;
        at(id).s = decode_string_escapes(s.substr(1, s.size() - 2));
        return true;
      }
      case BINSTRING: {
        if (!take(4, a)) return false;
        const auto n = static_cast<int32_t>(load_le32(a));
        if (n < 0) return fail("negative string length {}", n);
        return take_len(static_cast<uint64_t>(n), "string", s) && push_text(Kind::kBytes, s);
      }
      case SHORT_BINSTRING:
        return take(1, a) && take_len(a[0], "string", s) && push_text(Kind::kBytes, s);
      case UNICODE:
        if (!line(s) || !push_node(Kind::kString, id)) return false;
        at(id).s = decode_raw_unicode_escape(s);
        return true;
      case BINUNICODE:
        return take(4, a) && take_len(load_le32(a), "string", s) && push_text(Kind::kString, s);
      case SHORT_BINUNICODE:
        return take(1, a) && take_len(a[0], "string", s) && push_text(Kind::kString, s);
      case BINUNICODE8:
        return take(8, a) && take_len(load_le64(a), "string", s) && push_text(Kind::kString, s);
      case BINBYTES:
        return take(4, a) && take_len(load_le32(a), "bytes", s) && push_text(Kind::kBytes, s);
      case SHORT_BINBYTES:
        return take(1, a) && take_len(a[0], "bytes", s) && push_text(Kind::kBytes, s);
      case BINBYTES8:
      case BYTEARRAY8:
        return take(8, a) && take_len(load_le64(a), "bytes", s) && push_text(Kind::kBytes, s);

      // -- containers ---------------------------------------------------------------------------
      case EMPTY_TUPLE:
        return push_node(Kind::kTuple, id);
      case EMPTY_LIST:
        return push_node(Kind::kList, id);
      case EMPTY_DICT:
        return push_node(Kind::kDict, id);
      case EMPTY_SET:
        return push_node(Kind::kSet, id);
      case TUPLE1:
      case TUPLE2:
      case TUPLE3: {
        const size_t n = static_cast<size_t>(op_ - TUPLE1 + 1);
        return need(n) && collect(Kind::kTuple, stack_.size() - n, false);
      }
      case TUPLE:
      case LIST:
      case FROZENSET: {
        size_t k = 0;
        if (!pop_mark(k)) return false;
        return collect(op_ == TUPLE  ? Kind::kTuple
                       : op_ == LIST ? Kind::kList
                                     : Kind::kFrozenSet,
                       k, false);
      }
      case DICT: {
        size_t k = 0;
        if (!pop_mark(k)) return false;
        if ((stack_.size() - k) % 2 != 0)
          return fail("odd number of items ({}) for a dict", stack_.size() - k);
        return collect(Kind::kDict, k, true);
      }
      case APPEND: {
        if (!need(2)) return false;
        const NodeId v = pop();
        return add_to(stack_.back(), &v, 1, false);
      }
      case SETITEM: {
        if (!need(3)) return false;
        const NodeId kv[2] = {stack_[stack_.size() - 2], stack_[stack_.size() - 1]};
        stack_.resize(stack_.size() - 2);
        return add_to(stack_.back(), kv, 2, true);
      }
      case APPENDS:
      case SETITEMS:
      case ADDITEMS: {
        size_t k = 0;
        if (!pop_mark(k)) return false;
        // The target sits just below the MARK, above the enclosing MARK (if any).
        if (k == 0 || k <= fence())
          return fail("stack underflow (no object below the MARK to add items to)");
        const size_t n = stack_.size() - k;
        if (op_ == SETITEMS && n % 2 != 0) return fail("odd number of items ({}) for SETITEMS", n);
        if (!add_to(stack_[k - 1], stack_.data() + k, n, op_ == SETITEMS)) return false;
        stack_.resize(k);
        return true;
      }

      // -- memo ---------------------------------------------------------------------------------
      case PUT: {
        uint64_t index = 0;
        return memo_index_text(index) && memo_put(index);
      }
      case BINPUT:
        return take(1, a) && memo_put(a[0]);
      case LONG_BINPUT:
        return take(4, a) && memo_put(load_le32(a));
      case MEMOIZE:
        return memo_put(memo_.count());
      case GET: {
        uint64_t index = 0;
        return memo_index_text(index) && memo_get(index);
      }
      case BINGET:
        return take(1, a) && memo_get(a[0]);
      case LONG_BINGET:
        return take(4, a) && memo_get(load_le32(a));

      // -- globals and calls --------------------------------------------------------------------
      case GLOBAL: {
        std::string_view module, name;
        return line(module) && line(name) && stack_global(module, name, GlobalOpcode::kGlobal);
      }
      case STACK_GLOBAL: {
        if (!need(2)) return false;
        const NodeId name_id = pop();
        const NodeId module_id = pop();
        const std::string* module = text_of(module_id);
        const std::string* name = text_of(name_id);
        return stack_global(module ? std::string_view(*module) : kNonString,
                            name ? std::string_view(*name) : kNonString,
                            GlobalOpcode::kStackGlobal);
      }
      case EXT1:
        return take(1, a) && ext(a[0]);
      case EXT2:
        return take(2, a) && ext(load_le16(a));
      case EXT4:
        return take(4, a) && ext(static_cast<int32_t>(load_le32(a)));
      case INST: {
        std::string_view module, name;
        if (!line(module) || !line(name)) return false;
        // Recorded before the MARK is checked: the global is named in the file either way.
        uint32_t index = 0;
        if (!record_global(module, name, GlobalOpcode::kInst, index)) return false;
        size_t k = 0;
        if (!pop_mark(k) || !check_container(stack_.size() - k)) return false;
        NodeId callable = kNoNode, args = kNoNode;
        if (!node(Kind::kGlobal, callable)) return false;
        at(callable).global_index = index;
        if (!node(Kind::kTuple, args)) return false;
        at(args).items.assign(stack_.begin() + static_cast<std::ptrdiff_t>(k), stack_.end());
        stack_.resize(k);
        return push_call(CallOpcode::kInst, callable, args, kNoNode);
      }
      case OBJ: {
        size_t k = 0;
        if (!pop_mark(k)) return false;
        if (stack_.size() == k) return fail("stack underflow (no class after the MARK)");
        if (!check_container(stack_.size() - k - 1)) return false;
        const NodeId cls = stack_[k];
        NodeId args = kNoNode;
        if (!node(Kind::kTuple, args)) return false;
        at(args).items.assign(stack_.begin() + static_cast<std::ptrdiff_t>(k) + 1, stack_.end());
        stack_.resize(k);
        return push_call(CallOpcode::kObj, cls, args, kNoNode);
      }
      case REDUCE:
      case NEWOBJ: {
        if (!need(2)) return false;
        const NodeId args = pop();
        const NodeId callable = pop();
        return push_call(op_ == REDUCE ? CallOpcode::kReduce : CallOpcode::kNewObj, callable, args,
                         kNoNode);
      }
      case NEWOBJ_EX: {
        if (!need(3)) return false;
        const NodeId kwargs = pop();
        const NodeId args = pop();
        const NodeId cls = pop();
        return push_call(CallOpcode::kNewObjEx, cls, args, kwargs);
      }
      case BUILD: {
        // Python calls __setstate__ or updates __dict__; whatever the object, the state is
        // recorded on it (never refused: a valid pickle may BUILD anything).
        if (!need(2)) return false;
        const NodeId state = pop();
        at(stack_.back()).state = state;
        return true;
      }
      case PERSID: {
        if (!line(s)) return false;
        NodeId pid = kNoNode;
        if (!node(Kind::kString, pid)) return false;
        at(pid).s.assign(s);
        if (!push_node(Kind::kPersistentId, id)) return false;
        at(id).args = pid;
        return true;
      }
      case BINPERSID: {
        if (!need(1)) return false;
        const NodeId pid = pop();
        if (!push_node(Kind::kPersistentId, id)) return false;
        at(id).args = pid;
        return true;
      }

      // -- framing and protocol -----------------------------------------------------------------
      case PROTO:
        if (!take(1, a)) return false;
        if (a[0] > 5)
          return fail_with(ErrorCode::kUnsupported,
                           fmt::format("pickle protocol {} is newer than 5", a[0]));
        p_.protocol = a[0];
        return true;
      case FRAME: {
        if (!take(8, a)) return false;
        const uint64_t n = load_le64(a);
        if (n > left())
          return fail("frame length {} reaches past the end of the pickle ({} bytes left)", n,
                      left());
        return true;  // frames only group opcodes for buffered reading
      }
      case NEXT_BUFFER:
        // Out-of-band data that torch.load never supplies (Python fails here); kept as a node so
        // that scanning continues.
        return push_node(Kind::kPickleBuffer, id);
      case READONLY_BUFFER:
        return need(1);

      default:
        return fail_with(ErrorCode::kCorrupt, {});
    }
  }

  const uint8_t* data_;
  size_t size_;
  uint64_t base_;
  uint64_t max_nodes_;
  uint64_t max_stack_;
  uint64_t max_container_;
  uint64_t global_budget_;
  uint64_t global_bytes_ = 0;
  Memo memo_;
  Program& p_;

  size_t pos_ = 0;
  size_t op_pos_ = 0;
  uint8_t op_ = 0;
  std::vector<NodeId> stack_;
  std::vector<size_t> marks_;  // stack_.size() at each open MARK
  Status err_;
};

}  // namespace

std::string_view opcode_name(uint8_t op) { return kNameOf[op]; }

namespace {

/// Globals that call the first item of their argument tuple (or, for _reconstructor, the first
/// two: the class and the base whose __init__ runs): the pickle calls that item through them.
size_t calls_through(const Global& g) {
  if (g.module == "functools" && (g.name == "partial" || g.name == "reduce")) return 1;
  if ((g.module == "copyreg" || g.module == "copy_reg") &&
      (g.name == "__newobj__" || g.name == "__newobj_ex__"))
    return 1;
  if ((g.module == "copyreg" || g.module == "copy_reg") && g.name == "_reconstructor") return 2;
  return 0;
}

/// Marks every global the pickle calls (Global::called) and classifies those again: a call is a
/// node whose callable is the global's node (memo copies share the node), or an item that
/// functools.partial or copyreg's constructors call in turn. Runs after the machine so that
/// calls after an error are not invented; globals only named stay as run() classified them.
void mark_calls(Program& p) {
  auto global_of = [&](NodeId id) -> Global* {
    if (id == kNoNode || id >= p.nodes.size()) return nullptr;
    const Node& n = p.nodes[id];
    if (n.kind != Kind::kGlobal || n.global_index >= p.globals.size()) return nullptr;
    return &p.globals[n.global_index];
  };
  for (const Node& n : p.nodes) {
    if (n.kind != Kind::kCall) continue;
    Global* g = global_of(n.callable);
    if (!g) continue;
    g->called = true;
    const size_t through = calls_through(*g);
    if (through == 0 || n.args == kNoNode || n.args >= p.nodes.size()) continue;
    const Node& args = p.nodes[n.args];
    if (args.kind != Kind::kTuple) continue;
    for (size_t i = 0; i < through && i < args.items.size(); ++i)
      if (Global* inner = global_of(args.items[i])) inner->called = true;
  }
  for (Global& g : p.globals)
    if (g.called && g.opcode != GlobalOpcode::kExt)
      g.klass = classify_global(g.module, g.name, true);
}

}  // namespace

Program run(std::span<const uint8_t> bytes, uint64_t base, const Limits& limits) {
  Program p;
  Machine(bytes, base, limits, p).run();
  mark_calls(p);
  return p;
}

}  // namespace ckptkit::pickle
