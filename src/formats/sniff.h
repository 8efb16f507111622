// Recognizes what a file is from its first bytes, never from its name.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "ckptkit/status.h"

namespace ckptkit {

enum class Sniffed : uint8_t {
  kUnknown,
  kSafetensors,  ///< plausible: u64 length, then '{' (possibly after whitespace)
  kTorchZip,     ///< "PK\x03\x04": torch.save since 1.6 (.ckpt/.pt/.bin)
  kPickle,       ///< 0x80 then a protocol number: a bare pickle or legacy torch.save
  kGguf,         ///< "GGUF"
  kHtml,         ///< an HTML page saved under a model name (a failed download)
  kLfsPointer,   ///< a Git LFS pointer file: the model itself was never fetched
  kJson,         ///< a JSON document (a config, an index) rather than a model
  kEmpty,
};

/// `head` is the first bytes of the file (64 or more when the file is that long).
Sniffed sniff(std::span<const uint8_t> head);

class InputFile;

/// Reads the first 64 bytes of `file` (fewer if it is shorter) and sniffs them.
Result<Sniffed> sniff_file(const InputFile& file);

/// A plain-words description for errors: "an HTML page (a download error page saved under a
/// model name?)". Empty for kUnknown and kSafetensors.
std::string_view describe_foreign(Sniffed kind);

}  // namespace ckptkit
