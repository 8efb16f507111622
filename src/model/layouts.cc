#include "model/layouts.h"

#include <charconv>

#include "io/errors.h"
#include "model/layout_tables.h"

namespace ckptkit {
namespace {

Result<std::vector<TensorLayout>> parse_tsv(std::string_view layout, std::string_view text) {
  std::vector<TensorLayout> out;
  size_t line_no = 0;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    ++line_no;
    if (line.empty()) continue;
    auto bad = [&] {
      return error(ErrorCode::kInternal, "layout table {} line {} is malformed", layout, line_no);
    };
    size_t t1 = line.find('\t');
    if (t1 == std::string_view::npos) return bad();
    size_t t2 = line.find('\t', t1 + 1);
    if (t2 == std::string_view::npos) return bad();
    TensorLayout t;
    t.name = std::string(line.substr(0, t1));
    auto dt = parse_dtype(line.substr(t1 + 1, t2 - t1 - 1));
    if (!dt) return bad();
    t.dtype = *dt;
    std::string_view dims = line.substr(t2 + 1);
    while (!dims.empty()) {
      size_t comma = dims.find(',');
      std::string_view d = dims.substr(0, comma);
      uint64_t v = 0;
      auto [p, ec] = std::from_chars(d.data(), d.data() + d.size(), v);
      if (ec != std::errc() || p != d.data() + d.size()) return bad();
      t.shape.push_back(v);
      dims = comma == std::string_view::npos ? std::string_view() : dims.substr(comma + 1);
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

std::vector<std::string> layout_names() {
  std::vector<std::string> names;
  for (size_t i = 0; i < detail::kEmbeddedLayoutCount; ++i)
    names.emplace_back(detail::kEmbeddedLayouts[i].name);
  return names;
}

Result<std::vector<TensorLayout>> load_layout(std::string_view name) {
  for (size_t i = 0; i < detail::kEmbeddedLayoutCount; ++i) {
    const detail::EmbeddedLayout& l = detail::kEmbeddedLayouts[i];
    if (name == l.name) {
      std::string text;
      for (size_t k = 0; k < l.piece_count; ++k) text += l.pieces[k];
      return parse_tsv(name, text);
    }
  }
  std::string known;
  for (const std::string& n : layout_names()) known += (known.empty() ? "" : ", ") + n;
  return error(ErrorCode::kNotFound, "no layout named '{}' (known: {})", name, known);
}

}  // namespace ckptkit
