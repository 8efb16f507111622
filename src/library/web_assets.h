// The web page's files (web/), embedded at build time by cmake/embed_web.cmake.
#pragma once

#include <cstddef>

namespace ckptkit::library {

struct WebAsset {
  const char* path;  ///< "/index.html", "/app.js", …
  const char* mime;
  const unsigned char* data;
  size_t size;
};

extern const WebAsset kWebAssets[];
extern const size_t kWebAssetCount;

}  // namespace ckptkit::library
