#include "test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace ckptkit::test {

std::vector<uint8_t> make_file_with_length(uint64_t length, std::string_view json,
                                           std::vector<uint8_t> data) {
  std::vector<uint8_t> out(8 + json.size() + data.size());
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(length >> (8 * i));
  if (!json.empty()) std::memcpy(out.data() + 8, json.data(), json.size());
  if (!data.empty()) std::memcpy(out.data() + 8 + json.size(), data.data(), data.size());
  return out;
}

std::vector<uint8_t> make_file(std::string_view json, std::vector<uint8_t> data) {
  return make_file_with_length(json.size(), json, std::move(data));
}

std::string scratch_dir() {
  const char* root = std::getenv("CKPTKIT_TEST_TMP");
  std::filesystem::path base = root ? root : "/tmp/ckptkit-unit";
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "misc";
  std::filesystem::path dir = base / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace ckptkit::test
