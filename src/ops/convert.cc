// convert: a plan that casts floating-point tensors and copies everything else.
#include "ckptkit/cast.h"
#include "ckptkit/ops.h"
#include "ckptkit/scan.h"
#include "formats/torch/reader.h"
#include "io/errors.h"
#include "pipeline/plan.h"

namespace ckptkit {

Result<ConvertReport> convert_file(const std::string& in_path, const std::string& out_path,
                                   const ConvertOptions& options) {
  CKPT_ASSIGN_OR_RETURN(InputFile in, InputFile::open(in_path));
  ReadLimits limits;
  limits.safetensors = options.limits;
  CKPT_ASSIGN_OR_RETURN(Checkpoint ck, read_checkpoint(in, limits));
  ConvertReport report;
  report.format = ck.format;
  if (ck.format != FileFormat::kSafetensors) {
    // Reading never runs anything, but a file built to attack torch.load is refused unless the
    // caller has seen the report and insists.
    ScanReport scan = scan_file(in_path, limits);
    if (!scan.error.is_ok()) return scan.error;
    report.verdict = scan.verdict;
    if (scan.verdict == Verdict::kDangerous && !options.allow_dangerous)
      return Status(ErrorCode::kInvalidArgument,
                    "refusing to convert a file that would run code when loaded (" +
                        scan.summary + ")",
                    in_path);
    report.dropped_values = ck.torch.dropped_values;
    report.other_entries = ck.torch.other_entries.size();
    report.state_dict_key = ck.torch.state_dict_key;
  }
  if (ck.tensors.empty() && ck.format != FileFormat::kSafetensors)
    return Status(ErrorCode::kNotFound,
                  "no tensors found in the file (nothing that torch.save writes for a tensor)",
                  in_path);
  Plan plan;
  plan.inputs = {&in};
  plan.metadata = ck.metadata;
  // What loaders expect of a PyTorch-derived safetensors file (transformers checks it).
  if (ck.format != FileFormat::kSafetensors) plan.metadata.emplace("format", "pt");
  for (const TensorInfo& t : ck.tensors) {
    const uint64_t src = ck.data_offset + t.begin;
    DType to = t.dtype;
    if (options.dtype && is_float(t.dtype)) to = *options.dtype;
    if (options.dtype && !is_float(t.dtype)) ++report.kept_not_float[std::string(dtype_name(t.dtype))];
    if (to != t.dtype && !can_cast(t.dtype, to))
      return Status(ErrorCode::kUnsupported,
                    fmt::format("{} values cannot be converted to {} (the type is understood but "
                                "not computed with; --dtype keep copies it unchanged)",
                                dtype_name(t.dtype), dtype_name(to)),
                    in_path, src, t.name);
    plan.tensors.push_back({t.name, to, t.shape, make_tensor_producer(&in, t, ck.data_offset, to)});
    if (to == t.dtype) ++report.tensors_copied;
    else ++report.tensors_cast;
    if (!t.is_plain()) ++report.tensors_materialized;
  }
  RunOptions run = options.run;
  if (run.label == RunOptions{}.label) run.label = "converting";
  CKPT_ASSIGN_OR_RETURN(report.stats, execute_plan(plan, out_path, run));
  return report;
}

}  // namespace ckptkit
