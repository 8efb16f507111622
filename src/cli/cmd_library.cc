// `ckptkit library index|list|dupes|show|loras|serve` — the model library (docs/library.md):
// what `inspect` knows of every model file under some folders, kept in SQLite, queried here or
// browsed in a local web page.
#include <fmt/format.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>

#include "cli/app.h"
#include "cli/commands.h"
#include "cli/inspect_report.h"
#include "cli/json_writer.h"
#include "io/errors.h"
#include "library/indexer.h"
#include "library/queries.h"
#include "library/server.h"
#include "library/store.h"

namespace ckptkit::cli {
namespace {

std::atomic<bool> g_stop{false};

void on_stop_signal(int) { g_stop.store(true); }

std::string db_or_default(const std::string& db) {
  return db.empty() ? library::default_db_path() : db;
}

void add_db_option(CLI::App& sub, std::string& db) {
  sub.add_option("--db", db,
                 "the library database (default: $XDG_CACHE_HOME/ckptkit/library.sqlite or "
                 "~/.cache/ckptkit/library.sqlite)");
}

Result<library::Db> open_existing(const std::string& db) {
  return library::Db::open(db_or_default(db), library::Db::Mode::kReadWrite);
}

std::string shorten(std::string_view s, size_t n) {
  if (s.size() <= n) return std::string(s);
  return std::string(s.substr(0, n - 1)) + "…";
}

void print_rows(const std::vector<library::ModelRow>& rows) {
  std::string out;
  for (const library::ModelRow& r : rows) {
    std::string flags;
    if (!r.error.empty())
      flags = "  ERROR: " + shorten(r.error, 80);
    else if (!r.verdict.empty() && r.verdict != "safe")
      flags = "  " + r.verdict;
    if (r.defects) flags += fmt::format("  {} defect{}", r.defects, r.defects == 1 ? "" : "s");
    out += fmt::format("{:<18} {:<18} {:>10}  {}{}\n", shorten(r.kind, 18),
                       shorten(r.architecture.empty() ? "-" : r.architecture, 18),
                       human_bytes(r.size), r.path, flags);
  }
  print_out(out);
}

Runner setup_index(CLI::App& sub) {
  struct Opts {
    std::vector<std::string> dirs;
    std::string db, progress = "auto";
    bool deep = false, no_hash = false, json = false;
    unsigned threads = 2;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("DIR", o->dirs, "folders to index (e.g. ComfyUI/models)")->required();
  add_db_option(sub, o->db);
  sub.add_flag("--deep", o->deep,
               "also fingerprint every component (reads all tensors): finds the same VAE or "
               "text encoder inside different files (`library dupes`)");
  sub.add_flag("--no-hash", o->no_hash, "skip the hash phase (SHA-256, AutoV2, AutoV3, BLAKE3)");
  sub.add_option("-j,--threads", o->threads, "files read at once")->default_val(2);
  sub.add_option("--progress", o->progress,
                 "progress on stderr: auto (when a terminal), always, never")
      ->default_str("auto");
  sub.add_flag("--json", o->json, "machine-readable summary");
  sub.footer(
      "Records every .safetensors, .ckpt/.pt/.pth/.bin, .gguf file and diffusers folder under\n"
      "the folders: what `inspect --json` says of it (kind, architecture, components, dtypes,\n"
      "defects, scan verdict, title, trigger words, a LoRA's base), then its hashes. A file\n"
      "whose device, inode, size and mtime are unchanged is not read again; a moved file keeps\n"
      "its row; files that are gone leave the index. Ctrl-C keeps what is committed.\n"
      "Exit status: 0 all read, 1 some files could not be read (recorded with the reason),\n"
      "2 nothing could be done.\n\n"
      "Examples:\n"
      "  ckptkit library index ~/ComfyUI/models\n"
      "  ckptkit library index --deep --db lib.sqlite models/ more-models/");
  return [o] {
    library::IndexOptions io;
    io.db_path = db_or_default(o->db);
    io.deep = o->deep;
    io.hashes = !o->no_hash;
    io.threads = std::max(1u, o->threads);
    io.progress = o->progress == "always"  ? ProgressMode::kAlways
                  : o->progress == "never" ? ProgressMode::kNever
                                           : ProgressMode::kAuto;
    Capture* capture = current_capture();
    if (capture != nullptr) {
      // In-process (the Python module): the caller's signal handlers stay; it cancels through
      // its monitor, and nothing is drawn or printed on stderr.
      io.progress = ProgressMode::kNever;
      static const std::atomic<bool> never{false};
      io.cancel = capture->monitor != nullptr ? &capture->monitor->cancel : &never;
    } else {
      g_stop.store(false);
      io.cancel = &g_stop;
      struct sigaction sa {};
      sa.sa_handler = on_stop_signal;
      sigemptyset(&sa.sa_mask);
      for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
    }
    auto stats = library::index_folders(o->dirs, io);
    if (!stats) return report_error(stats.status());
    if (capture == nullptr)
      for (const std::string& line : stats->error_lines)
        std::fprintf(stderr, "ckptkit: %s\n", line.c_str());
    if (o->json) {
      JsonWriter w;
      w.begin_object();
      w.key("db").value(io.db_path);
      w.key("found").value(stats->found);
      w.key("read").value(stats->read);
      w.key("unchanged").value(stats->unchanged);
      w.key("moved").value(stats->moved);
      w.key("removed").value(stats->removed);
      w.key("hashed").value(stats->hashed);
      w.key("errors").value(stats->errors);
      w.key("interrupted").value(stats->cancelled);
      w.key("error_messages").begin_array();
      for (const std::string& line : stats->error_lines) w.value(line);
      w.end_array();
      w.key("header_seconds").value(stats->header_seconds);
      w.key("hash_seconds").value(stats->hash_seconds);
      w.end_object();
      print_out(w.str());
    } else {
      print_out(fmt::format(
          "{}: {} found, {} read, {} unchanged, {} moved, {} removed, {} hashed, {} errors\n",
          io.db_path, stats->found, stats->read, stats->unchanged, stats->moved, stats->removed,
          stats->hashed, stats->errors));
    }
    if (stats->cancelled) {
      constexpr const char* kInterrupted =
          "interrupted: what was done is kept; index again to finish";
      if (capture != nullptr) return report_error(Status(ErrorCode::kCancelled, kInterrupted));
      std::fprintf(stderr, "ckptkit: %s\n", kInterrupted);
      return kExitError;
    }
    return stats->errors ? kExitProblems : kExitOk;
  };
}

Runner setup_list(CLI::App& sub) {
  struct Opts {
    std::string db;
    library::ModelFilter f;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  add_db_option(sub, o->db);
  sub.add_option("--kind", o->f.kind,
                 "checkpoint, diffusion model, text encoder, VAE, LoRA, partial, diffusers "
                 "pipeline, error, unknown");
  sub.add_option("--arch", o->f.architecture, "architecture (sdxl-base, flux1-dev, clip-l, …)");
  sub.add_option("--family", o->f.family, "family (sd1, sdxl, flux, …; a LoRA's base)");
  sub.add_option("--format", o->f.format, "safetensors, torch-zip, torch-legacy, gguf, diffusers");
  sub.add_flag("--unsafe", o->f.unsafe, "only files whose scan verdict is not safe");
  sub.add_flag("--defects", o->f.defects, "only files with defects");
  sub.add_flag("--errors", o->f.errors, "only files that could not be read");
  sub.add_option("--search", o->f.search, "text in the path, title, trigger words or architecture");
  sub.add_option("--sort", o->f.sort,
                 "path, size, kind, architecture, format, parameters, verdict, defects")
      ->default_str("path");
  sub.add_flag("--desc", o->f.descending, "largest first");
  sub.add_flag("--json", o->json, "machine-readable output");
  return [o] {
    auto db = open_existing(o->db);
    if (!db) return report_error(db.status());
    uint64_t total = 0;
    auto rows = library::list_models(*db, o->f, &total);
    if (!rows) return report_error(rows.status());
    if (o->json)
      print_out(library::models_json(*rows, total));
    else
      print_rows(*rows);
    return kExitOk;
  };
}

Runner setup_dupes(CLI::App& sub) {
  struct Opts {
    std::string db;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  add_db_option(sub, o->db);
  sub.add_flag("--json", o->json, "machine-readable output");
  sub.footer(
      "Identical files (same SHA-256; hard links of one file save nothing) and, after\n"
      "`index --deep`, identical components inside different files (the same VAE baked into\n"
      "many checkpoints), with the bytes that keeping one copy (`split`) would save.");
  return [o] {
    auto db = open_existing(o->db);
    if (!db) return report_error(db.status());
    auto d = library::find_dupes(*db);
    if (!d) return report_error(d.status());
    if (o->json) {
      print_out(library::dupes_json(*d));
      return kExitOk;
    }
    std::string out;
    uint64_t saved = 0;
    for (const library::DupeGroup& g : d->files) {
      out += fmt::format("identical files, {} each, {} to save (sha256 {}):\n",
                         human_bytes(g.bytes), human_bytes(g.saved), g.key.substr(0, 16));
      for (const auto& m : g.members) out += "  " + m.second + "\n";
      saved += g.saved;
    }
    for (const library::DupeGroup& g : d->components) {
      out += fmt::format("identical {}, {} each, {} that split would save:\n", g.what,
                         human_bytes(g.bytes), human_bytes(g.saved));
      for (const auto& m : g.members) out += "  " + m.second + "\n";
      saved += g.saved;
    }
    if (d->files.empty() && d->components.empty()) out += "no duplicates\n";
    if (!d->deep)
      out += "(components are compared after `ckptkit library index --deep`)\n";
    else
      out += fmt::format("{} in all\n", human_bytes(saved));
    print_out(out);
    return kExitOk;
  };
}

Runner setup_show(CLI::App& sub) {
  struct Opts {
    std::string db, file;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("FILE", o->file, "an indexed file (or diffusers folder)")->required();
  add_db_option(sub, o->db);
  sub.add_flag("--json", o->json, "machine-readable output (with the inspect report)");
  return [o] {
    auto db = open_existing(o->db);
    if (!db) return report_error(db.status());
    auto id = library::find_model(*db, o->file);
    if (!id) return report_error(id.status());
    if (!*id)
      return report_error(
          Status(ErrorCode::kNotFound, "not in the library (index its folder)", o->file));
    auto doc = library::model_json(*db, **id);
    if (!doc) return report_error(doc.status());
    if (o->json) {
      print_out(**doc);
      return kExitOk;
    }
    library::ModelFilter none;
    auto rows = library::list_models(*db, none);
    if (!rows) return report_error(rows.status());
    for (const library::ModelRow& r : *rows) {
      if (r.id != **id) continue;
      std::string out;
      auto line = [&](std::string_view k, std::string_view v) {
        if (!v.empty()) out += fmt::format("{:<14}{}\n", k, v);
      };
      line("file", r.path);
      line("kind", r.kind);
      line("architecture", r.architecture + (r.variant.empty() ? "" : " (" + r.variant + ")"));
      line("format", r.format);
      line("size", human_bytes(r.size));
      if (r.parameters) line("parameters", short_count(r.parameters));
      line("safety", r.verdict);
      if (r.defects) line("defects", std::to_string(r.defects));
      line("title", r.title);
      line("trigger words", r.trigger_words);
      line("LoRA base", r.lora_base);
      line("sha256", r.sha256);
      line("AutoV2", r.autov2);
      line("error", r.error);
      out += "(--json has the components, hashes, metadata and inspect's report)\n";
      print_out(out);
    }
    return kExitOk;
  };
}

Runner setup_loras(CLI::App& sub) {
  struct Opts {
    std::string db, model;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  add_db_option(sub, o->db);
  sub.add_option("--for", o->model, "a checkpoint or diffusion model (indexed or not)")->required();
  sub.add_flag("--json", o->json, "machine-readable output");
  return [o] {
    auto db = open_existing(o->db);
    if (!db) return report_error(db.status());
    std::string family, arch;
    auto id = library::find_model(*db, o->model);
    if (!id) return report_error(id.status());
    if (*id) {
      library::ModelFilter all;
      auto rows = library::list_models(*db, all);
      if (!rows) return report_error(rows.status());
      for (const auto& r : *rows)
        if (r.id == **id) family = r.family, arch = r.architecture;
    } else {
      auto facts = inspect_facts(o->model);
      if (!facts) return report_error(facts.status());
      family = facts->anatomy.family;
      arch = facts->anatomy.architecture;
    }
    const std::string base = library::base_family(family, arch);
    if (base.empty())
      return report_error(Status(ErrorCode::kInvalidArgument,
                                 fmt::format("{} is not a model LoRAs are made for", arch),
                                 o->model));
    auto rows = library::loras_for(*db, base);
    if (!rows) return report_error(rows.status());
    if (o->json) {
      JsonWriter w;
      w.begin_object();
      w.key("model").value(o->model);
      w.key("architecture").value(arch);
      w.key("family").value(base);
      w.key("loras").begin_array();
      for (const library::ModelRow& r : *rows) library::write_model_row(w, r);
      w.end_array();
      w.end_object();
      print_out(w.str());
      return kExitOk;
    }
    print_out(fmt::format("{} LoRAs for {} ({}):\n", rows->size(), arch, base));
    print_rows(*rows);
    return kExitOk;
  };
}

Runner setup_serve(CLI::App& sub) {
  struct Opts {
    library::ServeOptions s;
    std::string db;
  };
  auto o = std::make_shared<Opts>();
  add_db_option(sub, o->db);
  sub.add_option("--port", o->s.port, "port (0: any free one; the URL is printed)")
      ->default_val(8765);
  sub.add_option("--bind", o->s.bind, "address to listen on")->default_val("127.0.0.1");
  sub.add_flag("--allow-actions", o->s.allow_actions,
               "let the page prune, split and convert indexed files (POST /api/actions/; a new "
               "file beside the input, which is left as it is; each needs the page's token)");
  sub.footer(
      "A page to browse the library (sortable table, details, duplicates, disk use) and its\n"
      "JSON API under /api/. Read-only unless --allow-actions (then prune, split and convert\n"
      "from the page: new files beside the inputs, each POST with the page's token); only the\n"
      "address it is bound to is answered (Host header checked); nothing but the embedded page\n"
      "and the database's facts is served.\n"
      "Prints `serving URL` on stdout when ready.");
  return [o] {
    o->s.db_path = db_or_default(o->db);
    Status s = library::serve(o->s, [](const std::string& url) {
      std::printf("serving %s\n", url.c_str());
      std::fflush(stdout);
    });
    if (!s.is_ok()) return report_error(s);
    return kExitOk;
  };
}

}  // namespace

Runner setup_library(CLI::App& sub) {
  sub.require_subcommand(1);
  auto* index = sub.add_subcommand("index", "record the model files under folders (incremental)");
  Runner index_run = setup_index(*index);
  auto* list = sub.add_subcommand("list", "the indexed models, filtered");
  Runner list_run = setup_list(*list);
  auto* dupes = sub.add_subcommand("dupes", "identical files and identical components");
  Runner dupes_run = setup_dupes(*dupes);
  auto* show = sub.add_subcommand("show", "everything the library knows of one file");
  Runner show_run = setup_show(*show);
  auto* loras = sub.add_subcommand("loras", "the LoRAs that fit a model");
  Runner loras_run = setup_loras(*loras);
  auto* serve = sub.add_subcommand("serve", "browse the library in a local web page");
  Runner serve_run = setup_serve(*serve);
  return [=] {
    if (index->parsed()) return index_run();
    if (list->parsed()) return list_run();
    if (dupes->parsed()) return dupes_run();
    if (show->parsed()) return show_run();
    if (loras->parsed()) return loras_run();
    if (serve->parsed()) return serve_run();
    return kExitError;
  };
}

}  // namespace ckptkit::cli
