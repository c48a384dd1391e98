// Virtual-8086 mode (APM vol 2 §16.2; Intel SDM vol 3 §20.2-20.3): entered by IRET from CPL 0
// with EFLAGS.VM in the image (or by a task switch to a TSS whose EFLAGS has VM), real-mode
// segment arithmetic at CPL 3, the IOPL-sensitive instructions, I/O through the TSS bitmap, and
// interrupts/exceptions leaving through a ring-0 gate with the V86 frame (GS, FS, DS, ES, SS,
// ESP, EFLAGS, CS, EIP, error code). VME/PVI are not implemented: CR4.VME cannot be set.
#include "tests/cpu/harness.h"

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;
using sevemu::cpu::rflags::IF;
using sevemu::cpu::rflags::IOPL;
using sevemu::cpu::rflags::VM;

namespace {

uint32_t stack32(Machine& m, int k) { return m.get<uint32_t>(uint32_t(m.cpu->gpr(RSP)) + 4 * k); }

// Frame slots on the ring-0 stack after an event from V86 mode with an error code.
enum Frame : int { ERR, FEIP, FCS, FEFL, FESP, FSS, FES, FDS, FFS, FGS };

constexpr uint32_t kBitmap = 0x68, kTssLimit = kBitmap + 0x80; // ports 0-0x3FF (+ the terminator byte); above: denied
constexpr uint64_t kRing0Iret = kCode + 0x400;

struct V86 {
    Machine& m;
    CpuState s;
    uint32_t eflags = VM | 2;
    uint16_t cs = 0x2000, ip = 0x100, ss = 0x3000, sp = 0x1000, ds = 0x4000, es = 0x5000, fs = 0x6000, gs = 0x0800;

    explicit V86(Machine& mm) : m(mm)
    {
        s = m.base_state(Mode::Prot32);
        s.tr = Segment { 0x28, 0x8B, kTssLimit, kTss };
        m.put<uint64_t>(kGdt + 0x28, Machine::desc(kTss, kTssLimit, 0x08B));
        std::vector<uint8_t> tss(kTssLimit + 1, 0);
        auto put32 = [&](uint32_t at, uint32_t v) { std::memcpy(&tss[at], &v, 4); };
        put32(4, 0x70000);   // ESP0
        put32(8, 0x10);      // SS0
        put32(0x64, kBitmap << 16);
        tss[kTssLimit] = 0xFF;
        m.write(kTss, tss);
        m.write(kRing0Iret, { 0xCF }); // iretd
    }
    uint64_t code_at() const { return (uint64_t(cs) << 4) + ip; }
    void deny_port(uint16_t port) { m.put<uint8_t>(kTss + kBitmap + port / 8, uint8_t(1u << (port & 7))); }
    void go(std::vector<uint8_t> const& code)
    {
        // Ring 0 enters V86 mode with IRETD from a prepared frame.
        uint32_t frame[9] = { ip, cs, eflags, sp, ss, es, ds, fs, gs };
        m.write(kStackTop - sizeof frame, frame, sizeof frame);
        s.gpr[RSP] = kStackTop - sizeof frame;
        m.write(kCode, { 0xCF });
        m.write(code_at(), code);
        m.cpu->set_state(s);
        m.run();
    }
};

} // namespace

TEST_CASE("v86: IRET enters V86 mode; segments are paragraphs; #GP leaves with the V86 frame", "[cpu][v86]")
{
    Machine m;
    V86 v(m);
    m.put<uint16_t>(0x40010, 0xBEEF);
    // mov ax,[0x10]; mov [0x20],ax; push ax; mov bx,ss; hlt (privileged: #GP(0))
    v.go({ 0xA1, 0x10, 0x00, 0xA3, 0x20, 0x00, 0x50, 0x8C, 0xD3, 0xF4 });
    REQUIRE(m.halted_vector() == 13);
    CpuState s = m.cpu->state();
    CHECK(uint16_t(s.gpr[RAX]) == 0xBEEF);
    CHECK(uint16_t(s.gpr[RBX]) == 0x3000);
    CHECK(m.get<uint16_t>(0x40020) == 0xBEEF);
    CHECK(m.get<uint16_t>(0x30FFE) == 0xBEEF);  // SS:SP-2
    CHECK(uint32_t(s.gpr[RSP]) == 0x70000 - 40);
    CHECK(stack32(m, ERR) == 0);
    CHECK(stack32(m, FEIP) == 0x109);
    CHECK(stack32(m, FCS) == 0x2000);
    CHECK((stack32(m, FEFL) & VM) != 0);
    CHECK(stack32(m, FESP) == 0x0FFE);
    CHECK(stack32(m, FSS) == 0x3000);
    CHECK(stack32(m, FES) == 0x5000);
    CHECK(stack32(m, FDS) == 0x4000);
    CHECK(stack32(m, FFS) == 0x6000);
    CHECK(stack32(m, FGS) == 0x0800);
    // In the handler: VM clear, CPL 0, data segments null.
    CHECK((s.rflags & VM) == 0);
    CHECK(s.seg[CS].selector == 0x18);
    CHECK(s.seg[SS].selector == 0x10);
    for (unsigned k : { ES, DS, FS, GS })
        CHECK(s.seg[k].selector == 0);
}

TEST_CASE("v86: far JMP, INT n to ring 0 and IRETD back", "[cpu][v86]")
{
    Machine m;
    SECTION("far JMP loads CS as a paragraph")
    {
        V86 v(m);
        m.write(0x21000 + 0x10, { 0xF4 });
        v.go({ 0xEA, 0x10, 0x00, 0x00, 0x21 }); // jmp 0x2100:0x0010
        REQUIRE(m.halted_vector() == 13);
        CHECK(stack32(m, FEIP) == 0x10);
        CHECK(stack32(m, FCS) == 0x2100);
    }
    SECTION("INT 0x80 (IOPL 3) to a ring-0 handler that IRETDs back to V86 mode")
    {
        V86 v(m);
        v.eflags |= IOPL;
        uint64_t g = (kRing0Iret & 0xFFFF) | (uint64_t(0x18) << 16) | (uint64_t(0xEE) << 40) | ((kRing0Iret >> 16) << 48);
        m.put<uint64_t>(kIdt + 8 * 0x80, g);
        v.go({ 0xCD, 0x80, 0x8C, 0xD8, 0xF4 }); // int 0x80; mov ax,ds; hlt
        REQUIRE(m.halted_vector() == 13);
        CpuState s = m.cpu->state();
        CHECK(uint16_t(s.gpr[RAX]) == 0x4000); // DS restored from the frame
        CHECK(stack32(m, FEIP) == 0x104);
        CHECK(stack32(m, FDS) == 0x4000);
        CHECK(stack32(m, FGS) == 0x0800);
        CHECK(uint32_t(s.gpr[RSP]) == 0x70000 - 40); // the first frame was popped whole
    }
    SECTION("INT3 is not IOPL-sensitive but needs a DPL-3 gate")
    {
        V86 v(m);
        v.go({ 0xCC });
        REQUIRE(m.halted_vector() == 13);
        CHECK(stack32(m, ERR) == 3 * 8 + 2);
        V86 v2(m);
        m.put<uint64_t>(kIdt + 8 * 3, m.get<uint64_t>(kIdt + 8 * 3) | (3ull << 45));
        v2.go({ 0xCC });
        REQUIRE(m.halted_vector() == 3);
        CHECK(stack32(m, 0) == 0x101); // no error code: EIP first
        CHECK(stack32(m, 8) == 0x0800); // ... GS last
    }
    SECTION("a gate to a DPL-3 handler is #GP(selector+EXT)")
    {
        V86 v(m);
        m.put<uint64_t>(kIdt + 8 * 6, (kStubs & 0xFFFF) | (uint64_t(0x3B) << 16) | (uint64_t(0xEE) << 40));
        v.go({ 0x0F, 0x0B }); // ud2
        REQUIRE(m.halted_vector() == 13);
        CHECK(stack32(m, ERR) == 0x39);
        CHECK(stack32(m, FEIP) == 0x100);
    }
}

TEST_CASE("v86: IOPL-sensitive instructions", "[cpu][v86]")
{
    Machine m;
    struct Case {
        char const* what;
        std::vector<uint8_t> code;
        uint32_t at;
    };
    Case sensitive[] = {
        { "cli", { 0xFA }, 0x100 }, { "sti", { 0xFB }, 0x100 }, { "pushf", { 0x9C }, 0x100 },
        { "popf", { 0x6A, 0x00, 0x9D }, 0x102 }, { "int n", { 0xCD, 0x21 }, 0x100 },
        { "iret", { 0x6A, 0x00, 0x0E, 0x68, 0x00, 0x02, 0xCF }, 0x106 },
    };
    for (auto const& c : sensitive) {
        INFO(c.what << " with IOPL 0: #GP(0) at the instruction");
        V86 v(m);
        v.go(c.code);
        REQUIRE(m.halted_vector() == 13);
        CHECK(stack32(m, ERR) == 0);
        CHECK(stack32(m, FEIP) == c.at);
    }
    SECTION("IOPL 3: CLI/STI act on IF; POPF cannot change IOPL; IRET returns within V86")
    {
        V86 v(m);
        v.eflags |= IOPL | IF;
        // cli; push 0; popf; pushf; pop ax; hlt
        v.go({ 0xFA, 0x6A, 0x00, 0x9D, 0x9C, 0x58, 0xF4 });
        REQUIRE(m.halted_vector() == 13);
        CHECK(uint16_t(m.cpu->gpr(RAX)) == 0x3002);
        CHECK((stack32(m, FEFL) & (VM | IOPL | IF)) == (VM | IOPL));
        V86 v2(m);
        v2.eflags |= IOPL;
        m.write(0x20200, { 0xF4 });
        v2.go({ 0x68, 0x02, 0x02, 0x0E, 0x68, 0x00, 0x02, 0xCF }); // push 0x202; push cs; push 0x200; iret
        REQUIRE(m.halted_vector() == 13);
        CHECK(stack32(m, FEIP) == 0x200);
        CHECK((stack32(m, FEFL) & (VM | IOPL | IF)) == (VM | IOPL | IF));
    }
}

TEST_CASE("v86: port I/O goes by the TSS bitmap whatever IOPL says", "[cpu][v86]")
{
    Machine m;
    SECTION("allowed port at IOPL 0")
    {
        V86 v(m);
        v.deny_port(0x43);
        v.go({ 0xE4, 0x42, 0xF4 }); // in al,0x42; hlt
        REQUIRE(m.halted_vector() == 13);
        CHECK(uint8_t(m.cpu->gpr(RAX)) == 0x78);
        CHECK(stack32(m, FEIP) == 0x102);
    }
    SECTION("denied port, even at IOPL 3")
    {
        V86 v(m);
        v.eflags |= IOPL;
        v.deny_port(0x43);
        v.go({ 0xE6, 0x43 }); // out 0x43,al
        REQUIRE(m.halted_vector() == 13);
        CHECK(stack32(m, FEIP) == 0x100);
        CHECK(m.io.outs.empty());
    }
    SECTION("a word access needs both bits clear")
    {
        V86 v(m);
        v.deny_port(0x81);
        v.go({ 0xE7, 0x80 }); // out 0x80,ax
        REQUIRE(m.halted_vector() == 13);
        CHECK(m.io.outs.empty());
    }
}

TEST_CASE("v86: IRET to V86 mode checks and task switches into a V86 task", "[cpu][v86]")
{
    Machine m;
    SECTION("EIP above 0xFFFF in the image is #GP(0) in the ring-0 code")
    {
        V86 v(m);
        v.ip = 0; // placeholder; patch the frame's EIP below
        CpuState s = v.s;
        uint32_t frame[9] = { 0x10000, v.cs, v.eflags, v.sp, v.ss, v.es, v.ds, v.fs, v.gs };
        m.write(kStackTop - sizeof frame, frame, sizeof frame);
        s.gpr[RSP] = kStackTop - sizeof frame;
        m.write(kCode, { 0xCF });
        m.cpu->set_state(s);
        m.run();
        REQUIRE(m.halted_vector() == 13);
        CHECK(stack32(m, 0) == 0);
        CHECK(stack32(m, 1) == kCode);
        CHECK((m.cpu->state().rflags & VM) == 0);
    }
    SECTION("JMP to a TSS whose EFLAGS has VM runs the task in V86 mode")
    {
        V86 v(m);
        constexpr uint64_t kTssB = 0x9000;
        v.s.gdtr.limit = 0xFF;
        m.put<uint64_t>(kGdt + 0x50, Machine::desc(kTssB, 0x67, 0x89));
        uint32_t t[26] {};
        t[1] = 0x68000; // ESP0
        t[2] = 0x10;    // SS0
        t[8] = 0x100;   // EIP
        t[9] = VM | 2;
        t[14] = 0x1000; // ESP
        t[18] = 0x5000; t[19] = 0x2000; t[20] = 0x3000; t[21] = 0x4000; t[22] = 0x6000; t[23] = 0x0800;
        m.write(kTssB, t, sizeof t);
        m.write(0x20100, { 0x8C, 0xD8, 0xF4 }); // mov ax,ds; hlt
        m.write(kCode, { 0xEA, 0, 0, 0, 0, 0x50, 0x00 });
        m.cpu->set_state(v.s);
        m.run();
        REQUIRE(m.halted_vector() == 13);
        CpuState s = m.cpu->state();
        CHECK(s.tr.selector == 0x50);
        CHECK(uint16_t(s.gpr[RAX]) == 0x4000);
        CHECK(uint32_t(s.gpr[RSP]) == 0x68000 - 40);
        CHECK(stack32(m, FEIP) == 0x102);
        CHECK(stack32(m, FCS) == 0x2000);
        CHECK(stack32(m, FSS) == 0x3000);
        CHECK(stack32(m, FGS) == 0x0800);
    }
}

TEST_CASE("v86: VME and PVI are not available", "[cpu][v86]")
{
    Machine m;
    for (uint8_t bit : { 0x01, 0x02 }) {
        INFO("CR4 bit " << int(bit));
        // mov eax,cr4; or eax,bit; mov cr4,eax
        m.start(Mode::Prot32, { 0x0F, 0x20, 0xE0, 0x83, 0xC8, bit, 0x0F, 0x22, 0xE0, 0xF4 });
        m.run();
        CHECK(m.halted_vector() == 13);
        CHECK(stack32(m, 0) == 0);
        CHECK(stack32(m, 1) == kCode + 6);
        CHECK((m.cpu->state().cr4 & 3) == 0);
    }
    // CPUID 1 EDX[1] (VME) is clear.
    m.start(Mode::Prot32, { 0xB8, 1, 0, 0, 0, 0x0F, 0xA2, 0xF4 });
    m.run();
    CHECK((m.cpu->gpr(RDX) & 2) == 0);
}
