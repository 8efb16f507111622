// The command table and the parsing shared by main() and in-process callers (app.h).
#include "cli/app.h"

#include <fmt/format.h>

#include <cstdio>

// GCC 12 at -O1 -fPIC sees a "potential null dereference" inside CLI11's string splitting
// (std::vector<std::string> growth); the code is CLI11's and std's, not ours.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop

#include "ckptkit/cast.h"
#include "cli/commands.h"

namespace ckptkit::cli {
namespace {

thread_local Capture* t_capture = nullptr;

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

}  // namespace

int run_command_line(int argc, char** argv) {
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
    if (Capture* c = current_capture()) {
      c->error = Status(ErrorCode::kInvalidArgument, e.what());
      return kExitError;
    }
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitError;
  }
  for (auto& [sub, runner] : runners)
    if (sub->parsed()) return runner();
  print_out(app.help());
  return kExitError;
}

Capture* current_capture() { return t_capture; }

void print_out(std::string_view text) {
  if (t_capture != nullptr)
    t_capture->out.append(text);
  else
    std::fwrite(text.data(), 1, text.size(), stdout);
}

int run_captured(const std::vector<std::string>& args, Capture& capture) {
  std::vector<std::string> storage;
  storage.reserve(args.size() + 1);
  storage.emplace_back("ckptkit");
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  Capture* outer = t_capture;
  t_capture = &capture;
  int rc = kExitError;
  try {
    rc = run_command_line(static_cast<int>(storage.size()), argv.data());
  } catch (...) {
    t_capture = outer;
    throw;
  }
  t_capture = outer;
  return rc;
}

}  // namespace ckptkit::cli
