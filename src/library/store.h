// The model library's SQLite store: one database file, a versioned schema, thin statement helpers.
//
// Schema (docs/library.md): `models` holds one row per indexed file or diffusers folder, keyed by
// its absolute path; `components` one row per component of a model (with a fingerprint after
// `index --deep`). PRAGMA user_version is the schema version; migrate() brings an older database
// up to kSchemaVersion step by step and refuses a newer one.
//
// Thread safety: a Db (and its Stmts) is used by one thread at a time; open one per thread.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ckptkit/status.h"

namespace ckptkit::library {

inline constexpr int kSchemaVersion = 2;

class Db {
 public:
  enum class Mode { kReadOnly, kReadWrite, kCreate };
  /// Opens (kCreate: creates, with its folder) the database, sets WAL and a busy timeout, and
  /// (except kReadOnly) migrates it. A newer schema or a file that is not a database: an error.
  static Result<Db> open(const std::string& path, Mode mode);
  Db(Db&& o) noexcept : db_(o.db_), path_(std::move(o.path_)) { o.db_ = nullptr; }
  Db& operator=(Db&&) = delete;
  ~Db();

  sqlite3* handle() const { return db_; }
  const std::string& path() const { return path_; }
  Status exec(const char* sql);
  /// The error of the last failed call, as a Status naming the database.
  Status error(std::string_view what) const;

 private:
  Db(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  Status migrate();
  Status check_version();
  sqlite3* db_;
  std::string path_;
};

/// A prepared statement; bind() indices start at 1.
class Stmt {
 public:
  Stmt(const Db& db, const char* sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return st_ != nullptr; }
  Stmt& bind(int i, int64_t v);
  Stmt& bind(int i, std::string_view v);
  Stmt& bind_null(int i);
  /// Text or NULL when empty.
  Stmt& bind_text_or_null(int i, std::string_view v);
  /// true: a row is ready; false: done. Errors: false with status() set.
  bool step();
  Status status() const { return status_; }
  void reset();
  int64_t i64(int col) const { return sqlite3_column_int64(st_, col); }
  bool is_null(int col) const { return sqlite3_column_type(st_, col) == SQLITE_NULL; }
  std::string_view text(int col) const;

 private:
  const Db& db_;
  sqlite3_stmt* st_ = nullptr;
  Status status_;
};

/// Where the library lives when --db is not given: $XDG_CACHE_HOME/ckptkit/library.sqlite, or
/// ~/.cache/ckptkit/library.sqlite.
std::string default_db_path();

}  // namespace ckptkit::library
