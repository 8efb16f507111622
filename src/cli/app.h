// The `ckptkit` command line as a function: main() runs it on the process's argv; in-process
// callers (the Python module, src/python/native.cc) run a command with what it would print
// captured, so that a function and the command share flags, checks, defaults and the --json
// report by construction.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ckptkit/ops.h"
#include "ckptkit/status.h"

namespace ckptkit::cli {

/// Parses argv (argv[0] is the program's name), runs the command, returns the exit status.
int run_command_line(int argc, char** argv);

/// What a captured run gives back instead of printing it.
struct Capture {
  RunMonitor* monitor = nullptr;  ///< given to every executor run of the command (not owned)
  std::string out;                ///< what the command would have printed on stdout
  Status error;                   ///< the error it would have printed (report_error), or OK
  std::string dangerous_report;   ///< scan_gate's refusal of a dangerous file: the scan report
};

/// Runs `ckptkit ARGS...` on the calling thread with its output captured: stdout text goes to
/// `capture.out`, errors to `capture.error`, nothing is printed (no progress bar, no human
/// report on stderr). Returns the exit status (0, 1 a check found problems, 2 error). The
/// process's signal handlers are left alone: the caller cancels through `capture.monitor`.
/// Commands may run on several threads at once, each with its own capture.
int run_captured(const std::vector<std::string>& args, Capture& capture);

/// The capture of the command running on this thread, or nullptr (printing to the terminal).
Capture* current_capture();

/// A command's result text: on stdout, or into the running capture.
void print_out(std::string_view text);

}  // namespace ckptkit::cli
