// Machine snapshots in-process (emulator/machine_state.cpp): a bundled guest is stopped after N
// instructions (N drawn from a seeded RNG), saved, loaded into a second machine built with
// create_incoming() (no -kernel), and run to its end; what it prints, concatenated with what the
// first machine printed, must equal an uninterrupted run's output byte for byte, with the same
// exit. The independent reference is the uninterrupted run of the same image (whose own output
// the integration tests check against QEMU and the native builds).
//
// Then the refusals: a machine of another configuration (named by the "machine" section), a
// truncated, bit-flipped, unknown-version or unknown-section stream (each named by its section),
// a load into a machine that is not -incoming; a refused load leaves the machine loadable. And
// the SEV blocker's exact text (QEMU 7.2 target/i386/sev.c sev_mig_blocker).
//
// Arguments (compile-time): GUEST_DIR (tests/guests in the build tree), SEV_GUEST.
#include "base/state_stream.h"
#include "emulator/clock.h"
#include "emulator/machine.h"
#include "emulator/sev_runtime.h"
#include "tests/emulator/synthetic_linux.h"

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <unistd.h>

using namespace sevemu;
using namespace sevemu::emulator;
namespace fs = std::filesystem;

namespace {

std::string guest_path(std::string const& name) { return std::string(GUEST_DIR) + "/guest-" + name + ".elf"; }

MachineConfig guest_config(std::string const& name, std::string* serial)
{
    MachineConfig c;
    c.memory_size = 128ull << 20; // the integration tests' -m 128M (irq.expected prints mem_upper)
    c.kernel = guest_path(name);
    c.debug_exit = devices::DebugExitConfig { 0xF4, 4 };
    c.serial.kind = SerialConfig::Kind::Callback;
    c.serial.callback = [serial](uint8_t b) { serial->push_back(char(b)); };
    return c;
}

struct Run {
    std::string serial;
    RunOutcome::Reason reason;
    int status;
    uint64_t instructions;
};

Run run_whole(std::string const& name)
{
    Run r;
    auto m = Machine::create(guest_config(name, &r.serial));
    REQUIRE(m.has_value());
    auto out = (*m)->run();
    r.reason = out.reason;
    r.status = out.exit_status;
    r.instructions = out.instructions;
    return r;
}

// The guest stopped after n instructions and saved.
struct Stopped {
    std::string serial;
    std::vector<uint8_t> snapshot;
    int64_t now_ns {}; // the machine's clock when it was saved
};

Stopped stop_and_save(std::string const& name, uint64_t n)
{
    Stopped s;
    auto c = guest_config(name, &s.serial);
    c.max_instructions = n;
    auto m = Machine::create(std::move(c));
    REQUIRE(m.has_value());
    auto out = (*m)->run();
    INFO("message: " << out.message);
    REQUIRE(out.reason == RunOutcome::Reason::InstructionLimit);
    auto snap = (*m)->save_snapshot();
    INFO((snap ? "" : snap.error().message));
    REQUIRE(snap.has_value());
    s.snapshot = std::move(*snap);
    s.now_ns = (*m)->now_ns();
    return s;
}

std::unique_ptr<Machine> incoming(std::string const& name, std::string* serial, uint64_t memory = 128ull << 20)
{
    auto c = guest_config(name, serial);
    c.kernel.clear(); // nothing is loaded: the snapshot brings the guest
    c.memory_size = memory;
    auto m = Machine::create_incoming(std::move(c));
    REQUIRE(m.has_value());
    CHECK((*m)->awaiting_snapshot());
    return std::move(*m);
}

Run restore_and_finish(std::string const& name, Stopped const& s)
{
    Run r;
    r.serial = s.serial;
    auto m = incoming(name, &r.serial);
    auto loaded = m->load_snapshot(s.snapshot);
    INFO((loaded ? "" : loaded.error().message));
    REQUIRE(loaded.has_value());
    CHECK_FALSE(m->awaiting_snapshot());
    // The clock goes on from the saved instant (time skipped in HLT included), not from the
    // restored instruction count.
    CHECK(m->now_ns() == s.now_ns);
    auto out = m->run();
    r.reason = out.reason;
    r.status = out.exit_status;
    r.instructions = out.instructions;
    return r;
}

std::string load_error(std::string const& name, std::span<uint8_t const> stream, uint64_t memory = 128ull << 20)
{
    std::string serial;
    auto m = incoming(name, &serial, memory);
    auto r = m->load_snapshot(stream);
    REQUIRE_FALSE(r.has_value());
    CHECK(m->awaiting_snapshot()); // not restored, half or whole
    return r.error().message;
}

// The stream rebuilt section by section, with `edit` applied to each (name, version, payload).
template <class Edit>
std::vector<uint8_t> rewrite(std::vector<uint8_t> const& stream, Edit edit)
{
    auto parsed = parse_snapshot(stream);
    REQUIRE(parsed.has_value());
    SnapshotWriter w;
    for (auto const& sec : *parsed) {
        std::string name = sec.name;
        uint32_t version = sec.version;
        std::vector<uint8_t> payload(sec.payload.begin(), sec.payload.end());
        if (edit(name, version, payload))
            w.add(name, version, payload);
    }
    return w.finish();
}

} // namespace

TEST_CASE("snapshot: a guest stopped at a random instruction, saved and restored, prints what an uninterrupted run prints",
    "[snapshot]")
{
    // The irq guest takes PIC, PIT and UART interrupts and HLTs between timer ticks; hash and
    // sort are integer work; fp and sse4 keep x87/SSE state across the cut.
    std::mt19937_64 rng(20261206);
    for (std::string name : { "irq", "hash", "sort", "fp", "sse4" }) {
        auto whole = run_whole(name);
        INFO("guest " << name << ", " << whole.instructions << " instructions");
        REQUIRE(whole.reason == RunOutcome::Reason::DebugExit);
        REQUIRE(whole.instructions > 10);
        int cuts = name == "irq" ? 10 : 3; // the interrupt-driven one is short: cut it often
        for (int i = 0; i < cuts; ++i) {
            uint64_t n = std::uniform_int_distribution<uint64_t>(1, whole.instructions - 1)(rng);
            INFO("cut after " << n << " instructions");
            auto stopped = stop_and_save(name, n);
            auto split = restore_and_finish(name, stopped);
            CHECK(split.serial == whole.serial);
            CHECK(split.reason == whole.reason);
            CHECK(split.status == whole.status);
            CHECK(n + split.instructions == whole.instructions);
        }
    }
}

TEST_CASE("snapshot: a snapshot of a restored machine restores too (the clock and devices carry over twice)", "[snapshot]")
{
    auto whole = run_whole("irq");
    uint64_t first = whole.instructions / 3, second = whole.instructions / 3;
    auto a = stop_and_save("irq", first);

    std::string serial = a.serial;
    auto c = guest_config("irq", &serial);
    c.kernel.clear();
    c.max_instructions = second;
    auto b = Machine::create_incoming(std::move(c));
    REQUIRE(b.has_value());
    REQUIRE((*b)->load_snapshot(a.snapshot).has_value());
    REQUIRE((*b)->run().reason == RunOutcome::Reason::InstructionLimit);
    auto snap = (*b)->save_snapshot();
    REQUIRE(snap.has_value());

    auto end = restore_and_finish("irq", Stopped { serial, *snap, (*b)->now_ns() });
    CHECK(end.serial == whole.serial);
    CHECK(end.status == whole.status);
}

TEST_CASE("snapshot: the stream has the documented sections in order", "[snapshot]")
{
    auto s = stop_and_save("hash", 100000);
    auto parsed = parse_snapshot(s.snapshot);
    REQUIRE(parsed.has_value());
    std::vector<std::string> names;
    for (auto const& sec : *parsed) {
        names.push_back(sec.name);
        CHECK(sec.version == (sec.name == "acpi-pm" || sec.name == "machine" || sec.name == "cpu0" ? 2u : 1u));
    }
    CHECK(names == std::vector<std::string> { "machine", "clock", "ram", "cpu0", "pic", "pit", "rtc", "acpi-pm", "com1",
                       "post", "ioapic", "i8042", "pci-host", "lapic0", "debug-exit", "amd-sp" });
    // A plain guest never opened its AMD-SP: the section is empty.
    CHECK(parsed->back().payload.empty());
}

TEST_CASE("snapshot: a machine of another configuration is refused, naming the machine section", "[snapshot]")
{
    auto s = stop_and_save("hash", 50000);
    auto msg = load_error("hash", s.snapshot, 64ull << 20);
    CHECK(msg == "snapshot section 'machine': snapshot is of a 128 MiB machine; this one has 64 MiB (-m)");

    // Without isa-debug-exit the device list differs.
    std::string serial;
    auto c = guest_config("hash", &serial);
    c.kernel.clear();
    c.debug_exit.reset();
    auto m = Machine::create_incoming(std::move(c));
    REQUIRE(m.has_value());
    auto r = (*m)->load_snapshot(s.snapshot);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("snapshot section 'machine': snapshot's devices are") == 0);
    CHECK(r.error().message.find("(-device)") != std::string::npos);
}

TEST_CASE("snapshot: truncated, bit-flipped, unknown-version and unknown-section streams are refused by section; the "
          "machine stays loadable", "[snapshot]")
{
    auto whole = run_whole("irq");
    auto s = stop_and_save("irq", whole.instructions / 2);

    auto truncated = s.snapshot;
    truncated.resize(truncated.size() / 2);
    CHECK(load_error("irq", truncated).find("snapshot section 'ram': truncated") == 0);

    // A bit flipped inside the cpu0 payload: that section's CRC.
    auto parsed = parse_snapshot(s.snapshot);
    REQUIRE(parsed.has_value());
    size_t cpu_at = 0;
    for (auto const& sec : *parsed)
        if (sec.name == "cpu0")
            cpu_at = size_t(sec.payload.data() - s.snapshot.data());
    REQUIRE(cpu_at != 0);
    auto flipped = s.snapshot;
    flipped[cpu_at + 40] ^= 0x10;
    CHECK(load_error("irq", flipped) == "snapshot section 'cpu0': CRC mismatch");

    auto newer_pit = rewrite(s.snapshot, [](std::string& name, uint32_t& version, auto&) {
        if (name == "pit")
            version = 2;
        return true;
    });
    CHECK(load_error("irq", newer_pit) == "snapshot section 'pit': unsupported version 2 (this build reads version 1)");

    auto extra = rewrite(s.snapshot, [](std::string& name, uint32_t&, auto&) {
        if (name == "post")
            name = "floppy";
        return true;
    });
    CHECK(load_error("irq", extra).find("snapshot section 'floppy': unknown section") == 0);

    auto missing = rewrite(s.snapshot, [](std::string& name, uint32_t&, auto&) { return name != "clock"; });
    CHECK(load_error("irq", missing) == "snapshot section 'clock': missing from the snapshot");

    // A device section that its device refuses (a PIT payload cut short), after the PIC has
    // already taken its own: nothing stays applied, and the same machine then takes the good
    // stream and finishes the guest exactly.
    auto bad_pit = rewrite(s.snapshot, [](std::string& name, uint32_t&, std::vector<uint8_t>& payload) {
        if (name == "pit")
            payload.resize(payload.size() - 3);
        return true;
    });
    std::string serial = s.serial;
    auto m = incoming("irq", &serial);
    auto r = m->load_snapshot(bad_pit);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("snapshot section 'pit':") == 0);
    CHECK(m->awaiting_snapshot());
    REQUIRE(m->load_snapshot(s.snapshot).has_value());
    m->run();
    CHECK(serial == whole.serial);
}

TEST_CASE("snapshot: only a fresh -incoming machine loads one", "[snapshot]")
{
    auto s = stop_and_save("hash", 1000);
    std::string serial;
    auto m = Machine::create(guest_config("hash", &serial));
    REQUIRE(m.has_value());
    auto r = (*m)->load_snapshot(s.snapshot);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("-incoming") != std::string::npos);

    // An incoming machine that has received its snapshot does not take a second one.
    auto in = incoming("hash", &serial);
    REQUIRE(in->load_snapshot(s.snapshot).has_value());
    CHECK_FALSE(in->load_snapshot(s.snapshot).has_value());
    // And one still waiting has nothing to save.
    auto waiting = incoming("hash", &serial);
    CHECK(waiting->migration_blocker().has_value());
    CHECK_FALSE(waiting->save_snapshot().has_value());
}

TEST_CASE("snapshot: a plain guest needs no platform directory", "[snapshot]")
{
    // The AMD-SP is on every board, but a plain guest never reaches it: its platform directory
    // is not opened (nor created), and snapshots work without one.
    fs::path nowhere = fs::temp_directory_path() / ("sevemu-snapshot-no-platform-" + std::to_string(::getpid()));
    std::string serial;
    auto c = guest_config("hash", &serial);
    c.platform_dir = nowhere.string();
    c.max_instructions = 20000;
    auto m = Machine::create(std::move(c));
    REQUIRE(m.has_value());
    (*m)->run();
    CHECK((*m)->amd_sp_if_open() == nullptr);
    CHECK((*m)->save_snapshot().has_value());
    CHECK_FALSE(fs::exists(nowhere));
}

TEST_CASE("snapshot: an SEV guest is refused with QEMU's blocker, and cannot be an incoming machine", "[snapshot][sev]")
{
    std::string tmpl = (fs::temp_directory_path() / "sevemu-snapshot-sev-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()));
    fs::path dir(tmpl);
    MachineConfig c;
    c.memory_size = 32ull << 20;
    c.kernel = SEV_GUEST;
    c.platform_dir = (dir / "platform").string();
    SevGuestConfig g;
    g.id = "sev0";
    g.policy = 0x1;
    g.cbitpos = 51;
    g.reduced_phys_bits = 1;
    c.confidential_guest = g;
    {
        auto m = Machine::create(c);
        INFO((m ? "" : m.error().message));
        REQUIRE(m.has_value());
        REQUIRE((*m)->migration_blocker().has_value());
        // Its memory is under the guest's key: it moves only through SEND_* to another SEV
        // machine (live migration), never into a snapshot.
        std::string const snapshot_refusal = "SEV: an SEV guest is migrated live only (migrate tcp:HOST:PORT); its memory cannot be saved to a snapshot";
        CHECK(*(*m)->migration_blocker() == snapshot_refusal);
        auto s = (*m)->save_snapshot();
        REQUIRE_FALSE(s.has_value());
        CHECK(s.error().message == snapshot_refusal);
    }
    // An incoming SEV machine is built without a launch: it waits for RECEIVE_START's session.
    auto in = Machine::create_incoming(c);
    INFO((in ? "" : in.error().message));
    REQUIRE(in.has_value());
    CHECK((*in)->sev() != nullptr);
    std::error_code ec;
    fs::remove_all(dir, ec);
}

TEST_CASE("clock: virtual time is the vCPUs' instructions plus time skipped; a restored clock goes on from its saved "
          "instant", "[snapshot]")
{
    uint64_t retired = 1000;
    MachineClock a([&] { return retired; });
    CHECK(a.now_ns() == 1000);
    a.skip(500);
    a.skip(-7); // never back
    CHECK(a.now_ns() == 1500);
    StateWriter w;
    a.save(w);
    auto payload = w.take();
    REQUIRE(payload.size() == 8);

    // A machine whose counters say something else (here: 40) reads the saved instant, then
    // advances with its own counters.
    uint64_t other = 40;
    MachineClock b([&] { return other; });
    StateReader r("clock", payload);
    auto now = MachineClock::read_state(r);
    REQUIRE(now.has_value());
    REQUIRE(r.finish().has_value());
    b.restore(*now);
    CHECK(b.now_ns() == 1500);
    other += 25;
    CHECK(b.now_ns() == 1525);

    StateWriter neg;
    neg.i64(-1);
    auto neg_payload = neg.take();
    StateReader rn("clock", neg_payload);
    CHECK_FALSE(MachineClock::read_state(rn).has_value());
    CHECK(rn.finish().error().text() == "snapshot section 'clock': negative virtual time");

    payload.push_back(0);
    StateReader rt("clock", payload);
    CHECK_FALSE(MachineClock::read_state(rt).has_value());
    CHECK_FALSE(rt.finish().has_value());
    std::vector<uint8_t> short_payload(payload.begin(), payload.begin() + 5);
    StateReader rs("clock", short_payload);
    CHECK_FALSE(MachineClock::read_state(rs).has_value());
    CHECK_FALSE(rs.finish().has_value());
}

TEST_CASE("snapshot: a Linux machine's boot fields and E820 map carry over (machine section version 2)", "[snapshot][linux]")
{
    auto path = (fs::temp_directory_path() / ("sevemu-snapshot-bzImage-" + std::to_string(::getpid()))).string();
    {
        auto bz = test::synthetic_bzimage();
        std::ofstream out(path, std::ios::binary);
        out.write(reinterpret_cast<char const*>(bz.data()), std::streamsize(bz.size()));
    }
    std::string serial;
    auto c = guest_config("hash", &serial);
    c.kernel = path;
    c.append = "console=ttyS0";
    c.memory_size = 64ull << 20;
    auto a = Machine::create(c);
    REQUIRE(a.has_value());
    REQUIRE((*a)->linux_boot().has_value());
    CHECK_FALSE((*a)->multiboot().has_value());
    auto snap = (*a)->save_snapshot();
    REQUIRE(snap.has_value());

    auto ci = c;
    ci.kernel.clear();
    auto b = Machine::create_incoming(std::move(ci));
    REQUIRE(b.has_value());
    REQUIRE((*b)->load_snapshot(*snap).has_value());
    REQUIRE((*b)->linux_boot().has_value());
    auto const& x = *(*a)->linux_boot();
    auto const& y = *(*b)->linux_boot();
    CHECK(y.protocol == x.protocol);
    CHECK(y.entry.rip == x.entry.rip);
    CHECK(y.boot_info == x.boot_info);
    CHECK(y.cmdline_addr == x.cmdline_addr);
    CHECK(y.acpi_base == x.acpi_base);
    CHECK(y.rsdp == x.rsdp);
    CHECK(y.kernel_high == x.kernel_high);
    CHECK(y.written == x.written);
    CHECK_FALSE((*b)->multiboot().has_value());
    // The map the guest was told, not the PC map an incoming machine starts with.
    auto const& ma = (*a)->memory_map();
    auto const& mb = (*b)->memory_map();
    REQUIRE(ma.size() == mb.size());
    for (size_t i = 0; i < ma.size(); ++i)
        CHECK((ma[i].base == mb[i].base && ma[i].length == mb[i].length && ma[i].type == mb[i].type));
    CHECK(mb.back().type == 3); // the ACPI region
    auto again = (*b)->save_snapshot();
    REQUIRE(again.has_value());
    std::remove(path.c_str());
}
