// ckptkit._native — the C++ half of the Python module (python/ckptkit/__init__.py is the other).
//
// This file only reads tables and maps files; it never builds NumPy arrays or torch tensors
// itself. open_file() reads a checkpoint with the library's strict readers (and, for PyTorch
// files, scans it with the passive pickle machine), then maps the whole file MAP_PRIVATE with
// PROT_READ|PROT_WRITE: a copy-on-write mapping, so an array written to gets private pages and
// the file never changes. The Mapping object exports the buffer protocol; the Python side views
// it with np.frombuffer / np.ndarray, so every array keeps the Mapping (and so the mapping)
// alive, and munmap runs when the last one dies.
//
// Errors leave as NativeError(code, message, path, offset, text, report); the Python side turns
// them into ckptkit.Error / FormatError / DangerousPickleError / FileNotFoundError.
#include <fcntl.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ckptkit/cast.h"
#include "ckptkit/dtype.h"
#include "ckptkit/gguf.h"
#include "ckptkit/reader.h"
#include "ckptkit/safetensors.h"
#include "ckptkit/scan.h"
#include "cli/app.h"
#include "cli/inspect_report.h"
#include "cli/json_writer.h"
#include "cli/scan_report.h"
#include "io/output.h"
#include "lora/svd.h"

namespace py = pybind11;

namespace ckptkit::python {
namespace {

std::atomic<int64_t> g_live_mappings{0};

/// A whole file mapped private and writable (copy-on-write).
class Mapping {
 public:
  Mapping(void* addr, size_t size, std::string path)
      : addr_(addr), size_(size), path_(std::move(path)) {
    ++g_live_mappings;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr_ != nullptr) ::munmap(addr_, size_);
    --g_live_mappings;
  }
  uint8_t* data() const { return static_cast<uint8_t*>(addr_); }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void* addr_;
  size_t size_;
  std::string path_;
};

/// The exception the Python side translates (see python/ckptkit/__init__.py:_translate).
PyObject* g_native_error = nullptr;

[[noreturn]] void raise_status(const Status& st, const std::string& report_json = {}) {
  py::object offset = st.has_offset() ? py::object(py::int_(st.offset())) : py::object(py::none());
  py::object report =
      report_json.empty() ? py::object(py::none()) : py::object(py::str(report_json));
  py::tuple args = py::make_tuple(std::string(error_code_name(st.code())), st.message(), st.path(),
                                  offset, st.to_string(), report);
  PyErr_SetObject(g_native_error, args.ptr());
  throw py::error_already_set();
}

std::string scan_json(const ScanReport& r) {
  cli::JsonWriter w;
  cli::write_scan_json(w, r);
  return w.str();
}

[[noreturn]] void raise_dangerous(const std::string& path, const std::string& report) {
  raise_status(Status(ErrorCode::kInvalidArgument,
                      "loading it with torch.load would run code (see the scan report); pass "
                      "allow_dangerous=True to take the tensors anyway (ckptkit never runs the "
                      "file's code)",
                      path),
               report);
}

Result<std::shared_ptr<Mapping>> map_file(const std::string& path, uint64_t expected_size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return Status(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIoError,
                  std::string("cannot open: ") + std::strerror(errno), path);
  struct stat sb {};
  if (::fstat(fd, &sb) != 0) {
    const int err = errno;
    ::close(fd);
    return Status(ErrorCode::kIoError, std::string("cannot stat: ") + std::strerror(err), path);
  }
  const uint64_t size = static_cast<uint64_t>(sb.st_size);
  if (size != expected_size) {
    ::close(fd);
    return Status(ErrorCode::kIoError, "the file changed while it was being opened", path);
  }
  void* addr = nullptr;
  if (size > 0) {
    addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return Status(ErrorCode::kIoError, std::string("cannot map: ") + std::strerror(err), path);
    }
  }
  ::close(fd);  // the mapping stays valid without the descriptor
  return std::make_shared<Mapping>(addr, size, path);
}

py::list shape_list(const Shape& s) {
  py::list l;
  for (uint64_t d : s) l.append(d);
  return l;
}

/// Reads `path`'s tensor table and maps it. Returns a dict:
///   format, mapping, metadata, verdict (None for safetensors/GGUF), report (scan JSON or None),
///   state_dict_key, tensors: [(name, dtype, shape, begin, nbytes, strides|None, storage,
///   big_endian)] with `begin` absolute, storages: [(offset, nbytes, dtype, deflated,
///   compressed_size, crc32)].
py::dict open_file(const std::string& path, bool allow_dangerous) {
  Result<CheckedCheckpoint> r = [&] {
    py::gil_scoped_release unlocked;
    return read_and_scan(path);
  }();
  if (!r.is_ok()) {
    // A file whose tensors cannot be read may still be a dangerous pickle: say that first.
    if (!allow_dangerous && r.status().code() != ErrorCode::kNotFound) {
      ScanReport scan;
      {
        py::gil_scoped_release unlocked;
        scan = scan_file(path);
      }
      if (scan.error.is_ok() && scan.verdict == Verdict::kDangerous)
        raise_dangerous(path, scan_json(scan));
    }
    raise_status(r.status());
  }
  const Checkpoint& ck = r->checkpoint;
  std::string report;
  py::object verdict = py::none();
  if (r->scan) {
    report = scan_json(*r->scan);
    verdict = py::str(std::string(verdict_name(r->scan->verdict)));
    if (r->scan->verdict == Verdict::kDangerous && !allow_dangerous) raise_dangerous(path, report);
  }
  Result<std::shared_ptr<Mapping>> m = map_file(path, ck.file_size);
  if (!m.is_ok()) raise_status(m.status());
  const uint64_t size = (*m)->size();

  py::list storages;
  for (const StorageInfo& s : ck.torch.storages) {
    const uint64_t span = s.deflated ? s.compressed_size : s.nbytes;
    if (s.offset > size || span > size - s.offset)
      raise_status(Status(ErrorCode::kCorrupt,
                          "storage '" + s.key + "' lies past the end of the file", path, s.offset));
    storages.append(py::make_tuple(s.offset, s.nbytes, std::string(dtype_info(s.dtype).name),
                                   s.deflated, s.compressed_size, s.crc32));
  }
  py::list tensors;
  for (const TensorInfo& t : ck.tensors) {
    const uint64_t begin = ck.data_offset + t.begin;
    if (t.storage < 0) {  // safetensors: the bytes themselves must lie in the mapping
      if (begin > size || t.nbytes() > size - begin)
        raise_status(Status(ErrorCode::kCorrupt, "tensor data lies past the end of the file", path,
                            begin, t.name));
    } else if (static_cast<size_t>(t.storage) >= ck.torch.storages.size()) {
      raise_status(Status(ErrorCode::kInternal, "tensor names a storage that does not exist", path,
                          kNoOffset, t.name));
    }
    py::object strides = py::none();
    if (!t.strides.empty()) {
      py::list l;
      for (uint64_t s : t.strides) l.append(s);
      strides = l;
    }
    tensors.append(py::make_tuple(t.name, std::string(dtype_info(t.dtype).name),
                                  shape_list(t.shape), begin, t.nbytes(), strides, t.storage,
                                  t.big_endian));
  }
  py::dict meta;
  for (const auto& [k, v] : ck.metadata) meta[py::str(k)] = py::str(v);

  py::dict out;
  out["format"] = std::string(format_name(ck.format));
  out["mapping"] = py::cast(*m);
  out["metadata"] = meta;
  out["verdict"] = verdict;
  out["report"] = report.empty() ? py::object(py::none()) : py::object(py::str(report));
  out["state_dict_key"] = ck.torch.state_dict_key;
  out["tensors"] = tensors;
  out["storages"] = storages;
  py::dict blocks;  // the block types present: name -> (elements, bytes) per block
  for (const TensorInfo& t : ck.tensors)
    if (is_quantized(t.dtype))
      blocks[py::str(std::string(dtype_info(t.dtype).name))] =
          py::make_tuple(dtype_info(t.dtype).block, dtype_info(t.dtype).block_bytes);
  out["block_types"] = blocks;
  return out;
}

/// Decodes the GGUF tensor stored at [begin, begin + nbytes) of `map` as `numel` elements of
/// `from` (a block type, dequantized bit for bit as ggml does, or a plain float type) into
/// `out`, a writable buffer of `numel` elements of `to` (F32, F16 or BF16; a block type goes
/// through F32). Chunks of whole blocks on one thread per core, the GIL released.
void decode_gguf(const Mapping& map, uint64_t begin, uint64_t nbytes, const std::string& from,
                 uint64_t numel, const std::string& to, const py::buffer& out) {
  // Any dtype by its name, the block types included (parse_dtype knows safetensors' only).
  auto by_name = [](const std::string& name) -> std::optional<DType> {
    for (const DTypeInfo& d : all_dtypes())
      if (d.name == name) return d.dtype;
    return std::nullopt;
  };
  const auto in_t = by_name(from);
  const auto out_t = by_name(to);
  if (!in_t || !out_t)
    raise_status(Status(ErrorCode::kInvalidArgument, "unknown dtype " + from + " or " + to));
  py::buffer_info b = out.request(/*writable=*/true);
  const std::optional<uint64_t> in_bytes = dtype_bytes(*in_t, numel);
  const std::optional<uint64_t> out_bytes = dtype_bytes(*out_t, numel);
  if (!in_bytes || *in_bytes != nbytes || begin > map.size() || nbytes > map.size() - begin)
    raise_status(Status(ErrorCode::kCorrupt, "tensor data does not match its type and shape",
                        map.path(), begin));
  if (!out_bytes || static_cast<uint64_t>(b.size * b.itemsize) != *out_bytes)
    raise_status(Status(ErrorCode::kInvalidArgument, "output buffer of the wrong size"));
  const bool blocks = is_quantized(*in_t);
  if (!blocks && !can_cast(*in_t, *out_t))
    raise_status(Status(ErrorCode::kUnsupported,
                        "cannot cast " + from + " to " + to, map.path(), begin));
  const DTypeInfo& ii = dtype_info(*in_t);
  // Whole blocks per chunk (256 is a multiple of every block) and ~1 MiB of F32.
  const uint64_t per_chunk = blocks ? 256u * 1024 : 1u << 18;
  const uint64_t chunks = (numel + per_chunk - 1) / per_chunk;
  const uint8_t* src = map.data() + begin;
  auto* dst = static_cast<uint8_t*>(b.ptr);
  const size_t out_size = dtype_info(*out_t).bits / 8;
  std::atomic<uint64_t> next{0};
  std::mutex mu;
  Status first;
  {
    py::gil_scoped_release unlocked;
    auto worker = [&] {
      std::vector<float> f32;
      for (uint64_t c; (c = next.fetch_add(1)) < chunks;) {
        const uint64_t first_el = c * per_chunk, n = std::min(per_chunk, numel - first_el);
        Status st;
        if (blocks) {
          const uint64_t off = first_el / ii.block * ii.block_bytes;
          const uint64_t len = n / ii.block * ii.block_bytes;
          float* f = *out_t == DType::F32 ? reinterpret_cast<float*>(dst) + first_el
                                          : (f32.resize(n), f32.data());
          st = dequantize_gguf(*in_t, std::span(src + off, len), std::span(f, n));
          if (st.is_ok() && *out_t != DType::F32)
            st = cast_elements(DType::F32, *out_t, f, dst + first_el * out_size, n);
        } else {
          st = cast_elements(*in_t, *out_t, src + first_el * (ii.bits / 8),
                             dst + first_el * out_size, n);
        }
        if (!st.is_ok()) {
          std::lock_guard<std::mutex> lock(mu);
          if (first.is_ok()) first = st;
          next.store(chunks);
        }
      }
    };
    const unsigned n = std::max(1u, std::min<unsigned>(std::thread::hardware_concurrency(),
                                                        static_cast<unsigned>(chunks)));
    std::vector<std::thread> pool;
    for (unsigned i = 1; i < n; ++i) pool.emplace_back(worker);
    worker();
    for (std::thread& t : pool) t.join();
  }
  if (!first.is_ok()) raise_status(first.with_path(map.path()));
}

/// `ckptkit scan --json`'s object for one file.
std::string scan_path(const std::string& path) {
  ScanReport r;
  {
    py::gil_scoped_release unlocked;
    r = scan_file(path);
  }
  if (r.error.code() == ErrorCode::kNotFound) raise_status(r.error);
  return scan_json(r);
}

/// `ckptkit inspect --json [--tensors]`'s document for one file.
std::string inspect_path(const std::string& path, bool tensors) {
  Result<std::string> r = [&] {
    py::gil_scoped_release unlocked;
    return cli::inspect_json(path, tensors);
  }();
  if (!r.is_ok()) raise_status(r.status());
  return *r;
}

/// Writes a safetensors file, atomically (io/output.h: an anonymous temporary linked into
/// place only when complete), tensors in the reference writer's order. `tensors`: a list of
/// (name, dtype name, shape, buffer) whose buffers are C-contiguous little-endian bytes.
void write_safetensors(const std::string& path, const py::list& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorLayout> layouts;
  std::vector<py::buffer_info> buffers;
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < tensors.size(); ++i) {
    auto item = tensors[i].cast<py::tuple>();
    TensorLayout l;
    l.name = item[0].cast<std::string>();
    const auto dt = parse_dtype(item[1].cast<std::string>());
    if (!dt)
      raise_status(Status(ErrorCode::kInvalidArgument,
                          "unknown dtype " + item[1].cast<std::string>(), path, kNoOffset, l.name));
    l.dtype = *dt;
    l.shape = item[2].cast<std::vector<uint64_t>>();
    py::buffer_info b = item[3].cast<py::buffer>().request();
    const auto numel = shape_numel(l.shape);
    const uint64_t bits = dtype_info(l.dtype).bits;
    if (!numel || static_cast<uint64_t>(b.size * b.itemsize) * 8 != *numel * bits)
      raise_status(Status(ErrorCode::kInvalidArgument, "the data's size does not match its shape",
                          path, kNoOffset, l.name));
    index[l.name] = i;
    layouts.push_back(std::move(l));
    buffers.push_back(std::move(b));
  }
  std::vector<TensorLayout> sorted = layouts;
  sort_for_writer(sorted);
  Result<SafetensorsHeader> h = build_safetensors_header(sorted, metadata);
  if (!h.is_ok()) raise_status(h.status().with_path(path));
  Status st;
  {
    py::gil_scoped_release unlocked;  // buffers stay valid: `tensors` holds their owners
    OutputOptions options;
    options.force = true;  // like safetensors.save_file, an existing file is replaced
    auto out = OutputFile::create(path, {}, options);
    if (!out.is_ok()) {
      st = out.status();
    } else {
      OutputFile& f = **out;
      // As the executor does: the final size, then space for all of it (a full disk is an
      // error with the sizes, before anything is written).
      st = f.truncate(h->file_size());
      const ByteRange whole{0, h->file_size()};
      if (st.is_ok()) st = f.reserve(std::span(&whole, 1));
      if (st.is_ok()) st = f.pwrite_all(h->bytes, 0);
      for (size_t k = 0; k < sorted.size() && st.is_ok(); ++k) {
        const py::buffer_info& b = buffers[index[sorted[k].name]];
        const auto n = static_cast<size_t>(b.size * b.itemsize);
        if (n == 0) continue;
        st = f.pwrite_all(std::span(static_cast<const uint8_t*>(b.ptr), n),
                          h->bytes.size() + h->data_begin[k]);
      }
      if (st.is_ok()) st = f.commit();
    }
  }
  if (!st.is_ok()) raise_status(st);
}

/// Runs `ckptkit ARGS...` in this process (cli/app.h: the command's own flags, checks and
/// --json report) on a worker thread, with the GIL released. This thread wakes every 50 ms to
/// take the GIL, let Python handle signals (Ctrl-C raises KeyboardInterrupt here: signal
/// handlers run only on the main thread) and call `progress(done, total)` when the byte count
/// moved; an exception from either sets the monitor's cancel flag, the executor stops between
/// chunks and discards its output, and the exception is raised once the worker has ended.
/// Returns (exit status, what the command printed on stdout).
constexpr int kExitError = 2;  // the program's exit status for an error (cli/commands.h)

py::tuple run_command(const std::vector<std::string>& args, const py::object& progress) {
  RunMonitor monitor;
  cli::Capture capture;
  capture.monitor = &monitor;
  int rc = kExitError;
  std::exception_ptr failure;
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;
  std::thread worker([&] {
    try {
      rc = cli::run_captured(args, capture);
    } catch (const std::bad_alloc&) {
      capture.error = Status(ErrorCode::kInternal, "out of memory");
      rc = kExitError;
    } catch (...) {
      failure = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mu);
    finished = true;
    cv.notify_all();
  });
  std::optional<py::error_already_set> pending;  // the exception that cancelled the work
  uint64_t reported = ~uint64_t{0};
  for (;;) {
    bool done = false;
    {
      py::gil_scoped_release unlocked;
      std::unique_lock<std::mutex> lock(mu);
      done = cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return finished; });
    }
    if (done) break;
    if (pending || monitor.cancel.load()) continue;
    if (PyErr_CheckSignals() != 0) {
      pending.emplace();  // takes the raised exception
      monitor.cancel.store(true);
      continue;
    }
    const uint64_t d = monitor.done.load(), t = monitor.total.load();
    if (!progress.is_none() && t != 0 && d != reported) {
      reported = d;
      try {
        progress(d, t);
      } catch (py::error_already_set& e) {
        pending.emplace(std::move(e));
        monitor.cancel.store(true);
      }
    }
  }
  worker.join();
  if (pending) throw py::error_already_set(std::move(*pending));
  if (failure) std::rethrow_exception(failure);
  // The last call sees the whole count, so a caller's bar ends at 100 %.
  const uint64_t d = monitor.done.load(), t = monitor.total.load();
  if (rc == 0 && !progress.is_none() && t != 0 && d != reported) progress(d, t);
  if (!capture.dangerous_report.empty()) raise_status(capture.error, capture.dangerous_report);
  if (!capture.error.is_ok()) raise_status(capture.error);
  return py::make_tuple(rc, capture.out);
}

}  // namespace
}  // namespace ckptkit::python

PYBIND11_MODULE(_native, m) {
  using namespace ckptkit::python;
  m.doc() = "ckptkit's C++ core; use the ckptkit package, not this module.";
  g_native_error = PyErr_NewException("ckptkit._native.NativeError", PyExc_Exception, nullptr);
  m.attr("NativeError") = py::handle(g_native_error);
  py::class_<Mapping, std::shared_ptr<Mapping>>(m, "Mapping", py::buffer_protocol())
      .def_buffer([](Mapping& map) {
        static uint8_t empty = 0;
        return py::buffer_info(map.size() ? map.data() : &empty, 1,
                               py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(map.size())}, {1}, /*readonly=*/false);
      })
      .def_property_readonly(
          "address", [](const Mapping& map) { return reinterpret_cast<uintptr_t>(map.data()); })
      .def_property_readonly("size", &Mapping::size)
      .def_property_readonly("path", &Mapping::path)
      .def("__len__", &Mapping::size);
  m.def("open_file", &open_file, py::arg("path"), py::arg("allow_dangerous"));
  m.def("scan", &scan_path, py::arg("path"));
  m.def("inspect", &inspect_path, py::arg("path"), py::arg("tensors"));
  m.def("decode_gguf", &decode_gguf, py::arg("mapping"), py::arg("begin"), py::arg("nbytes"),
        py::arg("dtype"), py::arg("numel"), py::arg("to"), py::arg("out"));
  m.def("run_command", &run_command, py::arg("args"), py::arg("progress"));
  m.def("write_safetensors", &write_safetensors, py::arg("path"), py::arg("tensors"),
        py::arg("metadata"));
  m.def("blas_core", &ckptkit::detail::blas_core_name,
        "The OpenBLAS kernel family this process runs (lora_extract/lora_resize's SVDs).");
  m.def(
      "live_mappings", [] { return g_live_mappings.load(); },
      "How many file mappings are alive (tests of the arrays' lifetime).");
}
