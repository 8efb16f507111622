// The GGUF corrupt-file suite: a valid hand-built file (two tensors, two key-value pairs) and a
// table of single-field corruptions of it, each asserting its error code, the byte offset of
// the offending field, the tensor and a fragment of the rule; then write→read round trips.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <string>

#include "ckptkit/gguf.h"
#include "ckptkit/reader.h"
#include "test_util.h"

namespace ckptkit {
namespace {

/// Little-endian bytes, remembering where named fields start.
struct Bytes {
  std::vector<uint8_t> b;
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void str(std::string_view s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  uint64_t pos() const { return b.size(); }
};

/// One tensor info as written (fields may be wrong on purpose).
struct Info {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type;
  uint64_t offset;
};

/// Where the fields of the base file are.
struct Where {
  uint64_t extra_kv = 0;  // first extra key-value pair
  uint64_t info[2] = {};  // tensor infos
  uint64_t n_dims[2] = {};
  uint64_t ne[2] = {};
  uint64_t type[2] = {};
  uint64_t offset[2] = {};
  uint64_t header_end = 0;
};

/// Knobs of the base file: each corrupt case changes one.
struct Knobs {
  std::string magic = "GGUF";
  uint32_t version = 3;
  std::optional<uint64_t> n_tensors, n_kv;
  /// Extra key-value pairs after the two standard ones, appended raw by these writers.
  std::vector<std::function<void(Bytes&)>> extra_kv;
  std::optional<uint32_t> n_dims1;  // tensor b's n_dims as written (ne as given)
  Info t1{"b", {64}, 8 /* Q8_0 */, 256};
  std::optional<uint64_t> size;  // truncate to
  uint64_t pad_to = 32;          // the data section starts at a multiple of this
};

// Tensor a: F32 ne [32, 2] (256 bytes at 0); tensor b: Q8_0 ne [64] (2 blocks, 68 bytes at
// 256). Data section = 352 bytes (b padded to 32).
std::vector<uint8_t> make(const Knobs& k, Where* w = nullptr) {
  Where local;
  if (!w) w = &local;
  Bytes f;
  f.b.insert(f.b.end(), k.magic.begin(), k.magic.end());
  f.u32(k.version);
  f.u64(k.n_tensors.value_or(2));
  f.u64(k.n_kv.value_or(2 + k.extra_kv.size()));
  f.str("general.architecture");
  f.u32(8);
  f.str("flux");
  f.str("test.u32");
  f.u32(4);
  f.u32(7);
  w->extra_kv = f.pos();
  for (const auto& kv : k.extra_kv) kv(f);
  const Info infos[2] = {{"a", {32, 2}, 0, 0}, k.t1};
  for (int i = 0; i < 2; ++i) {
    const Info& t = infos[i];
    w->info[i] = f.pos();
    f.str(t.name);
    w->n_dims[i] = f.pos();
    f.u32(i == 1 && k.n_dims1 ? *k.n_dims1 : static_cast<uint32_t>(t.ne.size()));
    w->ne[i] = f.pos();
    for (uint64_t d : t.ne) f.u64(d);
    w->type[i] = f.pos();
    f.u32(t.type);
    w->offset[i] = f.pos();
    f.u64(t.offset);
  }
  w->header_end = f.pos();
  f.b.resize((f.b.size() + k.pad_to - 1) / k.pad_to * k.pad_to, 0);
  for (int i = 0; i < 352; ++i) f.b.push_back(static_cast<uint8_t>(i * 7));
  if (k.size) f.b.resize(*k.size);
  return f.b;
}

std::function<void(Bytes&)> kv_u32(std::string key, uint32_t v) {
  return [=](Bytes& f) {
    f.str(key);
    f.u32(4);
    f.u32(v);
  };
}

std::function<void(Bytes&)> kv_i32_array(std::string key, std::vector<int32_t> v) {
  return [=](Bytes& f) {
    f.str(key);
    f.u32(9);
    f.u32(5);
    f.u64(v.size());
    for (int32_t x : v) f.u32(static_cast<uint32_t>(x));
  };
}

TEST(GgufReader, BaseFileReads) {
  Where w;
  const auto bytes = make({}, &w);
  auto ck = parse_gguf(bytes, {}, "base.gguf");
  ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
  EXPECT_EQ(ck->format, FileFormat::kGguf);
  EXPECT_EQ(format_name(ck->format), "gguf");
  EXPECT_EQ(ck->path, "base.gguf");
  EXPECT_EQ(ck->header_size, w.header_end);
  EXPECT_EQ(ck->data_offset, 192u);
  EXPECT_EQ(ck->file_size, 192u + 352u);
  ASSERT_EQ(ck->tensors.size(), 2u);
  EXPECT_EQ(ck->tensors[0].name, "a");
  EXPECT_EQ(ck->tensors[0].dtype, DType::F32);
  EXPECT_EQ(ck->tensors[0].shape, (Shape{2, 32}));
  EXPECT_EQ(ck->tensors[0].begin, 0u);
  EXPECT_EQ(ck->tensors[0].end, 256u);
  EXPECT_EQ(ck->tensors[1].dtype, DType::Q8_0);
  EXPECT_EQ(ck->tensors[1].shape, (Shape{64}));
  EXPECT_EQ(ck->tensors[1].begin, 256u);
  EXPECT_EQ(ck->tensors[1].end, 256u + 68u);
  EXPECT_EQ(ck->gguf.version, 3u);
  EXPECT_EQ(ck->gguf.alignment, 32u);
  EXPECT_TRUE(ck->gguf.ggml_packed);
  ASSERT_EQ(ck->gguf.tensors.size(), 2u);
  EXPECT_EQ(ck->gguf.tensors[0].n_dims, 2u);
  EXPECT_EQ(ck->gguf.tensors[0].ne, (std::array<uint64_t, 4>{32, 2, 1, 1}));
  EXPECT_EQ(ck->gguf.tensors[1].ggml_type, 8u);
  EXPECT_EQ(ck->gguf.tensors[1].info_offset, w.info[1]);
  EXPECT_EQ(ck->metadata.at("general.architecture"), "flux");
  EXPECT_EQ(ck->metadata.at("test.u32"), "7");
  ASSERT_EQ(ck->gguf.kv.size(), 2u);
  EXPECT_EQ(ck->gguf.kv[1], gguf_kv("test.u32", uint32_t{7}));
}

TEST(GgufReader, VersionTwoAndScalarsAndAlignment) {
  Knobs k;
  k.version = 2;
  auto ck = parse_gguf(make(k));
  ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
  EXPECT_EQ(ck->gguf.version, 2u);

  // n_dims 0 (ggml accepts it): a scalar, torch shape [].
  Knobs s;
  s.t1 = {"b", {}, 0, 256};
  ck = parse_gguf(make(s));
  ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
  EXPECT_EQ(ck->tensors[1].shape, Shape{});
  EXPECT_EQ(ck->tensors[1].nbytes(), 4u);

  // Alignment 64: b at 256 is still aligned; the header grows past 192, data moves to 256.
  Knobs a;
  a.extra_kv.push_back(kv_u32("general.alignment", 64));
  a.pad_to = 64;
  ck = parse_gguf(make(a));
  ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
  EXPECT_EQ(ck->gguf.alignment, 64u);
  EXPECT_EQ(ck->data_offset, 256u);
  // Padded only to 32: the data section would start past the end of the header padding.
  a.pad_to = 32;
  a.size = 224 + 256 + 68;
  ck = parse_gguf(make(a));
  EXPECT_FALSE(ck.is_ok());
}

TEST(GgufReader, OrigShapeGivesTheTorchShape) {
  Knobs k;
  k.extra_kv.push_back(kv_i32_array("comfy.gguf.orig_shape.b", {4, 4, 2, 2}));
  auto ck = parse_gguf(make(k));
  ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
  EXPECT_EQ(ck->tensors[1].shape, (Shape{4, 4, 2, 2}));
  EXPECT_TRUE(ck->gguf.tensors[1].orig_shape);
  EXPECT_EQ(ck->gguf.tensors[1].ne[0], 64u);
  EXPECT_EQ(ck->gguf.tensors[1].n_dims, 1u);
  EXPECT_EQ(ck->metadata.at("comfy.gguf.orig_shape.b"), "[4, 4, 2, 2]");
  EXPECT_FALSE(ck->gguf.tensors[0].orig_shape);
}

struct Case {
  const char* name;
  std::function<void(Knobs&)> edit;
  ErrorCode code;
  std::function<uint64_t(const Where&)> offset;
  const char* tensor;
  const char* message_part;
  GgufLimits limits = {};
};

uint64_t at0(const Where&) { return 0; }

std::vector<Case> cases() {
  std::vector<Case> c;
  auto add = [&](Case x) { c.push_back(std::move(x)); };
  add({"bad_magic", [](Knobs& k) { k.magic = "GGML"; }, ErrorCode::kCorrupt, at0, "", "bad magic"});
  add({"big_endian", [](Knobs& k) { k.version = 0x03000000; }, ErrorCode::kUnsupported,
       [](const Where&) { return 4; }, "", "big-endian"});
  add({"version_1", [](Knobs& k) { k.version = 1; }, ErrorCode::kUnsupported,
       [](const Where&) { return 4; }, "", "version 1"});
  add({"version_4", [](Knobs& k) { k.version = 4; }, ErrorCode::kUnsupported,
       [](const Where&) { return 4; }, "", "version 4"});
  add({"version_0", [](Knobs& k) { k.version = 0; }, ErrorCode::kCorrupt,
       [](const Where&) { return 4; }, "", "version 0"});
  add({"absurd_n_tensors", [](Knobs& k) { k.n_tensors = 1ull << 40; }, ErrorCode::kCorrupt,
       [](const Where&) { return 8; }, "", "n_tensors"});
  add({"absurd_n_kv", [](Knobs& k) { k.n_kv = UINT64_MAX; }, ErrorCode::kCorrupt,
       [](const Where&) { return 16; }, "", "n_kv"});
  {
    Case x{"n_tensors_over_limit",
           [](Knobs&) {},
           ErrorCode::kLimitExceeded,
           [](const Where&) { return 8; },
           "",
           "limit"};
    x.limits.max_tensors = 1;
    add(x);
  }
  {
    Case x{"n_kv_over_limit",
           [](Knobs&) {},
           ErrorCode::kLimitExceeded,
           [](const Where&) { return 16; },
           "",
           "limit"};
    x.limits.max_kv = 1;
    add(x);
  }
  {
    Case x{"header_over_limit",    [](Knobs&) {}, ErrorCode::kLimitExceeded, nullptr, "",
           "longer than the limit"};
    x.limits.max_header_bytes = 100;
    add(x);
  }
  add({"nested_array",
       [](Knobs& k) {
         k.extra_kv.push_back([](Bytes& f) {
           f.str("x.nested");
           f.u32(9);
           f.u32(9);
           f.u64(0);
         });
       },
       ErrorCode::kUnsupported, [](const Where& w) { return w.extra_kv + 8 + 8 + 4; }, "",
       "array of arrays"});
  add({"duplicate_key", [](Knobs& k) { k.extra_kv.push_back(kv_u32("test.u32", 1)); },
       ErrorCode::kCorrupt, [](const Where& w) { return w.extra_kv; }, "", "duplicate key"});
  add({"empty_key", [](Knobs& k) { k.extra_kv.push_back(kv_u32("", 1)); }, ErrorCode::kCorrupt,
       [](const Where& w) { return w.extra_kv; }, "", "empty key"});
  add({"unknown_value_type",
       [](Knobs& k) {
         k.extra_kv.push_back([](Bytes& f) {
           f.str("x.t");
           f.u32(13);
         });
       },
       ErrorCode::kCorrupt, [](const Where& w) { return w.extra_kv + 11; }, "",
       "unknown value type 13"});
  add({"string_past_end",
       [](Knobs& k) {
         k.extra_kv.push_back([](Bytes& f) {
           f.str("x.s");
           f.u32(8);
           f.u64(1ull << 50);
         });
       },
       ErrorCode::kCorrupt, [](const Where& w) { return w.extra_kv + 15; }, "",
       "runs past the end"});
  add({"array_count_absurd",
       [](Knobs& k) {
         k.extra_kv.push_back([](Bytes& f) {
           f.str("x.a");
           f.u32(9);
           f.u32(10);
           f.u64(1ull << 40);
         });
       },
       ErrorCode::kCorrupt, [](const Where& w) { return w.extra_kv + 19; }, "", "cannot fit"});
  add({"alignment_not_power_of_two",
       [](Knobs& k) { k.extra_kv.push_back(kv_u32("general.alignment", 48)); }, ErrorCode::kCorrupt,
       [](const Where& w) { return w.extra_kv; }, "", "power of two"});
  add({"alignment_zero", [](Knobs& k) { k.extra_kv.push_back(kv_u32("general.alignment", 0)); },
       ErrorCode::kCorrupt, [](const Where& w) { return w.extra_kv; }, "", "power of two"});
  add({"alignment_not_u32",
       [](Knobs& k) {
         k.extra_kv.push_back([](Bytes& f) {
           f.str("general.alignment");
           f.u32(10);
           f.u64(32);
         });
       },
       ErrorCode::kCorrupt, [](const Where& w) { return w.extra_kv; }, "", "must be a u32"});
  add({"misaligned_offset", [](Knobs& k) { k.t1.offset = 260; }, ErrorCode::kCorrupt,
       [](const Where& w) { return w.offset[1]; }, "b", "not a multiple of the alignment"});
  add({"overlapping_offset", [](Knobs& k) { k.t1.offset = 224; }, ErrorCode::kCorrupt,
       [](const Where& w) { return w.offset[1]; }, "b", "overlaps tensor 'a'"});
  add({"offset_out_of_range", [](Knobs& k) { k.t1.offset = 1024; }, ErrorCode::kCorrupt,
       [](const Where& w) { return w.offset[1]; }, "b", "runs past the end"});
  add({"offset_overflows", [](Knobs& k) { k.t1.offset = UINT64_MAX - 31; }, ErrorCode::kCorrupt,
       [](const Where& w) { return w.offset[1]; }, "b", "overflows"});
  add({"data_truncated", [](Knobs& k) { k.size = 192 + 256 + 60; }, ErrorCode::kCorrupt,
       [](const Where& w) { return w.offset[1]; }, "b", "truncated"});
  add({"data_section_past_end", [](Knobs& k) { k.size = 180; }, ErrorCode::kCorrupt,
       [](const Where& w) { return w.header_end; }, "", "data section starts at 192"});
  add({"unknown_type", [](Knobs& k) { k.t1.type = 200; }, ErrorCode::kUnsupported,
       [](const Where& w) { return w.type[1]; }, "b", "unknown ggml type id 200"});
  add({"unsupported_type", [](Knobs& k) { k.t1.type = 16; }, ErrorCode::kUnsupported,
       [](const Where& w) { return w.type[1]; }, "b", "IQ2_XXS"});
  add({"five_dims",
       [](Knobs& k) {
         k.t1.ne = {64, 1, 1, 1, 1};
       },
       ErrorCode::kUnsupported, [](const Where& w) { return w.n_dims[1]; }, "b", "n_dims 5"});
  add({"absurd_dims", [](Knobs& k) { k.n_dims1 = 1000; }, ErrorCode::kCorrupt,
       [](const Where& w) { return w.n_dims[1]; }, "b", "n_dims 1000"});
  add({"ne_zero",
       [](Knobs& k) {
         k.t1.ne = {64, 0};
       },
       ErrorCode::kCorrupt, [](const Where& w) { return w.ne[1] + 8; }, "b", "ne[1] is 0"});
  add({"ne_negative",
       [](Knobs& k) {
         k.t1.ne = {64, UINT64_MAX};
       },
       ErrorCode::kCorrupt, [](const Where& w) { return w.ne[1] + 8; }, "b", "below 2^63"});
  add({"numel_overflow",
       [](Knobs& k) {
         k.t1.ne = {1ull << 32, 1ull << 32};
       },
       ErrorCode::kCorrupt, [](const Where& w) { return w.ne[1]; }, "b", "2^63 elements"});
  add({"ne0_not_block_multiple", [](Knobs& k) { k.t1.ne = {48}; }, ErrorCode::kCorrupt,
       [](const Where& w) { return w.ne[1]; }, "b", "block of 32"});
  {
    Case x{"name_too_long",
           [](Knobs& k) { k.t1.name = std::string(300, 'n'); },
           ErrorCode::kLimitExceeded,
           [](const Where& w) { return w.info[1]; },
           "",
           "name of 300 bytes"};
    add(x);
  }
  add({"name_with_nul", [](Knobs& k) { k.t1.name = std::string("b\0c", 3); }, ErrorCode::kCorrupt,
       [](const Where& w) { return w.info[1]; }, "", "NUL"});
  add({"duplicate_tensor_name", [](Knobs& k) { k.t1.name = "a"; }, ErrorCode::kCorrupt,
       [](const Where& w) { return w.info[1]; }, "a", "duplicate tensor name"});
  add({"empty_file", [](Knobs& k) { k.size = 0; }, ErrorCode::kCorrupt, at0, "", "too short"});
  add({"orig_shape_mismatch",
       [](Knobs& k) {
         k.extra_kv.push_back(kv_i32_array("comfy.gguf.orig_shape.b", {3, 5}));
       },
       ErrorCode::kCorrupt, [](const Where& w) { return w.extra_kv; }, "b",
       "does not hold the tensor's 64 elements"});
  add({"orig_shape_negative",
       [](Knobs& k) {
         k.extra_kv.push_back(kv_i32_array("comfy.gguf.orig_shape.b", {-8, -8}));
       },
       ErrorCode::kCorrupt, [](const Where& w) { return w.extra_kv; }, "b", "negative"});
  add({"orig_shape_wrong_type",
       [](Knobs& k) { k.extra_kv.push_back(kv_u32("comfy.gguf.orig_shape.b", 64)); },
       ErrorCode::kCorrupt, [](const Where& w) { return w.extra_kv; }, "b", "array of i32"});
  return c;
}

TEST(GgufReader, CorruptFilesAreRefusedWhereTheyBreak) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    Knobs k;
    c.edit(k);
    Where w;
    const auto bytes = make(k, &w);
    auto ck = parse_gguf(bytes, c.limits, "x.gguf");
    ASSERT_FALSE(ck.is_ok());
    const Status st = ck.status();
    EXPECT_EQ(st.code(), c.code) << st.to_string();
    if (c.offset) {
      EXPECT_EQ(st.offset(), c.offset(w)) << st.to_string();
    }
    EXPECT_LE(st.offset(), bytes.size());
    EXPECT_EQ(st.tensor(), c.tensor) << st.to_string();
    EXPECT_NE(st.message().find(c.message_part), std::string::npos) << st.to_string();
    EXPECT_EQ(st.path(), "x.gguf");
  }
}

TEST(GgufReader, TruncatedAnywhereIsCorruptAtOrBeforeTheCut) {
  Where w;
  const auto full = make({}, &w);
  // Up to the end of the last tensor's data (its padding to the alignment is not required).
  for (size_t n = 0; n < 192 + 256 + 68; ++n) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
    auto ck = parse_gguf(cut);
    ASSERT_FALSE(ck.is_ok()) << n;
    EXPECT_EQ(ck.status().code(), ErrorCode::kCorrupt) << n << ck.status().to_string();
    EXPECT_LE(ck.status().offset(), n) << ck.status().to_string();
  }
}

TEST(GgufReader, ForeignFilesAreNamed) {
  const std::string html = "<!DOCTYPE html><html><body>404</body></html>";
  auto ck = parse_gguf(std::span(reinterpret_cast<const uint8_t*>(html.data()), html.size()));
  ASSERT_FALSE(ck.is_ok());
  EXPECT_NE(ck.status().message().find("HTML"), std::string::npos) << ck.status().to_string();
}

// --- writer ----------------------------------------------------------------------------------

std::vector<GgufKV> every_kind_of_kv() {
  return {
      gguf_kv("general.architecture", "sdxl"),
      gguf_kv("t.u8", uint8_t{200}),
      gguf_kv("t.i8", int8_t{-100}),
      gguf_kv("t.u16", uint16_t{60000}),
      gguf_kv("t.i16", int16_t{-30000}),
      gguf_kv("t.u32", uint32_t{4000000000u}),
      gguf_kv("t.i32", int32_t{-2000000000}),
      gguf_kv("t.f32", 0.1f),
      gguf_kv("t.bool", true),
      gguf_kv("t.u64", uint64_t{18446744073709551615ull}),
      gguf_kv("t.i64", int64_t{-9223372036854775807ll}),
      gguf_kv("t.f64", 2.5e-300),
      gguf_kv_array("t.arr_i32", std::vector<int32_t>{1, -2, 3}),
      gguf_kv_array("t.arr_str", std::vector<std::string>{"a", "b\"c", ""}),
      gguf_kv_array("t.arr_bool", std::vector<bool>{true, false}),
      gguf_kv_array("t.arr_f64", std::vector<double>{1.5, -0.25}),
      gguf_kv_array("t.arr_empty", std::vector<uint8_t>{}),
  };
}

std::vector<uint8_t> file_of(const GgufHeader& h) {
  std::vector<uint8_t> f = h.bytes;
  f.resize(h.file_size(), 0);
  for (size_t i = h.bytes.size(); i < f.size(); ++i) f[i] = static_cast<uint8_t>(i);
  return f;
}

TEST(GgufWriter, RoundTripsShapesTypesValuesAndOffsets) {
  for (uint32_t alignment : {32u, 64u, 1u, 4096u}) {
    SCOPED_TRACE(alignment);
    const std::vector<GgufTensorLayout> tensors = {
        {"conv.weight", DType::F16, {320, 4, 3, 3}, {}},
        {"lin.weight", DType::Q4_K, {2, 512}, {}},
        {"bias", DType::F32, {320}, {}},
        {"ones", DType::BF16, {1, 1, 7}, {}},
        {"q8", DType::Q8_0, {3, 64}, {}},
        {"iq", DType::IQ4_XS, {256}, {}},
        {"i32", DType::I32, {5}, {}},
        {"scalar", DType::F32, {}, {}},
        {"reshaped", DType::Q6_K, {320, 4, 3, 3}, {256, 45}},
    };
    std::vector<GgufKV> kv = every_kind_of_kv();
    kv.push_back(gguf_orig_shape_kv("reshaped", {320, 4, 3, 3}).value());
    GgufWriteOptions options;
    options.alignment = alignment;
    auto h = build_gguf_header(tensors, kv, options);
    ASSERT_TRUE(h.is_ok()) << h.status().to_string();
    EXPECT_EQ(h->bytes.size() % alignment, 0u);
    uint64_t expected = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      EXPECT_EQ(h->data_begin[i], expected);
      expected = (expected + h->nbytes[i] + alignment - 1) / alignment * alignment;
    }
    EXPECT_EQ(h->data_size, expected);
    EXPECT_EQ(h->nbytes[1], 2u * 2 * 144);  // Q4_K: 2 rows of 2 blocks of 144 bytes

    auto ck = parse_gguf(file_of(*h));
    ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
    EXPECT_EQ(ck->gguf.version, 3u);
    EXPECT_EQ(ck->gguf.alignment, alignment);
    EXPECT_TRUE(ck->gguf.ggml_packed);
    EXPECT_EQ(ck->data_offset, h->bytes.size());
    ASSERT_EQ(ck->tensors.size(), tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      SCOPED_TRACE(tensors[i].name);
      EXPECT_EQ(ck->tensors[i].name, tensors[i].name);
      EXPECT_EQ(ck->tensors[i].dtype, tensors[i].dtype);
      EXPECT_EQ(ck->tensors[i].shape, tensors[i].shape);
      EXPECT_EQ(ck->tensors[i].begin, h->data_begin[i]);
      EXPECT_EQ(ck->tensors[i].nbytes(), h->nbytes[i]);
      EXPECT_EQ(ck->gguf.tensors[i].n_dims,
                tensors[i].ne.empty() ? tensors[i].shape.size() : tensors[i].ne.size());
    }
    // Trailing ggml 1s kept: torch [1, 1, 7] is ne [7, 1, 1], n_dims 3.
    EXPECT_EQ(ck->gguf.tensors[3].n_dims, 3u);
    EXPECT_EQ(ck->gguf.tensors[0].ne, (std::array<uint64_t, 4>{3, 3, 4, 320}));
    EXPECT_EQ(ck->gguf.tensors[8].ne, (std::array<uint64_t, 4>{256, 45, 1, 1}));
    EXPECT_TRUE(ck->gguf.tensors[8].orig_shape);

    // Key-value pairs come back exactly, in order (plus general.alignment when not 32).
    std::vector<GgufKV> want = kv;
    if (alignment != 32) want.push_back(gguf_kv("general.alignment", alignment));
    EXPECT_EQ(ck->gguf.kv, want);
    EXPECT_EQ(ck->metadata.at("t.f32"), "0.1");
    EXPECT_EQ(ck->metadata.at("t.bool"), "true");
    EXPECT_EQ(ck->metadata.at("t.u64"), "18446744073709551615");
    EXPECT_EQ(ck->metadata.at("t.i64"), "-9223372036854775807");
    EXPECT_EQ(ck->metadata.at("t.i8"), "-100");
    EXPECT_EQ(ck->metadata.at("t.f64"), "2.5e-300");
    EXPECT_EQ(ck->metadata.at("t.arr_i32"), "[1, -2, 3]");
    EXPECT_EQ(ck->metadata.at("t.arr_str"), R"(["a", "b\"c", ""])");
    EXPECT_EQ(ck->metadata.at("t.arr_bool"), "[true, false]");
    EXPECT_EQ(ck->metadata.at("t.arr_empty"), "[]");
    EXPECT_EQ(ck->gguf.find("t.u16")->uint_at(), 60000u);
    EXPECT_EQ(ck->gguf.find("t.i16")->int_at(), -30000);
    EXPECT_EQ(ck->gguf.find("t.u64")->int_at(), std::nullopt);
    EXPECT_EQ(*ck->gguf.find("t.arr_str")->string_at(1), "b\"c");

    // Writing what was read gives the same header bytes.
    std::vector<GgufTensorLayout> again;
    for (size_t i = 0; i < ck->tensors.size(); ++i) {
      const auto& d = ck->gguf.tensors[i];
      again.push_back({ck->tensors[i].name, ck->tensors[i].dtype, ck->tensors[i].shape,
                       Shape(d.ne.begin(), d.ne.begin() + d.n_dims)});
    }
    auto h2 = build_gguf_header(again, ck->gguf.kv, options);
    ASSERT_TRUE(h2.is_ok()) << h2.status().to_string();
    EXPECT_EQ(h2->bytes, h->bytes);
  }
}

TEST(GgufWriter, RefusesWhatGgmlWouldRefuse) {
  auto refuse = [](std::vector<GgufTensorLayout> t, std::vector<GgufKV> kv, GgufWriteOptions o,
                   std::string_view part) {
    auto h = build_gguf_header(t, kv, o);
    ASSERT_FALSE(h.is_ok()) << part;
    EXPECT_EQ(h.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(h.status().message().find(part), std::string::npos) << h.status().to_string();
  };
  const std::string n64(64, 'x');
  refuse({{n64, DType::F32, {1}, {}}}, {}, {}, "name of 64 bytes");
  GgufWriteOptions wide;
  wide.name_limit = 128;
  EXPECT_TRUE(build_gguf_header(std::vector<GgufTensorLayout>{{n64, DType::F32, {1}, {}}}, {}, wide)
                  .is_ok());
  refuse({{"a", DType::F32, {1}, {}}, {"a", DType::F32, {1}, {}}}, {}, {}, "twice");
  refuse({{"a", DType::Q4_K, {4, 320}, {}}}, {}, {}, "block of 256");
  refuse({{"a", DType::F8_E4M3, {4}, {}}}, {}, {}, "cannot store F8_E4M3");
  refuse({{"a", DType::F32, {1, 2, 3, 4, 5}, {}}}, {}, {}, "at most 4");
  refuse({{"a", DType::F32, {0, 4}, {}}}, {}, {}, "dimension of 0");
  refuse({{"a", DType::F32, {4, 4}, {15}}}, {}, {}, "does not hold the 16 elements");
  refuse({}, {gguf_kv("k", uint8_t{1}), gguf_kv("k", uint8_t{2})}, {}, "given twice");
  refuse({}, {gguf_kv("general.alignment", uint32_t{64})}, {}, "must be the u32 32");
  GgufWriteOptions odd;
  odd.alignment = 48;
  refuse({}, {}, odd, "power of two");
  GgufKV broken = gguf_kv("k", uint32_t{1});
  broken.raw.pop_back();
  refuse({}, {broken}, {}, "do not make");
}

TEST(GgufReader, ReadCheckpointDispatchesOnContent) {
  const std::string dir = test::scratch_dir();
  auto h = build_gguf_header(std::vector<GgufTensorLayout>{{"w", DType::F16, {8, 32}, {}}},
                             std::vector<GgufKV>{gguf_kv("general.architecture", "flux")});
  ASSERT_TRUE(h.is_ok());
  const std::string path = dir + "/model.bin";  // the name says nothing
  test::write_bytes(path, file_of(*h));
  auto ck = read_checkpoint(path);
  ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
  EXPECT_EQ(ck->format, FileFormat::kGguf);
  EXPECT_EQ(ck->path, path);
  EXPECT_EQ(ck->tensors.at(0).shape, (Shape{8, 32}));
  auto direct = read_gguf(path);
  ASSERT_TRUE(direct.is_ok());
  EXPECT_EQ(direct->metadata, ck->metadata);

  std::vector<uint8_t> bad = file_of(*h);
  bad.resize(bad.size() - 1);
  test::write_bytes(path, bad);
  ck = read_checkpoint(path);
  ASSERT_FALSE(ck.is_ok());
  EXPECT_EQ(ck.status().code(), ErrorCode::kCorrupt);
  EXPECT_EQ(ck.status().path(), path);
  EXPECT_NE(ck.status().message().find("truncated"), std::string::npos);
}

}  // namespace
}  // namespace ckptkit
