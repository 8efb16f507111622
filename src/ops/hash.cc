// hash: every requested digest from one sequential read. A reader fills a ring of reused
// buffers; each digest has its own thread and takes the chunks in order, so the digests run
// side by side and the read overlaps them.
#include "ckptkit/hash.h"

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "ckptkit/ops.h"
#include "ckptkit/reader.h"
#include "ckptkit/safetensors.h"
#include "hash/blake3.h"
#include "hash/sha256.h"
#include "io/errors.h"
#include "io/file.h"

namespace ckptkit {
namespace {

constexpr uint64_t kAutoV1Offset = 0x100000;
constexpr uint64_t kAutoV1Size = 0x10000;
constexpr size_t kRing = 8;  // lets fast digests run ahead of slow ones

class Digest {
 public:
  virtual ~Digest() = default;
  virtual void update(const uint8_t* p, size_t n) = 0;
  virtual std::string hex() = 0;
};

class Sha256Digest final : public Digest {
 public:
  void update(const uint8_t* p, size_t n) override { s_.update({p, n}); }
  std::string hex() override { return s_.hex(); }

 private:
  Sha256 s_;
};

class Crc32 final : public Digest {
 public:
  void update(const uint8_t* p, size_t n) override { crc_ = crc32_z(crc_, p, n); }
  std::string hex() override { return fmt::format("{:08x}", crc_); }

 private:
  uLong crc_ = crc32_z(0L, Z_NULL, 0);
};

class Blake3Digest final : public Digest {
 public:
  void update(const uint8_t* p, size_t n) override { b_.update({p, n}); }
  std::string hex() override {
    const auto d = b_.finalize();
    return to_hex(d.data(), d.size());
  }

 private:
  Blake3 b_;
};

std::string sha256_hex(std::span<const uint8_t> bytes) {
  Sha256 s;
  s.update(bytes);
  return s.hex();
}

/// A digest over [begin, end) of the file.
struct Stream {
  std::unique_ptr<Digest> digest;
  uint64_t begin, end;
  std::string result;
  /// Run by the reader right after each read, while the chunk is still in cache: for the fast
  /// digests (CRC-32, BLAKE3) beside slow ones (SHA-256), so fewer threads share the cores.
  bool on_reader = false;
};

/// Feeds every stream from one sequential read of `file`.
Status run_streams(const InputFile& file, std::vector<Stream>& streams, uint64_t buffer_bytes,
                   RunMonitor* monitor) {
  const uint64_t size = file.size();
  if (monitor != nullptr) monitor->total.fetch_add(size, std::memory_order_relaxed);
  const uint64_t chunks = (size + buffer_bytes - 1) / buffer_bytes;
  struct Slot {
    AlignedBuffer buf;
    uint64_t index = UINT64_MAX;  // chunk held
    size_t pending = 0;           // streams still to take it
  };
  std::array<Slot, kRing> ring;
  for (Slot& s : ring) s.buf = AlignedBuffer(buffer_bytes);
  std::mutex mu;
  std::condition_variable cv;
  bool failed = false;
  Status error;
  file.advise_sequential(0, size);

  size_t threaded = 0;
  for (const Stream& st : streams) threaded += !st.on_reader;
  auto feed = [&](Stream& st, const Slot& slot, uint64_t i) {
    const uint64_t off = i * buffer_bytes;
    const uint64_t len = std::min(buffer_bytes, size - off);
    const uint64_t lo = std::max(off, st.begin), hi = std::min(off + len, st.end);
    if (lo < hi) st.digest->update(slot.buf.data() + (lo - off), hi - lo);
  };
  auto worker = [&](Stream& st) {
    for (uint64_t i = 0; i < chunks; ++i) {
      Slot& slot = ring[i % kRing];
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return failed || slot.index == i; });
        if (failed) return;
      }
      feed(st, slot, i);
      std::lock_guard<std::mutex> lock(mu);
      if (--slot.pending == 0) cv.notify_all();
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(streams.size());
  for (Stream& st : streams)
    if (!st.on_reader) threads.emplace_back(worker, std::ref(st));
  for (uint64_t i = 0; i < chunks; ++i) {
    Slot& slot = ring[i % kRing];
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return slot.pending == 0; });
    }
    const uint64_t off = i * buffer_bytes;
    const uint64_t len = std::min(buffer_bytes, size - off);
    Status st = file.pread_exact(slot.buf.span().first(len), off, "file data");
    if (monitor != nullptr && st.is_ok()) {
      monitor->done.fetch_add(len, std::memory_order_relaxed);
      if (monitor->cancel.load(std::memory_order_relaxed))
        st = Status(ErrorCode::kCancelled, "cancelled by the caller", file.path());
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!st.is_ok()) {
        failed = true;
        error = st;
        cv.notify_all();
        break;
      }
      slot.index = i;
      slot.pending = threaded;
      cv.notify_all();
    }
    for (Stream& s : streams)
      if (s.on_reader) feed(s, slot, i);
  }
  for (std::thread& t : threads) t.join();
  if (failed) return error;
  for (Stream& st : streams) st.result = st.digest->hex();
  return Status::ok();
}

/// kohya's sshs_legacy_hash: the legacy window of the file as kohya wrote it, i.e. with only
/// the `ss_*` metadata in the header. Empty when it cannot be rebuilt.
std::string legacy_of_kohya_file(const InputFile& file, const Checkpoint& ck, std::string& why) {
  if (!ck.quirks.canonical_order) {
    why = "the data is not in the reference writer's order, so kohya's file cannot be rebuilt";
    return {};
  }
  std::map<std::string, std::string> ss;
  for (const auto& [k, v] : ck.metadata)
    if (k.starts_with("ss_")) ss.emplace(k, v);
  std::vector<TensorLayout> layouts;
  layouts.reserve(ck.tensors.size());
  for (const TensorInfo& t : ck.tensors) layouts.push_back({t.name, t.dtype, t.shape});
  auto header = build_safetensors_header(layouts, ss);
  if (!header) {
    why = header.status().message();
    return {};
  }
  const uint64_t h = header->bytes.size();
  const uint64_t total = h + (ck.file_size - ck.data_offset);
  const uint64_t end = std::min(total, kAutoV1Offset + kAutoV1Size);
  std::vector<uint8_t> window;
  for (uint64_t at = kAutoV1Offset; at < end;) {
    if (at < h) {
      const uint64_t n = std::min(h, end) - at;
      window.insert(window.end(), header->bytes.begin() + static_cast<ptrdiff_t>(at),
                    header->bytes.begin() + static_cast<ptrdiff_t>(at + n));
      at += n;
    } else {
      const uint64_t n = end - at;
      std::vector<uint8_t> part(n);
      if (!file.pread_exact(part, ck.data_offset + (at - h), "tensor data").is_ok()) {
        why = "the file could not be read";
        return {};
      }
      window.insert(window.end(), part.begin(), part.end());
      at += n;
    }
  }
  return sha256_hex(window).substr(0, 8);
}

std::string lower_hex(std::string_view s) {
  std::string out;
  if (s.starts_with("0x") || s.starts_with("0X")) s.remove_prefix(2);
  for (char c : s) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::string_view hash_algo_name(HashAlgo a) {
  switch (a) {
    case HashAlgo::kSha256:
      return "sha256";
    case HashAlgo::kAutoV1:
      return "autov1";
    case HashAlgo::kAutoV2:
      return "autov2";
    case HashAlgo::kAutoV3:
      return "autov3";
    case HashAlgo::kCrc32:
      return "crc32";
    case HashAlgo::kBlake3:
      return "blake3";
  }
  return "?";
}

std::vector<HashAlgo> all_hash_algos() {
  return {HashAlgo::kSha256, HashAlgo::kAutoV1, HashAlgo::kAutoV2,
          HashAlgo::kAutoV3, HashAlgo::kCrc32,  HashAlgo::kBlake3};
}

std::optional<HashAlgo> parse_hash_algo(std::string_view name) {
  std::string l;
  for (char c : name) l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (l == "sha-256") l = "sha256";
  if (l == "crc" || l == "crc-32") l = "crc32";
  for (HashAlgo a : all_hash_algos())
    if (hash_algo_name(a) == l) return a;
  return std::nullopt;
}

std::vector<EmbeddedHash> check_embedded_hashes(const std::map<std::string, std::string>& metadata,
                                                const std::string& data_sha256,
                                                const std::string& file_sha256,
                                                const std::string& legacy) {
  std::vector<EmbeddedHash> out;
  auto get = [&](const char* k) -> const std::string* {
    auto it = metadata.find(k);
    return it == metadata.end() ? nullptr : &it->second;
  };
  if (const std::string* v = get("sshs_model_hash")) {
    EmbeddedHash e{"sshs_model_hash", *v, data_sha256, false,
                   "kohya: SHA-256 of the data section (AutoV3 in full)"};
    e.matches = !data_sha256.empty() && lower_hex(*v) == data_sha256;
    if (data_sha256.empty()) e.note = "not a safetensors file: the data section is not defined";
    out.push_back(std::move(e));
  }
  if (const std::string* v = get("sshs_legacy_hash")) {
    EmbeddedHash e{"sshs_legacy_hash", *v, legacy, false,
                   "kohya: SHA-256 of the 64 KiB at 1 MiB of the file written with only its "
                   "ss_* metadata, 8 digits"};
    e.matches = !legacy.empty() && lower_hex(*v) == legacy;
    out.push_back(std::move(e));
  }
  if (const std::string* v = get("modelspec.hash_sha256")) {
    const std::string want = lower_hex(*v);
    EmbeddedHash e{"modelspec.hash_sha256", *v, data_sha256, false,
                   "ModelSpec: SHA-256 of the tensor data (\"0x\" + hex)"};
    e.matches = !data_sha256.empty() && want == data_sha256;
    if (!e.matches && !file_sha256.empty() && want == file_sha256) {
      e.matches = true;
      e.computed = file_sha256;
      e.note = "ModelSpec: matches the SHA-256 of the whole file (some writers hash that)";
    }
    out.push_back(std::move(e));
  }
  return out;
}

FileHashes hash_file(const std::string& path, const HashOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  FileHashes out;
  out.path = path;
  auto opened = InputFile::open(path);
  if (!opened) {
    out.error = opened.status();
    return out;
  }
  const InputFile& file = *opened;
  out.size = file.size();
  auto wants = [&](HashAlgo a) {
    return std::find(options.algos.begin(), options.algos.end(), a) != options.algos.end();
  };

  // The data section, when this is a valid safetensors file.
  std::optional<Checkpoint> ck;
  std::string not_safetensors;
  {
    auto r = read_checkpoint(path);
    if (!r)
      not_safetensors = "not a valid safetensors file: " + r.status().to_string();
    else if (r->format != FileFormat::kSafetensors)
      not_safetensors = fmt::format("not a safetensors file ({})", format_name(r->format));
    else
      ck = std::move(*r);
  }
  const bool embedded =
      ck && (ck->metadata.count("sshs_model_hash") || ck->metadata.count("sshs_legacy_hash") ||
             ck->metadata.count("modelspec.hash_sha256"));
  const bool need_file_sha = wants(HashAlgo::kSha256) || wants(HashAlgo::kAutoV2) ||
                             (embedded && ck->metadata.count("modelspec.hash_sha256"));
  const bool need_data_sha = ck && (wants(HashAlgo::kAutoV3) || embedded);

  std::vector<Stream> streams;
  int file_sha = -1, data_sha = -1, crc = -1, b3 = -1;
  auto add = [&](std::unique_ptr<Digest> d, uint64_t begin, uint64_t end) {
    streams.push_back({std::move(d), begin, end, {}});
    return static_cast<int>(streams.size() - 1);
  };
  if (need_file_sha) file_sha = add(std::make_unique<Sha256Digest>(), 0, out.size);
  if (need_data_sha) data_sha = add(std::make_unique<Sha256Digest>(), ck->data_offset, out.size);
  if (wants(HashAlgo::kCrc32)) crc = add(std::make_unique<Crc32>(), 0, out.size);
  if (wants(HashAlgo::kBlake3)) b3 = add(std::make_unique<Blake3Digest>(), 0, out.size);
  // Beside a SHA-256 thread, the fast digests ride on the reader.
  if (file_sha >= 0 || data_sha >= 0)
    for (int k : {crc, b3})
      if (k >= 0) streams[static_cast<size_t>(k)].on_reader = true;
  if (!streams.empty()) {
    Status st = run_streams(file, streams, std::max<uint64_t>(options.buffer_bytes, 1u << 16),
                            options.monitor);
    if (!st.is_ok()) {
      out.error = st;
      return out;
    }
  }
  std::string autov1;
  if (wants(HashAlgo::kAutoV1)) {
    const uint64_t begin = std::min(out.size, kAutoV1Offset);
    const uint64_t end = std::min(out.size, kAutoV1Offset + kAutoV1Size);
    std::vector<uint8_t> window(end - begin);
    Status st = file.pread_exact(window, begin, "the AutoV1 window");
    if (!st.is_ok()) {
      out.error = st;
      return out;
    }
    autov1 = sha256_hex(window).substr(0, 8);
  }
  for (HashAlgo a : options.algos) {
    HashValue v{a, {}, {}};
    switch (a) {
      case HashAlgo::kSha256:
        v.hex = streams[file_sha].result;
        break;
      case HashAlgo::kAutoV1:
        v.hex = autov1;
        break;
      case HashAlgo::kAutoV2:
        v.hex = streams[file_sha].result.substr(0, 10);
        break;
      case HashAlgo::kAutoV3:
        if (data_sha >= 0)
          v.hex = streams[data_sha].result.substr(0, 12);
        else
          v.not_defined = not_safetensors;
        break;
      case HashAlgo::kCrc32:
        v.hex = streams[crc].result;
        break;
      case HashAlgo::kBlake3:
        v.hex = streams[b3].result;
        break;
    }
    out.values.push_back(std::move(v));
  }
  if (embedded) {
    std::string why;
    std::string legacy;
    if (ck->metadata.count("sshs_legacy_hash")) legacy = legacy_of_kohya_file(file, *ck, why);
    out.embedded =
        check_embedded_hashes(ck->metadata, data_sha >= 0 ? streams[data_sha].result : "",
                              file_sha >= 0 ? streams[file_sha].result : "", legacy);
    for (EmbeddedHash& e : out.embedded)
      if (e.key == "sshs_legacy_hash" && legacy.empty()) e.note = why;
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

std::vector<FileHashes> hash_files(const std::vector<std::string>& paths,
                                   const HashOptions& options) {
  std::vector<FileHashes> out(paths.size());
  unsigned n = options.parallel_files ? options.parallel_files
                                      : std::max(1u, std::thread::hardware_concurrency());
  n = static_cast<unsigned>(std::min<size_t>(n, paths.size()));
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < paths.size();) out[i] = hash_file(paths[i], options);
  };
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < n; ++i) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  return out;
}

}  // namespace ckptkit
