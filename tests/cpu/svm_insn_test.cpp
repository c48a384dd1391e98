// SVM instructions executed by interpreted host code (APM vol 2 §15): a 64-bit host at CPL 0
// enables EFER.SVME, points VM_HSAVE_PA at a page, builds a VMCB and executes VMRUN; the guest
// runs until an intercept, #VMEXIT writes the exit information and the host continues after
// VMRUN. The VMCB is built with cpu/svm/vmcb.h's layout (checked there against the APM's offsets).
#include "cpu/svm/vmcb.h"
#include "tests/cpu/harness.h"

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;
using namespace sevemu::cpu::svm;

namespace {

constexpr uint64_t kVmcb = 0x40000, kIopm = 0x42000, kHsave = 0x50000, kGuestCode = 0x30000;

// wrmsr VM_HSAVE_PA = kHsave; EFER |= SVME (unless skip_svme); rax = kVmcb; vmrun;
// mov rbx, [kVmcb + 0x70] (EXITCODE); hlt
std::vector<uint8_t> host_program(bool enable_svme = true)
{
    std::vector<uint8_t> p = { 0xB9, 0x17, 0x01, 0x01, 0xC0, 0xB8, 0x00, 0x00, 0x05, 0x00, 0x31, 0xD2, 0x0F, 0x30 };
    if (enable_svme)
        p.insert(p.end(), { 0xB9, 0x80, 0x00, 0x00, 0xC0, 0x0F, 0x32, 0x0D, 0x00, 0x10, 0x00, 0x00, 0x0F, 0x30 });
    p.insert(p.end(), { 0xB8, 0x00, 0x00, 0x04, 0x00, 0x0F, 0x01, 0xD8, 0x48, 0x8B, 0x1C, 0x25, 0x70, 0x00, 0x04, 0x00, 0xF4 });
    return p;
}
constexpr uint64_t kHostRipAfterVmrun = kCode + 14 + 14 + 8; // the MOV RBX after VMRUN

void set_intercept(VmcbControlArea& c, Intercept i) { c.intercepts[unsigned(i) / 32] |= 1u << (unsigned(i) % 32); }

// A 32-bit protected-mode guest without nested paging (guest physical = host physical).
Vmcb guest_vmcb(uint32_t asid = 1)
{
    Vmcb v {};
    set_intercept(v.control, Intercept::VMRUN);
    set_intercept(v.control, Intercept::VMMCALL);
    set_intercept(v.control, Intercept::IOIO_PROT);
    v.control.iopm_base_pa = kIopm;
    v.control.asid = asid;
    auto& s = v.save;
    s.cs = VmcbSeg { 0x18, 0xC9B, 0xFFFFFFFF, 0 };
    s.ds = s.es = s.ss = s.fs = s.gs = VmcbSeg { 0x10, 0xC93, 0xFFFFFFFF, 0 };
    s.cr0 = 0x11;
    s.efer = efer::SVME;
    s.rflags = 2;
    s.rip = kGuestCode;
    s.rsp = 0x38000;
    s.dr6 = 0xFFFF0FF0;
    s.dr7 = 0x400;
    return v;
}

void setup(Machine& m, Vmcb const& v, std::vector<uint8_t> const& guest_code, bool enable_svme = true)
{
    m.start(Mode::Long64, host_program(enable_svme));
    REQUIRE(write_vmcb(*m.mc, Spa(kVmcb), v).has_value());
    m.write(kIopm, std::vector<uint8_t>(12 * 1024, 0xFF));
    m.write(kGuestCode, guest_code);
}

Vmcb vmcb_after(Machine& m)
{
    auto v = read_vmcb(*m.mc, Spa(kVmcb));
    REQUIRE(v.has_value());
    return *v;
}

} // namespace

TEST_CASE("svm: VMRUN from interpreted host code, VMMCALL intercept, #VMEXIT back after VMRUN", "[cpu][svm]")
{
    Machine m;
    // mov ecx, 0x77; mov eax, 0x1234; vmmcall
    setup(m, guest_vmcb(), { 0xB9, 0x77, 0x00, 0x00, 0x00, 0xB8, 0x34, 0x12, 0x00, 0x00, 0x0F, 0x01, 0xD9 });
    m.run();
    REQUIRE(m.cpu->halted());
    auto s = m.cpu->state();
    CHECK(s.gpr[RBX] == exitcode::SVM_EXIT_VMMCALL);
    CHECK(s.gpr[RCX] == 0x77);        // guest GPRs other than RAX/RSP stay in the registers (§15.6)
    CHECK(s.gpr[RAX] == kVmcb);       // RAX is the host's again
    CHECK(s.gpr[RSP] == kStackTop);
    CHECK(s.rip == kHostRipAfterVmrun + 9);
    CHECK((s.efer & efer::LMA) != 0); // the host's mode is back
    Vmcb v = vmcb_after(m);
    CHECK(v.save.rax == 0x1234);      // the guest's RAX went to the VMCB
    CHECK(v.save.rip == kGuestCode + 10);
    CHECK(v.control.next_rip == kGuestCode + 13);
    CHECK(v.control.exit_int_info == 0);
}

TEST_CASE("svm: IOIO intercept reports the port, size and next RIP", "[cpu][svm]")
{
    Machine m;
    // mov al, 5; out 0x80, al
    setup(m, guest_vmcb(), { 0xB0, 0x05, 0xE6, 0x80 });
    m.run();
    REQUIRE(m.cpu->halted());
    CHECK(m.cpu->state().gpr[RBX] == exitcode::SVM_EXIT_IOIO);
    Vmcb v = vmcb_after(m);
    // APM vol 2 Figure 15-2: PORT [31:16], SZ8 [4], A32 [8], OUT (TYPE 0).
    CHECK(v.control.exit_info_1 == ((0x80ull << 16) | (1u << 4) | (1u << 8)));
    CHECK(v.control.exit_info_2 == kGuestCode + 4);
    CHECK(v.save.rip == kGuestCode + 2); // the OUT did not retire
    CHECK(m.io.outs.empty());           // and never reached the device
}

TEST_CASE("svm: an intercepted exception is a #VMEXIT with the error code", "[cpu][svm]")
{
    Machine m;
    Vmcb vm = guest_vmcb();
    set_intercept(vm.control, Intercept(unsigned(Intercept::EXCEPTION_OFFSET) + 13));
    // mov ax, 0x55; mov ds, ax -> #GP(0x54): selector beyond the (empty) guest GDT
    setup(m, vm, { 0x66, 0xB8, 0x55, 0x00, 0x8E, 0xD8 });
    m.run();
    CHECK(m.cpu->state().gpr[RBX] == exitcode::SVM_EXIT_EXCP_BASE + 13);
    Vmcb v = vmcb_after(m);
    CHECK(v.control.exit_info_1 == 0x54);
    CHECK(v.save.rip == kGuestCode + 4);
}

TEST_CASE("svm: VMRUN needs EFER.SVME, and a bad VMCB fails its checks with VMEXIT_INVALID", "[cpu][svm]")
{
    {
        Machine m;
        setup(m, guest_vmcb(), { 0x0F, 0x01, 0xD9 }, false);
        m.run();
        CHECK(m.halted_vector() == 6); // #UD
    }
    {
        Machine m;
        setup(m, guest_vmcb(0), { 0x0F, 0x01, 0xD9 }); // ASID 0 is the host's
        m.run();
        REQUIRE(m.cpu->halted());
        CHECK(m.cpu->state().gpr[RBX] == exitcode::VMEXIT_INVALID);
        CHECK(m.cpu->state().rip == kHostRipAfterVmrun + 9);
    }
    {
        // CR4.VME is MBZ on this CPU model (VME is not implemented): the guest state is illegal.
        Machine m;
        Vmcb v = guest_vmcb();
        v.save.cr4 = cr4::VME;
        setup(m, v, { 0x0F, 0x01, 0xD9 });
        m.run();
        REQUIRE(m.cpu->halted());
        CHECK(m.cpu->state().gpr[RBX] == exitcode::VMEXIT_INVALID);
    }
}

TEST_CASE("svm: VMMCALL in the host is #UD; STGI/CLGI outside SVME are #UD", "[cpu][svm]")
{
    for (auto insn : { std::vector<uint8_t> { 0x0F, 0x01, 0xD9 }, std::vector<uint8_t> { 0x0F, 0x01, 0xDC },
             std::vector<uint8_t> { 0x0F, 0x01, 0xDD }, std::vector<uint8_t> { 0x0F, 0x01, 0xDA } }) {
        Machine m;
        m.start(Mode::Long64, insn);
        m.run();
        CHECK(m.halted_vector() == 6);
    }
}

TEST_CASE("svm: VMGEXIT (F3 0F 01 D9) outside an SEV-ES guest behaves as VMMCALL", "[cpu][svm]")
{
    {
        // In the host: #UD, as VMMCALL.
        Machine m;
        m.start(Mode::Long64, { 0xF3, 0x0F, 0x01, 0xD9 });
        m.run();
        CHECK(m.halted_vector() == 6);
    }
    // In a guest without SEV-ES: the VMMCALL intercept (0x81), not the automatic exit 0x403.
    Machine m;
    setup(m, guest_vmcb(), { 0xB8, 0x34, 0x12, 0x00, 0x00, 0xF3, 0x0F, 0x01, 0xD9 });
    m.run();
    REQUIRE(m.cpu->halted());
    CHECK(m.cpu->state().gpr[RBX] == exitcode::SVM_EXIT_VMMCALL);
    CHECK(vmcb_after(m).control.next_rip == kGuestCode + 9);
}

TEST_CASE("svm: the TASK_SWITCH intercept fires after the new TSS's checks", "[cpu][svm][task]")
{
    Machine m;
    SECTION("JMP to a TSS: EXITINFO1 = the TSS selector, EXITINFO2 bit 38")
    {
        Vmcb v = guest_vmcb();
        set_intercept(v.control, Intercept::TASK_SWITCH);
        v.save.gdtr = VmcbSeg { 0, 0, 0x57, kGdt }; // the harness GDT: 0x28 is an available TSS
        v.save.tr = VmcbSeg { 0, 0x8B, 0x67, 0x6000 };
        setup(m, v, { 0xEA, 0, 0, 0, 0, 0x28, 0x00 }); // jmp far 0x28:0
        m.run();
        REQUIRE(m.cpu->halted());
        Vmcb o = vmcb_after(m);
        CHECK(o.control.exit_code == exitcode::SVM_EXIT_TASK_SWITCH);
        CHECK(o.control.exit_info_1 == 0x28);
        CHECK(o.control.exit_info_2 == (1ull << 38));
        CHECK(o.save.rip == kGuestCode); // the JMP did not happen
    }
    SECTION("a TSS too short for a TSS is #TS first, not the intercept")
    {
        Vmcb v = guest_vmcb();
        set_intercept(v.control, Intercept::TASK_SWITCH);
        set_intercept(v.control, Intercept(unsigned(Intercept::EXCEPTION_OFFSET) + 10)); // #TS
        v.save.gdtr = VmcbSeg { 0, 0, 0x57, kGdt };
        setup(m, v, { 0xEA, 0, 0, 0, 0, 0x28, 0x00 });
        m.put<uint64_t>(kGdt + 0x28, Machine::desc(kTss, 0x40, 0x089));
        m.run();
        REQUIRE(m.cpu->halted());
        Vmcb o = vmcb_after(m);
        CHECK(o.control.exit_code == exitcode::SVM_EXIT_EXCP_BASE + 10);
        CHECK(o.control.exit_info_1 == 0x28);
    }
}

// CPUID, IN/OUT, RDMSR/WRMSR, HLT, VMMCALL and VMGEXIT leave the guest without a C++ throw
// (Core::intercept_return); an intercepted exception still does. Both are the same #VMEXIT:
// the intercepted instruction does not retire (the retired-instruction count is the TSC's
// source), RIP stays on it, nRIP is past it.
TEST_CASE("svm: an intercept taken without a throw retires and reports like a thrown one", "[cpu][svm]")
{
    auto run_guest = [](Intercept i, std::vector<uint8_t> const& code) {
        Machine m;
        Vmcb vm = guest_vmcb();
        set_intercept(vm.control, i);
        setup(m, vm, code);
        m.run();
        REQUIRE(m.cpu->halted());
        return std::pair { m.cpu->state(), vmcb_after(m) };
    };
    // nop; nop; cpuid   versus   nop; nop; ud2 (#UD intercepted)
    auto [s1, v1] = run_guest(Intercept::CPUID, { 0x90, 0x90, 0x0F, 0xA2 });
    auto [s2, v2] = run_guest(Intercept(unsigned(Intercept::EXCEPTION_OFFSET) + 6), { 0x90, 0x90, 0x0F, 0x0B });
    CHECK(s1.gpr[RBX] == exitcode::SVM_EXIT_CPUID);
    CHECK(s2.gpr[RBX] == exitcode::SVM_EXIT_EXCP_BASE + 6);
    CHECK(s1.instructions == s2.instructions);
    CHECK(v1.save.rip == kGuestCode + 2);
    CHECK(v2.save.rip == kGuestCode + 2);
    CHECK(v1.control.next_rip == kGuestCode + 4);
    CHECK(s1.rip == kHostRipAfterVmrun + 9);
    // RDMSR (MSR_PROT with every MSRPM bit set: intercepted) and HLT, the same way.
    {
        Machine m;
        Vmcb vm = guest_vmcb();
        set_intercept(vm.control, Intercept::MSR_PROT);
        constexpr uint64_t kMsrpm = 0x46000; // after the 12 KiB IOPM
        vm.control.msrpm_base_pa = kMsrpm;
        setup(m, vm, { 0x90, 0xB9, 0x10, 0x00, 0x00, 0x00, 0x0F, 0x32 }); // nop; mov ecx, 0x10; rdmsr
        m.write(kMsrpm, std::vector<uint8_t>(8 * 1024, 0xFF));
        m.run();
        REQUIRE(m.cpu->halted());
        CHECK(m.cpu->state().gpr[RBX] == exitcode::SVM_EXIT_MSR);
        CHECK(m.cpu->state().instructions == s1.instructions);
        Vmcb v = vmcb_after(m);
        CHECK(v.control.exit_info_1 == 0);
        CHECK(v.save.rip == kGuestCode + 6);
        CHECK(v.control.next_rip == kGuestCode + 8);
    }
    {
        Machine m;
        Vmcb vm = guest_vmcb();
        set_intercept(vm.control, Intercept::HLT);
        setup(m, vm, { 0x90, 0x90, 0xF4 }); // nop; nop; hlt
        m.run();
        REQUIRE(m.cpu->halted()); // the host's HLT, not the guest's
        CHECK(m.cpu->state().gpr[RBX] == exitcode::SVM_EXIT_HLT);
        CHECK(m.cpu->state().instructions == s1.instructions);
        CHECK(vmcb_after(m).save.rip == kGuestCode + 2);
    }
}
