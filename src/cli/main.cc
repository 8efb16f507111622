// ckptkit — know, fix and reshape diffusion-model checkpoints.
#include <fmt/format.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "ckptkit/cast.h"
#include "cli/commands.h"
#include "io/errors.h"
#include "io/output.h"
#include "lora/svd.h"
#include "tensor/dtype_names.h"

namespace ckptkit::cli {

constexpr Command kCommands[] = {
    {"inspect",
     "what a file is (.safetensors, .ckpt/.pt/.bin, diffusers folder): architecture, "
     "components, dtypes, metadata, defects",
     setup_inspect},
    {"convert",
     "rewrite a checkpoint (or a .ckpt) as safetensors, optionally changing precision; a "
     "single file <-> a diffusers folder",
     setup_convert},
    {"scan", "would loading it run code? static pickle analysis, nothing is executed", setup_scan},
    {"split", "monolithic file -> ComfyUI parts (diffusion_models/, text_encoders/, vae/)",
     setup_split},
    {"assemble", "parts -> one file in the family's standard single-file layout", setup_assemble},
    {"swap", "replace the VAE or a text encoder of a single-file model", setup_swap},
    {"prune", "drop the EMA copy and training buffers (or use the EMA weights), change dtype",
     setup_prune},
    {"hash", "SHA-256, AutoV1/V2/V3, CRC32, BLAKE3 in one read; checks hashes in the metadata",
     setup_hash},
    {"verify", "is it intact and sound? structure, lint, defects, NaN/Inf/zero values (exit 1)",
     setup_verify},
    {"merge",
     "mix models tensor by tensor: weighted sum, add difference, slerp, TIES, DARE; per-block "
     "alpha; recipes",
     setup_merge},
    {"lora",
     "LoRA adapters: bake into a model, extract from two models, resize, convert between "
     "formats (inspect shows and matches them)",
     setup_lora},
    {"meta", "show or edit safetensors metadata (the data is copied unchanged)", setup_meta},
    {"library",
     "index model folders into SQLite: list, find duplicates and unsafe files, browse in a "
     "local web page",
     setup_library},
    {"sample", "write a synthetic checkpoint with a published model's exact layout", setup_sample},
};

int run(int argc, char** argv) {
  install_cleanup_signal_handlers();
  CLI::App app{
      "ckptkit — know, fix and reshape diffusion-model checkpoints (SD 1.x/2.x, SDXL, SD3, "
      "FLUX).\nEvery command streams: memory stays bounded whatever the model's size, and "
      "outputs appear whole or not at all: an interrupted, killed or failed command (full "
      "disk included) leaves nothing behind.",
      "ckptkit"};
  app.set_version_flag("--version",
                       fmt::format("ckptkit {} (SIMD: {})", "0.1.0", simd_target_name()));
  app.require_subcommand(0, 1);
  app.footer(
      "Exit status: 0 success, 1 a check found problems, 2 error.\n"
      "Run `ckptkit COMMAND --help` for a command's options and examples.\n"
      "Docs: docs/cli.md");
  std::vector<std::pair<CLI::App*, Runner>> runners;
  for (const Command& c : kCommands) {
    CLI::App* sub = app.add_subcommand(std::string(c.name), std::string(c.summary));
    runners.emplace_back(sub, c.setup(*sub));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitError;
  }
  for (auto& [sub, runner] : runners)
    if (sub->parsed()) return runner();
  std::fputs(app.help().c_str(), stdout);
  return kExitError;
}

}  // namespace ckptkit::cli

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
  try {
    return ckptkit::cli::run(argc, argv);
  } catch (const std::bad_alloc&) {
    std::fputs("ckptkit: error: out of memory\n", stderr);
    return ckptkit::cli::kExitError;
  }
}
