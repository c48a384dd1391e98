// Call gates (APM vol 2 §4.11.2-4.11.3, §4.8.4): far CALL/JMP through 16-, 32- and 64-bit call
// gates, the inner-stack switch through the TSS with parameter copy, far RET back to the outer
// level, and each fault with its error code. Expected stack images are the documents' layouts
// (legacy: SS, ESP, parameters, CS, EIP pushed on the new stack; long mode: SS, RSP, CS, RIP).
#include "tests/cpu/harness.h"

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

namespace {
uint32_t stack32(Machine& m, int k) { return m.get<uint32_t>(uint32_t(m.cpu->gpr(RSP)) + 4 * k); }
uint64_t stack64(Machine& m, int k) { return m.get<uint64_t>(m.cpu->gpr(RSP) + 8 * k); }

// Legacy gate / low half of a 64-bit gate: offset[15:0], selector, param count, type, DPL, P.
uint64_t gate(uint16_t sel, uint64_t off, unsigned type, unsigned dpl, unsigned params = 0, bool present = true)
{
    return (off & 0xFFFF) | (uint64_t(sel) << 16) | (uint64_t(params & 0x1F) << 32) | (uint64_t(type) << 40)
        | (uint64_t(dpl) << 45) | (uint64_t(present) << 47) | (((off >> 16) & 0xFFFF) << 48);
}

constexpr uint64_t kRing0 = kCode + 0x100, kConf = kCode + 0x200, kLow = 0xA000, kCopy = 0x30000;

// Extra GDT entries: 0x50 gate (16 bytes in long mode), 0x60 code32 DPL0 not present,
// 0x68 data DPL0 not present, 0x70 conforming code32 DPL0, 0x78 code32 DPL1, 0x80 data DPL1
// not present, 0x88 data DPL1.
void extra_gdt(Machine& m)
{
    m.put<uint64_t>(kGdt + 0x60, Machine::desc(0, 0xFFFFF, 0xC1B));
    m.put<uint64_t>(kGdt + 0x68, Machine::desc(0, 0xFFFFF, 0xC13));
    m.put<uint64_t>(kGdt + 0x70, Machine::desc(0, 0xFFFFF, 0xC9F));
    m.put<uint64_t>(kGdt + 0x78, Machine::desc(0, 0xFFFFF, 0xCBB));
    m.put<uint64_t>(kGdt + 0x80, Machine::desc(0, 0xFFFFF, 0xC33));
    m.put<uint64_t>(kGdt + 0x88, Machine::desc(0, 0xFFFFF, 0xCB3));
}

// 32-bit protected mode at CPL 3 (CS 0x3B, SS/DS/ES 0x43, ESP 0x7F000) with a 32-bit TSS
// (ESP0 0x70000, SS0 0x10).
CpuState user32(Machine& m, std::vector<uint8_t> const& code, bool cpl3 = true)
{
    CpuState s = m.base_state(Mode::Prot32);
    extra_gdt(m);
    s.gdtr.limit = 0xFF;
    s.tr = Segment { 0x28, 0x8B, 0x67, kTss };
    m.put<uint32_t>(kTss + 4, 0x70000);
    m.put<uint32_t>(kTss + 8, 0x10);
    if (cpl3) {
        s.seg[CS] = Segment { 0x3B, 0xCFB, 0xFFFFFFFF, 0 };
        for (unsigned k : { ES, SS, DS, FS, GS })
            s.seg[k] = Segment { 0x43, 0xCF3, 0xFFFFFFFF, 0 };
    }
    s.gpr[RSP] = 0x7F000;
    m.write(kCode, code);
    // Ring-0 target: copy the 6 dwords at ESP to kCopy (the #UD frame later reuses that stack);
    // mov ebx,esp; mov ecx,ss; mov edx,cs; mov ebp,[esp+8]; mov eax,[esp+12]; retf 8
    m.write(kRing0, { 0x89, 0xE6, 0xBF, 0x00, 0x00, 0x03, 0x00, 0xB9, 0x06, 0x00, 0x00, 0x00, 0xFC, 0xF3, 0xA5, 0x89, 0xE3, 0x8C, 0xD1, 0x8C, 0xCA, 0x8B, 0x6C, 0x24, 0x08, 0x8B, 0x44, 0x24, 0x0C, 0xCA, 0x08, 0x00 });
    // Conforming target: mov edx,cs; mov ebx,esp; ud2
    m.write(kConf, { 0x8C, 0xCA, 0x89, 0xE3, 0x0F, 0x0B });
    return s;
}
std::vector<uint8_t> call_far32(uint16_t sel) { return { 0x9A, 0, 0, 0, 0, uint8_t(sel), uint8_t(sel >> 8), 0x0F, 0x0B }; }
std::vector<uint8_t> jmp_far32(uint16_t sel) { return { 0xEA, 0, 0, 0, 0, uint8_t(sel), uint8_t(sel >> 8), 0x0F, 0x0B }; }

// Runs and returns the vector; for faults at CPL 3 the error code is on the ring-0 stack.
int run(Machine& m)
{
    m.run();
    return m.halted_vector();
}
} // namespace

TEST_CASE("gates: 32-bit call gate to ring 0 with parameter copy and RETF back", "[cpu][gates]")
{
    Machine m;
    // push 0x11111111; push 0x22222222; call far 0x53:0; mov edi,esp; mov esi,cs; ud2
    std::vector<uint8_t> code = { 0x68, 0x11, 0x11, 0x11, 0x11, 0x68, 0x22, 0x22, 0x22, 0x22, 0x9A, 0, 0, 0, 0, 0x53, 0x00,
        0x89, 0xE7, 0x8C, 0xCE, 0x0F, 0x0B };
    CpuState s = user32(m, code);
    m.put<uint64_t>(kGdt + 0x50, gate(0x18, kRing0, 0xC, 3, 2));
    m.cpu->set_state(s);
    CHECK(run(m) == 6);
    uint32_t nsp = uint32_t(m.cpu->gpr(RBX));
    CHECK(nsp == 0x70000 - 24);
    CHECK(m.cpu->gpr(RCX) == 0x10);                      // SS from TSS.SS0
    CHECK(m.cpu->gpr(RDX) == 0x18);                      // CS with RPL = new CPL 0
    CHECK(m.get<uint32_t>(kCopy + 0) == kCode + 17);       // return EIP
    CHECK(m.get<uint32_t>(kCopy + 4) == 0x3B);             // caller CS
    CHECK(m.get<uint32_t>(kCopy + 8) == 0x22222222);       // parameters in their original order
    CHECK(m.get<uint32_t>(kCopy + 12) == 0x11111111);
    CHECK(m.get<uint32_t>(kCopy + 16) == 0x7F000 - 8);     // caller ESP
    CHECK(m.get<uint32_t>(kCopy + 20) == 0x43);            // caller SS
    CHECK(m.cpu->gpr(RBP) == 0x22222222);
    CHECK(m.cpu->gpr(RAX) == 0x11111111);
    CHECK(uint32_t(m.cpu->gpr(RDI)) == 0x7F000);        // RETF 8 released the caller's parameters
    CHECK(m.cpu->gpr(RSI) == 0x3B);                      // back at CPL 3
}

TEST_CASE("gates: 16-bit call gate pushes words; conforming target keeps CPL", "[cpu][gates]")
{
    Machine m;
    SECTION("16-bit gate, one parameter word")
    {
        // push 0x1234 (66 68 imm16); call far 0x53:0; ud2
        CpuState s = user32(m, { 0x66, 0x68, 0x34, 0x12, 0x9A, 0, 0, 0, 0, 0x53, 0x00, 0x0F, 0x0B });
        m.put<uint64_t>(kGdt + 0x50, gate(0x18, kLow, 4, 3, 1));
        m.write(kLow, { 0x89, 0xE3, 0x8C, 0xCA, 0x0F, 0x0B }); // mov ebx,esp; mov edx,cs; ud2
        m.cpu->set_state(s);
        CHECK(run(m) == 6);
        uint32_t nsp = uint32_t(m.cpu->gpr(RBX));
        CHECK(nsp == 0x70000 - 10);
        CHECK(m.cpu->gpr(RDX) == 0x18);
        CHECK(m.get<uint16_t>(nsp + 0) == uint16_t(kCode + 11));
        CHECK(m.get<uint16_t>(nsp + 2) == 0x3B);
        CHECK(m.get<uint16_t>(nsp + 4) == 0x1234);
        CHECK(m.get<uint16_t>(nsp + 6) == uint16_t(0x7F000 - 2));
        CHECK(m.get<uint16_t>(nsp + 8) == 0x43);
    }
    SECTION("conforming code segment: no stack switch, CPL stays 3")
    {
        CpuState s = user32(m, call_far32(0x53));
        m.put<uint64_t>(kGdt + 0x50, gate(0x70, kConf, 0xC, 3));
        m.cpu->set_state(s);
        CHECK(run(m) == 6);
        CHECK(m.cpu->gpr(RDX) == 0x73);
        CHECK(uint32_t(m.cpu->gpr(RBX)) == 0x7F000 - 8);
        CHECK(m.get<uint32_t>(0x7F000 - 8) == kCode + 7);
        CHECK(m.get<uint32_t>(0x7F000 - 4) == 0x3B);
    }
    SECTION("JMP through a gate to the same level")
    {
        CpuState s = user32(m, jmp_far32(0x50), false); // CPL 0
        m.put<uint64_t>(kGdt + 0x50, gate(0x18, kConf, 0xC, 0));
        m.cpu->set_state(s);
        CHECK(run(m) == 6);
        CHECK(m.cpu->gpr(RDX) == 0x18);
        CHECK(uint32_t(m.cpu->gpr(RBX)) == 0x7F000); // nothing pushed
    }
}

TEST_CASE("gates: legacy faults and their error codes", "[cpu][gates]")
{
    Machine m;
    struct Case {
        char const* what;
        uint64_t gate;
        bool cpl3;
        bool jmp;
        uint16_t sel;
        int vec;
        uint32_t err;
        uint32_t ss1 = 0x89;
        uint32_t tss_limit = 0x67;
    };
    Case cases[] = {
        { "gate DPL < CPL", gate(0x18, kRing0, 0xC, 0), true, false, 0x53, 13, 0x50 },
        { "gate DPL < RPL", gate(0x18, kRing0, 0xC, 1), false, false, 0x52, 13, 0x50 },
        { "gate not present", gate(0x18, kRing0, 0xC, 3, 0, false), true, false, 0x53, 11, 0x50 },
        { "null target selector", gate(0x00, kRing0, 0xC, 3), true, false, 0x53, 13, 0 },
        { "target is a data segment", gate(0x10, kRing0, 0xC, 3), true, false, 0x53, 13, 0x10 },
        { "target DPL > CPL", gate(0x38, kRing0, 0xC, 0), false, false, 0x50, 13, 0x38 },
        { "target not present", gate(0x60, kRing0, 0xC, 3), true, false, 0x53, 11, 0x60 },
        { "target beyond the GDT", gate(0x1F8, kRing0, 0xC, 3), true, false, 0x53, 13, 0x1F8 },
        { "JMP to a more privileged non-conforming segment", gate(0x18, kRing0, 0xC, 3), true, true, 0x53, 13, 0x18 },
        // Stack faults use a ring-1 target (TSS.SS1 at +16, ESP1 at +12) so that the fault
        // itself can still be delivered on the ring-0 stack.
        { "TSS.SS1 null", gate(0x78, kRing0, 0xC, 3), true, false, 0x53, 10, 0, 0 },
        { "TSS.SS1 RPL != new CPL", gate(0x78, kRing0, 0xC, 3), true, false, 0x53, 10, 0x88, 0x8B },
        { "TSS.SS1 is code", gate(0x78, kRing0, 0xC, 3), true, false, 0x53, 10, 0x78, 0x79 },
        { "TSS.SS1 DPL != new CPL", gate(0x78, kRing0, 0xC, 3), true, false, 0x53, 10, 0x10, 0x11 },
        { "TSS.SS1 not present", gate(0x78, kRing0, 0xC, 3), true, false, 0x53, 12, 0x80, 0x81 },
        { "TSS too short for SS1:ESP1", gate(0x78, kRing0, 0xC, 3), true, false, 0x53, 10, 0x28, 0x89, 0x10 },
        { "task gate naming a non-TSS descriptor", gate(0x30, 0, 0x5, 3), true, false, 0x53, 13, 0x30 },
    };
    for (auto const& c : cases) {
        INFO(c.what);
        CpuState s = user32(m, c.jmp ? jmp_far32(c.sel) : call_far32(c.sel), c.cpl3);
        m.put<uint64_t>(kGdt + 0x50, c.gate);
        m.put<uint32_t>(kTss + 12, 0x78000);
        m.put<uint32_t>(kTss + 16, c.ss1);
        s.tr.limit = c.tss_limit;
        m.cpu->set_state(s);
        CHECK(run(m) == c.vec);
        CHECK(stack32(m, 0) == c.err);
        CHECK(stack32(m, 1) == kCode); // faults: EIP of the far CALL/JMP
    }
}

TEST_CASE("gates: 64-bit call gate to ring 0 and RETF back; long-mode faults", "[cpu][gates]")
{
    Machine m;
    auto start = [&](std::vector<uint8_t> const& code, uint64_t lo, uint64_t hi, bool cpl3 = true) {
        CpuState s = m.base_state(Mode::Long64);
        extra_gdt(m);
        s.gdtr.limit = 0xFF;
        m.put<uint64_t>(kGdt + 0x50, lo);
        m.put<uint64_t>(kGdt + 0x58, hi);
        if (cpl3) {
            s.seg[CS] = Segment { 0x4B, 0xAFB, 0xFFFFFFFF, 0 };
            for (unsigned k : { ES, SS, DS, FS, GS })
                s.seg[k] = Segment { 0x43, 0xCF3, 0xFFFFFFFF, 0 };
        }
        s.gpr[RSP] = 0x7F000;
        m.write(kCode, code);
        m.write(kCode + 0x80, { 0, 0, 0, 0, 0x53, 0 }); // m16:32 far pointer: selector 0x53
        // copy 4 qwords at RSP to kCopy; mov rbx,rsp; mov ecx,ss; mov edx,cs; retfq
        m.write(kRing0, { 0x48, 0x89, 0xE6, 0xBF, 0x00, 0x00, 0x03, 0x00, 0xB9, 0x04, 0x00, 0x00, 0x00, 0xFC, 0xF3, 0x48, 0xA5,
            0x48, 0x89, 0xE3, 0x8C, 0xD1, 0x8C, 0xCA, 0x48, 0xCB });
        m.cpu->set_state(s);
    };
    // call far [rip+0x7A] (-> kCode+0x80); mov rdi,rsp; mov esi,cs; ud2
    std::vector<uint8_t> code = { 0xFF, 0x1D, 0x7A, 0, 0, 0, 0x48, 0x89, 0xE7, 0x8C, 0xCE, 0x0F, 0x0B };
    SECTION("through to ring 0 and back")
    {
        start(code, gate(0x08, kRing0, 0xC, 3), 0);
        CHECK(run(m) == 6);
        uint64_t nsp = m.cpu->gpr(RBX);
        CHECK(nsp == 0x70000 - 32);                  // RSP0 from the 64-bit TSS, no realignment
        CHECK(m.cpu->gpr(RCX) == 0);                 // SS = null selector with RPL 0
        CHECK(m.cpu->gpr(RDX) == 0x08);
        CHECK(m.get<uint64_t>(kCopy + 0) == kCode + 6);
        CHECK(m.get<uint64_t>(kCopy + 8) == 0x4B);
        CHECK(m.get<uint64_t>(kCopy + 16) == 0x7F000);
        CHECK(m.get<uint64_t>(kCopy + 24) == 0x43);
        CHECK(m.cpu->gpr(RDI) == 0x7F000);
        CHECK(m.cpu->gpr(RSI) == 0x4B);
    }
    SECTION("offset bits 63:32 come from the upper half")
    {
        start(code, gate(0x08, 0, 0xC, 3), 0x1); // target 0x1'0000'0000: identity-mapped below 1 GiB? no
        // Bits 63:32 = 1 put the target at 4 GiB, outside the 1 GiB identity map: #PF there, with
        // CR2 naming it.
        CHECK(run(m) == 14);
        CHECK(m.cpu->state().cr2 == 0x100000000ull);
    }
    struct Case {
        char const* what;
        uint64_t lo, hi;
        int vec;
        uint32_t err;
    };
    Case cases[] = {
        { "16-bit gate type in long mode", gate(0x08, kRing0, 4, 3), 0, 13, 0x50 },
        { "upper half type not 0", gate(0x08, kRing0, 0xC, 3), uint64_t(0xC) << 40, 13, 0x50 },
        { "gate DPL < CPL", gate(0x08, kRing0, 0xC, 0), 0, 13, 0x50 },
        { "gate not present", gate(0x08, kRing0, 0xC, 3, 0, false), 0, 11, 0x50 },
        { "target is 32-bit code", gate(0x18, kRing0, 0xC, 3), 0, 13, 0x18 },
        { "target not present", gate(0x60, kRing0, 0xC, 3), 0, 11, 0x60 },
    };
    for (auto const& c : cases) {
        INFO(c.what);
        start(code, c.lo, c.hi);
        CHECK(run(m) == c.vec);
        CHECK(stack64(m, 0) == c.err);
        CHECK(stack64(m, 1) == kCode);
    }
    SECTION("gate straddling the GDT limit")
    {
        start(code, gate(0x08, kRing0, 0xC, 3), 0);
        CpuState s = m.cpu->state();
        s.gdtr.limit = 0x57;
        m.cpu->set_state(s);
        CHECK(run(m) == 13);
        CHECK(stack64(m, 0) == 0x50);
    }
}

// The return-CS checks far RET and IRET share (Core::check_return_cs; APM vol 3 "RET (Far)" and
// "IRET" pseudo-code): each refusal faults before anything is popped, with the selector's error
// code, for both instructions.
TEST_CASE("gates: far RET and IRET refuse a bad return CS with the same faults", "[cpu][gates]")
{
    Machine m;
    struct Case {
        char const* what;
        bool cpl3;
        uint16_t sel;
        int vec;
        uint32_t err;
    };
    Case cases[] = {
        { "null CS", false, 0x00, 13, 0 },
        { "CS names a data segment", false, 0x10, 13, 0x10 },
        { "CS beyond the GDT limit", false, 0x1F8, 13, 0x1F8 },
        { "CS.RPL < CPL", true, 0x18, 13, 0x18 },
        { "non-conforming CS with DPL != RPL", false, 0x7B, 13, 0x78 },
        { "CS not present", false, 0x60, 11, 0x60 },
    };
    for (bool iret : { false, true }) {
        for (auto const& c : cases) {
            INFO((iret ? "IRETD: " : "RETF: ") << c.what);
            CpuState s = user32(m, { uint8_t(iret ? 0xCF : 0xCB) }, c.cpl3);
            s.gdtr.limit = 0xFF;
            m.put<uint32_t>(0x7F000, uint32_t(kCode + 0x40)); // EIP
            m.put<uint32_t>(0x7F004, c.sel);                 // CS
            m.put<uint32_t>(0x7F008, 0x2);                   // EFLAGS (IRET only)
            m.cpu->set_state(s);
            CHECK(run(m) == c.vec);
            CHECK(stack32(m, 0) == c.err);
            CHECK(stack32(m, 1) == kCode); // the fault names the RETF/IRET itself
            // Nothing was popped: the stack pointer of the faulting context is where it was.
            if (c.cpl3)
                CHECK(stack32(m, 4) == 0x7F000); // the outer ESP saved on the ring-0 stack
            else
                CHECK(uint32_t(m.cpu->gpr(RSP)) + 16 == 0x7F000); // err, EIP, CS, EFLAGS pushed on it
        }
    }
}
