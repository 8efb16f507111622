#include "pipeline/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace ckptkit {

Progress::Progress(ProgressMode mode, std::string label, uint64_t total, RunMonitor* monitor)
    : enabled_(mode == ProgressMode::kAlways ||
               (mode == ProgressMode::kAuto && ::isatty(STDERR_FILENO) == 1)),
      monitor_(monitor),
      label_(std::move(label)),
      total_(total),
      start_(std::chrono::steady_clock::now()) {
  if (monitor_ != nullptr) monitor_->total.fetch_add(total, std::memory_order_relaxed);
  if (enabled_) thread_ = std::thread([this] { loop(); });
}

Progress::~Progress() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Progress::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, std::chrono::milliseconds(200));
    if (!stop_) draw(false);
  }
}

void Progress::finish() {
  if (!enabled_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = true;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  draw(true);
}

void Progress::draw(bool final_line) {
  const uint64_t done = std::min(done_.load(std::memory_order_relaxed), total_);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(kWidth - filled), '-');
  const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
  std::string eta;
  if (!final_line && rate > 0 && done < total_)
    eta = fmt::format("  ETA {:.0f}s", static_cast<double>(total_ - done) / rate);
  std::string line = fmt::format("\r{} [{}] {:3.0f}%  {} / {}  {}/s{}\x1b[K", label_, bar,
                                 frac * 100, human_bytes(done), human_bytes(total_),
                                 human_bytes(static_cast<uint64_t>(rate)), eta);
  if (final_line) line += '\n';
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
}

}  // namespace ckptkit
