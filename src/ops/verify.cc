// verify: readers, lint, anatomy defects and a streamed value pass. See ckptkit/verify.h.
#include "ckptkit/verify.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "ckptkit/anatomy.h"
#include "ckptkit/cast.h"
#include "ckptkit/hash.h"
#include "ckptkit/ops.h"
#include "ckptkit/safetensors.h"
#include "ckptkit/scan.h"
#include "io/file.h"
#include "model/schedule.h"
#include "ops/input.h"
#include "tensor/quant.h"

namespace ckptkit {
namespace {

constexpr uint64_t kEocdWindow = 65535 + 22;  // a ZIP comment plus the end record

struct Stats {
  uint64_t nan = 0, inf = 0, zero = 0;
  uint32_t max_abs_bits = 0;  ///< of the largest finite |value| (IEEE order = value order)
};

/// Counts over F32 values (SIMD, ckptkit/cast.h).
void accumulate(const uint8_t* p, uint64_t n, Stats& s) {
  uint64_t out[4] = {0, 0, 0, s.max_abs_bits};
  f32_stats(reinterpret_cast<const float*>(p), n, out);
  s.nan += out[0];
  s.inf += out[1];
  s.zero += out[2];
  s.max_abs_bits = static_cast<uint32_t>(out[3]);
}

/// What the loaders do with a broken noise schedule (docs/models.md, "Noise-schedule buffers").
constexpr std::string_view kScheduleConsequence =
    "A1111/Forge's original-code path samples with the file's schedule (images come out as "
    "noise); stable-diffusion.cpp ignores an invalid alphas_cumprod with a warning and uses its "
    "own; ComfyUI computes its own schedule and never reads these buffers";

/// The unit roundoff of a floating-point type: how far a stored value may be from the exact one.
double unit_roundoff(DType t) {
  switch (t) {
    case DType::F64: return std::ldexp(1.0, -53);
    case DType::F32: return std::ldexp(1.0, -24);
    case DType::F16: return std::ldexp(1.0, -11);
    case DType::BF16: return std::ldexp(1.0, -8);
    default: return std::ldexp(1.0, -3);  // FP8 and the like: only gross damage is visible
  }
}

/// SD1/SD2's DDPM buffers, where a file has them (model/schedule.h): alphas_cumprod in (0, 1]
/// and strictly decreasing, betas in (0, 1), and every buffer equal to what the training code
/// derives from the file's own betas, within the stored type's rounding.
void check_schedule(const Checkpoint& ck, const InputFile& file, VerifyReport& r) {
  const auto& names = detail::ddpm_buffer_names();
  std::map<std::string, std::vector<double>, std::less<>> values;
  std::map<std::string, DType, std::less<>> types;
  for (const TensorInfo& t : ck.tensors) {
    if (std::find(names.begin(), names.end(), t.name) == names.end()) continue;
    if (!is_float(t.dtype) || t.shape.size() != 1) continue;
    auto v = detail::read_small_values(ck, file, t, 100000);
    if (!v) continue;  // not readable in place: the value pass reports what it finds
    values.emplace(t.name, std::move(*v));
    types.emplace(t.name, t.dtype);
  }
  auto warn = [&](std::string_view name, std::string what) {
    r.findings.push_back(
        {"schedule-invalid", "warning",
         fmt::format("noise schedule buffer '{}' {}. {}", name, what, kScheduleConsequence),
         std::string(name), UINT64_MAX});
  };
  // Values outside the range a probability product can take, or out of order.
  auto in_range = [&](std::string_view name, bool closed_top) {
    auto it = values.find(name);
    if (it == values.end()) return false;
    const std::vector<double>& v = it->second;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < v.size(); ++i)
      if (!(v[i] > 0 && (closed_top ? v[i] <= 1 : v[i] < 1)) && bad++ == 0) first = i;
    if (bad > 0) {
      warn(name, fmt::format("has {} of {} values outside {} (the first at index {}: {})", bad,
                             v.size(), closed_top ? "(0, 1]" : "(0, 1)", first, v[first]));
      return false;
    }
    return true;
  };
  if (in_range("alphas_cumprod", true)) {
    const std::vector<double>& a = values.find("alphas_cumprod")->second;
    // Strictly decreasing; in F16/BF16 neighbours near 1 can round to the same value (the
    // smallest real step, about 0.00085, is below two roundoffs), so there equal is allowed.
    const bool strict = 2 * unit_roundoff(types.find("alphas_cumprod")->second) < 0.0008;
    for (size_t i = 1; i < a.size(); ++i)
      if (strict ? !(a[i] < a[i - 1]) : !(a[i] <= a[i - 1])) {
        warn("alphas_cumprod", fmt::format("is not {}decreasing: index {} holds {} after {}",
                                           strict ? "strictly " : "", i, a[i], a[i - 1]));
        break;
      }
  }
  if (!in_range("betas", false)) return;
  const std::vector<double>& betas = values.find("betas")->second;
  double sum = 0;
  for (double b : betas) sum += b;
  const auto expected = detail::ddpm_buffers(betas);
  for (std::string_view name : names) {
    auto got = values.find(name);
    if (got == values.end() || name == "betas") continue;
    const std::vector<double>& e = expected.find(name)->second;
    if (got->second.size() != e.size()) {
      warn(name, fmt::format("has {} values but betas has {}", got->second.size(), e.size()));
      continue;
    }
    // The file's values were rounded once from double; the betas they are checked against
    // were rounded too, which moves the products by about Σβ roundoffs.
    const double tol = 8 * unit_roundoff(types.find(name)->second) * (2 + sum);
    double scale = 0;
    for (double x : e) scale = std::max(scale, std::abs(x));
    for (size_t i = 0; i < e.size(); ++i) {
      const double x = got->second[i];
      if (std::abs(x - e[i]) <= tol * (std::abs(e[i]) + 1e-3 * scale)) continue;
      warn(name, fmt::format("does not follow from betas: index {} holds {}, the training "
                             "code's formula gives {}",
                             i, x, e[i]));
      break;
    }
  }
}

float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

void lint(const Checkpoint& ck, const InputFile& file, VerifyReport& r) {
  if (ck.format != FileFormat::kSafetensors) return;
  if (ck.quirks.leading_whitespace > 0)
    r.findings.push_back({"header-leading-whitespace", "warning",
                          fmt::format("the header JSON starts with {} bytes of whitespace: the "
                                      "reference reader accepts it, some other parsers do not",
                                      ck.quirks.leading_whitespace),
                          "", 8});
  if (ck.quirks.trailing_whitespace > 7)
    r.findings.push_back({"header-trailing-whitespace", "info",
                          fmt::format("the header ends with {} bytes of whitespace (a writer "
                                      "pads at most 7)",
                                      ck.quirks.trailing_whitespace),
                          "", 8 + ck.header_size - ck.quirks.trailing_whitespace});
  if (!ck.quirks.canonical_order)
    r.findings.push_back({"data-order", "info",
                          "the tensors' data is not in the reference writer's order (dtype, "
                          "then name): valid, but rewriting the file changes its AutoV3",
                          "", UINT64_MAX});
  if (ck.header_size > kDefaultMaxHeaderBytes / 10 * 9)
    r.findings.push_back({"header-near-cap", "warning",
                          fmt::format("the header is {} bytes, near the 100,000,000-byte limit "
                                      "readers enforce: some will refuse it",
                                      ck.header_size),
                          "", 0});
  // A ZIP end record in the last 64 KiB: the same bytes also read as a ZIP archive, so a tool
  // that trusts the content over the extension may load something else (torch.load would).
  const uint64_t n = std::min<uint64_t>(file.size(), kEocdWindow);
  std::vector<uint8_t> tail(n);
  if (n >= 22 && file.pread_exact(tail, file.size() - n, "the end of the file").is_ok()) {
    for (uint64_t i = n - 22 + 1; i-- > 0;) {
      if (tail[i] == 'P' && tail[i + 1] == 'K' && tail[i + 2] == 5 && tail[i + 3] == 6) {
        r.findings.push_back({"zip-polyglot", "warning",
                              "the file also reads as a ZIP archive (an end-of-central-directory "
                              "record near its end): a polyglot that torch.load or zip tools "
                              "would open as something else",
                              "", file.size() - n + i});
        break;
      }
    }
  }
}

/// The value pass: every floating-point tensor, each chunk cast to F32 and counted.
void value_pass(const detail::OpenedInput& in, const Anatomy& a, const VerifyOptions& o,
                VerifyReport& r) {
  const Checkpoint& ck = in.checkpoint();
  std::vector<Role> role(ck.tensors.size(), Role::kUnknown);
  for (const Component& c : a.components)
    for (size_t i : c.tensors) role[i] = c.role;
  std::vector<size_t> todo;
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const TensorInfo& t = ck.tensors[i];
    const bool readable = is_quantized(t.dtype)
                              ? can_dequantize(t.dtype)  // GGUF blocks
                              : is_float(t.dtype) && can_cast(t.dtype, DType::F32);
    if (readable && t.numel() > 0) todo.push_back(i);
  }
  std::vector<Stats> stats(ck.tensors.size());
  std::vector<Status> errors(ck.tensors.size());
  unsigned threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<size_t>(threads, std::max<size_t>(todo.size(), 1)));
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> values{0}, bytes{0};
  const uint64_t buffer = std::max<uint64_t>(o.buffer_bytes, 1u << 16);
  if (o.monitor != nullptr)
    for (size_t i : todo) o.monitor->total.fetch_add(ck.tensors[i].nbytes());
  auto cancelled = [&] { return o.monitor != nullptr && o.monitor->cancel.load(); };
  auto worker = [&] {
    AlignedBuffer out(buffer), scratch(buffer);
    for (size_t k; !cancelled() && (k = next.fetch_add(1)) < todo.size();) {
      const size_t i = todo[k];
      const TensorInfo& t = ck.tensors[i];
      auto producer = in.producer(t, DType::F32);
      const uint64_t per_elem = std::max<uint64_t>(4, producer->scratch_bytes_per_element());
      // Whole blocks of a quantized tensor (256 is a multiple of every block size).
      const uint64_t g = is_quantized(t.dtype) ? 256 : 8;
      const uint64_t per_chunk = std::max<uint64_t>(g, buffer / per_elem / g * g);
      const uint64_t numel = t.numel();
      for (uint64_t first = 0; first < numel; first += per_chunk) {
        const uint64_t n = std::min(per_chunk, numel - first);
        Status st = producer->produce(first, n, out.span().first(n * 4), scratch.span());
        if (!st.is_ok()) {
          errors[i] = st;
          break;
        }
        accumulate(out.data(), n, stats[i]);
        if (cancelled()) break;
      }
      if (o.monitor != nullptr) o.monitor->done.fetch_add(t.nbytes());
      values += numel;
      bytes += t.nbytes();
    }
  };
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back(worker);
  worker();
  for (std::thread& th : pool) th.join();
  r.tensors_checked = todo.size();
  r.values_checked = values.load();
  r.bytes_read = bytes.load();

  for (size_t i : todo) {
    const TensorInfo& t = ck.tensors[i];
    const Stats& s = stats[i];
    const uint64_t at = ck.data_offset + t.begin;
    if (!errors[i].is_ok()) {
      r.findings.push_back({"unreadable-data", "error", errors[i].message(), t.name,
                            errors[i].has_offset() ? errors[i].offset() : at});
      continue;
    }
    if (s.nan > 0)
      r.findings.push_back(
          {"nan", "error", fmt::format("{} NaN values of {}", s.nan, t.numel()), t.name, at});
    if (s.inf > 0)
      r.findings.push_back(
          {"inf", "error", fmt::format("{} infinite values of {}", s.inf, t.numel()), t.name, at});
    // A scalar or a bias can legitimately be zero; a whole weight cannot.
    if (s.zero == t.numel() && t.numel() > 1 && role[i] != Role::kTrainingExtra &&
        role[i] != Role::kModelConfig)
      r.findings.push_back(
          {"all-zero", "warning", fmt::format("all {} values are zero", t.numel()), t.name, at});
    const double max_abs = from_bits(s.max_abs_bits);
    if (max_abs > o.max_abs && role[i] != Role::kTrainingExtra && role[i] != Role::kModelConfig &&
        role[i] != Role::kLora)
      r.findings.push_back(
          {"magnitude", "warning",
           fmt::format("largest |value| is {:g}, far above what trained {} weights hold "
                       "(limit {:g})",
                       max_abs, role_name(role[i]), o.max_abs),
           t.name, at});
  }
}

}  // namespace

bool VerifyReport::problems() const {
  return std::any_of(findings.begin(), findings.end(),
                     [](const VerifyFinding& f) { return f.severity != "info"; });
}

VerifyReport verify_file(const std::string& path, const VerifyOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  VerifyReport r;
  r.path = path;
  auto done = [&] {
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  };
  auto file = InputFile::open(path);
  if (!file) {
    r.error = file.status();
    return done();
  }
  // 1. The readers (and the scan). A file that does not read is the finding.
  auto checked = read_and_scan(path, options.limits);
  if (!checked) {
    const Status& st = checked.status();
    const bool foreign = st.code() == ErrorCode::kUnsupported;
    r.format = "unreadable";
    r.findings.push_back({foreign ? "not-a-model" : "corrupt", "error", st.message(), st.tensor(),
                          st.has_offset() ? st.offset() : UINT64_MAX});
    return done();
  }
  const Checkpoint& ck = checked->checkpoint;
  r.format = std::string(format_name(ck.format));
  if (checked->scan) {
    const ScanReport& s = *checked->scan;
    if (s.verdict != Verdict::kSafe)
      r.findings.push_back({"unsafe-pickle", s.verdict == Verdict::kDangerous ? "error" : "warning",
                            fmt::format("scan: {} — {}", verdict_name(s.verdict), s.summary), "",
                            UINT64_MAX});
  }
  // 2. Lint.
  lint(ck, *file, r);
  // 3. Anatomy.
  const Anatomy a = analyze(ck, &*file);
  r.architecture = a.architecture;
  for (const Defect& d : a.defects)
    r.findings.push_back(
        {d.code, d.severity, d.message, d.tensors.empty() ? "" : d.tensors[0], UINT64_MAX});
  check_schedule(ck, *file, r);
  // 3b. Hashes the metadata claims (kohya's sshs_*, ModelSpec's hash_sha256): one more read,
  // only for files that carry them.
  if (ck.metadata.count("sshs_model_hash") || ck.metadata.count("sshs_legacy_hash") ||
      ck.metadata.count("modelspec.hash_sha256")) {
    HashOptions ho;
    ho.algos = {HashAlgo::kAutoV3};
    const FileHashes h = hash_file(path, ho);
    for (const EmbeddedHash& e : h.embedded) {
      if (e.matches) continue;
      if (e.computed.empty())
        r.findings.push_back({"embedded-hash-unchecked", "info",
                              fmt::format("{} = {} cannot be checked: {}", e.key, e.stored, e.note),
                              "", UINT64_MAX});
      else
        r.findings.push_back({"embedded-hash-mismatch", "warning",
                              fmt::format("{} says {} but the file gives {} ({}): the file was "
                                          "changed after the hash was written, or is damaged",
                                          e.key, e.stored, e.computed, e.note),
                              "", UINT64_MAX});
    }
  }
  // 4. Values.
  if (options.values) {
    detail::OpenOptions open;
    open.limits = options.limits;
    open.allow_dangerous = true;  // only tensor bytes are read; nothing is ever run
    // The verdict and tensor table from step 1: the file is not read or scanned again.
    open.verdict = checked->scan ? std::optional<Verdict>(checked->scan->verdict)
                                 : std::optional<Verdict>(Verdict::kSafe);
    open.checkpoint = &ck;
    const std::string spill = (std::filesystem::temp_directory_path() / "x").string();
    auto in = detail::OpenedInput::open(path, spill, open);
    if (!in) {
      r.findings.push_back({"unreadable-data", "error", in.status().message(), "",
                            in.status().has_offset() ? in.status().offset() : UINT64_MAX});
    } else {
      value_pass(**in, a, options, r);
    }
  }
  return done();
}

}  // namespace ckptkit
