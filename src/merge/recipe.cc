// Merge recipes: a TOML file that holds a whole MergeSpec (docs/merge.md, "Recipes (TOML)").
//
// toml++ parses the text (TOML 1.0; every key and value keeps its line and column) and this file
// maps the tree onto MergeSpec. Every problem — bad syntax, an unknown key, a wrong type, a
// non-finite number, a part naming no input — is an InvalidArgument status whose message starts
// with the line and column of the offending key or value. Ranges (α in [0, 1], density, drop, the
// block names a family has) are merge_models' to check: it also sees the command-line overrides
// and the inputs' family.
#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ckptkit/merge.h"
#include "io/errors.h"
#include "tensor/dtype_names.h"

namespace ckptkit {
namespace {

constexpr std::string_view kTopKeys[] = {
    "inputs",  "output", "method", "alpha", "weights", "normalize", "allow_extrapolation",
    "density", "drop",   "seed",   "dtype", "missing", "title",     "hash_inputs",
    "blocks",  "parts",
};
constexpr std::string_view kPartKeys[] = {"vae", "text_encoder"};

// toml++ builds (and destroys) nested tables recursively, and a dotted key or table header has no
// depth limit of its own: `a.a.a.…` with ~35,000 parts overflows an 8 MiB stack inside the library
// (arrays and inline tables stop at its TOML_MAX_NESTED_VALUES, 256). Each level a key adds needs
// a '.', so bounding the dots bounds the depth without lexing TOML here. A real recipe has a few
// dozen (decimal points, file names, comments).
constexpr size_t kMaxDots = 4096;

// A block table may nest (`[blocks.joint_blocks]` with "3" = …); names have at most one dot today,
// a little slack costs nothing.
constexpr int kMaxBlockDepth = 4;

/// "a string", "an integer", … for "must be X, not Y".
std::string_view type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::none:
      return "nothing";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
  }
  return "a value";
}

/// Levenshtein distance, for "did you mean" on a mistyped key (keys are short).
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

/// `unknown key "alpah" (did you mean "alpha"?); valid keys: inputs, output, …`
std::string unknown_key_message(std::string_view shown, std::string_view key,
                                std::span<const std::string_view> valid, std::string_view where) {
  std::string_view best;
  size_t best_distance = 3;  // suggest only near misses
  for (std::string_view v : valid) {
    const size_t d = edit_distance(key, v);
    if (d < best_distance) {
      best = v;
      best_distance = d;
    }
  }
  std::string message = fmt::format("unknown key \"{}\"", shown);
  if (!best.empty()) message += fmt::format(" (did you mean \"{}\"?)", best);
  return message + fmt::format("; valid keys{}: {}", where, fmt::join(valid, ", "));
}

/// The position of the `kMaxDots`+1-th '.', if the text has that many.
std::optional<std::pair<size_t, size_t>> too_many_dots(std::string_view text) {
  size_t dots = 0, line = 1, line_start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    } else if (text[i] == '.' && ++dots > kMaxDots) {
      return std::pair(line, i - line_start + 1);
    }
  }
  return std::nullopt;
}

/// A key with its value, in the order they appear in the text (a toml::table iterates in key
/// order), so that the first error reported is the first one in the file.
struct Entry {
  const toml::key* key;
  const toml::node* value;
};

std::vector<Entry> in_text_order(const toml::table& table) {
  std::vector<Entry> entries;
  for (auto&& [key, value] : table) entries.push_back({&key, &value});
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    const toml::source_position pa = a.key->source().begin, pb = b.key->source().begin;
    return std::pair(pa.line, pa.column) < std::pair(pb.line, pb.column);
  });
  return entries;
}

/// Reads one parsed recipe into a Recipe; every error names the source and a line and column.
class RecipeReader {
 public:
  RecipeReader(const std::string& source_name, const std::string& base_dir)
      : source_name_(source_name), base_dir_(base_dir) {}

  Result<Recipe> read(const toml::table& root) {
    // [parts] names inputs, so it is read once `inputs` is known, wherever it stands.
    const toml::node* parts = nullptr;
    bool have_inputs = false;
    for (const Entry& e : in_text_order(root)) {
      const std::string_view key = e.key->str();
      const toml::node& v = *e.value;
      MergeSpec& spec = recipe_.spec;
      if (key == "inputs") {
        CKPT_RETURN_IF_ERROR(read_inputs(v));
        have_inputs = true;
      } else if (key == "output") {
        CKPT_ASSIGN_OR_RETURN(recipe_.output, path(v, "output"));
      } else if (key == "method") {
        CKPT_ASSIGN_OR_RETURN(const std::string name, text(v, "method"));
        const std::optional<MergeMethod> m = parse_merge_method(name);
        if (!m) {
          std::vector<std::string_view> names;
          for (MergeMethod known : all_merge_methods()) names.push_back(merge_method_name(known));
          return fail(v, "unknown merge method \"{}\" (choose {})", name, fmt::join(names, ", "));
        }
        spec.method = *m;
      } else if (key == "alpha") {
        CKPT_ASSIGN_OR_RETURN(spec.alpha, number(v, "alpha"));
      } else if (key == "weights") {
        CKPT_RETURN_IF_ERROR(read_weights(v));
      } else if (key == "normalize") {
        CKPT_ASSIGN_OR_RETURN(spec.normalize, boolean(v, "normalize"));
      } else if (key == "allow_extrapolation") {
        CKPT_ASSIGN_OR_RETURN(spec.allow_extrapolation, boolean(v, "allow_extrapolation"));
      } else if (key == "density") {
        CKPT_ASSIGN_OR_RETURN(spec.density, number(v, "density"));
      } else if (key == "drop") {
        CKPT_ASSIGN_OR_RETURN(spec.drop, number(v, "drop"));
      } else if (key == "seed") {
        const toml::value<int64_t>* seed = v.as_integer();
        if (!seed)
          return fail(v, "\"seed\" must be a non-negative integer, not {}", type_name(v.type()));
        if (seed->get() < 0)
          return fail(v, "\"seed\" must be a non-negative integer, not {}", seed->get());
        spec.seed = static_cast<uint64_t>(seed->get());
      } else if (key == "dtype") {
        CKPT_ASSIGN_OR_RETURN(const std::string name, text(v, "dtype"));
        const TargetDtype dtype = target_dtype_from_name(name);
        if (!dtype.known)
          return fail(v,
                      "unknown dtype \"{}\" (choose f16, bf16, f32, f64, f8_e4m3, f8_e5m2 or keep)",
                      name);
        spec.dtype = dtype.dtype;
      } else if (key == "missing") {
        CKPT_ASSIGN_OR_RETURN(const std::string name, text(v, "missing"));
        const std::optional<MissingPolicy> p = parse_missing_policy(name);
        if (!p)
          return fail(v, "unknown missing-tensor policy \"{}\" (choose {}, {} or {})", name,
                      missing_policy_name(MissingPolicy::kTakeA),
                      missing_policy_name(MissingPolicy::kSkip),
                      missing_policy_name(MissingPolicy::kError));
        spec.missing = *p;
      } else if (key == "title") {
        CKPT_ASSIGN_OR_RETURN(spec.title, text(v, "title"));
      } else if (key == "hash_inputs") {
        CKPT_ASSIGN_OR_RETURN(spec.hash_inputs, boolean(v, "hash_inputs"));
      } else if (key == "blocks") {
        const toml::table* blocks = v.as_table();
        if (!blocks)
          return fail(v, "\"blocks\" must be a table ([blocks] with one α per group), not {}",
                      type_name(v.type()));
        CKPT_RETURN_IF_ERROR(read_blocks(*blocks, "", 1));
      } else if (key == "parts") {
        parts = &v;
      } else {
        return fail_at(e.key->source(), "{}", unknown_key_message(key, key, kTopKeys, ""));
      }
    }
    if (!have_inputs)
      return Status(ErrorCode::kInvalidArgument,
                    "no \"inputs\": a recipe lists the models to merge, e.g. "
                    "inputs = [\"a.safetensors\", \"b.safetensors\"]",
                    source_name_);
    if (parts) CKPT_RETURN_IF_ERROR(read_parts(*parts));
    return std::move(recipe_);
  }

 private:
  template <typename... Args>
  Status fail_at(const toml::source_region& at, fmt::format_string<Args...> f,
                 Args&&... args) const {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("line {}, column {}: {}", at.begin.line, at.begin.column,
                              fmt::format(f, std::forward<Args>(args)...)),
                  source_name_);
  }
  template <typename... Args>
  Status fail(const toml::node& at, fmt::format_string<Args...> f, Args&&... args) const {
    return fail_at(at.source(), f, std::forward<Args>(args)...);
  }

  /// An integer or a finite float (TOML's `nan` and `inf` are floats too).
  Result<double> number(const toml::node& v, std::string_view name) const {
    if (const toml::value<int64_t>* i = v.as_integer()) return static_cast<double>(i->get());
    const toml::value<double>* f = v.as_floating_point();
    if (!f) return fail(v, "\"{}\" must be a number, not {}", name, type_name(v.type()));
    if (!std::isfinite(f->get()))
      return fail(v, "\"{}\" must be a finite number, not {}", name, f->get());
    return f->get();
  }

  Result<bool> boolean(const toml::node& v, std::string_view name) const {
    const toml::value<bool>* b = v.as_boolean();
    if (!b) return fail(v, "\"{}\" must be true or false, not {}", name, type_name(v.type()));
    return b->get();
  }

  Result<std::string> text(const toml::node& v, std::string_view name) const {
    const toml::value<std::string>* s = v.as_string();
    if (!s) return fail(v, "\"{}\" must be a string, not {}", name, type_name(v.type()));
    return s->get();
  }

  /// A file path: relative ones are relative to the recipe's folder.
  Result<std::string> path(const toml::node& v, std::string_view name) const {
    const toml::value<std::string>* s = v.as_string();
    if (!s) return fail(v, "\"{}\" must be a string (a path), not {}", name, type_name(v.type()));
    const std::string& p = s->get();
    if (p.empty()) return fail(v, "\"{}\" must not be empty", name);
    // TOML allows "\u0000"; the OS would cut the path there, so it could name another file.
    if (p.find('\0') != std::string::npos)
      return fail(v, "\"{}\" must not contain a NUL character", name);
    if (base_dir_.empty() || p.front() == '/') return p;
    return base_dir_.back() == '/' ? base_dir_ + p : base_dir_ + "/" + p;
  }

  Status read_inputs(const toml::node& v) {
    const toml::array* inputs = v.as_array();
    if (!inputs)
      return fail(v, "\"inputs\" must be an array of paths, not {}", type_name(v.type()));
    if (inputs->empty()) return fail(v, "\"inputs\" must list at least one model");
    for (size_t i = 0; i < inputs->size(); ++i) {
      const toml::node& item = *inputs->get(i);
      CKPT_ASSIGN_OR_RETURN(std::string resolved, path(item, fmt::format("inputs[{}]", i)));
      recipe_.spec.inputs.push_back(std::move(resolved));
      inputs_as_written_.push_back(item.as_string()->get());
    }
    return Status::ok();
  }

  Status read_weights(const toml::node& v) {
    const toml::array* weights = v.as_array();
    if (!weights)
      return fail(v, "\"weights\" must be an array of numbers, not {}", type_name(v.type()));
    for (size_t i = 0; i < weights->size(); ++i) {
      CKPT_ASSIGN_OR_RETURN(const double w,
                            number(*weights->get(i), fmt::format("weights[{}]", i)));
      recipe_.spec.weights.push_back(w);
    }
    return Status::ok();
  }

  /// [blocks]: group name → α. A nested table adds its key and a dot to the names within, so
  /// `[blocks.joint_blocks]` "3" = 0.5 and the dotted key `joint_blocks.3 = 0.5` (which TOML
  /// also makes a nested table) both give "joint_blocks.3", as the quoted "joint_blocks.3" does.
  /// Only the top level's `string` is the supermerger block-weight string.
  Status read_blocks(const toml::table& table, const std::string& prefix, int depth) {
    for (const Entry& e : in_text_order(table)) {
      const std::string_view key = e.key->str();
      const std::string name = prefix.empty() ? std::string(key) : prefix + "." + std::string(key);
      const toml::node& v = *e.value;
      if (key.empty()) return fail_at(e.key->source(), "an empty block name in \"blocks\"");
      if (prefix.empty() && key == "string") {
        CKPT_ASSIGN_OR_RETURN(recipe_.spec.block_string, text(v, "blocks.string"));
        continue;
      }
      if (const toml::table* nested = v.as_table()) {
        if (depth >= kMaxBlockDepth)
          return fail(v, "\"blocks.{}\" is nested too deep for a block name", name);
        CKPT_RETURN_IF_ERROR(read_blocks(*nested, name, depth + 1));
        continue;
      }
      const std::string shown = "blocks." + name;
      if (!v.is_number())
        return fail(v, "\"{}\" must be a number (the group's α), not {}", shown,
                    type_name(v.type()));
      // Quoted "joint_blocks.3" and [blocks.joint_blocks] "3" are the same group.
      const auto [it, inserted] = block_lines_.emplace(name, e.key->source().begin.line);
      if (!inserted)
        return fail(v, "block \"{}\" is given twice (first on line {})", name, it->second);
      CKPT_ASSIGN_OR_RETURN(recipe_.spec.block_alpha[name], number(v, shown));
    }
    return Status::ok();
  }

  /// [parts]: vae / text_encoder → the input they are copied from, by letter or by path.
  Status read_parts(const toml::node& v) {
    const toml::table* parts = v.as_table();
    if (!parts)
      return fail(v, "\"parts\" must be a table (e.g. [parts] vae = \"B\"), not {}",
                  type_name(v.type()));
    const size_t n = recipe_.spec.inputs.size();
    const char last = static_cast<char>('A' + std::min<size_t>(n, 26) - 1);
    for (const Entry& e : in_text_order(*parts)) {
      const std::string_view key = e.key->str();
      const std::string shown = "parts." + std::string(key);
      if (std::find(std::begin(kPartKeys), std::end(kPartKeys), key) == std::end(kPartKeys))
        return fail_at(e.key->source(), "{}",
                       unknown_key_message(shown, key, kPartKeys, " in [parts]"));
      CKPT_ASSIGN_OR_RETURN(const std::string from, text(*e.value, shown));
      size_t index = 0;
      // A single capital letter is an input letter, even if some input is a file called "B".
      if (from.size() == 1 && from[0] >= 'A' && from[0] <= 'Z') {
        index = static_cast<size_t>(from[0] - 'A');
        if (index >= n)
          return fail(*e.value, "\"{}\" = \"{}\": the recipe has {} input{} (A to {})", shown, from,
                      n, n == 1 ? "" : "s", last);
      } else {
        const auto it = std::find(inputs_as_written_.begin(), inputs_as_written_.end(), from);
        if (it == inputs_as_written_.end())
          return fail(*e.value,
                      "\"{}\" must be an input letter (A to {}) or a path as written in "
                      "\"inputs\", not \"{}\"",
                      shown, last, from);
        index = static_cast<size_t>(it - inputs_as_written_.begin());
      }
      recipe_.spec.part_from[std::string(key)] = index;
    }
    return Status::ok();
  }

  const std::string& source_name_;
  const std::string& base_dir_;
  Recipe recipe_;
  std::vector<std::string> inputs_as_written_;   ///< for [parts] given by path
  std::map<std::string, uint32_t> block_lines_;  ///< group name → line of its first value
};

}  // namespace

Result<Recipe> parse_recipe(std::string_view toml_text, const std::string& source_name,
                            const std::string& base_dir) {
  if (const auto at = too_many_dots(toml_text))
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("line {}, column {}: more than {} '.' characters: refused before "
                              "parsing (a key nested thousands deep overflows the TOML parser)",
                              at->first, at->second, kMaxDots),
                  source_name);
  // toml++ 3.3.0 (Debian's) has two known defects on malformed keys, both reached only through
  // assertions or __builtin_unreachable that its release build compiles into a normal
  // parse_error: a `[[[` table header (marzer/tomlplusplus#301) and some non-ASCII code points
  // where a key should end (#295). fuzz/corpus/recipe/found-toml-* replays both.
  toml::table root;
  try {
    root = toml::parse(toml_text);
  } catch (const toml::parse_error& e) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("line {}, column {}: invalid TOML: {}", e.source().begin.line,
                              e.source().begin.column, e.description()),
                  source_name);
  }
  return RecipeReader(source_name, base_dir).read(root);
}

}  // namespace ckptkit
