// lora resize: a LoRA's modules cut to a new rank by kohya's rules (ckptkit/lora.h, docs/lora.md).
//
// Two passes. The first decides each module's new rank from the singular values of up · down,
// which the R factors of two QRs give without forming the product (O((m+n)·r²), not the
// O(m·n·min(m,n)) of an SVD of ΔW). The second, inside the executor, computes the module's
// exact truncated SVD the same way and writes it: memory holds the modules in flight.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <thread>

#include "ckptkit/anatomy.h"
#include "ckptkit/cast.h"
#include "ckptkit/lora.h"
#include "io/output.h"
#include "lora/open.h"
#include "lora/producers.h"
#include "lora/svd.h"
#include "ops/input.h"
#include "pipeline/plan.h"

namespace ckptkit {
namespace {

using detail::OpenedInput;

constexpr double kMinSv = 1e-6;  // kohya's MIN_SV: below it a module is a zero matrix

struct Pair {
  size_t module = 0;
  const TensorInfo* down = nullptr;
  const TensorInfo* up = nullptr;
  const TensorInfo* alpha = nullptr;
  uint64_t m = 0, r = 0, n = 0;  ///< up m × r, down r × n (n = in · kh · kw)
  double scale = 1.0;            ///< old alpha / old rank (1 without alpha)
  uint64_t new_rank = 0;
  double new_alpha = 0;
  double fro_kept = 0, sum_kept = 0;
};

Status load_pair(const OpenedInput& in, const Pair& p, std::vector<float>& up,
                 std::vector<float>& down) {
  CKPT_RETURN_IF_ERROR(detail::read_f32(in, *p.up, up));
  CKPT_RETURN_IF_ERROR(detail::read_f32(in, *p.down, down));
  for (const auto* v : {&up, &down})
    for (size_t i = 0; i < v->size(); ++i)
      if (!std::isfinite((*v)[i]))
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("a factor holds {} at element {}: refusing to resize it",
                                  std::isnan((*v)[i]) ? "NaN" : "an infinity", i),
                      in.file().path(), kNoOffset, v == &up ? p.up->name : p.down->name);
  return Status::ok();
}

/// kohya's index functions and rank_resize (sd-scripts networks/resize_lora.py @ 41de936):
/// `s` holds the singular values of ΔW, `len` is min(m, n) (torch's full SVD has that many;
/// the ones past the LoRA's rank are zero).
uint64_t kohya_rank(const std::vector<float>& s, uint64_t len, uint64_t cap, ResizeRule rule,
                    double param) {
  auto clamp_index = [&](int64_t i) {
    return static_cast<uint64_t>(std::max<int64_t>(0, std::min<int64_t>(i, static_cast<int64_t>(len) - 1)));
  };
  // torch.searchsorted (left): the first index whose value is >= target; len if none.
  auto searchsorted = [&](const std::vector<double>& cum, double target) {
    uint64_t i = 0;
    while (i < cum.size() && cum[i] < target) ++i;
    return i < cum.size() ? i : len;
  };
  uint64_t new_rank = cap;
  if (rule == ResizeRule::kSvRatio) {
    const double min_sv = static_cast<double>(s[0]) / param;
    int64_t count = 0;
    for (float v : s) count += static_cast<double>(v) > min_sv;
    new_rank = clamp_index(count) + 1;
  } else if (rule == ResizeRule::kSvCumulative || rule == ResizeRule::kSvFro) {
    const bool fro = rule == ResizeRule::kSvFro;
    double total = 0;
    for (float v : s) total += fro ? static_cast<double>(v) * v : v;
    std::vector<double> cum;
    double run = 0;
    for (float v : s) cum.push_back((run += fro ? static_cast<double>(v) * v : v) / total);
    // The zero singular values past the rank repeat the last sum.
    while (cum.size() < len) cum.push_back(cum.empty() ? 0.0 : cum.back());
    new_rank = clamp_index(static_cast<int64_t>(searchsorted(cum, fro ? param * param : param))) + 1;
  }
  if (s.empty() || s[0] <= kMinSv) return 1;
  return std::min(new_rank, cap);
}

/// One module's new factors: the exact truncated SVD of up · down, singular values into up.
struct PairJob final : detail::FactorJob {
  const OpenedInput* in = nullptr;
  const Pair* pair = nullptr;
  Status compute() override {
    const Pair& p = *pair;
    std::vector<float> u0, d0;
    CKPT_RETURN_IF_ERROR(load_pair(*in, p, u0, d0));
    auto svd = detail::product_svd(u0.data(), d0.data(), p.m, p.r, p.n);
    if (!svd) return svd.status();
    const uint64_t k = p.new_rank;
    up.assign(p.m * k, 0.0f);
    down.assign(k * p.n, 0.0f);
    const uint64_t have = std::min(k, svd->k);
    for (uint64_t i = 0; i < p.m; ++i)
      for (uint64_t j = 0; j < have; ++j) up[i * k + j] = svd->u[i * svd->k + j] * svd->s[j];
    std::copy_n(svd->vt.begin(), have * p.n, down.begin());
    return Status::ok();
  }
};

std::string rule_name(ResizeRule r) {
  switch (r) {
    case ResizeRule::kSvRatio: return "sv_ratio";
    case ResizeRule::kSvFro: return "sv_fro";
    case ResizeRule::kSvCumulative: return "sv_cumulative";
    default: return "fixed";
  }
}

}  // namespace

Result<ResizeReport> resize_lora(const std::string& in_path, const std::string& out_path,
                                 const ResizeOptions& options) {
  if (options.rank == 0) return Status(ErrorCode::kInvalidArgument, "--rank must be at least 1");
  if (options.conv_rank && *options.conv_rank == 0)
    return Status(ErrorCode::kInvalidArgument, "--conv-rank must be at least 1");
  if (options.rule != ResizeRule::kFixed && !(options.param > 0 && std::isfinite(options.param)))
    return Status(ErrorCode::kInvalidArgument, "--dynamic needs a positive parameter");
  if (options.dtype && !is_float(*options.dtype))
    return Status(ErrorCode::kInvalidArgument, "--dtype must be a floating-point type");
  CKPT_RETURN_IF_ERROR(check_safetensors_output_name(out_path));
  CKPT_RETURN_IF_ERROR(check_output_path(out_path, options.run.force));
  detail::OpenOptions oo;
  oo.limits.safetensors = options.limits;
  oo.allow_dangerous = options.allow_dangerous;
  oo.verb = "resize";
  CKPT_ASSIGN_OR_RETURN(detail::OpenedLora opened, detail::open_lora(in_path, out_path, oo));
  const std::unique_ptr<OpenedInput>& in = opened.input;
  const Checkpoint& ck = in->checkpoint();
  const LoraFile& lf = opened.lora;
  ResizeReport report;
  std::vector<Pair> pairs;
  std::vector<bool> factor(ck.tensors.size(), false);
  uint64_t other_modules = 0, old_rank = 0;
  for (size_t mi = 0; mi < lf.modules.size(); ++mi) {
    const LoraModule& m = lf.modules[mi];
    if (m.dora)
      return Status(ErrorCode::kUnsupported,
                    fmt::format("module {} is DoRA: its magnitude vector was trained for the "
                                "full-rank ΔW, so a resized module would be silently different",
                                m.name),
                    in_path);
    if (m.kind != LoraKind::kLora) {
      ++other_modules;
      continue;
    }
    Pair p;
    p.module = mi;
    for (size_t ti : m.tensors) {
      const TensorInfo& t = ck.tensors[ti];
      const std::string_view suffix = std::string_view(t.name).substr(m.name.size());
      if (suffix == ".alpha") p.alpha = &t;
      else if (suffix.find("down") != std::string_view::npos || suffix == ".lora_A.weight") p.down = &t;
      else if (suffix.find("up") != std::string_view::npos || suffix == ".lora_B.weight") p.up = &t;
    }
    if (!p.down || !p.up || p.down->shape.size() < 2 || p.up->shape.size() < 2) {
      ++other_modules;
      continue;
    }
    p.r = p.down->shape[0];
    p.m = p.up->shape[0];
    p.n = p.down->numel() / p.r;
    if (p.up->numel() != p.m * p.r)
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("module {}: up {} and down {} disagree on the rank", m.name,
                                shape_to_string(p.up->shape), shape_to_string(p.down->shape)),
                    in_path);
    p.scale = m.alpha ? *m.alpha / static_cast<double>(p.r) : 1.0;
    old_rank = std::max(old_rank, p.r);
    for (const TensorInfo* t : {p.down, p.up, p.alpha})
      if (t) factor[static_cast<size_t>(t - ck.tensors.data())] = true;
    pairs.push_back(p);
  }
  if (pairs.empty())
    return Status(ErrorCode::kInvalidArgument,
                  "no LoRA module (lora_down/lora_up or lora_A/lora_B pairs) to resize", in_path);

  // Pass 1: the new ranks, from the singular values, on every core.
  {
    const int blas_before = detail::blas_threads(1);
    std::atomic<size_t> next{0};
    std::mutex mu;
    Status first;
    auto worker = [&] {
      std::vector<float> up, down;
      for (size_t i; (i = next.fetch_add(1)) < pairs.size();) {
        Pair& p = pairs[i];
        Status s = load_pair(*in, p, up, down);
        Result<std::vector<float>> sv = s.is_ok()
            ? detail::product_singular_values(up.data(), down.data(), p.m, p.r, p.n)
            : Result<std::vector<float>>(s);
        if (!sv) {
          std::lock_guard<std::mutex> lock(mu);
          if (first.is_ok()) first = sv.status();
          return;
        }
        const bool conv3 = p.down->shape.size() == 4 &&
                           (p.down->shape[2] > 1 || p.down->shape[3] > 1);
        const uint64_t cap = conv3 && options.conv_rank ? *options.conv_rank : options.rank;
        const uint64_t len = std::min(p.m, p.n);
        uint64_t k = kohya_rank(*sv, len, cap, options.rule, options.param);
        // A rank above the module's own would only add zero singular values.
        k = std::min(k, p.r);
        p.new_rank = k;
        p.new_alpha = p.scale * static_cast<double>(k);
        double all = 0, kept = 0, sall = 0, skept = 0;
        for (size_t j = 0; j < sv->size(); ++j) {
          const double v = (*sv)[j];
          all += v * v, sall += std::abs(v);
          if (j < k) kept += v * v, skept += std::abs(v);
        }
        p.fro_kept = all > 0 ? std::sqrt(kept / all) : 1.0;
        p.sum_kept = sall > 0 ? skept / sall : 1.0;
      }
    };
    const unsigned threads = options.run.threads ? options.run.threads
                                                 : std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> pool;
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (auto& t : pool) t.join();
    detail::blas_threads(blas_before);
    CKPT_RETURN_IF_ERROR(first);
  }

  // Pass 2: the plan. Other tensors copied first; then the modules in windows of one per
  // worker thread (their downs, then ups, then alphas), so that the threads compute different
  // modules instead of waiting on the one whose down was just written.
  Plan plan;
  in->add_inputs(plan);
  plan.keep_order = true;
  std::vector<const Pair*> at(ck.tensors.size(), nullptr);
  for (const Pair& p : pairs) at[static_cast<size_t>(p.down - ck.tensors.data())] = &p;
  std::vector<std::array<PlannedTensor, 3>> groups;  // down, up, alpha (no producer: none)
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const TensorInfo& t = ck.tensors[i];
    const DType to = options.dtype && is_float(t.dtype) ? *options.dtype : t.dtype;
    if (!factor[i]) {
      ++report.copied;
      plan.tensors.push_back({t.name, to, t.shape, in->producer(t, to)});
      continue;
    }
    const Pair* p = at[i];
    if (!p) continue;  // up and alpha go with their down
    auto shared = std::make_shared<PairJob>();
    shared->in = in.get();
    shared->pair = p;
    Shape ds = p->down->shape, us = p->up->shape;
    ds[0] = p->new_rank;
    us[1] = p->new_rank;
    const DType dd = options.dtype ? *options.dtype : p->down->dtype;
    const DType ud = options.dtype ? *options.dtype : p->up->dtype;
    std::array<PlannedTensor, 3> g;
    g[0] = {p->down->name, dd, ds, std::make_unique<detail::FactorProducer>(shared, false, dd)};
    g[1] = {p->up->name, ud, us, std::make_unique<detail::FactorProducer>(shared, true, ud)};
    if (p->alpha) {
      const DType ad = options.dtype && is_float(p->alpha->dtype) ? *options.dtype : p->alpha->dtype;
      if (!is_float(ad))
        return Status(ErrorCode::kUnsupported,
                      fmt::format("the alpha of {} is {}", lf.modules[p->module].name,
                                  dtype_name(ad)),
                      in_path);
      g[2] = {p->alpha->name, ad, p->alpha->shape,
              std::make_unique<detail::ScalarProducer>(static_cast<float>(p->new_alpha), ad)};
    }
    groups.push_back(std::move(g));
  }
  const size_t window = options.run.threads ? options.run.threads
                                            : std::max(1u, std::thread::hardware_concurrency());
  for (size_t w = 0; w < groups.size(); w += window)
    for (size_t part = 0; part < 3; ++part)
      for (size_t i = w; i < std::min(groups.size(), w + window); ++i)
        if (groups[i][part].producer) plan.tensors.push_back(std::move(groups[i][part]));
  plan.metadata = ck.metadata;
  for (const char* k : {"sshs_model_hash", "sshs_legacy_hash", "modelspec.hash_sha256"})
    plan.metadata.erase(k);
  const std::string comment = plan.metadata.count("ss_training_comment")
                                  ? plan.metadata["ss_training_comment"]
                                  : "";
  if (options.rule == ResizeRule::kFixed) {
    const uint64_t conv = options.conv_rank.value_or(options.rank);
    plan.metadata["ss_training_comment"] = fmt::format(
        "dimension is resized from {} to {}{}; {}", old_rank, options.rank,
        conv == options.rank ? "" : fmt::format(" (conv: {})", conv), comment);
    plan.metadata["ss_network_dim"] = std::to_string(options.rank);
    plan.metadata["ss_network_alpha"] = fmt::format("{}", pairs.back().new_alpha);
  } else {
    plan.metadata["ss_training_comment"] = fmt::format(
        "Dynamic resize with {}: {} from {}; {}", rule_name(options.rule), options.param, old_rank,
        comment);
    plan.metadata["ss_network_dim"] = "Dynamic";
    plan.metadata["ss_network_alpha"] = "Dynamic";
  }
  plan.metadata["ckptkit.lora_resize"] = fmt::format(
      "{{\"from\":\"{}\",\"rule\":\"{}\",\"param\":{},\"rank\":{},\"conv_rank\":{}}}",
      std::filesystem::path(in_path).filename().string(), rule_name(options.rule), options.param,
      options.rank, options.conv_rank ? std::to_string(*options.conv_rank) : "null");
  RunOptions run = options.run;
  if (run.label == RunOptions{}.label) run.label = "resizing";
  const int blas_before = detail::blas_threads(1);
  auto stats = execute_plan(plan, out_path, run);
  detail::blas_threads(blas_before);
  if (!stats) return stats.status();
  report.stats = *stats;
  for (const Pair& p : pairs)
    report.modules.push_back({lf.modules[p.module].name, p.r, p.new_rank, p.new_alpha, p.fro_kept,
                              p.sum_kept});
  if (other_modules)
    report.notes.push_back(fmt::format(
        "{} modules are no lora_down/lora_up pair (LoHa, LoKr, Tucker, full): copied unchanged",
        other_modules));
  return report;
}

}  // namespace ckptkit
