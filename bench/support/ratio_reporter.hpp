#pragma once
// A Google Benchmark console reporter that ends the run with a table of ratios against the
// floor measured in the same run. Naming convention: "<family>/<variant>[/args]", threads by
// ->Threads(n). In each family, the variant whose name starts with "floor" is the floor for the
// runs with the same args and thread count. Each benchmark must call
// `state.SetItemsProcessed(state.iterations())`; the ratio is the floor's aggregate throughput
// (items/s over all threads) divided by the variant's, i.e. "x times the floor's cost per op".
// With --benchmark_repetitions=N (best with --benchmark_enable_random_interleaving=true on a
// shared machine) it prints the ratio of the medians and of the bests (fastest repetition) of
// the wall-clock throughput, and the ratio of the median CPU time per op (all threads' CPU
// time / ops; on a shared machine it is less disturbed by other tenants, but does not see time
// spent blocked on a mutex).
// Usage: `int main(int argc, char** argv) { return dogpile::bench::run_with_ratios(argc, argv); }`

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace dogpile::bench {

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      if (r.error_occurred || r.run_type != Run::RT_Iteration) continue;
      auto it = r.counters.find("items_per_second");
      if (it == r.counters.end() || it->second.value <= 0) continue;
      const std::string& fn = r.run_name.function_name;
      const auto slash = fn.find('/');
      const std::string family = fn.substr(0, slash);
      const std::string variant = slash == std::string::npos ? "" : fn.substr(slash + 1);
      std::string context = r.run_name.args;
      if (!r.run_name.threads.empty()) context += (context.empty() ? "" : "/") + r.run_name.threads;
      rates_[{family, context}][variant].push_back(it->second.value);
      if (r.iterations > 0) {
        cpu_ns_[{family, context}][variant].push_back(r.cpu_accumulated_time * 1e9 /
                                                      static_cast<double>(r.iterations));
      }
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\n%-20s %-10s %-28s %4s %9s %7s %9s %7s %9s %7s\n", "family", "context", "variant",
                "reps", "median ns", "x floor", "best ns", "x floor", "cpu ns", "x floor");
    for (auto& [group, variants] : rates_) {
      auto& cpus = cpu_ns_[group];
      double floor_median = 0;
      double floor_best = 0;
      double floor_cpu = 0;
      for (auto& [v, rates] : variants) {
        if (v.rfind("floor", 0) == 0) {
          floor_median = median(rates);
          floor_best = *std::max_element(rates.begin(), rates.end());
          if (!cpus[v].empty()) floor_cpu = median(cpus[v]);
        }
      }
      for (auto& [v, rates] : variants) {
        const double med = median(rates);
        const double best = *std::max_element(rates.begin(), rates.end());
        const double cpu = cpus[v].empty() ? 0.0 : median(cpus[v]);
        std::printf("%-20s %-10s %-28s %4zu %9.1f %7.2f %9.1f %7.2f %9.1f %7.2f\n",
                    group.first.c_str(), group.second.c_str(), v.c_str(), rates.size(), 1e9 / med,
                    floor_median > 0 ? floor_median / med : 0.0, 1e9 / best,
                    floor_best > 0 ? floor_best / best : 0.0, cpu,
                    floor_cpu > 0 && cpu > 0 ? cpu / floor_cpu : 0.0);
      }
    }
    std::fflush(stdout);
  }

 private:
  static double median(std::vector<double>& v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  }
  using Table =
      std::map<std::pair<std::string, std::string>, std::map<std::string, std::vector<double>>>;
  Table rates_;   // items/s (wall clock, all threads)
  Table cpu_ns_;  // CPU ns per op (all threads)
};

inline int run_with_ratios(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}

}  // namespace dogpile::bench
