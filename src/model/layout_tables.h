// The published tensor layouts (data/layouts/*.tsv), embedded at build time by
// cmake/embed_layouts.cmake. Each table: one tensor per line, `name<TAB>dtype<TAB>d0,d1,...`,
// an empty shape column meaning a 0-d scalar.
#pragma once

#include <cstddef>

namespace ckptkit::detail {

struct EmbeddedLayout {
  const char* name;
  const char* const* pieces;  ///< the table's text, in pieces to concatenate
  size_t piece_count;
};

extern const EmbeddedLayout kEmbeddedLayouts[];
extern const size_t kEmbeddedLayoutCount;

}  // namespace ckptkit::detail
