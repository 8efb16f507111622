#include "io/errors.h"

#include <fmt/format.h>

namespace ckptkit {

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return "ok";
    case ErrorCode::kIoError: return "i/o error";
    case ErrorCode::kNotFound: return "not found";
    case ErrorCode::kCorrupt: return "corrupt";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kLimitExceeded: return "limit exceeded";
    case ErrorCode::kCancelled: return "cancelled";
    case ErrorCode::kInternal: return "internal error";
  }
  return "unknown error";
}

Status::Status(ErrorCode code, std::string message, std::string path, uint64_t offset,
               std::string tensor)
    : rep_(std::make_shared<Rep>(
          Rep{code, std::move(message), std::move(path), offset, std::move(tensor)})) {}

namespace {
const std::string& empty_string() {
  static const std::string kEmpty;
  return kEmpty;
}
}  // namespace

const std::string& Status::message() const { return rep_ ? rep_->message : empty_string(); }
const std::string& Status::path() const { return rep_ ? rep_->path : empty_string(); }
const std::string& Status::tensor() const { return rep_ ? rep_->tensor : empty_string(); }

Status& Status::with_path(std::string_view path) {
  if (rep_ && rep_->path.empty()) {
    auto copy = std::make_shared<Rep>(*rep_);
    copy->path = std::string(path);
    rep_ = std::move(copy);
  }
  return *this;
}

std::string Status::to_string() const {
  if (!rep_) return "ok";
  std::string out;
  if (!rep_->path.empty()) {
    out += rep_->path;
    if (rep_->offset != kNoOffset) out += fmt::format(":{:#x}", rep_->offset);
    out += ": ";
  } else if (rep_->offset != kNoOffset) {
    out += fmt::format("offset {:#x}: ", rep_->offset);
  }
  out += error_code_name(rep_->code);
  out += ": ";
  if (!rep_->tensor.empty()) out += fmt::format("tensor '{}': ", rep_->tensor);
  out += rep_->message;
  return out;
}

Status os_error(std::string_view what, std::string_view path, int err, uint64_t offset) {
  ErrorCode code = err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIoError;
  return Status(code, fmt::format("{}: {}", what, std::strerror(err)), std::string(path), offset);
}

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", v, units[u]);
}

}  // namespace ckptkit
