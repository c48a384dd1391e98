// CPU models: CPUID as the guest sees it (executed by the CPUID instruction), MSRs, and SME
// through the C-bit end to end. Known answers: CPUID Fn8000_001F as dumped by the `cpuid` tool on real
// parts (Milan host EBX = 0x4173, 509 guests; Genoa C-bit 51, reduction 6, 1006 guests; APM vol 3) and the parts'
// published CPUID signatures (EPYC 7601 00800F12, 7002 00830F10, 7713 00A00F11, 9654 00A10F11).
#include "tests/cpu/harness.h"

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

namespace {
CpuidResult guest_cpuid(Machine& m, uint32_t leaf, uint32_t sub = 0)
{
    m.start(Mode::Long64, { 0x0F, 0xA2, 0xF4 });
    m.cpu->set_gpr(RAX, leaf);
    m.cpu->set_gpr(RCX, sub);
    m.run();
    return { uint32_t(m.cpu->gpr(RAX)), uint32_t(m.cpu->gpr(RBX)), uint32_t(m.cpu->gpr(RCX)), uint32_t(m.cpu->gpr(RDX)) };
}
std::string regs_str(std::initializer_list<uint32_t> v)
{
    std::string s;
    for (uint32_t r : v) s.append(reinterpret_cast<char const*>(&r), 4);
    return s;
}
} // namespace

TEST_CASE("model: names, signatures and the memory-encryption leaf", "[cpu][model]")
{
    CHECK(cpu_model_from_name("EPYC-Milan") == CpuModel::Milan);
    CHECK(cpu_model_from_name("EPYC-Genoa") == CpuModel::Genoa);
    CHECK(!cpu_model_from_name("epyc"));
    struct Want { CpuModel m; uint32_t sig; uint32_t ebx1f; uint32_t guests; uint8_t phys; };
    for (auto w : { Want { CpuModel::Naples, 0x00800F12, 47 | 5 << 6, 15, 48 }, Want { CpuModel::Rome, 0x00830F10, 47 | 5 << 6, 509, 48 },
             Want { CpuModel::Milan, 0x00A00F11, 0x4173, 509, 48 }, Want { CpuModel::Genoa, 0x00A10F11, 51 | 6 << 6 | 4 << 12, 1006, 52 } }) {
        Machine m(w.m);
        m.cpu->set_cpuid_view(CpuidView::Host); // the bare part: leaf 8000_001F has the model's facts
        auto l0 = guest_cpuid(m, 0);
        CHECK(regs_str({ l0.ebx, l0.edx, l0.ecx }) == "AuthenticAMD");
        CHECK(guest_cpuid(m, 1).eax == w.sig);
        CHECK(guest_cpuid(m, 0x80000000).eax >= 0x8000001F);
        auto f = guest_cpuid(m, 0x8000001F);
        CHECK(f.ebx == w.ebx1f);
        CHECK(f.ecx == w.guests);
        CHECK((f.eax & 0x3) == 0x3); // SME, SEV
        CHECK((guest_cpuid(m, 0x80000008).eax & 0xFF) == w.phys);
        // A plain VM (the Cpu's default view) sees none of it (linux_cpu_test.cpp has the rest).
        m.cpu->set_cpuid_view(CpuidView::Guest);
        auto g = guest_cpuid(m, 0x8000001F);
        CHECK((g.eax | g.ebx | g.ecx | g.edx) == 0u);
        m.cpu->set_cpuid_view(CpuidView::Host);
        auto b = guest_cpuid(m, 0x80000002);
        CHECK(regs_str({ b.eax, b.ebx, b.ecx, b.edx }).rfind("AMD EPYC", 0) == 0);
        // After reset EDX holds the signature (APM vol 2 §14.1.3).
        m.cpu->reset();
        CHECK(m.cpu->gpr(RDX) == w.sig);
        CHECK(m.cpu->rip() == 0xFFF0);
    }
}

TEST_CASE("model: CPUID advertises only what is implemented", "[cpu][model]")
{
    Machine m;
    auto l1 = guest_cpuid(m, 1);
    CHECK((l1.edx & (1u << 25)) != 0);  // SSE
    CHECK((l1.edx & (1u << 26)) != 0);  // SSE2
    CHECK((l1.edx & (1u << 0)) != 0);   // FPU
    CHECK((l1.ecx & (1u << 0)) != 0);   // SSE3 (sse4_test.cpp)
    CHECK((l1.ecx & (1u << 3)) == 0);   // no MONITOR/MWAIT
    CHECK((l1.ecx & (1u << 20)) != 0);  // SSE4.2 (sse4_test.cpp)
    CHECK((l1.ecx & (1u << 26)) != 0);  // XSAVE (x87 and SSE state; xsave_test.cpp)
    CHECK((l1.ecx & (1u << 27)) == 0);  // OSXSAVE: CR4.OSXSAVE is clear
    CHECK((l1.ecx & (1u << 28)) == 0);  // no AVX
    CHECK((l1.ecx & (1u << 17)) != 0);  // PCID (pcid_test.cpp)
    auto l7 = guest_cpuid(m, 7);
    CHECK((l7.ebx & (1u << 5)) == 0);   // no AVX2
    CHECK((l7.ebx & ((1u << 3) | (1u << 8))) == ((1u << 3) | (1u << 8))); // BMI1, BMI2
    auto e1 = guest_cpuid(m, 0x80000001);
    CHECK((e1.edx & (1u << 29)) != 0);  // LM
    CHECK((e1.edx & (1u << 20)) != 0);  // NX
    CHECK((e1.ecx & (1u << 2)) != 0);   // SVM (exec_svm.cpp)
    CHECK((e1.ecx & (1u << 12)) == 0);  // SKINIT: not modelled
    auto svm = guest_cpuid(m, 0x8000000A);
    CHECK(svm.eax == 1);                // SVM revision
    CHECK(svm.ebx > 0);                 // ASIDs
    CHECK(svm.edx == ((1u << 0) | (1u << 3))); // nested paging, NRIP save — and nothing else
}

TEST_CASE("model: MSRs — known ones read back, unknown ones #GP, SEV_STATUS is 0", "[cpu][model][msr]")
{
    Machine m;
    // rdmsr(ecx) ; hlt
    auto rd = [&](uint32_t idx) {
        m.start(Mode::Long64, { 0x0F, 0x32, 0xF4 });
        m.cpu->set_gpr(RCX, idx);
        m.run();
        return m.halted_vector() == 13 ? std::optional<uint64_t>() : std::optional<uint64_t>((m.cpu->gpr(RDX) << 32) | uint32_t(m.cpu->gpr(RAX)));
    };
    auto wr = [&](uint32_t idx, uint64_t v) {
        m.start(Mode::Long64, { 0x0F, 0x30, 0xF4 });
        m.cpu->set_gpr(RCX, idx);
        m.cpu->set_gpr(RAX, uint32_t(v));
        m.cpu->set_gpr(RDX, v >> 32);
        m.run();
        return m.halted_vector() != 13;
    };
    CHECK(rd(0xC0010131) == 0u);              // SEV_STATUS, non-SEV
    CHECK(rd(0xC0000080) == 0xD01u);          // EFER of the test state
    CHECK(rd(0x277) == 0x0007040600070406ull); // PAT reset value
    CHECK(!rd(0x12345678));
    CHECK(!rd(0xC0011234));
    CHECK(!wr(0xC0010131, 1));                // read-only
    CHECK(!wr(0x277, 0x0202020202020202ull)); // PAT type 2 reserved
    CHECK(!wr(0xC0010117, 0x1234));           // VM_HSAVE_PA not page aligned
    CHECK(!wr(0xC0000082, 0x0000800000000000ull)); // LSTAR non-canonical
    CHECK(!wr(0xC0000080, 0x1000));          // EFER.SVME: SVM not advertised yet
    // rdmsr at CPL 3 is #GP
}

TEST_CASE("model: SME — a page mapped with the C-bit is encrypted with the host key in DRAM", "[cpu][model][sev]")
{
    Machine m; // Milan: C-bit 51
    std::vector<uint8_t> code = { 0x48, 0xB8 };
    uint64_t marker = 0x5EC0DE5EC0DE5EC0ull;
    for (int k = 0; k < 8; ++k) code.push_back(uint8_t(marker >> (8 * k)));
    code.insert(code.end(), { 0x48, 0x89, 0x04, 0x25, 0x00, 0x00, 0x03, 0x00, // mov [0x30000], rax
                              0x48, 0x8B, 0x1C, 0x25, 0x00, 0x00, 0x03, 0x00, 0xF4 }); // mov rbx, [0x30000]
    m.start(Mode::Long64, code);
    m.put<uint64_t>(0x8000 + 8 * 0x30, 0x30000 | 7 | (1ull << 51));
    CpuState s = m.cpu->state();
    s.msr.syscfg = 1u << 23; // MemEncryptionModEn
    m.cpu->set_state(s);
    m.run();
    CHECK(m.cpu->halted());
    CHECK(m.halted_vector() < 0);
    CHECK(m.cpu->gpr(RBX) == marker);
    uint64_t plain = 0, raw = 0;
    REQUIRE(m.mc->read(Spa(0x30000), std::span<uint8_t>(reinterpret_cast<uint8_t*>(&plain), 8), mmu::KeyId::host()).has_value());
    REQUIRE(m.mc->read(Spa(0x30000), std::span<uint8_t>(reinterpret_cast<uint8_t*>(&raw), 8), mmu::KeyId::none()).has_value());
    CHECK(plain == marker);
    CHECK(raw != marker);
}

TEST_CASE("x87: arithmetic, conversions, compares against host long double", "[cpu][x87]")
{
    Machine m;
    auto put_d = [&](uint64_t a, double v) { m.put<double>(a, v); };
    // fninit; fld qword [kData]; fld qword [kData+8]; fdivp; fsqrt; fstp qword [kData+16];
    // fld qword [kData]; fistp qword [kData+24]; fld qword [kData+8]; fld qword [kData]; fcomip st1; fstp st0
    std::vector<uint8_t> code = { 0xDB, 0xE3, 0xDD, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00, 0xDD, 0x04, 0x25, 0x08, 0x00, 0x02, 0x00,
        0xDE, 0xF9, 0xD9, 0xFA, 0xDD, 0x1C, 0x25, 0x10, 0x00, 0x02, 0x00,
        0xDD, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00, 0xDF, 0x3C, 0x25, 0x18, 0x00, 0x02, 0x00,
        0xDD, 0x04, 0x25, 0x08, 0x00, 0x02, 0x00, 0xDD, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00, 0xDF, 0xF1, 0xDD, 0xD8, 0xF4 };
    for (auto [a, b] : { std::pair { 10.0, 4.0 }, { -7.5, 3.0 }, { 2.5, 2.5 }, { 1e10, 3.0 }, { 3.5, -2.0 } }) {
        put_d(kData, a);
        put_d(kData + 8, b);
        m.start(Mode::Long64, code);
        m.run();
        REQUIRE(m.halted_vector() < 0);
        double expect = double(std::sqrt((long double)a / (long double)b));
        double got = m.get<double>(kData + 16);
        if (std::isnan(expect)) CHECK(std::isnan(got)); else CHECK(got == expect);
        CHECK(m.get<int64_t>(kData + 24) == int64_t(std::nearbyint(a)));
        uint64_t f = m.cpu->state().rflags;
        CHECK(bool(f & 1) == (a < b));
        CHECK(bool(f & 0x40) == (a == b));
    }
    // fnstsw ax after fcom: C0/C3
    put_d(kData, 1.0);
    put_d(kData + 8, 2.0);
    m.start(Mode::Long64, { 0xDB, 0xE3, 0xDD, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00, 0xDC, 0x14, 0x25, 0x08, 0x00, 0x02, 0x00, 0xDF, 0xE0, 0xF4 });
    m.run();
    CHECK((m.cpu->gpr(RAX) & 0x4500) == 0x0100); // C0 = 1: st0 < src
    // x87 with CR0.TS: #NM
    m.start(Mode::Long64, { 0xDB, 0xE3 });
    CpuState s = m.cpu->state();
    s.cr0 |= 8;
    m.cpu->set_state(s);
    m.run();
    CHECK(m.halted_vector() == 7);
}

TEST_CASE("BCD adjust instructions (32-bit mode), APM examples", "[cpu][insn]")
{
    Machine m;
    // mov al, 0x79; add al, 0x35; daa -> AL = 0x14, CF = 1 (79 + 35 = 114)
    m.start(Mode::Prot32, { 0xB0, 0x79, 0x04, 0x35, 0x27, 0xF4 });
    m.run();
    CHECK((m.cpu->gpr(RAX) & 0xFF) == 0x14);
    CHECK((m.cpu->state().rflags & 1) == 1);
    // mov al, 63; aam -> AH = 6, AL = 3; aad -> AL = 63
    m.start(Mode::Prot32, { 0xB0, 63, 0xD4, 0x0A, 0x66, 0x89, 0xC3, 0xD5, 0x0A, 0xF4 });
    m.run();
    CHECK((m.cpu->gpr(RBX) & 0xFFFF) == 0x0603);
    CHECK((m.cpu->gpr(RAX) & 0xFFFF) == 63);
    // aam 0 is #DE
    m.start(Mode::Prot32, { 0xD4, 0x00 });
    m.run();
    CHECK(m.halted_vector() == 0);
}
