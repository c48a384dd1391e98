// Fuzz harness `migration`: the receive side of a live migration — the version-2 stream that
// `sevemu -incoming tcp:` reads off its socket (emulator/migration.cpp Migration::run_tcp_target),
// into a machine built to receive one (Machine::create_incoming):
//   - a plain 2 MiB machine (as the `snapshot` harness's), or
//   - an SEV machine (-m 16M, policy NODBG, cbitpos 51) on the fixed platform identity of
//     fuzz_fixed.h, whose PDH is the one the seed streams' SEND_START sessions were wrapped for:
//     "sev-session" reaches RECEIVE_START, kind-2 page records RECEIVE_UPDATE_DATA,
//     "sev-shared-regions" KVM_SET_SHARED_PAGES_LIST, "sev-vcpuN" the vCPUs, and the end
//     RECEIVE_FINISH (emulator/sev_migration.cpp's SevRamDecoder), or
//   - the same as an SEV-ES machine (policy NODBG | ES, 0x5): its "sev-vcpuN" sections carry the
//     VMSA packets that reach RECEIVE_UPDATE_VMSA.
//
// Input: byte 0 picks the machine (bit 0 clear: plain; bit 0 set: SEV, with bit 1 SEV-ES); the
// rest is what the source wrote on the connection (header, sections, end record). The target's answer ("OK" or "ERR why") goes
// the other way and is not part of it. Like the snapshot harness, every input also goes in
// "resealed" (its sections read by their declared lengths, CRCs ignored, rewritten by
// SnapshotWriter), so that mutated payloads get past the CRCs to the section parsers.
//
// receive() below is run_tcp_target's order of checks without the socket and the machine-thread
// hops (which change no decision): header version 2; "machine" first, checked at once
// (check_snapshot_machine); each "ram-pages" applied as it comes (load_ram_pages with the SEV
// decoder's decode_page when the machine has an SEV guest); the decoder's sections (claims,
// session_section) as they come; every other section kept until the end record, then
// load_live_state and the decoder's finish. Properties checked:
//   - a refusal is one non-empty line (it goes back as "ERR <line>"), and a refused machine is
//     still awaiting its stream: the guest never runs from a partial or tampered stream;
//   - what the target read of an accepted stream is byte for byte what SnapshotWriter (version
//     2) writes for the sections it received: every CRC, the end record;
//   - plain: the live receive and the offline load (Machine::load_snapshot of the same bytes)
//     agree: what the live path accepts the offline load accepts, and the two machines save the
//     same snapshot; what the offline load accepts of a version-2 stream that starts with
//     "machine" the live path accepts too;
//   - SEV: an accepted stream leaves the guest in "running" (RECEIVE_FINISH); a refused one never
//     does; SEV-ES: an accepted stream leaves every vCPU's state protected (its registers are the
//     received VMSA's, which the hypervisor cannot read or write);
//   - an accepted guest then runs (kRunInstructions at most) from the state the stream gave, and
//     ends with an outcome, never a crash.
#include "fuzz_check.h"
#include "fuzz_reseal.h"
#include "fuzz_fixed.h"
#include "fuzz_migration_guest.h"

#include "base/state_stream.h"
#include "emulator/machine.h"
#include "emulator/migration.h"
#include "emulator/sev_runtime.h"
#include "mmu/memory_controller.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

using namespace sevemu;
using namespace sevemu::emulator;
using namespace sevemu::fuzz;

namespace {

constexpr uint64_t kPlainRam = 2ull << 20;
constexpr uint64_t kSevRam = 16ull << 20;
constexpr uint64_t kMaxSectionPayload = 64ull << 20; // migration.cpp's bound on one section
constexpr uint64_t kRunInstructions = 20'000;        // how far a received guest runs

// The SEV target's platform: the fixed identity, its NV image put back before every machine (a
// firmware INIT may rewrite it), so that each input replays from its bytes alone.
class SevPlatformDir {
public:
    SevPlatformDir() : m_dir("fuzz-mig", fuzz_tmp_base())
    {
        write_fixed_identity(m_dir.path, make_reference());
        m_nv = *read_file(m_dir.path / "nv.bin");
    }
    fs::path const& fresh()
    {
        auto nv = read_file(m_dir.path / "nv.bin");
        if (!nv || *nv != m_nv) {
            std::ofstream out(m_dir.path / "nv.bin", std::ios::binary | std::ios::trunc);
            out.write(reinterpret_cast<char const*>(m_nv.data()), std::streamsize(m_nv.size()));
        }
        return m_dir.path;
    }

private:
    test::TempDir m_dir;
    Bytes m_nv;
};

MachineConfig target_config(bool sev, bool es)
{
    MachineConfig c;
    c.serial.kind = SerialConfig::Kind::None;
    c.debug_exit = devices::DebugExitConfig { 0xf4, 0x04 }; // as the seeds' sources (tests/guests)
    c.memory_size = sev ? kSevRam : kPlainRam;
    c.max_instructions = kRunInstructions;
    if (sev) {
        static SevPlatformDir platform;
        c.platform_dir = platform.fresh().string();
        c.confidential_guest = migration_fuzz_guest(es);
    }
    return c;
}

std::unique_ptr<Machine> incoming_machine(bool sev, bool es = false)
{
    auto m = Machine::create_incoming(target_config(sev, es));
    FUZZ_CHECK(m.has_value(), "create_incoming: %s", m ? "" : m.error().message.c_str());
    return std::move(*m);
}

bool one_line(std::string const& s) { return !s.empty() && s.find('\n') == std::string::npos; }

struct Received {
    Result<void, std::string> result;
    std::vector<OwnedSection> sections; // every section read, in stream order
    uint64_t bytes {};                  // how far the target read
    bool state_loaded {};               // load_live_state succeeded (then only the SEV finish can refuse)
};

Unexpected<std::string> refuse(std::string why) { return Unexpected<std::string>(std::move(why)); }

// Migration::run_tcp_target's receive loop (see the file comment).
Result<void, std::string> receive_into(Machine& m, std::span<uint8_t const> stream, Received& out)
{
    size_t pos = 0;
    SnapshotStreamReader reader([&](std::span<uint8_t> dst) -> Result<void, std::string> {
        if (stream.size() - pos < dst.size())
            return Unexpected<std::string>("connection closed by the peer");
        if (!dst.empty())
            std::memcpy(dst.data(), stream.data() + pos, dst.size());
        pos += dst.size();
        return {};
    });
    auto h = reader.read_header();
    if (!h)
        return refuse(h.error().text());
    if (*h != kSnapshotStreamVersion)
        return refuse("a version-" + std::to_string(*h) + " stream over tcp:");
    std::unique_ptr<RamPageDecoder> decoder = make_ram_page_decoder(m);
    std::vector<size_t> kept;
    bool have_machine = false;
    for (;;) {
        auto next = reader.next(kMaxSectionPayload);
        out.bytes = reader.bytes_read();
        if (!next)
            return refuse(next.error().text());
        if (!*next)
            break;
        out.sections.push_back(std::move(**next));
        auto const& sec = out.sections.back();
        if (sec.name == "machine") {
            if (auto ok = m.check_snapshot_machine(SnapshotSection { sec.name, sec.version, sec.payload }); !ok)
                return refuse(ok.error().message);
            have_machine = true;
            kept.push_back(out.sections.size() - 1);
            continue;
        }
        if (!have_machine)
            return refuse(StateError { "machine", "missing from the start of the stream" }.text());
        if (sec.name == kRamPagesSection) {
            if (sec.version != 1)
                return refuse(StateError { sec.name, "unsupported version" }.text());
            Machine::PageDecoder decode;
            if (decoder)
                decode = [&](uint64_t spa, uint8_t kind, std::span<uint8_t const> data) {
                    return decoder->decode_page(m, spa, kind, data);
                };
            if (auto r = m.load_ram_pages(sec.payload, decode); !r)
                return refuse(r.error().message);
            continue;
        }
        if (decoder && decoder->claims(sec.name)) {
            if (auto ok = decoder->session_section(m, sec.name, sec.version, sec.payload); !ok)
                return refuse(StateError { sec.name, ok.error() }.text());
            continue;
        }
        kept.push_back(out.sections.size() - 1);
    }
    std::vector<SnapshotSection> views;
    for (size_t i : kept)
        views.push_back(SnapshotSection { out.sections[i].name, out.sections[i].version, out.sections[i].payload });
    if (auto r = m.load_live_state(views, reader.bytes_read()); !r)
        return refuse(r.error().message);
    out.state_loaded = true;
    if (decoder)
        if (auto r = decoder->finish(m); !r)
            return refuse(r.error());
    return {};
}

Received receive(Machine& m, std::span<uint8_t const> stream)
{
    Received out { {}, {}, 0, false };
    out.result = receive_into(m, stream, out);
    return out;
}

void check_stream(bool sev, bool es, std::span<uint8_t const> stream)
{
    auto m = incoming_machine(sev, es);
    auto got = receive(*m, stream);
    // SEVEMU_FUZZ_VERBOSE=1: what the target said (what a seed reaches).
    static bool const verbose = std::getenv("SEVEMU_FUZZ_VERBOSE") != nullptr;
    if (verbose)
        std::fprintf(stderr, "  %s target: %s\n", es ? "SEV-ES" : sev ? "SEV" : "plain",
            got.result ? "accepted" : ("refused: " + got.result.error()).c_str());
    if (!got.result) {
        FUZZ_CHECK(one_line(got.result.error()), "a refusal is one line: '%s'", got.result.error().c_str());
        // A refusal by the SEV decoder's finish (RECEIVE_FINISH, or a vCPU missing) comes after the
        // machine's own state loaded; its guest still never runs: the firmware context is not
        // RUNNING, and the target process ends (Migration::fail_incoming).
        FUZZ_CHECK(m->awaiting_snapshot() || (sev && got.state_loaded),
            "a refused stream leaves the machine awaiting one (its guest never runs)");
        if (sev)
            FUZZ_CHECK(m->sev()->state() != SevState::Running, "a refused SEV stream never makes the guest runnable");
    } else {
        FUZZ_CHECK(!m->awaiting_snapshot(), "an accepted stream restored the machine");
        SnapshotWriter w(kSnapshotStreamVersion);
        for (auto const& s : got.sections)
            w.add(s.name, s.version, s.payload);
        auto rebuilt = w.finish();
        FUZZ_CHECK(got.bytes <= stream.size() && rebuilt.size() == got.bytes
                && std::equal(rebuilt.begin(), rebuilt.end(), stream.begin()),
            "what the target read of an accepted stream is what SnapshotWriter writes for its sections");
        if (sev)
            FUZZ_CHECK(m->sev()->state() == SevState::Running, "an accepted SEV stream ends with the guest running (state %s)",
                std::string(sev_state_name(m->sev()->state())).c_str());
        if (es)
            for (size_t i = 0; i < m->sev()->vcpu_count(); ++i)
                FUZZ_CHECK(m->sev()->vcpu(i).sev_es() && m->sev()->vcpu(i).guest_state_protected(),
                    "an accepted SEV-ES stream left vCPU %zu's state unprotected", i);
    }
    // What the target does next: the guest runs from the state the stream gave (for SEV, the
    // "sev-vcpuN" VMCB save areas go into VMRUN), and whatever it does is an outcome, never a
    // crash; the offline comparison below is done on a copy taken first.
    std::optional<std::vector<uint8_t>> live_saved;
    if (got.result && !sev) {
        auto a = m->save_snapshot();
        FUZZ_CHECK(a.has_value(), "a received machine saves: %s", a ? "" : a.error().message.c_str());
        live_saved = std::move(*a);
    }
    if (got.result) {
        auto outcome = m->run();
        FUZZ_CHECK(outcome.message.find('\n') == std::string::npos, "a run's outcome is one line: '%s'", outcome.message.c_str());
    }
    if (sev)
        return;

    // The plain machine: the live receive and the offline load of the same bytes agree.
    // (The live target stops reading at the end record; the offline load refuses anything after it.)
    auto offline = incoming_machine(false);
    auto loaded = offline->load_snapshot(got.result ? stream.first(got.bytes) : stream);
    if (got.result) {
        FUZZ_CHECK(loaded.has_value(), "the offline load accepts what the live receive accepted: %s",
            loaded ? "" : loaded.error().message.c_str());
        auto b = offline->save_snapshot();
        FUZZ_CHECK(b.has_value() && *live_saved == *b, "the live receive and the offline load give the same machine");
    } else if (loaded) {
        auto parsed = parse_snapshot(stream);
        // A live stream: version 2, "machine" first, RAM as its layout (version 2) and pages.
        bool live_shaped = parsed && !parsed->empty() && (*parsed)[0].name == "machine" && stream.size() >= 20
            && stream[16] == kSnapshotStreamVersion && stream[17] == 0 && stream[18] == 0 && stream[19] == 0
            && std::all_of(parsed->begin(), parsed->end(), [](SnapshotSection const& s) {
                   return s.name != "ram" || s.version == mmu::MemoryController::kDramLayoutStateVersion;
               });
        FUZZ_CHECK(!live_shaped, "the live receive refused a version-2 stream the offline load accepts: %s",
            got.result.error().c_str());
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size)
{
    if (size < 1)
        return 0;
    bool sev = data[0] & 1, es = sev && (data[0] & 2);
    std::span<uint8_t const> stream(data + 1, size - 1);
    check_stream(sev, es, stream);
    auto sealed = sevemu::fuzz::reseal(stream, true);
    if (!sealed.empty() && !(sealed.size() == stream.size() && std::equal(sealed.begin(), sealed.end(), stream.begin())))
        check_stream(sev, es, sealed);
    return 0;
}
