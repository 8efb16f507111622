// Helpers shared by the subcommands (commands.h): error reports, the write flags, size and dtype
// parsing. Apart from main.cc so that code reusing a command's rendering (the Python module)
// links without the program's entry point.
#include <fmt/format.h>

#include <cctype>
#include <cstdio>

#include "ckptkit/cast.h"
#include "cli/app.h"
#include "cli/commands.h"
#include "io/errors.h"
#include "io/output.h"
#include "tensor/dtype_names.h"

namespace ckptkit::cli {

int report_error(const Status& status) {
  if (Capture* c = current_capture()) {
    if (c->error.is_ok()) c->error = status;
    return kExitError;
  }
  std::fprintf(stderr, "ckptkit: error: %s\n", status.to_string().c_str());
  return kExitError;
}

void WriteFlags::add_to(CLI::App& sub) {
  sub.add_option("--progress", progress,
                 "progress bar on stderr: auto (when a terminal), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->default_str("auto");
  sub.add_option("--threads", threads, "worker threads (default: one per core)");
  sub.add_option("--max-memory", max_memory,
                 "memory for I/O buffers, e.g. 64M, 256M, 1G (peak use stays near this)")
      ->default_str("64M");
  sub.add_flag("-f,--force", force,
               "replace the output if it exists (atomically: the old file stays whole until the "
               "new one is complete)");
  sub.add_flag("--no-sync", no_sync,
               "skip both fsyncs (the output's data before it is linked into place, and its "
               "folder after): faster, but a power cut soon after may lose or truncate it");
}

Result<RunOptions> WriteFlags::to_options() const {
  RunOptions o;
  o.threads = threads;
  CKPT_ASSIGN_OR_RETURN(o.max_memory, parse_size(max_memory));
  if (o.max_memory < (4ull << 20))
    return error(ErrorCode::kInvalidArgument, "--max-memory {} is below the minimum of 4M",
                 max_memory);
  o.progress = progress == "always"  ? ProgressMode::kAlways
               : progress == "never" ? ProgressMode::kNever
                                     : ProgressMode::kAuto;
  o.force = force;
  o.sync = !no_sync;
  if (Capture* c = current_capture()) {  // an in-process caller follows progress itself
    o.progress = ProgressMode::kNever;
    o.monitor = c->monitor;
  }
  return o;
}

std::string short_count(uint64_t v) {
  if (v >= 1'000'000'000) return fmt::format("{:.2f} B", static_cast<double>(v) / 1e9);
  if (v >= 1'000'000) return fmt::format("{:.1f} M", static_cast<double>(v) / 1e6);
  if (v >= 1'000) return fmt::format("{:.1f} k", static_cast<double>(v) / 1e3);
  return std::to_string(v);
}

Result<uint64_t> parse_size(std::string_view text) {
  uint64_t v = 0;
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    if (__builtin_mul_overflow(v, 10, &v) ||
        __builtin_add_overflow(v, static_cast<uint64_t>(text[i] - '0'), &v))
      return error(ErrorCode::kInvalidArgument, "size '{}' is too large", text);
    ++i;
  }
  if (i == 0) return error(ErrorCode::kInvalidArgument, "'{}' is not a size (try 64M or 1G)", text);
  std::string_view unit = text.substr(i);
  uint64_t mult = 1;
  if (unit == "" || unit == "B")
    mult = 1;
  else if (unit == "k" || unit == "K" || unit == "KiB")
    mult = 1ull << 10;
  else if (unit == "M" || unit == "MiB")
    mult = 1ull << 20;
  else if (unit == "G" || unit == "GiB")
    mult = 1ull << 30;
  else
    return error(ErrorCode::kInvalidArgument, "unknown size unit in '{}' (use K, M or G)", text);
  if (__builtin_mul_overflow(v, mult, &v))
    return error(ErrorCode::kInvalidArgument, "size '{}' is too large", text);
  return v;
}

Result<std::optional<DType>> parse_dtype_flag(std::string_view text) {
  if (const TargetDtype d = target_dtype_from_name(text); d.known) return d.dtype;
  return error(ErrorCode::kInvalidArgument, "unknown dtype '{}' (choose {})", text,
               kTargetDtypeChoices);
}

}  // namespace ckptkit::cli
