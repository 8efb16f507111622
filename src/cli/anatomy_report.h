// How `inspect` shows an Anatomy (ckptkit/anatomy.h), as text and as JSON.
#pragma once

#include <string>

#include "ckptkit/anatomy.h"
#include "cli/json_writer.h"

namespace ckptkit::cli {

/// Adds architecture, family, variant, layout, modelspec, evidence, distillation, components,
/// defects, candidates (and lora) keys to the object being written.
/// `fingerprints`: one SHA-256 per component (ckptkit/ops.h), or empty.
void write_anatomy_json(JsonWriter& w, const Anatomy& a, const Checkpoint& ck,
                        const std::vector<std::string>& fingerprints = {});

/// Lines for the text report (12-column labels, as the rest of `inspect`).
std::string anatomy_text(const Anatomy& a, const Checkpoint& ck,
                         const std::vector<std::string>& fingerprints = {});

void write_diffusers_json(JsonWriter& w, const DiffusersFolder& d);
std::string diffusers_text(const DiffusersFolder& d);

}  // namespace ckptkit::cli
