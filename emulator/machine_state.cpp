// sevemu — a Machine's snapshot: what it writes into the stream of base/state_stream.h, and how
// it reads it back (QMP migrate to file:/exec:, `sevemu -incoming`).
//
// Sections, in this order, each exactly once (section version in brackets):
//
//   "machine"  [2]  what the restoring machine must match, then the machine's own boot fields:
//                     u64 guest RAM size (-m), bytes CPU model name (-cpu, "EPYC-Milan"),
//                     u32 vCPU count (-smp),
//                     u32 device count D, then D × (bytes device name, u32 placement count P,
//                       P × (u8 space: 0 port I/O, 1 MMIO; u64 base; u64 length)),
//                     bool Multiboot boot fields present; if so 8 × u32 entry, info address,
//                       mem_lower KiB, mem_upper KiB, info flags, image low, image high, buffer
//                       end (MultibootBoot; query commands read them),
//                     u32 range count R, R × (u64 gpa, u64 size): the ranges the loader wrote,
//                     bool Linux boot fields present; if so u8 protocol (0 bzImage, 1 PVH) and
//                       9 × u64 entry RIP, boot info (zero page / hvm_start_info), command
//                       line, initrd address, initrd size, kernel low, kernel high, ACPI base,
//                       RSDP (LinuxBoot; query commands read them),
//                     u32 memory-map entry count E, E × (u64 base, u64 length, u32 type): the
//                       map the guest was told (the PC map, or the Linux loader's E820 map)
//                   (version 2 added the Linux fields and the memory map)
//   "clock"    [1]  the machine's clock (emulator/clock.h)
//   "ram"      [1]  DRAM and the host key (mmu/memory_controller.h, save_dram)
//   "cpu0"     [2]  vCPU 0 (cpu/cpu_state_io.h; version 2 added the NMI latch and blocking); "cpu1" ... "cpuN-1" with -smp N
//   one section per device of the device list, in list order, named by the device, with the
//              device's own version and layout (devices/*.h): today "pic" [1], "pit" [1],
//              "rtc" [1], "acpi-pm" [2], "com1" [1], "post" [1], "ioapic" [1], "i8042" [1],
//              "pci-host" [1], "lapic0" ... "lapicN-1" [1] (one per vCPU), and "debug-exit" [1]
//              when -device isa-debug-exit is given
//   "amd-sp"   [1]  the board's AMD-SP (devices/amd_sp.h); an empty payload when this machine
//                   never opened its AMD-SP (a plain guest never needs it: the part is in its
//                   power-on state and its platform directory was not touched)
//
// A live migration (emulator/migration.cpp; stream version 2) writes the same sections in
// another order, and guest RAM differently:
//
//   "machine"  [2]  as above, first, so that the target can refuse another configuration at once
//   "ram"      [2]  the DRAM layout and the host key only (mmu/memory_controller.h,
//                   save_dram_layout: u32 range count R, R × (u64 base, u64 size), u8 key length
//                   (32 or 64), the key); the pages follow in:
//   "ram-pages" [1] any number of times, the pre-copy passes while the guest runs and then the
//                   last pass with the vCPUs stopped (a page can come many times: the last copy
//                   wins); payload: u32 pass number (1 = every page, 2.. = the pages written
//                   since the pass before), u32 record count P (1..kMaxPagesPerSection), then
//                   P × (u64 SPA of a 4 KiB page of DRAM, u8 kind, and by kind:
//                     0  a zero page, nothing follows
//                     1  4096 bytes: the page as DRAM holds it (ciphertext if written under a key)
//                     2..255  an encoder's record: u32 length L (at most kMaxPageRecord), L
//                        bytes — reserved for the SEV path (SEND_UPDATE_DATA packets); a machine
//                        without a decoder for the kind refuses the section)
//   then, once the vCPUs have stopped: "clock", "cpu0".., the devices, "amd-sp" as above.
// The target applies each "ram-pages" section as soon as its CRC and all its records are checked
// (into the DRAM of a machine that has not run), and everything else only after the end record
// and its stream CRC are verified; the guest starts only then.
//
// A load checks the whole stream first (parse_snapshot: magic, versions, CRCs, end record),
// then that every section above is there and no other, that each has a version this build
// reads, and that the "machine" section matches this machine's configuration ("snapshot is of
// a 256 MiB machine; this one has 128 MiB (-m)"); every message names its section. Then it
// applies the parts, each of which validates before it changes anything: the devices and the
// AMD-SP (restored from a backup of their previous state if a later part is refused), DRAM
// (checked whole before it is written), and last the vCPUs and the clock, which cannot fail by
// then. A refused stream leaves the machine as it was.
#include "emulator/machine.h"

#include "cpu/cpu.h"
#include "cpu/cpu_state_io.h"
#include "devices/amd_sp.h"
#include "devices/pic8259.h"
#include "emulator/clock.h"
#include "emulator/sev_runtime.h"
#include "mmu/memory_controller.h"

#include <fmt/format.h>
#include <map>

namespace sevemu::emulator {

namespace {

constexpr uint32_t kMachineStateVersion = 2;
constexpr uint32_t kClockStateVersion = MachineClock::kStateVersion;
constexpr uint64_t kMaxBootRanges = 64;
constexpr uint64_t kMaxMemoryMap = 128; // the zero page's e820_table holds 128 entries
constexpr uint64_t kMaxPlacements = 64;
constexpr uint64_t kMaxDevices = 256;
constexpr uint32_t kRamPagesVersion = 1;
constexpr uint32_t kMaxPagesPerSection = 4096;
constexpr uint32_t kMaxPageRecord = 64 * 1024;
constexpr uint8_t kPageZero = 0, kPageRaw = 1;

Unexpected<MachineError> fail(std::string msg) { return Unexpected<MachineError>(MachineError { std::move(msg) }); }
Unexpected<MachineError> fail(StateError const& e) { return fail(e.text()); }

std::string size_text(uint64_t bytes)
{
    if (bytes % (1ull << 30) == 0)
        return fmt::format("{} GiB", bytes >> 30);
    if (bytes % (1ull << 20) == 0)
        return fmt::format("{} MiB", bytes >> 20);
    return fmt::format("{} bytes", bytes);
}

std::string cpu_name(unsigned index) { return fmt::format("cpu{}", index); }

// The "machine" section's contents, read and checked before anything is applied.
struct SavedPlacement {
    uint8_t space;
    uint64_t base, length;
    bool operator==(SavedPlacement const&) const = default;
};
struct SavedDevice {
    std::string name;
    std::vector<SavedPlacement> placements;
};
struct SavedMachine {
    uint64_t memory_size {};
    std::string cpu_model;
    uint32_t smp {};
    std::vector<SavedDevice> devices;
    std::optional<MultibootBoot> boot;
    std::vector<GuestRange> ranges;
    std::optional<LinuxBoot> linux_boot;
    std::vector<E820Entry> memory_map;
};

std::string placement_text(std::vector<SavedPlacement> const& ps)
{
    std::string out;
    for (auto const& p : ps) {
        if (!out.empty())
            out += ", ";
        out += fmt::format("{} {:#x}-{:#x}", p.space == 0 ? "ports" : "MMIO", p.base, p.base + p.length - 1);
    }
    return out.empty() ? "nowhere" : out;
}

std::string names_text(std::vector<std::string> const& names)
{
    std::string out;
    for (auto const& n : names)
        out += (out.empty() ? "" : ", ") + n;
    return out.empty() ? "none" : out;
}

std::string as_string(std::vector<uint8_t> const& b) { return std::string(b.begin(), b.end()); }

// A name from the stream that error messages will quote: printable ASCII only, so that a
// message stays one line of text whatever the stream holds (found by fuzz_snapshot).
bool printable_name(std::string const& s)
{
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7F; });
}

// The "machine" section's fields, read and checked for shape (not yet against this machine).
Result<void, MachineError> read_machine_section(SnapshotSection const& sec, SavedMachine& saved)
{
    StateReader r(sec.name, sec.payload);
    saved.memory_size = r.u64();
    saved.cpu_model = as_string(r.bytes(64));
    if (r.ok() && !printable_name(saved.cpu_model))
        r.fail("the CPU model's name is not printable text");
    saved.smp = r.u32();
    uint32_t ndev = r.u32();
    if (r.ok() && ndev > kMaxDevices)
        r.fail(fmt::format("{} devices (at most {})", ndev, kMaxDevices));
    for (uint32_t i = 0; r.ok() && i < ndev; ++i) {
        SavedDevice d;
        d.name = as_string(r.bytes(kMaxSectionName));
        if (r.ok() && !printable_name(d.name))
            r.fail(fmt::format("device {}'s name is not printable text", i));
        uint32_t np = r.u32();
        if (r.ok() && np > kMaxPlacements)
            r.fail(fmt::format("device '{}' has {} placements (at most {})", d.name, np, kMaxPlacements));
        for (uint32_t k = 0; r.ok() && k < np; ++k) {
            SavedPlacement p;
            p.space = r.u8();
            p.base = r.u64();
            p.length = r.u64();
            if (r.ok() && p.space > 1)
                r.fail(fmt::format("device '{}': bad bus space {}", d.name, p.space));
            d.placements.push_back(p);
        }
        saved.devices.push_back(std::move(d));
    }
    if (r.boolean()) {
        MultibootBoot b {};
        for (uint32_t* f : { &b.entry, &b.info_addr, &b.mem_lower_kib, &b.mem_upper_kib, &b.info_flags, &b.load_low,
                 &b.load_high, &b.buffer_end })
            *f = r.u32();
        saved.boot = b;
    }
    uint32_t nranges = r.u32();
    if (r.ok() && nranges > kMaxBootRanges)
        r.fail(fmt::format("{} boot ranges (at most {})", nranges, kMaxBootRanges));
    for (uint32_t i = 0; r.ok() && i < nranges; ++i) {
        GuestRange g { r.u64(), 0 };
        g.size = r.u64();
        saved.ranges.push_back(g);
    }
    if (r.ok() && r.boolean()) {
        LinuxBoot l {};
        uint8_t protocol = r.u8();
        if (r.ok() && protocol > 1)
            r.fail(fmt::format("bad Linux boot protocol {}", protocol));
        l.protocol = protocol == 0 ? LinuxBoot::Protocol::BzImage : LinuxBoot::Protocol::Pvh;
        for (uint64_t* f : { &l.entry.rip, &l.boot_info, &l.cmdline_addr, &l.initrd_addr, &l.initrd_size, &l.kernel_low,
                 &l.kernel_high, &l.acpi_base, &l.rsdp })
            *f = r.u64();
        l.written = saved.ranges;
        saved.linux_boot = l;
    }
    uint32_t nmap = r.u32();
    if (r.ok() && nmap > kMaxMemoryMap)
        r.fail(fmt::format("{} memory-map entries (at most {})", nmap, kMaxMemoryMap));
    for (uint32_t i = 0; r.ok() && i < nmap; ++i) {
        E820Entry e {};
        e.base = r.u64();
        e.length = r.u64();
        e.type = r.u32();
        saved.memory_map.push_back(e);
    }
    if (saved.linux_boot)
        saved.linux_boot->e820 = saved.memory_map;
    if (auto ok = r.finish(); !ok)
        return fail(ok.error());

return {};
}


// One "ram-pages" record.
struct PageRecord {
    uint64_t spa;
    uint8_t kind;
    std::span<uint8_t const> data; // 4096 bytes (raw), empty (zero), or an encoder's record
};

// A "ram-pages" payload read whole and checked (every page DRAM, page-aligned, a known kind)
// before any of it is applied.
Result<std::vector<PageRecord>, MachineError> parse_ram_pages(std::span<uint8_t const> payload, mmu::MemoryController& mc,
    bool have_decoder)
{
    StateReader r(kRamPagesSection, payload);
    std::vector<PageRecord> out;
    uint32_t pass = r.u32();
    uint32_t count = r.u32();
    if (r.ok() && pass == 0)
        r.fail("pass number 0 (passes count from 1)");
    if (r.ok() && (count == 0 || count > kMaxPagesPerSection))
        r.fail(fmt::format("{} page records (1 to {})", count, kMaxPagesPerSection));
    if (r.ok())
        out.reserve(count);
    for (uint32_t i = 0; r.ok() && i < count; ++i) {
        PageRecord rec {};
        rec.spa = r.u64();
        rec.kind = r.u8();
        if (!r.ok())
            break;
        if ((rec.spa & kPageMask) || !mc.is_dram(Spa(rec.spa), kPageSize)) {
            r.fail(fmt::format("page record {} of pass {}: {:#x} is not a page of this machine's DRAM", i, pass, rec.spa));
            break;
        }
        if (rec.kind == kPageRaw) {
            rec.data = r.raw(kPageSize);
        } else if (rec.kind != kPageZero) {
            uint32_t len = r.u32();
            if (r.ok() && len > kMaxPageRecord)
                r.fail(fmt::format("page {:#x}: a kind-{} record of {} bytes (at most {})", rec.spa, rec.kind, len, kMaxPageRecord));
            rec.data = r.raw(len);
            if (r.ok() && !have_decoder)
                r.fail(fmt::format("page {:#x}: kind {} is an encrypted-page packet (the SEV path), which this machine cannot "
                                   "decode: SEV migration is unsupported (QUIRKS.md)",
                    rec.spa, rec.kind));
        }
        out.push_back(rec);
    }
    if (auto ok = r.finish(); !ok)
        return Unexpected<MachineError>(MachineError { ok.error().text() });
    return out;
}
} // namespace

std::optional<std::string> Machine::migration_blocker(bool live) const
{
    if (m_sev && !awaiting_snapshot()) {
        if (!live)
            return std::string("SEV: an SEV guest is migrated live only (migrate tcp:HOST:PORT); its memory cannot be "
                               "saved to a snapshot");
        if (m_sev->state() == SevState::Sent)
            return std::string("SEV: the guest was migrated to another machine (SEND_FINISH): it cannot be migrated "
                               "again from here");
        if (m_sev->state() != SevState::Running)
            return fmt::format("SEV: the guest is in state '{}'; it migrates once it runs", sev_state_name(m_sev->state()));
        // QEMU's SEV migration series keeps its migration blocker until the guest writes
        // KVM_MIGRATION_READY: before that its shared pages are not all reported.
        if (!m_sev->migration_ready())
            return std::string("SEV: the guest has not enabled live migration (it never wrote KVM_MIGRATION_READY to "
                               "MSR_KVM_MIGRATION_CONTROL)");
        if (!m_sev->has_migration_target())
            return std::string("SEV: the target's PDH and certificate chain are not set (migrate-set-sev-info with "
                               "the target's query-sev-capabilities)");
        return std::nullopt; // the AMD-SP keeps its own state: the guest's keys travel in the session
    }
    if (awaiting_snapshot())
        return std::string("the machine is waiting for an incoming snapshot and has no guest to save");
    if (m_amd_sp)
        if (auto b = m_amd_sp->snapshot_blocker())
            return b;
    if (auto b = m_memory->snapshot_blocker())
        return b;
    return std::nullopt;
}

void Machine::write_machine_section(SnapshotWriter& out) const
{
    StateWriter w;
    {
        w.u64(m_config.memory_size);
        auto model = cpu_model_name(m_config.cpu_model);
        w.bytes({ reinterpret_cast<uint8_t const*>(model.data()), model.size() });
        w.u32(uint32_t(m_vcpus.size()));
        w.u32(uint32_t(m_devices.size()));
        for (auto const& d : m_devices) {
            auto name = d.device->name();
            w.bytes({ reinterpret_cast<uint8_t const*>(name.data()), name.size() });
            w.u32(uint32_t(d.placements.size()));
            for (auto const& p : d.placements) {
                w.u8(p.space == DevicePlacement::Space::Pio ? 0 : 1);
                w.u64(p.base);
                w.u64(p.length);
            }
        }
        w.boolean(m_boot.has_value());
        if (m_boot) {
            auto const& b = *m_boot;
            for (uint32_t v : { b.entry, b.info_addr, b.mem_lower_kib, b.mem_upper_kib, b.info_flags, b.load_low, b.load_high,
                     b.buffer_end })
                w.u32(v);
        }
        w.u32(uint32_t(m_boot_ranges.size()));
        for (auto const& r : m_boot_ranges) {
            w.u64(r.gpa);
            w.u64(r.size);
        }
        w.boolean(m_linux_boot.has_value());
        if (m_linux_boot) {
            auto const& l = *m_linux_boot;
            w.u8(l.protocol == LinuxBoot::Protocol::BzImage ? 0 : 1);
            for (uint64_t v : { l.entry.rip, l.boot_info, l.cmdline_addr, l.initrd_addr, l.initrd_size, l.kernel_low,
                     l.kernel_high, l.acpi_base, l.rsdp })
                w.u64(v);
        }
        w.u32(uint32_t(m_memory_map.size()));
        for (auto const& e : m_memory_map) {
            w.u64(e.base);
            w.u64(e.length);
            w.u32(e.type);
        }
    }
    out.add("machine", kMachineStateVersion, w.data());
}

Result<std::vector<uint8_t>, MachineError> Machine::save_snapshot()
{
    if (auto b = migration_blocker())
        return fail(*b);
    if (m_in_slice)
        return fail("internal: save_snapshot() inside a vCPU's time slice (a snapshot is taken between slices)");
    // The vCPUs first: the one part that can still refuse (a CPU between two halves of an event).
    std::vector<cpu::CpuState> cpus;
    for (auto& v : m_vcpus) {
        auto st = v.cpu().snapshot_state();
        if (!st)
            return fail(fmt::format("snapshot of vCPU {}: {}", v.index(), st.error()));
        cpus.push_back(std::move(*st));
    }

    SnapshotWriter out;
    auto section = [&](std::string_view name, uint32_t version, auto&& write) {
        StateWriter w;
        write(w);
        out.add(name, version, w.data());
    };
    write_machine_section(out);
    section("clock", kClockStateVersion, [&](StateWriter& w) { m_clock->save(w); });
    section("ram", mmu::MemoryController::kDramStateVersion, [&](StateWriter& w) { m_memory->save_dram(w); });
    for (size_t i = 0; i < cpus.size(); ++i)
        section(cpu_name(unsigned(i)), cpu::kCpuStateVersion, [&](StateWriter& w) { cpu::save_cpu_state(w, cpus[i]); });
    for (auto const& d : m_devices)
        section(d.device->name(), d.device->state_version(), [&](StateWriter& w) { d.device->save(w); });
    section("amd-sp", devices::AmdSp::kStateVersion, [&](StateWriter& w) {
        if (m_amd_sp)
            m_amd_sp->save(w);
    });
    return out.finish();
}

Result<void, MachineError> Machine::check_snapshot_machine(SnapshotSection const& sec) const
{
    if (sec.version != kMachineStateVersion)
        return fail(StateError { "machine", fmt::format("unsupported version {} (this build reads version {})",
                                                 sec.version, kMachineStateVersion) });
    SavedMachine saved;
    TRY(read_machine_section(sec, saved));
    auto mismatch = [&](std::string msg) { return fail(StateError { "machine", std::move(msg) }); };
    if (saved.memory_size != m_config.memory_size)
        return mismatch(fmt::format("snapshot is of a {} machine; this one has {} (-m)", size_text(saved.memory_size),
            size_text(m_config.memory_size)));
    if (saved.cpu_model != cpu_model_name(m_config.cpu_model))
        return mismatch(fmt::format("snapshot is of an {} machine; this one is {} (-cpu)", saved.cpu_model,
            cpu_model_name(m_config.cpu_model)));
    if (saved.smp != m_vcpus.size())
        return mismatch(fmt::format("snapshot has {} vCPU(s); this machine has {} (-smp)", saved.smp, m_vcpus.size()));
    std::vector<std::string> theirs, ours;
    for (auto const& d : saved.devices)
        theirs.push_back(d.name);
    for (auto const& d : m_devices)
        ours.push_back(std::string(d.device->name()));
    if (theirs != ours)
        return mismatch(fmt::format("snapshot's devices are {}; this machine's are {} (-device)", names_text(theirs),
            names_text(ours)));
    for (size_t i = 0; i < m_devices.size(); ++i) {
        std::vector<SavedPlacement> mine;
        for (auto const& p : m_devices[i].placements)
            mine.push_back({ uint8_t(p.space == DevicePlacement::Space::Pio ? 0 : 1), p.base, p.length });
        if (mine != saved.devices[i].placements)
            return mismatch(fmt::format("snapshot has {} at {}; this machine has it at {} (-device)", ours[i],
                placement_text(saved.devices[i].placements), placement_text(mine)));
    }
    return {};
}

Result<void, MachineError> Machine::load_snapshot(std::span<uint8_t const> stream)
{
    if (!m_incoming)
        return fail("a snapshot is loaded only into a machine built to receive one (-incoming)");
    if (m_restored || m_started)
        return fail("this machine has already received a snapshot or run; a snapshot loads into a fresh -incoming machine");

    // 1. The whole stream, structurally (magic, versions, CRCs, the end record).
    auto parsed = parse_snapshot(stream);
    if (!parsed)
        return fail(parsed.error());
    return load_sections(*parsed, stream.size(), false);
}

Result<void, MachineError> Machine::load_live_state(std::span<SnapshotSection const> sections, uint64_t stream_bytes)
{
    if (!m_incoming)
        return fail("a snapshot is loaded only into a machine built to receive one (-incoming)");
    if (m_restored || m_started)
        return fail("this machine has already received a snapshot or run; a snapshot loads into a fresh -incoming machine");
    // A live stream's RAM is the layout ("ram" version 2) and the "ram-pages" sections already
    // in DRAM; a whole-DRAM image (version 1) beside them would silently overwrite those pages.
    // No source writes that mix, and load_snapshot() refuses it (found by the `migration` fuzz
    // harness: tests/fuzz/regressions/migration/ram-image-in-live-stream).
    for (auto const& sec : sections)
        if (sec.name == "ram" && sec.version != mmu::MemoryController::kDramLayoutStateVersion)
            return fail(StateError { sec.name, fmt::format("version {} in a live migration stream (a live migration sends "
                                                           "the RAM layout, version {}, and its pages in \"{}\" sections)",
                                                   sec.version, mmu::MemoryController::kDramLayoutStateVersion, kRamPagesSection) });
    return load_sections(sections, stream_bytes, true);
}

Result<void, MachineError> Machine::load_sections(std::span<SnapshotSection const> parsed_sections, uint64_t stream_bytes,
    bool pages_in_dram)
{
    auto const* parsed = &parsed_sections;
    // 2. The sections this machine has (each exactly once, no other, in a version it reads:
    // checked after the machine section). RAM is either one "ram" section of version 1 (the
    // whole of DRAM) or, from a live migration, "ram" of version 2 (layout and key) and its
    // "ram-pages" sections.
    std::vector<SnapshotSection const*> page_sections;
    uint32_t ram_version = mmu::MemoryController::kDramStateVersion;
    for (auto const& sec : *parsed) {
        if (sec.name == "ram" && sec.version == mmu::MemoryController::kDramLayoutStateVersion)
            ram_version = sec.version;
        if (sec.name == kRamPagesSection)
            page_sections.push_back(&sec);
    }
    std::vector<std::pair<std::string, uint32_t>> expected;
    expected.emplace_back("machine", kMachineStateVersion);
    expected.emplace_back("clock", kClockStateVersion);
    expected.emplace_back("ram", ram_version);
    if (ram_version == mmu::MemoryController::kDramLayoutStateVersion)
        expected.emplace_back(kRamPagesSection, kRamPagesVersion);
    for (auto const& v : m_vcpus)
        expected.emplace_back(cpu_name(v.index()), cpu::kCpuStateVersion);
    for (auto const& d : m_devices)
        expected.emplace_back(std::string(d.device->name()), d.device->state_version());
    expected.emplace_back("amd-sp", devices::AmdSp::kStateVersion);
    std::map<std::string, SnapshotSection const*> by_name;
    for (auto const& sec : *parsed)
        by_name[sec.name] = &sec; // parse_snapshot() refuses two sections of one name (but "ram-pages")
    // The machine section first: a snapshot of another configuration is named as such, rather
    // than by the first part this machine lacks.
    if (!by_name.count("machine"))
        return fail(StateError { "machine", "missing from the snapshot" });
    if (by_name["machine"]->version != kMachineStateVersion)
        return fail(StateError { "machine", fmt::format("unsupported version {} (this build reads version {})",
                                                 by_name["machine"]->version, kMachineStateVersion) });

    // 3. The machine section: the configuration must match.
    TRY(check_snapshot_machine(*by_name["machine"]));
    SavedMachine saved;
    TRY(read_machine_section(*by_name["machine"], saved));
    for (auto const& sec : *parsed) {
        auto it = std::find_if(expected.begin(), expected.end(), [&](auto const& e) { return e.first == sec.name; });
        if (it == expected.end())
            return fail(StateError { sec.name, "unknown section: this machine has no such part (a snapshot of another "
                                               "configuration or a newer sevemu?)" });
        if (sec.version != it->second)
            return fail(StateError { sec.name, fmt::format("unsupported version {} (this build reads version {})",
                                                   sec.version, it->second) });
    }
    for (auto const& [name, version] : expected)
        if (!by_name.count(name) && !(name == kRamPagesSection && pages_in_dram))
            return fail(StateError { name, "missing from the snapshot" });

    // 4. The parts that are read whole before anything is applied: the vCPUs and the clock.
    std::vector<cpu::CpuState> cpus;
    for (auto const& v : m_vcpus) {
        auto st = cpu::load_cpu_section(*by_name[cpu_name(v.index())]);
        if (!st)
            return fail(st.error());
        cpus.push_back(std::move(*st));
    }
    int64_t clock_now = 0;
    {
        auto const& sec = *by_name["clock"];
        StateReader r(sec.name, sec.payload);
        auto now = MachineClock::read_state(r);
        if (!now)
            return fail(r.finish().error());
        clock_now = *now;
    }

    // 5. The devices, then the AMD-SP, then DRAM: each checks its section before it changes;
    // if one refuses, those already loaded go back to their state from before (in reverse).
    std::vector<std::pair<devices::Device*, std::vector<uint8_t>>> backups;
    auto roll_back = [&] {
        for (auto it = backups.rbegin(); it != backups.rend(); ++it) {
            StateReader r(it->first->name(), it->second);
            it->first->load(r);
        }
    };
    auto load_part = [&](devices::Device& d, SnapshotSection const& sec) -> Result<void, MachineError> {
        StateWriter backup;
        d.save(backup);
        StateReader r(sec.name, sec.payload);
        d.load(r);
        if (auto ok = r.finish(); !ok) {
            roll_back();
            return fail(ok.error());
        }
        backups.emplace_back(&d, backup.take());
        return {};
    };
    for (auto& d : m_devices)
        TRY(load_part(*d.device, *by_name[std::string(d.device->name())]));
    if (auto const& sec = *by_name["amd-sp"]; !sec.payload.empty()) {
        // The snapshot's machine had opened its AMD-SP: this one must open its own (the same
        // --platform part) for the state to be checked against.
        auto sp = amd_sp();
        if (!sp) {
            roll_back();
            return fail(StateError { "amd-sp", sp.error().message });
        }
        TRY(load_part(**sp, sec));
    }
    if (ram_version == mmu::MemoryController::kDramStateVersion) {
        auto const& sec = *by_name["ram"];
        StateReader r(sec.name, sec.payload);
        m_memory->load_dram(r);
        if (auto ok = r.finish(); !ok) {
            roll_back();
            return fail(ok.error());
        }
    } else {
        // A live stream: every "ram-pages" section is checked before the first one is applied
        // (pages already in DRAM came in one by one, each checked before it was written).
        if (!pages_in_dram) {
            for (auto const* sec : page_sections) {
                if (auto ok = check_ram_pages(*sec, {}); !ok) {
                    roll_back();
                    return fail(ok.error().message);
                }
            }
        }
        auto const& sec = *by_name["ram"];
        StateReader r(sec.name, sec.payload);
        // An SEV target keeps its own host key and layout (the guest's key slot is in use); its
        // guest RAM came through the SEV decoder.
        if (!m_sev)
            m_memory->load_dram_layout(r);
        else
            (void)r.raw(r.remaining());
        if (auto ok = r.finish(); !ok) {
            roll_back();
            return fail(ok.error());
        }
        if (!pages_in_dram)
            for (auto const* sec : page_sections)
                (void)load_ram_pages(sec->payload); // checked above: cannot fail
    }

    // 6. The vCPUs (whose caches go: DRAM changed under them) and the clock, which reads the
    // restored instruction counts; then the machine's own fields.
    for (size_t i = 0; i < m_vcpus.size(); ++i) {
        m_vcpus[i].cpu().set_state(cpus[i]);
        m_vcpus[i].cpu().flush_code_cache();
    }
    m_clock->restore(clock_now);
    m_boot = saved.boot;
    m_boot_ranges = std::move(saved.ranges);
    m_linux_boot = std::move(saved.linux_boot);
    m_memory_map = std::move(saved.memory_map);
    m_board_stop.reset();
    m_restored = true;
    if (m_trace.enabled("machine"))
        m_trace.emit("machine", fmt::format("snapshot restored: {} sections, {} bytes, virtual time {} ns", parsed->size(),
            stream_bytes, clock_now));
    return {};
}

// ---------------------------------------------------------------- live migration

Result<void, MachineError> Machine::save_live_prologue(SnapshotWriter& out)
{
    if (auto b = migration_blocker(true))
        return fail(*b);
    write_machine_section(out);
    StateWriter w;
    m_memory->save_dram_layout(w);
    out.add("ram", mmu::MemoryController::kDramLayoutStateVersion, w.data());
    return {};
}

Result<void, MachineError> Machine::save_live_epilogue(SnapshotWriter& out)
{
    // An SEV guest is in SEND_UPDATE here (its blocker would say so): the encoder checked it.
    if (auto b = m_sev ? std::nullopt : migration_blocker(true))
        return fail(*b);
    if (m_in_slice)
        return fail("internal: save_live_epilogue() inside a vCPU's time slice");
    std::vector<cpu::CpuState> cpus;
    for (auto& v : m_vcpus) {
        auto st = v.cpu().snapshot_state();
        if (!st)
            return fail(fmt::format("snapshot of vCPU {}: {}", v.index(), st.error()));
        cpus.push_back(std::move(*st));
    }
    auto section = [&](std::string_view name, uint32_t version, auto&& write) {
        StateWriter w;
        write(w);
        out.add(name, version, w.data());
    };
    section("clock", kClockStateVersion, [&](StateWriter& w) { m_clock->save(w); });
    for (size_t i = 0; i < cpus.size(); ++i)
        section(cpu_name(unsigned(i)), cpu::kCpuStateVersion, [&](StateWriter& w) { cpu::save_cpu_state(w, cpus[i]); });
    for (auto const& d : m_devices)
        section(d.device->name(), d.device->state_version(), [&](StateWriter& w) { d.device->save(w); });
    section("amd-sp", devices::AmdSp::kStateVersion, [&](StateWriter& w) {
        // An SEV machine's AMD-SP stays: the target has its own platform, and the guest's keys
        // went in the SEV session (an empty payload: nothing to load).
        if (m_amd_sp && !m_sev)
            m_amd_sp->save(w);
    });
    return {};
}

Result<void, MachineError> Machine::check_ram_pages(SnapshotSection const& sec, PageDecoder const& decode)
{
    if (sec.version != kRamPagesVersion)
        return fail(StateError { sec.name, fmt::format("unsupported version {} (this build reads version {})", sec.version,
                                               kRamPagesVersion) });
    TRY(parse_ram_pages(sec.payload, *m_memory, bool(decode)));
    return {};
}

Result<void, MachineError> Machine::load_ram_pages(std::span<uint8_t const> payload, PageDecoder const& decode)
{
    if (!awaiting_snapshot())
        return fail("RAM pages are loaded only into an incoming machine that has not run");
    auto records = TRY(parse_ram_pages(payload, *m_memory, bool(decode)));
    // An SEV target's DRAM below guest RAM is its hypervisor's (VMCBs, page tables, PSP
    // buffers): a stream may not write there.
    if (m_sev)
        for (auto const& rec : records)
            if (rec.spa < SevRuntime::kGuestRamBase || rec.spa - SevRuntime::kGuestRamBase >= m_sev->guest_ram_size())
                return fail(StateError { kRamPagesSection, fmt::format("page {:#x} is not guest RAM of this SEV machine", rec.spa) });
    // Runs of pages that arrive with contents are backed in one go (a fresh target's DRAM is
    // untouched: a page fault per page otherwise); zero pages stay unbacked.
    for (size_t i = 0; i < records.size();) {
        size_t j = i;
        while (j < records.size() && records[j].kind != kPageZero && records[j].spa == records[i].spa + (j - i) * kPageSize)
            ++j;
        if (j - i > 1)
            m_memory->prefault_dram(records[i].spa >> kPageShift, j - i);
        i = j == i ? i + 1 : j;
    }
    for (auto const& rec : records) {
        if (rec.kind == kPageZero || rec.kind == kPageRaw) {
            m_memory->store_dram_page(rec.spa >> kPageShift, rec.kind == kPageRaw ? rec.data.data() : nullptr);
        } else if (auto r = decode(rec.spa, rec.kind, rec.data); !r) {
            return fail(StateError { kRamPagesSection, fmt::format("page {:#x}: {}", rec.spa, r.error()) });
        }
    }
    return {};
}

} // namespace sevemu::emulator
