// VMCB / VMSA layout: every field is poked as raw bytes at the offset Linux's struct vmcb
// (arch/x86/include/asm/svm.h) and APM vol 2 Appendix B give, then read through cpu/svm's structs.
#include "svm_harness.h"

#include <cstring>

using namespace svmtest;

namespace {

struct Poker {
    std::array<uint8_t, 4096> b {};
    uint64_t next { 0x0102030405060708ull };
    uint64_t put(uint64_t at, unsigned n)
    {
        uint64_t v = next;
        next += 0x1111111111111111ull;
        for (unsigned i = 0; i < n; ++i)
            b[at + i] = uint8_t(v >> (8 * i));
        return n == 8 ? v : v & ((1ull << (8 * n)) - 1);
    }
};

} // namespace

TEST_CASE("VMCB control area fields sit at Linux's offsets", "[svm][vmcb]")
{
    Poker p;
    uint32_t w[6];
    for (unsigned i = 0; i < 6; ++i)
        w[i] = uint32_t(p.put(4 * i, 4));
    auto thresh = p.put(off::PAUSE_THRESH, 2), count = p.put(off::PAUSE_COUNT, 2);
    auto iopm = p.put(off::IOPM_BASE, 8), msrpm = p.put(off::MSRPM_BASE, 8), tsc = p.put(off::TSC_OFFSET, 8);
    auto asid = p.put(off::ASID, 4), tlb = p.put(off::TLB_CONTROL, 1);
    auto ictl = p.put(off::INT_CTL, 4), ivec = p.put(off::INT_VECTOR, 4), ist = p.put(off::INT_STATE, 4);
    auto ec = p.put(off::EXITCODE, 8), i1 = p.put(off::EXITINFO1, 8), i2 = p.put(off::EXITINFO2, 8);
    auto eii = p.put(off::EXITINTINFO, 4), eiie = p.put(off::EXITINTINFO_ERR, 4);
    auto nctl = p.put(off::NESTED_CTL, 8), bar = p.put(off::AVIC_BAR, 8), ghcb = p.put(off::GHCB_GPA, 8);
    auto inj = p.put(off::EVENTINJ, 4), injerr = p.put(off::EVENTINJ_ERR, 4);
    auto ncr3 = p.put(off::N_CR3, 8), vext = p.put(off::VIRT_EXT, 8), clean = p.put(off::CLEAN, 4);
    auto nrip = p.put(off::NRIP, 8), ilen = p.put(off::INSN_LEN, 1), ib0 = p.put(off::INSN_BYTES, 1);
    auto back = p.put(off::AVIC_BACKING, 8), logi = p.put(off::AVIC_LOGICAL, 8), phys = p.put(off::AVIC_PHYSICAL, 8);
    auto vmsa = p.put(off::VMSA_PA, 8), bl = p.put(off::BUS_LOCK, 2);
    auto asf = p.put(off::ALLOWED_SEV_FEATURES, 8), gsf = p.put(off::GUEST_SEV_FEATURES, 8);

    Vmcb v = vmcb_from_bytes(p.b);
    auto const& c = v.control;
    for (unsigned i = 0; i < 6; ++i)
        CHECK(c.intercepts[i] == w[i]);
    CHECK(c.pause_filter_thresh == thresh);
    CHECK(c.pause_filter_count == count);
    CHECK(c.iopm_base_pa == iopm);
    CHECK(c.msrpm_base_pa == msrpm);
    CHECK(c.tsc_offset == tsc);
    CHECK(c.asid == asid);
    CHECK(c.tlb_ctl == tlb);
    CHECK(c.int_ctl == ictl);
    CHECK(c.int_vector == ivec);
    CHECK(c.int_state == ist);
    CHECK(c.exit_code == ec);
    CHECK(c.exit_info_1 == i1);
    CHECK(c.exit_info_2 == i2);
    CHECK(c.exit_int_info == eii);
    CHECK(c.exit_int_info_err == eiie);
    CHECK(c.nested_ctl == nctl);
    CHECK(c.avic_vapic_bar == bar);
    CHECK(c.ghcb_gpa == ghcb);
    CHECK(c.event_inj == inj);
    CHECK(c.event_inj_err == injerr);
    CHECK(c.nested_cr3 == ncr3);
    CHECK(c.virt_ext == vext);
    CHECK(c.clean == clean);
    CHECK(c.next_rip == nrip);
    CHECK(c.insn_len == ilen);
    CHECK(c.insn_bytes[0] == ib0);
    CHECK(c.avic_backing_page == back);
    CHECK(c.avic_logical_id == logi);
    CHECK(c.avic_physical_id == phys);
    CHECK(c.vmsa_pa == vmsa);
    CHECK(c.bus_lock_counter == bl);
    CHECK(c.allowed_sev_features == asf);
    CHECK(c.guest_sev_features == gsf);
    // and back to the same bytes
    CHECK(vmcb_to_bytes(v) == p.b);
}

TEST_CASE("VMCB save area fields sit at Linux's offsets", "[svm][vmcb]")
{
    Poker p;
    struct { uint64_t at; VmcbSeg VmcbSaveArea::*f; } segs[] = {
        { off::ES, &VmcbSaveArea::es }, { off::CS, &VmcbSaveArea::cs }, { off::SS, &VmcbSaveArea::ss },
        { off::DS, &VmcbSaveArea::ds }, { off::FS, &VmcbSaveArea::fs }, { off::GS, &VmcbSaveArea::gs },
        { off::GDTR, &VmcbSaveArea::gdtr }, { off::LDTR, &VmcbSaveArea::ldtr },
        { off::IDTR, &VmcbSaveArea::idtr }, { off::TR, &VmcbSaveArea::tr },
    };
    uint64_t sel[10], attr[10], lim[10], base[10];
    for (unsigned i = 0; i < 10; ++i) {
        sel[i] = p.put(segs[i].at + kSegSel, 2);
        attr[i] = p.put(segs[i].at + kSegAttr, 2);
        lim[i] = p.put(segs[i].at + kSegLimit, 4);
        base[i] = p.put(segs[i].at + kSegBase, 8);
    }
    struct { uint64_t at; uint64_t VmcbSaveArea::*f; uint64_t v; } q[] = {
        { off::EFER, &VmcbSaveArea::efer }, { off::CR4, &VmcbSaveArea::cr4 }, { off::CR3, &VmcbSaveArea::cr3 },
        { off::CR0, &VmcbSaveArea::cr0 }, { off::DR7, &VmcbSaveArea::dr7 }, { off::DR6, &VmcbSaveArea::dr6 },
        { off::RFLAGS, &VmcbSaveArea::rflags }, { off::RIP, &VmcbSaveArea::rip }, { off::RSP, &VmcbSaveArea::rsp },
        { off::RAX, &VmcbSaveArea::rax }, { off::STAR, &VmcbSaveArea::star }, { off::LSTAR, &VmcbSaveArea::lstar },
        { off::CSTAR, &VmcbSaveArea::cstar }, { off::SFMASK, &VmcbSaveArea::sfmask },
        { off::KERNEL_GS_BASE, &VmcbSaveArea::kernel_gs_base }, { off::SYSENTER_CS, &VmcbSaveArea::sysenter_cs },
        { off::SYSENTER_ESP, &VmcbSaveArea::sysenter_esp }, { off::SYSENTER_EIP, &VmcbSaveArea::sysenter_eip },
        { off::CR2, &VmcbSaveArea::cr2 }, { off::G_PAT, &VmcbSaveArea::g_pat }, { off::DBGCTL, &VmcbSaveArea::dbgctl },
        { off::SPEC_CTRL, &VmcbSaveArea::spec_ctrl },
    };
    for (auto& e : q)
        e.v = p.put(e.at, 8);
    auto cpl = p.put(off::CPL, 1), vmpl = p.put(off::VMPL, 1);

    Vmcb v = vmcb_from_bytes(p.b);
    for (unsigned i = 0; i < 10; ++i) {
        VmcbSeg s = v.save.*segs[i].f;
        CHECK(s.selector == sel[i]);
        CHECK(s.attrib == attr[i]);
        CHECK(s.limit == lim[i]);
        CHECK(s.base == base[i]);
    }
    for (auto& e : q)
        CHECK(v.save.*e.f == e.v);
    CHECK(v.save.cpl == cpl);
    CHECK(v.save.vmpl == vmpl);
}

TEST_CASE("Linux struct vmcb offsets (typed from arch/x86/include/asm/svm.h) match the structs", "[svm][vmcb]")
{
    // Linux vmcb_control_area / vmcb_save_area: sizes 1024 and 0x2E8 (EXPECTED_VMCB_*_SIZE).
    CHECK(sizeof(VmcbControlArea) == 1024);
    CHECK(sizeof(VmcbSaveArea) == 0x2E8);
    CHECK(sizeof(Vmcb) == 4096);
    CHECK(sizeof(Vmsa) == 4096);
    CHECK(offsetof(Vmcb, save) == 0x400);
    CHECK(offsetof(VmcbControlArea, vmsa_pa) == 0x108);
    CHECK(offsetof(VmcbControlArea, nested_ctl) == 0x90);
    CHECK(offsetof(VmcbControlArea, event_inj) == 0xA8);
    CHECK(offsetof(VmcbControlArea, clean) == 0xC0);
    CHECK(offsetof(VmcbSaveArea, g_pat) == 0x268);
    CHECK(offsetof(Vmsa, rbx) == 0x318);
    CHECK(offsetof(Vmsa, sev_features) == 0x3B0);
    CHECK(offsetof(Vmsa, xcr0) == 0x3E8);
    CHECK(offsetof(Vmsa, fpreg_xmm) == 0x470);
}

TEST_CASE("VMSA fields sit at Linux's sev_es_save_area offsets", "[svm][vmcb]")
{
    Poker p;
    auto rcx = p.put(0x308, 8), rbx = p.put(0x318, 8), r15 = p.put(0x378, 8), rip = p.put(0x178, 8);
    auto feat = p.put(0x3B0, 8), vintr = p.put(0x3B8, 8), xcr0 = p.put(0x3E8, 8), mxcsr = p.put(0x408, 4);
    auto xss = p.put(0x140, 8), dr0 = p.put(0x180, 8), pkru = p.put(0x2E8, 4), inj = p.put(0x3E0, 8);
    Vmsa v = vmsa_from_bytes(p.b);
    CHECK(v.rcx == rcx);
    CHECK(v.rbx == rbx);
    CHECK(v.r15 == r15);
    CHECK(v.rip == rip);
    CHECK(v.sev_features == feat);
    CHECK(v.vintr_ctrl == vintr);
    CHECK(v.xcr0 == xcr0);
    CHECK(v.mxcsr == mxcsr);
    CHECK(v.xss == xss);
    CHECK(v.dr0 == dr0);
    CHECK(v.pkru == pkru);
    CHECK(v.event_inj == inj);
    CHECK(vmsa_to_bytes(v) == p.b);
}

TEST_CASE("Intercept bit numbering follows the VMCB words", "[svm][vmcb]")
{
    // Linux arch/x86/include/asm/svm.h INTERCEPT_*: word3 bit 18 CPUID, 24 HLT, 27 IOIO_PROT, 28 MSR_PROT, 31
    // SHUTDOWN;
    // word4 bit 0 VMRUN, 1 VMMCALL, 9 WBINVD; word3 bit 25 INVLPG, 0 INTR, 1 NMI.
    CHECK(unsigned(Intercept::CPUID) == 3 * 32 + 18);
    CHECK(unsigned(Intercept::HLT) == 3 * 32 + 24);
    CHECK(unsigned(Intercept::INVLPG) == 3 * 32 + 25);
    CHECK(unsigned(Intercept::IOIO_PROT) == 3 * 32 + 27);
    CHECK(unsigned(Intercept::MSR_PROT) == 3 * 32 + 28);
    CHECK(unsigned(Intercept::SHUTDOWN) == 3 * 32 + 31);
    CHECK(unsigned(Intercept::INTR) == 3 * 32 + 0);
    CHECK(unsigned(Intercept::NMI) == 3 * 32 + 1);
    CHECK(unsigned(Intercept::VMRUN) == 4 * 32 + 0);
    CHECK(unsigned(Intercept::VMMCALL) == 4 * 32 + 1);
    CHECK(unsigned(Intercept::WBINVD) == 4 * 32 + 9);
    CHECK(unsigned(Intercept::TRAP_EFER_WRITE) == 4 * 32 + 15);
    CHECK(unsigned(Intercept::IDLE_HLT) == 5 * 32 + 6);
    // exit codes (Linux arch/x86/include/uapi/asm/svm.h SVM_EXIT_*; APM vol 2 Appendix C)
    CHECK(exitcode::SVM_EXIT_CPUID == 0x72);
    CHECK(exitcode::SVM_EXIT_HLT == 0x78);
    CHECK(exitcode::SVM_EXIT_IOIO == 0x7B);
    CHECK(exitcode::SVM_EXIT_MSR == 0x7C);
    CHECK(exitcode::SVM_EXIT_VMMCALL == 0x81);
    CHECK(exitcode::SVM_EXIT_NPF == 0x400);
    CHECK(exitcode::SVM_EXIT_VMGEXIT == 0x403);
    CHECK(exitcode::VMEXIT_INVALID == 0xFFFFFFFFFFFFFFFFull);
    CHECK(exitcode::VMEXIT_BUSY == 0xFFFFFFFFFFFFFFFEull);
}

TEST_CASE("read_vmcb/write_vmcb go through DRAM with no key", "[svm][vmcb]")
{
    Machine m;
    m.good_vmcb();
    Vmcb v = m.vmcb();
    CHECK(v.control.asid == 1);
    CHECK(v.save.rip == 0x401000);
    v.control.exit_code = 0x78;
    REQUIRE(write_vmcb(*m.mc, Spa(kVmcbPa), v).has_value());
    CHECK(m.get64(kVmcbPa + off::EXITCODE) == 0x78);
    CHECK_FALSE(read_vmcb(*m.mc, Spa(0xFFFF'0000'0000ull)).has_value()); // not DRAM: an error value
}

TEST_CASE("The exit code of an intercept (APM vol 2 Appendix C)", "[svm][vmcb]")
{
    using namespace exitcode;
    CHECK(exit_code_for(Intercept::CR3_READ) == SVM_EXIT_READ_CR0 + 3);
    CHECK(exit_code_for(Intercept::CR8_WRITE) == SVM_EXIT_WRITE_CR0 + 8);
    CHECK(exit_code_for(Intercept::DR7_WRITE) == SVM_EXIT_WRITE_DR0 + 7);
    CHECK(exit_code_for(Intercept(unsigned(Intercept::EXCEPTION_OFFSET) + 14)) == SVM_EXIT_EXCP_BASE + 14);
    CHECK(exit_code_for(Intercept::INTR) == SVM_EXIT_INTR);
    CHECK(exit_code_for(Intercept::CPUID) == SVM_EXIT_CPUID);
    CHECK(exit_code_for(Intercept::HLT) == SVM_EXIT_HLT);
    CHECK(exit_code_for(Intercept::INVLPG) == SVM_EXIT_INVLPG);
    CHECK(exit_code_for(Intercept::IOIO_PROT) == SVM_EXIT_IOIO);
    CHECK(exit_code_for(Intercept::MSR_PROT) == SVM_EXIT_MSR);
    CHECK(exit_code_for(Intercept::SHUTDOWN) == SVM_EXIT_SHUTDOWN);
    CHECK(exit_code_for(Intercept::VMRUN) == SVM_EXIT_VMRUN);
    CHECK(exit_code_for(Intercept::VMMCALL) == SVM_EXIT_VMMCALL);
    CHECK(exit_code_for(Intercept::WBINVD) == SVM_EXIT_WBINVD);
    CHECK(exit_code_for(Intercept::XSETBV) == SVM_EXIT_XSETBV);
    CHECK(exit_code_for(Intercept::TRAP_EFER_WRITE) == SVM_EXIT_EFER_WRITE_TRAP);
    CHECK(exit_code_for(Intercept::TRAP_CR0_WRITE) == SVM_EXIT_CR0_WRITE_TRAP);
    CHECK(exit_code_for(Intercept::INVLPGB) == SVM_EXIT_INVLPGB);
    CHECK(exit_code_for(Intercept::BUSLOCK) == SVM_EXIT_BUS_LOCK);
    CHECK(exit_code_for(Intercept::IDLE_HLT) == SVM_EXIT_IDLE_HLT);
}
