#include "library/indexer.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "ckptkit/hash.h"
#include "ckptkit/scan.h"
#include "cli/anatomy_report.h"
#include "cli/inspect_report.h"
#include "cli/json_writer.h"
#include "io/errors.h"
#include "library/store.h"

namespace ckptkit::library {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

/// A model file or diffusers folder found by the walk, with its identity.
struct Found {
  std::string path, root;
  bool folder = false;
  uint64_t size = 0, dev = 0, inode = 0;
  int64_t mtime_ns = 0;
  std::string error;  ///< a broken link, a file that cannot be stat'ed
};

struct ComponentRow {
  std::string role, part, prefix, detail, dtypes, fingerprint;
  uint64_t tensors = 0, parameters = 0, bytes = 0;
};

/// What the header phase learned of one file: a row of `models`.
struct Record {
  Found f;
  std::string format, kind, layout, architecture, family, variant, confidence;
  std::string evidence, dtypes, defects, metadata, report;
  uint64_t tensors = 0, parameters = 0, defect_count = 0, lora_rank = 0;
  std::string verdict, verdict_summary, title, trigger_words, lora_base;
  std::vector<ComponentRow> components;
  bool deep = false;
  std::string error;
};

struct HashRecord {
  int64_t id = 0;
  std::string path;
  std::string sha256, autov2, autov3, blake3, error;
};

int64_t mtime_ns_of(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

void fill_identity(Found& f, const struct stat& st) {
  f.size = static_cast<uint64_t>(st.st_size);
  f.dev = static_cast<uint64_t>(st.st_dev);
  f.inode = static_cast<uint64_t>(st.st_ino);
  f.mtime_ns = mtime_ns_of(st);
}

/// A diffusers folder changes when any file under it does: its size is the sum of its files,
/// its mtime the newest of them and of model_index.json.
void folder_identity(Found& f) {
  struct stat st {};
  if (::stat(f.path.c_str(), &st) != 0) {
    f.error = fmt::format("cannot stat: {}", std::strerror(errno));
    return;
  }
  fill_identity(f, st);
  f.size = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator
           it(f.path, fs::directory_options::skip_permission_denied, ec),
       end;
       !ec && it != end; it.increment(ec)) {
    struct stat fst {};
    if (::stat(it->path().c_str(), &fst) != 0 || !S_ISREG(fst.st_mode)) continue;
    f.size += static_cast<uint64_t>(fst.st_size);
    f.mtime_ns = std::max(f.mtime_ns, mtime_ns_of(fst));
  }
}

void walk(const std::string& root, std::vector<Found>& out, std::vector<std::string>& problems) {
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
  if (ec) {
    problems.push_back(fmt::format("{}: cannot list: {}", root, ec.message()));
    return;
  }
  for (fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) {
      problems.push_back(fmt::format("{}: cannot list: {}", it->path().string(), ec.message()));
      ec.clear();
      break;
    }
    const fs::directory_entry& e = *it;
    const std::string name = e.path().filename().string();
    std::error_code ec2;
    if (e.is_directory(ec2) && !e.is_symlink(ec2)) {
      if (!name.empty() && name[0] == '.') {  // .git, .cache, .trash: not models
        it.disable_recursion_pending();
        continue;
      }
      if (fs::exists(e.path() / "model_index.json", ec2)) {
        it.disable_recursion_pending();
        Found f;
        f.path = e.path().string();
        f.root = root;
        f.folder = true;
        folder_identity(f);
        out.push_back(std::move(f));
      }
      continue;
    }
    if (!is_model_file_name(name)) continue;
    Found f;
    f.path = e.path().string();
    f.root = root;
    struct stat st {};
    if (::stat(f.path.c_str(), &st) != 0) {
      struct stat lst {};
      const bool link = ::lstat(f.path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode);
      f.error =
          link ? "a broken symbolic link" : fmt::format("cannot stat: {}", std::strerror(errno));
      if (link) fill_identity(f, lst);
    } else if (!S_ISREG(st.st_mode)) {
      continue;
    } else {
      fill_identity(f, st);
    }
    out.push_back(std::move(f));
  }
}

std::string kind_of_layout(std::string_view layout) {
  if (layout == "monolithic") return "checkpoint";
  if (layout == "diffusion-model") return "diffusion model";
  if (layout == "text-encoder") return "text encoder";
  if (layout == "vae") return "VAE";
  if (layout == "lora") return "LoRA";
  if (layout == "partial") return "partial";
  return "unknown";
}

std::string meta(const std::map<std::string, std::string>& m,
                 std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (auto it = m.find(k); it != m.end() && !it->second.empty()) return it->second;
  return {};
}

/// A JSON document without the writer's newlines (rows stay small).
std::string compact(const cli::JsonWriter& w) {
  std::string s = w.str();
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

Record read_file(const Found& f, bool deep) {
  Record r;
  r.f = f;
  if (!f.error.empty()) {
    r.error = f.error;
    return r;
  }
  if (f.folder) {
    auto d = read_diffusers_folder(f.path);
    if (!d) {
      r.error = d.status().to_string();
      return r;
    }
    r.format = "diffusers";
    r.kind = "diffusers pipeline";
    r.layout = "diffusers-folder";
    r.architecture = d->architecture.empty() ? "unknown" : d->architecture;
    r.family = d->architecture;
    r.verdict = "safe";
    for (const DiffusersPart& p : d->parts) {
      ComponentRow c;
      c.role = p.name;
      c.part = p.class_name;
      c.prefix = p.name + "/";
      c.detail = p.library;
      c.bytes = p.bytes;
      c.tensors = p.files.size();
      r.components.push_back(std::move(c));
    }
    cli::JsonWriter w;
    w.begin_object();
    cli::write_diffusers_json(w, *d);
    w.end_object();
    r.report = w.str();
    for (const DiffusersPart& p : d->parts)
      for (const std::string& file : p.files)
        if (file.ends_with(".bin") || file.ends_with(".ckpt") || file.ends_with(".pt"))
          r.verdict = "unknown";  // pickled weights inside: `scan` each of them
    return r;
  }
  auto facts = cli::inspect_facts(f.path);
  if (!facts) {
    // A pickle that is not a state dict can still be judged: a malicious file must show as
    // one. It is recorded as a file of unknown kind whose defect is that it holds no model.
    ScanReport s = scan_file(f.path);
    if (!s.error.is_ok()) {
      r.error = facts.status().to_string();
      return r;
    }
    r.verdict = std::string(verdict_name(s.verdict));
    r.verdict_summary = s.summary;
    r.format = s.format;
    r.kind = "unknown";
    r.layout = "unknown";
    r.architecture = "unknown";
    cli::JsonWriter w;
    w.begin_array().begin_object();
    w.key("code").value("not-a-checkpoint");
    w.key("severity").value("error");
    w.key("message").value(facts.status().message());
    w.end_object().end_array();
    r.defects = compact(w);
    r.defect_count = 1;
    return r;
  }
  const Checkpoint& ck = facts->checked.checkpoint;
  const Anatomy& a = facts->anatomy;
  r.format = std::string(format_name(ck.format));
  r.layout = a.layout;
  r.kind = kind_of_layout(a.layout);
  r.architecture = a.architecture;
  r.family = a.layout == "lora" ? a.lora_base : a.family;
  r.variant = a.variant;
  r.confidence = a.confidence;
  r.tensors = ck.tensors.size();
  r.parameters = ck.parameter_count();
  r.report = std::move(facts->json);
  {
    cli::JsonWriter w;
    w.begin_inline_array();
    for (const std::string& e : a.evidence) w.value(e);
    w.end_array();
    r.evidence = compact(w);
  }
  {
    std::map<std::string, uint64_t> counts;
    for (const TensorInfo& t : ck.tensors) ++counts[std::string(dtype_name(t.dtype))];
    cli::JsonWriter w;
    w.begin_object();
    for (const auto& [k, n] : counts) w.key(k).value(n);
    w.end_object();
    r.dtypes = compact(w);
  }
  {
    cli::JsonWriter w;
    w.begin_array();
    for (const Defect& d : a.defects) {
      w.begin_object();
      w.key("code").value(d.code);
      w.key("severity").value(d.severity);
      w.key("message").value(d.message);
      w.end_object();
    }
    w.end_array();
    r.defects = compact(w);
    r.defect_count = a.defects.size();
  }
  {
    cli::JsonWriter w;
    w.begin_object();
    for (const auto& [k, v] : ck.metadata) w.key(k).value(v);
    w.end_object();
    r.metadata = compact(w);
  }
  if (facts->checked.scan && facts->checked.scan->error.is_ok()) {
    r.verdict = std::string(verdict_name(facts->checked.scan->verdict));
    r.verdict_summary = facts->checked.scan->summary;
  } else if (ck.format == FileFormat::kTorchZip || ck.format == FileFormat::kTorchLegacy) {
    r.verdict = "unknown";
  } else {
    r.verdict = "safe";
    r.verdict_summary = "holds only tensors and text: loading it runs no code";
  }
  // What users look for: a title, the words that trigger a LoRA, the base it was trained on.
  r.title = meta(ck.metadata, {"modelspec.title", "title", "name", "ss_output_name"});
  r.lora_base = a.lora_base;
  r.lora_rank = a.lora_rank;
  if (facts->lora) {
    const LoraTraining& t = facts->lora->training;
    if (r.title.empty()) r.title = t.output_name;
    r.trigger_words = t.trigger;
    if (r.trigger_words.empty())
      for (size_t i = 0; i < t.top_tags.size() && i < 8; ++i)
        r.trigger_words += (i ? ", " : "") + t.top_tags[i].first;
  }
  if (r.trigger_words.empty())
    r.trigger_words = meta(ck.metadata, {"modelspec.trigger_phrase", "trigger_words"});
  std::vector<std::string> prints;
  if (deep) {
    auto fp = component_fingerprints(f.path, a, {}, &ck);
    if (!fp) {
      r.error = fp.status().to_string();
      return r;
    }
    prints = std::move(*fp);
    r.deep = true;
  }
  for (size_t i = 0; i < a.components.size(); ++i) {
    const Component& c = a.components[i];
    ComponentRow row;
    row.role = std::string(role_name(c.role));
    row.part = std::string(part_kind_name(c.kind));
    row.prefix = c.prefix;
    row.detail = c.detail;
    row.tensors = c.tensors.size();
    row.parameters = c.parameters;
    row.bytes = c.bytes;
    cli::JsonWriter w;
    w.begin_object();
    for (const auto& [k, n] : c.dtypes) w.key(k).value(n);
    w.end_object();
    row.dtypes = compact(w);
    if (i < prints.size()) row.fingerprint = prints[i];
    r.components.push_back(std::move(row));
  }
  // A file rewritten while it was read gives facts of neither version: read it next time.
  struct stat st {};
  if (::stat(f.path.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) != f.size ||
      mtime_ns_of(st) != f.mtime_ns)
    r.error = "changed while being read (it is read again by the next index)";
  return r;
}

/// "indexing 120/10000 files" on stderr, redrawn by its own thread, when enabled.
class Meter {
 public:
  Meter(bool enabled, std::string label, uint64_t total, bool bytes)
      : enabled_(enabled && total > 0), label_(std::move(label)), total_(total), bytes_(bytes) {
    if (enabled_) thread_ = std::thread([this] { loop(); });
  }
  ~Meter() { finish(); }
  void add(uint64_t n) { done_.fetch_add(n, std::memory_order_relaxed); }
  void finish() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    draw();
    std::fputc('\n', stderr);
  }

 private:
  void draw() {
    const uint64_t d = done_.load();
    const std::string text = bytes_ ? fmt::format("{} / {}", human_bytes(d), human_bytes(total_))
                                    : fmt::format("{} / {} files", d, total_);
    std::fprintf(stderr, "\r%s %3.0f%%  %s\x1b[K", label_.c_str(),
                 total_ ? 100.0 * static_cast<double>(d) / static_cast<double>(total_) : 100.0,
                 text.c_str());
    std::fflush(stderr);
  }
  void loop() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      draw();
      cv_.wait_for(lock, std::chrono::milliseconds(200));
    }
  }
  bool enabled_;
  std::string label_;
  uint64_t total_;
  bool bytes_;
  std::atomic<uint64_t> done_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

/// Runs work(i) for i in [0, n) on `threads` workers; the calling thread hands finished results
/// to sink() in batches (about every 250 ms or 256 results), so each batch is one transaction.
template <typename Out, typename Work, typename Sink>
bool run_pool(size_t n, unsigned threads, const std::atomic<bool>* cancel, Work work, Sink sink) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Out> ready;
  std::atomic<size_t> next{0};
  size_t finished_workers = 0;
  auto cancelled = [&] { return cancel && cancel->load(); };
  std::vector<std::thread> pool;
  threads = std::max(1u, threads);
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      for (size_t i; !cancelled() && (i = next.fetch_add(1)) < n;) {
        Out o = work(i);
        std::lock_guard lock(mu);
        ready.push_back(std::move(o));
        if (ready.size() >= 256) cv.notify_one();
      }
      std::lock_guard lock(mu);
      ++finished_workers;
      cv.notify_one();
    });
  for (;;) {
    std::vector<Out> batch;
    bool all_done;
    {
      std::unique_lock lock(mu);
      cv.wait_for(lock, std::chrono::milliseconds(250),
                  [&] { return ready.size() >= 256 || finished_workers == pool.size(); });
      batch.swap(ready);
      all_done = finished_workers == pool.size();
    }
    if (!batch.empty()) sink(batch);
    if (all_done) {
      std::lock_guard lock(mu);
      if (ready.empty()) break;
    }
  }
  for (std::thread& t : pool) t.join();
  return !cancelled();
}

constexpr const char* kUpsert = R"sql(
INSERT INTO models (path, root, is_folder, size, mtime_ns, dev, inode, format, kind, layout,
  architecture, family, variant, confidence, evidence, dtypes, tensors, parameters, scan_verdict,
  scan_summary, defect_count, defects, title, trigger_words, lora_base, lora_rank, metadata,
  report, deep, error, indexed_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
  ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)
ON CONFLICT(path) DO UPDATE SET root=excluded.root, is_folder=excluded.is_folder,
  size=excluded.size, mtime_ns=excluded.mtime_ns, dev=excluded.dev, inode=excluded.inode,
  format=excluded.format, kind=excluded.kind, layout=excluded.layout,
  architecture=excluded.architecture, family=excluded.family, variant=excluded.variant,
  confidence=excluded.confidence, evidence=excluded.evidence, dtypes=excluded.dtypes,
  tensors=excluded.tensors, parameters=excluded.parameters, scan_verdict=excluded.scan_verdict,
  scan_summary=excluded.scan_summary, defect_count=excluded.defect_count,
  defects=excluded.defects, title=excluded.title, trigger_words=excluded.trigger_words,
  lora_base=excluded.lora_base, lora_rank=excluded.lora_rank, metadata=excluded.metadata,
  report=excluded.report, deep=excluded.deep, error=excluded.error,
  indexed_at=excluded.indexed_at, sha256=NULL, autov2=NULL, autov3=NULL, blake3=NULL,
  hash_error=NULL
RETURNING id
)sql";

Status write_records(Db& db, std::vector<Record>& batch) {
  if (Status s = db.exec("BEGIN IMMEDIATE"); !s.is_ok()) return s;
  Stmt up(db, kUpsert);
  Stmt del(db, "DELETE FROM components WHERE model_id=?1");
  Stmt comp(db,
            "INSERT INTO components (model_id, idx, role, part, prefix, detail, tensors, "
            "parameters, bytes, dtypes, fingerprint) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)");
  if (!up.ok()) return up.status();
  if (!del.ok()) return del.status();
  if (!comp.ok()) return comp.status();
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  for (const Record& r : batch) {
    up.reset();
    up.bind(1, r.f.path).bind(2, r.f.root).bind(3, int64_t{r.f.folder});
    up.bind(4, static_cast<int64_t>(r.f.size)).bind(5, r.f.mtime_ns);
    up.bind(6, static_cast<int64_t>(r.f.dev)).bind(7, static_cast<int64_t>(r.f.inode));
    up.bind_text_or_null(8, r.format).bind_text_or_null(9, r.error.empty() ? r.kind : "error");
    up.bind_text_or_null(10, r.layout).bind_text_or_null(11, r.architecture);
    up.bind_text_or_null(12, r.family).bind_text_or_null(13, r.variant);
    up.bind_text_or_null(14, r.confidence).bind_text_or_null(15, r.evidence);
    up.bind_text_or_null(16, r.dtypes);
    if (r.error.empty()) {
      up.bind(17, static_cast<int64_t>(r.tensors)).bind(18, static_cast<int64_t>(r.parameters));
    }
    up.bind_text_or_null(19, r.verdict).bind_text_or_null(20, r.verdict_summary);
    up.bind(21, static_cast<int64_t>(r.defect_count)).bind_text_or_null(22, r.defects);
    up.bind_text_or_null(23, r.title).bind_text_or_null(24, r.trigger_words);
    up.bind_text_or_null(25, r.lora_base);
    if (r.lora_rank) up.bind(26, static_cast<int64_t>(r.lora_rank));
    up.bind_text_or_null(27, r.metadata).bind_text_or_null(28, r.report);
    up.bind(29, int64_t{r.deep}).bind_text_or_null(30, r.error).bind(31, now);
    if (!up.step()) {
      (void)db.exec("ROLLBACK");
      return up.status().is_ok() ? db.error("upsert") : up.status();
    }
    const int64_t id = up.i64(0);
    while (up.step()) {
    }
    del.reset();
    del.bind(1, id);
    del.step();
    for (size_t i = 0; i < r.components.size(); ++i) {
      const ComponentRow& c = r.components[i];
      comp.reset();
      comp.bind(1, id).bind(2, static_cast<int64_t>(i)).bind(3, c.role).bind(4, c.part);
      comp.bind(5, c.prefix).bind_text_or_null(6, c.detail);
      comp.bind(7, static_cast<int64_t>(c.tensors)).bind(8, static_cast<int64_t>(c.parameters));
      comp.bind(9, static_cast<int64_t>(c.bytes)).bind_text_or_null(10, c.dtypes);
      comp.bind_text_or_null(11, c.fingerprint);
      comp.step();
      if (!comp.status().is_ok()) {
        (void)db.exec("ROLLBACK");
        return comp.status();
      }
    }
  }
  return db.exec("COMMIT");
}

/// Rows already in the index under one of the folders.
struct Known {
  int64_t id;
  uint64_t size, dev, inode;
  int64_t mtime_ns;
  bool error, deep;
};

}  // namespace

bool is_model_file_name(std::string_view name) {
  for (std::string_view ext : {".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf"})
    if (name.size() > ext.size() && name.ends_with(ext)) return true;
  return false;
}

Result<IndexStats> index_folders(const std::vector<std::string>& roots,
                                 const IndexOptions& options) {
  IndexStats stats;
  std::vector<std::string> canon;
  for (const std::string& r : roots) {
    std::error_code ec;
    fs::path p = fs::canonical(r, ec);
    if (ec || !fs::is_directory(p, ec)) {
      stats.error_lines.push_back(
          fmt::format("{}: not a folder{}", r, ec ? ": " + ec.message() : std::string()));
      continue;
    }
    canon.push_back(p.string());
  }
  if (canon.empty())
    return Status(ErrorCode::kNotFound,
                  roots.size() == 1 ? stats.error_lines.front() : "none of the folders exists");
  auto opened = Db::open(options.db_path, Db::Mode::kCreate);
  if (!opened) return opened.status();
  Db& db = *opened;
  const bool show = options.progress == ProgressMode::kAlways ||
                    (options.progress == ProgressMode::kAuto && ::isatty(2));

  // Walk; a path found under two given folders is recorded once.
  std::vector<Found> found;
  for (const std::string& root : canon) walk(root, found, stats.error_lines);
  {
    std::set<std::string> seen;
    std::erase_if(found, [&](const Found& f) { return !seen.insert(f.path).second; });
  }
  stats.found = found.size();

  // What the index has under these folders.
  std::map<std::string, Known> known;
  {
    Stmt st(db,
            "SELECT id, path, size, dev, inode, mtime_ns, error IS NOT NULL, deep FROM models "
            "WHERE substr(path, 1, length(?1)) = ?1");
    for (const std::string& root : canon) {
      st.reset();
      st.bind(1, root + "/");
      while (st.step())
        known.emplace(
            std::string(st.text(1)),
            Known{st.i64(0), static_cast<uint64_t>(st.i64(2)), static_cast<uint64_t>(st.i64(3)),
                  static_cast<uint64_t>(st.i64(4)), st.i64(5), st.i64(6) != 0, st.i64(7) != 0});
      if (!st.status().is_ok()) return st.status();
    }
  }
  std::vector<const Found*> todo;
  std::set<std::string> present;
  for (const Found& f : found) present.insert(f.path);
  // Rows whose file is gone, by identity: a file that moved keeps its row.
  std::map<std::tuple<uint64_t, uint64_t, uint64_t, int64_t>, std::pair<std::string, int64_t>> gone;
  for (const auto& [path, k] : known)
    if (!present.count(path) && !k.error)
      gone.emplace(std::make_tuple(k.dev, k.inode, k.size, k.mtime_ns), std::make_pair(path, k.id));
  std::vector<std::tuple<int64_t, std::string, std::string>> moves;  // id, new path, root
  for (const Found& f : found) {
    auto it = known.find(f.path);
    const bool same = it != known.end() && f.error.empty() && !it->second.error &&
                      it->second.size == f.size && it->second.dev == f.dev &&
                      it->second.inode == f.inode && it->second.mtime_ns == f.mtime_ns &&
                      (!options.deep || it->second.deep || f.folder);
    if (same) {
      ++stats.unchanged;
      continue;
    }
    if (it == known.end() && f.error.empty()) {
      auto g = gone.find(std::make_tuple(f.dev, f.inode, f.size, f.mtime_ns));
      if (g != gone.end() && (!options.deep || known.at(g->second.first).deep)) {
        moves.emplace_back(g->second.second, f.path, f.root);
        gone.erase(g);
        ++stats.moved;
        continue;
      }
    }
    todo.push_back(&f);
  }
  {
    if (Status s = db.exec("BEGIN IMMEDIATE"); !s.is_ok()) return s;
    Stmt mv(db, "UPDATE models SET path=?2, root=?3 WHERE id=?1");
    for (const auto& [id, path, root] : moves) {
      mv.reset();
      mv.bind(1, id).bind(2, path).bind(3, root);
      mv.step();
    }
    std::set<int64_t> moved_ids;
    for (const auto& m : moves) moved_ids.insert(std::get<0>(m));
    Stmt rm(db, "DELETE FROM models WHERE path=?1");
    for (const auto& [path, k] : known) {
      if (present.count(path)) continue;
      if (moved_ids.count(k.id)) continue;
      rm.reset();
      rm.bind(1, path);
      rm.step();
      ++stats.removed;
    }
    if (!mv.status().is_ok()) return mv.status();
    if (!rm.status().is_ok()) return rm.status();
    if (Status s = db.exec("COMMIT"); !s.is_ok()) return s;
  }

  // Header phase.
  const auto t0 = Clock::now();
  Status write_error;
  {
    Meter meter(show, "indexing", todo.size(), false);
    const bool complete = run_pool<Record>(
        todo.size(), options.threads, options.cancel,
        [&](size_t i) {
          Record r = read_file(*todo[i], options.deep);
          meter.add(1);
          return r;
        },
        [&](std::vector<Record>& batch) {
          for (const Record& r : batch) {
            ++stats.read;
            if (!r.error.empty()) {
              ++stats.errors;
              stats.error_lines.push_back(fmt::format("{}: {}", r.f.path, r.error));
            }
          }
          if (write_error.is_ok()) write_error = write_records(db, batch);
        });
    stats.cancelled = !complete;
  }
  if (!write_error.is_ok()) return write_error;
  stats.header_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (stats.cancelled || !options.hashes) return stats;

  // Hash phase: every file of these folders without hashes yet.
  struct Job {
    int64_t id;
    std::string path;
    uint64_t size;
    int64_t mtime_ns;
  };
  std::vector<Job> jobs;
  {
    Stmt st(db,
            "SELECT id, path, size, mtime_ns FROM models WHERE substr(path, 1, length(?1)) = ?1 "
            "AND sha256 IS NULL AND hash_error IS NULL AND error IS NULL AND is_folder = 0");
    for (const std::string& root : canon) {
      st.reset();
      st.bind(1, root + "/");
      while (st.step())
        jobs.push_back(
            {st.i64(0), std::string(st.text(1)), static_cast<uint64_t>(st.i64(2)), st.i64(3)});
      if (!st.status().is_ok()) return st.status();
    }
  }
  uint64_t total = 0;
  for (const Job& j : jobs) total += j.size;
  const auto t1 = Clock::now();
  {
    Meter meter(show, "hashing", total, true);
    HashOptions ho;
    ho.algos = {HashAlgo::kSha256, HashAlgo::kAutoV2, HashAlgo::kAutoV3, HashAlgo::kBlake3};
    ho.parallel_files = 1;
    ho.buffer_bytes = 2ull << 20;  // 8 of them per file being hashed: memory stays small
    const bool complete = run_pool<HashRecord>(
        jobs.size(), options.threads, options.cancel,
        [&](size_t i) {
          const Job& j = jobs[i];
          HashRecord h;
          h.id = j.id;
          h.path = j.path;
          FileHashes fh = hash_file(j.path, ho);
          meter.add(j.size);
          if (!fh.error.is_ok()) {
            h.error = fh.error.to_string();
            return h;
          }
          for (const HashValue& v : fh.values) {
            if (v.algo == HashAlgo::kSha256) h.sha256 = v.hex;
            if (v.algo == HashAlgo::kAutoV2) h.autov2 = v.hex;
            if (v.algo == HashAlgo::kAutoV3) h.autov3 = v.hex;
            if (v.algo == HashAlgo::kBlake3) h.blake3 = v.hex;
          }
          struct stat st {};
          if (::stat(j.path.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) != j.size ||
              mtime_ns_of(st) != j.mtime_ns)
            h = HashRecord{j.id, j.path, {}, {}, {}, {}, "changed while being hashed"};
          return h;
        },
        [&](std::vector<HashRecord>& batch) {
          if (!write_error.is_ok()) return;
          if (write_error = db.exec("BEGIN IMMEDIATE"); !write_error.is_ok()) return;
          Stmt up(db,
                  "UPDATE models SET sha256=?2, autov2=?3, autov3=?4, blake3=?5, hash_error=?6 "
                  "WHERE id=?1");
          for (const HashRecord& h : batch) {
            up.reset();
            up.bind(1, h.id).bind_text_or_null(2, h.sha256).bind_text_or_null(3, h.autov2);
            up.bind_text_or_null(4, h.autov3).bind_text_or_null(5, h.blake3);
            up.bind_text_or_null(6, h.error);
            up.step();
            if (h.error.empty())
              ++stats.hashed;
            else {
              ++stats.errors;
              stats.error_lines.push_back(fmt::format("{}: hash: {}", h.path, h.error));
            }
          }
          write_error = up.status().is_ok() ? db.exec("COMMIT") : up.status();
        });
    stats.cancelled = !complete;
  }
  if (!write_error.is_ok()) return write_error;
  stats.hash_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  return stats;
}

}  // namespace ckptkit::library
