// VMRUN consistency checks (APM vol 2 §15.5.1, §15.34, §15.35), VMRUN/#VMEXIT state transfer
// (§15.5.1, §15.6), event injection (§15.20), VMLOAD/VMSAVE (§15.5.2). VMCBs are built byte by
// byte at Linux's struct vmcb offsets (arch/x86/include/asm/svm.h).
#include "svm_harness.h"

#include "cpu/cpu_model.h"

#include <random>
#include <tuple>

using namespace svmtest;

namespace {

Result<void, VmrunCheck> check(Machine& m, HostContext const& h = HostContext {})
{
    return vmrun_consistency_check(m.vmcb(), h, *m.mc);
}

VmrunCheck failure(Machine& m, HostContext const& h = HostContext {})
{
    auto r = check(m, h);
    REQUIRE_FALSE(r.has_value());
    return r.error();
}

} // namespace

TEST_CASE("A well-formed VMCB passes every check", "[svm][vmrun]")
{
    Machine m;
    m.good_vmcb();
    CHECK(check(m).has_value());
}

TEST_CASE("VMRUN guest-state consistency checks (APM vol 2 §15.5.1), one by one", "[svm][vmrun]")
{
    Machine m;
    m.good_vmcb();
    uint64_t V = kVmcbPa;
    uint64_t efer64 = efer::SVME | efer::LME | efer::LMA;
    uint64_t cr0pg = cr0::PE | cr0::PG;

    SECTION("EFER.SVME clear")
    {
        m.put64(V + off::EFER, efer::LME | efer::LMA);
        CHECK(failure(m) == VmrunCheck::EferSvmeClear);
    }
    SECTION("CR0.CD=0, CR0.NW=1")
    {
        m.put64(V + off::CR0, cr0pg | cr0::NW);
        CHECK(failure(m) == VmrunCheck::Cr0CdClearNwSet);
        m.put64(V + off::CR0, cr0pg | cr0::NW | cr0::CD); // CD=1 NW=1 is legal
        CHECK(check(m).has_value());
    }
    SECTION("CR0[63:32] not zero")
    {
        m.put64(V + off::CR0, cr0pg | (1ull << 32));
        CHECK(failure(m) == VmrunCheck::Cr0High);
    }
    SECTION("CR3 MBZ bits: 63:52 in long mode, 63:32 outside")
    {
        m.put64(V + off::CR3, 0x7000 | (1ull << 52));
        CHECK(failure(m) == VmrunCheck::Cr3Mbz);
        m.put64(V + off::CR3, 0x7000 | (1ull << 51)); // a guest C-bit at 51 is fine
        CHECK(check(m).has_value());
        m.put64(V + off::EFER, efer::SVME);
        m.put64(V + off::CR0, cr0::PE);
        m.put64(V + off::CR3, 1ull << 32);
        CHECK(failure(m) == VmrunCheck::Cr3Mbz);
    }
    SECTION("CR4 MBZ bits")
    {
        m.put64(V + off::CR4, cr4::PAE | (1ull << 13)); // VMXE: reserved on AMD
        CHECK(failure(m) == VmrunCheck::Cr4Mbz);
        m.put64(V + off::CR4, cr4::PAE | (1ull << 32));
        CHECK(failure(m) == VmrunCheck::Cr4Mbz);
    }
    SECTION("DR6[63:32] / DR7[63:32]")
    {
        m.put64(V + off::DR6, 0xFFFF0FF0 | (1ull << 40));
        CHECK(failure(m) == VmrunCheck::Dr6High);
        m.put64(V + off::DR6, 0xFFFF0FF0);
        m.put64(V + off::DR7, 0x400 | (1ull << 63));
        CHECK(failure(m) == VmrunCheck::Dr7High);
    }
    SECTION("EFER MBZ bits")
    {
        m.put64(V + off::EFER, efer64 | (1ull << 9));
        CHECK(failure(m) == VmrunCheck::EferMbz);
        m.put64(V + off::EFER, efer64 | (1ull << 40));
        CHECK(failure(m) == VmrunCheck::EferMbz);
    }
    SECTION("EFER.LME on a processor without long mode")
    {
        HostContext h;
        h.long_mode = false;
        CHECK(failure(m, h) == VmrunCheck::LongModeUnsupported);
    }
    SECTION("EFER.LME && CR0.PG && !CR4.PAE")
    {
        m.put64(V + off::CR4, 0);
        CHECK(failure(m) == VmrunCheck::LmePgWithoutPae);
    }
    SECTION("EFER.LME && CR0.PG && !CR0.PE (VMRUN may otherwise load PG without PE)")
    {
        m.put64(V + off::CR0, cr0::PG);
        CHECK(failure(m) == VmrunCheck::LmePgWithoutPe);
        m.put64(V + off::EFER, efer::SVME); // legacy: PG without PE is loadable by VMRUN
        m.put64(V + off::CR4, 0);
        CHECK(check(m).has_value());
    }
    SECTION("EFER.LME && CR0.PG && CR4.PAE && CS.L && CS.D")
    {
        m.put16(V + off::CS + kSegAttr, 0x029B | seg_attrib::DB);
        CHECK(failure(m) == VmrunCheck::LmePgPaeCsLAndD);
        m.put64(V + off::CR0, cr0::PE); // not paging: CS.L+D is not checked
        CHECK(check(m).has_value());
    }
}

TEST_CASE("VMRUN control-area checks (APM vol 2 §15.5.1, §15.20)", "[svm][vmrun]")
{
    Machine m;
    m.good_vmcb();
    uint64_t V = kVmcbPa;

    SECTION("the VMRUN intercept must be set")
    {
        m.put32(V + off::INTERCEPT_W4, 0);
        CHECK(failure(m) == VmrunCheck::VmrunNotIntercepted);
    }
    SECTION("MSRPM must end below the maximum physical address (48 bits, SME off)")
    {
        m.put64(V + off::MSRPM_BASE, (1ull << 48) - 0x2000); // last byte = 2^48-1: inside
        CHECK(check(m).has_value());
        m.put64(V + off::MSRPM_BASE, (1ull << 48) - 0x1000); // 8 KiB crosses 2^48
        CHECK(failure(m) == VmrunCheck::MsrpmBeyondMaxPa);
        m.put64(V + off::MSRPM_BASE, ~0ull);
        CHECK(failure(m) == VmrunCheck::MsrpmBeyondMaxPa);
    }
    SECTION("IOPM must end below the maximum physical address")
    {
        m.put64(V + off::IOPM_BASE, (1ull << 48) - 0x3000);
        CHECK(check(m).has_value());
        m.put64(V + off::IOPM_BASE, (1ull << 48) - 0x2000); // 12 KiB crosses 2^48
        CHECK(failure(m) == VmrunCheck::IopmBeyondMaxPa);
    }
    SECTION("with SME on the usable width shrinks (48 - 5 = 43 bits)")
    {
        m.put64(V + off::IOPM_BASE, (1ull << 43) - 0x1000);
        HostContext h;
        CHECK(check(m, h).has_value());
        h.syscfg = syscfg::MemEncryptionModEn;
        CHECK(failure(m, h) == VmrunCheck::IopmBeyondMaxPa);
    }
    SECTION("illegal event injection")
    {
        m.put32(V + off::EVENTINJ, evtinj::VALID | (1u << 8) | 32); // type 1 reserved
        CHECK(failure(m) == VmrunCheck::IllegalEventInjection);
        m.put32(V + off::EVENTINJ, evtinj::VALID | (3u << 8) | 2); // exception type, NMI vector
        CHECK(failure(m) == VmrunCheck::IllegalEventInjection);
        m.put32(V + off::EVENTINJ, evtinj::VALID | (3u << 8) | 32); // exception type, not an exception
        CHECK(failure(m) == VmrunCheck::IllegalEventInjection);
        m.put32(V + off::EVENTINJ, evtinj::VALID | (5u << 8) | 14);
        CHECK(failure(m) == VmrunCheck::IllegalEventInjection);
        m.put32(V + off::EVENTINJ, evtinj::VALID | (3u << 8) | evtinj::VALID_ERR | 14); // #PF with code
        CHECK(check(m).has_value());
        m.put32(V + off::EVENTINJ, (1u << 8) | 32); // V=0: ignored
        CHECK(check(m).has_value());
    }
    SECTION("ASID 0")
    {
        m.put32(V + off::ASID, 0);
        CHECK(failure(m) == VmrunCheck::AsidZero);
    }
    SECTION("TLB_CONTROL values")
    {
        for (uint8_t t : { 0, 1, 3, 7 }) {
            m.put8(V + off::TLB_CONTROL, t);
            CHECK(check(m).has_value());
        }
        for (uint8_t t : { 2, 4, 5, 6, 8, 0xFF }) {
            m.put8(V + off::TLB_CONTROL, t);
            CHECK(failure(m) == VmrunCheck::IllegalTlbControl);
        }
        CHECK(tlb_flush_for(0) == TlbFlush::None);
        CHECK(tlb_flush_for(1) == TlbFlush::AllAsids);
        CHECK(tlb_flush_for(3) == TlbFlush::ThisAsid);
        CHECK(tlb_flush_for(7) == TlbFlush::ThisAsidNonGlobal);
    }
}

TEST_CASE("SEV checks at VMRUN (APM vol 2 §15.34.3)", "[svm][vmrun][sev]")
{
    Machine m;
    m.good_vmcb();
    uint64_t V = kVmcbPa;
    m.put64(V + off::NESTED_CTL, nested_ctl::NP_ENABLE | nested_ctl::SEV_ENABLE);
    m.put32(V + off::ASID, 200); // >= min SEV ASID 0x80, <= 509
    m.activate(200);
    HostContext h = sev_host();
    REQUIRE(check(m, h).has_value());

    SECTION("SEV needs SEV support") { h.mem_encrypt_features = 0x1; CHECK(failure(m, h) == VmrunCheck::SevUnsupported); }
    SECTION("SEV is ignored while SYSCFG.MemEncryptionModEn is 0 (APM 15.34.3)")
    {
        m.put32(V + off::ASID, 300); // no key activated for ASID 300
        CHECK(failure(m, h) == VmrunCheck::SevKeyNotActivated);
        h.syscfg = 0;
        CHECK(check(m, h).has_value()); // a plain SVM guest: no SEV checks apply
    }
    SECTION("SEV needs nested paging")
    {
        m.put64(V + off::NESTED_CTL, nested_ctl::SEV_ENABLE);
        CHECK(failure(m, h) == VmrunCheck::SevWithoutNestedPaging);
    }
    SECTION("SEV needs HWCR.SmmLock") { h.hwcr = 0; CHECK(failure(m, h) == VmrunCheck::SevSmmLockClear); }
    SECTION("SEV needs a 64-bit host when 8000_001F EAX[11]")
    {
        h.host_64bit = false;
        CHECK(check(m, h).has_value()); // EAX[11] clear in the default features
        h.mem_encrypt_features |= 1u << 11;
        CHECK(failure(m, h) == VmrunCheck::SevHostNot64Bit);
    }
    SECTION("ASID above 8000_001F ECX")
    {
        m.put32(V + off::ASID, 510);
        CHECK(failure(m, h) == VmrunCheck::SevAsidBeyondMax);
        m.put32(V + off::ASID, 509);
        m.activate(509);
        CHECK(check(m, h).has_value());
    }
    SECTION("SEV without ES below 8000_001F EDX")
    {
        m.put32(V + off::ASID, 0x7F);
        m.activate(0x7F);
        CHECK(failure(m, h) == VmrunCheck::SevAsidBelowMin);
    }
    SECTION("an ASID whose key slot was never activated")
    {
        m.put32(V + off::ASID, 201);
        CHECK(failure(m, h) == VmrunCheck::SevKeyNotActivated);
        m.activate(201);
        CHECK(check(m, h).has_value());
    }
}

TEST_CASE("SEV-ES checks at VMRUN (APM vol 2 §15.35)", "[svm][vmrun][sev]")
{
    Machine m;
    m.good_vmcb();
    uint64_t V = kVmcbPa;
    m.put64(V + off::NESTED_CTL, nested_ctl::NP_ENABLE | nested_ctl::SEV_ENABLE | nested_ctl::SEV_ES_ENABLE);
    m.put64(V + off::VIRT_EXT, virt_ext::LBR_CTL_ENABLE);
    m.put64(V + off::VMSA_PA, kVmsaPa);
    m.put32(V + off::ASID, 5);
    m.activate(5);
    HostContext h = sev_host();
    REQUIRE(check(m, h).has_value());

    SECTION("SEV-ES needs SEV-ES support") { h.mem_encrypt_features &= ~(1u << 3); CHECK(failure(m, h) == VmrunCheck::SevEsUnsupported); }
    SECTION("SEV-ES needs SEV enable")
    {
        m.put64(V + off::NESTED_CTL, nested_ctl::NP_ENABLE | nested_ctl::SEV_ES_ENABLE);
        CHECK(failure(m, h) == VmrunCheck::SevEsWithoutSev);
    }
    SECTION("SEV-ES needs NP enable")
    {
        m.put64(V + off::NESTED_CTL, nested_ctl::SEV_ENABLE | nested_ctl::SEV_ES_ENABLE);
        CHECK(failure(m, h) == VmrunCheck::SevWithoutNestedPaging);
    }
    SECTION("SEV-ES needs ASID < 8000_001F EDX")
    {
        m.put32(V + off::ASID, 0x80);
        m.activate(0x80);
        CHECK(failure(m, h) == VmrunCheck::SevEsAsidNotBelowMin);
    }
    SECTION("SEV-ES needs LBR virtualization")
    {
        m.put64(V + off::VIRT_EXT, 0);
        CHECK(failure(m, h) == VmrunCheck::SevEsWithoutLbrVirt);
    }
    SECTION("VMSA page-aligned and in DRAM")
    {
        m.put64(V + off::VMSA_PA, kVmsaPa + 8);
        CHECK(failure(m, h) == VmrunCheck::SevEsVmsaMisaligned);
        m.put64(V + off::VMSA_PA, 0xF0000000); // the MMIO hole below 4 GiB
        CHECK(failure(m, h) == VmrunCheck::SevEsVmsaNotDram);
        m.put64(V + off::VMSA_PA, 1ull << 60);
        CHECK(failure(m, h) == VmrunCheck::SevEsVmsaNotDram);
    }
    SECTION("an SEV-ES guest's state is checked in the VMSA, not the VMCB save area")
    {
        m.put64(V + off::EFER, 0); // would fail EferSvmeClear for a non-ES guest
        CHECK(check(m, h).has_value());
    }
}

TEST_CASE("VMRUN with an unactivated ASID fails with VMEXIT_INVALID", "[svm][vmrun][sev]")
{
    Machine m;
    m.good_vmcb();
    m.put64(kVmcbPa + off::NESTED_CTL, nested_ctl::NP_ENABLE | nested_ctl::SEV_ENABLE);
    m.put32(kVmcbPa + off::ASID, 300);
    m.put64(kVmcbPa + off::EXITCODE, 0x1234);
    SvmCpuView cpu = host_cpu();
    uint64_t next_rip = cpu.regs.rip + 3;
    auto r = vmrun(*m.mc, cpu, sev_host(), next_rip);
    REQUIRE_FALSE(r.has_value());
    REQUIRE(r.error().check);
    CHECK(*r.error().check == VmrunCheck::SevKeyNotActivated);
    CHECK_FALSE(r.error().fault);
    CHECK(m.get64(kVmcbPa + off::EXITCODE) == 0xFFFFFFFFFFFFFFFFull);
    // #VMEXIT to the host: after VMRUN, GIF=0, DR7 reset, the host's registers kept.
    CHECK(cpu.regs.rip == next_rip);
    CHECK(cpu.gif == false);
    CHECK(cpu.regs.dr7 == 0x400);
    CHECK(cpu.regs.gpr[RAX] == kVmcbPa);
    CHECK(cpu.regs.seg[CS].selector == 0x10);

    // The firmware activates the ASID (ACTIVATE): now it runs.
    m.activate(300);
    cpu = host_cpu();
    auto ok = vmrun(*m.mc, cpu, sev_host(), next_rip);
    REQUIRE(ok.has_value());
    CHECK(ok->sev);
    CHECK(ok->asid == 300);
    CHECK(cpu.regs.msr.sev_status == 1);
}

TEST_CASE("VMRUN instruction faults", "[svm][vmrun]")
{
    Machine m;
    m.good_vmcb();
    auto fault_of = [&](SvmCpuView c) {
        auto r = vmrun(*m.mc, c, HostContext {}, 0);
        REQUIRE_FALSE(r.has_value());
        REQUIRE(r.error().fault);
        return *r.error().fault;
    };
    SvmCpuView c = host_cpu();
    c.regs.efer &= ~efer::SVME;
    CHECK(fault_of(c) == SvmFault { kUD, 0 });
    c = host_cpu();
    c.regs.cr0 = 0; // real mode
    CHECK(fault_of(c) == SvmFault { kUD, 0 });
    c = host_cpu();
    c.cpl = 3;
    CHECK(fault_of(c) == SvmFault { kGP, 0 });
    c = host_cpu();
    c.regs.gpr[RAX] = kVmcbPa + 0x10; // not page-aligned
    CHECK(fault_of(c) == SvmFault { kGP, 0 });
    c = host_cpu();
    c.regs.gpr[RAX] = 1ull << 50; // beyond MAXPHYADDR
    CHECK(fault_of(c) == SvmFault { kGP, 0 });
    c = host_cpu();
    c.regs.msr.vm_hsave_pa = 0xF0000000; // host save area not DRAM
    CHECK(fault_of(c) == SvmFault { kGP, 0 });
    CHECK(m.get64(kVmcbPa + off::EXITCODE) == 0); // nothing written
}

TEST_CASE("VMRUN loads the guest and #VMEXIT writes the exit fields and restores the host", "[svm][vmrun][vmexit]")
{
    Machine m;
    m.good_vmcb();
    uint64_t V = kVmcbPa;
    m.put64(V + off::NESTED_CTL, nested_ctl::NP_ENABLE);
    m.put64(V + off::N_CR3, 0x300000);
    m.put8(V + off::TLB_CONTROL, 3);
    m.put8(V + off::CPL, 0);
    m.put32(V + off::INT_STATE, int_state::INTERRUPT_SHADOW);
    m.put32(V + off::EVENTINJ, evtinj::VALID | (3u << 8) | evtinj::VALID_ERR | 13);
    m.put32(V + off::EVENTINJ_ERR, 0x18);

    SvmCpuView cpu = host_cpu();
    uint64_t host_rip = cpu.regs.rip, next_rip = host_rip + 3;
    auto g = vmrun(*m.mc, cpu, HostContext {}, next_rip);
    REQUIRE(g.has_value());

    // Guest state (APM vol 2 §15.5.1).
    CHECK(cpu.regs.rip == 0x401000);
    CHECK(cpu.regs.gpr[RSP] == 0x8000);
    CHECK(cpu.regs.gpr[RAX] == 0xAAAA);
    CHECK(cpu.regs.cr3 == 0x7000);
    CHECK(cpu.regs.cr2 == 0x1234);
    CHECK(cpu.regs.rflags == 0x202);
    CHECK(cpu.regs.seg[CS].selector == 0x08);
    CHECK(cpu.regs.seg[CS].long_mode());
    CHECK(cpu.regs.gdtr.base == 0x5000);
    CHECK(cpu.regs.gdtr.limit == 0x27);
    CHECK(cpu.regs.msr.pat == 0x0007040600070406ull); // G_PAT with NP
    CHECK(cpu.regs.gpr[RBX] == 0xB0B0);                // not part of the VMCB: untouched
    CHECK(cpu.gif);
    CHECK(cpu.interrupt_shadow);
    CHECK(g->np);
    CHECK(g->npt.n_cr3 == 0x300000);
    CHECK(g->npt.nxe);
    CHECK(g->tlb_flush == TlbFlush::ThisAsid);
    REQUIRE(g->inject);
    CHECK(*g->inject == Event { 13, EventType::EXCEPTION, 0x18u });
    CHECK(g->intercepts(Intercept::HLT));
    CHECK(g->intercepts(Intercept::CPUID));
    CHECK_FALSE(g->intercepts(Intercept::VMMCALL));

    // Host state went to VM_HSAVE_PA+0x400 in save-area layout.
    CHECK(m.get64(kHsavePa + 0x400 + 0x178) == next_rip);
    CHECK(m.get64(kHsavePa + 0x400 + 0x1F8) == kVmcbPa);

    // The guest runs a bit, then HLT is intercepted.
    cpu.regs.rip = 0x401234;
    cpu.regs.gpr[RAX] = 0x5555;
    cpu.regs.cr2 = 0xDEAD000;
    cpu.regs.msr.pat = 0x0101010101010101ull;
    cpu.interrupt_shadow = false;
    ExitInfo e;
    e.exit_code = exitcode::SVM_EXIT_HLT;
    e.exit_info_1 = 0x1111;
    e.exit_info_2 = 0x2222;
    e.exit_int_info = Event { 14, EventType::EXCEPTION, 0x6u };
    e.next_rip = 0x401235;
    REQUIRE(vmexit(*m.mc, cpu, *g, e).has_value());

    // Exit fields at Linux's vmcb_control_area offsets.
    CHECK(m.get64(V + off::EXITCODE) == 0x78);
    CHECK(m.get64(V + off::EXITINFO1) == 0x1111);
    CHECK(m.get64(V + off::EXITINFO2) == 0x2222);
    CHECK(m.get32(V + off::EXITINTINFO) == (0x80000000u | 0x800u | 0x300u | 14u));
    CHECK(m.get32(V + off::EXITINTINFO_ERR) == 6);
    CHECK(m.get64(V + off::NRIP) == 0x401235);
    CHECK((m.get32(V + off::EVENTINJ) & 0x80000000u) == 0); // EVENTINJ.V cleared
    CHECK((m.get32(V + off::INT_STATE) & 1) == 0);
    // Guest state saved.
    CHECK(m.get64(V + off::RIP) == 0x401234);
    CHECK(m.get64(V + off::RAX) == 0x5555);
    CHECK(m.get64(V + off::CR2) == 0xDEAD000);
    CHECK(m.get64(V + off::G_PAT) == 0x0101010101010101ull);
    CHECK(m.get64(V + off::EFER) == (efer::SVME | efer::LME | efer::LMA | efer::NXE));
    // Host state restored (APM vol 2 §15.6).
    SvmCpuView h0 = host_cpu();
    CHECK(cpu.regs.rip == next_rip);
    CHECK(cpu.regs.gpr[RSP] == h0.regs.gpr[RSP]);
    CHECK(cpu.regs.gpr[RAX] == kVmcbPa);
    CHECK(cpu.regs.cr3 == h0.regs.cr3);
    CHECK(cpu.regs.cr0 == (h0.regs.cr0 | cr0::PE));
    CHECK(cpu.regs.efer == h0.regs.efer);
    CHECK(cpu.regs.seg[CS].selector == 0x10);
    CHECK(cpu.regs.gdtr.base == 0xA000);
    CHECK(cpu.regs.idtr.base == 0xB000);
    CHECK(cpu.regs.dr7 == 0x400);
    CHECK(cpu.regs.msr.pat == h0.regs.msr.pat);
    CHECK(cpu.cpl == 0);
    CHECK(cpu.gif == false);
}

TEST_CASE("VMRUN loads CPL as the manual forces it", "[svm][vmrun]")
{
    Machine m;
    m.good_vmcb();
    m.put8(kVmcbPa + off::CPL, 3);
    SvmCpuView cpu = host_cpu();
    REQUIRE(vmrun(*m.mc, cpu, HostContext {}, 0).has_value());
    CHECK(cpu.cpl == 3);
    // real mode: CPL 0 whatever the VMCB says
    m.put64(kVmcbPa + off::EFER, efer::SVME);
    m.put64(kVmcbPa + off::CR0, cr0::ET);
    m.put64(kVmcbPa + off::CR4, 0);
    cpu = host_cpu();
    REQUIRE(vmrun(*m.mc, cpu, HostContext {}, 0).has_value());
    CHECK(cpu.cpl == 0);
}

TEST_CASE("SEV-ES: guest state comes from the encrypted VMSA and goes back into it", "[svm][vmrun][vmexit][sev]")
{
    Machine m;
    m.good_vmcb();
    uint64_t V = kVmcbPa;
    uint32_t asid = 5;
    m.activate(asid);
    m.sev_es_vmcb(asid);
    m.put64(V + off::GHCB_GPA, 0x7F000);
    // The rest of the VMSA, written with the guest's key.
    KeyId gk = KeyId::slot(asid);
    m.put(kVmsaPa + 0x178, 0xFFFFFFF0, 8, gk); // RIP
    m.put(kVmsaPa + 0x318, 0xB1B1, 8, gk);     // RBX
    m.put(kVmsaPa + 0x378, 0xF15F15, 8, gk);   // R15
    m.put(kVmsaPa + 0x3E8, 7, 8, gk);          // XCR0
    // Type B host state the hypervisor stored at HSAVE+0x400 (VMSA layout).
    m.zero_page(kHsavePa);
    m.put64(kHsavePa + 0x400 + 0x318, 0xB057B0); // host RBX
    m.put64(kHsavePa + 0x400 + 0x3E8, 3);        // host XCR0

    SvmCpuView cpu = host_cpu();
    cpu.regs.gpr[RCX] = 0xC0C0;
    auto g = vmrun(*m.mc, cpu, sev_host(), 0x1003);
    REQUIRE(g.has_value());
    CHECK(g->sev_es);
    CHECK(cpu.regs.rip == 0xFFFFFFF0);
    CHECK(cpu.regs.gpr[RBX] == 0xB1B1);
    CHECK(cpu.regs.gpr[R15] == 0xF15F15);
    CHECK(cpu.regs.gpr[RCX] == 0); // the guest's RCX, not the host's
    CHECK(cpu.regs.xcr0 == 7);
    CHECK(cpu.ghcb_msr == 0x7F000);
    CHECK(cpu.regs.msr.sev_status == 3);

    cpu.regs.rip = 0xFFFFFFF3;
    cpu.regs.gpr[RCX] = 0x5EC12E7;
    cpu.ghcb_msr = 0x7E000;
    ExitInfo e;
    e.exit_code = exitcode::SVM_EXIT_VMGEXIT;
    REQUIRE(vmexit(*m.mc, cpu, *g, e).has_value());
    // The guest's registers are in the VMSA, readable with the guest key only.
    CHECK(m.get(kVmsaPa + 0x178, 8, gk) == 0xFFFFFFF3);
    CHECK(m.get(kVmsaPa + 0x308, 8, gk) == 0x5EC12E7);
    CHECK(m.get(kVmsaPa + 0x308, 8) != 0x5EC12E7); // ciphertext in DRAM
    CHECK(m.get64(V + off::RIP) != 0xFFFFFFF3);    // the VMCB save area is not used
    CHECK(m.get64(V + off::GHCB_GPA) == 0x7E000);
    CHECK(m.get64(V + off::EXITCODE) == 0x403);
    // The host: type A from VMRUN, type B from HSAVE+0x400, no guest register left over.
    CHECK(cpu.regs.rip == 0x1003);
    CHECK(cpu.regs.gpr[RBX] == 0xB057B0);
    CHECK(cpu.regs.gpr[RCX] == 0);
    CHECK(cpu.regs.xcr0 == 3);
    CHECK(cpu.regs.msr.sev_status == 0);
}

TEST_CASE("EVENTINJ decode", "[svm][vmrun]")
{
    auto d = [](uint32_t inj, uint32_t err = 0) { return decode_event_injection(inj, err); };
    CHECK(d(0)->has_value() == false);
    CHECK(**d(evtinj::VALID | 0x20) == Event { 0x20, EventType::INTR, std::nullopt });
    CHECK(**d(evtinj::VALID | (2u << 8) | 0x77) == Event { 2, EventType::NMI, std::nullopt });
    CHECK(**d(evtinj::VALID | (4u << 8) | 0x80) == Event { 0x80, EventType::SOFT_INT, std::nullopt });
    CHECK(**d(evtinj::VALID | (3u << 8) | evtinj::VALID_ERR | 8, 0) == Event { 8, EventType::EXCEPTION, 0u });
    for (uint32_t t : { 1u, 5u, 6u, 7u })
        CHECK_FALSE(d(evtinj::VALID | (t << 8)).has_value());
    // exception type: real exceptions accepted, NMI and reserved vectors refused
    for (uint32_t v : { 0u, 1u, 3u, 6u, 8u, 13u, 14u, 17u, 18u, 19u, 21u, 28u, 29u, 30u })
        CHECK(d(evtinj::VALID | (3u << 8) | v).has_value());
    for (uint32_t v : { 2u, 9u, 15u, 20u, 22u, 27u, 31u, 32u, 255u })
        CHECK_FALSE(d(evtinj::VALID | (3u << 8) | v).has_value());
    CHECK(encode_event(Event { 14, EventType::EXCEPTION, 2u }) == 0x80000B0Eu);
}

TEST_CASE("VMLOAD / VMSAVE move the §15.5.2 state", "[svm][vmload]")
{
    Machine m;
    m.zero_page(kVmcb2Pa);
    m.seg(kVmcb2Pa + off::FS, 0x2B, 0x0093, 0xFFFFFFFF, 0x7FFF0000);
    m.seg(kVmcb2Pa + off::TR, 0x40, 0x008B, 0x67, 0xFFFF880000001000ull);
    m.put64(kVmcb2Pa + off::LSTAR, 0xFFFFFFFF81000000ull);
    m.put64(kVmcb2Pa + off::KERNEL_GS_BASE, 0x1234000);
    m.put64(kVmcb2Pa + off::SYSENTER_EIP, 0x5678);
    SvmCpuView cpu = host_cpu();
    cpu.regs.gpr[RAX] = kVmcb2Pa;
    REQUIRE(vmload(*m.mc, cpu, HostContext {}).has_value());
    CHECK(cpu.regs.seg[FS].base == 0x7FFF0000);
    CHECK(cpu.regs.tr.selector == 0x40);
    CHECK(cpu.regs.tr.base == 0xFFFF880000001000ull);
    CHECK(cpu.regs.msr.lstar == 0xFFFFFFFF81000000ull);
    CHECK(cpu.regs.msr.kernel_gs_base == 0x1234000);
    CHECK(cpu.regs.msr.sysenter_eip == 0x5678);

    cpu.regs.msr.cstar = 0xC57A2;
    cpu.regs.seg[GS].base = 0xABC000;
    REQUIRE(vmsave(*m.mc, cpu, HostContext {}).has_value());
    CHECK(m.get64(kVmcb2Pa + off::CSTAR) == 0xC57A2);
    CHECK(m.get64(kVmcb2Pa + off::GS + kSegBase) == 0xABC000);

    cpu.regs.gpr[RAX] = kVmcb2Pa + 1;
    CHECK(vmload(*m.mc, cpu, HostContext {}).error() == SvmFault { kGP, 0 });
    cpu.cpl = 3;
    CHECK(vmsave(*m.mc, cpu, HostContext {}).error() == SvmFault { kGP, 0 });
    cpu = host_cpu();
    cpu.regs.efer = 0;
    CHECK(check_svm_instruction(cpu) == SvmFault { kUD, 0 });
}

TEST_CASE("TLB actions on VMRUN / #VMEXIT / INVLPGA", "[svm][tlb]")
{
    Machine m;
    m.good_vmcb();
    m.put32(kVmcbPa + off::ASID, 9);
    for (auto [ctl, all, nonglobal] : { std::tuple { 0, false, false }, std::tuple { 1, true, false },
                                        std::tuple { 3, true, false }, std::tuple { 7, false, true } }) {
        m.put8(kVmcbPa + off::TLB_CONTROL, uint8_t(ctl));
        SvmCpuView cpu = host_cpu();
        auto g = vmrun(*m.mc, cpu, HostContext {}, 0);
        REQUIRE(g.has_value());
        CHECK(tlb_actions_on_vmrun(*g) == TlbActions { 9, all, nonglobal });
    }
    CHECK(tlb_actions_on_vmexit() == TlbActions { 0, false, false });
    CHECK(invlpga_hits(0, 0));
    CHECK_FALSE(invlpga_hits(0, 9));
}

TEST_CASE("HostContext from a CPU model and the host's MSRs", "[svm][vmrun]")
{
    CpuModelInfo mi {};
    mi.phys_addr_bits = 48;
    mi.c_bit = 51;
    mi.phys_addr_reduction = 5;
    mi.mem_encrypt_features = 0x0101FD3F; // Milan
    mi.num_encrypted_guests = 509;
    mi.min_sev_asid = 0x80;
    CpuState s;
    s.msr.syscfg = syscfg::MemEncryptionModEn;
    s.msr.hwcr = 1;
    HostContext h = HostContext::from_model(mi, s, true);
    CHECK(h.sme());
    CHECK(h.usable_phys_bits() == 43);
    CHECK(h.sev_supported());
    CHECK(h.sev_es_supported());
    CHECK(h.requires_64bit_host());
    CHECK(h.max_sev_asid == 509);
    CHECK(h.min_sev_asid == 0x80);
}

TEST_CASE("Virtual interrupts and interrupt gating in the guest (APM vol 2 §15.21)", "[svm][vintr]")
{
    Machine m;
    m.good_vmcb();
    m.put32(kVmcbPa + off::INT_CTL, int_ctl::V_INTR_MASKING | int_ctl::V_IRQ | (5u << 16) | 3u);
    m.put32(kVmcbPa + off::INT_VECTOR, 0x41);
    SvmCpuView cpu = host_cpu();
    cpu.regs.rflags = 0x2; // host IF=0 at VMRUN
    auto g = vmrun(*m.mc, cpu, HostContext {}, 0);
    REQUIRE(g.has_value());
    CHECK(cpu.regs.rflags & rflags::IF);              // the guest's IF (0x202)
    CHECK_FALSE(g->physical_interrupts_enabled(cpu)); // V_INTR_MASKING: host IF (0) decides
    REQUIRE(g->pending_virtual_interrupt(cpu));
    CHECK(*g->pending_virtual_interrupt(cpu) == 0x41);
    g->control.int_ctl = (g->control.int_ctl & ~0xFu) | 5u; // V_TPR = prio: masked
    CHECK_FALSE(g->pending_virtual_interrupt(cpu));
    g->control.int_ctl |= int_ctl::V_IGN_TPR;
    CHECK(g->pending_virtual_interrupt(cpu));
    cpu.interrupt_shadow = true;
    CHECK_FALSE(g->pending_virtual_interrupt(cpu));
    cpu.interrupt_shadow = false;
    g->control.int_ctl &= ~int_ctl::V_IRQ; // taken
    CHECK_FALSE(g->pending_virtual_interrupt(cpu));
    g->control.int_ctl &= ~int_ctl::V_INTR_MASKING;
    CHECK(g->physical_interrupts_enabled(cpu)); // now the guest's IF
    cpu.gif = false;
    CHECK_FALSE(g->physical_interrupts_enabled(cpu));
    cpu.gif = true;

    ExitInfo e;
    e.exit_code = exitcode::SVM_EXIT_INTR;
    REQUIRE(vmexit(*m.mc, cpu, *g, e).has_value());
    uint32_t ic = uint32_t(m.get32(kVmcbPa + off::INT_CTL));
    CHECK((ic & 0xF) == 5);                  // V_TPR written back
    CHECK((ic & int_ctl::V_IRQ) == 0);       // V_IRQ written back
    CHECK(ic & int_ctl::V_INTR_MASKING);     // control bits the hypervisor owns are kept
}

TEST_CASE("An SME host's VMCB and host save area: C-bit in rAX and VM_HSAVE_PA selects the host key", "[svm][vmrun][sev]")
{
    Machine m;
    m.good_vmcb();
    std::vector<uint8_t> page(4096);
    REQUIRE(m.mc->read(Spa(kVmcbPa), page, KeyId::none()).has_value());
    REQUIRE(m.mc->write(Spa(kVmcbPa), page, KeyId::host()).has_value()); // now ciphertext in DRAM
    constexpr uint64_t C = 1ull << 51;
    SvmCpuView cpu = host_cpu();
    cpu.regs.gpr[RAX] = kVmcbPa | C;
    cpu.regs.msr.vm_hsave_pa = kHsavePa | C;
    HostContext h = sev_host();
    auto g = vmrun(*m.mc, cpu, h, 0x77);
    REQUIRE(g.has_value());
    CHECK(cpu.regs.rip == 0x401000);
    ExitInfo e;
    e.exit_code = exitcode::SVM_EXIT_CPUID;
    REQUIRE(vmexit(*m.mc, cpu, *g, e).has_value());
    CHECK(m.get(kVmcbPa + off::EXITCODE, 8, KeyId::host()) == 0x72);
    CHECK(m.get(kHsavePa + 0x400 + 0x178, 8, KeyId::host()) == 0x77);
    CHECK(cpu.regs.rip == 0x77);
    CHECK(cpu.regs.gpr[RAX] == (kVmcbPa | C));
    // Without the C-bit the same VMCB is ciphertext: whatever it decodes to, VMRUN must not crash.
    cpu = host_cpu();
    (void)vmrun(*m.mc, cpu, h, 0);
}

TEST_CASE("VMRUN on random VMCB bytes never crashes and never enters an invalid guest", "[svm][vmrun][fuzz]")
{
    Machine m;
    m.activate(200);
    m.activate(5);
    std::mt19937_64 rng(1234);
    std::vector<uint8_t> page(4096);
    unsigned entered = 0;
    for (int i = 0; i < 400; ++i) {
        m.good_vmcb();
        // Randomise a handful of control/save fields (a fully random page never gets past the
        // first check), keeping the rest well-formed.
        uint64_t offsets[] = { off::INTERCEPT_W4, off::IOPM_BASE, off::MSRPM_BASE, off::ASID, off::TLB_CONTROL,
                               off::NESTED_CTL, off::EVENTINJ, off::VIRT_EXT, off::VMSA_PA, off::EFER, off::CR0,
                               off::CR3, off::CR4, off::DR6, off::DR7, off::CS + kSegAttr };
        for (int k = 0; k < 3; ++k) {
            uint64_t at = offsets[rng() % std::size(offsets)];
            uint64_t v = rng();
            if (rng() & 1)
                v &= 0xFF; // small values hit the interesting cases more often
            m.put(kVmcbPa + at, v, at == off::TLB_CONTROL ? 1 : at == off::CS + kSegAttr ? 2 : (at == off::ASID || at == off::EVENTINJ || at == off::INTERCEPT_W4) ? 4 : 8);
        }
        SvmCpuView cpu = host_cpu();
        HostContext h = (rng() & 1) ? sev_host() : HostContext {};
        bool ok_check = vmrun_consistency_check(m.vmcb(), h, *m.mc).has_value();
        auto r = vmrun(*m.mc, cpu, h, 0x42);
        if (r.has_value()) {
            ++entered;
            CHECK(ok_check);
            ExitInfo e;
            e.exit_code = exitcode::SVM_EXIT_HLT;
            REQUIRE(vmexit(*m.mc, cpu, *r, e).has_value());
        } else {
            REQUIRE(r.error().check);
            if (!ok_check)
                CHECK(m.get64(kVmcbPa + off::EXITCODE) == exitcode::VMEXIT_INVALID);
        }
        CHECK(cpu.regs.rip == 0x42);
        CHECK_FALSE(cpu.gif);
    }
    CHECK(entered > 0);
}

// VMRUN, #VMEXIT, VMLOAD and VMSAVE read and write only the architected bytes: the VMCB's control
// fields (0x000-0x147) and save area (0x400-0x6E7), the host save area's fields up to XCR0
// (HSAVE+0x400..+0x7EF) and the VMSA up to the XMM registers (0x000-0x56F). Everything else on those pages keeps what it
// held — none of it is rewritten from a stale or uninitialised copy.
TEST_CASE("World switches leave the bytes beyond the architected fields of the VMCB, host save area and VMSA alone", "[svm][vmrun][vmexit]")
{
    auto fill = [](Machine& m, uint64_t from, uint64_t to, uint8_t seed, KeyId k = KeyId::none()) {
        std::vector<uint8_t> b(to - from);
        for (size_t i = 0; i < b.size(); ++i)
            b[i] = uint8_t(seed + i * 7);
        REQUIRE(m.mc->write(Spa(from), b, k).has_value());
    };
    auto intact = [](Machine& m, uint64_t from, uint64_t to, uint8_t seed, KeyId k = KeyId::none()) {
        std::vector<uint8_t> b(to - from);
        REQUIRE(m.mc->read(Spa(from), b, k).has_value());
        for (size_t i = 0; i < b.size(); ++i)
            if (b[i] != uint8_t(seed + i * 7))
                return false;
        return true;
    };
    for (bool es : { false, true }) {
        CAPTURE(es);
        Machine m;
        m.good_vmcb();
        uint32_t asid = 1;
        KeyId gk = KeyId::none();
        if (es) {
            asid = 5;
            gk = KeyId::slot(asid);
            m.activate(asid);
            m.sev_es_vmcb(asid);
            fill(m, kVmsaPa + 0x570, kVmsaPa + 0x1000, 0x3C, gk); // YMM halves, LBR stack, IBS, ...
        }
        fill(m, kVmcbPa + 0x148, kVmcbPa + 0x400, 0x44); // reserved, and the software area at 0x3E0
        fill(m, kVmcbPa + 0x6E8, kVmcbPa + 0x1000, 0x11);
        fill(m, kHsavePa, kHsavePa + 0x400, 0x22);
        fill(m, kHsavePa + 0x7F0, kHsavePa + 0x1000, 0x33);

        SvmCpuView cpu = host_cpu();
        auto g = vmrun(*m.mc, cpu, sev_host(), 0x1003);
        REQUIRE(g.has_value());
        CHECK(g->sev_es == es);
        cpu.regs.gpr[RBX] = 0x6E57;
        ExitInfo e;
        e.exit_code = es ? exitcode::SVM_EXIT_VMGEXIT : exitcode::SVM_EXIT_CPUID;
        REQUIRE(vmexit(*m.mc, cpu, *g, e).has_value());
        CHECK(m.get64(kVmcbPa + off::EXITCODE) == e.exit_code);
        cpu.regs.gpr[RAX] = kVmcbPa;
        REQUIRE(vmsave(*m.mc, cpu, sev_host()).has_value());
        REQUIRE(vmload(*m.mc, cpu, sev_host()).has_value());
        CHECK(intact(m, kVmcbPa + 0x148, kVmcbPa + 0x400, 0x44));
        CHECK(intact(m, kVmcbPa + 0x6E8, kVmcbPa + 0x1000, 0x11));
        CHECK(intact(m, kHsavePa, kHsavePa + 0x400, 0x22));
        CHECK(intact(m, kHsavePa + 0x7F0, kHsavePa + 0x1000, 0x33));
        if (es) {
            CHECK(intact(m, kVmsaPa + 0x570, kVmsaPa + 0x1000, 0x3C, gk));
            CHECK(m.get(kVmsaPa + 0x318, 8, gk) == 0x6E57); // the guest's RBX went into the VMSA
        }
    }
}
