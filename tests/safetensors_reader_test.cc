// The corrupt-file suite: one hand-made file per rule of the reader, each asserting its
// specific error code, byte offset and tensor; plus the files that must be accepted.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "ckptkit/reader.h"
#include "ckptkit/safetensors.h"
#include "test_util.h"

namespace ckptkit {
namespace {

using test::make_file;
using test::make_file_with_length;

std::vector<uint8_t> zeros(size_t n) { return std::vector<uint8_t>(n, 0); }

/// Absolute offset of occurrence `nth` of `needle` in the JSON of a make_file() file.
uint64_t at(std::string_view json, std::string_view needle, size_t nth = 0) {
  size_t pos = json.find(needle);
  for (size_t i = 0; i < nth && pos != std::string_view::npos; ++i) pos = json.find(needle, pos + 1);
  EXPECT_NE(pos, std::string_view::npos) << needle;
  return 8 + pos;
}

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, ":0x%llx:", static_cast<unsigned long long>(v));
  return buf;
}

struct Expect {
  ErrorCode code;
  uint64_t offset;
  std::string tensor;
  std::string message_part;
};

void expect_error(const std::vector<uint8_t>& bytes, const Expect& e,
                  const SafetensorsLimits& limits = {}) {
  auto r = parse_safetensors(bytes, limits, "m.safetensors");
  ASSERT_FALSE(r.is_ok()) << "accepted a file that breaks a rule";
  const Status s = r.status();
  EXPECT_EQ(s.code(), e.code) << s.to_string();
  EXPECT_EQ(s.offset(), e.offset) << s.to_string();
  EXPECT_EQ(s.tensor(), e.tensor) << s.to_string();
  EXPECT_NE(s.message().find(e.message_part), std::string::npos)
      << "message lacks '" << e.message_part << "': " << s.to_string();
  EXPECT_EQ(s.path(), "m.safetensors");
  const std::string line = s.to_string();
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  EXPECT_EQ(line.rfind("m.safetensors" + hex(e.offset), 0), 0u) << line;
}

constexpr ErrorCode kCorrupt = ErrorCode::kCorrupt;

// --- the length prefix -----------------------------------------------------------------------

TEST(SafetensorsPrefix, EmptyFile) {
  expect_error({}, {kCorrupt, 0, "", "empty file"});
}

TEST(SafetensorsPrefix, ShorterThanLengthField) {
  expect_error({1, 0, 0, 0, 0}, {kCorrupt, 0, "", "too short for the 8-byte header length"});
}

TEST(SafetensorsPrefix, LengthPastEndOfFile) {
  expect_error(make_file_with_length(1000, "{}"), {kCorrupt, 0, "", "runs past the end"});
}

TEST(SafetensorsPrefix, LengthTooSmallForAnObject) {
  expect_error(make_file_with_length(1, "{"), {kCorrupt, 0, "", "too small"});
}

TEST(SafetensorsPrefix, HeaderOverTheNamedLimit) {
  SafetensorsLimits limits;
  limits.max_header_bytes = 16;
  expect_error(make_file("{\"__metadata__\":{\"k\":\"vvvvvvvv\"}}"),
               {ErrorCode::kLimitExceeded, 0, "", "over the limit of 16 bytes"}, limits);
}

TEST(SafetensorsPrefix, DefaultLimitIsTheReferenceOne) {
  EXPECT_EQ(SafetensorsLimits{}.max_header_bytes, 100'000'000u);
}

// --- things that are not safetensors at all ---------------------------------------------------

std::vector<uint8_t> text(std::string_view s) { return {s.begin(), s.end()}; }

TEST(SafetensorsForeign, HtmlPage) {
  expect_error(text("<!DOCTYPE html>\n<html><head><title>404</title></head></html>\n"),
               {kCorrupt, 0, "", "HTML page"});
}

TEST(SafetensorsForeign, GitLfsPointer) {
  expect_error(text("version https://git-lfs.github.com/spec/v1\noid sha256:4c8e2d\nsize 4265146304\n"),
               {kCorrupt, 0, "", "Git LFS pointer"});
}

TEST(SafetensorsForeign, PyTorchZip) {
  std::vector<uint8_t> zip = text("PK\x03\x04");
  zip.resize(200, 0);
  expect_error(zip, {kCorrupt, 0, "", "PyTorch zip checkpoint"});
}

TEST(SafetensorsForeign, Pickle) {
  std::vector<uint8_t> p = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8};
  expect_error(p, {kCorrupt, 0, "", "pickle"});
}

// --- the JSON text ----------------------------------------------------------------------------

TEST(SafetensorsJson, InvalidUtf8) {
  std::string json = "{\"__metadata__\":{\"k\":\"a\xff\"}}";
  expect_error(make_file(json), {kCorrupt, at(json, "\xff"), "", "not valid UTF-8"});
}

TEST(SafetensorsJson, OverlongUtf8) {
  std::string json = "{\"__metadata__\":{\"k\":\"\xc0\xaf\"}}";
  expect_error(make_file(json), {kCorrupt, at(json, "\xc0"), "", "not valid UTF-8"});
}

TEST(SafetensorsJson, NotAnObject) {
  expect_error(make_file("[1, 2]"), {kCorrupt, 8, "", "must be a JSON object"});
}

TEST(SafetensorsJson, Malformed) {
  std::string json = "{\"t\":{\"dtype\":\"F32\",,}}";
  auto r = parse_safetensors(make_file(json));
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), kCorrupt);
  EXPECT_NE(r.status().message().find("not valid JSON"), std::string::npos) << r.status().to_string();
  EXPECT_GE(r.status().offset(), 8u);
  EXPECT_LE(r.status().offset(), 8u + json.size());
}

TEST(SafetensorsJson, ContentAfterTheObject) {
  std::string json = "{} x";
  expect_error(make_file(json), {kCorrupt, at(json, "x"), "", "after the header object"});
}

TEST(SafetensorsJson, SecondRootObject) {
  std::string json = "{\"__metadata__\":{\"k\":\"v\"}} {}";
  expect_error(make_file(json), {kCorrupt, at(json, " {}") + 1, "", "after the header object"});
}

TEST(SafetensorsJson, ExtraClosingBrace) {
  std::string json = "{\"__metadata__\":{\"k\":\"v\"}}}";
  expect_error(make_file(json), {kCorrupt, 8 + json.size() - 1, "", "after the header object"});
}

TEST(SafetensorsJson, UnescapedControlCharacter) {
  std::string json = "{\"__metadata__\":{\"k\":\"a\tb\"}}";
  auto r = parse_safetensors(make_file(json));
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("not valid JSON"), std::string::npos);
}

TEST(SafetensorsJson, DuplicateTensorKey) {
  std::string json =
      "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
      "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}";
  expect_error(make_file(json, zeros(2)),
               {kCorrupt, at(json, "\"a\"", 1), "a", "duplicate key (first defined at offset 0x9)"});
}

TEST(SafetensorsJson, DuplicateMetadataBlock) {
  std::string json = "{\"__metadata__\":{},\"__metadata__\":{}}";
  expect_error(make_file(json), {kCorrupt, at(json, "\"__metadata__\"", 1), "__metadata__",
                                 "duplicate key"});
}

// --- __metadata__ -----------------------------------------------------------------------------

TEST(SafetensorsMetadata, NonStringValue) {
  std::string json = "{\"__metadata__\":{\"ok\":\"1\",\"steps\":1000}}";
  expect_error(make_file(json),
               {kCorrupt, at(json, "\"steps\""), "", "'steps': value must be a string, found a number"});
}

TEST(SafetensorsMetadata, NestedObjectValue) {
  std::string json = "{\"__metadata__\":{\"cfg\":{\"a\":\"b\"}}}";
  expect_error(make_file(json), {kCorrupt, at(json, "\"cfg\""), "", "found an object"});
}

TEST(SafetensorsMetadata, NotAnObject) {
  std::string json = "{\"__metadata__\":[\"a\"]}";
  expect_error(make_file(json), {kCorrupt, 9, "", "__metadata__ must be an object"});
}

TEST(SafetensorsMetadata, DuplicateKey) {
  std::string json = "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}";
  expect_error(make_file(json), {kCorrupt, at(json, "\"k\"", 1), "", "has the key 'k' twice"});
}

// --- tensor entries ---------------------------------------------------------------------------

TEST(SafetensorsEntry, NotAnObject) {
  std::string json = "{\"w\":5}";
  expect_error(make_file(json), {kCorrupt, 9, "w", "entry must be an object"});
}

TEST(SafetensorsEntry, UnknownDtype) {
  std::string json = "{\"w\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,1]}}";
  expect_error(make_file(json, zeros(1)),
               {ErrorCode::kUnsupported, at(json, "\"dtype\""), "w", "unknown dtype 'F7'"});
}

TEST(SafetensorsEntry, DtypeNotAString) {
  std::string json = "{\"w\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,1]}}";
  expect_error(make_file(json, zeros(1)),
               {kCorrupt, at(json, "\"dtype\""), "w", "dtype must be a string, found a number"});
}

TEST(SafetensorsEntry, MissingDataOffsets) {
  std::string json = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}";
  expect_error(make_file(json), {kCorrupt, 9, "w", "no 'data_offsets'"});
}

TEST(SafetensorsEntry, MissingShape) {
  std::string json = "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}";
  expect_error(make_file(json, zeros(4)), {kCorrupt, 9, "w", "no 'shape'"});
}

TEST(SafetensorsEntry, UnexpectedField) {
  std::string json = "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}";
  expect_error(make_file(json, zeros(1)), {kCorrupt, at(json, "\"x\""), "w", "unexpected field 'x'"});
}

TEST(SafetensorsEntry, FieldTwice) {
  std::string json = "{\"w\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
  expect_error(make_file(json, zeros(1)), {kCorrupt, at(json, "\"dtype\"", 1), "w", "'dtype' given twice"});
}

TEST(SafetensorsEntry, NegativeDimension) {
  std::string json = "{\"w\":{\"dtype\":\"U8\",\"shape\":[2,-1],\"data_offsets\":[0,1]}}";
  expect_error(make_file(json, zeros(1)),
               {kCorrupt, at(json, "\"shape\""), "w", "shape[1] must be a non-negative integer"});
}

TEST(SafetensorsEntry, FractionalDimension) {
  std::string json = "{\"w\":{\"dtype\":\"U8\",\"shape\":[2.5],\"data_offsets\":[0,1]}}";
  expect_error(make_file(json, zeros(1)),
               {kCorrupt, at(json, "\"shape\""), "w", "shape[0] must be a non-negative integer"});
}

TEST(SafetensorsEntry, ShapeNotAnArray) {
  std::string json = "{\"w\":{\"dtype\":\"U8\",\"shape\":\"1\",\"data_offsets\":[0,1]}}";
  expect_error(make_file(json, zeros(1)),
               {kCorrupt, at(json, "\"shape\""), "w", "shape must be an array of integers, found a string"});
}

TEST(SafetensorsEntry, ElementCountOverflows) {
  std::string json =
      "{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[0,0]}}";
  expect_error(make_file(json), {kCorrupt, 9, "w", "more elements than 64 bits can count"});
}

TEST(SafetensorsEntry, ByteCountOverflows) {
  // 2^62 elements fit in 64 bits; 2^62 × 4 bytes do not.
  std::string json =
      "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}";
  expect_error(make_file(json), {kCorrupt, 9, "w", "more bytes than 64 bits can count"});
}

TEST(SafetensorsEntry, SubByteTypeNotFillingBytes) {
  std::string json = "{\"w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}";
  expect_error(make_file(json, zeros(2)), {kCorrupt, 9, "w", "does not fill a whole number of bytes"});
}

TEST(SafetensorsEntry, OffsetsCount) {
  std::string json = "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}";
  expect_error(make_file(json, zeros(1)),
               {kCorrupt, at(json, "\"data_offsets\""), "w", "must hold 2 integers, found 1"});
}

TEST(SafetensorsEntry, OffsetsEndBeforeBegin) {
  std::string json = "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}";
  expect_error(make_file(json, zeros(4)), {kCorrupt, 9, "w", "end before they begin"});
}

TEST(SafetensorsEntry, SizeDisagreesWithShape) {
  std::string json = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}";
  expect_error(make_file(json, zeros(4)),
               {kCorrupt, 9, "w", "F32 [2] needs 8 bytes but data_offsets [0, 4) hold 4"});
}

// --- the data section -------------------------------------------------------------------------

TEST(SafetensorsData, Gap) {
  std::string json =
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
  const uint64_t data_start = 8 + json.size();
  expect_error(make_file(json, zeros(12)),
               {kCorrupt, data_start + 4, "b", "gap in the data section: data starts at 8 but the "
                                               "previous tensor 'a' ends at 4 (4 unused bytes)"});
}

TEST(SafetensorsData, GapBeforeFirstTensor) {
  std::string json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
  expect_error(make_file(json, zeros(8)), {kCorrupt, 8 + json.size(), "a", "gap in the data section"});
}

TEST(SafetensorsData, Overlap) {
  std::string json =
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
  const uint64_t data_start = 8 + json.size();
  expect_error(make_file(json, zeros(12)),
               {kCorrupt, data_start + 4, "b", "overlaps tensor 'a', which ends at 8"});
}

TEST(SafetensorsData, SameRangeTwice) {
  std::string json =
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  expect_error(make_file(json, zeros(4)), {kCorrupt, 8 + json.size(), "b", "overlaps tensor 'a'"});
}

TEST(SafetensorsData, Truncated) {
  std::string json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
  auto bytes = make_file(json, zeros(10));
  expect_error(bytes, {kCorrupt, bytes.size(), "a", "runs past the end of the file"});
}

TEST(SafetensorsData, BytesAfterTheLastTensor) {
  std::string json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  const uint64_t data_start = 8 + json.size();
  expect_error(make_file(json, zeros(7)), {kCorrupt, data_start + 4, "", "3 bytes after the last tensor"});
}

TEST(SafetensorsData, BytesButNoTensors) {
  expect_error(make_file("{}", zeros(3)), {kCorrupt, 10, "", "3 bytes after the last tensor"});
}

// --- accepted files ---------------------------------------------------------------------------

TEST(SafetensorsAccept, EveryDtypeOfTheSpecification) {
  struct D { const char* name; int bits; };
  const D dtypes[] = {{"BOOL", 8}, {"U8", 8}, {"I8", 8}, {"U16", 16}, {"I16", 16}, {"U32", 32},
                      {"I32", 32}, {"U64", 64}, {"I64", 64}, {"F16", 16}, {"BF16", 16},
                      {"F32", 32}, {"F64", 64}, {"F8_E4M3", 8}, {"F8_E5M2", 8}, {"F8_E8M0", 8},
                      {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"F4", 4}, {"C64", 64}};
  std::string json = "{";
  uint64_t off = 0;
  for (const D& d : dtypes) {
    const uint64_t bytes = 8 * static_cast<uint64_t>(d.bits) / 8;  // shape [8]
    json += std::string(json.size() > 1 ? "," : "") + "\"t_" + d.name + "\":{\"dtype\":\"" + d.name +
            "\",\"shape\":[8],\"data_offsets\":[" + std::to_string(off) + "," +
            std::to_string(off + bytes) + "]}";
    off += bytes;
  }
  json += "}";
  auto r = parse_safetensors(make_file(json, zeros(off)));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->tensors.size(), std::size(dtypes));
  for (size_t i = 0; i < std::size(dtypes); ++i) {
    EXPECT_EQ(dtype_name(r->tensors[i].dtype), dtypes[i].name);
    EXPECT_EQ(dtype_info(r->tensors[i].dtype).bits, dtypes[i].bits);
  }
  EXPECT_FALSE(is_computable(*parse_dtype("F4")));
  EXPECT_FALSE(is_computable(*parse_dtype("C64")));
  EXPECT_TRUE(is_computable(*parse_dtype("F8_E4M3")));
}

TEST(SafetensorsAccept, ScalarsZeroSizeAndEscapedNames) {
  std::string json =
      "{\"__metadata__\":{\"title\":\"caf\\u00e9 \\\"x\\\"\\n\"},"
      "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
      "\"e\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
      "\"a\\\\b\\u0041\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[4,12]}}";
  auto r = parse_safetensors(make_file(json, zeros(12)));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->tensors.size(), 3u);
  EXPECT_EQ(r->tensors[0].name, "s");
  EXPECT_TRUE(r->tensors[0].shape.empty());
  EXPECT_EQ(r->tensors[0].numel(), 1u);
  EXPECT_EQ(r->tensors[1].name, "e");
  EXPECT_EQ(r->tensors[1].numel(), 0u);
  EXPECT_EQ(r->tensors[2].name, "a\\bA");
  EXPECT_EQ(r->metadata.at("title"), "caf\xc3\xa9 \"x\"\n");
  EXPECT_EQ(r->parameter_count(), 2u);
}

TEST(SafetensorsAccept, WhitespaceIsRecordedNotRejected) {
  std::string json = "  \n{\"__metadata__\":{\"k\":\"v\"}}   ";
  auto r = parse_safetensors(make_file(json));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->quirks.leading_whitespace, 3u);
  EXPECT_EQ(r->quirks.trailing_whitespace, 3u);
  EXPECT_EQ(r->metadata.at("k"), "v");
}

TEST(SafetensorsAccept, NullMetadataAndTensorsInAnyOrder) {
  std::string json =
      "{\"__metadata__\":null,"
      "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},"
      "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}";
  auto r = parse_safetensors(make_file(json, zeros(4)));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_TRUE(r->metadata.empty());
  ASSERT_EQ(r->tensors.size(), 2u);
  EXPECT_EQ(r->tensors[0].name, "a");  // data order
  EXPECT_EQ(r->data_offset, 8 + json.size());
}

TEST(SafetensorsAccept, ReadsFromAFile) {
  std::string dir = test::scratch_dir();
  std::string json = "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}";
  test::write_bytes(dir + "/m.safetensors", make_file(json, zeros(8)));
  auto r = read_safetensors(dir + "/m.safetensors");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->file_size, 8 + json.size() + 8);
  EXPECT_EQ(r->tensors[0].shape, (Shape{2, 2}));
  auto missing = read_safetensors(dir + "/nope.safetensors");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  auto directory = read_safetensors(dir);
  ASSERT_FALSE(directory.is_ok());
  EXPECT_EQ(directory.status().code(), ErrorCode::kInvalidArgument);
}

// --- the writer -------------------------------------------------------------------------------

std::string header_json(const SafetensorsHeader& h) {
  return std::string(h.bytes.begin() + 8, h.bytes.end());
}

uint64_t header_len(const SafetensorsHeader& h) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | h.bytes[static_cast<size_t>(i)];
  return n;
}

TEST(SafetensorsWriter, MatchesTheReferenceSerialization) {
  // The byte strings of the reference implementation's own serialization tests.
  std::vector<TensorLayout> one = {{"attn.0", DType::F32, {1, 2, 3}}};
  auto h = build_safetensors_header(one, {});
  ASSERT_TRUE(h.is_ok());
  EXPECT_EQ(header_len(*h), 64u);
  EXPECT_EQ(header_json(*h), "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}");
  auto empty = build_safetensors_header({}, {});
  ASSERT_TRUE(empty.is_ok());
  EXPECT_EQ(header_json(*empty), "{}      ");
  auto meta = build_safetensors_header({}, {{"framework", "pt"}});
  ASSERT_TRUE(meta.is_ok());
  EXPECT_EQ(header_len(*meta), 40u);
  EXPECT_EQ(header_json(*meta), "{\"__metadata__\":{\"framework\":\"pt\"}}     ");
}

TEST(SafetensorsWriter, ReferenceOrderIsDtypeRankThenName) {
  std::vector<TensorLayout> t = {{"z", DType::F16, {1}},  {"a", DType::F16, {1}},
                                 {"m", DType::BF16, {1}}, {"b", DType::I64, {1}},
                                 {"c", DType::F32, {1}},  {"d", DType::U8, {1}},
                                 {"e", DType::F64, {1}},  {"f", DType::U64, {1}}};
  sort_for_writer(t);
  std::string order;
  for (const auto& x : t) order += x.name;
  // U64 > I64 > F64 > F32 > BF16 > F16 (a, z) > U8 in the reference enum.
  EXPECT_EQ(order, "fbecmazd");
}

TEST(SafetensorsWriter, RoundTripThroughTheReader) {
  std::vector<TensorLayout> t = {{"w", DType::F16, {3, 5}},   {"p", DType::I64, {1, 77}},
                                 {"s", DType::F32, {}},       {"q", DType::F4, {6}},
                                 {"n\"ame\n", DType::BF16, {2}}};
  sort_for_writer(t);
  std::map<std::string, std::string> meta = {{"k\\", "v\u00e9\t"}, {"format", "pt"}};
  auto h = build_safetensors_header(t, meta);
  ASSERT_TRUE(h.is_ok());
  EXPECT_EQ(h->bytes.size() % 8, 0u);
  std::vector<uint8_t> file = h->bytes;
  file.resize(h->file_size(), 0xAB);
  auto r = parse_safetensors(file);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_TRUE(r->quirks.canonical_order);
  EXPECT_EQ(r->metadata, meta);
  ASSERT_EQ(r->tensors.size(), t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(r->tensors[i].name, t[i].name);
    EXPECT_EQ(r->tensors[i].dtype, t[i].dtype);
    EXPECT_EQ(r->tensors[i].shape, t[i].shape);
    EXPECT_EQ(r->tensors[i].begin, h->data_begin[i]);
  }
}

}  // namespace
}  // namespace ckptkit

namespace ckptkit {
namespace {

// A header of 1152 bytes starts with 0x80 0x04, like a pickle's PROTO 4 opcode; the file must
// still read as safetensors (ckptkit's own outputs have such headers).
TEST(SafetensorsPrefix, LengthThatLooksLikeAPickleProtocol) {
  const std::string dir = test::scratch_dir();
  for (uint64_t len : {640u, 896u, 1152u, 1408u, 65536u + 1152u}) {
    const std::string head = "{\"__metadata__\":{\"k\":\"";
    const std::string json = head + std::string(len - head.size() - 3, 'x') + "\"}}";
    ASSERT_EQ(json.size(), len);
    const std::vector<uint8_t> bytes = test::make_file(json);
    ASSERT_EQ(bytes[0], 0x80u) << len;
    const std::string path = dir + "/pickle-like-" + std::to_string(len) + ".safetensors";
    test::write_bytes(path, bytes);
    auto ck = read_checkpoint(path);
    ASSERT_TRUE(ck.is_ok()) << len << ": " << ck.status().to_string();
    EXPECT_EQ(ck->format, FileFormat::kSafetensors);
    EXPECT_EQ(ck->metadata.at("k").size(), len - head.size() - 3);
  }
}

}  // namespace
}  // namespace ckptkit
