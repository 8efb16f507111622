// lora extract: a LoRA from the difference of two checkpoints (ckptkit/lora.h, docs/lora.md).
//
// One plan over the executor: each module's factors are two output tensors whose producers
// share a job. The first chunk of either computes the module (ΔW in F32, truncated SVD,
// singular values into up, the quantile clamp); the job frees its factors once both are
// written. Modules are laid out in windows of as many modules as there are worker threads
// (their downs, then their ups, then their alphas), so the threads work on different modules
// and memory holds a window's factors, not the LoRA's.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "ckptkit/anatomy.h"
#include "ckptkit/cast.h"
#include "ckptkit/lora.h"
#include "io/output.h"
#include "lora/names.h"
#include "lora/producers.h"
#include "lora/svd.h"
#include "ops/input.h"
#include "pipeline/plan.h"

namespace ckptkit {
namespace {

using detail::OpenedInput;

/// Both tensors are holes of sparse files (all zeros): nothing to read.
bool both_holes(const OpenedInput& a, const TensorInfo& at, const OpenedInput& b,
                const TensorInfo& bt) {
  return a.producer(at, DType::F32)->is_hole(0, at.numel()) &&
         b.producer(bt, DType::F32)->is_hole(0, bt.numel());
}

struct Job final : detail::FactorJob {
  const OpenedInput* tuned = nullptr;
  const OpenedInput* base = nullptr;
  const TensorInfo* tt = nullptr;
  const TensorInfo* bt = nullptr;
  uint64_t row0 = 0, m = 0, n = 0, k = 0;
  std::string name;
  float up_scale = 1.0f;
  std::optional<double> clamp;
  detail::SvdOptions svd;

  double kept = 1.0;
  bool zero = false;

  Status compute() override {
    if (both_holes(*tuned, *tt, *base, *bt)) {
      zero = true;
      up.assign(m * k, 0.0f);
      down.assign(k * n, 0.0f);
      return Status::ok();
    }
    std::vector<float> a, b;
    CKPT_RETURN_IF_ERROR(detail::read_f32(*tuned, *tt, a));
    CKPT_RETURN_IF_ERROR(detail::read_f32(*base, *bt, b));
    const uint64_t off = row0 * n, count = m * n;
    double fro2 = 0;
    for (uint64_t i = 0; i < count; ++i) {
      const float d = a[off + i] - b[off + i];
      if (!std::isfinite(d))
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("element {} of {} is not finite ({} in the tuned model, {} in "
                                  "the base): no LoRA can hold it",
                                  off + i, tt->name, a[off + i], b[off + i]),
                      tuned->file().path(), kNoOffset, tt->name);
      a[i] = d;
      fro2 += static_cast<double>(d) * d;
    }
    a.resize(count);
    std::vector<float>().swap(b);
    up.assign(m * k, 0.0f);
    down.assign(k * n, 0.0f);
    if (fro2 == 0) {
      zero = true;
      return Status::ok();
    }
    auto r = detail::truncated_svd(a.data(), m, n, k, svd);
    if (!r) return Status(r.status().code(), fmt::format("module {}: {}", name, r.status().message()));
    double kept2 = 0;
    for (uint64_t j = 0; j < r->k; ++j) kept2 += static_cast<double>(r->s[j]) * r->s[j];
    kept = std::sqrt(std::min(1.0, kept2 / fro2));
    // kohya: up = U · diag(S), down = Vt.
    for (uint64_t i = 0; i < m; ++i)
      for (uint64_t j = 0; j < r->k; ++j) up[i * k + j] = r->u[i * r->k + j] * r->s[j];
    std::copy(r->vt.begin(), r->vt.end(), down.begin());
    if (clamp) {
      std::vector<float> all(up);
      all.insert(all.end(), down.begin(), down.end());
      const float hi = detail::quantile(all, *clamp);
      for (float& x : up) x = std::clamp(x, -hi, hi);
      for (float& x : down) x = std::clamp(x, -hi, hi);
    }
    if (up_scale != 1.0f)
      for (float& x : up) x *= up_scale;
    return Status::ok();
  }

};

std::string_view kohya_version(std::string_view family) {
  if (family == "sd1") return "sd_v1";
  if (family == "sd2") return "sd_v2";
  if (family == "sdxl" || family == "sdxl-refiner") return "sdxl_base_v1-0";
  if (family == "flux") return "flux1";
  if (family == "sd3") return "sd3";
  return "";
}

std::string_view kohya_module(std::string_view family) {
  if (family == "flux") return "networks.lora_flux";
  if (family == "sd3") return "networks.lora_sd3";
  return "networks.lora";
}

std::string_view modelspec_arch(std::string_view family) {
  if (family == "sd1") return "stable-diffusion-v1/lora";
  if (family == "sd2") return "stable-diffusion-v2-512/lora";
  if (family == "sdxl") return "stable-diffusion-xl-v1-base/lora";
  if (family == "sdxl-refiner") return "stable-diffusion-xl-v1-refiner/lora";
  if (family == "sd3") return "stable-diffusion-3-medium/lora";
  if (family == "flux") return "flux-1-dev/lora";
  return "";
}

std::string fmt_num(double v) {
  if (v == std::floor(v) && std::abs(v) < 1e15) return fmt::format("{:.1f}", v);
  return fmt::format("{}", v);
}

}  // namespace

Result<ExtractReport> extract_lora(const std::string& tuned_path, const std::string& base_path,
                                   const std::string& out_path, const ExtractOptions& options) {
  if (options.rank == 0) return Status(ErrorCode::kInvalidArgument, "--rank must be at least 1");
  if (options.conv_rank && *options.conv_rank == 0)
    return Status(ErrorCode::kInvalidArgument, "--conv-rank must be at least 1");
  if (options.clamp_quantile && !(*options.clamp_quantile > 0 && *options.clamp_quantile <= 1))
    return Status(ErrorCode::kInvalidArgument, "--clamp-quantile must be in (0, 1]");
  if (options.alpha && !(*options.alpha > 0 && std::isfinite(*options.alpha)))
    return Status(ErrorCode::kInvalidArgument, "--alpha must be a positive number");
  if (options.alpha && options.format != LoraWriteFormat::kKohya)
    return Status(ErrorCode::kInvalidArgument,
                  "--alpha needs --format kohya: diffusers and PEFT files store no alpha (their "
                  "loaders apply scale 1 to a state dict without one)");
  if (!is_float(options.dtype))
    return Status(ErrorCode::kInvalidArgument, "--dtype must be a floating-point type");
  CKPT_RETURN_IF_ERROR(check_safetensors_output_name(out_path));
  CKPT_RETURN_IF_ERROR(check_output_path(out_path, options.run.force));
  detail::OpenOptions oo;
  oo.limits.safetensors = options.limits;
  oo.allow_dangerous = options.allow_dangerous;
  oo.verb = "extract from";
  CKPT_ASSIGN_OR_RETURN(auto tuned, OpenedInput::open(tuned_path, out_path, oo));
  CKPT_ASSIGN_OR_RETURN(auto base, OpenedInput::open(base_path, out_path, oo));
  const Checkpoint& tck = tuned->checkpoint();
  const Checkpoint& bck = base->checkpoint();
  const Anatomy ta = analyze(tck, &tuned->file());
  const Anatomy ba = analyze(bck, &base->file());
  for (const auto& [a, path] : {std::pair{&ta, &tuned_path}, std::pair{&ba, &base_path}}) {
    if (a->layout == "lora")
      return Status(ErrorCode::kInvalidArgument, "this is a LoRA, not a model", *path);
    if (a->family.empty())
      return Status(ErrorCode::kUnsupported,
                    fmt::format("the model is not recognized ({})", a->architecture), *path);
  }
  if (ta.family != ba.family)
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("the tuned model is {}, the base {}: a LoRA holds the difference "
                              "of two models of one family",
                              ta.family, ba.family),
                  tuned_path);
  ExtractReport report;
  report.architecture = ba.architecture;
  const std::string& family = ba.family;
  const bool unet_family = family == "sd1" || family == "sd2" || family == "sdxl" ||
                           family == "sdxl-refiner";

  // Per base tensor: its kohya and diffusers names (the first of each).
  const std::vector<detail::LoraName> names = detail::lora_names(bck, ba);
  // kohya_of: per tensor, the kohya name of its first module (OpenCLIP's in_proj: of its q rows).
  std::unordered_map<const TensorInfo*, std::string> kohya_of, diffusers_of;
  for (const detail::LoraName& n : names) {
    if (!n.target.reason.empty()) continue;
    if (n.naming == detail::LoraNaming::kKohya) kohya_of.emplace(n.target.tensor, n.key);
    if (n.naming == detail::LoraNaming::kDiffusers && n.target.rows == 0)
      diffusers_of.emplace(n.target.tensor, n.key);
  }
  std::unordered_map<const TensorInfo*, const Component*> part_of;
  for (const Component& c : ba.components)
    for (size_t i : c.tensors) part_of[&bck.tensors[i]] = &c;
  // kohya's targets: attention and MLP projections (and, with a conv rank, the ResNet blocks)
  // of the denoiser; the text encoders' attention and MLP with --text-encoders.
  auto wanted = [&](const TensorInfo* t) -> std::optional<uint64_t> {
    const auto ki = kohya_of.find(t);
    if (ki == kohya_of.end()) return std::nullopt;
    const std::string& k = ki->second;
    const bool conv3 = t->shape.size() == 4 && (t->shape[2] > 1 || t->shape[3] > 1);
    if (k.starts_with("lora_unet_")) {
      if (unet_family) {
        const auto di = diffusers_of.find(t);
        if (di == diffusers_of.end()) return std::nullopt;
        const std::string& d = di->second;
        if (d.find(".attentions.") != std::string::npos) return options.rank;
        const bool resnet = d.find(".resnets.") != std::string::npos ||
                            d.find("samplers.") != std::string::npos;
        if (!resnet || !options.conv_rank) return std::nullopt;
        return conv3 ? *options.conv_rank : options.rank;
      }
      if (family == "flux")
        return k.starts_with("lora_unet_double_blocks_") || k.starts_with("lora_unet_single_blocks_")
                   ? std::optional<uint64_t>(options.rank)
                   : std::nullopt;
      if (family == "sd3")
        return k.starts_with("lora_unet_joint_blocks_") ? std::optional<uint64_t>(options.rank)
                                                        : std::nullopt;
      return std::nullopt;
    }
    if (!options.text_encoders || !k.starts_with("lora_te")) return std::nullopt;
    const auto pi = part_of.find(t);
    if (pi == part_of.end() || pi->second->kind == PartKind::kT5xxl) return std::nullopt;
    if (k.find("_self_attn_") == std::string::npos && k.find("_mlp_") == std::string::npos)
      return std::nullopt;
    return options.rank;
  };

  // Text encoders that did not change are left out (kohya: max |ΔW| below --min-diff).
  std::map<const Component*, double> te_diff;
  if (options.text_encoders) {
    for (const auto& [t, k] : kohya_of) {
      if (!k.starts_with("lora_te") || !wanted(t)) continue;
      const TensorInfo* tt = tck.find(t->name);
      if (!tt || tt->shape != t->shape) continue;  // reported below
      if (both_holes(*tuned, *tt, *base, *t)) {
        te_diff.emplace(part_of.at(t), 0.0);
        continue;
      }
      std::vector<float> a, b;
      CKPT_RETURN_IF_ERROR(detail::read_f32(*tuned, *tt, a));
      CKPT_RETURN_IF_ERROR(detail::read_f32(*base, *t, b));
      double& mx = te_diff[part_of.at(t)];
      for (size_t i = 0; i < a.size(); ++i)
        mx = std::max(mx, static_cast<double>(std::abs(a[i] - b[i])));
    }
    for (const auto& [c, mx] : te_diff)
      if (mx < options.min_diff)
        report.notes.push_back(fmt::format(
            "text encoder {} is the same in both models (max |ΔW| {:.3g} < --min-diff {}): "
            "left out",
            c->prefix.empty() ? std::string(part_kind_name(c->kind)) : c->prefix, mx,
            options.min_diff));
  }

  const detail::LoraNaming naming = options.format == LoraWriteFormat::kKohya
                                        ? detail::LoraNaming::kKohya
                                        : detail::LoraNaming::kDiffusers;
  const detail::LoraFormat lf = options.format == LoraWriteFormat::kKohya
                                    ? detail::LoraFormat::kKohya
                                    : options.format == LoraWriteFormat::kDiffusers
                                          ? detail::LoraFormat::kDiffusers
                                          : detail::LoraFormat::kPeft;
  std::vector<std::shared_ptr<Job>> jobs;
  std::map<std::pair<const TensorInfo*, uint64_t>, bool> seen;
  bool any_conv = false;
  for (const detail::LoraName& nm : names) {
    if (nm.naming != naming || !nm.target.reason.empty()) continue;
    const TensorInfo* t = nm.target.tensor;
    if (!seen.emplace(std::pair{t, nm.target.row0}, true).second) continue;
    const auto rank = wanted(t);
    if (!rank) continue;
    if (auto pi = part_of.find(t); pi != part_of.end()) {
      auto d = te_diff.find(pi->second);
      if (d != te_diff.end() && d->second < options.min_diff) continue;
    }
    if (!is_float(t->dtype)) continue;
    const TensorInfo* tt = tck.find(t->name);
    if (!tt)
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("the tuned model has no tensor {} (both must use the same names: "
                                "`ckptkit assemble` or `convert` puts parts in one file)",
                                t->name),
                    tuned_path);
    if (tt->shape != t->shape || !is_float(tt->dtype))
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("tensor {} is {} {} in the tuned model, {} {} in the base", t->name,
                                dtype_name(tt->dtype), shape_to_string(tt->shape),
                                dtype_name(t->dtype), shape_to_string(t->shape)),
                    tuned_path);
    auto job = std::make_shared<Job>();
    job->tuned = tuned.get();
    job->base = base.get();
    job->tt = tt;
    job->bt = t;
    job->name = nm.key;
    job->row0 = nm.target.row0;
    job->m = nm.target.rows ? nm.target.rows : t->shape[0];
    job->n = t->numel() / t->shape[0];
    job->k = std::min(*rank, std::min(job->m, job->n));
    job->clamp = options.clamp_quantile;
    if (options.alpha) job->up_scale = static_cast<float>(static_cast<double>(job->k) / *options.alpha);
    job->svd.exact = options.exact;
    // Reproducible per module, whatever the order the threads take them in.
    job->svd.seed = std::hash<std::string>{}(nm.key);
    any_conv = any_conv || (t->shape.size() == 4 && (t->shape[2] > 1 || t->shape[3] > 1));
    jobs.push_back(std::move(job));
  }
  if (jobs.empty())
    return Status(ErrorCode::kInvalidArgument,
                  "no module to extract: the models share no target weight", base_path);
  report.modules = jobs.size();

  Plan plan;
  tuned->add_inputs(plan);
  base->add_inputs(plan);
  plan.keep_order = true;
  RunOptions run = options.run;
  const unsigned threads =
      run.threads ? run.threads : std::max(1u, std::thread::hardware_concurrency());
  run.threads = threads;
  if (run.label == RunOptions{}.label) run.label = "extracting";
  for (size_t w = 0; w < jobs.size(); w += threads) {
    const size_t end = std::min(jobs.size(), w + threads);
    for (int pass = 0; pass < 3; ++pass)
      for (size_t i = w; i < end; ++i) {
        const Job& j = *jobs[i];
        const TensorInfo& t = *j.bt;
        const detail::LoraFactorKeys keys = detail::lora_factor_keys(lf, j.name);
        const bool conv = t.shape.size() == 4;
        if (pass == 0) {
          Shape s{j.k, t.shape.size() == 4 ? t.shape[1] : j.n};
          if (conv) s.insert(s.end(), {t.shape[2], t.shape[3]});
          plan.tensors.push_back(
              {keys.down, options.dtype, s, std::make_unique<detail::FactorProducer>(jobs[i], false, options.dtype)});
        } else if (pass == 1) {
          Shape s{j.m, j.k};
          if (conv) s.insert(s.end(), {1, 1});
          plan.tensors.push_back(
              {keys.up, options.dtype, s, std::make_unique<detail::FactorProducer>(jobs[i], true, options.dtype)});
        } else if (!keys.alpha.empty()) {
          const double alpha = options.alpha ? *options.alpha : static_cast<double>(j.k);
          plan.tensors.push_back({keys.alpha, options.dtype, Shape{},
                                  std::make_unique<detail::ScalarProducer>(static_cast<float>(alpha), options.dtype)});
        }
      }
  }
  // Metadata users and trainers look for (kohya's minimum set, ModelSpec) and provenance.
  const double alpha = options.alpha ? *options.alpha : static_cast<double>(options.rank);
  if (options.format == LoraWriteFormat::kKohya) {
    plan.metadata["ss_network_module"] = std::string(kohya_module(family));
    plan.metadata["ss_network_dim"] = std::to_string(options.rank);
    plan.metadata["ss_network_alpha"] = fmt_num(alpha);
    if (any_conv && options.conv_rank)
      plan.metadata["ss_network_args"] =
          fmt::format("{{\"conv_dim\": \"{}\", \"conv_alpha\": \"{}\"}}", *options.conv_rank,
                      options.alpha ? fmt_num(*options.alpha) : fmt_num(static_cast<double>(*options.conv_rank)));
    plan.metadata["ss_v2"] = family == "sd2" ? "True" : "False";
    if (auto v = kohya_version(family); !v.empty()) plan.metadata["ss_base_model_version"] = std::string(v);
    plan.metadata["ss_sd_model_name"] = std::filesystem::path(base_path).filename().string();
  }
  if (options.format != LoraWriteFormat::kKohya) {
    // diffusers reads no alpha tensor; without this header it would give every module the
    // first module's rank as lora_alpha (a wrong scale for a --conv-rank of another rank).
    std::vector<std::pair<std::string, uint64_t>> ranks;
    for (const auto& j : jobs) ranks.emplace_back(j->name, j->k);
    plan.metadata["lora_adapter_metadata"] = detail::lora_adapter_metadata(ranks);
  }
  if (auto spec = modelspec_arch(family); !spec.empty()) {
    plan.metadata["modelspec.sai_model_spec"] = "1.0.0";
    plan.metadata["modelspec.architecture"] = std::string(spec);
    plan.metadata["modelspec.implementation"] =
        family == "flux" ? "https://github.com/black-forest-labs/flux"
                         : "https://github.com/Stability-AI/generative-models";
    plan.metadata["modelspec.title"] = detail::file_stem(out_path);
  }
  plan.metadata["ckptkit.lora_extract"] = fmt::format(
      "{{\"tuned\":\"{}\",\"base\":\"{}\",\"rank\":{},\"conv_rank\":{},\"alpha\":{},\"clamp_"
      "quantile\":{},\"svd\":\"{}\"}}",
      std::filesystem::path(tuned_path).filename().string(),
      std::filesystem::path(base_path).filename().string(), options.rank,
      options.conv_rank ? std::to_string(*options.conv_rank) : "null", fmt_num(alpha),
      options.clamp_quantile ? fmt::format("{}", *options.clamp_quantile) : "null",
      options.exact ? "exact" : "randomized");
  // One module per worker thread: the BLAS runs single-threaded inside each.
  const int blas_before = detail::blas_threads(1);
  auto stats = execute_plan(plan, out_path, run);
  detail::blas_threads(blas_before);
  if (!stats) return stats.status();
  report.stats = *stats;
  double sum = 0;
  uint64_t changed = 0;
  for (const auto& j : jobs) {
    if (j->zero) {
      ++report.unchanged;
      continue;
    }
    ++changed;
    sum += j->kept;
    if (j->kept < report.min_kept) report.min_kept = j->kept, report.min_kept_module = j->name;
  }
  report.mean_kept = changed ? sum / static_cast<double>(changed) : 1.0;
  if (report.unchanged)
    report.notes.push_back(fmt::format("{} modules are the same in both models (written as zeros)",
                                       report.unchanged));
  return report;
}

}  // namespace ckptkit
