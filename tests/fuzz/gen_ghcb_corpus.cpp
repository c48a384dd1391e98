// sevemu fuzzing — writes the seed corpus of the `ghcb` harness (fuzz_ghcb.cpp, whose comment gives
// the input format): one valid request of each kind the hypervisor layer serves, as a Linux
// SEV-ES guest makes it (arch/x86/kernel/sev-shared.c and sev.c: the GHCB MSR protocol's SEV
// information, CPUID, AP reset hold, hypervisor features and termination requests; NAE events
// for IOIO incl. string I/O through a scratch area in the GHCB's shared buffer or in guest
// memory, MMIO read/write, CPUID, RDMSR/WRMSR, RDTSC(P), VMMCALL, DR7, WBINVD/INVD, RDPMC,
// MONITOR/MWAIT, NMI complete, AP HLT loop, AP jump table, hypervisor features, termination,
// unsupported event), with the GHCB layout of Linux's struct ghcb (emulator/vmm/ghcb.h) and the
// exit codes of the APM (vol 2 appendix C) and the GHCB specification 56421 (table 7).
//
//   build/tests/fuzz/fuzz-gen-ghcb-corpus tests/fuzz/corpus/ghcb
#include "seed_writer.h"
#include "emulator/vmm/ghcb.h"
#include "emulator/vmm/kvm_sev.h"
#include "emulator/vmm/vcpu.h" // KVM_HC_MAP_GPA_RANGE

#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

using namespace sevemu::vmm;
using namespace sevemu::cpu::svm;
namespace fs = std::filesystem;

namespace {

using Bytes = std::vector<uint8_t>;
fs::path g_out;

constexpr uint64_t kGhcb = 0x3000;           // the GHCB page of the seeds (guest RAM is 0..0x1FFFF)
constexpr uint64_t kSharedBuffer = kGhcb + kGhcbSharedBufferOffset;
constexpr uint64_t kScratchOutside = 0x8000; // a scratch area in guest memory, outside the GHCB
constexpr uint64_t kIoioIn = 1u << 0, kIoioStr = 1u << 2, kIoioRep = 1u << 3, kIoioData8 = 1u << 4,
                   kIoioData16 = 1u << 5, kIoioData32 = 1u << 6, kIoioAddr64 = 1u << 9; // APM vol 2 §15.10.2

using W = sevemu::fuzz::SeedWriter;

Bytes le(uint64_t v, size_t n)
{
    Bytes b(n);
    for (size_t i = 0; i < n; ++i)
        b[i] = uint8_t(v >> (8 * i));
    return b;
}

// One request: the GHCB MSR and the patches of the GHCB page.
struct Request {
    uint64_t msr;
    std::vector<std::pair<uint16_t, Bytes>> patches;
    uint8_t answer { 0x5A };
};

Request msr_request(uint64_t msr) { return Request { msr, {}, 0x5A }; }

// A NAE event as Linux's sev_es_ghcb_hv_call() makes it: the fields it gives marked valid (and
// only those: vc_ghcb_invalidate() cleared the bitmap), SW_EXITCODE/INFO1/INFO2, the protocol
// version it negotiated and usage 0, the GHCB's GPA in the MSR.
struct Nae {
    uint64_t exit_code, info1, info2;
    std::vector<std::pair<size_t, uint64_t>> fields; // save-area fields: offset, value
    std::optional<uint64_t> scratch;
    std::optional<uint8_t> cpl;
    Bytes shared;                                    // written at the shared buffer
    uint16_t version { 1 };
};

Request nae(Nae const& n)
{
    uint8_t bitmap[16] {};
    auto mark = [&](size_t off) { bitmap[ghcb_valid_bit(off) / 8] |= uint8_t(1u << (ghcb_valid_bit(off) % 8)); };
    Request r { kGhcb, {}, 0x5A };
    for (auto [off, value] : n.fields) {
        r.patches.push_back({ uint16_t(off), le(value, 8) });
        mark(off);
    }
    if (n.cpl) {
        r.patches.push_back({ uint16_t(offsetof(Ghcb, cpl)), Bytes { *n.cpl } });
        mark(offsetof(Ghcb, cpl));
    }
    if (n.scratch) {
        r.patches.push_back({ uint16_t(offsetof(Ghcb, sw_scratch)), le(*n.scratch, 8) });
        mark(offsetof(Ghcb, sw_scratch));
    }
    Bytes exit = le(n.exit_code, 8), i1 = le(n.info1, 8), i2 = le(n.info2, 8);
    exit.insert(exit.end(), i1.begin(), i1.end());
    exit.insert(exit.end(), i2.begin(), i2.end());
    r.patches.push_back({ uint16_t(offsetof(Ghcb, sw_exit_code)), exit });
    mark(offsetof(Ghcb, sw_exit_code));
    mark(offsetof(Ghcb, sw_exit_info_1));
    mark(offsetof(Ghcb, sw_exit_info_2));
    r.patches.push_back({ uint16_t(offsetof(Ghcb, valid_bitmap)), Bytes(bitmap, bitmap + 16) });
    if (!n.shared.empty())
        r.patches.push_back({ uint16_t(kGhcbSharedBufferOffset), n.shared });
    Bytes tail = le(n.version, 2), usage = le(0, 4);
    tail.insert(tail.end(), usage.begin(), usage.end());
    r.patches.push_back({ uint16_t(offsetof(Ghcb, protocol_version)), tail });
    return r;
}

constexpr size_t RAX = offsetof(Ghcb, rax), RBX = offsetof(Ghcb, rbx), RCX = offsetof(Ghcb, rcx), RDX = offsetof(Ghcb, rdx),
                 XCR0 = offsetof(Ghcb, xcr0);

// Scene 0: KVM_SEV_ES_INIT (GHCB protocol 1); 1: KVM_SEV_INIT2 (protocol 2).
void put(std::string const& name, uint8_t scene, std::vector<Request> const& requests)
{
    W w;
    w.u8(scene);
    for (auto const& r : requests) {
        w.u64(r.msr);
        w.u8(uint8_t(r.patches.size()));
        for (auto const& [off, bytes] : r.patches) {
            if (bytes.size() > 255 || r.patches.size() > 16) {
                std::fprintf(stderr, "fuzz-gen-ghcb-corpus: %s: a patch too long for the format\n", name.c_str());
                std::exit(1);
            }
            w.u16(off).u8(uint8_t(bytes.size()));
            w.b.insert(w.b.end(), bytes.begin(), bytes.end());
        }
        w.u8(r.answer);
    }
    fs::create_directories(g_out);
    std::ofstream out(g_out / name, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<char const*>(w.b.data()), std::streamsize(w.b.size()));
    std::printf("%s: %zu bytes, %zu requests\n", (g_out / name).c_str(), w.b.size(), requests.size());
}

Bytes text(std::string const& s) { return Bytes(s.begin(), s.end()); }

} // namespace

int main(int argc, char** argv)
{
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s CORPUS_DIR (tests/fuzz/corpus/ghcb)\n", argv[0]);
        return 2;
    }
    g_out = argv[1];

    // --- The GHCB MSR protocol (GHCB spec §2.3.1; Linux sev-common.h GHCB_MSR_*).
    put("msr-sev-info", 0, { msr_request(ghcb_msr::SEV_INFO_REQ) });
    // CPUID 8000_001F, each register (GHCBData[31:30]), as startup32_vc_handler asks.
    put("msr-cpuid", 1, { msr_request((0x8000001Full << 32) | (0u << 30) | ghcb_msr::CPUID_REQ),
                            msr_request((0x8000001Full << 32) | (1u << 30) | ghcb_msr::CPUID_REQ),
                            msr_request((0x8000001Full << 32) | (2u << 30) | ghcb_msr::CPUID_REQ),
                            msr_request((0x8000001Full << 32) | (3u << 30) | ghcb_msr::CPUID_REQ) });
    put("msr-ap-reset-hold", 0, { msr_request(ghcb_msr::AP_RESET_HOLD_REQ) });
    put("msr-hv-features", 1, { msr_request(ghcb_msr::HV_FT_REQ) });
    put("msr-register-ghcb", 1, { msr_request((kGhcb >> 12 << 12) | ghcb_msr::REG_GPA_REQ) });
    // Termination: reason set 1 (GHCB), code 0x23 (Linux's GHCB_SEV_ES_PROT_UNSUPPORTED set 0 code 1).
    put("msr-terminate", 0, { msr_request(ghcb_msr::TERM_REQ | (1ull << 12) | (0x23ull << 16)) });
    put("msr-unknown", 0, { msr_request(0xABC) });

    // --- NAE events through the GHCB page (GHCB spec §4.1; Linux arch/x86/kernel/sev*.c).
    uint64_t port80 = 0x80ull << 16, port71 = 0x71ull << 16, port_e9 = 0xE9ull << 16, port60 = 0x60ull << 16;
    put("nae-ioio-out", 0, { nae({ exitcode::SVM_EXIT_IOIO, port80 | kIoioData32 | kIoioAddr64, 0, { { RAX, 0xC0FFEE11 } } }) });
    put("nae-ioio-in", 1, { nae({ exitcode::SVM_EXIT_IOIO, port71 | kIoioIn | kIoioData8 | kIoioAddr64, 0, {} }) });
    put("nae-ioio-outs-ghcb", 0,
        { nae({ exitcode::SVM_EXIT_IOIO, port_e9 | kIoioStr | kIoioRep | kIoioData8 | kIoioAddr64, 5, {}, kSharedBuffer, {},
            text("hello") }) });
    put("nae-ioio-ins-memory", 1,
        { nae({ exitcode::SVM_EXIT_IOIO, port60 | kIoioIn | kIoioStr | kIoioRep | kIoioData16 | kIoioAddr64, 4, {}, kScratchOutside }) });
    put("nae-mmio-read", 0, { nae({ vmgexit::MMIO_READ, 0xFEE00030, 4, {}, kSharedBuffer }) });
    put("nae-mmio-write", 1, { nae({ vmgexit::MMIO_WRITE, 0xFEE000B0, 4, {}, kSharedBuffer, {}, Bytes { 0, 0, 0, 0 } }) });
    put("nae-mmio-read-long", 0, { nae({ vmgexit::MMIO_READ, 0xFEB00000, 24, {}, kScratchOutside + 0x10 }) });
    put("nae-cpuid", 0, { nae({ exitcode::SVM_EXIT_CPUID, 0, 0, { { RAX, 0x8000001F }, { RCX, 0 } } }) });
    put("nae-cpuid-xsave", 1, { nae({ exitcode::SVM_EXIT_CPUID, 0, 0, { { RAX, 0xD }, { RCX, 0 }, { XCR0, 7 } } }) });
    put("nae-rdmsr", 0, { nae({ exitcode::SVM_EXIT_MSR, 0, 0, { { RCX, 0x1B } } }) });
    // WRMSR MSR_KVM_MIGRATION_CONTROL (Linux kvm_init_platform), then a RDMSR of an MSR KVM does
    // not have: #GP in the reply (SW_EXITINFO1 = 1).
    put("nae-wrmsr", 1, { nae({ exitcode::SVM_EXIT_MSR, 1, 0, { { RCX, 0x4b564d08 }, { RAX, 1 }, { RDX, 0 } } }),
                          nae({ exitcode::SVM_EXIT_MSR, 0, 0, { { RCX, 0xC0011234 } } }) });
    put("nae-rdtsc", 0, { nae({ exitcode::SVM_EXIT_RDTSC, 0, 0, {} }), nae({ exitcode::SVM_EXIT_RDTSCP, 0, 0, {} }) });
    // KVM_HC_MAP_GPA_RANGE (gpa, pages, attributes) from CPL 0: a page shared, then private again
    // (Linux kvm_sev_hc_page_enc_status, through kvm_sev_es_hcall_prepare).
    put("nae-vmmcall-map-gpa-range", 1,
        { nae({ exitcode::SVM_EXIT_VMMCALL, 0, 0, { { RAX, KVM_HC_MAP_GPA_RANGE }, { RBX, 0x8000 }, { RCX, 2 }, { RDX, 0 } }, {}, 0 }),
          nae({ exitcode::SVM_EXIT_VMMCALL, 0, 0,
              { { RAX, KVM_HC_MAP_GPA_RANGE }, { RBX, 0x9000 }, { RCX, 1 }, { RDX, KVM_MAP_GPA_RANGE_ENCRYPTED } }, {}, 0 }) });
    put("nae-vmmcall-other", 0,
        { nae({ exitcode::SVM_EXIT_VMMCALL, 0, 0, { { RAX, 9 }, { RBX, 0 } }, {}, 0 }),
          nae({ exitcode::SVM_EXIT_VMMCALL, 0, 0, { { RAX, KVM_HC_MAP_GPA_RANGE }, { RBX, 0x8000 }, { RCX, 1 } }, {}, 3 }) });
    put("nae-dr7", 0, { nae({ exitcode::SVM_EXIT_READ_DR0 + 7, 0, 0, {} }),
                        nae({ exitcode::SVM_EXIT_WRITE_DR0 + 7, 0, 0, { { RAX, 0x400 } } }) });
    put("nae-wbinvd", 1, { nae({ exitcode::SVM_EXIT_WBINVD, 0, 0, {} }), nae({ exitcode::SVM_EXIT_INVD, 0, 0, {} }) });
    put("nae-rdpmc", 0, { nae({ exitcode::SVM_EXIT_RDPMC, 0, 0, { { RCX, 0 } } }) });
    put("nae-monitor-mwait", 1, { nae({ exitcode::SVM_EXIT_MONITOR, 0, 0, { { RAX, 0x5000 }, { RCX, 0 }, { RDX, 0 } } }),
                                  nae({ exitcode::SVM_EXIT_MWAIT, 0, 0, { { RAX, 0 }, { RCX, 0 } } }) });
    put("nae-nmi-complete", 0, { nae({ vmgexit::NMI_COMPLETE, 0, 0, {} }) });
    put("nae-ap-hlt-loop", 1, { nae({ vmgexit::AP_HLT_LOOP, 0, 0, {} }) });
    // The AP jump table: SET (SW_EXITINFO1 0, the GPA in SW_EXITINFO2), then GET (1).
    put("nae-ap-jump-table", 0, { nae({ vmgexit::AP_JUMP_TABLE, 0, 0xFE000, {} }), nae({ vmgexit::AP_JUMP_TABLE, 1, 0, {} }) });
    put("nae-hv-features", 1, { nae({ vmgexit::HV_FEATURES, 0, 0, {}, {}, {}, {}, 2 }) });
    put("nae-terminate", 0, { nae({ vmgexit::TERM_REQUEST, (0x23u << 4) | 1, 0, {} }) });
    put("nae-unsupported-event", 1, { nae({ vmgexit::UNSUPPORTED_EVENT, exitcode::SVM_EXIT_VMGEXIT, 0, {} }) });

    // --- What a guest's early boot looks like: the MSR protocol, then the GHCB.
    put("sequence-boot", 0,
        { msr_request(ghcb_msr::SEV_INFO_REQ), msr_request((0x8000001Full << 32) | (1u << 30) | ghcb_msr::CPUID_REQ),
            nae({ exitcode::SVM_EXIT_CPUID, 0, 0, { { RAX, 0 }, { RCX, 0 } } }),
            nae({ exitcode::SVM_EXIT_IOIO, (0x3F8ull << 16) | kIoioData8 | kIoioAddr64, 0, { { RAX, 'A' } } }),
            nae({ exitcode::SVM_EXIT_VMMCALL, 0, 0, { { RAX, KVM_HC_MAP_GPA_RANGE }, { RBX, kGhcb }, { RCX, 1 }, { RDX, 0 } }, {}, 0 }),
            nae({ exitcode::SVM_EXIT_MSR, 1, 0, { { RCX, 0x4b564d08 }, { RAX, 1 }, { RDX, 0 } } }) });
    return 0;
}
