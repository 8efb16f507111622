// parse_recipe: TOML recipes (docs/merge.md, "Recipes (TOML)") → MergeSpec, and the errors
// that name a line and column.
#include <gtest/gtest.h>

#include <string>

#include "ckptkit/merge.h"

namespace ckptkit {
namespace {

Recipe parse_ok(std::string_view text, const std::string& base_dir = "/recipes") {
  Result<Recipe> r = parse_recipe(text, "mix.toml", base_dir);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? std::move(r).value() : Recipe{};
}

// The error's message; also checks what every recipe error shares: InvalidArgument and the
// recipe's name as the path.
std::string parse_error(std::string_view text) {
  Result<Recipe> r = parse_recipe(text, "mix.toml", "/recipes");
  EXPECT_FALSE(r.is_ok()) << "accepted:\n" << text;
  if (r.is_ok()) return "";
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument) << r.status().to_string();
  EXPECT_EQ(r.status().path(), "mix.toml");
  return r.status().message();
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

TEST(MergeRecipe, EveryKeySetsItsField) {
  const Recipe r = parse_ok(R"(
inputs = ["anime.safetensors", "photo.safetensors", "base.safetensors"]
output = "mix.safetensors"
method = "add-difference"
alpha = 0.8
dtype = "BF16"
weights = [0.25, 1, 0.75]
normalize = true
allow_extrapolation = true
density = 0.3
drop = 0.7
seed = 42
missing = "skip"
title = "Anime-photo mix"
hash_inputs = true

[blocks]
IN00 = 0.2
M00 = 1
text_encoder = 0.0
string = "0,1,1,1,1,1,1,1,1,1,1,1,1,0.5,0,0,0,0,0,0,0,0,0,0,0,0"

[parts]
vae = "B"
text_encoder = "base.safetensors"
)");
  const MergeSpec& s = r.spec;
  EXPECT_EQ(s.inputs,
            (std::vector<std::string>{"/recipes/anime.safetensors", "/recipes/photo.safetensors",
                                      "/recipes/base.safetensors"}));
  EXPECT_EQ(r.output, "/recipes/mix.safetensors");
  EXPECT_EQ(s.method, MergeMethod::kAddDifference);
  EXPECT_EQ(s.alpha, 0.8);
  ASSERT_TRUE(s.dtype.has_value());
  EXPECT_EQ(*s.dtype, DType::BF16);
  EXPECT_EQ(s.weights, (std::vector<double>{0.25, 1.0, 0.75}));
  EXPECT_TRUE(s.normalize);
  EXPECT_TRUE(s.allow_extrapolation);
  EXPECT_EQ(s.density, 0.3);
  EXPECT_EQ(s.drop, 0.7);
  EXPECT_EQ(s.seed, 42u);
  EXPECT_EQ(s.missing, MissingPolicy::kSkip);
  EXPECT_EQ(s.title, "Anime-photo mix");
  EXPECT_TRUE(s.hash_inputs);
  EXPECT_EQ(s.block_alpha,
            (std::map<std::string, double>{{"IN00", 0.2}, {"M00", 1.0}, {"text_encoder", 0.0}}));
  EXPECT_EQ(s.block_string, "0,1,1,1,1,1,1,1,1,1,1,1,1,0.5,0,0,0,0,0,0,0,0,0,0,0,0");
  EXPECT_EQ(s.part_from, (std::map<std::string, size_t>{{"vae", 1}, {"text_encoder", 2}}));
}

TEST(MergeRecipe, MissingKeysKeepTheDefaults) {
  const Recipe r = parse_ok(R"(inputs = ["a.safetensors", "b.safetensors"])");
  const MergeSpec defaults;
  EXPECT_EQ(r.output, "");
  EXPECT_EQ(r.spec.method, defaults.method);
  EXPECT_EQ(r.spec.alpha, defaults.alpha);
  EXPECT_EQ(r.spec.density, defaults.density);
  EXPECT_EQ(r.spec.drop, defaults.drop);
  EXPECT_EQ(r.spec.seed, defaults.seed);
  EXPECT_FALSE(r.spec.dtype.has_value());
  EXPECT_EQ(r.spec.missing, MissingPolicy::kTakeA);
  EXPECT_TRUE(r.spec.weights.empty());
  EXPECT_TRUE(r.spec.block_alpha.empty());
  EXPECT_TRUE(r.spec.block_string.empty());
  EXPECT_TRUE(r.spec.part_from.empty());
  EXPECT_FALSE(r.spec.normalize);
  EXPECT_FALSE(r.spec.hash_inputs);
}

TEST(MergeRecipe, RelativePathsResolveAgainstTheRecipeFolder) {
  constexpr std::string_view kText = R"(
inputs = ["a.safetensors", "/models/b.safetensors", "../c.safetensors", "sub/d.safetensors"]
output = "out/mix.safetensors"
)";
  Recipe r = parse_ok(kText, "/home/u/recipes");
  EXPECT_EQ(r.spec.inputs,
            (std::vector<std::string>{"/home/u/recipes/a.safetensors", "/models/b.safetensors",
                                      "/home/u/recipes/../c.safetensors",
                                      "/home/u/recipes/sub/d.safetensors"}));
  EXPECT_EQ(r.output, "/home/u/recipes/out/mix.safetensors");

  // A trailing slash on the folder adds no second one; a relative folder stays relative.
  r = parse_ok(kText, "/home/u/recipes/");
  EXPECT_EQ(r.spec.inputs[0], "/home/u/recipes/a.safetensors");
  r = parse_ok(kText, "recipes");
  EXPECT_EQ(r.spec.inputs[0], "recipes/a.safetensors");
  EXPECT_EQ(r.spec.inputs[1], "/models/b.safetensors");

  // An empty base folder leaves every path as written.
  r = parse_ok(kText, "");
  EXPECT_EQ(r.spec.inputs, (std::vector<std::string>{"a.safetensors", "/models/b.safetensors",
                                                     "../c.safetensors", "sub/d.safetensors"}));
  EXPECT_EQ(r.output, "out/mix.safetensors");
}

TEST(MergeRecipe, NestedBlockTablesAndDottedKeysJoinWithADot) {
  const Recipe r = parse_ok(R"(
inputs = ["a.safetensors", "b.safetensors"]
[blocks]
"joint_blocks.0" = 0.1
joint_blocks.1 = 0.2
double_blocks = { 4 = 0.4 }
[blocks.single_blocks]
"7" = 0.7
3 = 1
)");
  EXPECT_EQ(r.spec.block_alpha, (std::map<std::string, double>{{"joint_blocks.0", 0.1},
                                                               {"joint_blocks.1", 0.2},
                                                               {"double_blocks.4", 0.4},
                                                               {"single_blocks.7", 0.7},
                                                               {"single_blocks.3", 1.0}}));
  EXPECT_TRUE(r.spec.block_string.empty());
}

TEST(MergeRecipe, BlockStringIsNotAGroup) {
  const Recipe r = parse_ok(R"(
inputs = ["a.safetensors", "b.safetensors"]
blocks.string = "1,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0,1,1,1,1,1,1,1,1,1,1,1,1"
blocks.OUT11 = 0.25
)");
  EXPECT_EQ(r.spec.block_string,
            "1,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0,1,1,1,1,1,1,1,1,1,1,1,1");
  EXPECT_EQ(r.spec.block_alpha, (std::map<std::string, double>{{"OUT11", 0.25}}));

  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\n[blocks]\nstring = 0.5\n"),
                  "line 3, column 10: \"blocks.string\" must be a string, not a float");
}

TEST(MergeRecipe, TheSameGroupTwiceIsAnError) {
  const std::string m = parse_error(R"(inputs = ["a", "b"]
[blocks]
"joint_blocks.3" = 0.5
[blocks.joint_blocks]
3 = 0.6
)");
  EXPECT_CONTAINS(m, "line 5, column 5: block \"joint_blocks.3\" is given twice (first on line 3)");
}

TEST(MergeRecipe, PartsByLetterOrByPathAsWritten) {
  constexpr std::string_view kInputs =
      "inputs = [\"a.safetensors\", \"sub/b.safetensors\", \"/abs/c.safetensors\"]\n";
  Recipe r = parse_ok(std::string(kInputs) + "[parts]\nvae = \"C\"\ntext_encoder = \"A\"\n");
  EXPECT_EQ(r.spec.part_from, (std::map<std::string, size_t>{{"vae", 2}, {"text_encoder", 0}}));

  r = parse_ok(std::string(kInputs) +
               "[parts]\nvae = \"sub/b.safetensors\"\ntext_encoder = \"/abs/c.safetensors\"\n");
  EXPECT_EQ(r.spec.part_from, (std::map<std::string, size_t>{{"vae", 1}, {"text_encoder", 2}}));

  // [parts] before `inputs` (a dotted key) still sees the inputs.
  r = parse_ok("parts.vae = \"B\"\n" + std::string(kInputs));
  EXPECT_EQ(r.spec.part_from, (std::map<std::string, size_t>{{"vae", 1}}));

  // The resolved path is not what was written.
  EXPECT_CONTAINS(
      parse_error(std::string(kInputs) + "[parts]\nvae = \"/recipes/a.safetensors\"\n"),
      "line 3, column 7: \"parts.vae\" must be an input letter (A to C) or a path as written in "
      "\"inputs\", not \"/recipes/a.safetensors\"");
  EXPECT_CONTAINS(parse_error(std::string(kInputs) + "[parts]\nvae = 1\n"),
                  "line 3, column 7: \"parts.vae\" must be a string, not an integer");
  EXPECT_CONTAINS(parse_error(std::string(kInputs) + "[parts]\nunet = \"B\"\n"),
                  "line 3, column 1: unknown key \"parts.unet\"; valid keys in [parts]: vae, "
                  "text_encoder");
}

TEST(MergeRecipe, PartLetterOutOfRange) {
  const std::string m = parse_error(R"(inputs = ["a.safetensors", "b.safetensors"]

[parts]
text_encoder = "C"
)");
  EXPECT_CONTAINS(m,
                  "line 4, column 16: \"parts.text_encoder\" = \"C\": the recipe has 2 inputs "
                  "(A to B)");
}

TEST(MergeRecipe, UnknownKeyNamesItsLineAndTheValidKeys) {
  const std::string m = parse_error(R"(# a recipe
inputs = ["a.safetensors", "b.safetensors"]
method = "weighted-sum"

  alpah = 0.3
)");
  EXPECT_CONTAINS(m, "line 5, column 3: unknown key \"alpah\" (did you mean \"alpha\"?)");
  EXPECT_CONTAINS(m,
                  "valid keys: inputs, output, method, alpha, weights, normalize, "
                  "allow_extrapolation, density, drop, seed, dtype, missing, title, "
                  "hash_inputs, blocks, parts");
  // No suggestion when nothing is close.
  EXPECT_EQ(parse_error("inputs = [\"a\"]\nunet_checkpoint = 1\n").find("did you mean"),
            std::string::npos);
}

TEST(MergeRecipe, TheFirstErrorInTheTextIsReported) {
  // The table iterates in key order ("alpha" before "zeta"); the error on line 2 comes first.
  const std::string m = parse_error("inputs = [\"a\"]\nzeta = 1\nalpha = \"x\"\n");
  EXPECT_CONTAINS(m, "line 2, column 1: unknown key \"zeta\"");
}

TEST(MergeRecipe, WrongTypesNameTheValue) {
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\n\nalpha = \"0.5\"\n"),
                  "line 3, column 9: \"alpha\" must be a number, not a string");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nnormalize = 1\n"),
                  "line 2, column 13: \"normalize\" must be true or false, not an integer");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nweights = [0.5, \"x\", 1]\n"),
                  "line 2, column 17: \"weights[1]\" must be a number, not a string");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nweights = 0.5\n"),
                  "line 2, column 11: \"weights\" must be an array of numbers, not a float");
  EXPECT_CONTAINS(parse_error("inputs = \"a.safetensors\"\n"),
                  "line 1, column 10: \"inputs\" must be an array of paths, not a string");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\", 2]\n"),
                  "line 1, column 16: \"inputs[1]\" must be a string (a path), not an integer");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\ntitle = 1979-05-27\n"),
                  "line 2, column 9: \"title\" must be a string, not a date");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nblocks = 0.5\n"),
                  "line 2, column 10: \"blocks\" must be a table");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\n[blocks]\nIN00 = \"half\"\n"),
                  "line 3, column 8: \"blocks.IN00\" must be a number (the group's α), not a "
                  "string");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\n[blocks.joint_blocks]\n3 = [1]\n"),
                  "line 3, column 5: \"blocks.joint_blocks.3\" must be a number (the group's α), "
                  "not an array");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nparts = \"B\"\n"),
                  "line 2, column 9: \"parts\" must be a table");
}

TEST(MergeRecipe, IntegersAreAcceptedAsNumbers) {
  const Recipe r =
      parse_ok("inputs = [\"a\"]\nalpha = 1\ndensity = 1\ndrop = 0\nweights = [1, 2]\n");
  EXPECT_EQ(r.spec.alpha, 1.0);
  EXPECT_EQ(r.spec.density, 1.0);
  EXPECT_EQ(r.spec.drop, 0.0);
  EXPECT_EQ(r.spec.weights, (std::vector<double>{1.0, 2.0}));
}

TEST(MergeRecipe, NonFiniteNumbersAreRejected) {
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nalpha = nan\n"),
                  "line 2, column 9: \"alpha\" must be a finite number, not nan");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\ndrop = -inf\n"),
                  "line 2, column 8: \"drop\" must be a finite number, not -inf");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nweights = [1, +inf]\n"),
                  "\"weights[1]\" must be a finite number, not inf");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\n[blocks]\nM00 = nan\n"),
                  "line 3, column 7: \"blocks.M00\" must be a finite number");
}

TEST(MergeRecipe, SeedIsANonNegativeInteger) {
  EXPECT_EQ(parse_ok("inputs = [\"a\"]\nseed = 9223372036854775807\n").spec.seed,
            9223372036854775807u);
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nseed = -1\n"),
                  "line 2, column 8: \"seed\" must be a non-negative integer, not -1");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nseed = 4.0\n"),
                  "line 2, column 8: \"seed\" must be a non-negative integer, not a float");
  // Beyond int64: toml++ refuses it as a syntax error, with its position.
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nseed = 18446744073709551615\n"), "line 2, column");
}

TEST(MergeRecipe, InputsAreRequiredAndNotEmpty) {
  EXPECT_CONTAINS(parse_error("alpha = 0.5\nmethod = \"slerp\"\n"), "no \"inputs\"");
  EXPECT_CONTAINS(parse_error(""), "no \"inputs\"");
  EXPECT_CONTAINS(parse_error("alpha = 0.5\ninputs = []\n"),
                  "line 2, column 10: \"inputs\" must list at least one model");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\", \"\"]\n"),
                  "line 1, column 16: \"inputs[1]\" must not be empty");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\noutput = \"\"\n"),
                  "line 2, column 10: \"output\" must not be empty");
  // "\u0000" would cut the path short when the OS opens it.
  EXPECT_CONTAINS(parse_error("inputs = [\"a\\u0000/etc/passwd\"]\n"),
                  "\"inputs[0]\" must not contain a NUL character");
}

TEST(MergeRecipe, SyntaxErrorsNameTheirPosition) {
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nalpha = 0.5\ntitle = \"unterminated\n"),
                  "line 3, column");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nalpha = 0.5\ntitle = \"unterminated\n"),
                  "invalid TOML");
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\n\n\nalpha = = 1\n"), "line 4, column");
  // TOML itself refuses a key given twice.
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nalpha = 0.1\nalpha = 0.2\n"), "line 3, column");
}

TEST(MergeRecipe, DeepNestingIsRefusedNotACrash) {
  // Arrays: toml++ stops at 256 levels.
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nx = " + std::string(100000, '[')), "line 2");
  // Dotted keys: no limit in toml++ (~35,000 parts overflow an 8 MiB stack); refused before.
  std::string deep = "inputs = [\"a\"]\nblocks";
  for (int i = 0; i < 50000; ++i) deep += ".a";
  EXPECT_CONTAINS(parse_error(deep + " = 1\n"), "line 2, column 8199: more than 4096 '.'");
  // Within the limit, a block table nested deeper than a block name can be is refused.
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nblocks.a.b.c.d.e = 1\n"), "nested too deep");
}

TEST(MergeRecipe, DtypeNames) {
  const auto dtype = [](std::string_view name) {
    return parse_ok("inputs = [\"a\"]\ndtype = \"" + std::string(name) + "\"\n").spec.dtype;
  };
  EXPECT_EQ(dtype("f16"), DType::F16);
  EXPECT_EQ(dtype("FP16"), DType::F16);
  EXPECT_EQ(dtype("half"), DType::F16);
  EXPECT_EQ(dtype("bf16"), DType::BF16);
  EXPECT_EQ(dtype("Float"), DType::F32);
  EXPECT_EQ(dtype("fp32"), DType::F32);
  EXPECT_EQ(dtype("f64"), DType::F64);
  EXPECT_EQ(dtype("fp8"), DType::F8_E4M3);
  EXPECT_EQ(dtype("F8_E4M3"), DType::F8_E4M3);
  EXPECT_EQ(dtype("f8_e5m2"), DType::F8_E5M2);
  EXPECT_EQ(dtype("keep"), std::nullopt);
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\ndtype = \"int8\"\n"),
                  "line 2, column 9: unknown dtype \"int8\"");
}

TEST(MergeRecipe, MethodAndMissingPolicyNames) {
  EXPECT_EQ(parse_ok("inputs = [\"a\", \"b\"]\nmethod = \"slerp\"\n").spec.method,
            MergeMethod::kSlerp);
  EXPECT_EQ(parse_ok("inputs = [\"a\", \"b\"]\nmethod = \"dare-ties\"\n").spec.method,
            MergeMethod::kDareTies);
  EXPECT_EQ(parse_ok("inputs = [\"a\"]\nmissing = \"error\"\n").spec.missing,
            MissingPolicy::kError);
  const std::string m = parse_error("inputs = [\"a\"]\nmethod = \"average\"\n");
  EXPECT_CONTAINS(m, "line 2, column 10: unknown merge method \"average\"");
  EXPECT_CONTAINS(m, "weighted-sum");  // the choices are listed
  EXPECT_CONTAINS(parse_error("inputs = [\"a\"]\nmissing = \"ignore\"\n"),
                  "line 2, column 11: unknown missing-tensor policy \"ignore\" (choose take-a, "
                  "skip or error)");
}

}  // namespace
}  // namespace ckptkit
