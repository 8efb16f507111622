// meta: a new header, the same data section. The tensors keep their order, so every byte of
// the data section is copied unchanged (in the kernel) and data-section hashes hold.
#include <fmt/format.h>

#include "ckptkit/ops.h"
#include "ckptkit/reader.h"
#include "io/errors.h"
#include "pipeline/plan.h"

namespace ckptkit {

Result<MetaReport> edit_metadata(const std::string& in_path, const std::string& out_path,
                                 const MetaEdit& edit, const RunOptions& run,
                                 const SafetensorsLimits& limits) {
  CKPT_RETURN_IF_ERROR(check_output_path(out_path, run.force));
  CKPT_ASSIGN_OR_RETURN(InputFile in, InputFile::open(in_path));
  ReadLimits rl;
  rl.safetensors = limits;
  CKPT_ASSIGN_OR_RETURN(Checkpoint ck, read_checkpoint(in_path, rl));
  if (ck.format != FileFormat::kSafetensors)
    return Status(ErrorCode::kUnsupported,
                  fmt::format("{} files have no metadata to edit; `ckptkit convert` it to "
                              "safetensors first",
                              format_name(ck.format)),
                  in_path);
  MetaReport report;
  report.before = ck.metadata;
  std::map<std::string, std::string> m =
      edit.clear ? std::map<std::string, std::string>{} : ck.metadata;
  for (const std::string& k : edit.remove)
    if (m.erase(k) == 0) report.missing.push_back(k);
  for (const auto& [k, v] : edit.set) m[k] = v;
  report.after = m;

  Plan plan;
  plan.inputs = {&in};
  plan.keep_order = true;
  plan.metadata = std::move(m);
  for (const TensorInfo& t : ck.tensors)  // data order
    plan.tensors.push_back(
        {t.name, t.dtype, t.shape, make_copy_producer(&in, ck.data_offset + t.begin, t.dtype)});
  RunOptions o = run;
  if (o.label == RunOptions{}.label) o.label = "copying";
  CKPT_ASSIGN_OR_RETURN(report.stats, execute_plan(plan, out_path, o));
  return report;
}

}  // namespace ckptkit
