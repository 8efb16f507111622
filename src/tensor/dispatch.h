// Run-time choice among per-SIMD-target kernel tables. Highway compiles each kernel once per
// target (foreach_target); its own dispatch needs libhwy.so, whose start-up costs ~5 ms per
// run, so the tables are picked here from the CPU's feature bits instead (cast.cc, blake3.cc).
#pragma once

#include <atomic>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ckptkit::detail {

/// `Table` has `const char* name` and `bool (*supported)()`. The tables are given best first;
/// the last must always be supported (the baseline the program is compiled for).
template <typename Table>
class KernelChoice {
 public:
  explicit KernelChoice(std::span<const Table> tables) : tables_(tables) {}

  /// The chosen table: the best supported one unless select() chose another.
  const Table& get() {
    const Table* t = chosen_.load(std::memory_order_acquire);
    if (t == nullptr) {
      t = &tables_.back();
      cpu_init();
      for (const Table& k : tables_)
        if (k.supported()) {
          t = &k;
          break;
        }
      chosen_.store(t, std::memory_order_release);
    }
    return *t;
  }

  /// Names of the tables this CPU can run, best first.
  std::vector<std::string> names() const {
    cpu_init();
    std::vector<std::string> out;
    for (const Table& k : tables_)
      if (k.supported()) out.emplace_back(k.name);
    return out;
  }

  /// Forces a table (tests, benchmarks); false when unknown or unsupported here.
  bool select(std::string_view name) {
    cpu_init();
    for (const Table& k : tables_)
      if (name == k.name && k.supported()) {
        chosen_.store(&k, std::memory_order_release);
        return true;
      }
    return false;
  }

 private:
  static void cpu_init() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
#endif
  }

  std::span<const Table> tables_;
  std::atomic<const Table*> chosen_{nullptr};
};

}  // namespace ckptkit::detail
