// ckptkit — know, fix and reshape diffusion-model checkpoints.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <new>
#include <string_view>

#include "cli/app.h"
#include "cli/commands.h"
#include "io/output.h"
#include "lora/svd.h"

int main(int argc, char** argv) {
  // The commands whose time is the BLAS's: when OpenBLAS fell back to its generic kernels on a
  // CPU it does not know (common in VMs), start again with it told the kernel family, which
  // it only reads when it loads (docs/lora.md, "Speed").
  if (argc >= 3 && std::string_view(argv[1]) == "lora" &&
      (std::string_view(argv[2]) == "extract" || std::string_view(argv[2]) == "resize")) {
    const std::string hint = ckptkit::detail::blas_core_hint();
    if (!hint.empty() && ::setenv("OPENBLAS_CORETYPE", hint.c_str(), 1) == 0)
      ::execv("/proc/self/exe", argv);  // returns only on failure: go on as we are
  }
  ckptkit::install_cleanup_signal_handlers();
  try {
    return ckptkit::cli::run_command_line(argc, argv);
  } catch (const std::bad_alloc&) {
    std::fputs("ckptkit: error: out of memory\n", stderr);
    return ckptkit::cli::kExitError;
  }
}
