// libFuzzer target: a merge recipe (TOML, untrusted: recipes are shared) through parse_recipe,
// once with base_dir "/base" and once with "" (paths as written), so the two can be compared.
// Properties beyond "no crash, no UB, no leak, no exception" (violations trap):
//   * both calls agree: the base folder changes paths, never whether the recipe is accepted;
//   * a rejected recipe gets an InvalidArgument status naming the recipe, with a message;
//   * an accepted recipe has at least one input; every input (and the output, if any) is
//     non-empty and, when relative in the text, is "/base/" + the path as written, else the path
//     as written;
//   * every number is finite and every [parts] entry is vae or text_encoder naming an input.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "ckptkit/merge.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "recipe_fuzz: property violated: %s\n", what);
  __builtin_trap();
}

const std::string kSource = "fuzz.toml";

// `resolved` is what parse_recipe gave with base "/base", `written` what it gave with base "".
void check_path(const std::string& resolved, const std::string& written) {
  if (resolved.empty() || written.empty()) fail("an empty path");
  const std::string expected = written[0] == '/' ? written : "/base/" + written;
  if (resolved != expected) fail("a path not resolved against the base folder");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto based = ckptkit::parse_recipe(text, kSource, "/base");
  const auto as_written = ckptkit::parse_recipe(text, kSource, "");
  if (based.is_ok() != as_written.is_ok()) fail("the base folder changed the outcome");
  if (!based) {
    const ckptkit::Status s = based.status();
    if (s.code() != ckptkit::ErrorCode::kInvalidArgument)
      fail("an error that is not InvalidArgument");
    if (s.path() != kSource) fail("an error without the recipe's name");
    if (s.message().empty()) fail("an error without a message");
    if (s.message() != as_written.status().message()) fail("two messages for one recipe");
    (void)s.to_string();
    return 0;
  }
  const ckptkit::MergeSpec& spec = based->spec;
  if (spec.inputs.empty()) fail("a recipe without inputs");
  if (spec.inputs.size() != as_written->spec.inputs.size()) fail("input counts differ");
  for (size_t i = 0; i < spec.inputs.size(); ++i)
    check_path(spec.inputs[i], as_written->spec.inputs[i]);
  if (based->output.empty() != as_written->output.empty()) fail("output present only once");
  if (!based->output.empty()) check_path(based->output, as_written->output);

  if (!std::isfinite(spec.alpha) || !std::isfinite(spec.density) || !std::isfinite(spec.drop))
    fail("a non-finite scalar");
  for (double w : spec.weights)
    if (!std::isfinite(w)) fail("a non-finite weight");
  for (const auto& [name, alpha] : spec.block_alpha)
    if (name.empty() || !std::isfinite(alpha)) fail("an empty block name or a non-finite α");
  for (const auto& [part, index] : spec.part_from) {
    if (part != "vae" && part != "text_encoder") fail("an unknown part");
    if (index >= spec.inputs.size()) fail("a part naming no input");
  }
  return 0;
}
