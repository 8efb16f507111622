// Rendering of scan reports, shared by `scan`, `inspect` and `convert`.
#pragma once

#include <string>

#include "ckptkit/scan.h"
#include "cli/json_writer.h"

namespace ckptkit::cli {

void write_scan_json(JsonWriter& w, const ScanReport& r);
/// "FILE: verdict", the summary, then one line per unknown/dangerous global and finding.
std::string scan_text(const ScanReport& r, bool verbose);

}  // namespace ckptkit::cli
