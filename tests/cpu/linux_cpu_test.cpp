// The CPU as Debian's Linux 6.1 reads it (../shared/spec/linux-boot.md §2, §4.3, §5): the CPUID a
// plain VM sees (hypervisor bit, the KVM leaves, leaf 8000_001F zero, SEV_STATUS 0 without #GP),
// the APIC IDs and vCPU count in CPUID and APIC_BASE, the local APIC's MSR hooks, RDRAND/RDSEED/
// RDPID, and the instructions the kernel uses without asking CPUID (§5.2).
//
// Known answers: the KVM signature and leaf layout from Linux arch/x86/include/uapi/asm/kvm_para.h
// and KVM's Documentation/virt/kvm/x86/cpuid.rst; the topology fields from APM vol 3 Appendix E
// (Fn0000_0001 EBX, Fn0000_000B, Fn8000_0008 ECX) and QEMU target/i386/cpu.c cpu_x86_cpuid; the
// NOP encodings from Linux arch/x86/include/asm/nops.h; RDRAND/RDSEED/RDPID flags and operand
// sizes from APM vol 3; POPCNT, TZCNT, XADD, CMPXCHG16B results from the host CPU.
#include "tests/cpu/harness.h"
#include "tests/cpu/host_cpu.h"
#include "cpu/entropy.h"

#include <cstdio>
#include <random>
#include <string>

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

namespace {

constexpr uint64_t kCF = 1, kPF = 4, kAF = 0x10, kZF = 0x40, kSF = 0x80, kOF = 0x800;
constexpr uint64_t kArith = kCF | kPF | kAF | kZF | kSF | kOF;
constexpr int kUD = 6, kGP = 13;

struct Ran {
    CpuState s;
    int vector;           // exception stub the CPU halted in, or -1
    uint64_t instructions; // retired, the final HLT included
};

// Runs `code; hlt` in 64-bit mode at CPL 0 after prep() adjusted the start state.
Ran run64(Machine& m, std::vector<uint8_t> code, std::function<void(CpuState&)> const& prep = {})
{
    code.push_back(0xF4);
    m.start(Mode::Long64, code);
    CpuState s = m.cpu->state();
    if (prep) prep(s);
    m.cpu->set_state(s);
    auto r = m.run(10000);
    return { m.cpu->state(), m.halted_vector(), r.instructions };
}

CpuidResult cpuid(Machine& m, uint32_t leaf, uint32_t sub = 0)
{
    auto r = run64(m, { 0x0F, 0xA2 }, [&](CpuState& s) { s.gpr[RAX] = leaf; s.gpr[RCX] = sub; });
    REQUIRE(r.vector == -1);
    CpuidResult c { uint32_t(r.s.gpr[RAX]), uint32_t(r.s.gpr[RBX]), uint32_t(r.s.gpr[RCX]), uint32_t(r.s.gpr[RDX]) };
    // The instruction and the API answer alike.
    auto api = m.cpu->cpuid(leaf, sub);
    CHECK((api.eax == c.eax && api.ebx == c.ebx && api.ecx == c.ecx && api.edx == c.edx));
    return c;
}

std::optional<uint64_t> rdmsr(Machine& m, uint32_t idx)
{
    auto r = run64(m, { 0x0F, 0x32 }, [&](CpuState& s) { s.gpr[RCX] = idx; });
    if (r.vector == kGP) return std::nullopt;
    REQUIRE(r.vector == -1);
    return (r.s.gpr[RDX] << 32) | uint32_t(r.s.gpr[RAX]);
}

bool wrmsr(Machine& m, uint32_t idx, uint64_t v)
{
    auto r = run64(m, { 0x0F, 0x30 }, [&](CpuState& s) {
        s.gpr[RCX] = idx;
        s.gpr[RAX] = uint32_t(v);
        s.gpr[RDX] = v >> 32;
    });
    REQUIRE((r.vector == -1 || r.vector == kGP));
    return r.vector == -1;
}

std::string regs_str(std::initializer_list<uint32_t> v)
{
    std::string s;
    for (uint32_t r : v) s.append(reinterpret_cast<char const*>(&r), 4);
    return s;
}

// A seeded source: the bytes 1, 2, 3, ... in order; or none at all.
struct CountingEntropy : EntropySource {
    uint8_t next { 1 };
    bool dry {};
    bool fill(std::span<uint8_t> out) override
    {
        if (dry) return false;
        for (auto& b : out) b = next++;
        return true;
    }
};

} // namespace

TEST_CASE("linux cpu: CPUID of a plain VM — hypervisor bit, KVM leaves, no SME/SEV", "[cpu][linux][cpuid]")
{
    Machine m; // the Cpu's default view: a plain VM on KVM
    auto l1 = cpuid(m, 1);
    CHECK((l1.ecx & (1u << 31)) != 0); // hypervisor
    CHECK((l1.ecx & (1u << 30)) != 0); // RDRAND (mandatory for SEV guests; same CPUID for both)
    CHECK((l1.ecx & (1u << 21)) == 0); // x2APIC: no LAPIC behind the hooks
    CHECK((l1.ecx & (1u << 24)) == 0); // TSC-deadline: likewise
    CHECK((l1.ecx & (1u << 3)) == 0);  // MONITOR/MWAIT: not implemented
    CHECK((l1.edx & (1u << 28)) == 0); // HTT: one vCPU
    CHECK(((l1.ebx >> 16) & 0xFF) == 1u);
    CHECK((l1.ebx >> 24) == 0u);
    // Linux's required features (verify_cpu.S, required-features.h) and NOPL/PGE/CLFLUSH.
    for (unsigned b : { 0u, 3u, 4u, 5u, 6u, 8u, 13u, 15u, 19u, 24u, 25u, 26u })
        CHECK((l1.edx & (1u << b)) != 0);

    auto kvm = cpuid(m, 0x40000000);
    CHECK(kvm.eax == 0x40000001u);
    CHECK(regs_str({ kvm.ebx, kvm.ecx, kvm.edx }) == std::string("KVMKVMKVM\0\0\0", 12));
    auto kf = cpuid(m, 0x40000001);
    CHECK((kf.eax | kf.ebx | kf.ecx | kf.edx) == 0u); // no paravirtual feature is implemented

    CHECK(cpuid(m, 0x80000000).eax >= 0x8000001Fu);
    auto me = cpuid(m, 0x8000001F);
    CHECK((me.eax | me.ebx | me.ecx | me.edx) == 0u);
    CHECK(rdmsr(m, 0xC0010131) == 0u); // SEV_STATUS: 0, never #GP (sme_enable has no IDT yet)
    CHECK(rdmsr(m, 0xC0010010).has_value()); // SYSCFG: read by early_detect_mem_encrypt
    CHECK(rdmsr(m, 0xC0010015).has_value()); // HWCR: read without _safe by init_amd

    CHECK((cpuid(m, 0x80000007).edx & (1u << 8)) != 0); // invariant TSC
    auto e1 = cpuid(m, 0x80000001);
    CHECK((e1.ecx & (1u << 22)) == 0); // no TOPOEXT ...
    auto t = cpuid(m, 0x8000001E);
    CHECK((t.eax | t.ebx | t.ecx | t.edx) == 0u); // ... so no 8000_001E
    for (unsigned b : { 11u, 20u, 26u, 27u, 29u })  // SYSCALL, NX, 1 GiB pages, RDTSCP, LM
        CHECK((e1.edx & (1u << b)) != 0);
    CHECK((e1.ecx & (1u << 8)) != 0); // 3DNowPrefetch: PREFETCHW (Linux forces it with LM anyway)
    auto l6 = cpuid(m, 6);
    CHECK((l6.eax | l6.ebx | l6.ecx | l6.edx) == 0u); // no power management (no ARAT without a LAPIC)
    auto l7 = cpuid(m, 7);
    CHECK((l7.ebx & (1u << 18)) != 0); // RDSEED
    CHECK((l7.ecx & (1u << 22)) != 0); // RDPID
    CHECK((l7.ebx & (1u << 10)) == 0); // no INVPCID
    CHECK((l7.ebx & (1u << 23)) == 0); // no CLFLUSHOPT
    CHECK((l7.ecx & (1u << 2)) == 0);  // no UMIP
    CHECK((l7.ecx & (1u << 16)) == 0); // no LA57
    auto sb = cpuid(m, 0x80000008);
    CHECK(sb.ebx == 0u); // no speculation-control MSRs advertised
}

TEST_CASE("linux cpu: XSAVE leaf 0xD agrees with what XSETBV accepts", "[cpu][linux][cpuid]")
{
    Machine m;
    auto d0 = cpuid(m, 0xD, 0), d1 = cpuid(m, 0xD, 1), d2 = cpuid(m, 0xD, 2);
    CHECK(d0.eax == 3u);           // x87 | SSE
    CHECK(d0.edx == 0u);
    CHECK(d0.ebx == 576u);          // legacy area + header
    CHECK(d0.ecx == 576u);
    CHECK(d1.eax == 1u);            // XSAVEOPT only: no XSAVES, hence no IA32_XSS
    CHECK((d2.eax | d2.ebx) == 0u); // no AVX component
    auto xsetbv = [&](uint32_t v) {
        return run64(m, { 0x0F, 0x01, 0xD1 }, [&](CpuState& s) {
            s.cr4 |= 1u << 18; // OSXSAVE
            s.gpr[RCX] = 0;
            s.gpr[RAX] = v;
            s.gpr[RDX] = 0;
        }).vector;
    };
    CHECK(xsetbv(3) == -1);
    CHECK(xsetbv(7) == kGP); // AVX state is not offered, and XSETBV agrees
    // XSAVES (0F C7 /5) and XSAVEC (0F C7 /4) are not advertised and not decoded.
    CHECK(run64(m, { 0x0F, 0xC7, 0x28 }, [](CpuState& s) { s.cr4 |= 1u << 18; s.gpr[RAX] = kData; }).vector == kUD);
}

TEST_CASE("linux cpu: the host view keeps the model's SEV facts and no hypervisor leaves", "[cpu][linux][cpuid]")
{
    Machine m;
    m.cpu->set_cpuid_view(CpuidView::Host);
    CHECK((cpuid(m, 1).ecx & (1u << 31)) == 0);
    auto kvm = cpuid(m, 0x40000000);
    CHECK((kvm.eax | kvm.ebx | kvm.ecx | kvm.edx) == 0u);
    auto me = cpuid(m, 0x8000001F);
    CHECK((me.eax & 0x3) == 0x3u); // SME, SEV
    CHECK((me.ebx & 0x3F) == cpu_model_info(CpuModel::Milan).c_bit);
    // The free function (what the VMM builds an SEV guest's table from) defaults to the host view.
    CHECK(cpuid_query(CpuModel::Milan, 0x8000001F, 0).eax == cpu_model_info(CpuModel::Milan).mem_encrypt_features);
    CHECK(cpuid_query(CpuModel::Milan, 0x8000001F, 0, { .view = CpuidView::Guest }).eax == 0u);
}

TEST_CASE("linux cpu: APIC IDs and the vCPU count agree in CPUID and APIC_BASE", "[cpu][linux][smp]")
{
    struct Case { uint32_t apic_id, n; };
    for (auto c : { Case { 0, 1 }, Case { 0, 2 }, Case { 1, 2 }, Case { 3, 4 }, Case { 5, 6 } }) {
        INFO("APIC ID " << c.apic_id << " of " << c.n);
        Machine m;
        m.cpu->set_topology(c.apic_id, c.n);
        CHECK(m.cpu->apic_id() == c.apic_id);
        CHECK(m.cpu->vcpu_count() == c.n);
        auto l1 = cpuid(m, 1);
        CHECK((l1.ebx >> 24) == c.apic_id);
        CHECK(((l1.ebx >> 16) & 0xFF) == c.n);
        CHECK(((l1.edx >> 28) & 1) == (c.n > 1 ? 1u : 0u)); // HTT: the count is meaningful
        uint32_t bits = 0;
        while ((1u << bits) < c.n) ++bits;
        auto b0 = cpuid(m, 0xB, 0), b1 = cpuid(m, 0xB, 1), b2 = cpuid(m, 0xB, 2);
        CHECK(b0.edx == c.apic_id);
        CHECK(b1.edx == c.apic_id);
        CHECK(b2.edx == c.apic_id);
        CHECK(b0.ebx == 1u);                                  // one thread per core
        CHECK(b0.ecx == (1u << 8));                           // level 0: SMT
        CHECK(b1.eax == bits);                                // shift past the core ID
        CHECK(b1.ebx == c.n);                                 // n cores in the package
        CHECK(b1.ecx == ((2u << 8) | 1));                     // level 1: core
        CHECK(((b2.ecx >> 8) & 0xFF) == 0u);                  // no further level
        auto e8 = cpuid(m, 0x80000008);
        CHECK((e8.ecx & 0xFF) == c.n - 1);                    // NC
        CHECK(((e8.ecx >> 12) & 0xF) == (c.n > 1 ? bits : 0)); // ApicIdCoreIdSize
        CHECK(((cpuid(m, 0x80000001).ecx >> 1) & 1) == (c.n > 1 ? 1u : 0u)); // CmpLegacy
        // APIC_BASE.BSC: the bootstrap processor (APIC ID 0) only, also after a reset.
        auto base = rdmsr(m, 0x1B);
        REQUIRE(base);
        CHECK(((*base >> 8) & 1) == (c.apic_id == 0 ? 1u : 0u));
        CHECK((*base & ~0xFFFull) == 0xFEE00000ull);
        CHECK((*base & (1u << 11)) != 0);
        m.cpu->reset();
        CHECK(((m.cpu->state().msr.apic_base >> 8) & 1) == (c.apic_id == 0 ? 1u : 0u));
    }
}

TEST_CASE("linux cpu: the local APIC's MSRs go to the IoHandler", "[cpu][linux][apic]")
{
    Machine m;
    SECTION("no LAPIC: the x2APIC range and TSC_DEADLINE #GP, APIC_BASE is the CPU's")
    {
        CHECK(!rdmsr(m, 0x6E0));
        CHECK(!rdmsr(m, 0x802));
        CHECK(!rdmsr(m, 0x8FF));
        CHECK(!wrmsr(m, 0x830, 0x4000));
        CHECK(!wrmsr(m, 0x6E0, 1));
        CHECK(!wrmsr(m, 0x1B, 0xFEE00D00)); // EXTD without x2APIC advertised
        // wrmsr APIC_BASE = 0xFEE00100 (AE clear: the APIC is disabled); cpuid 1: EDX[9] follows
        auto r = run64(m, { 0x0F, 0x30, 0xB8, 0x01, 0x00, 0x00, 0x00, 0x0F, 0xA2 }, [](CpuState& s) {
            s.gpr[RCX] = 0x1B;
            s.gpr[RAX] = 0xFEE00100;
            s.gpr[RDX] = 0;
        });
        CHECK(r.vector == -1);
        CHECK(r.s.msr.apic_base == 0xFEE00100u);
        CHECK((r.s.gpr[RDX] & (1u << 9)) == 0);
        CHECK(rdmsr(m, 0x7FF) == std::nullopt);
        CHECK(rdmsr(m, 0x900) == std::nullopt);
    }
    SECTION("a LAPIC: reads and writes are forwarded, refusals are #GP")
    {
        std::vector<std::pair<uint32_t, uint64_t>> writes;
        bool refuse_base = false;
        m.io.apic_read = [](uint32_t idx) -> std::optional<uint64_t> {
            if (idx == 0x803) return 0x80050014; // version register
            if (idx == 0x6E0) return 0x1234;
            return std::nullopt;                  // a register that does not exist
        };
        m.io.apic_write = [&](uint32_t idx, uint64_t v) -> std::optional<bool> {
            if (idx == 0x1B && refuse_base) return false;
            if (idx == 0x803) return false;       // read-only
            writes.emplace_back(idx, v);
            return true;
        };
        m.cpu->set_apic_caps(true, true);
        auto l1 = cpuid(m, 1);
        CHECK((l1.ecx & (1u << 21)) != 0);
        CHECK((l1.ecx & (1u << 24)) != 0);
        CHECK(rdmsr(m, 0x803) == 0x80050014u);
        CHECK(rdmsr(m, 0x6E0) == 0x1234u);
        CHECK(!rdmsr(m, 0x804));
        CHECK(wrmsr(m, 0x6E0, 0x123456789ull));
        CHECK(wrmsr(m, 0x830, 0x000000FF000C4500ull)); // ICR, 64 bits in x2APIC mode
        CHECK(!wrmsr(m, 0x803, 1));
        CHECK(wrmsr(m, 0x1B, 0xFEE00D00)); // x2APIC mode: EXTD is writable now
        REQUIRE(writes.size() == 3);
        CHECK(writes[0] == std::pair<uint32_t, uint64_t>(0x6E0, 0x123456789ull));
        CHECK(writes[1] == std::pair<uint32_t, uint64_t>(0x830, 0x000000FF000C4500ull));
        CHECK(writes[2] == std::pair<uint32_t, uint64_t>(0x1B, 0xFEE00D00ull));
        refuse_base = true; // the LAPIC refuses (x2APIC -> xAPIC directly, say): #GP, unchanged
        auto r = run64(m, { 0x0F, 0x30, 0x0F, 0x32 }, [](CpuState& s) {
            s.msr.apic_base = 0xFEE00D00;
            s.gpr[RCX] = 0x1B;
            s.gpr[RAX] = 0xFEE00900;
            s.gpr[RDX] = 0;
        });
        CHECK(r.vector == kGP);
        CHECK(r.s.msr.apic_base == 0xFEE00D00u);
        CHECK(!wrmsr(m, 0x1B, 0xFEE00D00ull | (1ull << 60))); // reserved bits: refused before the LAPIC sees it
        CHECK(writes.size() == 3);
    }
    SECTION("CPL 3 cannot reach the hooks")
    {
        int calls = 0;
        m.io.apic_read = [&](uint32_t) -> std::optional<uint64_t> { ++calls; return 0; };
        // rdmsr at CPL 3 through an IRETQ to a DPL3 code segment
        std::vector<uint8_t> code = { 0x6A, 0x43, 0x68, 0x00, 0x00, 0x07, 0x00, // push ss=0x43, push rsp=0x70000
            0x6A, 0x02, 0x6A, 0x4B, 0x68, 0x00, 0x00, 0x00, 0x00,               // push rflags=2, push cs=0x4B, push rip (patched)
            0x48, 0xCF,                                                         // iretq
            0x0F, 0x32 };                                                       // rdmsr (CPL 3)
        uint32_t target = uint32_t(kCode + 18);
        std::memcpy(&code[12], &target, 4);
        auto r = run64(m, code, [](CpuState& s) { s.gpr[RCX] = 0x802; });
        CHECK(r.vector == kGP);
        CHECK(m.get<uint64_t>(0x70000 - 40) == kCode + 18); // the frame's RIP: the RDMSR ...
        CHECK(m.get<uint64_t>(0x70000 - 32) == 0x4Bu);      // ... at CPL 3
        CHECK(calls == 0);
    }
}

TEST_CASE("linux cpu: RDRAND and RDSEED — operand sizes, flags, sources", "[cpu][linux][rdrand]")
{
    Machine m;
    struct Enc { char const* name; std::vector<uint8_t> code; int size; unsigned reg; };
    std::vector<Enc> encs = {
        { "rdrand ax", { 0x66, 0x0F, 0xC7, 0xF0 }, 2, RAX },
        { "rdrand eax", { 0x0F, 0xC7, 0xF0 }, 4, RAX },
        { "rdrand rax", { 0x48, 0x0F, 0xC7, 0xF0 }, 8, RAX },
        { "rdrand r9d", { 0x41, 0x0F, 0xC7, 0xF1 }, 4, R9 },
        { "rdrand r9", { 0x49, 0x0F, 0xC7, 0xF1 }, 8, R9 },
        { "rdseed cx", { 0x66, 0x0F, 0xC7, 0xF9 }, 2, RCX },
        { "rdseed ecx", { 0x0F, 0xC7, 0xF9 }, 4, RCX },
        { "rdseed rcx", { 0x48, 0x0F, 0xC7, 0xF9 }, 8, RCX },
        { "rdseed r15", { 0x49, 0x0F, 0xC7, 0xFF }, 8, R15 },
    };
    constexpr uint64_t kFill = 0xAAAAAAAAAAAAAAAAull;
    auto go = [&](Enc const& e, uint64_t flags_in) {
        return run64(m, e.code, [&](CpuState& s) {
            s.gpr[e.reg] = kFill;
            s.rflags = 2 | flags_in;
        });
    };
    SECTION("the host's CSPRNG: CF=1, the other arithmetic flags clear, the width written")
    {
        for (auto const& e : encs) {
            INFO(e.name);
            uint64_t seen[2];
            for (int k = 0; k < 2; ++k) {
                auto r = go(e, kArith & ~kCF); // OF SF ZF AF PF set before
                REQUIRE(r.vector == -1);
                CHECK((r.s.rflags & kArith) == kCF);
                uint64_t v = r.s.gpr[e.reg];
                if (e.size == 2) CHECK((v >> 16) == (kFill >> 16)); // the rest of the register kept
                if (e.size == 4) CHECK((v >> 32) == 0u);             // zero-extended
                seen[k] = v;
            }
            // Two 64-bit draws collide with probability 2^-64 (16-bit: 2^-16, not checked).
            if (e.size == 8) CHECK(seen[0] != seen[1]);
        }
    }
    SECTION("a seeded source gives exactly its bytes, little-endian")
    {
        CountingEntropy src;
        m.cpu->set_entropy_source(&src);
        auto r = go(encs[2], 0);
        CHECK(r.s.gpr[RAX] == 0x0807060504030201ull);
        r = go(encs[0], 0); // 16 bits: the low two bytes of the next draw
        CHECK(r.s.gpr[RAX] == ((kFill & ~0xFFFFull) | 0x0A09));
        r = go(encs[7], 0);
        CHECK(r.s.gpr[RCX] == 0x1817161514131211ull);
        src.dry = true; // no entropy now: CF=0 and 0, which software retries
        for (auto const& e : encs) {
            INFO(e.name);
            auto d = go(e, kArith);
            CHECK((d.s.rflags & kArith) == 0u);
            uint64_t want = e.size == 2 ? (kFill & ~0xFFFFull) : 0;
            CHECK(d.s.gpr[e.reg] == want);
        }
        m.cpu->set_entropy_source(nullptr);
    }
    SECTION("SeededEntropy: repeatable runs (SplitMix64, the published outputs for seed 0)")
    {
        SeededEntropy src(0);
        m.cpu->set_entropy_source(&src);
        CHECK(go(encs[2], 0).s.gpr[RAX] == 0xE220A8397B1DCDAFull);
        uint64_t saved = src.state();
        CHECK(go(encs[7], 0).s.gpr[RCX] == 0x6E789E6AA1B965F4ull);
        src.set_state(saved); // a snapshot continues the same sequence
        CHECK(go(encs[4], 0).s.gpr[R9] == 0x6E789E6AA1B965F4ull);
        CHECK(go(encs[1], 0).s.gpr[RAX] == 0x8009454Full); // 32 bits: the low half of 0x06C45D188009454F
        m.cpu->set_entropy_source(nullptr);
    }
    SECTION("encodings that are not RDRAND/RDSEED")
    {
        CHECK(run64(m, { 0x0F, 0xC7, 0x30 }, [](CpuState& s) { s.gpr[RAX] = kData; }).vector == kUD); // memory form (VMPTRLD)
        CHECK(run64(m, { 0x0F, 0xC7, 0x38 }, [](CpuState& s) { s.gpr[RAX] = kData; }).vector == kUD); // memory form (VMPTRST)
        CHECK(run64(m, { 0xF3, 0x0F, 0xC7, 0xF0 }).vector == kUD); // F3 RDRAND
        CHECK(run64(m, { 0xF2, 0x0F, 0xC7, 0xF0 }).vector == kUD); // F2 RDRAND
        CHECK(run64(m, { 0xF2, 0x0F, 0xC7, 0xF8 }).vector == kUD); // F2 RDSEED
        CHECK(run64(m, { 0xF0, 0x0F, 0xC7, 0xF0 }).vector == kUD); // LOCK
    }
    SECTION("the host agrees on the flags (when it has RDRAND)")
    {
        if (!__builtin_cpu_supports("rdrnd")) {
            WARN("host CPU lacks RDRAND: no host comparison");
            return;
        }
        uint64_t v, fl;
        asm volatile("pushfq; orq $0x8D4, (%%rsp); popfq; rdrand %0; pushfq; popq %1" : "=r"(v), "=r"(fl) : : "cc");
        auto r = go(encs[2], 0x8D4);
        if (fl & kCF) CHECK((r.s.rflags & kArith) == (fl & kArith));
    }
}

TEST_CASE("linux cpu: RDPID and RDTSCP read TSC_AUX", "[cpu][linux][rdpid]")
{
    Machine m;
    // wrmsr TSC_AUX; rdpid rax; rdtscp (ECX); rdpid with 66 and REX.W
    std::vector<uint8_t> code = { 0x0F, 0x30,                       // wrmsr (ECX = TSC_AUX)
        0xB9, 0xFF, 0xFF, 0xFF, 0xFF,                               // mov ecx, -1
        0xF3, 0x0F, 0xC7, 0xFB,                                     // rdpid rbx
        0xF3, 0x41, 0x0F, 0xC7, 0xF8,                               // rdpid r8
        0x66, 0xF3, 0x0F, 0xC7, 0xFE,                               // rdpid rsi (66 ignored)
        0x0F, 0x01, 0xF9 };                                         // rdtscp
    auto r = run64(m, code, [](CpuState& s) {
        s.gpr[RCX] = 0xC0000103;
        s.gpr[RAX] = 0x00001005; // Linux: (node << 12) | cpu
        s.gpr[RDX] = 0;
        s.gpr[RBX] = s.gpr[R8] = s.gpr[RSI] = ~0ull;
    });
    REQUIRE(r.vector == -1);
    CHECK(r.s.gpr[RBX] == 0x1005u);
    CHECK(r.s.gpr[R8] == 0x1005u);
    CHECK(r.s.gpr[RSI] == 0x1005u);
    CHECK(r.s.gpr[RCX] == 0x1005u);
    // RDPID works at CPL 3 (vDSO getcpu) and in 32-bit code writes 32 bits.
    auto c = run64(m, { 0xF3, 0x0F, 0xC7, 0xF8 }, [](CpuState& s) { s.msr.tsc_aux = 7; s.gpr[RAX] = ~0ull; });
    CHECK(c.s.gpr[RAX] == 7u);
    CHECK(run64(m, { 0xF3, 0x0F, 0xC7, 0x38 }, [](CpuState& s) { s.gpr[RAX] = kData; }).vector == kUD); // memory form
}

TEST_CASE("linux cpu: NOPs of every length, ENDBR64, PAUSE, prefetches", "[cpu][linux][insn]")
{
    Machine m;
    // Linux arch/x86/include/asm/nops.h BYTES_NOP1..8, the 11-byte P6 NOP, ENDBR64/32 and PAUSE.
    std::vector<std::vector<uint8_t>> nops = {
        { 0x90 }, { 0x66, 0x90 }, { 0x0F, 0x1F, 0x00 }, { 0x0F, 0x1F, 0x40, 0x00 }, { 0x0F, 0x1F, 0x44, 0x00, 0x00 },
        { 0x66, 0x0F, 0x1F, 0x44, 0x00, 0x00 }, { 0x0F, 0x1F, 0x80, 0x00, 0x00, 0x00, 0x00 },
        { 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00 }, { 0x66, 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00 },
        { 0x66, 0x2E, 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00 },
        { 0x66, 0x66, 0x2E, 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00 },
        { 0xF3, 0x0F, 0x1E, 0xFA }, { 0xF3, 0x0F, 0x1E, 0xFB }, { 0xF3, 0x90 },
        { 0x0F, 0x0D, 0x08 },       // PREFETCHW [rax] (init_amd forces 3DNOWPREFETCH)
        { 0x0F, 0x0D, 0x00 },       // PREFETCH [rax]
        { 0x0F, 0x18, 0x00 },       // PREFETCHNTA [rax]
        { 0x0F, 0x0D, 0x0C, 0x25, 0x00, 0x00, 0x00, 0x40 }, // PREFETCHW of an address beyond DRAM: no fault
    };
    std::vector<uint8_t> code;
    for (auto const& n : nops) code.insert(code.end(), n.begin(), n.end());
    auto r = run64(m, code, [](CpuState& s) { s.gpr[RAX] = kData; s.rflags = 2 | kZF | kCF; });
    CHECK(r.vector == -1);
    CHECK(r.instructions == nops.size() + 1);
    CHECK(r.s.rip == kCode + code.size() + 1);
    CHECK(r.s.gpr[RAX] == kData);
    CHECK((r.s.rflags & kArith) == (kZF | kCF));
}

TEST_CASE("linux cpu: 2E/3E prefixes on branches and atomics", "[cpu][linux][insn]")
{
    Machine m;
    // ds xadd [rax], ecx  (the uniprocessor form of "lock xadd": alternatives swap F0 for 3E);
    // cs je +2 (branch hint, taken); notrack jmp rdx (3E FF E2) over a UD2; ds call +0; pop rsi
    std::vector<uint8_t> code = {
        0x3E, 0x0F, 0xC1, 0x08,             // ds xadd [rax], ecx
        0x3E, 0xF0, 0x0F, 0xB1, 0x18,       // ds lock cmpxchg [rax], ebx
        0x85, 0xC0,                         // test eax, eax (nonzero: ZF=0)
        0x2E, 0x75, 0x02, 0x0F, 0x0B,       // cs jne +2 over ud2
        0x3E, 0xFF, 0xE2,                   // notrack jmp rdx
        0x0F, 0x0B,                         // ud2 (skipped)
        0x3E, 0xE8, 0x00, 0x00, 0x00, 0x00, // ds call next
        0x5E };                             // pop rsi
    uint64_t jmp_target = kCode + 21;
    auto r = run64(m, code, [&](CpuState& s) {
        s.gpr[RAX] = kData;
        s.gpr[RCX] = 5;
        s.gpr[RBX] = 0x77;
        s.gpr[RDX] = jmp_target;
    });
    CHECK(r.vector == -1);
    CHECK(r.s.gpr[RCX] == 0u);           // old value of [kData] (zeroed DRAM)
    CHECK(r.s.gpr[RSI] == kCode + 27);   // the return address of the call
}

TEST_CASE("linux cpu: POPCNT, TZCNT (F3 0F BC), XADD, CMPXCHG16B against the host", "[cpu][linux][insn]")
{
    Machine m;
    std::mt19937_64 rng(11);
    std::vector<uint64_t> vals = { 0, 1, 0x8000000000000000ull, ~0ull, 0x10000, 0xFFFF0000ull };
    for (int k = 0; k < 40; ++k) vals.push_back(rng() >> (rng() % 64));
    bool host_bmi1 = __builtin_cpu_supports("bmi");
    m.put<uint64_t>(kData, 0x1111);
    for (uint64_t v : vals) {
        INFO("value " << v);
        // popcnt rax, rcx
        auto r = run64(m, { 0xF3, 0x48, 0x0F, 0xB8, 0xC1 }, [&](CpuState& s) { s.gpr[RCX] = v; s.rflags = 2 | kArith; });
        uint64_t hv, hf;
        asm volatile("pushq $0x8D7; popfq; popcntq %2, %0; pushfq; popq %1" : "=&r"(hv), "=&r"(hf) : "r"(v) : "cc");
        CHECK(r.s.gpr[RAX] == hv);
        CHECK((r.s.rflags & kArith) == (hf & kArith));
        // tzcnt eax, ecx (32-bit: the zero case gives 32)
        r = run64(m, { 0xF3, 0x0F, 0xBC, 0xC1 }, [&](CpuState& s) { s.gpr[RCX] = v; });
        uint32_t hz;
        uint64_t hzf;
        if (host_bmi1) {
            asm volatile("tzcntl %2, %0; pushfq; popq %1" : "=&r"(hz), "=&r"(hzf) : "r"(uint32_t(v)) : "cc");
            CHECK(uint32_t(r.s.gpr[RAX]) == hz);
            CHECK((r.s.rflags & (kCF | kZF)) == (hzf & (kCF | kZF)));
        } else { // BMI1 is advertised, so the APM's TZCNT is the answer
            CHECK(uint32_t(r.s.gpr[RAX]) == (uint32_t(v) ? unsigned(__builtin_ctz(uint32_t(v))) : 32u));
        }
        // lock xadd [rax], rcx
        r = run64(m, { 0xF0, 0x48, 0x0F, 0xC1, 0x08 }, [&](CpuState& s) {
            s.gpr[RAX] = kData;
            s.gpr[RCX] = v;
        });
        uint64_t mem = 0x1111, src = v;
        asm volatile("lock xaddq %1, %0" : "+m"(mem), "+r"(src) : : "cc");
        CHECK(m.get<uint64_t>(kData) == mem);
        CHECK(r.s.gpr[RCX] == src);
        m.put<uint64_t>(kData, 0x1111);
    }
    // cmpxchg16b [rax]: match and mismatch
    for (bool match : { true, false }) {
        alignas(16) uint64_t hm[2] = { 0x1111, 0x2222 };
        m.put<uint64_t>(kData, 0x1111);
        m.put<uint64_t>(kData + 8, 0x2222);
        uint64_t a = match ? 0x1111 : 5, d = 0x2222;
        auto r = run64(m, { 0xF0, 0x48, 0x0F, 0xC7, 0x0E }, [&](CpuState& s) {
            s.gpr[RSI] = kData;
            s.gpr[RAX] = a;
            s.gpr[RDX] = d;
            s.gpr[RBX] = 0xB0B0;
            s.gpr[RCX] = 0xC0C0;
        });
        uint64_t ha = a, hd = d;
        uint8_t hz;
        asm volatile("lock cmpxchg16b %0; sete %3" : "+m"(hm), "+a"(ha), "+d"(hd), "=q"(hz) : "b"(0xB0B0ull), "c"(0xC0C0ull) : "cc", "memory");
        CHECK(r.vector == -1);
        CHECK(m.get<uint64_t>(kData) == hm[0]);
        CHECK(m.get<uint64_t>(kData + 8) == hm[1]);
        CHECK(r.s.gpr[RAX] == ha);
        CHECK(r.s.gpr[RDX] == hd);
        CHECK(((r.s.rflags & kZF) != 0) == (hz != 0));
    }
    // CMPXCHG16B needs a 16-byte aligned operand (#GP otherwise)
    CHECK(run64(m, { 0xF0, 0x48, 0x0F, 0xC7, 0x0E }, [](CpuState& s) { s.gpr[RSI] = kData + 8; }).vector == kGP);
}

TEST_CASE("linux cpu: LSL reads the per-CPU GDT entry; fences, cache control, CR8", "[cpu][linux][insn]")
{
    Machine m;
    // GDT entry 15 (GDT_ENTRY_CPUNODE, Linux asm/segment.h): a DPL3 data segment whose limit is
    // (node << 12) | cpu; the vDSO reads it with LSL at CPL 3 (vdso_read_cpunode).
    std::vector<uint8_t> code = { 0x0F, 0x03, 0xC1 }; // lsl eax, ecx
    auto r = run64(m, code, [&](CpuState& s) {
        m.put<uint64_t>(kGdt + 15 * 8, Machine::desc(0, 0x1003, 0x0F3)); // byte granular, DPL 3
        s.gdtr.limit = 16 * 8 - 1;
        s.gpr[RCX] = 15 * 8 + 3;
        s.gpr[RAX] = ~0ull;
    });
    CHECK(r.vector == -1);
    CHECK((r.s.rflags & kZF) != 0);
    CHECK(r.s.gpr[RAX] == 0x1003u);
    // Fences, WBINVD, CLFLUSH and CLFLUSHOPT keep data; MOV CR8 reads back what it wrote.
    code = { 0x0F, 0xAE, 0xE8, 0x0F, 0xAE, 0xF0, 0x0F, 0xAE, 0xF8, // lfence, mfence, sfence
        0x0F, 0x09,                                                  // wbinvd
        0x48, 0x89, 0x18,                                            // mov [rax], rbx
        0x0F, 0xAE, 0x38, 0x66, 0x0F, 0xAE, 0x38,                    // clflush [rax], clflushopt [rax]
        0x48, 0x8B, 0x10,                                            // mov rdx, [rax]
        0x44, 0x0F, 0x22, 0xC1,                                      // mov cr8, rcx
        0x44, 0x0F, 0x20, 0xC6 };                                    // mov rsi, cr8
    r = run64(m, code, [](CpuState& s) {
        s.gpr[RAX] = kData;
        s.gpr[RBX] = 0x0123456789ABCDEFull;
        s.gpr[RCX] = 0xE;
    });
    CHECK(r.vector == -1);
    CHECK(r.s.gpr[RDX] == 0x0123456789ABCDEFull);
    CHECK(r.s.gpr[RSI] == 0xEu);
    CHECK(r.s.cr8 == 0xEu);
    CHECK(run64(m, { 0x44, 0x0F, 0x22, 0xC1 }, [](CpuState& s) { s.gpr[RCX] = 0x10; }).vector == kGP); // CR8[63:4] reserved
    // 66 0F AE /6 is CLWB, not XSAVEOPT: memory stays as it was (an XSAVEOPT would write the
    // 576-byte area there).
    for (int k = 0; k < 80; ++k) m.put<uint64_t>(kData + 8 * k, 0x5A5A5A5A00000000ull | k);
    r = run64(m, { 0x66, 0x0F, 0xAE, 0x30 }, [](CpuState& s) {
        s.cr4 |= 1u << 18; // OSXSAVE, so that an XSAVEOPT would not #UD
        s.gpr[RAX] = kData;
    });
    CHECK(r.vector == -1);
    for (int k = 0; k < 80; ++k) CHECK(m.get<uint64_t>(kData + 8 * k) == (0x5A5A5A5A00000000ull | k));
}

TEST_CASE("linux cpu: EMMS empties the x87 stack; NB_CFG reads 0", "[cpu][linux][insn]")
{
    Machine m;
    constexpr int kNM = 7;
    // fld1; fldz; emms — Linux's restore_fpregs_from_fpstate on AMD (fnclex; emms; fildl).
    auto r = run64(m, { 0xD9, 0xE8, 0xD9, 0xEE, 0x0F, 0x77 });
    CHECK(r.vector == -1);
    CHECK(r.s.x87.ftw == 0); // FXSAVE's abridged tag: every register empty
    // Without EMMS the two loads stay valid (the known answer is the x87 stack itself).
    r = run64(m, { 0xD9, 0xE8, 0xD9, 0xEE });
    CHECK(r.s.x87.ftw != 0);
    // APM vol 5 EMMS: #UD with CR0.EM or a 66/F3 prefix, #NM with CR0.TS.
    CHECK(run64(m, { 0x0F, 0x77 }, [](CpuState& s) { s.cr0 |= 1u << 2; }).vector == kUD);
    CHECK(run64(m, { 0x0F, 0x77 }, [](CpuState& s) { s.cr0 |= 1u << 3; }).vector == kNM);
    CHECK(run64(m, { 0x66, 0x0F, 0x77 }).vector == kUD);
    CHECK(run64(m, { 0xF3, 0x0F, 0x77 }).vector == kUD);
    // MSR_AMD64_NB_CFG reads 0 and takes writes, as KVM serves it (Linux init_amd reads it).
    CHECK(rdmsr(m, 0xC001001F) == std::optional<uint64_t>(0));
    auto w = run64(m, { 0x0F, 0x30, 0x0F, 0x32 }, [](CpuState& s) { s.gpr[RCX] = 0xC001001F; s.gpr[RAX] = 1; s.gpr[RDX] = 0x400000; });
    CHECK(w.vector == -1);
    CHECK((w.s.gpr[RAX] == 0 && w.s.gpr[RDX] == 0));
}
