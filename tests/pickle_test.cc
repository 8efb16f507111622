// The pickle machine (src/formats/torch/pickle.h) against oracles nobody here wrote:
//
//  * Python's own pickler and unpickler: /usr/bin/python3 pickles nested data at protocols 0–5
//    (and loads hand-made protocol-0/py2 pickles), and prints a canonical dump of the value
//    *its* unpickler builds; the graph run() builds must dump to the same text.
//  * pickletools.genops for the byte offsets of malicious opcodes;
//  * torch.save (python3-torch) for a real data.pkl: globals, offsets, storage arguments.
//
// Plus hand-made byte strings for the opcodes Python cannot load without running something
// (REDUCE on unknown globals, INST, OBJ, NEWOBJ_EX, EXT, persistent ids, out-of-band buffers),
// every error path with its absolute offset and message, the limits, and classify_global.
// Tests that need Python skip when /usr/bin/python3 (or torch) is missing.
#include "formats/torch/pickle.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "test_util.h"

namespace ckptkit::pickle {
namespace {

constexpr const char* kPython = "/usr/bin/python3";

Program run_str(std::string_view s, uint64_t base = 0, const Limits& limits = {}) {
  return run(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()), base,
             limits);
}
/// A string literal with its embedded NULs (pickles are full of them).
template <size_t N>
Program run_str(const char (&s)[N], uint64_t base = 0, const Limits& limits = {}) {
  return run_str(std::string_view(s, N - 1), base, limits);
}

std::string hex(std::string_view s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out.push_back(d[c >> 4]);
    out.push_back(d[c & 15]);
  }
  return out;
}

bool have_python() { return ::access(kPython, X_OK) == 0; }

/// Runs `script` with /usr/bin/python3, argument `dir`; returns its stdout.
std::string run_python(const std::string& script, const std::string& dir) {
  const std::string py = dir + "/script.py";
  {
    std::ofstream f(py);
    f << script;
  }
  const std::string out = dir + "/stdout.txt";
  const std::string cmd =
      std::string(kPython) + " " + py + " " + dir + " > " + out + " 2> " + dir + "/stderr.txt";
  const int rc = std::system(cmd.c_str());
  std::ifstream err(dir + "/stderr.txt");
  std::stringstream e;
  e << err.rdbuf();
  EXPECT_EQ(rc, 0) << "python failed: " << e.str();
  std::ifstream f(out);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  return out;
}

const Global* global_of(const Program& p, NodeId id) {
  if (id == kNoNode || p.node(id).kind != Kind::kGlobal) return nullptr;
  return &p.globals[p.node(id).global_index];
}

std::string full_name(const Program& p, NodeId id) {
  const Global* g = global_of(p, id);
  if (g == nullptr) return "";
  // Python's pickler writes Python 2 names below protocol 3 (fix_imports).
  return (g->module == "__builtin__" ? "builtins" : g->module) + "." + g->name;
}

/// Code points of a UTF-8 string, as Latin-1 bytes (all must be < 256).
std::string latin1(const std::string& utf8) {
  std::string out;
  for (size_t i = 0; i < utf8.size(); ++i) {
    const auto c = static_cast<unsigned char>(utf8[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if ((c & 0xE0) == 0xC0 && i + 1 < utf8.size()) {
      out.push_back(static_cast<char>(((c & 0x1F) << 6) | (utf8[i + 1] & 0x3F)));
      ++i;
    } else {
      return "<not latin-1>";
    }
  }
  return out;
}

/// The canonical dump the oracle script prints for Python values (see kOracleScript): the
/// graph is read as Python would build it, including the REDUCE shapes Python's pickler uses
/// for sets, frozensets, bytes and bytearrays at low protocols.
class Dumper {
 public:
  explicit Dumper(const Program& p) : p_(p) {}

  std::string dump(NodeId id) {
    const Node& n = p_.node(id);
    switch (n.kind) {
      case Kind::kNone:
        return "N";
      case Kind::kBool:
        return n.b ? "T" : "F";
      case Kind::kInt:
        return "i" + std::to_string(n.i);
      case Kind::kBigInt:
        return "I" + hex(n.s);
      case Kind::kFloat: {
        uint64_t bits;
        std::memcpy(&bits, &n.f, 8);
        char buf[20];
        std::snprintf(buf, sizeof buf, "f%016llx", static_cast<unsigned long long>(bits));
        return buf;
      }
      case Kind::kString:
        return "s" + hex(n.s);
      case Kind::kBytes:
        return "b" + hex(n.s);
      case Kind::kTuple:
        return "(" + join(n.items) + ")";
      case Kind::kFrozenSet:
        return "F<" + sorted_join(n.items) + ">";
      case Kind::kList:
      case Kind::kDict:
      case Kind::kSet: {
        if (auto it = seen_.find(id); it != seen_.end()) return "@" + std::to_string(it->second);
        seen_[id] = static_cast<int>(seen_.size());
        if (n.kind == Kind::kList) {
          // SETITEM on a list assigns by index (recorded in kv).
          std::vector<NodeId> items = n.items;
          for (size_t i = 0; i + 1 < n.kv.size(); i += 2) {
            const Node& k = p_.node(n.kv[i]);
            if (k.kind == Kind::kInt && k.i >= 0 && static_cast<size_t>(k.i) < items.size())
              items[static_cast<size_t>(k.i)] = n.kv[i + 1];
          }
          return "[" + join(items) + "]";
        }
        if (n.kind == Kind::kSet) return "<" + sorted_join(n.items) + ">";
        std::string out = "{";
        for (size_t i = 0; i + 1 < n.kv.size(); i += 2)
          out += (i ? "," : "") + dump(n.kv[i]) + ":" + dump(n.kv[i + 1]);
        return out + "}";
      }
      case Kind::kCall:
        return dump_call(id);
      default:
        return "?";
    }
  }

 private:
  std::string join(const std::vector<NodeId>& ids) {
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? "," : "") + dump(ids[i]);
    return out;
  }
  std::string sorted_join(const std::vector<NodeId>& ids) {
    std::vector<std::string> parts;
    for (NodeId id : ids) parts.push_back(dump(id));
    std::sort(parts.begin(), parts.end());
    std::string out;
    for (size_t i = 0; i < parts.size(); ++i) out += (i ? "," : "") + parts[i];
    return out;
  }
  std::vector<NodeId> args_of(const Node& n) {
    if (n.args == kNoNode || p_.node(n.args).kind != Kind::kTuple) return {};
    return p_.node(n.args).items;
  }
  std::string dump_call(NodeId id) {
    const Node& n = p_.node(id);
    const std::string f = full_name(p_, n.callable);
    const std::vector<NodeId> a = args_of(n);
    if (f == "builtins.set" || f == "builtins.frozenset") {
      const bool is_set = f == "builtins.set";
      if (is_set) {
        if (auto it = seen_.find(id); it != seen_.end()) return "@" + std::to_string(it->second);
        seen_[id] = static_cast<int>(seen_.size());
      }
      std::vector<NodeId> items;
      if (!a.empty()) items = p_.node(a[0]).items;
      return (is_set ? "<" : "F<") + sorted_join(items) + ">";
    }
    if (f == "_codecs.encode" && a.size() == 2) return "b" + hex(latin1(p_.node(a[0]).s));
    if (f == "builtins.bytes" && a.empty()) return "b";
    if (f == "builtins.bytearray") {
      if (a.empty()) return "b";
      if (a.size() == 2) return "b" + hex(latin1(p_.node(a[0]).s));
      return dump(a[0]);
    }
    return "?call " + f;
  }

  const Program& p_;
  std::map<NodeId, int> seen_;
};

// ---- Python as the oracle for data ----------------------------------------------------------

constexpr const char* kOracleScript = R"PY(
import os, pickle, pickletools, struct, sys
out = sys.argv[1]

def enc_long(x):  # pickle.encode_long: minimal little-endian two's complement
    n = (x.bit_length() >> 3) + 1
    b = x.to_bytes(n, 'little', signed=True)
    if x < 0 and n > 1 and b[-1] == 0xff and (b[-2] & 0x80):
        b = b[:-1]
    return b

def dump(root):
    ids = {}
    def d(o):
        if o is None: return 'N'
        if o is True: return 'T'
        if o is False: return 'F'
        if isinstance(o, int):
            return 'i%d' % o if -2**63 <= o < 2**63 else 'I' + enc_long(o).hex()
        if isinstance(o, float): return 'f' + struct.pack('>d', o).hex()
        if isinstance(o, str): return 's' + o.encode('utf-8', 'surrogatepass').hex()
        if isinstance(o, (bytes, bytearray)): return 'b' + bytes(o).hex()
        if isinstance(o, tuple): return '(' + ','.join(map(d, o)) + ')'
        if isinstance(o, frozenset): return 'F<' + ','.join(sorted(map(d, o))) + '>'
        if id(o) in ids: return '@%d' % ids[id(o)]
        ids[id(o)] = len(ids)
        if isinstance(o, list): return '[' + ','.join(map(d, o)) + ']'
        if isinstance(o, dict):
            return '{' + ','.join(d(k) + ':' + d(v) for k, v in o.items()) + '}'
        if isinstance(o, set): return '<' + ','.join(sorted(map(d, o))) + '>'
        raise TypeError(type(o))
    return d(root)

ops_seen = set()
def emit(name, data, value):
    with open(os.path.join(out, name + '.pkl'), 'wb') as f:
        f.write(data)
    try:
        for op, arg, pos in pickletools.genops(data):
            ops_seen.add(op.name)
    except ValueError:  # pickletools reads INT as decimal only; the unpickler does not
        pass
    print(name, dump(value))

inf, nan = float('inf'), float('nan')
shared = [1, 2]
selfref = [1]; selfref.append(selfref)
selfdict = {'a': 1}; selfdict['me'] = selfdict
rectuple = ([],); rectuple[0].append(rectuple)
strs = ['s%d' % i for i in range(300)]
cases = {
    'scalars': [None, True, False, 0, 1, -1, 255, 256, 65535, 65536, -129, 2**31 - 1, -2**31,
                2**31, -2**31 - 1, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**64, 2**100, -2**100,
                10**50, -(3**200), 0.0, -0.0, 1.5, -2.25e-300, 1e300, 5e-324, 1e-310, inf, -inf,
                nan, 0.1],
    'strings': ['', 'abc', 'h\xe9llo', '\xff', '\u65e5\u672c\u8a9e', '\U0001F600', 'back\\slash',
                'new\nline', 'nul\0', 'quote\'"', '\r\x1a\t', 'a' * 300, '\ud800', '\\u0041',
                'x\\'],
    'bytes': [b'', b'\x00\xff', b'x' * 300, bytearray(b'ab'), bytearray(), b'\\u1234'],
    'tuples': [(), (1,), (1, 'a'), (1, 2, 3), (1, 2, 3, 4), ((), ((),))],
    'containers': {'set': {1, 2, 'x', (1, 2)}, 'fs': frozenset({3, 4}),
                   'empty': [set(), frozenset(), {}, []],
                   'nested': {'a': {'b': [1, {'c': (2,)}]}}, 7: None, (1, 'k'): 2.5},
    'shared': [shared, shared, {'k': shared}, (shared,)],
    'selfref': selfref,
    'selfdict': selfdict,
    'rectuple': rectuple,
    'memo': strs + strs,
    'biglist': list(range(2500)),
    'bigdict': {i: str(i) for i in range(1200)},
}
for name, obj in cases.items():
    for proto in range(6):
        data = pickle.dumps(obj, proto)
        emit('%s-p%d' % (name, proto), data, pickle.loads(data))

hand = {
    'h_string': b"S'abc\\n\\x41\\101\\'q\\\\'\n.",
    'h_string_dq': b'S"dq\\"x\\t"\n.',
    'h_py2_strings': b"(S'a'\nU\x03bcdT\x02\x00\x00\x00efl.",
    'h_bigint': b"I123456789012345678901234567890\n.",
    'h_negint': b"I-9223372036854775809\n.",
    'h_minint': b"I-9223372036854775808\n.",
    'h_long': b"L-99999999999999999999999L\n.",
    'h_long_small': b"L5L\n.",
    'h_hexint': b"I0x7fffffffffffffffff\n.",
    'h_octint': b"I-0o777\n.",
    'h_c_octal': b"(I010\nI-017\nI0x1F\nI 12 \nI+5\nL0x10L\nL 5 L\nl.",
    'h_binint': b"I0b101\n.",
    'h_underscore': b"I1_000\n.",
    'h_int_bool': b"(I01\nI00\nI1\nI0\nl.",
    'h_float_tiny': b"F-1e-999\n.",
    'h_float_nan': b"Fnan\n.",
    'h_unicode': b"Vcaf\xe9 \\u20ac \\\\u0041 \\U0001F600\n.",
    'h_dict0': b"(I1\nI2\nd.",
    'h_list0': b"(lp0\nI1\naI2\na.",
    'h_getput': b"(I1\nI2\ntp0\n0g0\n.",
    'h_frame': b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01\x94\x85.",
    'h_long1_wide': b"\x80\x02\x8a\x09\x01" + b"\x00" * 8 + b".",
    'h_long1_neg': b"\x80\x02\x8a\x01\xff.",
    'h_long1_big': b"\x80\x02\x8a\x09" + b"\x00" * 8 + b"\x01.",
    'h_long4': b"\x80\x02\x8b\x03\x00\x00\x00\x00\x00\x80.",
    'h_long4_empty': b"\x80\x02\x8b\x00\x00\x00\x00.",
    'h_sets': b"\x80\x04\x8f(K\x01K\x02\x90(K\x03\x91\x86.",
    'h_popmark': b"(K\x01K\x021N.",
    'h_pop_takes_mark': b"K\x05(0.",
    'h_dup': b"]2a.",
    'h_eight': b"\x80\x05(\x8d\x02\x00\x00\x00\x00\x00\x00\x00hi\x8e\x01\x00\x00\x00\x00\x00\x00"
               b"\x00x\x96\x01\x00\x00\x00\x00\x00\x00\x00yl.",
    'h_readonly': b"\x80\x05C\x02ab\x98.",
    'h_binints': b"(J\xff\xff\xff\xffM\xff\xffK\xffJ\x00\x00\x00\x80l.",
    'h_binfloat': b"G\x3f\xf8\x00\x00\x00\x00\x00\x00.",
    'h_setitem_list': b"]K\x01aK\x00K\x07s.",
    'h_memoize_count': b"\x80\x04K\x01\x94K\x02\x94\x94h\x00h\x01h\x02\x87.",
    'h_put_overwrite': b"K\x01q\x00K\x02q\x00\x94h\x01.",
}
for name, data in hand.items():
    emit(name, data, pickle.loads(data, encoding='bytes'))
print('OPS', ' '.join(sorted(ops_seen)))
)PY";

TEST(PickleOracle, MatchesPythonAtEveryProtocol) {
  if (!have_python()) GTEST_SKIP() << kPython << " not found";
  const std::string dir = test::scratch_dir();
  const std::string out = run_python(kOracleScript, dir);
  int compared = 0;
  std::set<std::string> ops;
  for (const std::string& line : split(out, '\n')) {
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    const std::string name = line.substr(0, sp);
    const std::string expected = line.substr(sp + 1);
    if (name == "OPS") {
      for (const std::string& op : split(expected, ' ')) ops.insert(op);
      continue;
    }
    const std::vector<uint8_t> data = test::read_bytes(dir + "/" + name + ".pkl");
    ASSERT_FALSE(data.empty()) << name;
    const Program p = run(data, 0);
    ASSERT_TRUE(p.status.is_ok()) << name << ": " << p.status.to_string();
    EXPECT_EQ(p.end, data.size()) << name;
    EXPECT_EQ(Dumper(p).dump(p.root), expected) << name;
    ++compared;
  }
  EXPECT_EQ(compared, 12 * 6 + 37);
  // The oracle reaches every opcode except those Python cannot load without running code or
  // without out-of-band buffers; those are covered by the hand-made tests below.
  const std::set<std::string> not_loadable = {
      "BINPERSID", "BUILD",     "EXT1",        "EXT2", "EXT4",   "INST",        "LONG_BINGET",
      "NEWOBJ",    "NEWOBJ_EX", "NEXT_BUFFER", "OBJ",  "PERSID", "STACK_GLOBAL"};
  for (std::string_view op : {"MARK",
                              "STOP",
                              "POP",
                              "POP_MARK",
                              "DUP",
                              "FLOAT",
                              "INT",
                              "BININT",
                              "BININT1",
                              "LONG",
                              "BININT2",
                              "NONE",
                              "REDUCE",
                              "STRING",
                              "BINSTRING",
                              "SHORT_BINSTRING",
                              "UNICODE",
                              "BINUNICODE",
                              "APPEND",
                              "GLOBAL",
                              "DICT",
                              "EMPTY_DICT",
                              "APPENDS",
                              "GET",
                              "BINGET",
                              "LIST",
                              "EMPTY_LIST",
                              "PUT",
                              "BINPUT",
                              "LONG_BINPUT",
                              "SETITEM",
                              "TUPLE",
                              "EMPTY_TUPLE",
                              "SETITEMS",
                              "BINFLOAT",
                              "PROTO",
                              "TUPLE1",
                              "TUPLE2",
                              "TUPLE3",
                              "NEWTRUE",
                              "NEWFALSE",
                              "LONG1",
                              "LONG4",
                              "BINBYTES",
                              "SHORT_BINBYTES",
                              "SHORT_BINUNICODE",
                              "BINUNICODE8",
                              "BINBYTES8",
                              "EMPTY_SET",
                              "ADDITEMS",
                              "FROZENSET",
                              "MEMOIZE",
                              "FRAME",
                              "BYTEARRAY8",
                              "READONLY_BUFFER"})
    EXPECT_TRUE(ops.count(std::string(op))) << op << " not exercised by the oracle";
  EXPECT_EQ(not_loadable.size(), 13u);
}

// Every strict prefix of a valid pickle is an error (never a crash), and the globals found
// before the cut are exactly the first globals of the whole pickle.
TEST(PickleOracle, EveryTruncationFailsAndKeepsEarlierGlobals) {
  if (!have_python()) GTEST_SKIP() << kPython << " not found";
  const std::string dir = test::scratch_dir();
  run_python(kOracleScript, dir);
  for (const char* name :
       {"containers-p0", "containers-p1", "containers-p2", "containers-p3", "containers-p4",
        "containers-p5", "bytes-p2", "h_unicode", "h_eight", "rectuple-p0"}) {
    const std::vector<uint8_t> data = test::read_bytes(dir + "/" + name + ".pkl");
    const Program whole = run(data, 0x100);
    ASSERT_TRUE(whole.status.is_ok()) << name;
    for (size_t cut = 0; cut < data.size(); ++cut) {
      const Program p = run(std::span<const uint8_t>(data.data(), cut), 0x100);
      ASSERT_FALSE(p.status.is_ok()) << name << " cut at " << cut;
      EXPECT_EQ(p.root, kNoNode);
      EXPECT_GE(p.status.offset(), 0x100u);
      EXPECT_LE(p.status.offset(), 0x100u + cut) << name << " cut at " << cut;
      EXPECT_LE(p.end, 0x100u + cut);
      ASSERT_LE(p.globals.size(), whole.globals.size());
      for (size_t i = 0; i < p.globals.size(); ++i) {
        EXPECT_EQ(p.globals[i].offset, whole.globals[i].offset);
        EXPECT_EQ(p.globals[i].name, whole.globals[i].name);
      }
    }
  }
}

// ---- torch.save as the oracle ---------------------------------------------------------------

constexpr const char* kTorchScript = R"PY(
import collections, io, pickletools, sys, zipfile
try:
    import torch
except Exception:
    print('NO_TORCH'); sys.exit(0)
out = sys.argv[1]

def data_pkl(obj):
    b = io.BytesIO(); torch.save(obj, b)
    z = zipfile.ZipFile(b)
    return z.read([n for n in z.namelist() if n.endswith('data.pkl')][0])

sd = collections.OrderedDict()
sd['w32'] = torch.arange(6, dtype=torch.float32).reshape(2, 3)
sd['h16'] = torch.zeros(3, 4, dtype=torch.float16)[1:, ::2]
sd['bf'] = torch.ones(5, dtype=torch.bfloat16)
sd['i64'] = torch.arange(3)
obj = {'state_dict': sd, 'epoch': 3, 'nested': {'p': torch.nn.Parameter(torch.ones(2, 2))}}
data = data_pkl(obj)
open(out + '/data.pkl', 'wb').write(data)
for op, arg, pos in pickletools.genops(data):
    if op.name == 'GLOBAL':
        print('G', pos, arg)
for k, t in sd.items():
    s = t.storage()
    print('T', k, s.pickle_storage_type(), s.size(), t.storage_offset(),
          ','.join(map(str, t.size())), ','.join(map(str, t.stride())))

# An SD1.5-sized state dict: 1,200 tensors with long names and real shapes (strided views of
# one element, so the file stays small but the pickle has the real structure).
base = torch.zeros(1)
big = collections.OrderedDict()
for i in range(1200):
    name = 'model.diffusion_model.output_blocks.%d.1.transformer_blocks.0.attn%d.to_q.weight' % (
        i // 10, i % 10)
    shape = (320 + i, 768) if i % 2 else (1280,)
    big[name] = base.as_strided(shape, (0,) * len(shape))
open(out + '/sd15.pkl', 'wb').write(data_pkl({'state_dict': big}))
print('OK')
)PY";

/// The torch script runs once per test binary (importing torch takes seconds): its directory and
/// output, or an empty output when Python is missing.
struct TorchRun {
  std::string dir, out;
};
const TorchRun& torch_run() {
  static const TorchRun run = [] {
    TorchRun r;
    if (!have_python()) return r;
    r.dir = test::scratch_dir();
    r.out = run_python(kTorchScript, r.dir);
    return r;
  }();
  return run;
}

struct TorchTensor {
  std::string name, storage_type;
  int64_t numel, offset;
  std::vector<int64_t> sizes, strides;
};

std::vector<int64_t> ints_of(const Program& p, NodeId tuple) {
  std::vector<int64_t> out;
  if (tuple == kNoNode || p.node(tuple).kind != Kind::kTuple) return {-999};
  for (NodeId id : p.node(tuple).items)
    out.push_back(p.node(id).kind == Kind::kInt ? p.node(id).i : -999);
  return out;
}

std::vector<int64_t> parse_ints(const std::string& s) {
  std::vector<int64_t> out;
  for (const std::string& x : split(s, ',')) out.push_back(std::stoll(x));
  return out;
}

/// The value stored under string key `key` in a dict or OrderedDict node.
NodeId lookup(const Program& p, NodeId dict, std::string_view key) {
  const Node& d = p.node(dict);
  for (size_t i = 0; i + 1 < d.kv.size(); i += 2)
    if (p.node(d.kv[i]).kind == Kind::kString && p.node(d.kv[i]).s == key) return d.kv[i + 1];
  return kNoNode;
}

/// Checks a `_rebuild_tensor_v2(persistent_id, offset, size, stride, False, OrderedDict())` call.
void expect_tensor(const Program& p, NodeId call, const TorchTensor& t) {
  SCOPED_TRACE(t.name);
  ASSERT_NE(call, kNoNode);
  const Node& c = p.node(call);
  ASSERT_EQ(c.kind, Kind::kCall);
  EXPECT_EQ(c.call, CallOpcode::kReduce);
  const Global* f = global_of(p, c.callable);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->name, "_rebuild_tensor_v2");
  EXPECT_EQ(f->klass.meaning, Meaning::kRebuildTensorV2);
  ASSERT_EQ(p.node(c.args).kind, Kind::kTuple);
  const std::vector<NodeId>& a = p.node(c.args).items;
  ASSERT_EQ(a.size(), 6u);
  const Node& pid = p.node(a[0]);
  ASSERT_EQ(pid.kind, Kind::kPersistentId);
  ASSERT_EQ(p.node(pid.args).kind, Kind::kTuple);
  const std::vector<NodeId>& s = p.node(pid.args).items;
  ASSERT_EQ(s.size(), 5u);
  EXPECT_EQ(p.node(s[0]).s, "storage");
  const Global* st = global_of(p, s[1]);
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->module, "torch");
  EXPECT_EQ(st->name, t.storage_type);
  EXPECT_EQ(st->klass.meaning, Meaning::kStorageType);
  EXPECT_EQ(p.node(s[2]).kind, Kind::kString);  // the key of the data/ entry
  EXPECT_EQ(p.node(s[3]).s, "cpu");
  EXPECT_EQ(p.node(s[4]).i, t.numel);
  EXPECT_EQ(p.node(a[1]).i, t.offset);
  EXPECT_EQ(ints_of(p, a[2]), t.sizes);
  EXPECT_EQ(ints_of(p, a[3]), t.strides);
  EXPECT_EQ(p.node(a[4]).kind, Kind::kBool);
  EXPECT_FALSE(p.node(a[4]).b);
  EXPECT_EQ(full_name(p, p.node(a[5]).callable), "collections.OrderedDict");
}

TEST(PickleTorch, RealDataPkl) {
  if (!have_python()) GTEST_SKIP() << kPython << " not found";
  const auto& [dir, out] = torch_run();
  if (out.rfind("NO_TORCH", 0) == 0) GTEST_SKIP() << "python3-torch not installed";
  ASSERT_NE(out.find("OK"), std::string::npos) << out;

  std::vector<std::pair<uint64_t, std::string>> globals;
  std::vector<TorchTensor> tensors;
  for (const std::string& line : split(out, '\n')) {
    const std::vector<std::string> f = split(line, ' ');
    if (f.size() == 4 && f[0] == "G") globals.emplace_back(std::stoull(f[1]), f[2] + "." + f[3]);
    if (f.size() == 7 && f[0] == "T")
      tensors.push_back(
          {f[1], f[2], std::stoll(f[3]), std::stoll(f[4]), parse_ints(f[5]), parse_ints(f[6])});
  }
  ASSERT_EQ(tensors.size(), 4u);

  const std::vector<uint8_t> data = test::read_bytes(dir + "/data.pkl");
  const uint64_t base = 4096;  // as if data.pkl sat at this offset of the zip
  const Program p = run(data, base);
  ASSERT_TRUE(p.status.is_ok()) << p.status.to_string();
  EXPECT_EQ(p.protocol, 2);
  EXPECT_EQ(p.begin, base);
  EXPECT_EQ(p.end, base + data.size());

  // Every GLOBAL, in order, at its offset; all allowed, with the meanings the extractor needs.
  ASSERT_EQ(p.globals.size(), globals.size());
  std::map<std::string, Meaning> meanings;
  for (size_t i = 0; i < globals.size(); ++i) {
    const Global& g = p.globals[i];
    EXPECT_EQ(g.offset, base + globals[i].first);
    EXPECT_EQ(g.module + "." + g.name, globals[i].second);
    EXPECT_EQ(g.opcode, GlobalOpcode::kGlobal);
    EXPECT_EQ(g.klass.category, GlobalCategory::kAllowed) << globals[i].second;
    meanings[globals[i].second] = g.klass.meaning;
  }
  EXPECT_EQ(meanings["torch._utils._rebuild_tensor_v2"], Meaning::kRebuildTensorV2);
  EXPECT_EQ(meanings["torch._utils._rebuild_parameter"], Meaning::kRebuildParameter);
  EXPECT_EQ(meanings["collections.OrderedDict"], Meaning::kOrderedDict);
  for (const char* s :
       {"torch.FloatStorage", "torch.HalfStorage", "torch.BFloat16Storage", "torch.LongStorage"})
    EXPECT_EQ(meanings[s], Meaning::kStorageType) << s;
  const std::map<std::string, DType> storage_dtypes = {{"HalfStorage", DType::F16},
                                                       {"BFloat16Storage", DType::BF16},
                                                       {"LongStorage", DType::I64},
                                                       {"FloatStorage", DType::F32}};
  for (const Global& g : p.globals) {
    auto it = storage_dtypes.find(g.name);
    if (it != storage_dtypes.end()) {
      EXPECT_EQ(g.klass.dtype, it->second) << g.name;
    }
  }

  // The graph: {'state_dict': OrderedDict(...), 'epoch': 3, 'nested': {'p': Parameter}}.
  ASSERT_EQ(p.node(p.root).kind, Kind::kDict);
  const NodeId sd = lookup(p, p.root, "state_dict");
  ASSERT_NE(sd, kNoNode);
  EXPECT_EQ(p.node(sd).kind, Kind::kCall);
  EXPECT_EQ(full_name(p, p.node(sd).callable), "collections.OrderedDict");
  ASSERT_EQ(p.node(sd).kv.size(), 8u);
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(p.node(p.node(sd).kv[2 * i]).s, tensors[i].name);
    expect_tensor(p, p.node(sd).kv[2 * i + 1], tensors[i]);
  }
  EXPECT_EQ(p.node(lookup(p, p.root, "epoch")).i, 3);
  const NodeId nested = lookup(p, p.root, "nested");
  ASSERT_NE(nested, kNoNode);
  const NodeId param = lookup(p, nested, "p");
  ASSERT_NE(param, kNoNode);
  ASSERT_EQ(p.node(param).kind, Kind::kCall);
  EXPECT_EQ(full_name(p, p.node(param).callable), "torch._utils._rebuild_parameter");
  const std::vector<NodeId>& pa = p.node(p.node(param).args).items;
  ASSERT_EQ(pa.size(), 3u);
  expect_tensor(p, pa[0], {"p", "FloatStorage", 4, 0, {2, 2}, {2, 1}});
  EXPECT_TRUE(p.node(pa[1]).b);  // requires_grad

  // Every cut of the real file fails cleanly, never crashes.
  for (size_t cut = 0; cut < data.size(); ++cut) {
    const Program q = run(std::span<const uint8_t>(data.data(), cut), base);
    ASSERT_FALSE(q.status.is_ok()) << cut;
  }
}

// A data.pkl of an SD1.5-sized state dict must take well under a millisecond (optimized
// build); here only a loose bound that catches quadratic behaviour in any build.
TEST(PickleTorch, Sd15SizedPickleIsFast) {
  if (!have_python()) GTEST_SKIP() << kPython << " not found";
  const auto& [dir, out] = torch_run();
  if (out.rfind("NO_TORCH", 0) == 0) GTEST_SKIP() << "python3-torch not installed";
  ASSERT_NE(out.find("OK"), std::string::npos) << out;
  const std::vector<uint8_t> data = test::read_bytes(dir + "/sd15.pkl");
  ASSERT_GT(data.size(), 100000u);
  double best_ms = 1e9;
  size_t tensors = 0;
  for (int rep = 0; rep < 30; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    const Program p = run(data);
    const auto t1 = std::chrono::steady_clock::now();
    best_ms = std::min(best_ms, std::chrono::duration<double, std::milli>(t1 - t0).count());
    ASSERT_TRUE(p.status.is_ok());
    tensors = p.node(lookup(p, p.root, "state_dict")).kv.size() / 2;
  }
  EXPECT_EQ(tensors, 1200u);
  std::printf("[ timing ] %zu-byte data.pkl with 1200 tensors: %.3f ms (best of 30)\n", data.size(),
              best_ms);
#if !defined(__SANITIZE_ADDRESS__)
  EXPECT_LT(best_ms, 25.0);
#endif
}

// ---- malicious pickles: offsets from pickletools.genops -------------------------------------

constexpr const char* kMaliciousScript = R"PY(
import pickletools, struct, sys
out = sys.argv[1]
def su(s):
    b = s.encode(); return b'\x8c' + bytes([len(b)]) + b
def bu(s):
    b = s.encode(); return b'X' + struct.pack('<I', len(b)) + b
cases = {
    'global_os_system': b"cos\nsystem\n(Vecho pwned\ntR.",
    'posix_system': b"\x80\x02cposix\nsystem\n" + bu('id') + b"\x85R.",
    'builtins_exec': b"\x80\x04" + su('builtins') + su('exec') + b"\x93" + su("print('hi')") + b"\x85R.",
    'py2_eval': b"c__builtin__\neval\n(V1+1\ntR.",
    'stack_global_memo': b"\x80\x04" + su('subprocess') + b"q\x00" + su('Popen') + b"q\x01" + b"00" +
                         b"h\x00h\x01\x93" + su('id') + b"\x85\x85R.",
    'inst': b"(S'id'\nios\nsystem\n.",
    'obj': b"(cos\nsystem\nS'id'\no.",
    'ext1': b"\x80\x02\x82\x01)R.",
    'ext2': b"\x80\x02\x83\x01\x02)R.",
    'ext4': b"\x80\x02\x84\xff\xff\xff\xff)R.",
    'getattr_chain': b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(Vid\ntR.",
    'runpy': b"crunpy\n_run_code\n(Vprint(1)\n}tR.",
    'importlib': b"\x80\x04" + su('importlib') + su('import_module') + b"\x93" + su('os') + b"\x85R.",
    'newobj_ex': b"\x80\x04" + su('subprocess') + su('Popen') + b"\x93" + su('id') + b"\x85}\x92.",
    'dotted': b"\x80\x04" + su('torch') + su('serialization.os.system') + b"\x93" + su('id') + b"\x85R.",
    'after_benign': b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01ccollections\nOrderedDict\nq\x02)Rq\x03"
                    b"X\x01\x00\x00\x00bcos\nsystem\nX\x02\x00\x00\x00id\x85Rq\x04u.",
    'non_string': b"\x80\x04K\x01K\x02\x93)R.",
    'py2_string_names': b"\x80\x02U\x02osU\x06system\x93U\x02id\x85R.",
}
for name, data in cases.items():
    open('%s/%s.pkl' % (out, name), 'wb').write(data)
    for op, arg, pos in pickletools.genops(data):
        if op.name in ('GLOBAL', 'INST', 'STACK_GLOBAL', 'EXT1', 'EXT2', 'EXT4'):
            print(name, op.name, pos)
)PY";

struct ExpectedGlobal {
  std::string module, name;
  GlobalCategory category;
};

TEST(PickleMalicious, EveryDangerousGlobalIsFoundAtItsOpcode) {
  if (!have_python()) GTEST_SKIP() << kPython << " not found";
  constexpr auto D = GlobalCategory::kDangerous;
  constexpr auto A = GlobalCategory::kAllowed;
  const std::map<std::string, std::vector<ExpectedGlobal>> expected = {
      {"global_os_system", {{"os", "system", D}}},
      {"posix_system", {{"posix", "system", D}}},
      {"builtins_exec", {{"builtins", "exec", D}}},
      {"py2_eval", {{"__builtin__", "eval", D}}},
      {"stack_global_memo", {{"subprocess", "Popen", D}}},
      {"inst", {{"os", "system", D}}},
      {"obj", {{"os", "system", D}}},
      {"ext1", {{"copyreg extension registry", "1", D}}},
      {"ext2", {{"copyreg extension registry", "513", D}}},
      {"ext4", {{"copyreg extension registry", "-1", D}}},
      {"getattr_chain", {{"builtins", "getattr", D}, {"builtins", "__import__", D}}},
      {"runpy", {{"runpy", "_run_code", D}}},
      {"importlib", {{"importlib", "import_module", D}}},
      {"newobj_ex", {{"subprocess", "Popen", D}}},
      {"dotted", {{"torch", "serialization.os.system", D}}},
      {"after_benign", {{"collections", "OrderedDict", A}, {"os", "system", D}}},
      {"non_string", {{"<non-string>", "<non-string>", D}}},
      {"py2_string_names", {{"os", "system", D}}},
  };
  const std::map<std::string, GlobalOpcode> opcodes = {
      {"GLOBAL", GlobalOpcode::kGlobal}, {"STACK_GLOBAL", GlobalOpcode::kStackGlobal},
      {"INST", GlobalOpcode::kInst},     {"EXT1", GlobalOpcode::kExt},
      {"EXT2", GlobalOpcode::kExt},      {"EXT4", GlobalOpcode::kExt}};

  const std::string dir = test::scratch_dir();
  const std::string out = run_python(kMaliciousScript, dir);
  std::map<std::string, std::vector<std::pair<std::string, uint64_t>>> ops;
  for (const std::string& line : split(out, '\n')) {
    const std::vector<std::string> f = split(line, ' ');
    if (f.size() == 3) ops[f[0]].emplace_back(f[1], std::stoull(f[2]));
  }
  ASSERT_EQ(ops.size(), expected.size());
  for (const auto& [name, want] : expected) {
    SCOPED_TRACE(name);
    const std::vector<uint8_t> data = test::read_bytes(dir + "/" + name + ".pkl");
    const Program p = run(data, 0);
    EXPECT_TRUE(p.status.is_ok()) << p.status.to_string();
    ASSERT_EQ(p.globals.size(), want.size());
    ASSERT_EQ(ops[name].size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      const Global& g = p.globals[i];
      EXPECT_EQ(g.module, want[i].module);
      EXPECT_EQ(g.name, want[i].name);
      EXPECT_EQ(g.klass.category, want[i].category) << g.module << "." << g.name;
      EXPECT_FALSE(g.klass.reason.empty());
      EXPECT_EQ(g.offset, ops[name][i].second);
      EXPECT_EQ(g.opcode, opcodes.at(ops[name][i].first));
    }
    // What STOP returns is a call of the dangerous global (or, for INST/OBJ, built by them).
    ASSERT_NE(p.root, kNoNode);
    EXPECT_EQ(p.node(p.root).kind, name == "after_benign" ? Kind::kDict : Kind::kCall);
  }
}

TEST(PickleMalicious, CallShapes) {
  // INST: the call's callable is a global node for the INST's own names; args from the MARK.
  Program p = run_str("(S'id'\nios\nsystem\n.");
  ASSERT_TRUE(p.status.is_ok()) << p.status.to_string();
  const Node& inst = p.node(p.root);
  EXPECT_EQ(inst.call, CallOpcode::kInst);
  EXPECT_EQ(full_name(p, inst.callable), "os.system");
  ASSERT_EQ(p.node(inst.args).items.size(), 1u);
  EXPECT_EQ(p.node(p.node(inst.args).items[0]).s, "id");

  // OBJ: class and arguments after the MARK.
  p = run_str("(cos\nsystem\nS'id'\nK\x05o.");
  ASSERT_TRUE(p.status.is_ok());
  EXPECT_EQ(p.node(p.root).call, CallOpcode::kObj);
  EXPECT_EQ(full_name(p, p.node(p.root).callable), "os.system");
  EXPECT_EQ(p.node(p.node(p.root).args).items.size(), 2u);

  // NEWOBJ_EX keeps args and kwargs; NEWOBJ has no kwargs.
  p = run_str(
      "\x80\x04\x8c\x01m\x8c\x01"
      "C\x93K\x01\x85}\x92.");
  ASSERT_TRUE(p.status.is_ok());
  EXPECT_EQ(p.node(p.root).call, CallOpcode::kNewObjEx);
  EXPECT_EQ(p.node(p.node(p.root).kwargs).kind, Kind::kDict);
  EXPECT_EQ(p.node(p.node(p.root).args).kind, Kind::kTuple);
  p = run_str(
      "\x80\x02"
      "cm\nC\n)\x81.");
  EXPECT_EQ(p.node(p.root).call, CallOpcode::kNewObj);
  EXPECT_EQ(p.node(p.root).kwargs, kNoNode);

  // BUILD sets state; SETITEMS and APPENDS on an object built by a call are recorded on it.
  p = run_str(
      "\x80\x02"
      "cm\nC\n)R}b(K\x01K\x02u(K\x03K\x04"
      "e.");
  ASSERT_TRUE(p.status.is_ok()) << p.status.to_string();
  const Node& obj = p.node(p.root);
  EXPECT_EQ(p.node(obj.state).kind, Kind::kDict);
  EXPECT_EQ(obj.kv.size(), 2u);
  EXPECT_EQ(obj.items.size(), 2u);

  // A bytearray can be appended to and assigned into (Python calls its methods).
  p = run_str(
      "\x80\x05\x96\x01\0\0\0\0\0\0\0yK\x01"
      "aK\x00K\x02s.");
  ASSERT_TRUE(p.status.is_ok()) << p.status.to_string();
  EXPECT_EQ(p.node(p.root).items.size(), 1u);
  EXPECT_EQ(p.node(p.root).kv.size(), 2u);

  // BUILD on plain data records the state instead of failing.
  p = run_str(
      "]K\x01"
      "b.");
  ASSERT_TRUE(p.status.is_ok());
  EXPECT_EQ(p.node(p.node(p.root).state).i, 1);

  // Persistent ids, both forms.
  p = run_str("(P12\nK\x07Ql.");
  ASSERT_TRUE(p.status.is_ok()) << p.status.to_string();
  const Node& l = p.node(p.root);
  ASSERT_EQ(l.items.size(), 2u);
  EXPECT_EQ(p.node(l.items[0]).kind, Kind::kPersistentId);
  EXPECT_EQ(p.node(p.node(l.items[0]).args).s, "12");
  EXPECT_EQ(p.node(p.node(l.items[1]).args).i, 7);

  // EXT: a dangerous global and an opaque global node that points at it.
  p = run_str("\x80\x02\x82\x07.", 0x40);
  ASSERT_TRUE(p.status.is_ok());
  ASSERT_EQ(p.globals.size(), 1u);
  EXPECT_EQ(p.globals[0].offset, 0x42u);
  EXPECT_EQ(p.globals[0].klass.category, GlobalCategory::kDangerous);
  EXPECT_EQ(p.node(p.root).kind, Kind::kGlobal);
  EXPECT_EQ(p.node(p.root).global_index, 0u);

  // NEXT_BUFFER: an out-of-band buffer node, READONLY_BUFFER leaves it.
  p = run_str("\x80\x05\x97\x98.");
  ASSERT_TRUE(p.status.is_ok());
  EXPECT_EQ(p.node(p.root).kind, Kind::kPickleBuffer);

  // STACK_GLOBAL with only the name a non-string.
  p = run_str(
      "\x80\x04\x8c\x0b"
      "collectionsK\x01\x93.");
  ASSERT_TRUE(p.status.is_ok());
  EXPECT_EQ(p.globals[0].module, "collections");
  EXPECT_EQ(p.globals[0].name, "<non-string>");
  EXPECT_EQ(p.globals[0].klass.category, GlobalCategory::kDangerous);
}

// Shared references stay shared: a "billion laughs" of lists costs nodes linear in the input.
TEST(PickleMalicious, BillionLaughsStaysLinear) {
  std::string s("\x80\x02]q\x00", 5);  // list 0
  for (int level = 1; level <= 40; ++level) {
    s += "(";
    for (int k = 0; k < 10; ++k) s += "h" + std::string(1, static_cast<char>(level - 1));
    s += "l";
    s += "q" + std::string(1, static_cast<char>(level));
  }
  s += ".";
  const Program p = run_str(s);
  ASSERT_TRUE(p.status.is_ok()) << p.status.to_string();
  EXPECT_EQ(p.nodes.size(), 41u);
  EXPECT_EQ(p.node(p.root).items.size(), 10u);
  EXPECT_EQ(p.node(p.root).items[0], p.node(p.root).items[9]);
}

// ---- errors: offset and message -------------------------------------------------------------

void expect_error(std::string_view pickle, ErrorCode code, uint64_t offset, std::string_view part,
                  const Limits& limits = {}, uint64_t base = 0x1000) {
  const Program p = run_str(pickle, base, limits);
  ASSERT_FALSE(p.status.is_ok()) << "accepted: " << hex(pickle);
  EXPECT_EQ(p.status.code(), code) << p.status.to_string();
  EXPECT_EQ(p.status.offset(), base + offset) << p.status.to_string();
  EXPECT_NE(p.status.message().find(part), std::string::npos)
      << "message lacks '" << part << "': " << p.status.message();
  EXPECT_EQ(p.root, kNoNode);
  EXPECT_LE(p.end, base + pickle.size());
}

template <size_t N>
void expect_error(const char (&pickle)[N], ErrorCode code, uint64_t offset, std::string_view part,
                  const Limits& limits = {}, uint64_t base = 0x1000) {
  expect_error(std::string_view(pickle, N - 1), code, offset, part, limits, base);
}

constexpr ErrorCode kCorrupt = ErrorCode::kCorrupt;
constexpr ErrorCode kLimit = ErrorCode::kLimitExceeded;

TEST(PickleErrors, MessagesNameTheOpcodeAndOffset) {
  const std::string huge_unicode = std::string("\x80\x02") + "X\xff\xff\xff\xff" + "abc.";
  const Program p = run_str(huge_unicode, 0x1D);
  EXPECT_EQ(p.status.message(),
            "pickle opcode BINUNICODE (0x58) at 0x1F: string length 4294967295 reaches past the "
            "end of the pickle (4 bytes left)");
  EXPECT_EQ(p.status.offset(), 0x1Fu);
  EXPECT_EQ(p.end, 0x1Fu);
  expect_error("K\x01\xff.", kCorrupt, 2, "unknown pickle opcode 0xFF at 0x1002");
  expect_error("\x80\x02h\x07.", kCorrupt, 2,
               "BINGET (0x68) at 0x1002: memo index 7 was never stored");
  expect_error("j\x07\x00\x00\x00.", kCorrupt, 0, "memo index 7 was never stored");
  expect_error("g7\n.", kCorrupt, 0, "memo index 7 was never stored");
  expect_error("(K\x01R.", kCorrupt, 3,
               "REDUCE (0x52) at 0x1003: stack underflow (needs 2 values, stack has 1 since the "
               "last MARK)");
  expect_error(".", kCorrupt, 0,
               "STOP (0x2E) at 0x1000: stack underflow (needs 1 value, stack has 0)");
  expect_error("K\x01(.", kCorrupt, 3, "stack has 0 since the last MARK");
  expect_error("K\x01", kCorrupt, 2, "pickle ends without STOP");
  expect_error("", kCorrupt, 0, "pickle ends without STOP");
}

TEST(PickleErrors, StackAndMarkRules) {
  expect_error("0.", kCorrupt, 0, "POP (0x30) at 0x1000: stack underflow");
  expect_error("2.", kCorrupt, 0, "DUP (0x32) at 0x1000: stack underflow");
  expect_error("1.", kCorrupt, 0, "POP_MARK (0x31) at 0x1000: no MARK to close");
  expect_error("K\x01t.", kCorrupt, 2, "TUPLE (0x74) at 0x1002: no MARK to close");
  expect_error("K\x01l.", kCorrupt, 2, "no MARK to close");
  expect_error(
      "K\x01"
      "d.",
      kCorrupt, 2, "no MARK to close");
  expect_error(
      "(K\x01"
      "d.",
      kCorrupt, 3, "odd number of items (1) for a dict");
  expect_error("}(K\x01u.", kCorrupt, 4, "odd number of items (1) for SETITEMS");
  expect_error("(K\x01K\x02u.", kCorrupt, 5, "no object below the MARK");
  expect_error("]((e.", kCorrupt, 3, "no object below the MARK");  // not across a MARK
  expect_error("](K\x01(e.", kCorrupt, 5, "cannot add items to an int");
  expect_error(
      ")K\x01"
      "a.",
      kCorrupt, 3, "APPEND (0x61) at 0x1003: cannot add items to a tuple");
  expect_error(
      "}K\x01"
      "a.",
      kCorrupt, 3, "cannot add items to a dict");
  expect_error(
      "\x8f(K\x01"
      "e.",
      kCorrupt, 4, "cannot add items to a set");
  expect_error("](K\x01\x90.", kCorrupt, 4,
               "ADDITEMS (0x90) at 0x1004: cannot add items to a list");
  expect_error("K\x01K\x02K\x03s.", kCorrupt, 6, "cannot add items to an int");
  expect_error("\x80\x04K\x01\x93.", kCorrupt, 4, "STACK_GLOBAL (0x93) at 0x1004: stack underflow");
  expect_error("(o.", kCorrupt, 1, "no class after the MARK");
  expect_error("q\x00.", kCorrupt, 0, "BINPUT (0x71) at 0x1000: stack underflow");
  expect_error("\x80\x06.", ErrorCode::kUnsupported, 0, "pickle protocol 6 is newer than 5");
}

TEST(PickleErrors, LengthsAreCheckedBeforeAnyAllocation) {
  expect_error(std::string("\x8d\x00\x00\x00\x00\x00\x00\x00\x80.", 10), kCorrupt, 0,
               "BINUNICODE8 (0x8D) at 0x1000: string length 9223372036854775808 reaches past the "
               "end of the pickle (1 bytes left)");
  expect_error(std::string("\x8e\xff\xff\xff\xff\xff\xff\xff\xff.", 10), kCorrupt, 0,
               "bytes length 18446744073709551615 reaches past");
  expect_error(std::string("\x96\xff\xff\xff\xff\xff\xff\xff\x7f.", 10), kCorrupt, 0,
               "BYTEARRAY8 (0x96)");
  expect_error("\x8b\xff\xff\xff\x7f.", kCorrupt, 0,
               "LONG4 (0x8B) at 0x1000: integer length 2147483647 reaches past the end of the "
               "pickle (1 bytes left)");
  expect_error("\x8b\xff\xff\xff\xff.", kCorrupt, 0, "negative integer length -1");
  expect_error("T\xff\xff\xff\xff.", kCorrupt, 0, "negative string length -1");
  expect_error(
      "B\x05\x00\x00\x00"
      "ab.",
      kCorrupt, 0, "bytes length 5 reaches past the end of the pickle (3 bytes left)");
  expect_error("U\x09.", kCorrupt, 0, "string length 9 reaches past");
  expect_error("\x8a\x09.", kCorrupt, 0, "integer length 9 reaches past");
  expect_error("J\x01\x02", kCorrupt, 0, "BININT (0x4A) at 0x1000: argument needs 4 bytes, 2 left");
  expect_error("\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00K\x01.", kCorrupt, 2,
               "FRAME (0x95) at 0x1002: frame length 16 reaches past the end of the pickle (3 "
               "bytes left)");
  expect_error("cos\nsystem", kCorrupt, 0,
               "GLOBAL (0x63) at 0x1000: argument is not terminated by a newline");
  expect_error("I12", kCorrupt, 0, "not terminated by a newline");
  expect_error("I12x\n.", kCorrupt, 0, "'12x' is not an integer");
  expect_error("I\n.", kCorrupt, 0, "is not an integer");
  expect_error("I08\n.", kCorrupt, 0, "'08' is not an integer");
  expect_error("I0_7\n.", kCorrupt, 0, "is not an integer");
  expect_error("I1__0\n.", kCorrupt, 0, "is not an integer");
  expect_error("I1_\n.", kCorrupt, 0, "is not an integer");
  expect_error("L010L\n.", kCorrupt, 0, "'010' is not an integer");
  expect_error("Fabc\n.", kCorrupt, 0, "'abc' is not a float");
  expect_error("Sabc\n.", kCorrupt, 0, "argument must be a quoted string");
  expect_error("S'abc\"\n.", kCorrupt, 0, "argument must be a quoted string");
  expect_error("gx\n.", kCorrupt, 0, "memo index 'x' is not a non-negative integer");
  expect_error("K\x01p-1\n.", kCorrupt, 2, "is not a non-negative integer");
  expect_error(("I" + std::string(4301, '7') + "\n.").c_str(), kCorrupt, 0,
               "integer has 4301 decimal digits");
}

TEST(PickleErrors, Limits) {
  Limits small;
  small.max_stack = 100;
  expect_error(std::string(200, '('), kLimit, 100, "stack deeper than 100", small);
  expect_error(std::string(200, 'N'), kLimit, 100, "stack deeper than 100", small);
  Limits nodes;
  nodes.max_nodes = 1000;
  expect_error(std::string(2000, ']'), kLimit, 1000, "more than 1000 nodes", nodes);
  std::string dup_bomb = "]";
  for (int i = 0; i < 2000; ++i) dup_bomb += "2";  // DUP makes no nodes, but fills the stack
  expect_error(dup_bomb, kLimit, 100, "stack deeper than 100", small);
  Limits container;
  container.max_container = 10;
  std::string big_list = "(";
  for (int i = 0; i < 11; ++i) big_list += "K\x01";
  expect_error(big_list + "l.", kLimit, 23, "11 items in one container", container);
  expect_error("]" + big_list + "e.", kLimit, 24, "items in one container", container);
  std::string appends = "]";
  for (int i = 0; i < 11; ++i)
    appends +=
        "K\x01"
        "a";
  expect_error(appends + ".", kLimit, 33, "items in one container", container);
  Limits memo;
  memo.max_memo = 5;
  std::string puts = "K\x01";
  for (int i = 0; i < 6; ++i) puts += "q" + std::string(1, static_cast<char>(i));
  expect_error(puts + ".", kLimit, 12, "more than 5 memo entries", memo);
  // Overwriting an index does not count twice; MEMOIZE uses the count of distinct entries.
  std::string overwrite = "K\x01";
  for (int i = 0; i < 20; ++i) overwrite += "q\x03";
  EXPECT_TRUE(run_str(overwrite + ".", 0, memo).status.is_ok());
}

TEST(PickleErrors, GlobalsBeforeAnErrorAreKept) {
  Program p = run_str("cos\nsystem\n\xff", 0x10);
  ASSERT_FALSE(p.status.is_ok());
  ASSERT_EQ(p.globals.size(), 1u);
  EXPECT_EQ(p.globals[0].module, "os");
  EXPECT_EQ(p.globals[0].offset, 0x10u);
  EXPECT_EQ(p.globals[0].klass.category, GlobalCategory::kDangerous);
  EXPECT_EQ(p.end, 0x10u + 11);

  // INST without a MARK: the names are recorded before the MARK is found missing.
  p = run_str("ios\nsystem\n.");
  ASSERT_FALSE(p.status.is_ok());
  ASSERT_EQ(p.globals.size(), 1u);
  EXPECT_EQ(p.globals[0].opcode, GlobalOpcode::kInst);

  // Two globals, then a truncated string.
  p = run_str(
      "\x80\x02"
      "ccollections\nOrderedDict\n\x8c\x02os\x8c\x06system\x93X\x10\x00\x00\x00"
      "ab");
  ASSERT_FALSE(p.status.is_ok());
  ASSERT_EQ(p.globals.size(), 2u);
  EXPECT_EQ(p.globals[1].opcode, GlobalOpcode::kStackGlobal);
  EXPECT_EQ(p.globals[1].name, "system");
  EXPECT_EQ(p.globals[1].offset, 39u);
}

TEST(PickleErrors, StopEndsReadingAndEndIsPastStop) {
  const Program p = run_str("K\x01.garbage after the pickle", 100);
  ASSERT_TRUE(p.status.is_ok());
  EXPECT_EQ(p.end, 103u);
  EXPECT_EQ(p.begin, 100u);
  EXPECT_EQ(p.node(p.root).i, 1);
  EXPECT_EQ(p.node(p.root).offset, 100u);
}

// ---- decoding details Python's loads cannot show (it would fail on them) --------------------

TEST(PickleDecoding, LenientWhereScanningMustGoOn) {
  // A malformed \x escape in STRING is kept as written (Python would raise).
  Program p = run_str("S'a\\x4'\n.");
  ASSERT_TRUE(p.status.is_ok());
  EXPECT_EQ(p.node(p.root).s, "a\\x4");
  EXPECT_EQ(p.node(p.root).kind, Kind::kBytes);
  // A malformed \u escape in UNICODE likewise.
  p = run_str("Va\\u12\n.");
  ASSERT_TRUE(p.status.is_ok());
  EXPECT_EQ(p.node(p.root).s, "a\\u12");
  // FLOAT text CPython refuses (overflow, surrounding spaces, underscores) is read as Python's
  // float() would read it.
  p = run_str("(F1e999\nF-1e-999\nF 2.5 \nF1_0.5\nF+inf\nl.");
  ASSERT_TRUE(p.status.is_ok()) << p.status.to_string();
  ASSERT_EQ(p.node(p.root).items.size(), 5u);
  EXPECT_EQ(p.node(p.node(p.root).items[0]).f, HUGE_VAL);
  EXPECT_TRUE(std::signbit(p.node(p.node(p.root).items[1]).f));
  EXPECT_EQ(p.node(p.node(p.root).items[2]).f, 2.5);
  EXPECT_EQ(p.node(p.node(p.root).items[3]).f, 10.5);
  EXPECT_EQ(p.node(p.node(p.root).items[4]).f, HUGE_VAL);
  // INT as CPython's load_int reads it: strtol first (a NUL ends the number), then int(s, 0).
  p = run_str("(I12\0junk\nI-0\nI+1\nI0_0\nl.");
  ASSERT_TRUE(p.status.is_ok()) << p.status.to_string();
  EXPECT_EQ(p.node(p.node(p.root).items[0]).i, 12);
  EXPECT_EQ(p.node(p.node(p.root).items[1]).kind, Kind::kBool);
  EXPECT_FALSE(p.node(p.node(p.root).items[1]).b);
  EXPECT_TRUE(p.node(p.node(p.root).items[2]).b);
  EXPECT_EQ(p.node(p.node(p.root).items[3]).i, 0);
  // A memo index Python's C unpickler could not even allocate is one hash-map entry here.
  p = run_str("K\x05r\xff\xff\xff\xffj\xff\xff\xff\xff.");
  ASSERT_TRUE(p.status.is_ok());
  EXPECT_EQ(p.node(p.root).i, 5);
  // PUT with a decimal index beyond 32 bits.
  p = run_str("K\x06p99999999999\ng99999999999\n.");
  ASSERT_TRUE(p.status.is_ok());
  EXPECT_EQ(p.node(p.root).i, 6);
  // LONG1 of 9 bytes that fits int64 is an int; one that does not is a big int, bytes kept.
  p = run_str("\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff.");
  EXPECT_EQ(p.node(p.root).kind, Kind::kInt);
  EXPECT_EQ(p.node(p.root).i, -1);
  p = run_str(std::string("\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00.", 12));
  EXPECT_EQ(p.node(p.root).kind, Kind::kBigInt);
  EXPECT_EQ(hex(p.node(p.root).s), "000000000000008000");
  // A hexadecimal INT far beyond 4300 digits is converted in linear time.
  p = run_str("I0x" + std::string(100000, 'f') + "\n.");
  ASSERT_TRUE(p.status.is_ok());
  EXPECT_EQ(p.node(p.root).s.size(), 50001u);
}

// ---- classify_global ------------------------------------------------------------------------

struct ClassCase {
  const char* module;
  const char* name;
  GlobalCategory category;
  Meaning meaning;
  DType dtype = DType::F32;
};

TEST(PickleClassify, Table) {
  constexpr auto A = GlobalCategory::kAllowed;
  constexpr auto U = GlobalCategory::kUnknown;
  constexpr auto D = GlobalCategory::kDangerous;
  const ClassCase cases[] = {
      {"torch._utils", "_rebuild_tensor", A, Meaning::kRebuildTensor},
      {"torch._utils", "_rebuild_tensor_v2", A, Meaning::kRebuildTensorV2},
      {"torch._utils", "_rebuild_parameter", A, Meaning::kRebuildParameter},
      {"torch._utils", "_rebuild_parameter_with_state", A, Meaning::kRebuildParameterWithState},
      {"torch._utils", "_rebuild_qtensor", A, Meaning::kNone},
      {"torch._utils", "_import_dotted_name", D, Meaning::kNone},
      {"torch._tensor", "_rebuild_from_type_v2", A, Meaning::kRebuildFromTypeV2},
      {"torch.nn.parameter", "Parameter", A, Meaning::kParameterClass},
      {"torch", "FloatStorage", A, Meaning::kStorageType, DType::F32},
      {"torch", "DoubleStorage", A, Meaning::kStorageType, DType::F64},
      {"torch", "HalfStorage", A, Meaning::kStorageType, DType::F16},
      {"torch", "BFloat16Storage", A, Meaning::kStorageType, DType::BF16},
      {"torch", "LongStorage", A, Meaning::kStorageType, DType::I64},
      {"torch", "IntStorage", A, Meaning::kStorageType, DType::I32},
      {"torch", "ShortStorage", A, Meaning::kStorageType, DType::I16},
      {"torch", "CharStorage", A, Meaning::kStorageType, DType::I8},
      {"torch", "ByteStorage", A, Meaning::kStorageType, DType::U8},
      {"torch", "BoolStorage", A, Meaning::kStorageType, DType::BOOL},
      {"torch.cuda", "HalfStorage", A, Meaning::kStorageType, DType::F16},
      {"torch.cuda", "BFloat16Storage", A, Meaning::kStorageType, DType::BF16},
      {"torch.storage", "UntypedStorage", A, Meaning::kUntypedStorage},
      {"torch", "UntypedStorage", A, Meaning::kUntypedStorage},
      {"torch.storage", "TypedStorage", A, Meaning::kNone},
      {"torch", "float16", A, Meaning::kTorchDtype, DType::F16},
      {"torch", "bfloat16", A, Meaning::kTorchDtype, DType::BF16},
      {"torch", "half", A, Meaning::kTorchDtype, DType::F16},
      {"torch", "uint8", A, Meaning::kTorchDtype, DType::U8},
      {"torch", "bool", A, Meaning::kTorchDtype, DType::BOOL},
      {"torch", "float8_e4m3fn", A, Meaning::kTorchDtype, DType::F8_E4M3},
      {"torch", "Size", A, Meaning::kTorchSize},
      {"torch", "device", A, Meaning::kTorchDevice},
      {"collections", "OrderedDict", A, Meaning::kOrderedDict},
      {"_codecs", "encode", A, Meaning::kCodecsEncode},
      {"builtins", "set", A, Meaning::kBenignData},
      {"__builtin__", "set", A, Meaning::kBenignData},
      {"builtins", "bytearray", A, Meaning::kBenignData},
      {"numpy.core.multiarray", "_reconstruct", A, Meaning::kBenignData},
      {"numpy._core.multiarray", "scalar", A, Meaning::kBenignData},
      {"numpy", "dtype", A, Meaning::kBenignData},
      {"numpy.dtypes", "Float32DType", A, Meaning::kBenignData},
      {"torch.serialization", "_get_layout", A, Meaning::kBenignData},
      // Unknown: outside the allowlist, not known to do harm.
      {"pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint", U, Meaning::kNone},
      {"__main__", "MyModel", U, Meaning::kNone},
      {"builtins", "print", U, Meaning::kNone},
      {"builtins", "object", U, Meaning::kNone},
      {"copyreg", "_reconstructor", U, Meaning::kNone},
      {"copy_reg", "_reconstructor", U, Meaning::kNone},
      {"functools", "partial", U, Meaning::kNone},
      {"posixpath", "join", U, Meaning::kNone},
      {"ntpath", "join", U, Meaning::kNone},
      {"osx", "thing", U, Meaning::kNone},
      {"threading", "Thread", U, Meaning::kNone},
      {"torch._C", "_nn", U, Meaning::kNone},
      {"torch", "tensor", U, Meaning::kNone},
      {"numpy", "float32", U, Meaning::kNone},
      {"", "", U, Meaning::kNone},
      // Dangerous.
      {"os", "system", D, Meaning::kNone},
      {"os.path", "join", D, Meaning::kNone},
      {"posix", "system", D, Meaning::kNone},
      {"nt", "system", D, Meaning::kNone},
      {"subprocess", "Popen", D, Meaning::kNone},
      {"commands", "getoutput", D, Meaning::kNone},
      {"sys", "modules", D, Meaning::kNone},
      {"socket", "create_connection", D, Meaning::kNone},
      {"urllib.request", "urlopen", D, Meaning::kNone},
      {"http.client", "HTTPConnection", D, Meaning::kNone},
      {"webbrowser", "open", D, Meaning::kNone},
      {"ctypes", "CDLL", D, Meaning::kNone},
      {"importlib", "import_module", D, Meaning::kNone},
      {"importlib.util", "spec_from_file_location", D, Meaning::kNone},
      {"runpy", "_run_code", D, Meaning::kNone},
      {"pickle", "loads", D, Meaning::kNone},
      {"_pickle", "loads", D, Meaning::kNone},
      {"cPickle", "loads", D, Meaning::kNone},
      {"dill", "loads", D, Meaning::kNone},
      {"marshal", "loads", D, Meaning::kNone},
      {"types", "FunctionType", D, Meaning::kNone},
      {"code", "InteractiveInterpreter", D, Meaning::kNone},
      {"pdb", "run", D, Meaning::kNone},
      {"shutil", "rmtree", D, Meaning::kNone},
      {"builtins", "eval", D, Meaning::kNone},
      {"builtins", "exec", D, Meaning::kNone},
      {"builtins", "compile", D, Meaning::kNone},
      {"builtins", "open", D, Meaning::kNone},
      {"builtins", "getattr", D, Meaning::kNone},
      {"builtins", "setattr", D, Meaning::kNone},
      {"builtins", "__import__", D, Meaning::kNone},
      {"builtins", "globals", D, Meaning::kNone},
      {"builtins", "breakpoint", D, Meaning::kNone},
      {"__builtin__", "eval", D, Meaning::kNone},
      {"__builtins__", "exec", D, Meaning::kNone},
      {"exceptions", "getattr", D, Meaning::kNone},
      {"operator", "attrgetter", D, Meaning::kNone},
      {"_operator", "methodcaller", D, Meaning::kNone},
      {"io", "open", D, Meaning::kNone},
      {"torch", "load", D, Meaning::kNone},
      {"torch.serialization", "load", D, Meaning::kNone},
      {"torch.storage", "_load_from_bytes", D, Meaning::kNone},
      {"torch.hub", "load", D, Meaning::kNone},
      {"torch.jit", "load", D, Meaning::kNone},
      {"torch.jit._serialization", "load", D, Meaning::kNone},
      {"numpy", "load", D, Meaning::kNone},
      {"numpy.lib.npyio", "load", D, Meaning::kNone},
      {"numpy.testing._private.utils", "runstring", D, Meaning::kNone},
      {"torch", "serialization.os.system", D, Meaning::kNone},
      {"collections", "OrderedDict.__init__", D, Meaning::kNone},
      {"copyreg extension registry", "5", D, Meaning::kNone},
      {"<non-string>", "<non-string>", D, Meaning::kNone},
      {"collections", "<non-string>", D, Meaning::kNone},
  };
  for (const ClassCase& c : cases) {
    const GlobalClass k = classify_global(c.module, c.name);
    EXPECT_EQ(k.category, c.category) << c.module << "." << c.name;
    EXPECT_EQ(k.meaning, c.meaning) << c.module << "." << c.name;
    if (c.meaning == Meaning::kStorageType || c.meaning == Meaning::kTorchDtype) {
      EXPECT_EQ(k.dtype, c.dtype) << c.module << "." << c.name;
    }
    EXPECT_FALSE(k.reason.empty()) << c.module << "." << c.name;
  }
  EXPECT_NE(classify_global("os", "system").reason.find("shell"), std::string_view::npos);
  EXPECT_NE(classify_global("builtins", "getattr").reason.find("any attribute"),
            std::string_view::npos);
}

// Rule 5: an unlisted PyTorch or standard-library global is dangerous only when called; benign
// constructors and third-party classes are not.
TEST(PickleClassify, CalledGlobals) {
  constexpr auto U = GlobalCategory::kUnknown;
  constexpr auto D = GlobalCategory::kDangerous;
  struct Case {
    const char* module;
    const char* name;
    GlobalCategory referenced, called;
    GlobalOrigin origin;
  };
  const Case cases[] = {
      {"torch.utils.hooks", "RemovableHandle", U, D, GlobalOrigin::kTorch},
      {"torch", "manual_seed", U, D, GlobalOrigin::kTorch},
      {"shlex", "split", U, D, GlobalOrigin::kStdlib},
      {"threading", "Thread", U, D, GlobalOrigin::kStdlib},
      {"builtins", "print", U, D, GlobalOrigin::kStdlib},
      {"__builtin__", "map", U, D, GlobalOrigin::kStdlib},
      {"builtins", "dict", U, U, GlobalOrigin::kStdlib},
      {"argparse", "Namespace", U, U, GlobalOrigin::kStdlib},
      {"pathlib", "PosixPath", U, U, GlobalOrigin::kStdlib},
      {"datetime", "datetime", U, U, GlobalOrigin::kStdlib},
      {"decimal", "Decimal", U, U, GlobalOrigin::kStdlib},
      {"collections", "defaultdict", U, U, GlobalOrigin::kStdlib},
      {"enum", "FlagBoundary", U, U, GlobalOrigin::kStdlib},
      {"torch.torch_version", "TorchVersion", U, U, GlobalOrigin::kTorch},
      {"torch.nn.modules.linear", "Linear", U, U, GlobalOrigin::kTorch},
      {"functools", "partial", U, U, GlobalOrigin::kStdlib},
      {"pytorch_lightning.callbacks", "ModelCheckpoint", U, U, GlobalOrigin::kThirdParty},
      {"omegaconf.dictconfig", "DictConfig", U, U, GlobalOrigin::kThirdParty},
      {"__main__", "Config", U, U, GlobalOrigin::kThirdParty},
      {"torchvision.models", "resnet18", U, U, GlobalOrigin::kThirdParty},
      // Listed gadgets are dangerous whether called or not, with their advisory.
      {"torch.utils.collect_env", "run", D, D, GlobalOrigin::kTorch},
      {"torch._inductor.codecache", "compile_file", D, D, GlobalOrigin::kTorch},
      {"torch._dynamo.utils", "anything", D, D, GlobalOrigin::kTorch},
      {"lib2to3.pgen2.pgen", "ParserGenerator", D, D, GlobalOrigin::kStdlib},
      {"ensurepip", "_run_pip", D, D, GlobalOrigin::kStdlib},
      {"scipy.io", "loadmat", D, D, GlobalOrigin::kThirdParty},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(classify_global(c.module, c.name).category, c.referenced) << c.module << "." << c.name;
    const GlobalClass k = classify_global(c.module, c.name, true);
    EXPECT_EQ(k.category, c.called) << c.module << "." << c.name << " called";
    EXPECT_FALSE(k.reason.empty());
    EXPECT_EQ(global_origin(c.module), c.origin) << c.module;
  }
  EXPECT_NE(classify_global("torch.utils.collect_env", "run").reason.find("GHSA-f745-w6jp-hpxx"),
            std::string_view::npos);
  EXPECT_NE(classify_global("ensurepip", "_run_pip").reason.find("GHSA-xp4f-hrf8-rxw7"),
            std::string_view::npos);
  EXPECT_NE(classify_global("shlex", "split", true).reason.find("standard-library"),
            std::string_view::npos);
  EXPECT_NE(classify_global("torch", "manual_seed", true).reason.find("PyTorch"),
            std::string_view::npos);
}

// The machine records which globals the pickle calls: REDUCE, NEWOBJ, INST, OBJ and the
// callable handed to functools.partial; a global only passed as data is not called.
TEST(PickleClassify, RunMarksCalls) {
  const std::string text =
      "\x80\x02"
      "cshlex\nsplit\n)R0"                           // called by REDUCE
      "ctorch.utils.hooks\nRemovableHandle\n\x85"     // only in a tuple
      "0cfunctools\npartial\ncthreading\nThread\n\x85R)R0"  // called through partial
      "(ipathlib\nPosixPath\n0"                     // INST
      "N.";
  const std::vector<uint8_t> bytes(text.begin(), text.end());
  const Program p = run(bytes);
  ASSERT_TRUE(p.status.is_ok()) << p.status.to_string();
  ASSERT_EQ(p.globals.size(), 5u);
  EXPECT_TRUE(p.globals[0].called);
  EXPECT_EQ(p.globals[0].klass.category, GlobalCategory::kDangerous);
  EXPECT_FALSE(p.globals[1].called);
  EXPECT_EQ(p.globals[1].klass.category, GlobalCategory::kUnknown);
  EXPECT_TRUE(p.globals[2].called);  // functools.partial: stays unknown
  EXPECT_EQ(p.globals[2].klass.category, GlobalCategory::kUnknown);
  EXPECT_TRUE(p.globals[3].called);
  EXPECT_EQ(p.globals[3].klass.category, GlobalCategory::kDangerous);
  EXPECT_TRUE(p.globals[4].called);
  EXPECT_EQ(p.globals[4].klass.category, GlobalCategory::kUnknown);  // a benign constructor
}

TEST(PickleClassify, OpcodeNames) {
  EXPECT_EQ(opcode_name('X'), "BINUNICODE");
  EXPECT_EQ(opcode_name(0x95), "FRAME");
  EXPECT_EQ(opcode_name(0x98), "READONLY_BUFFER");
  EXPECT_EQ(opcode_name(0xFF), "unknown");
  int known = 0;
  for (int op = 0; op < 256; ++op) known += opcode_name(static_cast<uint8_t>(op)) != "unknown";
  EXPECT_EQ(known, 68);
}

}  // namespace
}  // namespace ckptkit::pickle
