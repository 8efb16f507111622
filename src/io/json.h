// Minimal JSON text output shared by the safetensors writer and the CLI's --json reports.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ckptkit {

/// Appends `s` as a JSON string literal. Escapes as serde_json does: `"`, `\`, and control
/// characters (\b \f \n \r \t, others as \u00XX); everything else, UTF-8 included, verbatim.
void append_json_string(std::string& out, std::string_view s);

}  // namespace ckptkit
