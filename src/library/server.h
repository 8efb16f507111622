// `ckptkit library serve`: the library as a local web page and a JSON API (docs/library.md).
//
// Read-only unless ServeOptions::allow_actions (then POST /api/actions/..., token-checked,
// writes new files beside indexed ones: docs/library.md, "Actions"). Serves the page and assets
// embedded in the binary (web/, cmake/embed_web.cmake) and JSON under /api/ built by queries.h; it
// never opens a file named by a request, so no path can reach the disk. Requests are GET/HEAD only,
// with a bounded size, and must name this server in their Host header (a page from another site
// that rebinds its DNS name to 127.0.0.1 is refused).
#pragma once

#include <functional>
#include <string>

#include "ckptkit/status.h"

namespace ckptkit::library {

struct ServeOptions {
  std::string db_path;
  std::string bind = "127.0.0.1";
  int port = 8765;  ///< 0: any free port
  /// POST /api/actions/{prune,split,convert} (docs/library.md, "Actions"): each needs the
  /// server's random token (embedded in the page) in X-Ckptkit-Token, and an Origin/Referer,
  /// when sent, naming this server. Off: every POST is 405.
  bool allow_actions = false;
};

/// Binds, calls on_ready(url) once listening, and serves until the process ends.
/// Errors: the database cannot be opened, the port is taken.
Status serve(const ServeOptions& options, const std::function<void(const std::string&)>& on_ready);

/// Whether `host` (a Host header) names a server bound to `bind`:`port`: an IP literal (DNS
/// names can be rebound), or "localhost" when bound to loopback; the port must be ours.
bool host_allowed(std::string_view host, std::string_view bind, int port);

}  // namespace ckptkit::library
