// Builders for Status values with formatted messages. Internal: the public header has only the
// type. Messages are lowercase fragments; Status::to_string() adds path, offset and tensor.
#pragma once

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "ckptkit/status.h"

namespace ckptkit {

template <typename... Args>
Status error(ErrorCode code, fmt::format_string<Args...> f, Args&&... args) {
  return Status(code, fmt::format(f, std::forward<Args>(args)...));
}

/// A format violation at an absolute byte offset of the file.
template <typename... Args>
Status corrupt_at(uint64_t offset, fmt::format_string<Args...> f, Args&&... args) {
  return Status(ErrorCode::kCorrupt, fmt::format(f, std::forward<Args>(args)...), {}, offset);
}

/// A format violation of one tensor's entry at an absolute byte offset.
template <typename... Args>
Status corrupt_tensor(uint64_t offset, std::string tensor, fmt::format_string<Args...> f,
                      Args&&... args) {
  return Status(ErrorCode::kCorrupt, fmt::format(f, std::forward<Args>(args)...), {}, offset,
                std::move(tensor));
}

/// An OS error: "what: strerror(err)".
Status os_error(std::string_view what, std::string_view path, int err = errno,
                uint64_t offset = kNoOffset);

/// "1.23 GB" in decimal units, as disks and model pages count.
std::string human_bytes(uint64_t bytes);

}  // namespace ckptkit
