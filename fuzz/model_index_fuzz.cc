// libFuzzer target: a diffusers folder's model_index.json (untrusted: it comes with the
// download) through read_diffusers_folder. The bytes are written to model_index.json in a
// scratch folder made once; the part subfolders do not exist, so only the JSON is exercised.
// Properties beyond "no crash, no UB, no leak" (violations abort()):
//   * a rejected file gets a status naming the file;
//   * every part listed is a plain subfolder name (not empty, not starting with '_', no '/',
//     not "." or ".."): nothing outside the folder is listed.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ckptkit/anatomy.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "model_index_fuzz: property violated: %s\n", what);
  std::abort();
}

const std::string& scratch() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/ckptkit-model-index-fuzz-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    if (!d) fail("cannot create a scratch folder");
    return std::string(d);
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = scratch() + "/model_index.json";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  if (size > 0 && std::fwrite(data, 1, size, f) != size) {
    std::fclose(f);
    return 0;
  }
  std::fclose(f);
  auto folder = ckptkit::read_diffusers_folder(scratch());
  if (!folder) {
    if (folder.status().path().empty()) fail("an error without the file's path");
    (void)folder.status().to_string();
    return 0;
  }
  for (const ckptkit::DiffusersPart& p : folder->parts)
    if (p.name.empty() || p.name[0] == '_' || p.name == "." || p.name == ".." ||
        p.name.find('/') != std::string::npos)
      fail("a part that is not a plain subfolder name");
  return 0;
}
