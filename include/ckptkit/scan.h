// ckptkit/scan.h — would loading this file run code? A static verdict, nothing executed.
//
// A PyTorch file is a pickle: `torch.load` (in ComfyUI, A1111, diffusers, …) imports every module
// the pickle names and calls what it says. `scan_file` interprets every pickle in the file (the
// object pickle, any other pickle entry of a zip, pickles nested in byte strings) with ckptkit's
// passive pickle machine and judges each global it names:
//
//   allowed    what torch.save writes for tensors and plain containers
//   unknown    would import a module that is not part of the tensor format (a training
//              framework's class, say): not known to run code, but it could
//   dangerous  runs commands or code, touches files or the network, or loads further pickles
//
// verdict: dangerous if any global is dangerous; suspicious if any is unknown or the file has
// structural oddities (zip polyglots, overlapping entries, a malformed pickle, a nested pickle);
// safe otherwise. safetensors files hold no code and are safe when well-formed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckptkit/reader.h"
#include "ckptkit/status.h"

namespace ckptkit {

enum class Verdict : uint8_t { kSafe, kSuspicious, kDangerous };
std::string_view verdict_name(Verdict v);  ///< "safe", "suspicious", "dangerous"

struct ScanGlobal {
  std::string module, name;
  uint64_t offset = 0;      ///< absolute file offset of the opcode (see `entry`)
  std::string entry;        ///< zip entry holding the pickle; "" for legacy/bare pickles
  std::string opcode;       ///< GLOBAL, STACK_GLOBAL, INST, OBJ, EXT
  std::string category;     ///< allowed, unknown, dangerous
  std::string reason;       ///< plain words
  std::string origin;       ///< torch, stdlib or third_party: where the module comes from
  bool called = false;      ///< the pickle calls it (REDUCE, NEWOBJ, INST, OBJ, …), not only names it
  bool nested = false;      ///< inside a pickle nested in a byte string (offset: that string's)
  bool compressed = false;  ///< the entry is deflated: offset is within the inflated entry
};

struct ScanFinding {
  std::string kind;  ///< stable id: "overlapping_entries", "malformed_pickle", "nested_pickle", …
  uint64_t offset = 0;
  std::string entry;
  std::string message;  ///< plain words
};

struct ScanReport {
  std::string path;
  std::string format;  ///< safetensors, torch-zip, torch-legacy, pickle, or what it is not
  Verdict verdict = Verdict::kSafe;
  std::string summary;              ///< what the verdict means, for a ComfyUI user
  std::vector<ScanGlobal> globals;  ///< every global reference (allowlisted ones included)
  std::vector<ScanFinding> findings;
  Status error;  ///< not ok: the file could not be read at all (no verdict)
};

ScanReport scan_file(const std::string& path, const ReadLimits& limits = {});

/// A checkpoint and, for PyTorch files, its scan report, from one read of the file's structure
/// (what `inspect` shows).
struct CheckedCheckpoint {
  Checkpoint checkpoint;
  std::optional<ScanReport> scan;  ///< PyTorch formats only
};
Result<CheckedCheckpoint> read_and_scan(const std::string& path, const ReadLimits& limits = {});

}  // namespace ckptkit
