// convert: a plan that casts floating-point tensors and copies everything else.
#include "ckptkit/cast.h"
#include "ckptkit/ops.h"
#include "formats/safetensors/internal.h"
#include "io/errors.h"
#include "pipeline/plan.h"

namespace ckptkit {

Result<ConvertReport> convert_file(const std::string& in_path, const std::string& out_path,
                                   const ConvertOptions& options) {
  CKPT_ASSIGN_OR_RETURN(InputFile in, InputFile::open(in_path));
  CKPT_ASSIGN_OR_RETURN(Checkpoint ck, read_safetensors(in, options.limits));
  ConvertReport report;
  Plan plan;
  plan.inputs = {&in};
  plan.metadata = ck.metadata;
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
    if (to == t.dtype) {
      plan.tensors.push_back({t.name, to, t.shape, make_copy_producer(&in, src, t.dtype)});
      ++report.tensors_copied;
    } else {
      plan.tensors.push_back({t.name, to, t.shape, make_cast_producer(&in, src, t.dtype, to)});
      ++report.tensors_cast;
    }
  }
  RunOptions run = options.run;
  if (run.label == RunOptions{}.label) run.label = "converting";
  CKPT_ASSIGN_OR_RETURN(report.stats, execute_plan(plan, out_path, run));
  return report;
}

}  // namespace ckptkit
