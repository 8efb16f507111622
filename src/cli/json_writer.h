// A small pretty-printing JSON writer for --json reports (stable key order: as written).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ckptkit::cli {

class JsonWriter {
 public:
  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  /// An array written on one line: for short lists of numbers (shapes, offsets).
  JsonWriter& begin_inline_array();
  JsonWriter& end_array();
  JsonWriter& key(std::string_view k);
  JsonWriter& value(std::string_view v);
  JsonWriter& value(const char* v) { return value(std::string_view(v)); }
  JsonWriter& value(uint64_t v);
  JsonWriter& value(int v) { return value(static_cast<uint64_t>(v)); }
  JsonWriter& value(unsigned v) { return value(static_cast<uint64_t>(v)); }
  JsonWriter& value(bool v);
  JsonWriter& null();
  /// A value already in JSON (a number formatted elsewhere, an object from the library).
  JsonWriter& raw(std::string_view json);
  /// A double in its shortest exact form (finite values only).
  JsonWriter& value(double v);
  /// The document, newline-terminated.
  std::string str() const { return out_ + "\n"; }

 private:
  void before_value();
  JsonWriter& end_container(char close);
  void newline();
  std::string out_;
  struct Level {
    bool has_items = false;
    bool is_inline = false;
  };
  std::vector<Level> levels_;  // per open container
  bool after_key_ = false;
};

}  // namespace ckptkit::cli
