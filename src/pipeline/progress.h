// A progress bar on stderr, redrawn by its own thread a few times a second. Shown only when
// enabled (kAlways, or kAuto with stderr a terminal). add() is thread-safe and lock-free.
// With a RunMonitor (ops.h) the same counts also reach the caller, and cancelled() says when
// the caller asked the work to stop.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "ckptkit/ops.h"
#include "io/errors.h"  // human_bytes

namespace ckptkit {

class Progress {
 public:
  Progress(ProgressMode mode, std::string label, uint64_t total, RunMonitor* monitor = nullptr);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void add(uint64_t bytes) {
    done_.fetch_add(bytes, std::memory_order_relaxed);
    if (monitor_ != nullptr) monitor_->done.fetch_add(bytes, std::memory_order_relaxed);
  }
  bool cancelled() const {
    return monitor_ != nullptr && monitor_->cancel.load(std::memory_order_relaxed);
  }
  /// Draws the final state and ends the line.
  void finish();
  bool enabled() const { return enabled_; }

 private:
  void draw(bool final_line);
  void loop();

  bool enabled_;
  RunMonitor* monitor_;
  std::string label_;
  uint64_t total_;
  std::atomic<uint64_t> done_{0};
  std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool finished_ = false;
  std::thread thread_;
};

}  // namespace ckptkit
