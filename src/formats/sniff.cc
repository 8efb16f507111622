#include "formats/sniff.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>

#include "io/file.h"

namespace ckptkit {
namespace {

bool starts_with(std::span<const uint8_t> head, std::string_view prefix) {
  return head.size() >= prefix.size() &&
         std::memcmp(head.data(), prefix.data(), prefix.size()) == 0;
}

bool starts_with_nocase(std::span<const uint8_t> head, size_t at, std::string_view prefix) {
  if (head.size() < at + prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(head[at + i]) != prefix[i]) return false;
  return true;
}

/// A little-endian u64 header length below 4 GiB (a pickle's bytes 4–7 are opcodes, never all
/// zero in practice), then optional whitespace and '{'.
bool looks_like_safetensors(std::span<const uint8_t> head) {
  if (head.size() < 9) return false;
  uint64_t n = 0;
  for (int b = 7; b >= 0; --b) n = (n << 8) | head[static_cast<size_t>(b)];
  size_t j = 8;
  while (j < head.size() && std::isspace(head[j])) ++j;
  return n >= 2 && n < (1ull << 32) && j < head.size() && head[j] == '{';
}

}  // namespace

Sniffed sniff(std::span<const uint8_t> head) {
  if (head.empty()) return Sniffed::kEmpty;
  if (starts_with(head, "version https://git-lfs")) return Sniffed::kLfsPointer;
  if (starts_with(head, "PK\x03\x04") || starts_with(head, "PK\x05\x06")) return Sniffed::kTorchZip;
  if (starts_with(head, "GGUF")) return Sniffed::kGguf;
  // A safetensors header length whose low bytes are 0x80 0x02…0x05 (640, 896, 1152, 1408 mod
  // 65536) starts like a pickle's PROTO opcode: the 8-byte length followed by '{' decides.
  if (head.size() >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5 &&
      !looks_like_safetensors(head))
    return Sniffed::kPickle;
  size_t i = 0;
  while (i < head.size() && std::isspace(head[i])) ++i;
  if (i + 3 <= head.size() && head[i] == 0xEF && head[i + 1] == 0xBB && head[i + 2] == 0xBF) i += 3;
  if (starts_with_nocase(head, i, "<!doctype") || starts_with_nocase(head, i, "<html") ||
      starts_with_nocase(head, i, "<?xml") || starts_with_nocase(head, i, "<head"))
    return Sniffed::kHtml;
  if (i < head.size() && (head[i] == '{' || head[i] == '[')) return Sniffed::kJson;
  if (head.size() >= 9) {
    uint64_t n = 0;
    for (int b = 7; b >= 0; --b) n = (n << 8) | head[static_cast<size_t>(b)];
    size_t j = 8;
    while (j < head.size() && std::isspace(head[j])) ++j;
    if (n >= 2 && j < head.size() && head[j] == '{') return Sniffed::kSafetensors;
  }
  // Protocol 0/1 pickles have no PROTO opcode: they start with GLOBAL ("cmodule\nname\n"),
  // MARK or an empty container, followed by another opcode.
  if (head.size() >= 4) {
    const auto is_ident = [](uint8_t c) { return std::isalnum(c) || c == '_' || c == '.'; };
    if (head[0] == 'c' && is_ident(head[1])) {
      for (size_t k = 1; k < head.size(); ++k) {
        if (head[k] == '\n') return k >= 2 ? Sniffed::kPickle : Sniffed::kUnknown;
        if (!is_ident(head[k])) break;
      }
    }
    static constexpr std::string_view kNext = "(cdlNIFLSVXJKMGUTq]})ptgh";
    if ((head[0] == '(' || head[0] == ']' || head[0] == '}' || head[0] == ')') &&
        kNext.find(static_cast<char>(head[1])) != std::string_view::npos)
      return Sniffed::kPickle;
  }
  return Sniffed::kUnknown;
}

std::string_view describe_foreign(Sniffed kind) {
  switch (kind) {
    case Sniffed::kTorchZip:
      return "a PyTorch zip checkpoint (.ckpt/.pt/.bin), not safetensors";
    case Sniffed::kPickle:
      return "a Python pickle (a legacy PyTorch checkpoint), not safetensors";
    case Sniffed::kGguf:
      return "a GGUF file, not safetensors";
    case Sniffed::kHtml:
      return "an HTML page, not a model (a download error or login page saved under a model "
             "name?)";
    case Sniffed::kLfsPointer:
      return "a Git LFS pointer file, not the model: the real file was never downloaded (run "
             "`git lfs pull` in the repository)";
    case Sniffed::kJson:
      return "a JSON text file (a config or index?), not a model";
    case Sniffed::kEmpty:
      return "an empty file";
    case Sniffed::kSafetensors:
    case Sniffed::kUnknown:
      return {};
  }
  return {};
}

Result<Sniffed> sniff_file(const InputFile& file) {
  std::array<uint8_t, 64> head{};
  const uint64_t n = std::min<uint64_t>(file.size(), head.size());
  CKPT_RETURN_IF_ERROR(file.pread_exact(std::span(head).first(n), 0, "the file's first bytes"));
  return sniff(std::span(head).first(n));
}

}  // namespace ckptkit
