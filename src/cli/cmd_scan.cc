// `ckptkit scan FILE... [--json]` — would loading these files run code? Static; nothing runs.
#include <fmt/format.h>

#include <cstdio>

#include "ckptkit/scan.h"
#include "cli/app.h"
#include "cli/commands.h"
#include "cli/json_writer.h"
#include "cli/scan_report.h"

namespace ckptkit::cli {

void write_scan_json(JsonWriter& w, const ScanReport& r) {
  w.begin_object();
  w.key("path").value(r.path);
  w.key("format");
  if (r.format.empty())
    w.null();
  else
    w.value(r.format);
  w.key("verdict");
  if (r.error.is_ok())
    w.value(verdict_name(r.verdict));
  else
    w.null();
  w.key("summary").value(r.summary);
  w.key("globals").begin_array();
  for (const ScanGlobal& g : r.globals) {
    w.begin_object();
    w.key("module").value(g.module);
    w.key("name").value(g.name);
    w.key("offset").value(g.offset);
    w.key("entry");
    if (g.entry.empty())
      w.null();
    else
      w.value(g.entry);
    w.key("opcode").value(g.opcode);
    w.key("category").value(g.category);
    w.key("reason").value(g.reason);
    w.key("origin").value(g.origin);
    w.key("called").value(g.called);
    if (g.nested) w.key("nested").value(true);
    if (g.compressed) w.key("offset_in_inflated_entry").value(true);
    w.end_object();
  }
  w.end_array();
  w.key("findings").begin_array();
  for (const ScanFinding& f : r.findings) {
    w.begin_object();
    w.key("kind").value(f.kind);
    w.key("offset").value(f.offset);
    w.key("entry");
    if (f.entry.empty())
      w.null();
    else
      w.value(f.entry);
    w.key("message").value(f.message);
    w.end_object();
  }
  w.end_array();
  w.key("error");
  if (r.error.is_ok())
    w.null();
  else
    w.value(r.error.to_string());
  w.end_object();
}

std::string scan_text(const ScanReport& r, bool verbose) {
  std::string out;
  if (!r.error.is_ok()) return fmt::format("{}: error: {}\n", r.path, r.error.to_string());
  out += fmt::format("{}: {}\n", r.path, verdict_name(r.verdict));
  out += fmt::format("  {}\n", r.summary);
  for (const ScanGlobal& g : r.globals) {
    if (g.category == "allowed" && !verbose) continue;
    out += fmt::format("  {:<9} {}.{}  ({} at {:#x}{}{}) — {}\n", g.category, g.module, g.name,
                       g.opcode, g.offset, g.entry.empty() ? "" : " in " + g.entry,
                       g.nested ? ", nested pickle" : "", g.reason);
  }
  for (const ScanFinding& f : r.findings)
    out += fmt::format("  finding   {} at {:#x}{}: {}\n", f.kind, f.offset,
                       f.entry.empty() ? "" : " in " + f.entry, f.message);
  return out;
}

Runner setup_scan(CLI::App& sub) {
  struct Opts {
    std::vector<std::string> files;
    bool json = false;
    bool all = false;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("FILE", o->files, "files to scan (.ckpt, .pt, .pth, .bin, .safetensors)")
      ->required();
  sub.add_flag("--json", o->json, "machine-readable output");
  sub.add_flag("-v,--verbose", o->all, "list allowlisted globals too");
  sub.footer(
      "A .ckpt/.pt/.bin file is a Python pickle: loading it with torch.load imports the modules\n"
      "it names and calls what it says, so a file from the internet can run any program.\n"
      "scan reads every pickle in the file without running anything and judges each name:\n"
      "  safe        only tensors and plain containers\n"
      "  suspicious  imports code from outside PyTorch (e.g. Lightning callbacks) or has\n"
      "              structural oddities; not known to be harmful\n"
      "  dangerous   would run commands or code, open files or sockets, or load more pickles\n"
      "Exit status: 0 every file safe, 1 any suspicious or dangerous, 2 a file unreadable.\n\n"
      "Examples:\n"
      "  ckptkit scan downloads/*.ckpt\n"
      "  ckptkit scan --json model.ckpt | jq '.files[0].verdict'");
  return [o] {
    int status = kExitOk;
    JsonWriter w;
    if (o->json) {
      w.begin_object();
      w.key("files").begin_array();
    }
    for (const std::string& f : o->files) {
      ScanReport r = scan_file(f);
      if (!r.error.is_ok())
        status = kExitError;
      else if (r.verdict != Verdict::kSafe && status == kExitOk)
        status = kExitProblems;
      if (o->json)
        write_scan_json(w, r);
      else
        print_out(scan_text(r, o->all));
    }
    if (o->json) {
      w.end_array();
      w.end_object();
      print_out(w.str());
    }
    return status;
  };
}

std::optional<int> scan_gate(const std::string& path, std::string_view verb,
                             const SafetensorsLimits& limits, bool allow,
                             std::optional<Verdict>& verdict) {
  ReadLimits rl;
  rl.safetensors = limits;
  ScanReport scan = scan_file(path, rl);
  if (!scan.error.is_ok()) return std::nullopt;
  if (scan.verdict == Verdict::kDangerous) {
    if (Capture* c = current_capture()) {
      if (!allow) {
        JsonWriter w;
        write_scan_json(w, scan);
        c->dangerous_report = w.str();
        c->error = Status(ErrorCode::kInvalidArgument,
                          fmt::format("refusing to {}: loading it would run code (see the scan "
                                      "report); nothing was written. Pass allow_dangerous=True "
                                      "to take the tensors anyway; ckptkit never runs the "
                                      "file's code",
                                      verb),
                          path);
        return kExitProblems;
      }
      verdict = scan.verdict;
      return std::nullopt;
    }
    std::fputs(scan_text(scan, false).c_str(), stderr);
    if (!allow) {
      std::fprintf(stderr,
                   "ckptkit: refusing to %s %s: loading it would run code (see above). Nothing "
                   "was written. Use --allow-dangerous to take the tensors anyway; ckptkit never "
                   "runs the file's code.\n",
                   std::string(verb).c_str(), path.c_str());
      return kExitProblems;
    }
  }
  verdict = scan.verdict;
  return std::nullopt;
}

}  // namespace ckptkit::cli
