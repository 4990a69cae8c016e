// A one-line progress bar on stderr (only when stderr is a terminal, or when forced).
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace reformer::cli {

class ProgressBar {
 public:
  ProgressBar(std::string label, double total, bool enabled = isatty(2))
      : label_(std::move(label)), total_(total > 0 ? total : 1), enabled_(enabled),
        start_(std::chrono::steady_clock::now()) {}
  ~ProgressBar() { Finish(); }

  void Update(double done) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(100) && done < total_) return;
    last_ = now;
    const double frac = done / total_ > 1 ? 1 : done / total_;
    const int width = 30, filled = static_cast<int>(frac * width);
    const double secs = std::chrono::duration<double>(now - start_).count();
    std::string bar(filled, '#');
    bar.append(width - filled, '.');
    std::fprintf(stderr, "\r%s [%s] %5.1f%% %6.1fs", label_.c_str(), bar.c_str(), 100 * frac, secs);
    std::fflush(stderr);
    drawn_ = true;
  }
  void Finish() {
    if (drawn_) {
      std::fprintf(stderr, "\n");
      drawn_ = false;
    }
  }

 private:
  std::string label_;
  double total_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_{};
};

}  // namespace reformer::cli
