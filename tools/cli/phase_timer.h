// `reformer-cli forward --timing`: where the whole process's wall clock goes, one line on stderr.
// Each phase reports wall seconds, CPU seconds (user + system, all threads) and minor page faults
// of the whole process (getrusage); "start-up" is the time from the process's start (its start time
// in /proc/self/stat, one clock tick of resolution) to the first mark. docs/results/forward.md
// shows what the phases told about this command.
#pragma once

#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace reformer::cli {

class PhaseTimer {
 public:
  explicit PhaseTimer(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
    last_ = Sample();
    const double start = ProcessStartSeconds();
    if (start > 0) phases_.push_back({"start-up", last_.wall - start, last_.cpu, last_.faults});
  }

  // Ends the phase running since the previous mark (or the constructor) and names it.
  void Mark(const char* phase) {
    if (!enabled_) return;
    const Point now = Sample();
    phases_.push_back({phase, now.wall - last_.wall, now.cpu - last_.cpu, now.faults - last_.faults});
    last_ = now;
  }

  void Print() const {
    if (!enabled_) return;
    std::string line = "reformer-cli: timing (wall s / cpu s / minor faults):";
    for (const Phase& p : phases_) {
      char buf[128];
      std::snprintf(buf, sizeof buf, " %s %.3f/%.3f/%ld;", p.name, p.wall, p.cpu, p.faults);
      line += buf;
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  }

 private:
  struct Point {
    double wall, cpu;
    long faults;
  };
  struct Phase {
    const char* name;
    double wall, cpu;
    long faults;
  };

  static Point Sample() {
    timespec ts{};
    clock_gettime(CLOCK_BOOTTIME, &ts);
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    return {ts.tv_sec + 1e-9 * ts.tv_nsec, cpu, ru.ru_minflt};
  }

  // Field 22 of /proc/self/stat: start time in clock ticks since boot; 0 if unreadable.
  static double ProcessStartSeconds() {
    std::ifstream f("/proc/self/stat");
    std::string stat;
    if (!std::getline(f, stat)) return 0;
    const size_t paren = stat.rfind(')');  // the command name may hold spaces
    if (paren == std::string::npos) return 0;
    unsigned long long ticks = 0;
    // After ") ": state is field 3, so starttime is the 20th field from there.
    if (std::sscanf(stat.c_str() + paren + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                    "%*d %*d %llu", &ticks) != 1)
      return 0;
    return static_cast<double>(ticks) / static_cast<double>(sysconf(_SC_CLK_TCK));
  }

  bool enabled_;
  Point last_{};
  std::vector<Phase> phases_;
};

}  // namespace reformer::cli
