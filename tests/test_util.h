// Helpers for unit tests: hand-made safetensors bytes and scratch files.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ckptkit::test {

/// An 8-byte little-endian length followed by `json` (not padded) and `data`.
std::vector<uint8_t> make_file(std::string_view json, std::vector<uint8_t> data = {});

/// Same with an explicit (possibly lying) header length.
std::vector<uint8_t> make_file_with_length(uint64_t length, std::string_view json,
                                           std::vector<uint8_t> data = {});

/// A fresh directory under CKPTKIT_TEST_TMP (or /tmp) for this test.
std::string scratch_dir();

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);
std::vector<uint8_t> read_bytes(const std::string& path);

/// Names of the files in `dir` (not recursive), sorted.
std::vector<std::string> list_dir(const std::string& dir);

}  // namespace ckptkit::test
