// sevemu-bench — one row per measured case, with the reference measured in the same run
// (INTERFACES.md §7). Suites are plain functions listed in main.cpp.
#pragma once

#include <string>
#include <vector>

namespace sevemu::bench {

struct Row {
    std::string suite;
    std::string case_name;
    std::string unit;      // e.g. "GB/s", "ns/op", "Minstr/s"
    double value {};
    std::string reference; // empty when the case has no reference
    double reference_value {};
    // ratio = value / reference_value for throughput units, reference_value / value for
    // time-per-operation units, so that a ratio above 1 always means sevemu is faster.
    bool higher_is_better { true };
};

class Report {
public:
    void add(Row row) { m_rows.push_back(std::move(row)); }
    std::vector<Row> const& rows() const { return m_rows; }
    // `--runs N`: how often a suite that honours it repeats each case (it then reports the
    // median); 0 = the suite's own default.
    int runs() const { return m_runs; }
    void set_runs(int runs) { m_runs = runs; }

private:
    std::vector<Row> m_rows;
    int m_runs {};
};

double ratio_of(Row const&);

// A suite returns 0 on success, or non-zero after printing one line to stderr saying why it
// could not run (for example a reference program that is not installed).
using SuiteFn = int (*)(Report&);

int suite_memcrypt(Report&);
int suite_boot(Report&); // Linux boots of sevemu and QEMU as child processes (suite_boot.cpp)
#ifdef SEVEMU_BENCH_HAVE_CPU
int suite_cpu(Report&); // needs the Machine (and so the CPU library)
int suite_sev(Report&); // the cpu workloads as SEV guests vs plain guests
int suite_migration(Report&); // a live migration of a 512 MiB guest over loopback TCP
#endif

} // namespace sevemu::bench
