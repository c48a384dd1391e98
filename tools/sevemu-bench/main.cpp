// sevemu-bench [--json] [SUITE...] (INTERFACES.md §7).
#include "base/main_guard.h"
#include "bench.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <nlohmann/json.hpp>
#include <string_view>

namespace sevemu::bench {

double ratio_of(Row const& r)
{
    if (r.reference.empty() || r.value <= 0 || r.reference_value <= 0)
        return 0;
    return r.higher_is_better ? r.value / r.reference_value : r.reference_value / r.value;
}

struct SuiteEntry {
    std::string_view name;
    SuiteFn fn; // nullptr: not built yet
};

static constexpr SuiteEntry kSuites[] = {
    { "memcrypt", suite_memcrypt },
#ifdef SEVEMU_BENCH_HAVE_CPU
    { "cpu", suite_cpu },
    { "sev", suite_sev },
#else
    { "cpu", nullptr },
    { "sev", nullptr },
#endif
    { "psp", nullptr },
#ifdef SEVEMU_BENCH_HAVE_CPU
    { "migration", suite_migration },
#else
    { "migration", nullptr },
#endif
    { "boot", suite_boot },
};

} // namespace sevemu::bench

static int run(int argc, char** argv);

// An exception reaching main is a bug: base/main_guard.h.
int main(int argc, char** argv) { return sevemu::run_guarded("sevemu-bench", run, argc, argv); }

static int run(int argc, char** argv)
{
    using namespace sevemu::bench;
    CLI::App app { "sevemu-bench: benchmarks of sevemu, each beside a reference measured in the same run" };
    bool json = false;
    std::vector<std::string> names;
    app.add_flag("--json", json, "one JSON object per line instead of a table");
    int runs = 0;
    app.add_option("--runs", runs, "boot: boots of each case (the median is reported; default 1)")->check(CLI::Range(1, 100));
    app.add_option("suites", names, "suites to run: memcrypt, cpu, sev, psp, migration, boot (default: every available one)");
    CLI11_PARSE(app, argc, argv);

    std::vector<SuiteEntry const*> chosen;
    for (auto const& n : names) {
        SuiteEntry const* found = nullptr;
        for (auto const& s : kSuites)
            if (s.name == n)
                found = &s;
        if (!found) {
            std::fprintf(stderr, "sevemu-bench: unknown suite '%s'\n", n.c_str());
            return 2;
        }
        if (!found->fn) {
            std::fprintf(stderr, "sevemu-bench: suite '%s' is unsupported in this build (see QUIRKS.md)\n", n.c_str());
            return 2;
        }
        chosen.push_back(found);
    }
    if (chosen.empty())
        for (auto const& s : kSuites)
            if (s.fn)
                chosen.push_back(&s);

    int status = 0;
    Report report;
    report.set_runs(runs);
    for (auto const* s : chosen)
        if (s->fn(report) != 0)
            status = 1;

    if (json) {
        for (auto const& r : report.rows()) {
            nlohmann::json j = { { "suite", r.suite }, { "case", r.case_name }, { "unit", r.unit }, { "value", r.value } };
            if (!r.reference.empty()) {
                j["reference"] = r.reference;
                j["reference_value"] = r.reference_value;
                j["ratio"] = ratio_of(r);
            } else {
                j["reference"] = nullptr;
                j["reference_value"] = nullptr;
                j["ratio"] = nullptr;
            }
            std::printf("%s\n", j.dump().c_str());
        }
    } else {
        // Columns as wide as their longest entry, so long case names stay aligned.
        int cw = 4, rw = 9;
        for (auto const& r : report.rows()) {
            cw = std::max(cw, int(r.case_name.size()));
            rw = std::max(rw, int(r.reference.size()));
        }
        std::printf("%-10s %-*s %12s %-6s %-*s %12s %7s\n", "suite", cw, "case", "value", "unit", rw, "reference", "ref value", "ratio");
        for (auto const& r : report.rows()) {
            if (r.reference.empty())
                std::printf("%-10s %-*s %12.3f %-6s %-*s %12s %7s\n", r.suite.c_str(), cw, r.case_name.c_str(), r.value, r.unit.c_str(),
                    rw, "-", "-", "-");
            else
                std::printf("%-10s %-*s %12.3f %-6s %-*s %12.3f %6.2fx\n", r.suite.c_str(), cw, r.case_name.c_str(), r.value,
                    r.unit.c_str(), rw, r.reference.c_str(), r.reference_value, ratio_of(r));
        }
    }
    return status;
}
