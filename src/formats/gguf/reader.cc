// Strict GGUF header reader. The layout and the order of the checks are described in
// include/ckptkit/gguf.h; every error names the absolute byte offset of the offending field.
#include "formats/gguf/reader.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <unordered_map>

#include "formats/sniff.h"
#include "io/errors.h"
#include "io/file.h"

namespace ckptkit {
namespace {

constexpr uint64_t kFixedHeader = 24;    // magic, version, n_tensors, n_kv
constexpr uint64_t kMinTensorInfo = 24;  // name length, n_dims, type, offset (empty name, 0 dims)
constexpr uint64_t kMinKv = 14;          // key length, 1-byte key, type, 1-byte value
constexpr uint64_t kChunk = 64 << 10;
constexpr uint32_t kMaxDims = 4;                                     // GGML_MAX_DIMS
constexpr uint64_t kMaxElements = static_cast<uint64_t>(INT64_MAX);  // ggml counts in int64

uint32_t load_le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

uint64_t load_le64(const uint8_t* p) {
  return static_cast<uint64_t>(load_le32(p)) | static_cast<uint64_t>(load_le32(p + 4)) << 32;
}

/// ggml's names for the type ids it defines or once defined, for messages about the ones
/// ckptkit does not read.
std::string_view ggml_type_label(uint32_t id) {
  static constexpr std::string_view kNames[] = {"F32",
                                                "F16",
                                                "Q4_0",
                                                "Q4_1",
                                                "Q4_2 (removed)",
                                                "Q4_3 (removed)",
                                                "Q5_0",
                                                "Q5_1",
                                                "Q8_0",
                                                "Q8_1",
                                                "Q2_K",
                                                "Q3_K",
                                                "Q4_K",
                                                "Q5_K",
                                                "Q6_K",
                                                "Q8_K",
                                                "IQ2_XXS",
                                                "IQ2_XS",
                                                "IQ3_XXS",
                                                "IQ1_S",
                                                "IQ4_NL",
                                                "IQ3_S",
                                                "IQ2_S",
                                                "IQ4_XS",
                                                "I8",
                                                "I16",
                                                "I32",
                                                "I64",
                                                "F64",
                                                "IQ1_M",
                                                "BF16",
                                                "Q4_0_4_4 (removed)",
                                                "Q4_0_4_8 (removed)",
                                                "Q4_0_8_8 (removed)",
                                                "TQ1_0",
                                                "TQ2_0",
                                                "IQ4_NL_4_4 (removed)",
                                                "IQ4_NL_4_8 (removed)",
                                                "IQ4_NL_8_8 (removed)",
                                                "MXFP4"};
  return id < std::size(kNames) ? kNames[id] : std::string_view();
}

/// Reads the header sequentially through a window over the source, refusing to go past the
/// end of the file (truncation) or past the header limit.
class Cursor {
 public:
  Cursor(const ByteSource& src, uint64_t limit) : src_(src), limit_(limit) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return src_.size() - pos_; }

  /// Makes [pos, pos + n) readable at here().
  Status need(uint64_t n, std::string_view what) {
    if (pos_ >= buf_start_ && pos_ - buf_start_ <= buf_.size() &&
        n <= buf_.size() - (pos_ - buf_start_))
      return Status::ok();
    if (n > left())
      return corrupt_at(pos_, "the file ends inside {}: {} bytes needed, {} left (truncated?)",
                        what, n, left());
    if (n > limit_ || pos_ > limit_ - n)
      return Status(ErrorCode::kLimitExceeded,
                    fmt::format("the header is longer than the limit of {} bytes (reading {} "
                                "needs {} bytes here); raise it if the file is trusted",
                                limit_, what, n),
                    {}, pos_);
    const uint64_t end = std::min(src_.size(), limit_);
    const uint64_t len = std::min(std::max(n, kChunk), end - pos_);
    buf_.resize(static_cast<size_t>(len));
    buf_start_ = pos_;
    return src_.read(buf_, pos_, what);
  }
  const uint8_t* here() const { return buf_.data() + (pos_ - buf_start_); }
  /// Moves past bytes made readable by need().
  void skip(uint64_t n) { pos_ += n; }

  Status u32(uint32_t& v, std::string_view what) {
    CKPT_RETURN_IF_ERROR(need(4, what));
    v = load_le32(here());
    pos_ += 4;
    return Status::ok();
  }
  Status u64(uint64_t& v, std::string_view what) {
    CKPT_RETURN_IF_ERROR(need(8, what));
    v = load_le64(here());
    pos_ += 8;
    return Status::ok();
  }
  /// A GGUF string: u64 length, bytes.
  Status string(std::string& out, std::string_view what) {
    const uint64_t at = pos_;
    uint64_t len;
    CKPT_RETURN_IF_ERROR(u64(len, what));
    if (len > left())
      return corrupt_at(at, "{}: length {} runs past the end of the file ({} bytes left)", what,
                        len, left());
    CKPT_RETURN_IF_ERROR(need(len, what));
    out.assign(reinterpret_cast<const char*>(here()), static_cast<size_t>(len));
    pos_ += len;
    return Status::ok();
  }
  Status bytes(std::vector<uint8_t>& out, uint64_t n, std::string_view what) {
    CKPT_RETURN_IF_ERROR(need(n, what));
    out.assign(here(), here() + n);
    pos_ += n;
    return Status::ok();
  }

 private:
  const ByteSource& src_;
  uint64_t limit_;
  uint64_t pos_ = 0;
  uint64_t buf_start_ = 0;
  std::vector<uint8_t> buf_;
};

bool is_known_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kF64); }

class Parser {
 public:
  Parser(const ByteSource& src, const GgufLimits& limits)
      : src_(src), limits_(limits), cur_(src, limits.max_header_bytes) {}

  Result<Checkpoint> parse() {
    Checkpoint ck;
    ck.format = FileFormat::kGguf;
    ck.file_size = src_.size();
    CKPT_RETURN_IF_ERROR(check_magic());
    CKPT_RETURN_IF_ERROR(check_version(ck.gguf.version));
    uint64_t n_tensors, n_kv;
    CKPT_RETURN_IF_ERROR(cur_.u64(n_tensors, "the tensor count"));
    CKPT_RETURN_IF_ERROR(cur_.u64(n_kv, "the key-value count"));
    const uint64_t room = src_.size() - kFixedHeader;
    if (n_tensors > room / kMinTensorInfo)
      return corrupt_at(8,
                        "n_tensors {} cannot fit: a tensor info takes at least {} bytes and {} "
                        "bytes follow the fixed header",
                        n_tensors, kMinTensorInfo, room);
    if (n_tensors > limits_.max_tensors)
      return Status(
          ErrorCode::kLimitExceeded,
          fmt::format("n_tensors {} is over the limit of {}", n_tensors, limits_.max_tensors), {},
          8);
    if (n_kv > room / kMinKv)
      return corrupt_at(16,
                        "n_kv {} cannot fit: a key-value pair takes at least {} bytes and {} "
                        "bytes follow the fixed header",
                        n_kv, kMinKv, room);
    if (n_kv > limits_.max_kv)
      return Status(ErrorCode::kLimitExceeded,
                    fmt::format("n_kv {} is over the limit of {}", n_kv, limits_.max_kv), {}, 16);

    ck.gguf.kv.reserve(static_cast<size_t>(std::min<uint64_t>(n_kv, 4096)));
    for (uint64_t i = 0; i < n_kv; ++i) CKPT_RETURN_IF_ERROR(read_kv(i, ck.gguf.kv));
    CKPT_RETURN_IF_ERROR(read_alignment(ck.gguf));

    ck.tensors.reserve(static_cast<size_t>(std::min<uint64_t>(n_tensors, 4096)));
    ck.gguf.tensors.reserve(ck.tensors.capacity());
    for (uint64_t i = 0; i < n_tensors; ++i) CKPT_RETURN_IF_ERROR(read_tensor_info(i, ck));

    ck.header_size = cur_.pos();
    const uint64_t a = ck.gguf.alignment;
    // ggml pads only when there are tensors; a tensor-less file's data section (empty) starts
    // right after the key-value pairs.
    ck.data_offset = n_tensors == 0 ? ck.header_size : (ck.header_size + a - 1) & ~(a - 1);
    if (ck.data_offset > src_.size())
      return corrupt_at(ck.header_size,
                        "the data section starts at {} (the end of the tensor infos rounded up "
                        "to the alignment {}), past the end of the file ({} bytes): truncated",
                        ck.data_offset, a, src_.size());
    CKPT_RETURN_IF_ERROR(check_ranges(ck));
    CKPT_RETURN_IF_ERROR(apply_orig_shapes(ck));
    for (const GgufKV& kv : ck.gguf.kv) ck.metadata.emplace(kv.key, kv.to_text());
    return ck;
  }

 private:
  Status check_magic() {
    uint8_t head[64] = {};
    const size_t n = static_cast<size_t>(std::min<uint64_t>(src_.size(), sizeof head));
    CKPT_RETURN_IF_ERROR(src_.read({head, n}, 0, "the magic"));
    if (n >= 4 && std::memcmp(head, "GGUF", 4) == 0) return Status::ok();
    const Sniffed kind = sniff({head, n});
    if (kind == Sniffed::kSafetensors)
      return corrupt_at(0, "not a GGUF file: this looks like a safetensors file");
    if (!describe_foreign(kind).empty() && kind != Sniffed::kEmpty)
      return corrupt_at(0, "not a GGUF file: this looks like {}", describe_foreign(kind));
    if (n < 4) return corrupt_at(0, "file is {} bytes, too short for the GGUF magic", src_.size());
    return corrupt_at(0, "bad magic {:02x} {:02x} {:02x} {:02x}: a GGUF file starts with 'GGUF'",
                      head[0], head[1], head[2], head[3]);
  }

  Status check_version(uint32_t& out) {
    uint32_t magic;
    CKPT_RETURN_IF_ERROR(cur_.u32(magic, "the magic"));
    uint32_t v;
    CKPT_RETURN_IF_ERROR(cur_.u32(v, "the version"));
    const uint32_t swapped = __builtin_bswap32(v);
    if ((v & 0xFFFF) == 0 && swapped >= 1 && swapped <= 3)
      return Status(ErrorCode::kUnsupported,
                    fmt::format("version field reads {:#010x}: a big-endian GGUF file (version "
                                "{} byte-swapped); only little-endian GGUF is supported",
                                v, swapped),
                    {}, 4);
    if (v == 0) return corrupt_at(4, "version 0 is not a GGUF version");
    if (v == 1)
      return Status(ErrorCode::kUnsupported,
                    "GGUF version 1 (u32 counts, 2023) is not supported: convert the file again "
                    "with a current tool",
                    {}, 4);
    if (v > 3)
      return Status(ErrorCode::kUnsupported,
                    fmt::format("GGUF version {} is newer than the versions read (2 and 3)", v), {},
                    4);
    out = v;
    return Status::ok();
  }

  Status read_kv(uint64_t index, std::vector<GgufKV>& out) {
    const uint64_t at = cur_.pos();
    GgufKV kv;
    CKPT_RETURN_IF_ERROR(cur_.string(kv.key, "a key"));
    if (kv.key.empty()) return corrupt_at(at, "key-value pair #{} has an empty key", index);
    auto [it, fresh] = key_at_.emplace(kv.key, at);
    if (!fresh)
      return corrupt_at(at, "duplicate key '{}' (first at offset {:#x})", kv.key, it->second);
    const uint64_t type_at = cur_.pos();
    uint32_t type;
    CKPT_RETURN_IF_ERROR(cur_.u32(type, "a value type"));
    if (!is_known_type(type))
      return corrupt_at(type_at, "key '{}': unknown value type {}", kv.key, type);
    kv.type = kv.elem = static_cast<GgufType>(type);
    uint64_t count = 1;
    if (kv.type == GgufType::kArray) {
      const uint64_t elem_at = cur_.pos();
      uint32_t elem;
      CKPT_RETURN_IF_ERROR(cur_.u32(elem, "an array's element type"));
      if (!is_known_type(elem))
        return corrupt_at(elem_at, "key '{}': unknown array element type {}", kv.key, elem);
      if (static_cast<GgufType>(elem) == GgufType::kArray)
        return Status(
            ErrorCode::kUnsupported,
            fmt::format("key '{}': an array of arrays (ggml refuses nested arrays)", kv.key), {},
            elem_at);
      kv.elem = static_cast<GgufType>(elem);
      const uint64_t count_at = cur_.pos();
      CKPT_RETURN_IF_ERROR(cur_.u64(count, "an array's length"));
      const uint64_t min_size = kv.elem == GgufType::kString ? 8 : gguf_type_size(kv.elem);
      if (count > cur_.left() / min_size)
        return corrupt_at(count_at,
                          "key '{}': an array of {} {} values cannot fit in the {} bytes left",
                          kv.key, count, gguf_type_name(kv.elem), cur_.left());
    }
    const std::string what = fmt::format("the value of key '{}'", kv.key);
    if (kv.elem == GgufType::kString) {
      kv.strings.resize(static_cast<size_t>(std::min<uint64_t>(count, 1 << 16)));
      for (uint64_t i = 0; i < count; ++i) {
        if (i >= kv.strings.size()) kv.strings.emplace_back();
        CKPT_RETURN_IF_ERROR(cur_.string(kv.strings[static_cast<size_t>(i)], what));
      }
    } else {
      CKPT_RETURN_IF_ERROR(cur_.bytes(kv.raw, count * gguf_type_size(kv.elem), what));
    }
    kv_offsets_.push_back(at);
    out.push_back(std::move(kv));
    return Status::ok();
  }

  Status read_alignment(GgufDetails& g) {
    for (size_t i = 0; i < g.kv.size(); ++i) {
      const GgufKV& kv = g.kv[i];
      if (kv.key != "general.alignment") continue;
      if (kv.type != GgufType::kU32)
        return corrupt_at(kv_offsets_[i], "general.alignment must be a u32, found {}",
                          kv.is_array() ? "an array" : gguf_type_name(kv.type));
      const uint32_t a = static_cast<uint32_t>(*kv.uint_at(0));
      if (!std::has_single_bit(a))
        return corrupt_at(kv_offsets_[i], "general.alignment {} is not a power of two", a);
      g.alignment = a;
    }
    return Status::ok();
  }

  Status read_tensor_info(uint64_t index, Checkpoint& ck) {
    const uint64_t at = cur_.pos();
    TensorInfo t;
    GgufTensorDetails d;
    d.info_offset = at;
    uint64_t len;
    CKPT_RETURN_IF_ERROR(cur_.u64(len, "a tensor name's length"));
    if (len > cur_.left())
      return corrupt_at(at, "tensor #{}: name length {} runs past the end of the file", index, len);
    if (len > limits_.max_name_bytes)
      return Status(ErrorCode::kLimitExceeded,
                    fmt::format("tensor #{}: name of {} bytes is over the limit of {}", index, len,
                                limits_.max_name_bytes),
                    {}, at);
    CKPT_RETURN_IF_ERROR(cur_.need(len, "a tensor name"));
    t.name.assign(reinterpret_cast<const char*>(cur_.here()), static_cast<size_t>(len));
    if (t.name.find('\0') != std::string::npos)
      return corrupt_at(at, "tensor #{}: name holds a NUL byte", index);
    cur_.skip(len);
    auto [it, fresh] = name_at_.emplace(t.name, at);
    if (!fresh)
      return corrupt_tensor(at, t.name, "duplicate tensor name (first at offset {:#x})",
                            it->second);

    const uint64_t dims_at = cur_.pos();
    CKPT_RETURN_IF_ERROR(cur_.u32(d.n_dims, "a tensor's n_dims"));
    if (d.n_dims > kMaxDims) {
      if (d.n_dims <= 16)
        return Status(ErrorCode::kUnsupported,
                      fmt::format("n_dims {} is more than ggml's {} (ComfyUI-GGUF's "
                                  "fix_5d_tensors.py writes such files; ggml refuses them too)",
                                  d.n_dims, kMaxDims),
                      {}, dims_at, t.name);
      return corrupt_tensor(dims_at, t.name, "n_dims {} is more than ggml's {}", d.n_dims,
                            kMaxDims);
    }
    const uint64_t ne_at = cur_.pos();
    uint64_t numel = 1;
    for (uint32_t j = 0; j < d.n_dims; ++j) {
      const uint64_t this_at = cur_.pos();
      CKPT_RETURN_IF_ERROR(cur_.u64(d.ne[j], "a tensor's ne"));
      if (d.ne[j] == 0) return corrupt_tensor(this_at, t.name, "ne[{}] is 0", j);
      if (d.ne[j] > kMaxElements)
        return corrupt_tensor(this_at, t.name, "ne[{}] = {} is not below 2^63", j, d.ne[j]);
      if (__builtin_mul_overflow(numel, d.ne[j], &numel) || numel > kMaxElements)
        return corrupt_tensor(ne_at, t.name, "ne {} holds 2^63 elements or more", ne_string(d));
    }
    const uint64_t type_at = cur_.pos();
    CKPT_RETURN_IF_ERROR(cur_.u32(d.ggml_type, "a tensor's ggml type"));
    auto dtype = dtype_from_ggml(d.ggml_type);
    if (!dtype) {
      const std::string_view label = ggml_type_label(d.ggml_type);
      if (label.empty())
        return Status(ErrorCode::kUnsupported, fmt::format("unknown ggml type id {}", d.ggml_type),
                      {}, type_at, t.name);
      return Status(ErrorCode::kUnsupported,
                    fmt::format("ggml type id {} ({}) is not supported", d.ggml_type, label), {},
                    type_at, t.name);
    }
    t.dtype = *dtype;
    const uint64_t block = dtype_info(t.dtype).block;
    if (d.ne[0] % block != 0)
      return corrupt_tensor(ne_at, t.name,
                            "ne[0] = {} is not a multiple of {}'s block of {} elements", d.ne[0],
                            dtype_name(t.dtype), block);
    auto nbytes = dtype_bytes(t.dtype, numel);
    if (!nbytes)
      return corrupt_tensor(ne_at, t.name, "{} ne {} is more bytes than 64 bits can count",
                            dtype_name(t.dtype), ne_string(d));
    const uint64_t offset_at = cur_.pos();
    CKPT_RETURN_IF_ERROR(cur_.u64(t.begin, "a tensor's data offset"));
    if (t.begin % ck.gguf.alignment != 0)
      return corrupt_tensor(offset_at, t.name,
                            "data offset {} is not a multiple of the alignment {}", t.begin,
                            ck.gguf.alignment);
    if (__builtin_add_overflow(t.begin, *nbytes, &t.end))
      return corrupt_tensor(offset_at, t.name, "data offset {} + {} bytes overflows 64 bits",
                            t.begin, *nbytes);
    for (uint32_t j = d.n_dims; j-- > 0;) t.shape.push_back(d.ne[j]);
    offset_at_.push_back(offset_at);
    ck.tensors.push_back(std::move(t));
    ck.gguf.tensors.push_back(d);
    return Status::ok();
  }

  static std::string ne_string(const GgufTensorDetails& d) {
    return shape_to_string(Shape(d.ne.begin(), d.ne.begin() + d.n_dims));
  }

  Status check_ranges(Checkpoint& ck) {
    const uint64_t data_size = src_.size() - ck.data_offset;
    uint64_t packed = 0;
    const uint64_t a = ck.gguf.alignment;
    for (size_t i = 0; i < ck.tensors.size(); ++i) {
      const TensorInfo& t = ck.tensors[i];
      if (t.end > data_size)
        return corrupt_tensor(offset_at_[i], t.name,
                              "data [{}, {}) runs past the end of the data section ({} bytes at "
                              "offset {}): truncated",
                              t.begin, t.end, data_size, ck.data_offset);
      if (ck.gguf.ggml_packed) {
        ck.gguf.ggml_packed = t.begin == packed;
        packed = (t.end + a - 1) & ~(a - 1);  // t.end <= file size: no overflow
      }
    }
    std::vector<size_t> order(ck.tensors.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t x, size_t y) {
      return ck.tensors[x].begin != ck.tensors[y].begin ? ck.tensors[x].begin < ck.tensors[y].begin
                                                        : x < y;
    });
    for (size_t k = 1; k < order.size(); ++k) {
      const TensorInfo& prev = ck.tensors[order[k - 1]];
      const TensorInfo& t = ck.tensors[order[k]];
      if (t.begin < prev.end)
        return corrupt_tensor(offset_at_[order[k]], t.name,
                              "data [{}, {}) overlaps tensor '{}' at [{}, {})", t.begin, t.end,
                              prev.name, prev.begin, prev.end);
    }
    return Status::ok();
  }

  Status apply_orig_shapes(Checkpoint& ck) {
    std::unordered_map<std::string_view, size_t> by_key;
    for (size_t i = 0; i < ck.gguf.kv.size(); ++i) {
      const std::string& k = ck.gguf.kv[i].key;
      if (k.size() > kGgufOrigShapePrefix.size() && k.starts_with(kGgufOrigShapePrefix))
        by_key.emplace(std::string_view(k).substr(kGgufOrigShapePrefix.size()), i);
    }
    if (by_key.empty()) return Status::ok();
    for (size_t i = 0; i < ck.tensors.size(); ++i) {
      TensorInfo& t = ck.tensors[i];
      auto it = by_key.find(t.name);
      if (it == by_key.end()) continue;
      const GgufKV& kv = ck.gguf.kv[it->second];
      const uint64_t at = kv_offsets_[it->second];
      if (!kv.is_array() || (kv.elem != GgufType::kI32 && kv.elem != GgufType::kI64))
        return corrupt_tensor(at, t.name, "{} must be an array of i32, found {}{}", kv.key,
                              kv.is_array() ? "an array of " : "", gguf_type_name(kv.elem));
      Shape shape;
      for (uint64_t j = 0; j < kv.count(); ++j) {
        const std::optional<int64_t> v = kv.int_at(j);
        if (!v || *v < 0)
          return corrupt_tensor(at, t.name, "{} = {} has a negative dimension", kv.key,
                                kv.to_text());
        shape.push_back(static_cast<uint64_t>(*v));
      }
      const std::optional<uint64_t> n = shape_numel(shape);
      if (!n || *n != t.numel())
        return corrupt_tensor(at, t.name, "{} = {} does not hold the tensor's {} elements (ne {})",
                              kv.key, kv.to_text(), t.numel(), ne_string(ck.gguf.tensors[i]));
      t.shape = std::move(shape);
      ck.gguf.tensors[i].orig_shape = true;
    }
    return Status::ok();
  }

  const ByteSource& src_;
  const GgufLimits& limits_;
  Cursor cur_;
  std::unordered_map<std::string, uint64_t> key_at_;
  std::unordered_map<std::string, uint64_t> name_at_;
  std::vector<uint64_t> kv_offsets_;
  std::vector<uint64_t> offset_at_;
};

}  // namespace

Result<Checkpoint> read_gguf(const ByteSource& source, const GgufLimits& limits) {
  Parser p(source, limits);
  auto ck = p.parse();
  if (!ck) return ck.status().with_path(source.path());
  ck->path = source.path();
  return ck;
}

Result<Checkpoint> parse_gguf(std::span<const uint8_t> file_bytes, const GgufLimits& limits,
                              const std::string& path) {
  MemorySource src(file_bytes, path);
  return read_gguf(src, limits);
}

Result<Checkpoint> read_gguf(const std::string& path, const GgufLimits& limits) {
  CKPT_ASSIGN_OR_RETURN(InputFile file, InputFile::open(path));
  FileSource src(file);
  return read_gguf(src, limits);
}

}  // namespace ckptkit
