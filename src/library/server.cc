#include "library/server.h"

#include <fmt/format.h>
#include <httplib.h>
#include <simdjson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <charconv>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>

#include "ckptkit/ops.h"
#include "cli/json_writer.h"
#include "library/queries.h"
#include "library/store.h"
#include "library/web_assets.h"

namespace ckptkit::library {
namespace {

constexpr size_t kMaxParam = 256;  // a filter value longer than this is not a filter

const char* const kCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

void send_json(httplib::Response& res, int status, std::string body) {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  res.set_content(std::move(body), "application/json; charset=utf-8");
}

void send_error(httplib::Response& res, int status, std::string_view message) {
  std::string body = "{\"error\": \"";
  for (char c : message) {
    if (c == '"' || c == '\\') body += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) body += c;
  }
  body += "\"}\n";
  send_json(res, status, std::move(body));
}

/// This thread's read-only connection (the server's pool threads live as long as it does).
Result<const Db*> thread_db(const std::string& path) {
  thread_local std::unique_ptr<Db> db;
  if (!db) {
    auto opened = Db::open(path, Db::Mode::kReadOnly);
    if (!opened) return opened.status();
    db = std::make_unique<Db>(std::move(*opened));
  }
  return static_cast<const Db*>(db.get());
}

/// PRAGMA data_version of this connection: it changes when another connection (an `index`
/// run) commits, so whatever was computed from the database before is stale. -1: unknown.
int64_t data_version(const Db& db) {
  Stmt st(db, "PRAGMA data_version");
  return st.step() ? st.i64(0) : -1;
}

bool is_ip_literal(std::string_view h) {
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') {
    for (char c : h.substr(1, h.size() - 2))
      if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.')) return false;
    return true;
  }
  if (h.empty()) return false;
  for (char c : h)
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.')) return false;
  return true;
}

/// 32 random bytes as hex: the token a POST must carry (only this server's page has it).
std::string random_token() {
  std::random_device rd;  // /dev/urandom (or the CPU's generator) on Linux
  std::string t;
  for (int i = 0; i < 8; ++i) t += fmt::format("{:08x}", static_cast<uint32_t>(rd()));
  return t;
}

bool same_secret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

/// Why a POST to /api/actions/ is refused (403), or "" when it may go on: the token, and an
/// Origin or Referer (browsers send them; a cross-site page cannot forge them) naming this
/// server, whose Host header was checked already.
std::string action_refusal(const httplib::Request& req, const std::string& token) {
  if (!same_secret(req.get_header_value("X-Ckptkit-Token"), token))
    return "an action needs this server's token (X-Ckptkit-Token, from its page)";
  const std::string self = "http://" + req.get_header_value("Host");
  if (req.has_header("Origin") && req.get_header_value("Origin") != self)
    return "cross-site request refused (Origin)";
  if (req.has_header("Referer")) {
    const std::string ref = req.get_header_value("Referer");
    if (ref != self && !ref.starts_with(self + "/")) return "cross-site request refused (Referer)";
  }
  return {};
}

/// `dir/stem+suffix+ext`, or with -2, -3, … before `ext`: the first name nothing has (a file, a
/// folder or a link, even a broken one); "" after 1,000 tries.
std::string free_name(const std::filesystem::path& dir, const std::string& stem,
                      const std::string& ext) {
  for (int i = 1; i <= 1000; ++i) {
    const auto p = dir / (stem + (i == 1 ? "" : fmt::format("-{}", i)) + ext);
    std::error_code ec;
    if (!std::filesystem::exists(std::filesystem::symlink_status(p, ec))) return p.string();
  }
  return {};
}

bool flag_param(const httplib::Request& req, const char* name) {
  if (!req.has_param(name)) return false;
  const std::string v = req.get_param_value(name);
  return v.empty() || v == "1" || v == "true" || v == "yes";
}

}  // namespace

bool host_allowed(std::string_view host, std::string_view bind, int port) {
  const std::string suffix = fmt::format(":{}", port);
  if (!host.ends_with(suffix)) return false;
  const std::string_view name = host.substr(0, host.size() - suffix.size());
  const bool loopback = bind == "127.0.0.1" || bind == "::1" || bind == "localhost";
  if (name == "localhost") return loopback;
  if (!is_ip_literal(name)) return false;
  if (bind == "0.0.0.0" || bind == "::") return true;  // any address of this machine
  const std::string b =
      bind.find(':') != std::string_view::npos ? fmt::format("[{}]", bind) : std::string(bind);
  if (name == b) return true;
  return loopback && (name == "127.0.0.1" || name == "[::1]");
}

Status serve(const ServeOptions& options, const std::function<void(const std::string&)>& on_ready) {
  {
    // Fail now, with the reason, rather than on the first request.
    auto db = Db::open(options.db_path, Db::Mode::kReadWrite);
    if (!db) return db.status();
  }
  httplib::Server svr;
  const std::string db_path = options.db_path;
  int port = options.port;
  const std::string token = options.allow_actions ? random_token() : std::string();
  svr.new_task_queue = [] { return new httplib::ThreadPool(4); };
  // httplib's default also sets SO_REUSEPORT, with which a second server would share a port
  // that is in use instead of failing: only SO_REUSEADDR here.
  svr.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
  });
  // A response is written in pieces (headers, body): without TCP_NODELAY each small request
  // waits ~40 ms for the client's delayed ACK (measured: API p50 44 ms, 0.x ms with it).
  svr.set_tcp_nodelay(true);
  svr.set_payload_max_length(1024);
  svr.set_read_timeout(5, 0);
  svr.set_write_timeout(5, 0);
  svr.set_keep_alive_max_count(100);
  svr.set_default_headers({{"X-Content-Type-Options", "nosniff"},
                           {"Content-Security-Policy", kCsp},
                           {"Referrer-Policy", "no-referrer"},
                           {"X-Frame-Options", "DENY"},
                           {"Cross-Origin-Resource-Policy", "same-origin"}});
  svr.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
    if (!host_allowed(req.get_header_value("Host"), options.bind, port)) {
      send_error(res, 421, "this server answers only to the address it is bound to (Host header)");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (options.allow_actions && req.method == "POST" && req.path.starts_with("/api/actions/")) {
      if (const std::string why = action_refusal(req, token); !why.empty()) {
        send_error(res, 403, why);
        return httplib::Server::HandlerResponse::Handled;
      }
    } else if (req.method != "GET" && req.method != "HEAD") {
      send_error(res, 405,
                 options.allow_actions ? "GET, or POST to /api/actions/"
                                       : "read-only: GET only (actions need --allow-actions)");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.target.size() > 2048) {
      send_error(res, 414, "request too long");
      return httplib::Server::HandlerResponse::Handled;
    }
    for (const auto& [k, v] : req.params)
      if (k.size() > 32 || v.size() > kMaxParam) {
        send_error(res, 400, "a query parameter is too long");
        return httplib::Server::HandlerResponse::Handled;
      }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) send_error(res, res.status, res.status == 404 ? "not found" : "error");
  });

  for (size_t i = 0; i < kWebAssetCount; ++i) {
    const WebAsset& a = kWebAssets[i];
    auto handler = [&a, &token](const httplib::Request&, httplib::Response& res) {
      std::string_view body(reinterpret_cast<const char*>(a.data), a.size);
      const size_t head = body.find("<head>");
      if (!token.empty() && std::string_view(a.path) == "/index.html" && head != body.npos) {
        // The page's copy of the token (app.js sends it with each action); no-store keeps
        // it out of caches.
        std::string page(body.substr(0, head + 6));
        page += "\n<meta name=\"ckptkit-token\" content=\"" + token + "\">";
        page += body.substr(head + 6);
        res.set_header("Cache-Control", "no-store");
        res.set_content(std::move(page), a.mime);
        return;
      }
      res.set_content(body.data(), body.size(), a.mime);
    };
    svr.Get(a.path, handler);
    if (std::string_view(a.path) == "/index.html") svr.Get("/", handler);
  }

  auto with_db = [db_path](httplib::Response& res) -> const Db* {
    auto db = thread_db(db_path);
    if (!db) {
      send_error(res, 500, db.status().to_string());
      return nullptr;
    }
    return *db;
  };

  svr.Get("/api/models", [&, with_db](const httplib::Request& req, httplib::Response& res) {
    const Db* db = with_db(res);
    if (!db) return;
    ModelFilter f;
    f.kind = req.get_param_value("kind");
    f.architecture = req.get_param_value("arch");
    f.format = req.get_param_value("format");
    f.family = req.get_param_value("family");
    f.search = req.get_param_value("q");
    f.unsafe = flag_param(req, "unsafe");
    f.defects = flag_param(req, "defects");
    f.errors = flag_param(req, "errors");
    if (req.has_param("sort")) f.sort = req.get_param_value("sort");
    f.descending = req.get_param_value("order") == "desc";
    for (auto [name, out] : {std::pair{"limit", &f.limit}, std::pair{"offset", &f.offset}}) {
      const std::string v = req.get_param_value(name);
      if (v.empty()) continue;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
      if (ec != std::errc() || p != v.data() + v.size()) {
        send_error(res, 400, fmt::format("{} must be a number", name));
        return;
      }
    }
    if (f.limit == 0 || f.limit > 10000) f.limit = 10000;
    uint64_t total = 0;
    auto rows = list_models(*db, f, &total);
    if (!rows) {
      send_error(res, rows.status().code() == ErrorCode::kInvalidArgument ? 400 : 500,
                 rows.status().message());
      return;
    }
    send_json(res, 200, models_json(*rows, total));
  });
  svr.Get(R"(/api/models/(\d{1,18}))",
          [with_db](const httplib::Request& req, httplib::Response& res) {
            const Db* db = with_db(res);
            if (!db) return;
            int64_t id = 0;
            const std::string m = req.matches[1];
            std::from_chars(m.data(), m.data() + m.size(), id);
            auto doc = model_json(*db, id);
            if (!doc) return send_error(res, 500, doc.status().message());
            if (!*doc) return send_error(res, 404, "no model with this id");
            send_json(res, 200, std::move(**doc));
          });
  svr.Get("/api/dupes", [with_db](const httplib::Request&, httplib::Response& res) {
    const Db* db = with_db(res);
    if (!db) return;
    auto d = find_dupes(*db);
    if (!d) return send_error(res, 500, d.status().message());
    send_json(res, 200, dupes_json(*d));
  });
  svr.Get("/api/stats", [with_db](const httplib::Request&, httplib::Response& res) {
    const Db* db = with_db(res);
    if (!db) return;
    // The stats change only when the database does: kept per thread (as its connection is)
    // until another connection commits.
    thread_local int64_t cached_version = -1;
    thread_local std::string cached;
    const int64_t version = data_version(*db);
    if (version < 0 || version != cached_version) {
      auto s = stats_json(*db);
      if (!s) return send_error(res, 500, s.status().message());
      cached = std::move(*s);
      cached_version = version;
    }
    send_json(res, 200, cached);
  });
  std::mutex action_mutex;  // one action at a time: a name found free stays free until written
  if (options.allow_actions) {
    svr.Post(R"(/api/actions/(prune|split|convert))", [&, with_db](const httplib::Request& req,
                                                                   httplib::Response& res) {
      // The body: {"id": N} or {"id": N, "allow_dangerous": true|false}, nothing else.
      int64_t id = 0;
      bool allow_dangerous = false;
      {
        const char* usage = "body: {\"id\": N} or {\"id\": N, \"allow_dangerous\": true}";
        simdjson::dom::parser parser;
        simdjson::dom::object body;
        if (parser.parse(req.body).get_object().get(body)) return send_error(res, 400, usage);
        bool have_id = false;
        for (auto field : body) {
          if (field.key == "id" && !have_id) {
            uint64_t v = 0;
            if (field.value.get_uint64().get(v) || v > 999'999'999'999'999'999ull)
              return send_error(res, 400, usage);
            id = static_cast<int64_t>(v);
            have_id = true;
          } else if (field.key == "allow_dangerous") {
            if (field.value.get_bool().get(allow_dangerous)) return send_error(res, 400, usage);
          } else {
            return send_error(res, 400, usage);
          }
        }
        if (!have_id) return send_error(res, 400, usage);
      }
      const std::string action = req.matches[1];
      const Db* db = with_db(res);
      if (!db) return;
      std::string in, verdict, root;
      bool folder = false;
      {
        Stmt st(*db, "SELECT path, is_folder, scan_verdict, root FROM models WHERE id = ?1");
        st.bind(1, id);
        if (!st.step()) {
          if (!st.status().is_ok()) return send_error(res, 500, st.status().message());
          return send_error(res, 404, "no model with this id");
        }
        in = st.text(0);
        folder = st.i64(1) != 0;
        verdict = st.text(2);
        root = st.text(3);
      }
      if (folder) return send_error(res, 400, "actions take a single file, not a diffusers folder");
      std::error_code ec;
      if (!std::filesystem::is_regular_file(in, ec))
        return send_error(res, 409, "the file is gone or changed (run `library index` again)");
      if (verdict == "dangerous" && !allow_dangerous)
        return send_error(res, 409,
                          "the scan found code that would run when this file is loaded: only with "
                          "allow_dangerous (only the tensors are read; nothing in it runs)");
      const std::filesystem::path p(in);
      const std::string stem = p.stem().string();
      std::lock_guard lock(action_mutex);
      RunOptions run;
      run.progress = ProgressMode::kNever;
      ReshapeOptions common;
      common.run = run;
      common.allow_dangerous = allow_dangerous;
      std::string out;
      Result<std::vector<std::string>> written = std::vector<std::string>();
      auto paths = [](const std::vector<WrittenFile>& files) {
        std::vector<std::string> v;
        for (const WrittenFile& f : files) v.push_back(f.path);
        return v;
      };
      if (action == "prune") {
        out = free_name(p.parent_path(), stem + "-pruned", ".safetensors");
        if (out.empty()) return send_error(res, 409, "no free output name");
        PruneOptions o;
        o.common = common;
        auto r = prune_file(in, out, o);
        if (!r)
          written = r.status();
        else
          written = paths(r->outputs);
      } else if (action == "split") {
        out = free_name(p.parent_path(), stem + "-split", "");
        if (out.empty()) return send_error(res, 409, "no free output name");
        SplitOptions o;
        o.common = common;
        auto r = split_file(in, out, o);
        if (!r)
          written = r.status();
        else
          written = paths(r->outputs);
      } else {
        out =
            free_name(p.parent_path(), stem + (p.extension() == ".safetensors" ? "-converted" : ""),
                      ".safetensors");
        if (out.empty()) return send_error(res, 409, "no free output name");
        ConvertOptions o;
        o.run = run;
        o.allow_dangerous = allow_dangerous;
        auto r = convert_file(in, out, o);
        if (!r)
          written = r.status();
        else
          written = std::vector<std::string>{out};
      }
      if (!written)
        return send_error(res, written.status().code() == ErrorCode::kIoError ? 500 : 409,
                          written.status().message());
      cli::JsonWriter w;
      w.begin_object();
      w.key("action").value(action);
      w.key("input").value(in);
      w.key("output").value(out);
      w.key("written").begin_array();
      for (const std::string& f : *written) w.value(f);
      w.end_array();
      w.key("indexed").value(false);
      w.key("next").value(fmt::format("run `ckptkit library index {}` to list it", root));
      w.end_object();
      send_json(res, 200, w.str());
    });
  }
  svr.Get("/api", [](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200,
              "{\"endpoints\": [\"/api/models?kind=&arch=&format=&family=&q=&unsafe=1&"
              "defects=1&errors=1&sort=&order=desc&limit=&offset=\", \"/api/models/ID\", "
              "\"/api/dupes\", \"/api/stats\"]}\n");
  });

  if (port == 0) {
    port = svr.bind_to_any_port(options.bind);
    if (port < 0)
      return Status(ErrorCode::kIoError, fmt::format("cannot listen on {}", options.bind));
  } else if (!svr.bind_to_port(options.bind, port)) {
    return Status(ErrorCode::kIoError,
                  fmt::format("cannot listen on {}:{} (in use? try --port 0 for any free port)",
                              options.bind, port));
  }
  const std::string host =
      options.bind.find(':') != std::string::npos ? "[" + options.bind + "]" : options.bind;
  on_ready(fmt::format("http://{}:{}/", host, port));
  if (!svr.listen_after_bind()) return Status(ErrorCode::kIoError, "the server stopped listening");
  return Status::ok();
}

}  // namespace ckptkit::library
