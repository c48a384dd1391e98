// sevemu fuzzing — writes the seed corpus of the `migration` harness (fuzz_migration.cpp): live
// migration streams (version 2) as a source writes them, made by the source's own code — the
// machine's live prologue and epilogue (Machine::save_live_prologue/epilogue), the RAM page
// encoder of the migration (make_ram_page_encoder: plain pages, or SEND_START and
// SEND_UPDATE_DATA packets through the firmware for an SEV guest) and SnapshotWriter — from test
// guests stopped at fixed instruction counts:
//
//   build/tests/fuzz/fuzz-gen-migration-corpus tests/fuzz/corpus/migration
//       build/tests/guests/guest-hash.elf build/tests/guests/guest-sev.elf build/tests/guests/guest-sev-es.elf
//
// Plain (selector byte 0, a 2 MiB machine as the harness's): pass 1 is every page of DRAM, in
// "ram-pages" sections of 128 pages, taken at instruction N1; pass 2 the pages that differ at N2
// (the machine is deterministic: a second machine run to N2 holds exactly what the guest would
// have written between the passes), then the vCPU, clock and device sections of N2.
// SEV (selector byte 1, -m 16M, policy NODBG): guest-sev.elf run until it has enabled migration
// (MSR_KVM_MIGRATION_CONTROL) and shared its page (KVM_HC_MAP_GPA_RANGE); SEND_START toward the
// fixed platform's PDH (fuzz_fixed.h: the harness's target) with its chain; pass 1 the guest-RAM
// pages DRAM holds non-zero (the shared one in the clear, the others as SEND_UPDATE_DATA
// packets), pass 2 two of them again, then "sev-shared-regions", "sev-vcpu0" and the epilogue
// (seed "sev": the guest finishes on the target); "sev-few-pages" the same with three pages
// (the shared one and two private ones: small, so that the fuzzer runs faster), and
// "sev-no-vcpu-state" that one without the SEV sections of the stop (refused at the end). Each
// is a migration of its own (SEND_START ... SEND_CANCEL). The full SEV pass (every page of
// 16 MiB) would be 17 MiB; these pages reach every record kind and section, and the pages not
// sent stay as the target's RECEIVE_START left them.
// SEV-ES (selector byte 3, policy NODBG | ES): guest-sev-es.elf the same way (it has reported its
// GHCB page 0x8000 and its shared page): "sev-es" and "sev-es-few-pages" (the GHCB page, the
// shared page, two private pages), whose "sev-vcpu0" carries the SEND_UPDATE_VMSA packet.
// Run again only when the stream format changes.
#include "fuzz_fixed.h"
#include "fuzz_migration_guest.h"

#include "base/state_stream.h"
#include "emulator/machine.h"
#include "emulator/migration.h"
#include "emulator/sev_runtime.h"
#include "mmu/memory_controller.h"

#include <algorithm>
#include <cstdio>
#include <fstream>

using namespace sevemu;
using namespace sevemu::emulator;
using namespace sevemu::fuzz;

namespace {

fs::path g_out;
constexpr unsigned kChunk = 128;

[[noreturn]] void die(std::string const& what)
{
    std::fprintf(stderr, "fuzz-gen-migration-corpus: %s\n", what.c_str());
    std::exit(1);
}

void put(std::string const& name, uint8_t selector, std::vector<uint8_t> const& stream)
{
    fs::create_directories(g_out);
    std::ofstream out(g_out / name, std::ios::binary | std::ios::trunc);
    out.put(char(selector));
    out.write(reinterpret_cast<char const*>(stream.data()), std::streamsize(stream.size()));
    std::printf("%s: %zu bytes\n", (g_out / name).c_str(), stream.size() + 1);
}

MachineConfig base_config(std::string kernel, uint64_t ram, uint64_t max_instructions)
{
    MachineConfig c;
    c.memory_size = ram;
    c.serial.kind = SerialConfig::Kind::None;
    c.debug_exit = devices::DebugExitConfig { 0xf4, 0x04 };
    c.kernel = std::move(kernel);
    c.max_instructions = max_instructions;
    return c;
}

std::unique_ptr<Machine> run_to(MachineConfig c)
{
    auto m = Machine::create(std::move(c));
    if (!m)
        die(m.error().message);
    auto out = (*m)->run();
    if (out.reason != RunOutcome::Reason::InstructionLimit)
        die("the guest ended before the instruction count: " + out.message);
    return std::move(*m);
}

// "ram-pages" sections for `pages` (SPAs), `kChunk` records each, pass `pass`.
void add_pages(SnapshotWriter& w, Machine& m, RamPageEncoder& enc, uint32_t pass, std::vector<uint64_t> const& pages)
{
    for (size_t at = 0; at < pages.size(); at += kChunk) {
        size_t n = std::min<size_t>(kChunk, pages.size() - at);
        StateWriter s;
        s.u32(pass);
        s.u32(uint32_t(n));
        for (size_t i = 0; i < n; ++i) {
            s.u64(pages[at + i]);
            if (auto r = enc.encode_page(m, pages[at + i], s); !r)
                die(r.error());
        }
        w.add(kRamPagesSection, 1, s.data());
    }
}

std::array<uint8_t, kPageSize> page_of(Machine& m, uint64_t spa)
{
    std::array<uint8_t, kPageSize> p {};
    if (!m.memory().copy_dram_page(spa >> kPageShift, p))
        die("not DRAM");
    return p;
}

bool zero(std::array<uint8_t, kPageSize> const& p)
{
    return std::all_of(p.begin(), p.end(), [](uint8_t b) { return b == 0; });
}

void plain(std::string const& guest)
{
    constexpr uint64_t kRam = 2ull << 20;
    for (auto [n1, n2, name] : { std::tuple { 20000ull, 200000ull, "plain-two-passes" },
             std::tuple { 150000ull, 150000ull, "plain-one-pass" } }) {
        auto a = run_to(base_config(guest, kRam, n1));
        auto b = run_to(base_config(guest, kRam, n2));
        SnapshotWriter w(kSnapshotStreamVersion);
        if (auto r = a->save_live_prologue(w); !r)
            die(r.error().message);
        auto enc_a = make_ram_page_encoder(*a);
        if (auto r = enc_a->begin(*a, w); !r)
            die(r.error());
        std::vector<uint64_t> all, dirty;
        for (uint64_t spa = 0; spa < kRam; spa += kPageSize) {
            all.push_back(spa);
            if (page_of(*a, spa) != page_of(*b, spa))
                dirty.push_back(spa);
        }
        add_pages(w, *a, *enc_a, 1, all);
        auto enc_b = make_ram_page_encoder(*b);
        if (!dirty.empty())
            add_pages(w, *b, *enc_b, 2, dirty);
        if (auto r = enc_b->finish(*b, w); !r)
            die(r.error());
        if (auto r = b->save_live_epilogue(w); !r)
            die(r.error().message);
        put(name, 0, w.finish());
    }
}

void sev(std::string const& guest, bool es)
{
    constexpr uint64_t kRam = 16ull << 20;
    std::string const prefix = es ? "sev-es" : "sev";
    uint8_t const selector = es ? 3 : 1;
    test::TempDir source_platform("fuzz-mig-src", fuzz_tmp_base());
    auto config = [&](uint64_t max) {
        auto c = base_config(guest, kRam, max);
        c.platform_dir = source_platform.path.string();
        c.confidential_guest = migration_fuzz_guest(es);
        return c;
    };
    // How long the whole run is, then a stop shortly before its end (the page is shared by then).
    uint64_t total = 0;
    {
        auto m = Machine::create(config(0));
        if (!m)
            die(m.error().message);
        total = (*m)->run().instructions;
    }
    auto m = run_to(config(total - 2000));
    auto* rt = m->sev();
    if (!rt->migration_ready() || rt->gpa_range_changes().empty())
        die("the SEV guest has not enabled migration and shared its page by then");
    auto ref = make_reference();
    Bytes plat = ref.pek.serialize(), oca = ref.oca.serialize(), cek = ref.cek.serialize();
    plat.insert(plat.end(), oca.begin(), oca.end());
    plat.insert(plat.end(), cek.begin(), cek.end());
    Bytes amd = ref.ask.serialize(), ark = ref.ark.serialize();
    amd.insert(amd.end(), ark.begin(), ark.end());
    if (auto r = rt->set_migration_target(ref.pdh.serialize(), plat, amd); !r)
        die(r.error().message);

    std::vector<uint64_t> pages;
    for (uint64_t gpa = 0; gpa < kRam; gpa += kPageSize)
        if (!zero(page_of(*m, SevRuntime::kGuestRamBase + gpa)))
            pages.push_back(SevRuntime::kGuestRamBase + gpa);
    uint64_t shared = SevRuntime::kGuestRamBase + 0x900000; // tests/guests/sev.c SEV_SHARED_GPA
    uint64_t ghcb = SevRuntime::kGuestRamBase + 0x8000;     // tests/guests/sev.h SEV_ES_GHCB_GPA
    if (pages.empty() || pages.size() > 64 || std::find(pages.begin(), pages.end(), shared) == pages.end()
        || (es && (std::find(pages.begin(), pages.end(), ghcb) == pages.end() || !rt->vm().is_shared(0x8))))
        die("unexpected guest pages in use: " + std::to_string(pages.size()));
    // One stream per SEND_START: each seed is a migration of its own (SEND_CANCEL after it).
    auto stream = [&](std::string const& name, std::vector<uint64_t> const& pass1, bool stop_sections) {
        SnapshotWriter w(kSnapshotStreamVersion);
        if (auto r = m->save_live_prologue(w); !r)
            die(r.error().message);
        auto enc = make_ram_page_encoder(*m);
        if (auto r = enc->begin(*m, w); !r)
            die(r.error());
        add_pages(w, *m, *enc, 1, pass1);
        add_pages(w, *m, *enc, 2, { pass1.front(), pass1.back() });
        if (stop_sections)
            if (auto r = enc->finish(*m, w); !r)
                die(r.error());
        if (auto r = m->save_live_epilogue(w); !r)
            die(r.error().message);
        put(name, selector, w.finish());
        enc->abort(*m); // SEND_CANCEL: the source's guest back to running
    };
    // Every page in use: the guest finishes on the target.
    stream(prefix, pages, true);
    // The shared page and two private ones (SEV-ES: and the GHCB page): small, for the fuzzer's
    // speed (the rest of guest RAM stays as RECEIVE_START left it).
    std::vector<uint64_t> few { pages.front(), shared, pages.back() };
    if (es)
        few.insert(few.begin() + 1, ghcb);
    std::sort(few.begin(), few.end());
    few.erase(std::unique(few.begin(), few.end()), few.end());
    stream(prefix + "-few-pages", few, true);
    // Without the SEV sections of the stop: the decoder's finish refuses it (no vCPU state), so
    // RECEIVE_FINISH is never reached.
    if (!es)
        stream("sev-no-vcpu-state", few, false);
    std::printf("%s: %zu guest pages in pass 1\n", es ? "SEV-ES" : "SEV", pages.size());
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 5) {
        std::fprintf(stderr, "usage: fuzz-gen-migration-corpus OUT_DIR PLAIN_GUEST_ELF SEV_GUEST_ELF SEV_ES_GUEST_ELF\n");
        return 2;
    }
    g_out = argv[1];
    plain(argv[2]);
    sev(argv[3], false);
    sev(argv[4], true);
    return 0;
}
