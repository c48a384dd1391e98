// sevemu — the emulator: runs a guest on the emulated AMD EPYC platform. The command line is
// qemu-system-x86_64's (INTERFACES.md §3); errors are one line on stderr and a non-zero status.
#include "cpu/cpu_model.h"
#include "emulator/machine.h"
#include "tools/sevemu/options.h"

#include <cstdio>
#include <string>
#include <vector>

using namespace sevemu;

int main(int argc, char** argv)
{
    std::vector<std::string> args(argv + 1, argv + argc);
    auto opts = cli::parse_options(args);
    if (!opts) {
        std::fprintf(stderr, "sevemu: %s\n", opts.error().message.c_str());
        return 1;
    }
    if (opts->help) {
        std::fputs(cli::usage().c_str(), stdout);
        return 0;
    }
    if (opts->version) {
        std::printf("sevemu version %s (qemu-system-x86_64 compatible command line)\n", SEVEMU_VERSION);
        return 0;
    }
    if (opts->list_cpus) {
        std::printf("Available CPU models:\n");
        for (auto m : { cpu::CpuModel::Epyc, cpu::CpuModel::EpycRome, cpu::CpuModel::EpycMilan, cpu::CpuModel::EpycGenoa }) {
            auto const& info = cpu::cpu_model_info(m);
            std::printf("  %-12s %.*s\n", std::string(info.name).c_str(), int(info.brand.size()), info.brand.data());
        }
        return 0;
    }
    if (opts->machine.kernel.empty()) {
        std::fprintf(stderr, "sevemu: no -kernel given: nothing to run (see --help)\n");
        return 1;
    }
    auto machine = emulator::Machine::create(std::move(opts->machine));
    if (!machine) {
        std::fprintf(stderr, "sevemu: %s\n", machine.error().message.c_str());
        return 1;
    }
    auto outcome = (*machine)->run();
    if (!outcome.message.empty())
        std::fprintf(stderr, "sevemu: %s\n", outcome.message.c_str());
    return outcome.exit_status;
}
