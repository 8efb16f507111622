// `ckptkit sample --layout NAME -o OUT` — synthetic checkpoints with published layouts.
#include <fmt/format.h>

#include <cstdio>

#include "cli/app.h"
#include "cli/commands.h"
#include "cli/json_writer.h"
#include "pipeline/progress.h"

namespace ckptkit::cli {

Runner setup_sample(CLI::App& sub) {
  struct Opts {
    std::string layout, out, dtype = "keep";
    uint64_t seed = 0;
    bool sparse = false, list = false, quiet = false, json = false;
    WriteFlags write;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("--layout", o->layout, "published layout to reproduce (see --list)");
  sub.add_option("-o,--output", o->out, "output file (.safetensors)");
  sub.add_option("--dtype", o->dtype, "precision of floating-point tensors (default: the layout's)")
      ->default_str("keep");
  sub.add_option("--seed", o->seed, "seed of the deterministic values")->default_val(0);
  sub.add_flag("--sparse", o->sparse,
               "write the header and tensors of at most 1 KiB (position ids, scalars); leave the "
               "rest as holes (instant, almost no disk use)");
  sub.add_flag("--list", o->list, "list the layouts and exit");
  sub.add_flag("-q,--quiet", o->quiet, "print nothing on success");
  sub.add_flag("--json", o->json, "print the report (or with --list, the layouts) as JSON");
  o->write.add_to(sub);
  sub.footer(
      "Tensor names, dtypes and shapes are exactly those of the real published files; values\n"
      "are pseudo-random at realistic scales, identical for the same seed.\n\n"
      "Examples:\n"
      "  ckptkit sample --list\n"
      "  ckptkit sample --layout sd15-ldm -o sd15.safetensors --dtype f16\n"
      "  ckptkit sample --layout sdxl-sgm -o sdxl.safetensors --sparse");
  return [o] {
    if (o->list && o->json) {
      JsonWriter w;
      w.begin_array();
      for (const LayoutSummary& l : list_layouts()) {
        w.begin_object();
        w.key("name").value(l.name);
        w.key("tensors").value(l.tensors);
        w.key("parameters").value(l.parameters);
        w.key("bytes").value(l.bytes);
        w.key("dtypes").value(l.dtypes);
        w.end_object();
      }
      w.end_array();
      print_out(w.str());
      return kExitOk;
    }
    if (o->list) {
      std::string out = fmt::format("{:<28} {:>7} {:>16} {:>10}  {}\n", "layout", "tensors",
                                    "parameters", "size", "dtypes");
      for (const LayoutSummary& l : list_layouts())
        out += fmt::format("{:<28} {:>7} {:>16} {:>10}  {}\n", l.name, l.tensors, l.parameters,
                           human_bytes(l.bytes), l.dtypes);
      print_out(out);
      return kExitOk;
    }
    if (o->layout.empty() || o->out.empty())
      return report_error(Status(ErrorCode::kInvalidArgument,
                                 "sample needs --layout NAME and -o FILE (or --list)"));
    auto dtype = parse_dtype_flag(o->dtype);
    if (!dtype) return report_error(dtype.status());
    auto run = o->write.to_options();
    if (!run) return report_error(run.status());
    SampleOptions options;
    options.dtype = *dtype;
    options.seed = o->seed;
    options.sparse = o->sparse;
    options.run = *run;
    auto stats = write_sample(o->layout, o->out, options);
    if (!stats) return report_error(stats.status());
    if (o->json) {
      JsonWriter w;
      w.begin_object();
      w.key("output").value(o->out);
      w.key("layout").value(o->layout);
      w.key("tensors").value(stats->tensors);
      w.key("output_bytes").value(stats->bytes_written);
      w.key("sparse").value(o->sparse);
      w.key("seconds").value(fmt::format("{:.3f}", stats->seconds));
      w.end_object();
      print_out(w.str());
      return kExitOk;
    }
    if (!o->quiet)
      std::fprintf(stderr, "wrote %s: %s, %llu tensors%s in %.2f s\n", o->out.c_str(),
                   human_bytes(stats->bytes_written).c_str(),
                   static_cast<unsigned long long>(stats->tensors),
                   o->sparse ? " (sparse: header and tiny tensors only)" : "", stats->seconds);
    return kExitOk;
  };
}

}  // namespace ckptkit::cli
