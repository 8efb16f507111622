// `ckptkit convert IN -o OUT [--dtype D]` — streaming rewrite, optionally changing precision.
#include <fmt/format.h>

#include <cstdio>

#include "cli/commands.h"
#include "pipeline/progress.h"

namespace ckptkit::cli {

Runner setup_convert(CLI::App& sub) {
  struct Opts {
    std::string in, out, dtype = "keep";
    uint64_t max_header = kDefaultMaxHeaderBytes;
    bool quiet = false;
    WriteFlags write;
  };
  auto o = std::make_shared<Opts>();
  sub.add_option("IN", o->in, "input checkpoint (.safetensors)")->required();
  sub.add_option("-o,--output", o->out, "output file (.safetensors)")->required();
  sub.add_option("--dtype", o->dtype,
                 "precision of floating-point tensors: f16, bf16, f32, f8_e4m3, f8_e5m2 or keep")
      ->default_str("keep");
  sub.add_option("--max-header-size", o->max_header, "refuse input headers larger than this")
      ->default_val(kDefaultMaxHeaderBytes);
  sub.add_flag("-q,--quiet", o->quiet, "print nothing on success");
  o->write.add_to(sub);
  sub.footer(
      "Integer tensors (such as CLIP's position_ids) are never cast. Rounding is to nearest\n"
      "even, bit-identical to PyTorch's tensor.to(dtype). Metadata is kept.\n\n"
      "Examples:\n"
      "  ckptkit convert model-fp32.safetensors -o model-fp16.safetensors --dtype f16\n"
      "  ckptkit convert flux1-dev.safetensors -o flux1-dev-fp8.safetensors --dtype f8_e4m3");
  return [o] {
    auto dtype = parse_dtype_flag(o->dtype);
    if (!dtype) return report_error(dtype.status());
    auto run = o->write.to_options();
    if (!run) return report_error(run.status());
    ConvertOptions options;
    options.dtype = *dtype;
    options.limits.max_header_bytes = o->max_header;
    options.run = *run;
    auto report = convert_file(o->in, o->out, options);
    if (!report) return report_error(report.status());
    if (!o->quiet) {
      const RunStats& s = report->stats;
      std::string kept;
      for (const auto& [dt, n] : report->kept_not_float)
        kept += fmt::format("{}{} {}", kept.empty() ? "" : ", ", n, dt);
      std::fprintf(stderr, "wrote %s: %s, %llu tensors (%llu converted, %llu copied%s) in %.2f s\n",
                   o->out.c_str(), human_bytes(s.bytes_written).c_str(),
                   static_cast<unsigned long long>(s.tensors),
                   static_cast<unsigned long long>(report->tensors_cast),
                   static_cast<unsigned long long>(report->tensors_copied),
                   kept.empty() ? "" : fmt::format("; not float, kept: {}", kept).c_str(),
                   s.seconds);
    }
    return kExitOk;
  };
}

}  // namespace ckptkit::cli
