// Hardware task switches (APM vol 2 §12.3; Intel SDM vol 3 §7.3): JMP and CALL to a TSS or a
// task gate, IRET with NT back along the link, INT n and exceptions through task gates in the
// IDT (#DF, the classic case), 16-bit TSSs, CR3 per task, and every check with its fault and
// error code — before the commit point (state untouched, fault in the old task) and after it
// (fault delivered in the new task). Long mode refuses all of it with #GP.
#include "tests/cpu/harness.h"

#include <array>
#include <string>

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;
using sevemu::cpu::rflags::NT;

namespace {

// 32-bit TSS dword slots (§12.2.5).
enum T32 : int { LINK, ESP0, SS0, ESP1, SS1, ESP2, SS2, CR3_, EIP, EFL, EAX_, ECX_, EDX_, EBX_, ESP_, EBP_, ESI_, EDI_,
    ES_, CS_, SS__, DS_, FS_, GS_, LDT, TRAP };
// 16-bit TSS word slots (§12.2.6).
enum T16 : int { L16, SP0_16, SS0_16, SP1_16, SS1_16, SP2_16, SS2_16, IP16, FL16, AX16, CX16, DX16, BX16, SP16, BP16,
    SI16, DI16, ES16, CS16, SS16, DS16, LDT16 };

constexpr uint64_t kTssA = kTss, kTssB = kTss + 0x100, kTssC = kTss + 0x200, kTssD = kTss + 0x300;
constexpr uint64_t kCodeB = kCode + 0x200, kCodeD = kCode + 0x300, kCode16 = 0xA000;

using Tss32 = std::array<uint32_t, 26>;
using Tss16 = std::array<uint16_t, 22>;

uint64_t task_gate(uint16_t tss, unsigned dpl, bool present = true)
{
    return (uint64_t(tss) << 16) | (uint64_t(0x5) << 40) | (uint64_t(dpl) << 45) | (uint64_t(present) << 47);
}
uint32_t stack32(Machine& m, int k) { return m.get<uint32_t>(uint32_t(m.cpu->gpr(RSP)) + 4 * k); }
uint32_t tss32(Machine& m, uint64_t base, int slot) { return m.get<uint32_t>(base + 4 * slot); }
uint16_t tss16(Machine& m, uint64_t base, int slot) { return m.get<uint16_t>(base + 2 * slot); }
uint8_t access_byte(Machine& m, uint16_t sel) { return m.get<uint8_t>(kGdt + (sel & ~7u) + 5); }

// A flat ring-0 task running at `eip` with stack `esp`.
Tss32 task(uint32_t eip, uint32_t esp)
{
    Tss32 t {};
    t[LINK] = 0xDEAD;
    t[ESP0] = 0x5F000;
    t[SS0] = 0x10;
    t[EIP] = eip;
    t[EFL] = 2;
    for (int k = 0; k < 8; ++k) t[EAX_ + k] = 0xB0000000u + k;
    t[ESP_] = esp;
    t[ES_] = t[SS__] = t[DS_] = t[FS_] = t[GS_] = 0x10;
    t[CS_] = 0x18;
    t[TRAP] = 0x68u << 16;
    return t;
}

// GDT beyond the harness's: 0x28 TSS A (current, busy), 0x50 TSS B, 0x58 task gate -> B (DPL 3),
// 0x60 16-bit TSS C, 0x68 TSS D (the #DF task), 0x70 an LDT, 0x78 data with limit 0xFFF at
// 0x40000, 0x80 16-bit data, 0x88 data not present, 0x90 code not present.
struct Setup {
    Machine& m;
    CpuState s;
    Tss32 a {}, b, d;
    Tss16 c {};

    explicit Setup(Machine& mm)
        : m(mm)
        , b(task(kCodeB, 0x50000))
        , d(task(kCodeD, 0x58000))
    {
        s = m.base_state(Mode::Prot32);
        s.gdtr.limit = 0xFF;
        s.tr = Segment { 0x28, 0x8B, 0x67, kTssA };
        m.put<uint64_t>(kGdt + 0x28, Machine::desc(kTssA, 0x67, 0x8B));
        m.put<uint64_t>(kGdt + 0x50, Machine::desc(kTssB, 0x67, 0x89));
        m.put<uint64_t>(kGdt + 0x58, task_gate(0x50, 3));
        m.put<uint64_t>(kGdt + 0x60, Machine::desc(kTssC, 0x2B, 0x81));
        m.put<uint64_t>(kGdt + 0x68, Machine::desc(kTssD, 0x67, 0x89));
        m.put<uint64_t>(kGdt + 0x70, Machine::desc(0x30000, 0xFF, 0x82));
        m.put<uint64_t>(kGdt + 0x78, Machine::desc(0x40000, 0xFFF, 0x093));
        m.put<uint64_t>(kGdt + 0x80, Machine::desc(0, 0xFFFF, 0x093));
        m.put<uint64_t>(kGdt + 0x88, Machine::desc(0, 0xFFFFF, 0xC13));
        m.put<uint64_t>(kGdt + 0x90, Machine::desc(0, 0xFFFFF, 0xC1B));
        a[ESP0] = 0x70000;
        a[SS0] = 0x10;
        a[TRAP] = 0x68u << 16;
        c[L16] = 0xBEEF;
        c[IP16] = uint16_t(kCode16);
        c[FL16] = 2;
        c[AX16] = 0x1234;
        c[BX16] = 0x5678;
        c[SP16] = 0x9000;
        c[CS16] = 0x20;
        c[SS16] = 0x80;
        c[DS16] = c[ES16] = 0x10;
        for (int k = 0; k < 8; ++k) s.gpr[k] = 0xA0000000u + k;
        s.gpr[RSP] = kStackTop;
    }
    void go(std::vector<uint8_t> const& code)
    {
        m.write(kTssA, a.data(), sizeof a);
        m.write(kTssB, b.data(), sizeof b);
        m.write(kTssC, c.data(), sizeof c);
        m.write(kTssD, d.data(), sizeof d);
        m.write(kCode, code);
        m.cpu->set_state(s);
        m.run();
    }
};

std::vector<uint8_t> far32(uint8_t op, uint16_t sel) { return { op, 0, 0, 0, 0, uint8_t(sel), uint8_t(sel >> 8), 0xF4 }; }
constexpr uint8_t kJmp = 0xEA, kCall = 0x9A;
// Task B's code when it should return: pushfd; pop ebp; mov dl,[access byte of A]; mov dh,[of B]; iretd
const std::vector<uint8_t> kReturner = { 0x9C, 0x5D, 0x8A, 0x15, 0x2D, 0x05, 0, 0, 0x8A, 0x35, 0x55, 0x05, 0, 0, 0xCF };

} // namespace

TEST_CASE("task: JMP to a TSS switches tasks without nesting", "[cpu][task]")
{
    Machine m;
    Setup t(m);
    m.write(kCodeB, { 0xF4 });
    t.go({ 0xB8, 0x11, 0x11, 0x11, 0x11, 0xEA, 0, 0, 0, 0, 0x50, 0x00, 0xF4 }); // mov eax,0x11111111; jmp 0x50:0
    CpuState s = m.cpu->state();
    REQUIRE(m.cpu->halted());
    CHECK(s.rip == kCodeB + 1);
    CHECK(s.tr.selector == 0x50);
    CHECK(s.tr.base == kTssB);
    CHECK((s.tr.attr & 0xF) == 0xB);
    CHECK(s.gpr[RAX] == 0xB0000000u);
    CHECK(s.gpr[RDI] == 0xB0000007u);
    CHECK(s.gpr[RSP] == 0x50000);
    CHECK((s.rflags & NT) == 0);                 // JMP does not nest
    CHECK((s.cr0 & cr0::TS) != 0);               // every switch sets CR0.TS
    CHECK(s.seg[CS].selector == 0x18);
    CHECK(s.seg[SS].selector == 0x10);
    CHECK(access_byte(m, 0x28) == 0x89);         // old task no longer busy
    CHECK(access_byte(m, 0x50) == 0x8B);         // new task busy
    CHECK(tss32(m, kTssB, LINK) == 0xDEAD);      // link untouched
    // The outgoing state in TSS A: EIP after the JMP, the registers, the selectors.
    CHECK(tss32(m, kTssA, EIP) == kCode + 12);
    CHECK(tss32(m, kTssA, EAX_) == 0x11111111u);
    CHECK(tss32(m, kTssA, ECX_) == 0xA0000001u);
    CHECK(tss32(m, kTssA, ESP_) == kStackTop);
    CHECK(tss32(m, kTssA, EFL) == 2);
    CHECK(tss32(m, kTssA, CS_) == 0x18);
    CHECK(tss32(m, kTssA, SS__) == 0x10);
    CHECK(tss32(m, kTssA, GS_) == 0x10);
}

TEST_CASE("task: CALL through a task gate nests; IRET returns along the link", "[cpu][task]")
{
    Machine m;
    Setup t(m);
    m.write(kCodeB, kReturner);
    t.go(far32(kCall, 0x5B)); // RPL 3 against a DPL-3 gate: allowed
    CpuState s = m.cpu->state();
    REQUIRE(m.cpu->halted());
    CHECK(s.rip == kCode + 8);              // back after the CALL, in task A
    CHECK(s.tr.selector == 0x28);
    for (int k = 0; k < 8; ++k)
        if (k != RSP) CHECK(s.gpr[k] == 0xA0000000u + k);
    CHECK(s.gpr[RSP] == kStackTop);
    CHECK((s.rflags & NT) == 0);            // A's own flags, as saved
    // While B ran: NT set, both tasks busy; B's link named A.
    CHECK(tss32(m, kTssB, EBP_) == (2u | NT));
    CHECK((tss32(m, kTssB, EDX_) & 0xFFFF) == 0x8B8B);
    CHECK(tss32(m, kTssB, LINK) == 0x28);
    CHECK(tss32(m, kTssB, EIP) == kCodeB + kReturner.size()); // B resumes after its IRET
    CHECK((tss32(m, kTssB, EFL) & NT) == 0);                  // IRET clears NT in B's image
    CHECK(access_byte(m, 0x50) == 0x89);                       // B available again
    CHECK(access_byte(m, 0x28) == 0x8B);
    CHECK(tss32(m, kTssA, EIP) == kCode + 7);
}

TEST_CASE("task: INT n and exceptions through task gates", "[cpu][task]")
{
    Machine m;
    SECTION("INT 0x40 through a task gate and IRET back")
    {
        Setup t(m);
        m.put<uint64_t>(kIdt + 8 * 0x40, task_gate(0x50, 0));
        m.write(kCodeB, kReturner);
        t.go({ 0xCD, 0x40, 0xF4 });
        CpuState s = m.cpu->state();
        REQUIRE(m.cpu->halted());
        CHECK(s.rip == kCode + 3);
        CHECK(s.tr.selector == 0x28);
        CHECK(tss32(m, kTssB, EBP_) == (2u | NT));
        CHECK(tss32(m, kTssB, LINK) == 0x28);
        CHECK(tss32(m, kTssA, EIP) == kCode + 2);
    }
    SECTION("#DF through a task gate: a stack fault while delivering a stack fault")
    {
        Setup t(m);
        m.put<uint64_t>(kIdt + 8 * 8, task_gate(0x68, 0));
        m.write(kCodeD, { 0xF4 });
        // mov ax,0x78; mov ss,ax; mov esp,4; ud2 — #UD cannot be pushed (#SS), nor can #SS: #DF
        t.go({ 0x66, 0xB8, 0x78, 0x00, 0x8E, 0xD0, 0xBC, 0x04, 0, 0, 0, 0x0F, 0x0B });
        CpuState s = m.cpu->state();
        REQUIRE(m.cpu->halted());
        CHECK(s.rip == kCodeD + 1);
        CHECK(s.tr.selector == 0x68);
        CHECK(s.gpr[RSP] == 0x58000 - 4);
        CHECK(stack32(m, 0) == 0);                 // #DF's error code, 32 bits for a 32-bit TSS
        CHECK((s.rflags & NT) != 0);
        CHECK(tss32(m, kTssD, LINK) == 0x28);
        CHECK(tss32(m, kTssA, EIP) == kCode + 11); // the faulting UD2
        CHECK(tss32(m, kTssA, ESP_) == 4);
        CHECK(tss32(m, kTssA, SS__) == 0x78);
        CHECK(access_byte(m, 0x28) == 0x8B);
        CHECK(access_byte(m, 0x68) == 0x8B);
    }
    SECTION("#GP with its error code through a task gate")
    {
        Setup t(m);
        m.put<uint64_t>(kIdt + 8 * 13, task_gate(0x68, 0));
        m.write(kCodeD, { 0xF4 });
        t.go(far32(kJmp, 0x28)); // JMP to the busy current TSS: #GP(0x28)
        CpuState s = m.cpu->state();
        REQUIRE(m.cpu->halted());
        CHECK(s.tr.selector == 0x68);
        CHECK(stack32(m, 0) == 0x28);
        CHECK(tss32(m, kTssA, EIP) == kCode);
    }
    SECTION("INT n from CPL 3 through a DPL-0 task gate is #GP(vector*8+2)")
    {
        Setup t(m);
        m.put<uint64_t>(kIdt + 8 * 0x40, task_gate(0x50, 0));
        t.s.seg[CS] = Segment { 0x3B, 0xCFB, 0xFFFFFFFF, 0 };
        for (unsigned k : { ES, SS, DS, FS, GS })
            t.s.seg[k] = Segment { 0x43, 0xCF3, 0xFFFFFFFF, 0 };
        t.go({ 0xCD, 0x40, 0xF4 });
        CHECK(m.halted_vector() == 13);
        CHECK(stack32(m, 0) == 0x40 * 8 + 2);
        CHECK(m.cpu->state().tr.selector == 0x28);
    }
    SECTION("an external interrupt through a task gate")
    {
        Setup t(m);
        m.put<uint64_t>(kIdt + 8 * 0x30, task_gate(0x50, 0));
        m.write(kCodeB, kReturner);
        t.s.rflags = 0x202;
        m.io.irq = true;
        m.io.irq_vector = 0x30;
        t.go({ 0x90, 0xF4 });
        CpuState s = m.cpu->state();
        CHECK(s.tr.selector == 0x28);
        CHECK(tss32(m, kTssB, LINK) == 0x28);
        CHECK(tss32(m, kTssA, EIP) == kCode); // interrupted before its first instruction
        CHECK(s.rip == kCode + 2);
    }
}

TEST_CASE("task: a 16-bit (286) TSS", "[cpu][task]")
{
    Machine m;
    Setup t(m);
    // pushf; pop bp; mov [0x2000],eax; iret (16-bit code at 0xA000, CS 0x20, SS 0x80)
    m.write(kCode16, { 0x9C, 0x5D, 0x66, 0xA3, 0x00, 0x20, 0xCF });
    t.go(far32(kCall, 0x60));
    CpuState s = m.cpu->state();
    REQUIRE(m.cpu->halted());
    CHECK(s.rip == kCode + 8);
    CHECK(s.tr.selector == 0x28);
    CHECK(s.gpr[RBX] == 0xA0000003u); // 32-bit registers restored whole from TSS A
    CHECK(m.get<uint32_t>(0x2000) == 0xFFFF1234u); // upper halves read as ones from a 16-bit TSS
    CHECK(tss16(m, kTssC, BP16) == (2u | NT));
    CHECK(tss16(m, kTssC, IP16) == kCode16 + 7);
    CHECK(tss16(m, kTssC, L16) == 0x28);
    CHECK(tss16(m, kTssC, SP16) == 0x9000);
    CHECK(access_byte(m, 0x60) == 0x81);
}

TEST_CASE("task: CR3 comes from the new TSS under paging", "[cpu][task]")
{
    Machine m;
    Setup t(m);
    // Two 32-bit page directories of 4 MiB pages; B's maps 4 MiB..8 MiB to 8 MiB.
    for (uint32_t k = 0; k < 8; ++k) {
        m.put<uint32_t>(0x1000 + 4 * k, (k << 22) | 0x87);
        m.put<uint32_t>(0x2000 + 4 * k, ((k == 1 ? 2 : k) << 22) | 0x87);
    }
    m.put<uint32_t>(0x400000, 0x11111111);
    m.put<uint32_t>(0x800000, 0xCAFEBABE);
    t.s.cr0 |= cr0::PG;
    t.s.cr4 |= cr4::PSE;
    t.s.cr3 = 0x1000;
    t.b[CR3_] = 0x2000;
    t.a[CR3_] = 0x1000;
    m.write(kCodeB, { 0xA1, 0x00, 0x00, 0x40, 0x00, 0xF4 }); // mov eax,[0x400000]
    // mov ebx,[0x400000]; jmp 0x50:0
    t.go({ 0x8B, 0x1D, 0x00, 0x00, 0x40, 0x00, 0xEA, 0, 0, 0, 0, 0x50, 0x00 });
    CpuState s = m.cpu->state();
    REQUIRE(m.cpu->halted());
    CHECK(s.cr3 == 0x2000);
    CHECK(s.gpr[RAX] == 0xCAFEBABEu);
    CHECK(tss32(m, kTssA, EBX_) == 0x11111111u);
}

TEST_CASE("task: the TSS T bit traps before the new task's first instruction", "[cpu][task]")
{
    Machine m;
    Setup t(m);
    t.b[TRAP] |= 1;
    m.write(kCodeB, { 0xF4 });
    t.go(far32(kJmp, 0x50));
    CHECK(m.halted_vector() == 1);
    CHECK(stack32(m, 0) == kCodeB);
    CHECK((m.cpu->state().dr6 & (1u << 15)) != 0);
}

TEST_CASE("task: checks before the commit point fault in the old task", "[cpu][task]")
{
    Machine m;
    struct Case {
        char const* what;
        uint8_t op;
        uint16_t sel;
        uint64_t b_desc;
        uint32_t tr_limit;
        int vec;
        uint32_t err;
    };
    uint64_t const avail = Machine::desc(kTssB, 0x67, 0x89);
    Case cases[] = {
        { "JMP to the busy current TSS", kJmp, 0x28, avail, 0x67, 13, 0x28 },
        { "CALL to a busy TSS through a task gate", kCall, 0x58, Machine::desc(kTssB, 0x67, 0x8B), 0x67, 13, 0x50 },
        { "new TSS limit below 0x67", kJmp, 0x50, Machine::desc(kTssB, 0x60, 0x89), 0x67, 10, 0x50 },
        { "old TSS limit too small for the saved state", kJmp, 0x50, avail, 0x50, 10, 0x28 },
        { "TSS not present", kJmp, 0x50, Machine::desc(kTssB, 0x67, 0x09), 0x67, 11, 0x50 },
        { "TSS DPL < RPL", kJmp, 0x53, avail, 0x67, 13, 0x50 },
        { "task gate DPL < RPL", kCall, 0x70 | 3, avail, 0x67, 13, 0x70 },
        { "task gate not present", kJmp, 0x98, avail, 0x67, 11, 0x98 },
        { "TSS selector in the LDT", kJmp, 0x54, avail, 0x67, 13, 0x54 },
    };
    for (auto const& c : cases) {
        INFO(c.what);
        Setup t(m);
        m.put<uint64_t>(kGdt + 0x50, c.b_desc);
        m.put<uint64_t>(kGdt + 0x70, task_gate(0x50, 0)); // replaces the LDT descriptor
        m.put<uint64_t>(kGdt + 0x98, task_gate(0x50, 0, false));
        t.s.tr.limit = c.tr_limit;
        t.s.ldtr = Segment { 0x70, 0x82, 0xFF, kGdt }; // an LDT aliasing the GDT (for TI=1)
        t.go(far32(c.op, c.sel));
        CHECK(m.halted_vector() == c.vec);
        CHECK(stack32(m, 0) == c.err);
        CHECK(stack32(m, 1) == kCode); // fault in task A, at the far JMP/CALL
        CpuState s = m.cpu->state();
        CHECK(s.tr.selector == 0x28);
        CHECK((s.cr0 & cr0::TS) == 0);
        CHECK(tss32(m, kTssA, EIP) == 0); // nothing saved
    }
}

TEST_CASE("task: checks after the commit point fault in the new task", "[cpu][task]")
{
    Machine m;
    struct Case {
        char const* what;
        int slot;
        uint32_t value;
        int vec;
        uint32_t err;
        bool ring0_stack; // delivered on TSS B's ESP0 (SS not loaded yet: CPL reads 3)
    };
    Case cases[] = {
        { "LDT selector names a data segment", LDT, 0x10, 10, 0x10, true },
        { "LDT selector with TI=1", LDT, 0x74, 10, 0x74, true },
        { "null SS", SS__, 0, 10, 0, true },
        { "SS is code", SS__, 0x18, 10, 0x18, true },
        { "SS RPL != CS RPL", SS__, 0x13, 10, 0x10, true },
        { "SS not present", SS__, 0x88, 12, 0x88, true },
        { "SS beyond the GDT", SS__, 0x1F0, 10, 0x1F0, true },
        { "DS not present", DS_, 0x88, 11, 0x88, false },
        { "DS is execute-only code", DS_, 0x90, 10, 0x90, false },
        { "CS is data", CS_, 0x10, 10, 0x10, false },
        { "CS DPL != RPL", CS_, 0x38, 10, 0x38, false },
        { "CS not present", CS_, 0x90, 11, 0x90, false },
        { "EIP beyond the CS limit", CS_, 0x20, 13, 0, false },
    };
    for (auto const& c : cases) {
        INFO(c.what);
        Setup t(m);
        t.b[c.slot] = c.value;
        if (std::string(c.what) == "DS is execute-only code")
            m.put<uint64_t>(kGdt + 0x90, Machine::desc(0, 0xFFFFF, 0xC99)); // execute-only, present
        t.go(far32(kJmp, 0x50));
        CHECK(m.halted_vector() == c.vec);
        CHECK(stack32(m, 0) == c.err);
        CHECK(stack32(m, 1) == kCodeB); // the new task's EIP
        CHECK(m.cpu->state().tr.selector == 0x50);
        CHECK(uint32_t(m.cpu->gpr(RSP)) == (c.ring0_stack ? 0x5F000 - 24 : 0x50000 - 16));
        CHECK(tss32(m, kTssA, EIP) == kCode + 7); // the old task was saved
    }
}

TEST_CASE("task: IRET with NT", "[cpu][task]")
{
    Machine m;
    SECTION("link to a TSS that is not busy is #TS(link)")
    {
        Setup t(m);
        t.a[LINK] = 0x50;
        t.s.rflags = 2 | NT;
        t.go({ 0xCF });
        CHECK(m.halted_vector() == 10);
        CHECK(stack32(m, 0) == 0x50);
    }
    SECTION("link to a data segment is #TS(link); TI=1 likewise")
    {
        Setup t(m);
        t.a[LINK] = 0x10;
        t.s.rflags = 2 | NT;
        t.go({ 0xCF });
        CHECK(m.halted_vector() == 10);
        CHECK(stack32(m, 0) == 0x10);
        Setup t2(m);
        t2.a[LINK] = 0x54;
        t2.s.rflags = 2 | NT;
        t2.go({ 0xCF });
        CHECK(m.halted_vector() == 10);
        CHECK(stack32(m, 0) == 0x54);
    }
    SECTION("JMP to a task that then IRETs to a busy link")
    {
        // B was entered by JMP, but its link names A, which a test marks busy by hand.
        Setup t(m);
        t.b[LINK] = 0x68;
        t.b[EFL] = 2 | NT;
        m.put<uint64_t>(kGdt + 0x68, Machine::desc(kTssD, 0x67, 0x8B));
        m.write(kCodeB, { 0xCF });
        m.write(kCodeD, { 0xF4 });
        t.go(far32(kJmp, 0x50));
        CpuState s = m.cpu->state();
        REQUIRE(m.cpu->halted());
        CHECK(s.tr.selector == 0x68);
        CHECK(s.rip == kCodeD + 1);
        CHECK(access_byte(m, 0x50) == 0x89); // IRET frees the task it leaves
        CHECK(access_byte(m, 0x68) == 0x8B); // and leaves the one it enters busy
    }
}

TEST_CASE("task: long mode refuses task switches with #GP", "[cpu][task]")
{
    Machine m;
    SECTION("far JMP to a TSS descriptor")
    {
        m.start(Mode::Long64, { 0xFF, 0x2C, 0x25, 0x00, 0x00, 0x02, 0x00 }); // jmp far [0x20000]
        m.write(kData, { 0, 0, 0, 0, 0x28, 0 });
        m.run();
        CHECK(m.halted_vector() == 13);
        CHECK(m.get<uint64_t>(m.cpu->gpr(RSP)) == 0x28);
    }
    SECTION("IRETQ with NT = 1")
    {
        // pushfq; or qword [rsp],0x4000; popfq; iretq
        m.start(Mode::Long64, { 0x9C, 0x48, 0x81, 0x0C, 0x24, 0x00, 0x40, 0x00, 0x00, 0x9D, 0x48, 0xCF });
        m.run();
        CHECK(m.halted_vector() == 13);
        CHECK(m.get<uint64_t>(m.cpu->gpr(RSP)) == 0);
        CHECK(m.get<uint64_t>(m.cpu->gpr(RSP) + 8) == kCode + 10);
    }
    SECTION("a task gate in the IDT")
    {
        m.start(Mode::Long64, { 0xCD, 0x40 });
        m.put<uint64_t>(kIdt + 16 * 0x40, task_gate(0x28, 0));
        m.put<uint64_t>(kIdt + 16 * 0x40 + 8, 0);
        m.run();
        CHECK(m.halted_vector() == 13);
        CHECK(m.get<uint64_t>(m.cpu->gpr(RSP)) == 0x40 * 8 + 2);
    }
}

TEST_CASE("task: the new task's LDT and LDT-relative selectors", "[cpu][task]")
{
    Machine m;
    Setup t(m);
    // LDT at 0x30000 (GDT 0x70): entry 1 = data DPL0, base 0x20000.
    m.put<uint64_t>(0x30008, Machine::desc(0x20000, 0xFFFF, 0x093));
    m.put<uint32_t>(0x20000 + 0x40, 0x600DF00D);
    t.b[LDT] = 0x70;
    t.b[DS_] = 0x0C; // LDT index 1
    m.write(kCodeB, { 0xA1, 0x40, 0x00, 0x00, 0x00, 0xF4 }); // mov eax,[0x40]
    t.go(far32(kCall, 0x50)); // CALL straight to the TSS descriptor
    CpuState s = m.cpu->state();
    REQUIRE(m.cpu->halted());
    CHECK(s.gpr[RAX] == 0x600DF00Du);
    CHECK(s.ldtr.selector == 0x70);
    CHECK(s.ldtr.base == 0x30000);
    CHECK(s.seg[DS].base == 0x20000);
    CHECK((s.rflags & NT) != 0);
    CHECK(tss32(m, kTssB, LINK) == 0x28);
    CHECK((m.get<uint8_t>(0x30008 + 5) & 1) == 1); // the LDT descriptor got its accessed bit
}
