#include "library/queries.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "cli/json_writer.h"

namespace ckptkit::library {
namespace {

constexpr const char* kRowColumns =
    "id, path, format, kind, architecture, family, variant, scan_verdict, title, trigger_words, "
    "lora_base, sha256, autov2, error, size, parameters, defect_count";

ModelRow read_row(const Stmt& st) {
  ModelRow r;
  r.id = st.i64(0);
  r.path = st.text(1);
  r.format = st.text(2);
  r.kind = st.text(3);
  r.architecture = st.text(4);
  r.family = st.text(5);
  r.variant = st.text(6);
  r.verdict = st.text(7);
  r.title = st.text(8);
  r.trigger_words = st.text(9);
  r.lora_base = st.text(10);
  r.sha256 = st.text(11);
  r.autov2 = st.text(12);
  r.error = st.text(13);
  r.size = static_cast<uint64_t>(st.i64(14));
  r.parameters = static_cast<uint64_t>(st.i64(15));
  r.defects = static_cast<uint64_t>(st.i64(16));
  return r;
}

}  // namespace

void write_model_row(cli::JsonWriter& w, const ModelRow& r) {
  w.begin_object();
  w.key("id").value(static_cast<uint64_t>(r.id));
  w.key("path").value(r.path);
  w.key("name").value(std::filesystem::path(r.path).filename().string());
  w.key("format").value(r.format);
  w.key("kind").value(r.kind);
  w.key("architecture").value(r.architecture);
  w.key("family").value(r.family);
  w.key("variant").value(r.variant);
  w.key("size").value(r.size);
  w.key("parameters").value(r.parameters);
  w.key("scan_verdict").value(r.verdict);
  w.key("defects").value(r.defects);
  w.key("title").value(r.title);
  w.key("trigger_words").value(r.trigger_words);
  w.key("lora_base").value(r.lora_base);
  w.key("sha256").value(r.sha256);
  w.key("autov2").value(r.autov2);
  w.key("error").value(r.error);
  w.end_object();
}

namespace {

std::string like_pattern(std::string_view text) {
  std::string p = "%";
  for (char c : text) {
    if (c == '%' || c == '_' || c == '\\') p += '\\';
    p += c;
  }
  return p + "%";
}

/// JSON stored by the indexer (its own JsonWriter output), or `fallback` when NULL.
void raw_or(cli::JsonWriter& w, std::string_view json, const char* fallback) {
  w.raw(json.empty() ? std::string_view(fallback) : json);
}

}  // namespace

Result<std::vector<ModelRow>> list_models(const Db& db, const ModelFilter& f, uint64_t* total) {
  std::string where = " WHERE 1";
  std::vector<std::string> args;
  auto eq = [&](const char* col, const std::string& v) {
    if (v.empty()) return;
    args.push_back(v);
    where += fmt::format(" AND {} = ?{} COLLATE NOCASE", col, args.size());
  };
  eq("kind", f.kind);
  eq("architecture", f.architecture);
  eq("format", f.format);
  eq("COALESCE(NULLIF(family, ''), NULLIF(architecture, ''), kind, 'unknown')", f.family);
  if (f.unsafe) where += " AND scan_verdict IS NOT NULL AND scan_verdict != 'safe'";
  if (f.defects) where += " AND defect_count > 0";
  if (f.errors) where += " AND error IS NOT NULL";
  if (!f.search.empty()) {
    args.push_back(like_pattern(f.search));
    const size_t n = args.size();
    where += fmt::format(
        " AND (path LIKE ?{0} ESCAPE '\\' OR title LIKE ?{0} ESCAPE '\\' OR trigger_words LIKE "
        "?{0} ESCAPE '\\' OR architecture LIKE ?{0} ESCAPE '\\')",
        n);
  }
  static const std::map<std::string, std::string, std::less<>> kSort = {
      {"path", "path"},
      {"size", "size"},
      {"kind", "kind"},
      {"architecture", "architecture"},
      {"format", "format"},
      {"parameters", "parameters"},
      {"verdict", "scan_verdict"},
      {"defects", "defect_count"},
      {"name", "path"},
      {"family", "family"}};
  auto sort = kSort.find(f.sort);
  if (sort == kSort.end())
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("cannot sort by '{}' (path, size, kind, architecture, format, "
                              "parameters, verdict, defects)",
                              f.sort));
  std::string sql = fmt::format("SELECT {} FROM models{} ORDER BY {} {}, path", kRowColumns, where,
                                sort->second, f.descending ? "DESC" : "ASC");
  if (f.limit > 0) sql += fmt::format(" LIMIT {} OFFSET {}", f.limit, f.offset);
  Stmt st(db, sql.c_str());
  if (!st.ok()) return st.status();
  for (size_t i = 0; i < args.size(); ++i) st.bind(static_cast<int>(i + 1), args[i]);
  std::vector<ModelRow> rows;
  while (st.step()) rows.push_back(read_row(st));
  if (!st.status().is_ok()) return st.status();
  if (total) {
    *total = rows.size();
    if (f.limit > 0) {
      Stmt c(db, ("SELECT count(*) FROM models" + where).c_str());
      for (size_t i = 0; i < args.size(); ++i) c.bind(static_cast<int>(i + 1), args[i]);
      if (c.step()) *total = static_cast<uint64_t>(c.i64(0));
    }
  }
  return rows;
}

std::string models_json(const std::vector<ModelRow>& rows, uint64_t total) {
  cli::JsonWriter w;
  w.begin_object();
  w.key("total").value(total);
  w.key("count").value(static_cast<uint64_t>(rows.size()));
  w.key("models").begin_array();
  for (const ModelRow& r : rows) write_model_row(w, r);
  w.end_array();
  w.end_object();
  return w.str();
}

Result<std::optional<int64_t>> find_model(const Db& db, const std::string& path) {
  std::error_code ec;
  std::vector<std::string> candidates = {path};
  const auto abs = std::filesystem::absolute(path, ec);
  if (!ec) candidates.push_back(abs.lexically_normal().string());
  const auto canon = std::filesystem::weakly_canonical(path, ec);
  if (!ec) candidates.push_back(canon.string());
  Stmt st(db, "SELECT id FROM models WHERE path = ?1");
  for (const std::string& c : candidates) {
    st.reset();
    st.bind(1, c);
    if (st.step()) return std::optional<int64_t>(st.i64(0));
    if (!st.status().is_ok()) return st.status();
  }
  return std::optional<int64_t>();
}

Result<std::optional<std::string>> model_json(const Db& db, int64_t id) {
  Stmt st(db, fmt::format("SELECT {}, root, is_folder, mtime_ns, layout, confidence, evidence, "
                          "dtypes, tensors, scan_summary, defects, lora_rank, metadata, report, "
                          "deep, autov3, blake3, hash_error FROM models WHERE id = ?1",
                          kRowColumns)
                  .c_str());
  st.bind(1, id);
  if (!st.step()) {
    if (!st.status().is_ok()) return st.status();
    return std::optional<std::string>();
  }
  const ModelRow r = read_row(st);
  cli::JsonWriter w;
  w.begin_object();
  w.key("model");
  write_model_row(w, r);
  constexpr int c = 17;
  w.key("root").value(st.text(c));
  w.key("is_folder").value(st.i64(c + 1) != 0);
  w.key("mtime_ns").value(static_cast<uint64_t>(st.i64(c + 2)));
  w.key("layout").value(st.text(c + 3));
  w.key("confidence").value(st.text(c + 4));
  w.key("evidence");
  raw_or(w, st.text(c + 5), "[]");
  w.key("dtypes");
  raw_or(w, st.text(c + 6), "{}");
  w.key("tensors").value(static_cast<uint64_t>(st.i64(c + 7)));
  w.key("scan_summary").value(st.text(c + 8));
  w.key("defect_list");
  raw_or(w, st.text(c + 9), "[]");
  w.key("lora_rank").value(static_cast<uint64_t>(st.i64(c + 10)));
  w.key("metadata");
  raw_or(w, st.text(c + 11), "{}");
  w.key("deep").value(st.i64(c + 13) != 0);
  w.key("hashes").begin_object();
  w.key("sha256").value(r.sha256);
  w.key("autov2").value(r.autov2);
  w.key("autov3").value(st.text(c + 14));
  w.key("blake3").value(st.text(c + 15));
  w.key("error").value(st.text(c + 16));
  w.end_object();
  const std::string report(st.text(c + 12));
  Stmt cs(db,
          "SELECT role, part, prefix, detail, tensors, parameters, bytes, dtypes, fingerprint, "
          "(SELECT count(DISTINCT o.model_id) FROM components o WHERE o.fingerprint = "
          "components.fingerprint AND o.model_id != components.model_id) FROM components "
          "WHERE model_id = ?1 ORDER BY idx");
  cs.bind(1, id);
  w.key("components").begin_array();
  while (cs.step()) {
    w.begin_object();
    w.key("role").value(cs.text(0));
    w.key("part").value(cs.text(1));
    w.key("prefix").value(cs.text(2));
    w.key("detail").value(cs.text(3));
    w.key("tensors").value(static_cast<uint64_t>(cs.i64(4)));
    w.key("parameters").value(static_cast<uint64_t>(cs.i64(5)));
    w.key("bytes").value(static_cast<uint64_t>(cs.i64(6)));
    w.key("dtypes");
    raw_or(w, cs.text(7), "{}");
    w.key("fingerprint").value(cs.text(8));
    w.key("shared_with").value(static_cast<uint64_t>(cs.i64(9)));
    w.end_object();
  }
  w.end_array();
  if (!cs.status().is_ok()) return cs.status();
  w.key("inspect");
  raw_or(w, report, "null");
  w.end_object();
  return std::optional<std::string>(w.str());
}

Result<Dupes> find_dupes(const Db& db) {
  Dupes d;
  {
    Stmt st(db,
            "SELECT sha256, size, id, path, dev, inode FROM models WHERE sha256 IN (SELECT "
            "sha256 FROM models WHERE sha256 IS NOT NULL GROUP BY sha256 HAVING count(*) > 1) "
            "ORDER BY size DESC, sha256, path");
    std::map<std::string, std::set<std::pair<int64_t, int64_t>>> inodes;
    while (st.step()) {
      const std::string key(st.text(0));
      if (d.files.empty() || d.files.back().key != key) {
        d.files.push_back({key, "file", static_cast<uint64_t>(st.i64(1)), 0, {}});
      }
      d.files.back().members.emplace_back(st.i64(2), std::string(st.text(3)));
      inodes[key].emplace(st.i64(4), st.i64(5));
    }
    if (!st.status().is_ok()) return st.status();
    // Hard links of one file share their bytes already: only distinct inodes cost space.
    for (DupeGroup& g : d.files) g.saved = (inodes[g.key].size() - 1) * g.bytes;
  }
  {
    Stmt st(db,
            "SELECT c.fingerprint, c.role || ' ' || c.part, c.bytes, m.id, m.path, c.prefix "
            "FROM components c JOIN models m ON m.id = c.model_id WHERE c.fingerprint IN "
            "(SELECT fingerprint FROM components WHERE fingerprint IS NOT NULL GROUP BY "
            "fingerprint HAVING count(DISTINCT model_id) > 1) ORDER BY c.bytes DESC, "
            "c.fingerprint, m.path");
    while (st.step()) {
      const std::string key(st.text(0));
      if (d.components.empty() || d.components.back().key != key)
        d.components.push_back(
            {key, std::string(st.text(1)), static_cast<uint64_t>(st.i64(2)), 0, {}});
      const std::string prefix(st.text(5));
      d.components.back().members.emplace_back(
          st.i64(3), std::string(st.text(4)) + (prefix.empty() ? "" : " [" + prefix + "]"));
    }
    if (!st.status().is_ok()) return st.status();
    for (DupeGroup& g : d.components) g.saved = (g.members.size() - 1) * g.bytes;
  }
  Stmt deep(db, "SELECT EXISTS (SELECT 1 FROM models WHERE deep = 1)");
  d.deep = deep.step() && deep.i64(0) != 0;
  return d;
}

std::string dupes_json(const Dupes& d) {
  cli::JsonWriter w;
  auto groups = [&](const std::vector<DupeGroup>& gs, const char* key_name) {
    w.begin_array();
    for (const DupeGroup& g : gs) {
      w.begin_object();
      w.key(key_name).value(g.key);
      w.key("what").value(g.what);
      w.key("bytes").value(g.bytes);
      w.key("saved_bytes").value(g.saved);
      w.key("members").begin_array();
      for (const auto& [id, path] : g.members) {
        w.begin_object();
        w.key("id").value(static_cast<uint64_t>(id));
        w.key("path").value(path);
        w.end_object();
      }
      w.end_array();
      w.end_object();
    }
    w.end_array();
  };
  uint64_t files_saved = 0, comp_saved = 0;
  for (const DupeGroup& g : d.files) files_saved += g.saved;
  for (const DupeGroup& g : d.components) comp_saved += g.saved;
  w.begin_object();
  w.key("files");
  groups(d.files, "sha256");
  w.key("files_saved_bytes").value(files_saved);
  w.key("components");
  groups(d.components, "fingerprint");
  w.key("components_saved_bytes").value(comp_saved);
  w.key("fingerprints_indexed").value(d.deep);
  w.end_object();
  return w.str();
}

Result<std::string> stats_json(const Db& db) {
  // One scan (of the models_summary index), grouped by family and kind together; the two
  // groupings and the totals are summed here. Three scans of the table were ~75 ms of the
  // server's tail on 10,000 files.
  Stmt st(db,
          "SELECT COALESCE(NULLIF(family, ''), NULLIF(architecture, ''), kind, 'unknown'), "
          "COALESCE(kind, 'unknown'), count(*), total(size), sum(scan_verdict IS NOT NULL AND "
          "scan_verdict != 'safe'), sum(defect_count > 0), sum(error IS NOT NULL), sum(sha256 IS "
          "NOT NULL) FROM models GROUP BY 1, 2");
  if (!st.ok()) return st.status();
  struct Sum {
    uint64_t files = 0, bytes = 0;
  };
  std::map<std::string, Sum> by_family, by_kind;
  uint64_t totals[6] = {};
  while (st.step()) {
    const auto files = static_cast<uint64_t>(st.i64(2));
    const auto bytes = static_cast<uint64_t>(st.i64(3));
    for (auto [m, col] : {std::pair{&by_family, 0}, std::pair{&by_kind, 1}}) {
      Sum& g = (*m)[std::string(st.text(col))];
      g.files += files;
      g.bytes += bytes;
    }
    totals[0] += files;
    totals[1] += bytes;
    for (int i = 2; i < 6; ++i) totals[i] += static_cast<uint64_t>(st.i64(i + 2));
  }
  if (!st.status().is_ok()) return st.status();
  cli::JsonWriter w;
  w.begin_object();
  for (auto [name, m] : {std::pair{"by_family", &by_family}, std::pair{"by_kind", &by_kind}}) {
    std::vector<std::pair<std::string, Sum>> groups(m->begin(), m->end());
    std::stable_sort(groups.begin(), groups.end(),
                     [](const auto& x, const auto& y) { return x.second.bytes > y.second.bytes; });
    w.key(name).begin_array();
    for (const auto& [g, sum] : groups) {
      w.begin_object();
      w.key("name").value(g);
      w.key("files").value(sum.files);
      w.key("bytes").value(sum.bytes);
      w.end_object();
    }
    w.end_array();
  }
  w.key("files").value(totals[0]);
  w.key("bytes").value(totals[1]);
  w.key("unsafe").value(totals[2]);
  w.key("with_defects").value(totals[3]);
  w.key("errors").value(totals[4]);
  w.key("hashed").value(totals[5]);
  w.end_object();
  return w.str();
}

std::string base_family(std::string_view family, std::string_view arch) {
  if (!family.empty()) return std::string(family);
  if (arch.starts_with("sd1")) return "sd1";
  if (arch.starts_with("sd2")) return "sd2";
  if (arch.starts_with("sdxl-refiner")) return "sdxl-refiner";
  if (arch.starts_with("sdxl") || arch.starts_with("ssd-1b") || arch.starts_with("segmind") ||
      arch.starts_with("playground"))
    return "sdxl";
  if (arch.starts_with("sd3")) return "sd3";
  if (arch.starts_with("flux")) return "flux";
  return {};
}

Result<std::vector<ModelRow>> loras_for(const Db& db, const std::string& family) {
  Stmt st(db, fmt::format("SELECT {} FROM models WHERE kind = 'LoRA' AND (lora_base = ?1 OR "
                          "(?1 = 'sdxl-refiner' AND lora_base = 'sdxl')) ORDER BY path",
                          kRowColumns)
                  .c_str());
  st.bind(1, family);
  std::vector<ModelRow> rows;
  while (st.step()) rows.push_back(read_row(st));
  if (!st.status().is_ok()) return st.status();
  return rows;
}

}  // namespace ckptkit::library
