// Random byte sequences as code, in every mode, stepped one instruction (or event) at a time.
// Each run must end in an architectural outcome (a guest exception handled by the stubs, a triple
// fault, HLT, a stop request or the instruction limit) without crashing the emulator (STYLE.md
// rule 3), and what the random code did must be architecturally possible:
// - memory the guest cannot reach stays untouched: the modes with paging (16/32-bit protected,
//   long and compatibility mode) map only the first 2 MiB, from page tables placed above them
//   where no guest access can reach; real and virtual-8086 mode reach at most FFFF:FFFF =
//   0x10FFEF. All DRAM above, 14 MiB, holds a pattern that is compared after every run (its
//   first page) and after every mode (all of it);
// - after every step the state is one the architecture allows (AMD64 APM vol 2): RFLAGS
//   reserved bits, CR0 (PG needs PE, NW needs CD, ET reads 1), EFER (reserved bits zero, LMA =
//   LME && PG), CR4.PAE in long mode and CR4.PCIDE only there, a canonical RIP in 64-bit mode
//   and a 32-bit one elsewhere, segment state that fits the mode (V86: base = selector * 16,
//   limit FFFF, DPL 3; 64-bit CS: D clear; protected mode: SS.DPL = CS.RPL = CPL);
// - each exception the stubs receive has the frame of a fault at the instruction that was
//   executing: that instruction's CS:RIP, the system flags it ran with, the stack pointer the
//   delivery implies, an error code exactly for the vectors that push one, in its format
//   (#PF: P clear for an address outside the mapping, U/S = CPL 3, no reserved-bit violation).
// A run whose code changes CR0, CR3, CR4, EFER or TR (MOV CRn, WRMSR, a task switch) may map
// more memory legitimately: it is counted, the memory check is skipped for it and the pattern
// rewritten.
#include "tests/cpu/harness.h"

#include <array>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

namespace {

// SEVEMU_FUZZ_RUNS overrides the number of random programs per mode (default 2000).
int runs()
{
    char const* e = std::getenv("SEVEMU_FUZZ_RUNS");
    return e ? std::atoi(e) : 2000;
}

constexpr uint64_t kMapped = 2ull << 20;           // guest-reachable physical memory in paged modes
constexpr uint64_t kTables = kMapped;               // the fuzz page tables: just above, out of reach
constexpr uint64_t kRealTop = 0x110000;             // FFFF:FFFF + 1, rounded to a page
constexpr uint64_t kDram = 16ull << 20;
constexpr int kSteps = 3000;                        // instructions and events per program

uint8_t pattern_byte(uint64_t pa) { return uint8_t((pa * 0x9E3779B1u) >> 13) ^ uint8_t(pa >> 20); }

// One slot per StopReason (VmExit is the last enumerator, cpu/cpu.h).
constexpr size_t kStopReasonCount = size_t(StopReason::VmExit) + 1;

bool canonical(uint64_t v) { return uint64_t(int64_t(v << 16) >> 16) == v; }
bool has_error_code(unsigned v) { return v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30; }

struct Fuzzer {
    Machine m;
    Mode mode;
    bool paged;
    uint64_t check_lo; // [check_lo, kDram) must keep the pattern
    std::string first_failure;
    int failures = 0;
    int translation_changes = 0;
    int frames_checked = 0;

    explicit Fuzzer(Mode md)
        : m(CpuModel::Milan, kDram)
        , mode(md)
        , paged(md != Mode::Real && md != Mode::V86)
    {
        check_lo = paged ? kTables + 0x4000 : kRealTop;
        write_pattern();
    }

    void fail(std::string const& what)
    {
        if (failures++ == 0) first_failure = what;
    }

    void write_pattern()
    {
        std::vector<uint8_t> buf(kDram - check_lo);
        for (uint64_t k = 0; k < buf.size(); ++k) buf[k] = pattern_byte(check_lo + k);
        m.write(check_lo, buf);
    }
    // The first byte in [lo, hi) that differs from the pattern, or hi.
    uint64_t pattern_mismatch(uint64_t lo, uint64_t hi)
    {
        std::vector<uint8_t> buf(hi - lo);
        if (!m.mc->read(Spa(lo), std::span<uint8_t>(buf), mmu::KeyId::none()).has_value()) return lo;
        for (uint64_t k = 0; k < buf.size(); ++k)
            if (buf[k] != pattern_byte(lo + k)) return lo + k;
        return hi;
    }

    // Identity maps of [0, kMapped) only: long mode (PML4, PDPT, PD, PT) or 32-bit paging (PD, PT).
    void build_tables()
    {
        std::vector<uint8_t> zero(0x4000);
        m.write(kTables, zero);
        bool lm = mode == Mode::Long64 || mode == Mode::Compat32 || mode == Mode::Compat16;
        if (lm) {
            m.put<uint64_t>(kTables, (kTables + 0x1000) | 7);
            m.put<uint64_t>(kTables + 0x1000, (kTables + 0x2000) | 7);
            m.put<uint64_t>(kTables + 0x2000, (kTables + 0x3000) | 7);
            std::vector<uint64_t> pt(512);
            for (uint64_t k = 0; k < 512; ++k) pt[k] = (k << 12) | 7;
            m.write(kTables + 0x3000, pt.data(), 4096);
        } else {
            m.put<uint32_t>(kTables, uint32_t(kTables + 0x1000) | 7);
            std::vector<uint32_t> pt(1024);
            for (uint32_t k = 0; k < 512; ++k) pt[k] = (k << 12) | 7;
            m.write(kTables + 0x1000, pt.data(), 4096);
        }
    }

    void check_state(CpuState const& s, int step)
    {
        auto bad = [&](std::string const& why) {
            std::ostringstream o;
            o << "step " << step << ": " << why << std::hex << " (rip " << s.rip << " cs " << s.seg[CS].selector << "/"
              << s.seg[CS].attr << " cr0 " << s.cr0 << " cr4 " << s.cr4 << " efer " << s.efer << " rflags " << s.rflags << ")";
            fail(o.str());
        };
        if (!(s.rflags & 2) || (s.rflags & (0x8 | 0x20 | 0x8000 | ~0x3FFFFFull))) bad("RFLAGS reserved bits");
        if (s.cr0 >> 32) bad("CR0[63:32] set");
        if ((s.cr0 & cr0::PG) && !(s.cr0 & cr0::PE)) bad("CR0.PG without PE");
        if ((s.cr0 & cr0::NW) && !(s.cr0 & cr0::CD)) bad("CR0.NW without CD");
        if (!(s.cr0 & cr0::ET)) bad("CR0.ET clear (reads as 1 on AMD64)");
        uint64_t efer_defined = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME | efer::LMSLE | efer::FFXSR | efer::TCE;
        if (s.efer & ~efer_defined) bad("EFER reserved bits");
        bool lma = s.efer & efer::LMA;
        if (lma != ((s.efer & efer::LME) && (s.cr0 & cr0::PG))) bad("EFER.LMA != LME && PG");
        if (lma && !(s.cr4 & cr4::PAE)) bad("long mode without CR4.PAE");
        if (s.cr4 >> 24) bad("CR4[63:24] set (reserved on every AMD64 model sevemu has)");
        if (s.cr8 > 15) bad("CR8 above 15");
        if (lma && (s.cr3 >> 52)) bad("CR3[63:52] set in long mode");
        if ((s.cr4 & cr4::PCIDE) && !lma) bad("CR4.PCIDE outside long mode");
        bool vm = s.rflags & rflags::VM;
        if (vm && lma) bad("RFLAGS.VM in long mode");
        bool code64 = lma && s.seg[CS].long_mode();
        if (code64) {
            if (!canonical(s.rip)) bad("non-canonical RIP in 64-bit mode");
            if (s.seg[CS].big()) bad("64-bit CS with D set");
        } else if (s.rip >> 32) {
            bad("RIP above 4 GiB outside 64-bit mode");
        }
        if (vm) {
            for (unsigned k : { ES, CS, SS, DS, FS, GS }) {
                Segment const& g = s.seg[k];
                if (g.base != uint64_t(g.selector) << 4 || g.limit != 0xFFFF || g.dpl() != 3) bad("V86 segment not real-mode-like");
            }
        } else if (s.cr0 & cr0::PE) {
            Segment const& cs = s.seg[CS];
            Segment const& ss = s.seg[SS];
            if (!cs.present() || !cs.code()) bad("CS not a present code segment");
            bool null_ss = (ss.selector & ~3) == 0;
            if (!null_ss && ss.dpl() != (cs.selector & 3)) bad("SS.DPL != CPL");
            if (!null_ss && (!ss.present() || ss.code())) bad("SS not a present data segment");
        }
    }

    // The frame the stub received, against the instruction that was executing (state p).
    void check_frame(CpuState const& p, CpuState const& s, unsigned v, int step)
    {
        std::array<uint64_t, 6> f {};
        std::array<uint8_t, 16> b {};
        auto bad = [&](std::string const& why) {
            std::ostringstream o;
            o << "step " << step << ": vector " << v << ": " << why << std::hex << " (faulting cs:rip " << p.seg[CS].selector << ":"
              << p.rip << " rsp " << p.gpr[RSP] << " -> " << s.gpr[RSP] << " frame " << f[0] << " " << f[1] << " " << f[2] << " " << f[3]
              << " " << f[4] << " " << f[5] << " bytes " << unsigned(b[0]) << " " << unsigned(b[1]) << " " << unsigned(b[2]) << " " << unsigned(b[3]) << " cr2 " << s.cr2 << ")";
            fail(o.str());
        };
        // Only faults: the instruction bytes decide. INT n/INT3/INTO/INT1 (traps), SYSRET (AMD
        // delivers its #GP after the switch to CPL 3), a single-step trap and #DF/NMI/#MC are
        // left out.
        if ((p.rflags & rflags::TF) || v == 1 || v == 2 || v == 8 || v == 18) return;
        uint64_t lin = p.seg[CS].base + p.rip;
        if (lin + 16 > kMapped) return;
        if (!m.mc->read(Spa(lin), std::span<uint8_t>(b), mmu::KeyId::none()).has_value()) return;
        size_t k = 0;
        bool code64 = (p.efer & efer::LMA) && p.seg[CS].long_mode();
        while (k < 15 && (b[k] == 0x26 || b[k] == 0x2E || b[k] == 0x36 || b[k] == 0x3E || b[k] == 0x64 || b[k] == 0x65 || b[k] == 0x66
                   || b[k] == 0x67 || b[k] == 0xF0 || b[k] == 0xF2 || b[k] == 0xF3 || (code64 && (b[k] & 0xF0) == 0x40)))
            ++k;
        uint8_t op = b[k];
        if (op == 0xCD || op == 0xCC || op == 0xCE || op == 0xF1 || (op == 0x0F && k + 1 < b.size() && b[k + 1] == 0x07)) return;
        bool lm = s.efer & efer::LMA;
        unsigned w = lm ? 8 : 4;
        unsigned cpl_from = (p.rflags & rflags::VM) ? 3 : (p.seg[CS].selector & 3);
        bool stack_switch = lm || cpl_from != 0;
        uint64_t sp = s.seg[SS].base + (lm ? s.gpr[RSP] : uint32_t(s.gpr[RSP]));
        for (unsigned i = 0; i < 6; ++i) {
            uint64_t q = 0;
            if (sp + w * (i + 1) <= kMapped)
                (void)m.mc->read(Spa(sp + w * i), std::span<uint8_t>(reinterpret_cast<uint8_t*>(&q), w), mmu::KeyId::none());
            f[i] = q;
        }
        ++frames_checked;
        unsigned e = has_error_code(v) ? 1 : 0;
        uint64_t rip_mask = lm ? ~0ull : 0xFFFFFFFFull;
        if (f[e] != (p.rip & rip_mask)) bad("pushed RIP " + std::to_string(f[e]) + " is not the faulting instruction's");
        if ((f[e + 1] & 0xFFFF) != p.seg[CS].selector) bad("pushed CS is not the faulting instruction's");
        uint64_t sys = rflags::TF | rflags::IF | rflags::DF | rflags::IOPL | rflags::NT | rflags::VM | rflags::AC;
        if ((f[e + 2] & sys) != (p.rflags & sys)) bad("pushed RFLAGS system bits differ from the faulting instruction's");
        if (stack_switch) {
            uint64_t old_sp = lm ? p.gpr[RSP] : uint32_t(p.gpr[RSP]);
            if (f[e + 3] != old_sp) bad("pushed RSP is not the faulting instruction's");
            if ((f[e + 4] & 0xFFFF) != p.seg[SS].selector) bad("pushed SS is not the faulting instruction's");
        }
        if (lm && cpl_from == 0) {
            // Same privilege in long mode: the frame sits below the 16-byte-aligned old RSP.
            if (s.gpr[RSP] != ((p.gpr[RSP] & ~15ull) - (5 + e) * 8)) bad("RSP after delivery does not fit the frame");
        } else if (!lm && cpl_from == 0) {
            if (uint32_t(s.gpr[RSP]) != uint32_t(p.gpr[RSP] - (3 + e) * 4)) bad("ESP after delivery does not fit the frame");
        }
        if (e) {
            uint64_t ec = f[0];
            if (v == 14) {
                uint64_t cr2 = s.cr2;
                bool outside = paged && (cr2 >= kMapped && (cr2 >> 32 == 0 || !lm || canonical(cr2)));
                if (outside && (ec & 1)) bad("#PF with P set for an address that is not mapped");
                if (((ec >> 2) & 1) != (cpl_from == 3)) bad("#PF U/S differs from the CPL");
                if (ec & 8) bad("#PF reserved-bit violation with no reserved bit set in the tables");
                if (ec & ~0x1Full) bad("#PF error code has unexpected bits");
            } else if (v == 17) {
                if (ec != 0) bad("#AC error code not zero");
            } else if (ec > 0xFFFF) {
                bad("selector error code above 16 bits");
            }
        }
    }

    void run_all(uint64_t seed, int n)
    {
        std::mt19937_64 rng(seed);
        std::array<int, kStopReasonCount> outcomes {};
        for (int k = 0; k < n; ++k) {
            std::vector<uint8_t> code(4096);
            for (auto& b : code)
                b = uint8_t(rng());
            // Bias toward valid-looking code now and then: ModRM-heavy ALU and MOV opcodes.
            if (k % 3 == 0)
                for (size_t i = 0; i < code.size(); i += 3)
                    code[i] = uint8_t(0x00 + (rng() % 0x40)) | (rng() % 2 ? 0x88 & 0xFF : 0);
            m.start(mode, code);
            CpuState s = m.cpu->state();
            for (int g = 0; g < 16; ++g)
                if (g != RSP) s.gpr[g] = (rng() % 4 == 0) ? rng() : (rng() % 0x100000);
            if (mode == Mode::V86 && rng() % 2)
                s.rflags |= 3u << 12; // IOPL 3: CLI/STI/PUSHF/POPF/INT n/IRET execute
            if (paged) {
                if (k == 0) build_tables();
                s.cr3 = kTables;
                s.cr0 |= cr0::PG;
            }
            m.cpu->set_state(s);
            CpuState const initial = m.cpu->state();
            CpuState p = initial;
            bool changed = false;
            RunResult r { StopReason::InstructionLimit, 0 };
            uint64_t exceptions = m.cpu->stats().exceptions;
            for (int step = 0; step < kSteps; ++step) {
                r = m.run(1);
                CpuState cur = m.cpu->state();
                check_state(cur, step);
                if (cur.cr0 != initial.cr0 || cur.cr3 != initial.cr3 || cur.cr4 != initial.cr4 || cur.efer != initial.efer
                    || cur.tr.selector != initial.tr.selector || cur.tr.base != initial.tr.base)
                    changed = true;
                uint64_t ex = m.cpu->stats().exceptions;
                // One exception delivered in this step, landing on a stub entry: its frame.
                uint64_t lin = cur.seg[CS].base + cur.rip;
                if (mode != Mode::Real && !changed && ex == exceptions + 1 && lin >= kStubs && lin < kStubs + 16 * 256
                    && (lin - kStubs) % 16 == 0 && !(p.seg[CS].base + p.rip >= kStubs && p.seg[CS].base + p.rip < kStubs + 16 * 256))
                    check_frame(p, cur, unsigned((lin - kStubs) / 16), step);
                exceptions = ex;
                p = cur;
                if (r.reason != StopReason::InstructionLimit) break;
            }
            outcomes[size_t(r.reason)]++;
            if (changed) {
                // A run that moved CR3 (or paging) may have written the out-of-reach tables too:
                // the next programs get fresh ones, as the first did.
                ++translation_changes;
                write_pattern();
                if (paged)
                    build_tables();
            } else if (uint64_t at = pattern_mismatch(check_lo, check_lo + 4096); at != check_lo + 4096) {
                std::ostringstream o;
                o << "program " << k << " wrote physical " << std::hex << at << ", outside the guest's reach";
                fail(o.str());
                write_pattern();
            }
        }
        uint64_t at = pattern_mismatch(check_lo, kDram);
        INFO("first byte changed outside the guest's reach: " << std::hex << at);
        CHECK(at == kDram);
        std::ostringstream o;
        for (size_t k = 0; k < kStopReasonCount; ++k)
            o << " " << stop_reason_name(StopReason(k)) << " " << outcomes[k];
        WARN("mode " << int(mode) << ":" << o.str() << "; frames checked " << frames_checked << ", runs that changed CR0/CR3/CR4/EFER/TR "
                     << translation_changes);
        // run() outside host_vmrun never ends in a #VMEXIT (cpu/cpu.h).
        CHECK(outcomes[size_t(StopReason::VmExit)] == 0);
        INFO(first_failure);
        CHECK(failures == 0);
        if (mode != Mode::Real) CHECK(frames_checked > 0); // real mode: no stubs, no frames
    }
};

void fuzz(Mode mode, uint64_t seed, int n)
{
    Fuzzer f(mode);
    f.run_all(seed, n);
}

} // namespace

TEST_CASE("fuzz: random code in real mode", "[cpu][fuzz]") { fuzz(Mode::Real, 1, runs()); }
TEST_CASE("fuzz: random code in 32-bit protected mode", "[cpu][fuzz]") { fuzz(Mode::Prot32, 2, runs()); }
TEST_CASE("fuzz: random code in 64-bit long mode", "[cpu][fuzz]") { fuzz(Mode::Long64, 3, runs()); }
TEST_CASE("fuzz: random code in 16-bit protected mode", "[cpu][fuzz]") { fuzz(Mode::Prot16, 4, runs()); }
TEST_CASE("fuzz: random code in compatibility mode, 32-bit CS", "[cpu][fuzz]") { fuzz(Mode::Compat32, 5, runs()); }
TEST_CASE("fuzz: random code in compatibility mode, 16-bit CS", "[cpu][fuzz]") { fuzz(Mode::Compat16, 6, runs()); }
TEST_CASE("fuzz: random code in virtual-8086 mode", "[cpu][fuzz]") { fuzz(Mode::V86, 7, runs()); }
