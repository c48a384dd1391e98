// Every device of a Machine against random register traffic (issue 11 deliverable 7): a plain
// machine with -smp 2 and every device the board has (isa-debug-exit included) gets random
// values of random sizes written to every port of every PIO placement and every register of
// every MMIO placement (Machine::devices() lists them), the local APICs through their xAPIC
// page and x2APIC MSRs, interleaved with reads and with running the guest a little. The
// emulator must not crash, assert or hang (a guest-caused condition is an architectural
// outcome: STYLE.md rule 3), and the machine must still save a snapshot and reset cleanly.
//
// The seed is printed; SEVEMU_DEVICE_FUZZ_SEED=<n> repeats a run. The test needs the bundled
// guest hash-nosse ($SEVEMU_BUILD_ROOT/tests/guests) as the -kernel the resets reload.
#include "devices/bus.h"
#include "devices/lapic.h"
#include "emulator/machine.h"

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

using namespace sevemu;
using namespace sevemu::emulator;

namespace {

std::string guest_path(std::string const& name)
{
    char const* root = std::getenv("SEVEMU_BUILD_ROOT");
    return std::string(root ? root : ".") + "/tests/guests/guest-" + name + ".elf";
}

uint64_t seed_for_run()
{
    if (char const* s = std::getenv("SEVEMU_DEVICE_FUZZ_SEED"); s && *s)
        return std::strtoull(s, nullptr, 0);
    return (uint64_t(std::random_device {}()) << 32) | std::random_device {}();
}

struct Target {
    std::string name;
    devices::BusDevice* port;
    uint64_t length;
    bool mmio;
};

} // namespace

TEST_CASE("device fuzz: random writes and reads to every device register; the machine survives, saves and resets")
{
    uint64_t seed = seed_for_run();
    std::printf("device fuzz: seed %llu (SEVEMU_DEVICE_FUZZ_SEED=%llu repeats this run)\n", (unsigned long long)seed,
        (unsigned long long)seed);
    std::fflush(stdout);
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    auto pick = [&](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };

    MachineConfig c;
    c.memory_size = 64ull << 20;
    c.smp = 2;
    c.kernel = guest_path("hash-nosse");
    c.serial.kind = SerialConfig::Kind::Callback;
    c.serial.callback = [](uint8_t) {};
    c.debug_exit = devices::DebugExitConfig { 0xF4, 4 };
    auto made = Machine::create(c);
    INFO((made ? std::string() : made.error().message));
    REQUIRE(made.has_value());
    Machine& m = **made;

    std::vector<Target> targets;
    for (auto const& d : m.devices())
        for (auto const& p : d.placements)
            targets.push_back({ std::string(d.device->name()), p.port, p.length, p.space == Machine::DevicePlacement::Space::Mmio });
    // The LAPICs have no placement of their own (the machine decodes each vCPU's page itself).
    for (size_t i = 0; i < m.vcpus().size(); ++i)
        targets.push_back({ "lapic" + std::to_string(i), &m.lapic(i), devices::LocalApic::kMmioLength, true });
    REQUIRE(targets.size() >= 14);

    uint64_t ops = 0;
    auto random_value = [&]() -> uint64_t {
        switch (pick(4)) {
        case 0: return 0;
        case 1: return ~0ull;
        case 2: return uint64_t(1) << pick(64);
        default: return rng();
        }
    };
    auto poke = [&](Target const& t, uint64_t offset) {
        static constexpr unsigned kPio[] = { 1, 2, 4 }, kMmio[] = { 1, 2, 4, 8 };
        unsigned size = t.mmio ? kMmio[pick(4)] : kPio[pick(3)];
        if (pick(3) == 0)
            (void)t.port->read(offset, size);
        else
            t.port->write(offset, size, random_value());
        ++ops;
    };
    auto run_a_bit = [&](uint64_t instructions) {
        m.set_instruction_breakpoint(std::nullopt);
        // A fresh budget per call (the test sets the limit between runs, as a new -icount
        // budget; m_config is the machine's own, non-const, object); whatever outcome (the guest may have been told to power off,
        // reset or exit by the writes) is an ordinary end of run().
        const_cast<MachineConfig&>(m.config()).max_instructions = instructions;
        auto out = m.run();
        (void)out;
    };

    constexpr int kRounds = 6;
    for (int round = 0; round < kRounds; ++round) {
        INFO("round " << round);
        // Every port and register of every placement: every byte offset of small ranges, every
        // 4-byte register (and a random byte in it) of a page-sized one.
        for (auto const& t : targets) {
            uint64_t step = t.length > 0x100 ? 4 : 1;
            for (uint64_t off = 0; off < t.length; off += step) {
                poke(t, off);
                if (step > 1)
                    poke(t, off + pick(step));
            }
        }
        // x2APIC MSRs and the TSC deadline, as a guest's WRMSR/RDMSR reach them (not APIC_BASE:
        // the CPU keeps its own copy of that one, which only WRMSR keeps in step).
        for (size_t i = 0; i < m.vcpus().size(); ++i) {
            auto& l = m.lapic(i);
            for (uint32_t msr = devices::LocalApic::kMsrX2apicFirst; msr <= devices::LocalApic::kMsrX2apicLast; ++msr) {
                if (pick(3) == 0)
                    (void)l.read_msr(msr);
                else
                    (void)l.write_msr(msr, random_value());
            }
            (void)l.write_msr(devices::LocalApic::kMsrTscDeadline, random_value());
        }
        // Random traffic interleaved with running the guest.
        for (int k = 0; k < 50; ++k) {
            for (int n = 0; n < 40; ++n) {
                auto const& t = targets[pick(targets.size())];
                poke(t, pick(t.length));
            }
            run_a_bit(2000 + pick(20000));
        }
    }
    std::printf("device fuzz: %llu register accesses over %zu ranges, %llu guest instructions\n", (unsigned long long)ops,
        targets.size(), (unsigned long long)m.instructions_retired());
    CHECK(m.instructions_retired() > 0); // the guest did run in between

    // Still a machine: a snapshot of it, and a reset that boots the guest again.
    auto snap = m.save_snapshot();
    INFO((snap ? std::string() : snap.error().message));
    CHECK(snap.has_value());
    auto reset = m.system_reset();
    INFO((reset ? std::string() : reset.error().message));
    REQUIRE(reset.has_value());
    auto again = m.save_snapshot();
    CHECK(again.has_value());
    run_a_bit(50'000);
}
