// `ckptkit meta FILE [--set K=V]... [--delete K]... [--from-json F] [-o OUT]` — show or edit
// safetensors metadata; editing rewrites the header and copies the data untouched.
#include <fmt/format.h>
#include <simdjson.h>

#include <cstdio>

#include "ckptkit/reader.h"
#include "cli/app.h"
#include "cli/commands.h"
#include "cli/json_writer.h"
#include "io/errors.h"
#include "pipeline/progress.h"

namespace ckptkit::cli {
namespace {

Result<std::map<std::string, std::string>> load_json_object(const std::string& path) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (auto err = parser.load(path).get(doc))
    return error(ErrorCode::kInvalidArgument, "{}: not valid JSON ({})", path,
                 simdjson::error_message(err));
  simdjson::dom::object obj;
  if (doc.get_object().get(obj))
    return error(ErrorCode::kInvalidArgument, "{}: expected a JSON object of strings", path);
  std::map<std::string, std::string> out;
  for (auto field : obj) {
    std::string_view v;
    if (field.value.get_string().get(v))
      return error(ErrorCode::kInvalidArgument,
                   "{}: the value of '{}' is not a string (safetensors metadata is strings "
                   "only; quote numbers, serialize objects)",
                   path, field.key);
    out[std::string(field.key)] = std::string(v);
  }
  return out;
}

}  // namespace

Runner setup_meta(CLI::App& sub) {
  struct Opts {
    std::string in, out, from_json;
    std::vector<std::string> set, remove;
    bool clear = false, json = false, quiet = false;
    WriteFlags write;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("FILE", o->in, "safetensors file")->required();
  sub.add_option("--set", o->set, "add or replace KEY=VALUE (repeatable)");
  sub.add_option("--delete", o->remove, "delete KEY (repeatable)");
  sub.add_option("--from-json", o->from_json, "add or replace the keys of a JSON object file");
  sub.add_flag("--clear", o->clear, "start from no metadata (then --set/--from-json apply)");
  sub.add_option("-o,--output", o->out, "output file (needed when editing)");
  sub.add_flag("--json", o->json, "print the (resulting) metadata as JSON");
  sub.add_flag("-q,--quiet", o->quiet, "print nothing on success");
  o->write.add_to(sub);
  sub.footer(
      "Without edits it prints the metadata. With edits it writes OUT: a new header and the\n"
      "same data section, byte for byte (kernel copies), so AutoV3 and kohya's sshs_model_hash\n"
      "stay valid. Deletions apply first, then --from-json, then --set.\n\n"
      "Examples:\n"
      "  ckptkit meta model.safetensors\n"
      "  ckptkit meta model.safetensors --set modelspec.title='My merge' \\\n"
      "      --delete ss_tag_frequency -o model-clean.safetensors");
  return [o] {
    const bool editing = !o->set.empty() || !o->remove.empty() || !o->from_json.empty() || o->clear;
    if (!editing) {
      if (!o->out.empty())
        return report_error(Status(ErrorCode::kInvalidArgument,
                                   "-o given without an edit (--set, --delete, --from-json, "
                                   "--clear)"));
      auto ck = read_checkpoint(o->in);
      if (!ck) return report_error(ck.status());
      if (o->json) {
        JsonWriter w;
        w.begin_object();
        for (const auto& [k, v] : ck->metadata) w.key(k).value(v);
        w.end_object();
        print_out(w.str());
      } else {
        std::string out;
        for (const auto& [k, v] : ck->metadata) out += fmt::format("{}: {}\n", k, v);
        if (ck->metadata.empty()) std::fprintf(stderr, "%s: no metadata\n", o->in.c_str());
        print_out(out);
      }
      return kExitOk;
    }
    if (o->out.empty())
      return report_error(
          Status(ErrorCode::kInvalidArgument, "editing needs -o OUT (the input is never changed)"));
    MetaEdit edit;
    edit.clear = o->clear;
    edit.remove = o->remove;
    if (!o->from_json.empty()) {
      auto m = load_json_object(o->from_json);
      if (!m) return report_error(m.status());
      edit.set = *m;
    }
    for (const std::string& kv : o->set) {
      const size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0)
        return report_error(
            Status(ErrorCode::kInvalidArgument, fmt::format("--set '{}': expected KEY=VALUE", kv)));
      edit.set[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    auto run = o->write.to_options();
    if (!run) return report_error(run.status());
    auto report = edit_metadata(o->in, o->out, edit, *run);
    if (!report) return report_error(report.status());
    for (const std::string& k : report->missing)
      std::fprintf(stderr, "ckptkit: note: --delete %s: no such key\n", k.c_str());
    if (o->json) {
      JsonWriter w;
      w.begin_object();
      for (const auto& [k, v] : report->after) w.key(k).value(v);
      w.end_object();
      print_out(w.str());
    } else if (!o->quiet) {
      std::fprintf(stderr, "wrote %s: %s, %zu metadata keys (was %zu), data copied unchanged\n",
                   o->out.c_str(), human_bytes(report->stats.bytes_written).c_str(),
                   report->after.size(), report->before.size());
    }
    return kExitOk;
  };
}

}  // namespace ckptkit::cli
