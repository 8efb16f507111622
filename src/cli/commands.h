// The subcommands of the `ckptkit` program. Each registers its flags on a CLI11 subcommand and
// returns the function that runs it; the function returns the process exit status.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <optional>
#include <string>

#include "ckptkit/ops.h"
#include "ckptkit/scan.h"
#include "ckptkit/status.h"

namespace ckptkit::cli {

inline constexpr int kExitOk = 0;        ///< success
inline constexpr int kExitProblems = 1;  ///< a check ran and found problems
inline constexpr int kExitError = 2;     ///< error: unreadable input, bad arguments

using Runner = std::function<int()>;

struct Command {
  std::string_view name;
  std::string_view summary;
  Runner (*setup)(CLI::App& sub);
};

Runner setup_inspect(CLI::App& sub);
Runner setup_convert(CLI::App& sub);
Runner setup_sample(CLI::App& sub);
Runner setup_scan(CLI::App& sub);
Runner setup_split(CLI::App& sub);
Runner setup_assemble(CLI::App& sub);
Runner setup_swap(CLI::App& sub);
Runner setup_prune(CLI::App& sub);
Runner setup_hash(CLI::App& sub);
Runner setup_meta(CLI::App& sub);
Runner setup_verify(CLI::App& sub);
Runner setup_merge(CLI::App& sub);
Runner setup_lora(CLI::App& sub);
Runner setup_library(CLI::App& sub);

/// Prints "ckptkit: error: <status>" on stderr and returns kExitError.
int report_error(const Status& status);

/// Flags shared by every command that writes a file.
struct WriteFlags {
  std::string progress = "auto";
  unsigned threads = 0;
  std::string max_memory = "64M";
  bool force = false;
  bool no_sync = false;

  void add_to(CLI::App& sub);
  Result<RunOptions> to_options() const;
};

/// Before a command writes from a PyTorch file: scans it and, when it is dangerous, prints the
/// report on stderr and (without `allow`) a refusal naming `verb`. Returns the exit status to
/// stop with, or nullopt to go on, with `verdict` set when the file could be scanned (an
/// unreadable file is left to the command, which reports the read error).
std::optional<int> scan_gate(const std::string& path, std::string_view verb,
                             const SafetensorsLimits& limits, bool allow,
                             std::optional<Verdict>& verdict);

/// The --json report of split, assemble, swap, prune and of convert to or from a diffusers
/// folder: architecture, family, outputs, dropped, notes, input_bytes, output_bytes, seconds.
std::string reshape_report_json(const ReshapeReport& r);

/// 1234567 → "1.2 M", 2570000000 → "2.57 B".
std::string short_count(uint64_t v);

/// "64M", "1G", "512k", "1048576" → bytes.
Result<uint64_t> parse_size(std::string_view text);

/// Parses a --dtype value: f16, bf16, f32, f64, f8_e4m3, f8_e5m2 (or the safetensors names);
/// "keep" gives nullopt.
Result<std::optional<DType>> parse_dtype_flag(std::string_view text);

}  // namespace ckptkit::cli
