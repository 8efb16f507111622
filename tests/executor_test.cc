// The streaming executor and the ops built on it: identical bytes whatever the thread count
// and memory cap, atomic outputs that leave nothing behind on failure, inputs never replaced.
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <cstring>
#include <filesystem>

#include "ckptkit/cast.h"
#include "ckptkit/ops.h"
#include "ckptkit/safetensors.h"
#include "pipeline/plan.h"
#include "test_util.h"

namespace ckptkit {
namespace {

RunOptions quiet_run() {
  RunOptions r;
  r.progress = ProgressMode::kNever;
  r.sync = false;
  return r;
}

/// Fills element i of a U8/F32 tensor with a known value; fails on one chosen chunk.
class PatternProducer final : public TensorProducer {
 public:
  explicit PatternProducer(uint64_t fail_at = UINT64_MAX) : fail_at_(fail_at) {}
  uint64_t scratch_bytes_per_element() const override { return 4; }
  Status produce(uint64_t first, uint64_t count, std::span<uint8_t> out,
                 std::span<uint8_t>) const override {
    if (first <= fail_at_ && fail_at_ < first + count)
      return Status(ErrorCode::kIoError, "injected failure");
    for (uint64_t i = 0; i < count; ++i) {
      const float v = static_cast<float>((first + i) % 1000);
      std::memcpy(out.data() + i * 4, &v, 4);
    }
    return Status::ok();
  }

 private:
  uint64_t fail_at_;
};

Plan pattern_plan(uint64_t elements, uint64_t fail_at = UINT64_MAX) {
  Plan p;
  p.metadata = {{"k", "v"}};
  p.tensors.push_back({"big", DType::F32, {elements}, std::make_unique<PatternProducer>(fail_at)});
  p.tensors.push_back({"small", DType::F32, {3}, std::make_unique<PatternProducer>()});
  return p;
}

TEST(Executor, SameBytesWhateverThreadsAndMemory) {
  const std::string dir = test::scratch_dir();
  const uint64_t n = 3'000'000;  // 12 MB: several chunks at the 4 MiB cap
  std::vector<uint8_t> first;
  for (unsigned threads : {1u, 2u, 3u}) {
    for (uint64_t mem : {4ull << 20, 64ull << 20}) {
      Plan p = pattern_plan(n);
      RunOptions r = quiet_run();
      r.threads = threads;
      r.max_memory = mem;
      const std::string out = dir + "/o" + std::to_string(threads) + "_" + std::to_string(mem);
      auto stats = execute_plan(p, out, r);
      ASSERT_TRUE(stats.is_ok()) << stats.status().to_string();
      EXPECT_LE(stats->buffer_bytes, mem);
      auto bytes = test::read_bytes(out);
      if (first.empty()) first = bytes;
      EXPECT_EQ(bytes, first) << threads << " threads, " << mem << " bytes";
    }
  }
  auto ck = parse_safetensors(first);
  ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
  const TensorInfo* big = ck->find("big");
  ASSERT_NE(big, nullptr);
  for (uint64_t i : {0ull, 999ull, 1000ull, 2'999'999ull}) {
    float v;
    std::memcpy(&v, first.data() + ck->data_offset + big->begin + i * 4, 4);
    EXPECT_EQ(v, static_cast<float>(i % 1000)) << i;
  }
}

TEST(Executor, FailureLeavesNothingBehind) {
  const std::string dir = test::scratch_dir();
  Plan p = pattern_plan(3'000'000, 2'500'000);
  RunOptions r = quiet_run();
  r.max_memory = 4ull << 20;
  auto stats = execute_plan(p, dir + "/out.safetensors", r);
  ASSERT_FALSE(stats.is_ok());
  EXPECT_EQ(stats.status().message(), "injected failure");
  EXPECT_EQ(stats.status().tensor(), "big");
  EXPECT_TRUE(test::list_dir(dir).empty()) << "left: " << test::list_dir(dir).front();
}

TEST(Executor, ExistingOutputNeedsForce) {
  const std::string dir = test::scratch_dir();
  const std::string out = dir + "/out.safetensors";
  test::write_bytes(out, {1, 2, 3});
  Plan p = pattern_plan(10);
  auto refused = execute_plan(p, out, quiet_run());
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("--force"), std::string::npos);
  EXPECT_EQ(test::read_bytes(out), (std::vector<uint8_t>{1, 2, 3}));
  RunOptions r = quiet_run();
  r.force = true;
  Plan p2 = pattern_plan(10);
  ASSERT_TRUE(execute_plan(p2, out, r).is_ok());
  EXPECT_TRUE(parse_safetensors(test::read_bytes(out)).is_ok());
  EXPECT_EQ(test::list_dir(dir), (std::vector<std::string>{"out.safetensors"}));
}

TEST(Executor, SparsePlanWritesOnlyTheHeader) {
  const std::string dir = test::scratch_dir();
  Plan p = pattern_plan(50'000'000);  // 200 MB logical
  p.fill_data = false;
  ASSERT_TRUE(execute_plan(p, dir + "/s", quiet_run()).is_ok());
  EXPECT_EQ(std::filesystem::file_size(dir + "/s"), 200'000'012u + 8 +
                                                        parse_safetensors(test::read_bytes(dir + "/s"))->header_size);
}

// A tensor made of input ranges of two files one after another (FLUX's fused q/k/v on the way
// back from diffusers) is copied in the kernel range by range: the bytes are the ranges', also
// where a 64 MiB copy chunk ends inside a range, and a hole in an input stays a hole.
TEST(Executor, ConcatenatedCopiesAreTheirRanges) {
  const std::string dir = test::scratch_dir();
  const uint64_t a_bytes = 40ull << 20, b_bytes = (40ull << 20) + 6;  // 80 MiB: two chunks
  std::vector<uint8_t> a(a_bytes + 3), b(b_bytes + 5);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i * 7 + 1);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 13 + 5);
  test::write_bytes(dir + "/a", a);
  test::write_bytes(dir + "/b", b);
  auto fa = InputFile::open(dir + "/a");
  auto fb = InputFile::open(dir + "/b");
  ASSERT_TRUE(fa.is_ok() && fb.is_ok());
  for (unsigned threads : {1u, 2u}) {
    Plan p;
    p.inputs = {&*fa, &*fb};
    std::vector<std::unique_ptr<TensorProducer>> parts;
    parts.push_back(make_copy_producer(&*fa, 3, DType::F16));  // unaligned starts
    parts.push_back(make_copy_producer(&*fb, 5, DType::F16));
    auto concat = make_concat_producer(std::move(parts), {a_bytes / 2, b_bytes / 2}, DType::F16);
    ASSERT_EQ(concat->copy_segments().size(), 2u);
    p.tensors.push_back({"fused", DType::F16, {(a_bytes + b_bytes) / 2}, std::move(concat)});
    p.tensors.push_back({"small", DType::F32, {3}, std::make_unique<PatternProducer>()});
    RunOptions r = quiet_run();
    r.threads = threads;
    const std::string out = dir + "/out" + std::to_string(threads);
    auto stats = execute_plan(p, out, r);
    ASSERT_TRUE(stats.is_ok()) << stats.status().to_string();
    const auto bytes = test::read_bytes(out);
    auto ck = parse_safetensors(bytes);
    ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
    const TensorInfo* t = ck->find("fused");
    ASSERT_NE(t, nullptr);
    const uint8_t* d = bytes.data() + ck->data_offset + t->begin;
    ASSERT_EQ(t->end - t->begin, a_bytes + b_bytes);
    EXPECT_EQ(std::memcmp(d, a.data() + 3, a_bytes), 0) << threads;
    EXPECT_EQ(std::memcmp(d + a_bytes, b.data() + 5, b_bytes), 0) << threads;
  }
}

SampleOptions small_sample() {
  SampleOptions o;
  o.run = quiet_run();
  return o;
}

TEST(Ops, ConvertRefusesToOverwriteItsInput) {
  const std::string dir = test::scratch_dir();
  const std::string in = dir + "/in.safetensors";
  ASSERT_TRUE(write_sample("lora-peft-sd15", in, small_sample()).is_ok());
  const auto before = test::read_bytes(in);
  ConvertOptions c;
  c.dtype = DType::F32;
  c.run = quiet_run();
  c.run.force = true;  // even with --force
  auto r = convert_file(in, in, c);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("refusing to overwrite the input"), std::string::npos);
  std::filesystem::create_hard_link(in, dir + "/alias.safetensors");
  auto r2 = convert_file(in, dir + "/alias.safetensors", c);
  ASSERT_FALSE(r2.is_ok()) << "a hard link to the input is the input";
  EXPECT_EQ(test::read_bytes(in), before);
  EXPECT_EQ(test::list_dir(dir), (std::vector<std::string>{"alias.safetensors", "in.safetensors"}));
}

TEST(Ops, ConvertCastsFloatsOnlyAndKeepsMetadata) {
  const std::string dir = test::scratch_dir();
  std::vector<TensorLayout> t = {{"w", DType::F32, {1000}},
                                 {"text_model.embeddings.position_ids", DType::I64, {1, 77}},
                                 {"model_ema.num_updates", DType::I32, {}},
                                 {"h", DType::F16, {10}}};
  sort_for_writer(t);
  const std::map<std::string, std::string> meta = {{"modelspec.title", "x"}};
  auto h = build_safetensors_header(t, meta);
  ASSERT_TRUE(h.is_ok());
  std::vector<uint8_t> file = h->bytes;
  file.resize(h->file_size());
  for (size_t i = 0; i < t.size(); ++i) {
    uint8_t* p = file.data() + h->bytes.size() + h->data_begin[i];
    const uint64_t n = shape_numel(t[i].shape).value();
    for (uint64_t k = 0; k < n; ++k) {
      if (t[i].dtype == DType::F32) { const float v = 0.001f * static_cast<float>(k) - 0.3f; std::memcpy(p + 4 * k, &v, 4); }
      if (t[i].dtype == DType::I64) { const int64_t v = static_cast<int64_t>(k); std::memcpy(p + 8 * k, &v, 8); }
      if (t[i].dtype == DType::I32) { const int32_t v = 123456; std::memcpy(p, &v, 4); }
      if (t[i].dtype == DType::F16) { const uint16_t v = static_cast<uint16_t>(0x3C00 + k); std::memcpy(p + 2 * k, &v, 2); }
    }
  }
  test::write_bytes(dir + "/in.safetensors", file);
  ConvertOptions c;
  c.dtype = DType::BF16;
  c.run = quiet_run();
  auto r = convert_file(dir + "/in.safetensors", dir + "/out.safetensors", c);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->tensors_cast, 2u);
  EXPECT_EQ(r->tensors_copied, 2u);
  EXPECT_EQ(r->kept_not_float.at("I64"), 1u);
  EXPECT_EQ(r->kept_not_float.at("I32"), 1u);
  auto in = parse_safetensors(file);
  const auto out_bytes = test::read_bytes(dir + "/out.safetensors");
  auto out = parse_safetensors(out_bytes);
  ASSERT_TRUE(in.is_ok() && out.is_ok()) << out.status().to_string();
  EXPECT_EQ(out->metadata, meta);
  for (const TensorInfo& ti : in->tensors) {
    const TensorInfo* o = out->find(ti.name);
    ASSERT_NE(o, nullptr) << ti.name;
    EXPECT_EQ(o->shape, ti.shape);
    const uint8_t* src = file.data() + in->data_offset + ti.begin;
    const uint8_t* dst = out_bytes.data() + out->data_offset + o->begin;
    if (!is_float(ti.dtype)) {
      EXPECT_EQ(o->dtype, ti.dtype) << ti.name;
      EXPECT_EQ(std::memcmp(src, dst, ti.nbytes()), 0) << ti.name << " changed";
      continue;
    }
    ASSERT_EQ(o->dtype, DType::BF16) << ti.name;
    std::vector<uint16_t> want(ti.numel());
    ASSERT_TRUE(cast_elements(ti.dtype, DType::BF16, src, want.data(), want.size()).is_ok());
    EXPECT_EQ(std::memcmp(want.data(), dst, want.size() * 2), 0) << ti.name;
  }
}

TEST(Ops, UnknownLayoutListsTheKnownOnes) {
  auto r = write_sample("sd9", test::scratch_dir() + "/x", small_sample());
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(r.status().message().find("sdxl-sgm"), std::string::npos);
}

TEST(Ops, EveryLayoutMatchesItsTableAndSizes) {
  // The summaries come from the embedded tables; a sparse sample of each must have exactly
  // those tensors and the file size the header implies.
  const std::string dir = test::scratch_dir();
  for (const LayoutSummary& l : list_layouts()) {
    SampleOptions o = small_sample();
    o.sparse = true;
    const std::string out = dir + "/" + l.name;
    ASSERT_TRUE(write_sample(l.name, out, o).is_ok()) << l.name;
    auto ck = read_safetensors(out);
    ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
    EXPECT_EQ(ck->tensors.size(), l.tensors) << l.name;
    EXPECT_EQ(ck->parameter_count(), l.parameters) << l.name;
    EXPECT_EQ(ck->file_size - ck->data_offset, l.bytes) << l.name;
    EXPECT_TRUE(ck->quirks.canonical_order) << l.name;
    std::filesystem::remove(out);
  }
}

}  // namespace
}  // namespace ckptkit
