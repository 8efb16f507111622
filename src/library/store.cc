#include "library/store.h"

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>

namespace ckptkit::library {
namespace {

// Version 1. Lists and JSON documents (evidence, dtypes, defects, metadata, the inspect report)
// are stored as JSON text: they are shown, not queried by their parts.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE models (
  id            INTEGER PRIMARY KEY,
  path          TEXT NOT NULL UNIQUE,   -- absolute, as walked (symlinks to files kept)
  root          TEXT NOT NULL,          -- the indexed folder it was found under
  is_folder     INTEGER NOT NULL DEFAULT 0,  -- a diffusers folder
  size          INTEGER NOT NULL,       -- bytes (a folder: its weight files)
  mtime_ns      INTEGER NOT NULL,
  dev           INTEGER NOT NULL,
  inode         INTEGER NOT NULL,
  format        TEXT,                   -- safetensors, torch-zip, torch-legacy, gguf, diffusers
  kind          TEXT,                   -- checkpoint, diffusion model, text encoder, VAE, LoRA, ...
  layout        TEXT,
  architecture  TEXT,
  family        TEXT,                   -- a LoRA: its base family
  variant       TEXT,
  confidence    TEXT,
  evidence      TEXT,                   -- JSON array
  dtypes        TEXT,                   -- JSON object: dtype -> tensor count
  tensors       INTEGER,
  parameters    INTEGER,
  scan_verdict  TEXT,                   -- safe, suspicious, dangerous
  scan_summary  TEXT,
  defect_count  INTEGER NOT NULL DEFAULT 0,
  defects       TEXT,                   -- JSON array of {code, severity, message}
  title         TEXT,
  trigger_words TEXT,
  lora_base     TEXT,
  lora_rank     INTEGER,
  deep          INTEGER NOT NULL DEFAULT 0,  -- component fingerprints computed
  sha256        TEXT,
  autov2        TEXT,
  autov3        TEXT,
  blake3        TEXT,
  hash_error    TEXT,
  error         TEXT,                   -- could not be read: why (the other facts are NULL)
  indexed_at    INTEGER NOT NULL,
  -- Large documents last: a query that does not read them does not walk their overflow pages
  -- (with them in the middle, listing 10,000 rows was 5x slower).
  metadata      TEXT,                   -- JSON object, as in the file
  report        TEXT                    -- the `ckptkit inspect --json` document
);
CREATE INDEX models_root ON models(root);
CREATE INDEX models_sha256 ON models(sha256);
CREATE INDEX models_identity ON models(dev, inode);
CREATE TABLE components (
  model_id    INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
  idx         INTEGER NOT NULL,
  role        TEXT NOT NULL,
  part        TEXT NOT NULL,
  prefix      TEXT NOT NULL,
  detail      TEXT,
  tensors     INTEGER NOT NULL,
  parameters  INTEGER NOT NULL,
  bytes       INTEGER NOT NULL,
  dtypes      TEXT,
  fingerprint TEXT,                     -- SHA-256 of the component's tensors, wherever they sit
  PRIMARY KEY (model_id, idx)
);
CREATE INDEX components_fingerprint ON components(fingerprint);
)sql";

// Version 2: indexes for the server's requests. Without them each list filter, its total and
// each of the stats' groupings scanned the whole table, whose rows carry the inspect report and
// metadata (a leaf page holds one or two rows), ~25 ms per scan on 10,000 files (API p99 42.5 ms
// in bench section r). models_kind and models_family answer the kind and family filters in
// their sort order and count them; models_summary covers the stats, models_search the text
// search's count, so both scan a small index instead of the table.
constexpr const char* kSchemaV2 = R"sql(
CREATE INDEX models_kind ON models(kind COLLATE NOCASE, path);
CREATE INDEX models_family ON models(
  COALESCE(NULLIF(family, ''), NULLIF(architecture, ''), kind, 'unknown') COLLATE NOCASE, size);
CREATE INDEX models_summary ON models(
  kind, family, architecture, size, scan_verdict, defect_count, error, sha256);
CREATE INDEX models_search ON models(path, title, trigger_words, architecture);
)sql";

// Each step brings the schema from version i+1 to i+2; kMigrations[0] creates version 1.
constexpr const char* kMigrations[] = {kSchemaV1, kSchemaV2};
static_assert(std::size(kMigrations) == kSchemaVersion);

}  // namespace

Result<Db> Db::open(const std::string& path, Mode mode) {
  std::error_code ec;
  if (mode != Mode::kCreate && !std::filesystem::exists(path, ec))
    return Status(ErrorCode::kNotFound,
                  "no library database here; build one with `ckptkit library index DIR`", path);
  if (mode == Mode::kCreate) {
    const auto dir = std::filesystem::path(path).parent_path();
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  }
  const int flags = mode == Mode::kReadOnly    ? SQLITE_OPEN_READONLY
                    : mode == Mode::kReadWrite ? SQLITE_OPEN_READWRITE
                                               : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  Db db(raw, path);
  if (rc != SQLITE_OK) return db.error("cannot open the library database");
  sqlite3_busy_timeout(raw, 5000);
  if (Status s = db.check_version(); !s.is_ok()) return s;
  if (mode != Mode::kReadOnly) {
    if (Status s = db.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"); !s.is_ok())
      return s;
    if (Status s = db.migrate(); !s.is_ok()) return s;
  }
  if (Status s = db.exec("PRAGMA foreign_keys=ON;"); !s.is_ok()) return s;
  return db;
}

Db::~Db() {
  if (db_) sqlite3_close_v2(db_);
}

Status Db::exec(const char* sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) == SQLITE_OK) return Status::ok();
  std::string m = msg ? msg : sqlite3_errmsg(db_);
  sqlite3_free(msg);
  return Status(ErrorCode::kIoError, "library database: " + m, path_);
}

Status Db::error(std::string_view what) const {
  const int code = db_ ? sqlite3_errcode(db_) : SQLITE_CANTOPEN;
  const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
  if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
    return Status(ErrorCode::kCorrupt,
                  fmt::format("{}: not an SQLite database, or a damaged one ({}); move it aside "
                              "and index again",
                              what, msg),
                  path_);
  return Status(ErrorCode::kIoError, fmt::format("{}: {}", what, msg), path_);
}

Status Db::check_version() {
  Stmt st(*this, "PRAGMA user_version");
  if (!st.ok() || !st.step())
    return st.ok() && !st.status().is_ok() ? st.status()
                                           : error("cannot read the library database");
  const int64_t v = st.i64(0);
  if (v > kSchemaVersion)
    return Status(ErrorCode::kUnsupported,
                  fmt::format("this library database has schema version {}, written by a newer "
                              "ckptkit; this one knows up to version {} (upgrade ckptkit, or "
                              "give another --db)",
                              v, kSchemaVersion),
                  path_);
  return Status::ok();
}

Status Db::migrate() {
  int64_t v = 0;
  {
    Stmt st(*this, "PRAGMA user_version");
    if (!st.ok() || !st.step()) return error("cannot read the schema version");
    v = st.i64(0);
  }
  while (v < kSchemaVersion) {
    if (Status s = exec("BEGIN IMMEDIATE"); !s.is_ok()) return s;
    Status s = exec(kMigrations[v]);
    if (s.is_ok()) s = exec(fmt::format("PRAGMA user_version={}", v + 1).c_str());
    if (!s.is_ok()) {
      (void)exec("ROLLBACK");
      return s;
    }
    if (Status c = exec("COMMIT"); !c.is_ok()) return c;
    ++v;
  }
  return Status::ok();
}

Stmt::Stmt(const Db& db, const char* sql) : db_(db) {
  if (sqlite3_prepare_v2(db.handle(), sql, -1, &st_, nullptr) != SQLITE_OK) {
    status_ = db.error("library database");
    st_ = nullptr;
  }
}

Stmt::~Stmt() {
  if (st_) sqlite3_finalize(st_);
}

Stmt& Stmt::bind(int i, int64_t v) {
  if (st_) sqlite3_bind_int64(st_, i, v);
  return *this;
}

Stmt& Stmt::bind(int i, std::string_view v) {
  if (st_) sqlite3_bind_text(st_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  return *this;
}

Stmt& Stmt::bind_null(int i) {
  if (st_) sqlite3_bind_null(st_, i);
  return *this;
}

Stmt& Stmt::bind_text_or_null(int i, std::string_view v) {
  return v.empty() ? bind_null(i) : bind(i, v);
}

bool Stmt::step() {
  if (!st_) return false;
  const int rc = sqlite3_step(st_);
  if (rc == SQLITE_ROW) return true;
  if (rc != SQLITE_DONE) status_ = db_.error("library database");
  return false;
}

void Stmt::reset() {
  if (!st_) return;
  sqlite3_reset(st_);
  sqlite3_clear_bindings(st_);
}

std::string_view Stmt::text(int col) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st_, col));
  if (!p) return {};
  return {p, static_cast<size_t>(sqlite3_column_bytes(st_, col))};
}

std::string default_db_path() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return std::string(x) + "/ckptkit/library.sqlite";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/ckptkit/library.sqlite";
}

}  // namespace ckptkit::library
