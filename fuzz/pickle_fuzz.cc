// libFuzzer target: the pickle machine (src/formats/torch/pickle.h) on arbitrary bytes, read as
// if found at file offset kBase, with small limits so that the fuzzer reaches them. Properties
// checked beyond "no crash, no UB, no leak, no runaway memory" (each violation abort()s, which
// libFuzzer and the replay test both report as a failure):
//   * every NodeId in a node (items, kv, callable, args, kwargs, state) and the root is below
//     nodes.size(); every kGlobal's global_index is below globals.size(); a walk of the graph
//     from the root with a visited set ends (graphs may be cyclic);
//   * every node and Global offset lies in [kBase, kBase + size) and globals appear in file
//     order; each Global's class is what classify_global says for its names and `called`;
//   * ok status ⇔ root != kNoNode, and then `end` is one past a STOP byte; an error is
//     Corrupt, LimitExceeded or Unsupported with an offset in [kBase, kBase + size] and a
//     one-line message; `end` never passes the input;
//   * the limits hold: node count and container sizes;
//   * reading stops at STOP: the bytes up to `end` of an accepted pickle give the same program
//     (node and global counts, root kind); a rejected input cut where reading stopped is
//     rejected too, with the same first globals (scan relies on globals before an error).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "formats/torch/pickle.h"

namespace {

namespace pk = ckptkit::pickle;

constexpr uint64_t kBase = 0x1000;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "pickle_fuzz: property violated: %s\n", what);
  std::abort();
}

pk::Limits fuzz_limits() {
  pk::Limits l;
  l.max_nodes = 1 << 14;
  l.max_stack = 1 << 10;
  l.max_memo = 1 << 10;
  l.max_container = 1 << 12;
  return l;
}

void check_node_ids(const pk::Program& p) {
  const size_t n = p.nodes.size();
  const auto ok = [n](pk::NodeId id) { return id == pk::kNoNode || id < n; };
  const auto in_range = [n](pk::NodeId id) { return id < n; };
  for (const pk::Node& node : p.nodes) {
    for (pk::NodeId id : node.items)
      if (!in_range(id)) fail("item id out of range");
    for (pk::NodeId id : node.kv)
      if (!in_range(id)) fail("kv id out of range");
    if (!ok(node.callable) || !ok(node.args) || !ok(node.kwargs) || !ok(node.state))
      fail("callable/args/kwargs/state id out of range");
    if (node.kind == pk::Kind::kGlobal && node.global_index >= p.globals.size())
      fail("global_index out of range");
    if (node.kind == pk::Kind::kCall && node.callable == pk::kNoNode) fail("call without callable");
    if (node.kind == pk::Kind::kPersistentId && node.args == pk::kNoNode)
      fail("persistent id without its value");
    if (node.items.size() > fuzz_limits().max_container ||
        node.kv.size() / 2 > fuzz_limits().max_container)
      fail("container over max_container");
  }
  if (n > fuzz_limits().max_nodes) fail("more nodes than max_nodes");
}

/// Iterative walk from the root; must visit each node at most once and end.
void walk(const pk::Program& p) {
  if (p.root == pk::kNoNode) return;
  std::vector<uint8_t> seen(p.nodes.size(), 0);
  std::vector<pk::NodeId> todo{p.root};
  size_t visits = 0;
  while (!todo.empty()) {
    const pk::NodeId id = todo.back();
    todo.pop_back();
    if (id == pk::kNoNode || seen[id]) continue;
    seen[id] = 1;
    if (++visits > p.nodes.size()) fail("walk visits more nodes than exist");
    const pk::Node& n = p.nodes[id];
    todo.insert(todo.end(), n.items.begin(), n.items.end());
    todo.insert(todo.end(), n.kv.begin(), n.kv.end());
    for (pk::NodeId x : {n.callable, n.args, n.kwargs, n.state}) todo.push_back(x);
  }
}

void check_program(const pk::Program& p, const uint8_t* data, size_t size) {
  check_node_ids(p);
  walk(p);
  if (p.begin != kBase) fail("begin is not the base offset");
  if (p.end < kBase || p.end > kBase + size) fail("end outside the input");
  for (const pk::Node& n : p.nodes)
    if (n.offset < kBase || n.offset >= kBase + size) fail("node offset outside the input");
  uint64_t last = 0;
  for (const pk::Global& g : p.globals) {
    if (g.offset < kBase || g.offset >= kBase + size) fail("global offset outside the input");
    if (g.offset < last) fail("globals out of file order");
    last = g.offset;
    // EXT globals are classified by their pseudo-module whether called or not.
    const pk::GlobalClass k = pk::classify_global(
        g.module, g.name, g.called && g.opcode != pk::GlobalOpcode::kExt);
    if (k.category != g.klass.category || k.meaning != g.klass.meaning ||
        k.reason != g.klass.reason)
      fail("recorded class differs from classify_global");
    if (g.klass.reason.empty()) fail("global without a reason");
    if (g.opcode == pk::GlobalOpcode::kExt && g.klass.category != pk::GlobalCategory::kDangerous)
      fail("EXT global not dangerous");
    if ((g.module == "<non-string>" || g.name == "<non-string>") &&
        g.klass.category != pk::GlobalCategory::kDangerous)
      fail("non-string STACK_GLOBAL not dangerous");
  }
  if (p.status.is_ok()) {
    if (p.root == pk::kNoNode) fail("ok without a root");
    if (p.end == kBase || data[p.end - kBase - 1] != '.') fail("ok but end is not past a STOP");
    return;
  }
  if (p.root != pk::kNoNode) fail("error with a root");
  switch (p.status.code()) {
    case ckptkit::ErrorCode::kCorrupt:
    case ckptkit::ErrorCode::kLimitExceeded:
    case ckptkit::ErrorCode::kUnsupported:
      break;
    default:
      fail("unexpected error code");
  }
  if (!p.status.has_offset() || p.status.offset() < kBase || p.status.offset() > kBase + size)
    fail("error offset outside the input");
  const std::string line = p.status.to_string();
  if (p.status.message().empty() || line.find('\n') != std::string::npos)
    fail("error message empty or not one line");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const pk::Limits limits = fuzz_limits();
  const pk::Program p = pk::run(std::span<const uint8_t>(data, size), kBase, limits);
  check_program(p, data, size);

  // Reading stops at STOP: the accepted prefix alone gives the same program (unless a FRAME
  // announced more bytes than the prefix has, which is checked against the whole input).
  if (p.status.is_ok()) {
    const size_t used = static_cast<size_t>(p.end - kBase);
    const pk::Program q = pk::run(std::span<const uint8_t>(data, used), kBase, limits);
    if (!q.status.is_ok() && data[q.status.offset() - kBase] == 0x95) return 0;
    if (!q.status.is_ok() || q.end != p.end || q.nodes.size() != p.nodes.size() ||
        q.globals.size() != p.globals.size() || q.nodes[q.root].kind != p.nodes[p.root].kind)
      fail("the pickle up to its STOP reads differently");
  } else if (size > 0) {
    // Globals found before an error are a prefix of what a longer input would show: cutting the
    // input where reading stopped keeps them (scan relies on this).
    const size_t stop = static_cast<size_t>(p.end - kBase);
    const pk::Program q = pk::run(std::span<const uint8_t>(data, stop), kBase, limits);
    if (q.status.is_ok()) fail("a prefix of a rejected pickle is accepted");
    if (q.globals.size() > p.globals.size()) fail("a prefix has more globals");
    for (size_t i = 0; i < q.globals.size(); ++i)
      if (q.globals[i].offset != p.globals[i].offset || q.globals[i].name != p.globals[i].name)
        fail("a prefix has different globals");
  }
  return 0;
}
