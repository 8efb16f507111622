// libFuzzer target: a whole PyTorch checkpoint (zip archive or legacy stream) through
// read_checkpoint (zip reader + pickle machine + tensor extraction) and scan_file. The bytes are
// put in a memfd and opened through /proc/self/fd, so the real file-reading paths run.
// Properties beyond "no crash, no UB, no leak" (violations abort()):
//   * a rejected file gets a status whose byte offset, when present, lies inside the file;
//   * an accepted file's tensors each lie inside the file: for a plain tensor its byte range,
//     for a view the storage it names; every tensor's storage index is valid;
//   * scan_file either gives a verdict or an error, never both, and every global's offset lies
//     inside the file (for stored entries);
//   * analyze() (detection, and the position_ids values read through the file) puts every
//     tensor in exactly one component.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ckptkit/anatomy.h"
#include "ckptkit/reader.h"
#include "ckptkit/scan.h"
#include "io/file.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "torch_checkpoint_fuzz: property violated: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memfd_create("fuzz-ckpt", MFD_CLOEXEC);
  if (fd < 0) return 0;
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) {
      ::close(fd);
      return 0;
    }
    done += static_cast<size_t>(n);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  ckptkit::ReadLimits limits;
  limits.max_pickle_bytes = 1u << 20;
  limits.max_pickle_nodes = 1u << 16;

  auto ck = ckptkit::read_checkpoint(path, limits);
  if (!ck) {
    const ckptkit::Status& st = ck.status();
    if (st.has_offset() && st.offset() > size) fail("error offset past the end of the file");
    (void)st.to_string();
  } else {
    auto file = ckptkit::InputFile::open(path);
    const ckptkit::Anatomy a = ckptkit::analyze(*ck, file ? &*file : nullptr);
    std::vector<int> seen(ck->tensors.size(), 0);
    for (const ckptkit::Component& c : a.components)
      for (size_t i : c.tensors) {
        if (i >= seen.size()) fail("component names a tensor that does not exist");
        ++seen[i];
      }
    for (int n : seen)
      if (n != 1) fail("a tensor in no component or in two");
    for (const ckptkit::TensorInfo& t : ck->tensors) {
      if (ck->format == ckptkit::FileFormat::kSafetensors) continue;
      if (t.storage < 0 || static_cast<size_t>(t.storage) >= ck->torch.storages.size())
        fail("tensor without a valid storage");
      const ckptkit::StorageInfo& s = ck->torch.storages[static_cast<size_t>(t.storage)];
      if (s.offset > size || s.nbytes > size - s.offset) fail("storage outside the file");
      if (t.numel() == 0) continue;
      if (t.begin < s.offset || t.begin > s.offset + s.nbytes) fail("tensor outside its storage");
      if (t.strides.empty() && !t.big_endian && t.end > s.offset + s.nbytes)
        fail("plain tensor's bytes outside its storage");
    }
  }

  ckptkit::ScanReport r = ckptkit::scan_file(path, limits);
  if (!r.error.is_ok() && !r.globals.empty()) fail("scan both failed and listed globals");
  for (const ckptkit::ScanGlobal& g : r.globals)
    if (!g.compressed && !g.nested && g.offset >= size) fail("global offset past the end");
  ::close(fd);
  return 0;
}
