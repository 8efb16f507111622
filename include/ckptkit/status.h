// ckptkit/status.h — the error model of the whole library.
//
// Every fallible call returns a `Status` or a `Result<T>`. Neither throws for bad input or I/O:
// exceptions are reserved for allocation failure. A Status is cheap when OK (one pointer) and,
// when not OK, carries where the problem is: the file, the byte offset in it and the tensor.
//
// Thread safety: Status and Result are values; copies are independent.
#pragma once

#include <cassert>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace ckptkit {

/// What went wrong, in the categories a caller can act on.
enum class ErrorCode : uint8_t {
  kOk = 0,
  kIoError,          ///< the operating system refused a read, write, open, rename, …
  kNotFound,         ///< a named file or tensor does not exist
  kCorrupt,          ///< the input violates its format; the message says which rule, where
  kUnsupported,      ///< well-formed input that this version cannot process (e.g. F4 casts)
  kInvalidArgument,  ///< the caller asked for something impossible (bad flag, refused overwrite)
  kLimitExceeded,    ///< input larger than a named, overridable limit (header size, …)
  kCancelled,        ///< interrupted by a signal
  kInternal,         ///< a bug in ckptkit
};

/// A short lowercase name ("corrupt", "io error", …) used in messages.
std::string_view error_code_name(ErrorCode code);

/// Marker for "no byte offset applies".
inline constexpr uint64_t kNoOffset = UINT64_MAX;

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(ErrorCode code, std::string message, std::string path = {},
         uint64_t offset = kNoOffset, std::string tensor = {});

  static Status ok() { return Status(); }

  bool is_ok() const { return rep_ == nullptr; }
  explicit operator bool() const { return is_ok(); }
  ErrorCode code() const { return rep_ ? rep_->code : ErrorCode::kOk; }
  const std::string& message() const;
  const std::string& path() const;
  uint64_t offset() const { return rep_ ? rep_->offset : kNoOffset; }
  bool has_offset() const { return offset() != kNoOffset; }
  const std::string& tensor() const;

  /// Fills in the path if the status does not name one yet (readers of in-memory buffers leave
  /// it empty; the caller that opened the file knows it).
  Status& with_path(std::string_view path);

  /// The one-line form: `path:0x1F40: corrupt: tensor 'x': message`.
  std::string to_string() const;

 private:
  struct Rep {
    ErrorCode code;
    std::string message;
    std::string path;
    uint64_t offset;
    std::string tensor;
  };
  std::shared_ptr<Rep> rep_;
};

/// Either a value or a non-OK Status; never "OK without a value".
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).is_ok() && "Result built from an OK status");
  }

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  Status status() const { return is_ok() ? Status::ok() : std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

// Helpers that build a Status with a formatted message live in src/ (they use {fmt}); the
// public API only needs the type.

}  // namespace ckptkit

/// Propagates a non-OK Status from an expression returning Status.
#define CKPT_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::ckptkit::Status ckpt_status_ = (expr);     \
    if (!ckpt_status_.is_ok()) return ckpt_status_; \
  } while (0)

#define CKPT_CONCAT_INNER(a, b) a##b
#define CKPT_CONCAT(a, b) CKPT_CONCAT_INNER(a, b)
#define CKPT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.is_ok()) return tmp.status();           \
  lhs = std::move(tmp).value()

/// `CKPT_ASSIGN_OR_RETURN(auto x, f());` — binds the value or propagates the error.
#define CKPT_ASSIGN_OR_RETURN(lhs, expr) \
  CKPT_ASSIGN_OR_RETURN_IMPL(CKPT_CONCAT(ckpt_result_, __LINE__), lhs, expr)
