// `ckptkit merge` — mix models tensor by tensor, streamed. See docs/merge.md.
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "ckptkit/merge.h"
#include "cli/app.h"
#include "cli/commands.h"
#include "cli/json_writer.h"
#include "io/errors.h"
#include "io/file.h"
#include "pipeline/progress.h"

namespace ckptkit::cli {
namespace {

namespace fs = std::filesystem;

struct MergeFlags {
  std::vector<std::string> inputs;
  std::string output, method, blocks, weights, dtype, missing, vae_from, te_from, title, recipe,
      list_blocks;
  std::vector<std::string> alpha;
  double density = 0.2, drop = 0.9;
  uint64_t seed = 0;
  bool normalize = false, extrapolate = false, hash_inputs = false, dry_run = false, json = false,
       quiet = false, allow_dangerous = false;
  uint64_t max_header = kDefaultMaxHeaderBytes;
  WriteFlags write;
  // Which flags were given (they override a recipe's values).
  CLI::Option *o_method = nullptr, *o_density = nullptr, *o_drop = nullptr, *o_seed = nullptr,
              *o_dtype = nullptr, *o_missing = nullptr, *o_title = nullptr;
};

Result<double> parse_number(std::string_view text, std::string_view what) {
  std::string s(text);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(v))
    return error(ErrorCode::kInvalidArgument, "{} '{}' is not a number", what, text);
  return v;
}

/// "A", "b", "2" (1-based), or one of the input paths → input index.
Result<size_t> parse_input_ref(const std::string& ref, const std::vector<std::string>& inputs,
                               std::string_view flag) {
  if (ref.size() == 1 && std::isalpha(static_cast<unsigned char>(ref[0]))) {
    const size_t i = static_cast<size_t>(std::toupper(static_cast<unsigned char>(ref[0])) - 'A');
    if (i < inputs.size()) return i;
    return error(ErrorCode::kInvalidArgument, "{} {}: there is no input {} ({} inputs: A…{})", flag,
                 ref, static_cast<char>('A' + i), inputs.size(),
                 static_cast<char>('A' + std::min<size_t>(inputs.size(), 26) - 1));
  }
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i] == ref) return i;
  return error(ErrorCode::kInvalidArgument,
               "{} {}: name an input by its letter (A, B, …) or its path as given", flag, ref);
}

/// The recipe's text (at most 1 MiB: a recipe is a few lines).
Result<std::string> read_recipe_file(const std::string& path) {
  CKPT_ASSIGN_OR_RETURN(InputFile file, InputFile::open(path));
  if (file.size() > (1u << 20))
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("{} bytes is too large for a recipe (at most 1 MiB)", file.size()),
                  path);
  std::string text(file.size(), '\0');
  CKPT_RETURN_IF_ERROR(file.pread_exact(
      std::span<uint8_t>(reinterpret_cast<uint8_t*>(text.data()), text.size()), 0, "recipe"));
  return text;
}

Status apply_flags(const MergeFlags& f, MergeSpec& s) {
  if (!f.inputs.empty()) s.inputs = f.inputs;
  if (f.o_method->count()) {
    auto m = parse_merge_method(f.method);
    if (!m) {
      std::string names;
      for (MergeMethod x : all_merge_methods())
        names += fmt::format("{}{}", names.empty() ? "" : ", ", merge_method_name(x));
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("unknown merge method '{}' (choose {})", f.method, names));
    }
    s.method = *m;
  }
  for (const std::string& a : f.alpha) {
    const size_t eq = a.find('=');
    if (eq == std::string::npos) {
      CKPT_ASSIGN_OR_RETURN(s.alpha, parse_number(a, "--alpha"));
    } else {
      std::string name = a.substr(0, eq);
      if (name.empty())
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("--alpha {}: give NAME=VALUE, e.g. IN03=0.5", a));
      if (name == "BASE") name = "text_encoder";  // supermerger's name for it
      CKPT_ASSIGN_OR_RETURN(s.block_alpha[name],
                            parse_number(std::string_view(a).substr(eq + 1), "--alpha " + name));
    }
  }
  if (!f.blocks.empty()) s.block_string = f.blocks;
  if (!f.weights.empty()) {
    s.weights.clear();
    size_t pos = 0;
    for (;;) {
      const size_t comma = f.weights.find(',', pos);
      const std::string item =
          f.weights.substr(pos, comma == std::string::npos ? comma : comma - pos);
      CKPT_ASSIGN_OR_RETURN(double w, parse_number(item, "--weights value"));
      s.weights.push_back(w);
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  if (f.normalize) s.normalize = true;
  if (f.extrapolate) s.allow_extrapolation = true;
  if (f.o_density->count()) s.density = f.density;
  if (f.o_drop->count()) s.drop = f.drop;
  if (f.o_seed->count()) s.seed = f.seed;
  if (f.o_dtype->count()) {
    CKPT_ASSIGN_OR_RETURN(s.dtype, parse_dtype_flag(f.dtype));
  }
  if (f.o_missing->count()) {
    auto p = parse_missing_policy(f.missing);
    if (!p)
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("--missing {}: choose take-a, skip or error", f.missing));
    s.missing = *p;
  }
  if (!f.vae_from.empty()) {
    CKPT_ASSIGN_OR_RETURN(s.part_from["vae"], parse_input_ref(f.vae_from, s.inputs, "--vae-from"));
  }
  if (!f.te_from.empty()) {
    CKPT_ASSIGN_OR_RETURN(s.part_from["text_encoder"],
                          parse_input_ref(f.te_from, s.inputs, "--text-encoder-from"));
  }
  if (f.o_title->count()) s.title = f.title;
  if (f.hash_inputs) s.hash_inputs = true;
  return Status::ok();
}

int list_blocks(const MergeFlags& f) {
  SafetensorsLimits limits;
  limits.max_header_bytes = f.max_header;
  auto r = list_merge_blocks(f.list_blocks, limits);
  if (!r) return report_error(r.status());
  if (f.json) {
    JsonWriter w;
    w.begin_object();
    w.key("architecture").value(r->architecture);
    w.key("family").value(r->family);
    w.key("groups").begin_array();
    for (const MergeGroup& g : r->groups) {
      w.begin_object();
      w.key("name").value(g.name);
      w.key("tensors").value(g.tensors);
      w.key("parameters").value(g.parameters);
      w.end_object();
    }
    w.end_array();
    w.end_object();
    print_out(w.str());
    return kExitOk;
  }
  std::string out = fmt::format("{}: {} ({}), {} α groups\n", f.list_blocks, r->architecture,
                                r->family.empty() ? "no family" : r->family, r->groups.size());
  out += fmt::format("  {:<18} {:>8} {:>12}\n", "group", "tensors", "parameters");
  for (const MergeGroup& g : r->groups)
    out += fmt::format("  {:<18} {:>8} {:>12}\n", g.name, g.tensors, short_count(g.parameters));
  out += "Set one with --alpha NAME=X (the rest take --alpha X).\n";
  print_out(out);
  return kExitOk;
}

int print_report(const MergeReport& r, const MergeSpec& s, const MergeFlags& f, bool dry) {
  if (f.json) {
    JsonWriter w;
    w.begin_object();
    w.key("architecture").value(r.architecture);
    w.key("family").value(r.family);
    w.key("output").value(r.output);
    w.key("dry_run").value(dry);
    w.key("method").value(merge_method_name(s.method));
    w.key("inputs").begin_array();
    for (const MergeInputInfo& i : r.inputs) {
      w.begin_object();
      w.key("path").value(i.path);
      w.key("name").value(i.name);
      w.key("bytes").value(i.bytes);
      w.key("architecture").value(i.architecture);
      if (!i.autov2.empty()) w.key("autov2").value(i.autov2);
      w.end_object();
    }
    w.end_array();
    w.key("groups").begin_array();
    for (const MergeGroupPlan& g : r.groups) {
      w.begin_object();
      w.key("name").value(g.name);
      w.key("alpha").value(g.alpha);
      w.key("action").value(g.action);
      w.key("tensors").value(g.tensors);
      w.end_object();
    }
    w.end_array();
    w.key("tensors_merged").value(r.tensors_merged);
    w.key("tensors_copied").value(r.tensors_copied);
    for (auto [key, list] : {std::pair{"missing", &r.missing}, std::pair{"not_in_a", &r.not_in_a},
                             std::pair{"partial", &r.partial}, std::pair{"notes", &r.notes}}) {
      w.key(key).begin_array();
      for (const std::string& n : *list) w.value(n);
      w.end_array();
    }
    w.key("recipe").raw(r.recipe_json);
    w.key("input_bytes").value(r.input_bytes);
    w.key("output_bytes").value(r.stats.bytes_written);
    w.key("buffer_bytes").value(r.stats.buffer_bytes);
    w.key("seconds").value(fmt::format("{:.3f}", r.stats.seconds));
    w.end_object();
    print_out(w.str());
    return kExitOk;
  }
  if (f.quiet) return kExitOk;
  std::string out;
  if (dry)
    out += fmt::format("would merge {} inputs ({}) with {}{}\n", r.inputs.size(), r.architecture,
                       merge_method_name(s.method), r.output.empty() ? "" : " into " + r.output);
  else
    out += fmt::format("merged {} inputs ({}) with {} into {} in {:.2f} s\n", r.inputs.size(),
                       r.architecture, merge_method_name(s.method), r.output, r.stats.seconds);
  for (size_t i = 0; i < r.inputs.size(); ++i) {
    const MergeInputInfo& in = r.inputs[i];
    out += fmt::format("  {}  {}  ({}, {}{})\n", static_cast<char>('A' + std::min<size_t>(i, 25)),
                       in.path, human_bytes(in.bytes), in.architecture,
                       in.autov2.empty() ? "" : ", AutoV2 " + in.autov2);
  }
  // Groups that differ from the default (own α, copied, partly missing) one per line; the
  // rest on one line.
  std::vector<std::string> plain;
  uint64_t plain_tensors = 0;
  for (const MergeGroupPlan& g : r.groups) {
    if (g.alpha == s.alpha && g.action == "merged") {
      plain.push_back(g.name);
      plain_tensors += g.tensors;
      continue;
    }
    out += fmt::format("  {:<18} α={:<6} {:>5} tensors  {}\n", g.name, fmt::format("{}", g.alpha),
                       g.tensors, g.action);
  }
  if (!plain.empty())
    out +=
        fmt::format("  {:<18} α={:<6} {:>5} tensors  merged{}\n",
                    plain.size() == r.groups.size() ? "all groups"
                                                    : fmt::format("{} other groups", plain.size()),
                    fmt::format("{}", s.alpha), plain_tensors,
                    plain.size() <= 4 ? fmt::format(" ({})", fmt::join(plain, ", ")) : "");
  out += fmt::format("  {} tensors merged, {} copied", r.tensors_merged, r.tensors_copied);
  if (!r.partial.empty()) out += fmt::format(", {} with A's extra channels kept", r.partial.size());
  out += "\n";
  if (!r.missing.empty())
    out += fmt::format("  {} tensors of A missing or different in another input ({}):\n",
                       r.missing.size(),
                       s.missing == MissingPolicy::kSkip ? "left out" : "A's written");
  for (const std::string& n : r.notes) out += fmt::format("  note: {}\n", n);
  if (!dry)
    out += fmt::format("  wrote {} ({} read), I/O buffers {}\n", human_bytes(r.stats.bytes_written),
                       human_bytes(r.stats.bytes_read), human_bytes(r.stats.buffer_bytes));
  std::fputs(out.c_str(), stderr);
  return kExitOk;
}

}  // namespace

Runner setup_merge(CLI::App& sub) {
  auto f = std::make_shared<MergeFlags>();
  sub.add_option("INPUTS", f->inputs, "the models: A (the base), B, C, … (.safetensors, .ckpt, …)");
  sub.add_option("-o,--output", f->output, "output file (.safetensors)");
  f->o_method = sub.add_option("-m,--method", f->method,
                               "weighted-sum (default), add-difference, train-difference, slerp, "
                               "ties, dare, dare-ties");
  sub.add_option("-a,--alpha", f->alpha,
                 "α for every tensor (X), or for one group (NAME=X: IN03, M00, OUT11, "
                 "joint_blocks.4, double_blocks.0, text_encoder, vae, other); repeatable")
      ->allow_extra_args(false);
  sub.add_option("--blocks", f->blocks,
                 "a supermerger block-weight string: 25 values IN00…OUT11, or 26 with BASE "
                 "(text encoder) first");
  sub.add_option("-w,--weights", f->weights,
                 "weights, comma-separated: weighted-sum one per input (sum 1); ties/dare one per "
                 "input after A");
  sub.add_flag("--normalize", f->normalize, "divide the weights by their sum");
  sub.add_flag("--allow-extrapolation", f->extrapolate, "allow α and weights outside [0, 1]");
  f->o_density = sub.add_option("--density", f->density, "ties: fraction of each difference kept")
                     ->default_val(0.2);
  f->o_drop =
      sub.add_option("--drop", f->drop, "dare, dare-ties: drop probability p")->default_val(0.9);
  f->o_seed = sub.add_option("--seed", f->seed, "dare, dare-ties: random seed")->default_val(0);
  f->o_dtype = sub.add_option("--dtype", f->dtype, "output float dtype (default: A's)");
  f->o_missing = sub.add_option("--missing", f->missing,
                                "tensors of A another input lacks: take-a (default), skip, error");
  sub.add_option("--vae-from", f->vae_from, "copy the VAE unchanged from this input (A, B, …)");
  sub.add_option("--text-encoder-from", f->te_from,
                 "copy the text encoder(s) unchanged from this input (A, B, …)");
  sub.add_flag("--hash-inputs", f->hash_inputs,
               "record each input's AutoV2 in the output's metadata (reads every input once more)");
  f->o_title = sub.add_option("--title", f->title, "modelspec.title (default: \"merge of A + B\")");
  sub.add_option("--recipe", f->recipe,
                 "a TOML recipe (docs/merge.md); flags given too override it");
  sub.add_option("--list-blocks", f->list_blocks, "print the α groups of a model and exit");
  sub.add_flag("--dry-run", f->dry_run, "check everything and print the plan; write nothing");
  sub.add_flag("--json", f->json, "print the report as JSON on stdout");
  sub.add_flag("-q,--quiet", f->quiet, "print nothing on success");
  sub.add_flag("--allow-dangerous", f->allow_dangerous,
               "read PyTorch inputs even if `scan` finds code in them (nothing is ever run)");
  sub.add_option("--max-header-size", f->max_header, "refuse input headers larger than this")
      ->default_val(kDefaultMaxHeaderBytes);
  f->write.add_to(sub);
  sub.footer(
      "Methods (A is the base; every formula is evaluated in F32, same bits on every CPU):\n"
      "  weighted-sum      A·(1−α) + B·α, or Σ wᵢ·Xᵢ with --weights\n"
      "  add-difference    A + (B − C)·α      (3 inputs: e.g. inpaint-base, finetune, base)\n"
      "  train-difference  supermerger's Train Difference of A, B, C\n"
      "  slerp             spherical interpolation of A and B, t = α\n"
      "  ties              A + α·TIES(B−A, C−A, …)  (--density, --weights)\n"
      "  dare              A + α·Σ wᵢ·DARE(Xᵢ−A)   (--drop, --seed)\n"
      "  dare-ties         DARE's drop, then TIES's sign election\n"
      "\n"
      "Examples:\n"
      "  ckptkit merge a.safetensors b.safetensors --alpha 0.3 -o ab.safetensors\n"
      "  ckptkit merge inpaint.safetensors mine.safetensors base.safetensors \\\n"
      "      --method add-difference --alpha 1 -o mine-inpaint.safetensors\n"
      "  ckptkit merge a.safetensors b.safetensors --alpha 0.5 --alpha OUT11=1 \\\n"
      "      --alpha text_encoder=0 --vae-from A -o out.safetensors\n"
      "  ckptkit merge base.safetensors x.safetensors y.safetensors --method ties \\\n"
      "      --density 0.2 -o ties.safetensors\n"
      "  ckptkit merge --recipe mix.toml\n"
      "  ckptkit merge --list-blocks a.safetensors\n"
      "Memory stays within --max-memory (64M) whatever the models' size. The output records\n"
      "the recipe (metadata ckptkit.recipe) and its inputs (modelspec.merged_from).\n"
      "Docs: docs/merge.md");
  return [f]() -> int {
    if (!f->list_blocks.empty()) return list_blocks(*f);
    MergeSpec spec;
    std::string output = f->output;
    if (!f->recipe.empty()) {
      auto text = read_recipe_file(f->recipe);
      if (!text) return report_error(text.status());
      const std::string dir = fs::path(f->recipe).parent_path().string();
      auto recipe = parse_recipe(*text, f->recipe, dir);
      if (!recipe) return report_error(recipe.status());
      spec = recipe->spec;
      if (output.empty()) output = recipe->output;
    }
    if (Status s = apply_flags(*f, spec); !s.is_ok()) return report_error(s);
    if (spec.inputs.empty())
      return report_error(
          Status(ErrorCode::kInvalidArgument, "give the models to merge (A B …) or --recipe FILE"));
    if (output.empty() && !f->dry_run)
      return report_error(Status(ErrorCode::kInvalidArgument, "give the output file with -o"));
    MergeOptions options;
    options.spec = spec;
    options.limits.max_header_bytes = f->max_header;
    options.allow_dangerous = f->allow_dangerous;
    options.dry_run = f->dry_run;
    auto run = f->write.to_options();
    if (!run) return report_error(run.status());
    options.run = *run;
    options.run.label = "merging";
    for (const std::string& in : spec.inputs) {
      std::optional<Verdict> verdict;
      if (auto rc = scan_gate(in, "merge", options.limits, f->allow_dangerous, verdict)) return *rc;
    }
    auto report = merge_models(output, options);
    if (!report) return report_error(report.status());
    return print_report(*report, spec, *f, f->dry_run);
  };
}

}  // namespace ckptkit::cli
