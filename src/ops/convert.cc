// convert: a plan that casts floating-point tensors and copies everything else.
#include <map>
#include <optional>

#include "ckptkit/cast.h"
#include "ckptkit/ops.h"
#include "ckptkit/scan.h"
#include "io/errors.h"
#include "model/gguf_policy.h"
#include "ops/input.h"
#include "pipeline/plan.h"
#include "tensor/quant.h"

namespace ckptkit {

Result<ConvertReport> convert_file(const std::string& in_path, const std::string& out_path,
                                   const ConvertOptions& options) {
  if (!options.gguf) CKPT_RETURN_IF_ERROR(check_safetensors_output_name(out_path));
  CKPT_RETURN_IF_ERROR(check_output_path(out_path, options.run.force));
  detail::OpenOptions open;
  open.limits.safetensors = options.limits;
  open.allow_dangerous = options.allow_dangerous;
  open.verdict = options.verdict;
  open.verb = "convert";
  CKPT_ASSIGN_OR_RETURN(auto in, detail::OpenedInput::open(in_path, out_path, open));
  const Checkpoint& ck = in->checkpoint();
  ConvertReport report;
  report.format = ck.format;
  if (ck.format != FileFormat::kSafetensors) {
    report.verdict = in->verdict();
    report.dropped_values = ck.torch.dropped_values;
    report.other_entries = ck.torch.other_entries.size();
    report.state_dict_key = ck.torch.state_dict_key;
  }
  if (options.gguf) return detail::convert_to_gguf(*in, in_path, out_path, options, report);
  Plan plan;
  in->add_inputs(plan);
  plan.metadata = ck.metadata;
  // What loaders expect of a PyTorch-derived safetensors file (transformers checks it).
  if (ck.format != FileFormat::kSafetensors) plan.metadata.emplace("format", "pt");
  // A GGUF's key-value pairs are not safetensors metadata: keep only ModelSpec's.
  if (ck.format == FileFormat::kGguf)
    std::erase_if(plan.metadata,
                  [](const auto& kv) { return !kv.first.starts_with("modelspec."); });
  // A T5 GGUF (llama.cpp's names) comes back under the Hugging Face names.
  const bool t5_names = detail::uses_llama_t5_names(ck);
  for (const TensorInfo& t : ck.tensors) {
    const uint64_t src = ck.data_offset + t.begin;
    DType to = t.dtype;
    if (options.dtype && is_float(t.dtype)) to = *options.dtype;
    // Block-quantized (GGUF) tensors: dequantized, exactly in F32 unless --dtype says else.
    if (is_quantized(t.dtype)) to = options.dtype.value_or(DType::F32);
    if (options.dtype && !is_float(t.dtype) && !is_quantized(t.dtype))
      ++report.kept_not_float[std::string(dtype_name(t.dtype))];
    if (is_quantized(t.dtype) && !can_dequantize(t.dtype))
      return Status(ErrorCode::kUnsupported,
                    fmt::format("{} blocks cannot be dequantized yet (supported: F32, F16, BF16, "
                                "Q8_0, Q5_0, Q5_1, Q4_0, Q4_1, Q2_K…Q6_K, IQ4_NL, IQ4_XS)",
                                dtype_name(t.dtype)),
                    in_path, src, t.name);
    if (to != t.dtype && !is_quantized(t.dtype) && !can_cast(t.dtype, to))
      return Status(ErrorCode::kUnsupported,
                    fmt::format("{} values cannot be converted to {} (the type is understood but "
                                "not computed with; --dtype keep copies it unchanged)",
                                dtype_name(t.dtype), dtype_name(to)),
                    in_path, src, t.name);
    std::string name = t.name;
    if (t5_names)
      if (auto hf = detail::t5_hf_name(t.name)) name = *hf;
    plan.tensors.push_back({std::move(name), to, t.shape, in->producer(t, to)});
    if (to == t.dtype)
      ++report.tensors_copied;
    else
      ++report.tensors_cast;
    if (!t.is_plain()) ++report.tensors_materialized;
  }
  RunOptions run = options.run;
  if (run.label == RunOptions{}.label) run.label = "converting";
  CKPT_ASSIGN_OR_RETURN(report.stats, execute_plan(plan, out_path, run));
  return report;
}

}  // namespace ckptkit
