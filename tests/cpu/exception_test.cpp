// Exceptions and interrupts: vectors, error codes, saved RIP (fault vs trap), stack switches,
// #DF and triple fault (APM vol 2 §8.2, §8.4, §8.9). Every exception stub halts at
// kStubs + 16 * vector, so the halted RIP names the vector.
#include "tests/cpu/harness.h"

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

namespace {
uint64_t stack(Machine& m, int k) { return m.get<uint64_t>(m.cpu->gpr(RSP) + 8 * k); }
uint32_t stack32(Machine& m, int k) { return m.get<uint32_t>(uint32_t(m.cpu->gpr(RSP)) + 4 * k); }

// Code that drops to CPL 3 (64-bit) at kCode + 0x100 with RSP = 0x7F000.
std::vector<uint8_t> to_user64()
{
    std::vector<uint8_t> c = { 0x6A, 0x43, 0x48, 0xC7, 0xC0, 0x00, 0xF0, 0x07, 0x00, 0x50, 0x6A, 0x02, 0x6A, 0x4B,
        0x48, 0xC7, 0xC0, 0x00, 0x01, 0x01, 0x00, 0x50, 0x48, 0xCF };
    return c;
}
} // namespace

TEST_CASE("exceptions: #DE, #UD, #BP, #GP in 64-bit mode", "[cpu][exceptions]")
{
    Machine m;
    SECTION("#DE saves the RIP of the DIV (fault)")
    {
        m.start(Mode::Long64, { 0x31, 0xC9, 0xF7, 0xF1, 0xF4 }); // xor ecx,ecx; div ecx
        m.run();
        CHECK(m.halted_vector() == 0);
        CHECK(stack(m, 0) == kCode + 2);
        CHECK(stack(m, 1) == 0x08);
    }
    SECTION("#DE on quotient overflow")
    {
        // mov edx, 1; mov ecx, 1; div ecx  (EDX:EAX / 1 > 32 bits)
        m.start(Mode::Long64, { 0xBA, 1, 0, 0, 0, 0xB9, 1, 0, 0, 0, 0xF7, 0xF1, 0xF4 });
        m.run();
        CHECK(m.halted_vector() == 0);
        CHECK(stack(m, 0) == kCode + 10);
    }
    SECTION("#UD from UD2 and from an undefined opcode")
    {
        m.start(Mode::Long64, { 0x90, 0x0F, 0x0B });
        m.run();
        CHECK(m.halted_vector() == 6);
        CHECK(stack(m, 0) == kCode + 1);
        m.start(Mode::Long64, { 0x06 }); // PUSH ES is invalid in 64-bit mode
        m.run();
        CHECK(m.halted_vector() == 6);
    }
    SECTION("INT3 is a trap: the saved RIP follows it")
    {
        m.start(Mode::Long64, { 0x90, 0xCC, 0xF4 });
        m.run();
        CHECK(m.halted_vector() == 3);
        CHECK(stack(m, 0) == kCode + 2);
    }
    SECTION("#GP(0) for a non-canonical address, with an error code")
    {
        // mov rax, 0x8000000000000000; mov [rax], eax
        m.start(Mode::Long64, { 0x48, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x89, 0x00 });
        m.run();
        CHECK(m.halted_vector() == 13);
        CHECK(stack(m, 0) == 0);          // error code
        CHECK(stack(m, 1) == kCode + 10); // RIP
        CHECK(m.cpu->gpr(RSP) == kStackTop - 48); // SS, RSP, RFLAGS, CS, RIP, error code
    }
    SECTION("#GP for a privileged instruction at CPL 3, with a stack switch to RSP0")
    {
        auto code = to_user64();
        m.start(Mode::Long64, code);
        m.write(kCode + 0x100, { 0xF4 }); // HLT at CPL 3
        m.run();
        CHECK(m.halted_vector() == 13);
        CHECK(m.cpu->gpr(RSP) == 0x70000 - 48);
        CHECK(stack(m, 0) == 0);
        CHECK(stack(m, 1) == kCode + 0x100);
        CHECK(stack(m, 2) == 0x4B);
        CHECK(stack(m, 4) == 0x7F000);
        CHECK(stack(m, 5) == 0x43);
    }
    SECTION("INT n from CPL 3 needs gate DPL 3")
    {
        auto code = to_user64();
        m.start(Mode::Long64, code);
        m.write(kCode + 0x100, { 0xCD, 0x80, 0xCD, 0x81 });
        m.run();
        CHECK(m.halted_vector() == 0x80);
        CHECK(stack(m, 0) == kCode + 0x102);
        // continue after IRETQ... a second INT to a DPL0 gate is #GP(vector*8+2)
        m.start(Mode::Long64, code);
        m.write(kCode + 0x100, { 0xCD, 0x81 });
        m.run();
        CHECK(m.halted_vector() == 13);
        CHECK(stack(m, 0) == 0x81 * 8 + 2);
    }
    SECTION("IST: a gate with IST=1 switches to IST1 even without a privilege change")
    {
        m.start(Mode::Long64, { 0xCC });
        uint64_t gate = m.get<uint64_t>(kIdt + 16 * 3);
        m.put<uint64_t>(kIdt + 16 * 3, gate | (1ull << 32));
        m.run();
        CHECK(m.halted_vector() == 3);
        CHECK(m.cpu->gpr(RSP) == 0x60000 - 40);
    }
}

TEST_CASE("exceptions: page faults with exact error codes and CR2", "[cpu][exceptions][paging]")
{
    Machine m;
    auto pte = [&](uint64_t va) { return 0x8000 + 8 * (va >> 12); };
    SECTION("not present, write")
    {
        m.start(Mode::Long64, { 0xC7, 0x04, 0x25, 0x10, 0x00, 0x03, 0x00, 0x2A, 0, 0, 0 }); // mov dword [0x30010], 42
        m.put<uint64_t>(pte(0x30000), 0);
        m.run();
        CHECK(m.halted_vector() == 14);
        CHECK(stack(m, 0) == 2);
        CHECK(m.cpu->state().cr2 == 0x30010);
        CHECK(stack(m, 1) == kCode);
    }
    SECTION("write to a read-only page with CR0.WP=1")
    {
        m.start(Mode::Long64, { 0xC7, 0x04, 0x25, 0x10, 0x00, 0x03, 0x00, 0x2A, 0, 0, 0 });
        m.put<uint64_t>(pte(0x30000), 0x30000 | 0x5);
        m.run();
        CHECK(m.halted_vector() == 14);
        CHECK(stack(m, 0) == 3);
    }
    SECTION("instruction fetch from an NX page")
    {
        m.start(Mode::Long64, { 0xE9, 0xFB, 0xFF, 0x01, 0x00 }); // jmp kCode + 0x20000
        m.put<uint64_t>(pte(0x30000), 0x30000 | 0x7 | (1ull << 63));
        m.run();
        CHECK(m.halted_vector() == 14);
        CHECK(stack(m, 0) == 0x11); // P | ID
        CHECK(m.cpu->state().cr2 == 0x30000);
        CHECK(stack(m, 1) == 0x30000);
    }
    SECTION("reserved bit above MAXPHYADDR")
    {
        m.start(Mode::Long64, { 0x8B, 0x04, 0x25, 0x00, 0x00, 0x03, 0x00 }); // mov eax, [0x30000]
        m.put<uint64_t>(pte(0x30000), 0x30000 | 0x7 | (1ull << 50));
        m.run();
        CHECK(m.halted_vector() == 14);
        CHECK(stack(m, 0) == (1 | 8));
    }
    SECTION("user access to a supervisor page")
    {
        auto code = to_user64();
        m.start(Mode::Long64, code);
        m.write(kCode + 0x100, { 0x8B, 0x04, 0x25, 0x00, 0x00, 0x03, 0x00 });
        m.put<uint64_t>(pte(0x30000), 0x30000 | 0x3);
        m.run();
        CHECK(m.halted_vector() == 14);
        CHECK(stack(m, 0) == (1 | 4));
    }
    SECTION("A and D bits are set by the walk")
    {
        m.start(Mode::Long64, { 0xC7, 0x04, 0x25, 0x10, 0x00, 0x03, 0x00, 0x2A, 0, 0, 0, 0xF4 });
        m.run();
        CHECK(m.cpu->halted());
        CHECK((m.get<uint64_t>(pte(0x30000)) & 0x60) == 0x60);
        CHECK((m.get<uint64_t>(pte(kCode)) & 0x60) == 0x20);
        CHECK(m.get<uint32_t>(0x30010) == 42);
    }
}

TEST_CASE("exceptions: double fault and triple fault", "[cpu][exceptions]")
{
    Machine m;
    SECTION("#PF whose handler gate is not present becomes #DF")
    {
        m.start(Mode::Long64, { 0x8B, 0x04, 0x25, 0x00, 0x00, 0x03, 0x00 });
        m.put<uint64_t>(0x8000 + 8 * 0x30, 0);
        uint64_t gate = m.get<uint64_t>(kIdt + 16 * 14);
        m.put<uint64_t>(kIdt + 16 * 14, gate & ~(1ull << 47));
        m.run();
        CHECK(m.halted_vector() == 8);
        CHECK(stack(m, 0) == 0);
    }
    SECTION("an empty IDT: #UD -> #GP -> #DF -> shutdown")
    {
        m.start(Mode::Long64, { 0x0F, 0x0B });
        CpuState s = m.cpu->state();
        s.idtr.limit = 0;
        m.cpu->set_state(s);
        auto r = m.run();
        CHECK(r.reason == StopReason::Shutdown);
        CHECK(m.run().reason == StopReason::Shutdown);
    }
    SECTION("32-bit: #DE pushes EIP, CS, EFLAGS")
    {
        m.start(Mode::Prot32, { 0x31, 0xC9, 0xF7, 0xF1 });
        m.run();
        CHECK(m.halted_vector() == 0);
        CHECK(stack32(m, 0) == kCode + 2);
        CHECK(stack32(m, 1) == 0x18);
        CHECK((stack32(m, 2) & 2) == 2);
    }
}

TEST_CASE("interrupts: external INTR, IF, HLT wake-up, STI shadow, real-mode IVT", "[cpu][interrupts]")
{
    Machine m;
    SECTION("HLT with IF=1 stops; INTR then wakes it into the handler")
    {
        m.start(Mode::Long64, { 0xFB, 0xF4, 0x90 }); // sti; hlt
        auto r = m.run();
        CHECK(r.reason == StopReason::Halted);
        CHECK(m.cpu->rip() == kCode + 2);
        m.io.irq = true;
        m.io.irq_vector = 0x30;
        m.run();
        CHECK(m.halted_vector() == 0x30);
        CHECK(stack(m, 0) == kCode + 2);
        CHECK(!m.io.irq);
    }
    SECTION("IF=0 holds INTR off")
    {
        m.start(Mode::Long64, { 0x90, 0x90, 0xF4 });
        m.io.irq = true;
        m.io.irq_vector = 0x30;
        auto r = m.run();
        CHECK(r.reason == StopReason::Halted);
        CHECK(m.cpu->rip() == kCode + 3);
        CHECK(m.io.irq);
    }
    SECTION("STI shadow: the instruction after STI runs before the interrupt")
    {
        m.start(Mode::Long64, { 0xFB, 0x40 | 0x08, 0xFF, 0xC0, 0xF4 }); // sti; inc rax; hlt
        m.io.irq = true;
        m.io.irq_vector = 0x31;
        m.run();
        CHECK(m.halted_vector() == 0x31);
        CHECK(m.cpu->gpr(RAX) == 1);
        CHECK(stack(m, 0) == kCode + 4);
    }
    SECTION("real mode: INT n through the IVT")
    {
        // IVT[0x21] = 0x1000:0x0100; handler: mov al, 0x55; hlt
        m.start(Mode::Real, { 0xCD, 0x21, 0xF4 });
        m.put<uint32_t>(0x21 * 4, 0x10000100);
        m.write(0x10100, { 0xB0, 0x55, 0xF4 });
        m.run();
        CHECK(m.cpu->halted());
        CHECK(m.cpu->rip() == 0x103);
        CHECK((m.cpu->gpr(RAX) & 0xFF) == 0x55);
        CHECK(m.get<uint16_t>(0x10000 + 0xFFF0 - 6) == 2); // saved IP
    }
}

TEST_CASE("debug: TF single-step traps after one instruction with DR6.BS", "[cpu][exceptions]")
{
    Machine m;
    // pushfq; or qword [rsp], 0x100; popfq; inc rax; inc rax
    m.start(Mode::Long64, { 0x9C, 0x48, 0x81, 0x0C, 0x24, 0x00, 0x01, 0x00, 0x00, 0x9D, 0x48, 0xFF, 0xC0, 0x48, 0xFF, 0xC0 });
    m.run();
    CHECK(m.halted_vector() == 1);
    CHECK(m.cpu->gpr(RAX) == 1);            // the trap follows the first instruction after POPF
    CHECK(stack(m, 0) == kCode + 13);
    CHECK((m.cpu->state().dr6 & (1u << 14)) != 0);
}

TEST_CASE("descriptors: LSL/LAR/VERW report visibility with ZF", "[cpu][exceptions]")
{
    Machine m;
    // mov ecx, 0x10; lsl eax, ecx; setz bl; mov ecx, 0x99; lsl edx, ecx; setz bh
    m.start(Mode::Long64, { 0xB9, 0x10, 0, 0, 0, 0x0F, 0x03, 0xC1, 0x0F, 0x94, 0xC3, 0xB9, 0x99, 0, 0, 0, 0x0F, 0x03, 0xD1, 0x0F, 0x94, 0xC7, 0xF4 });
    m.run();
    CHECK(m.cpu->gpr(RAX) == 0xFFFFFFFF);
    CHECK((m.cpu->gpr(RBX) & 0xFFFF) == 0x0001);
}

TEST_CASE("32-bit privilege: IRET to CPL 3, INT 0x80 through the TSS stack, IRET back", "[cpu][exceptions][modes]")
{
    Machine m;
    std::vector<uint8_t> code = { 0x6A, 0x43, 0x68, 0x00, 0xF0, 0x07, 0x00, 0x6A, 0x02, 0x6A, 0x3B, 0x68, 0x00, 0x01, 0x01, 0x00, 0xCF };
    m.start(Mode::Prot32, code);
    m.write(kCode + 0x100, { 0xCD, 0x80, 0xF4 });
    m.write(kCode + 0x200, { 0xCF });
    m.put<uint32_t>(kTss + 4, 0x70000);
    m.put<uint32_t>(kTss + 8, 0x10);
    CpuState s = m.cpu->state();
    s.tr = Segment { 0x28, 0x8B, 0x67, kTss };
    m.cpu->set_state(s);
    m.run();
    REQUIRE(m.halted_vector() == 0x80);
    CHECK(uint32_t(m.cpu->gpr(RSP)) == 0x70000 - 20);
    CHECK(stack32(m, 0) == kCode + 0x102);
    CHECK(stack32(m, 1) == 0x3B);
    CHECK(stack32(m, 3) == 0x7F000);
    CHECK(stack32(m, 4) == 0x43);
    CpuState k = m.cpu->state();
    CHECK(k.seg[DS].selector == 0); // nulled on the way out to CPL 3 (DPL 0 data)
    k.rip = kCode + 0x200;
    k.halted = false; // CpuState carries HLT's state: resume as if an interrupt had woken it
    m.cpu->set_state(k);
    m.run(); // IRET back to CPL 3, then HLT there is #GP(0)
    CHECK(m.halted_vector() == 13);
    CHECK(stack32(m, 0) == 0);
    CHECK(stack32(m, 1) == kCode + 0x102);
    CHECK(stack32(m, 2) == 0x3B);
}

TEST_CASE("LOCK prefix: #UD on a register destination or a non-RMW instruction", "[cpu][exceptions]")
{
    Machine m;
    m.start(Mode::Long64, { 0xF0, 0x01, 0xC0 }); // lock add eax, eax
    m.run();
    CHECK(m.halted_vector() == 6);
    m.start(Mode::Long64, { 0xF0, 0x8B, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00 }); // lock mov eax, [..]
    m.run();
    CHECK(m.halted_vector() == 6);
    m.start(Mode::Long64, { 0xF0, 0x83, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00, 0x01, 0xF4 }); // lock add dword [..], 1
    m.put<uint32_t>(kData, 41);
    m.run();
    CHECK(m.halted_vector() < 0);
    CHECK(m.get<uint32_t>(kData) == 42);
}

// Regressions found by the random-code test (tests/cpu/fuzz_test.cpp): each fault names the
// instruction and leaves the registers as that instruction found them.
TEST_CASE("exceptions: faults are precise in ENTER, LEAVE, near branches and SYSENTER/SYSEXIT", "[cpu][exceptions]")
{
    Machine m;
    uint64_t const unmapped = 0x50000000; // above the 1 GiB identity map: #PF
    auto run = [&](std::vector<uint8_t> code, std::initializer_list<std::pair<Gpr, uint64_t>> regs) {
        m.start(Mode::Long64, code);
        CpuState s = m.cpu->state();
        for (auto [r, v] : regs) s.gpr[r] = v;
        m.cpu->set_state(s);
        m.run();
    };
    SECTION("ENTER whose frame-pointer copy faults leaves RSP and RBP unchanged")
    {
        run({ 0x90, 0xC8, 0x10, 0x00, 0x02 }, { { RBP, unmapped } }); // nop; enter 16, 2
        REQUIRE(m.halted_vector() == 14);
        CHECK(stack(m, 1) == kCode + 1);  // RIP of the ENTER
        CHECK(stack(m, 4) == kStackTop);  // the RSP it started with
        CHECK(m.cpu->gpr(RBP) == unmapped);
    }
    SECTION("LEAVE whose pop faults leaves RSP unchanged")
    {
        run({ 0xC9 }, { { RBP, unmapped } }); // leave
        REQUIRE(m.halted_vector() == 14);
        CHECK(stack(m, 1) == kCode);
        CHECK(stack(m, 4) == kStackTop);
    }
    uint64_t const noncanonical = 0x0000800000000000ull;
    SECTION("JMP to a non-canonical address: #GP(0) at the JMP")
    {
        run({ 0xFF, 0xE0 }, { { RAX, noncanonical } }); // jmp rax
        REQUIRE(m.halted_vector() == 13);
        CHECK(stack(m, 0) == 0);        // error code
        CHECK(stack(m, 1) == kCode);    // RIP of the JMP, not the target
        CHECK(stack(m, 4) == kStackTop);
    }
    SECTION("CALL to a non-canonical address: #GP(0) before the push")
    {
        run({ 0xFF, 0xD0 }, { { RAX, noncanonical } }); // call rax
        REQUIRE(m.halted_vector() == 13);
        CHECK(stack(m, 1) == kCode);
        CHECK(stack(m, 4) == kStackTop);
    }
    SECTION("RET to a non-canonical address: #GP(0) before the pop")
    {
        run({ 0x50, 0xC3 }, { { RAX, noncanonical } }); // push rax; ret
        REQUIRE(m.halted_vector() == 13);
        CHECK(stack(m, 1) == kCode + 1);
        CHECK(stack(m, 4) == kStackTop - 8);
    }
    SECTION("SYSENTER and SYSEXIT in long mode: #UD, which pushes no error code")
    {
        for (std::vector<uint8_t> code : { std::vector<uint8_t> { 0x0F, 0x34 }, std::vector<uint8_t> { 0x0F, 0x35 } }) {
            run(code, {});
            REQUIRE(m.halted_vector() == 6);
            CHECK(m.cpu->gpr(RSP) == kStackTop - 40); // RIP, CS, RFLAGS, RSP, SS: no error code
            CHECK(stack(m, 0) == kCode);
            CHECK(stack(m, 1) == 0x08);
        }
    }
}

// Implicit supervisor accesses (descriptor tables, IDT, TSS, the pushes of event delivery) are
// served by the TLB's supervisor bank once a walk has filled it. Under SMAP they may not touch a
// user page whatever RFLAGS.AC says (APM vol 2 §5.6.4), while an explicit supervisor access may
// with AC=1: what AC let through must leave no entry an implicit access could use.
TEST_CASE("exceptions: SMAP faults an implicit LDT read of a user page an explicit AC=1 read just used", "[cpu][exceptions][paging]")
{
    for (bool smap : { true, false }) {
        CAPTURE(smap);
        Machine m;
        CpuState s = m.base_state(Mode::Long64);
        // Supervisor 4 KiB pages (U=0 in the leaf) except kData, a user page holding an LDT whose
        // data descriptor 0x14 (index 2) is not yet accessed; the LDT's descriptor is GDT 0x58.
        for (uint64_t k = 0; k < 512; ++k)
            m.put<uint64_t>(0x8000 + 8 * k, (k << 12) | 0x3 | ((k << 12) == kData ? 0x4 : 0));
        m.put<uint64_t>(kData + 0x10, Machine::desc(0, 0xFFFFF, 0xC92));
        m.put<uint64_t>(kGdt + 0x58, Machine::desc(uint32_t(kData), 0xFF, 0x082));
        m.put<uint64_t>(kGdt + 0x60, 0);
        s.gdtr.limit = 0x67;
        if (smap)
            s.cr4 |= cr4::SMAP;
        m.write(kCode, { 0x0F, 0x01, 0xCB,                               // stac
                           0x48, 0x8B, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00, // mov rax, [kData]
                           0x66, 0xB8, 0x58, 0x00, 0x0F, 0x00, 0xD0,       // mov ax, 0x58; lldt ax
                           0x66, 0xB8, 0x14, 0x00,                         // mov ax, 0x14
                           0x8E, 0xD8,                                     // mov ds, ax
                           0xF4 });
        m.cpu->set_state(s);
        m.run();
        if (smap) {
            REQUIRE(m.halted_vector() == 14);
            CHECK(m.cpu->state().cr2 == kData + 0x10);
            CHECK(stack(m, 0) == 1);          // #PF error code: present, read, supervisor
            CHECK(stack(m, 1) == kCode + 22); // the MOV DS
            CHECK(m.get<uint8_t>(kData + 0x15) == 0x92);
        } else {
            REQUIRE(m.halted_vector() == -1);
            CHECK(m.cpu->state().seg[DS].selector == 0x14);
            CHECK(m.get<uint8_t>(kData + 0x15) == 0x93); // the implicit write of the accessed bit
        }
    }
}
