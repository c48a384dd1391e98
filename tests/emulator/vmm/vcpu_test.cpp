// The vCPU without a CPU: the VMCB it builds passes (or, with an unactivated ASID, fails) the
// SVM library's VMRUN consistency check, its nested page tables translate as the independent
// NPT walker reads them, and every exit is handled from a VMCB image alone.
#include "cpu/cpu_model.h"
#include "cpu/svm/npt.h"
#include "cpu/svm/svm.h"
#include "emulator/vmm/vcpu.h"
#include "tests/emulator/vmm/vmm_harness.h"

using namespace sevemu;
using namespace sevemu::test;
using namespace sevemu::cpu::svm;

namespace {

// A host as the CPU model would describe it for VMRUN: SEV on, SMM locked, 64-bit.
HostContext sev_host(Host& h)
{
    HostContext ctx;
    ctx.syscfg = cpu::syscfg::MemEncryptionModEn;
    ctx.hwcr = 1; // SmmLock
    ctx.max_sev_asid = h.sev->config().max_asid;
    ctx.min_sev_asid = h.sev->config().min_sev_asid;
    return ctx;
}

struct Guest {
    Host h;
    Vm vm { *h.sev, KVM_X86_DEFAULT_VM };
    Spa ram;
    Guest(bool sev = true, uint32_t pages = 64)
    {
        if (sev)
            REQUIRE(op(vm, KVM_SEV_INIT, Hva(0)) == 0);
        auto r = h.host->alloc_pages(pages);
        REQUIRE(r.has_value());
        ram = *r;
        kvm_userspace_memory_region region { 0, 0, 0, pages * kPageSize, direct_map(ram).value };
        REQUIRE(vm.set_user_memory_region(region) == 0);
    }
};

} // namespace

TEST_CASE("the VMCB of an SEV vCPU passes VMRUN's checks only once the firmware activated its ASID", "[vmm][vcpu]")
{
    Guest g;
    auto vcpu = Vcpu::create(g.vm, 0);
    REQUIRE(vcpu.has_value());
    Vmcb vmcb = (*vcpu)->vmcb();
    CHECK(vmcb.control.asid == g.vm.sev().asid);
    CHECK((vmcb.control.nested_ctl & (nested_ctl::NP_ENABLE | nested_ctl::SEV_ENABLE)) == (nested_ctl::NP_ENABLE | nested_ctl::SEV_ENABLE));
    // No LAUNCH_START yet: no key in the ASID's slot, so VMRUN must refuse (VMEXIT_INVALID).
    auto check = vmrun_consistency_check(vmcb, sev_host(g.h), *g.h.mc);
    REQUIRE_FALSE(check.has_value());
    CHECK(check.error() == VmrunCheck::SevKeyNotActivated);
    // LAUNCH_START + ACTIVATE through the KVM layer programs the slot; now it passes.
    REQUIRE(op(g.vm, KVM_SEV_LAUNCH_START, g.h.user_struct(kvm_sev_launch_start {})) == 0);
    CHECK(vmrun_consistency_check(vmcb, sev_host(g.h), *g.h.mc).has_value());
}

TEST_CASE("a plain vCPU gets its own ASID above the SEV range and no SEV bit", "[vmm][vcpu]")
{
    Guest g(false);
    auto vcpu = Vcpu::create(g.vm, 3);
    REQUIRE(vcpu.has_value());
    auto const& c = (*vcpu)->vmcb().control;
    CHECK(c.asid == g.h.sev->config().max_asid + 4);
    CHECK_FALSE(c.nested_ctl & nested_ctl::SEV_ENABLE);
    HostContext ctx = sev_host(g.h);
    CHECK(vmrun_consistency_check((*vcpu)->vmcb(), ctx, *g.h.mc).has_value());
}

TEST_CASE("nested page tables map every slot page to its host page", "[vmm][vcpu]")
{
    Guest g(true, 600); // more than one page table's worth
    auto vcpu = Vcpu::create(g.vm, 0);
    REQUIRE(vcpu.has_value());
    NptContext ctx;
    ctx.n_cr3 = (*vcpu)->nested_cr3();
    ctx.nxe = true;
    for (uint64_t gpa : { uint64_t(0), uint64_t(0x1234), uint64_t(0x1FF000), uint64_t(0x200000), uint64_t(600 * kPageSize - 1) }) {
        auto t = npt_walk(*g.h.mc, ctx, Gpa(gpa), NptAccess { true, false, false, true });
        REQUIRE(t.has_value());
        CHECK(t->spa == *g.vm.gpa_to_spa(Gpa(gpa)));
        CHECK_FALSE(t->c_bit);
        CHECK(t->writable);
    }
    // Beyond the slot: not present, an MMIO candidate.
    auto miss = npt_walk(*g.h.mc, ctx, Gpa(600 * kPageSize), NptAccess {});
    REQUIRE_FALSE(miss.has_value());
    CHECK((miss.error().exit_info_1 & npf::P) == 0);

    // The VM's other vCPUs share these tables (KVM's TDP MMU root): a second vCPU costs its VMCB,
    // host save area and permission maps (1 + 1 + 3 + 2 pages), not another set of tables.
    uint64_t free_before = g.h.host->free_page_count();
    auto second = Vcpu::create(g.vm, 1);
    REQUIRE(second.has_value());
    CHECK((*second)->nested_cr3() == (*vcpu)->nested_cr3());
    CHECK((*second)->vmcb().control.nested_cr3 == ctx.n_cr3);
    CHECK(free_before - g.h.host->free_page_count() == 7);
    // They go with the last vCPU.
    second->reset();
    CHECK(g.h.host->free_page_count() == free_before);
    uint64_t with_tables = g.h.host->free_page_count();
    vcpu->reset();
    CHECK(g.h.host->free_page_count() > with_tables + 7);
}

TEST_CASE("exits are handled from the VMCB image alone", "[vmm][vcpu]")
{
    Guest g(false);
    auto made = Vcpu::create(g.vm, 0);
    REQUIRE(made.has_value());
    Vcpu& v = **made;
    v.set_cpuid({ { 0x8000001F, 0, 0x1A, 0x73, 0, 0 } });
    Vmcb vmcb = v.vmcb();

    SECTION("CPUID is answered in the kernel from the VMM's table")
    {
        vmcb.control.exit_code = exitcode::SVM_EXIT_CPUID;
        vmcb.save.rax = 0x8000001F;
        v.gprs()[1] = 0;
        vmcb.control.next_rip = 0x1002;
        CHECK_FALSE(v.handle_exit(vmcb).has_value());
        CHECK(vmcb.save.rax == 0x1A);
        CHECK(v.gprs()[3] == 0x73);
        CHECK(vmcb.save.rip == 0x1002);
        vmcb.save.rax = 0x40000000; // not in the table: zeros
        CHECK_FALSE(v.handle_exit(vmcb).has_value());
        CHECK(vmcb.save.rax == 0);
    }
    SECTION("OUT and IN exit to the VMM with the port, size and value")
    {
        vmcb.control.exit_code = exitcode::SVM_EXIT_IOIO;
        vmcb.control.exit_info_1 = (0x3F8ull << 16) | (1u << 4); // OUT, 8-bit, port 0x3F8
        vmcb.control.exit_info_2 = 0x2000;
        vmcb.save.rax = 0x12345641;
        auto e = v.handle_exit(vmcb);
        REQUIRE(e.has_value());
        auto io = std::get<ExitIo>(*e);
        CHECK(io.port == 0x3F8);
        CHECK(io.size == 1);
        CHECK_FALSE(io.in);
        CHECK(io.value == 0x41);
        CHECK(vmcb.save.rip == 0x2000);
        vmcb.control.exit_info_1 = (0x3FDull << 16) | (1u << 5) | 1; // IN, 16-bit
        e = v.handle_exit(vmcb);
        REQUIRE(e.has_value());
        CHECK(std::get<ExitIo>(*e).in);
        CHECK(std::get<ExitIo>(*e).size == 2);
        vmcb.control.exit_info_1 = (0x3F8ull << 16) | (1u << 2) | (1u << 4); // OUTSB: refused, clearly
        e = v.handle_exit(vmcb);
        REQUIRE(e.has_value());
        CHECK(std::get<ExitInternalError>(*e).reason.find("string I/O") != std::string::npos);
    }
    SECTION("the AMD platform MSRs KVM answers itself: reads of 0, ignored writes; others #GP")
    {
        // Linux 6.1 arch/x86/kvm/x86.c kvm_get_msr_common / kvm_set_msr_common.
        vmcb.control.exit_code = exitcode::SVM_EXIT_MSR;
        vmcb.control.next_rip = 0x3002;
        for (uint32_t msr : { 0xC0010010u, 0xC0010015u, 0xC001001Fu, 0xC0011022u }) {
            vmcb.control.exit_info_1 = 0; // RDMSR
            v.gprs()[1] = msr;
            vmcb.save.rax = 0x1111;
            v.gprs()[2] = 0x2222;
            vmcb.save.rip = 0x3000;
            CHECK_FALSE(v.handle_exit(vmcb).has_value());
            CHECK(vmcb.save.rax == 0);
            CHECK(v.gprs()[2] == 0);
            CHECK(vmcb.save.rip == 0x3002);
            CHECK(vmcb.control.event_inj == 0);
        }
        vmcb.control.exit_info_1 = 1; // WRMSR NB_CFG (Linux's amd_bus_cpu_online): ignored
        v.gprs()[1] = 0xC001001F;
        vmcb.save.rip = 0x3000;
        CHECK_FALSE(v.handle_exit(vmcb).has_value());
        CHECK(vmcb.save.rip == 0x3002);
        CHECK(vmcb.control.event_inj == 0);
        v.gprs()[1] = 0xC0010010; // WRMSR SYSCFG: KVM has no such write: #GP, RIP unchanged
        vmcb.save.rip = 0x3000;
        CHECK_FALSE(v.handle_exit(vmcb).has_value());
        CHECK(vmcb.save.rip == 0x3000);
        CHECK(vmcb.control.event_inj == (evtinj::VALID | evtinj::VALID_ERR | (3u << evtinj::TYPE_SHIFT) | 13));
    }
    SECTION("IA32_APIC_BASE is the kernel's: read, written with kvm_set_apic_base()'s checks")
    {
        v.set_cpuid({ { 0x80000008, 0xFFFFFFFFu, 0x3030, 0, 0, 0 } }); // MAXPHYADDR 48
        v.set_apic_base(0xFEE00900);
        vmcb.control.exit_code = exitcode::SVM_EXIT_MSR;
        vmcb.control.next_rip = 0x4002;
        v.gprs()[1] = 0x1B;
        vmcb.control.exit_info_1 = 0;
        vmcb.save.rip = 0x4000;
        CHECK_FALSE(v.handle_exit(vmcb).has_value());
        CHECK(vmcb.save.rax == 0xFEE00900);
        CHECK(v.gprs()[2] == 0);
        CHECK(vmcb.save.rip == 0x4002);
        // A move of the APIC page (and the enable bit off) is taken.
        vmcb.control.exit_info_1 = 1;
        vmcb.save.rax = 0xFED00100;
        v.gprs()[2] = 0;
        vmcb.save.rip = 0x4000;
        CHECK_FALSE(v.handle_exit(vmcb).has_value());
        CHECK(v.apic_base() == 0xFED00100);
        CHECK(vmcb.control.event_inj == 0);
        // EXTD (x2APIC is not offered), a reserved low bit, an address above MAXPHYADDR: #GP,
        // nothing stored, RIP stays.
        for (uint64_t bad : { 0xFEE00D00ull, 0xFEE00901ull, 0x1'0000'FEE0'0900ull }) {
            vmcb.control.event_inj = 0;
            vmcb.save.rax = uint32_t(bad);
            v.gprs()[2] = bad >> 32;
            vmcb.save.rip = 0x4000;
            CHECK_FALSE(v.handle_exit(vmcb).has_value());
            CHECK(v.apic_base() == 0xFED00100);
            CHECK(vmcb.save.rip == 0x4000);
            CHECK(vmcb.control.event_inj == (evtinj::VALID | evtinj::VALID_ERR | (3u << evtinj::TYPE_SHIFT) | 13));
        }
    }
    SECTION("an unknown MSR injects #GP; HLT, SHUTDOWN, hypercalls and failed entries reach the VMM")
    {
        vmcb.control.exit_code = exitcode::SVM_EXIT_MSR;
        CHECK_FALSE(v.handle_exit(vmcb).has_value());
        CHECK(vmcb.control.event_inj == (evtinj::VALID | evtinj::VALID_ERR | (3u << evtinj::TYPE_SHIFT) | 13));
        vmcb.control.exit_code = exitcode::SVM_EXIT_HLT;
        vmcb.control.next_rip = 0x5001;
        CHECK(std::holds_alternative<ExitHlt>(*v.handle_exit(vmcb)));
        CHECK(vmcb.control.event_inj == 0);
        CHECK(vmcb.save.rip == 0x5001);
        vmcb.control.exit_code = exitcode::SVM_EXIT_SHUTDOWN;
        CHECK(std::holds_alternative<ExitShutdown>(*v.handle_exit(vmcb)));
        vmcb.control.exit_code = exitcode::SVM_EXIT_VMMCALL;
        vmcb.save.rax = KVM_HC_MAP_GPA_RANGE;
        v.gprs()[3] = 0x10000;
        v.gprs()[1] = 4;
        v.gprs()[2] = 0x10; // KVM_MAP_GPA_RANGE_ENCRYPTED (1 << 4; uapi/linux/kvm_para.h)
        auto hc = std::get<ExitHypercall>(*v.handle_exit(vmcb));
        CHECK(hc.args == std::array<uint64_t, 3> { 0x10000, 4, 0x10 });
        vmcb.save.rax = 99; // an unknown hypercall: -KVM_ENOSYS to the guest
        CHECK_FALSE(v.handle_exit(vmcb).has_value());
        CHECK(vmcb.save.rax == uint64_t(-1000));
        vmcb.control.exit_code = exitcode::VMEXIT_INVALID;
        CHECK(std::holds_alternative<ExitFailEntry>(*v.handle_exit(vmcb)));
        vmcb.control.exit_code = exitcode::SVM_EXIT_NPF;
        CHECK(std::holds_alternative<ExitInternalError>(*v.handle_exit(vmcb)));
        vmcb.control.exit_code = 0x1234;
        CHECK(std::holds_alternative<ExitInternalError>(*v.handle_exit(vmcb)));
    }
}

TEST_CASE("INIT and SIPI reset and start a vCPU's VMCB as KVM does for a non-ES guest", "[vmm][vcpu]")
{
    Guest g;
    REQUIRE(op(g.vm, KVM_SEV_LAUNCH_START, g.h.user_struct(kvm_sev_launch_start {})) == 0);
    auto made = Vcpu::create(g.vm, 1);
    REQUIRE(made.has_value());
    Vcpu& v = **made;
    v.set_cpuid({ { 1, 0xFFFFFFFFu, 0x00A00F11, 0x01020800, 0, 0 } });
    // A vCPU in the middle of 64-bit code, with an interrupt being injected and a window asked for.
    auto& s = v.state();
    s.cr0 = 0x80050033;
    s.cr3 = 0x1000;
    s.cr4 = 0x6F0;
    s.efer = 0x1D01;
    s.cs = VmcbSeg { 0x10, seg_attrib::P | seg_attrib::S | seg_attrib::L | 0xB, 0xFFFFFFFF, 0 };
    s.rip = 0xFFFFFFFF81000000ull;
    s.rsp = 0x1234;
    s.rflags = 0x246;
    s.star = 0x0023001000000000ull;
    s.lstar = 0xFFFFFFFF81A00000ull;
    s.g_pat = 0x0407050600070106ull;
    v.gprs()[3] = 77;
    REQUIRE(v.inject_interrupt(0x30));
    v.request_interrupt_window();

    // INIT (SDM vol 3 Table 9-1; APM vol 2 §14.1.3): real mode at F000:FFF0 with CS base
    // FFFF0000, CR0 = 60000010, EFER only SVME (VMRUN's requirement), RDX = CPUID 1 EAX, the
    // other registers zero; the MSRs in the save area stay; nothing is left to inject.
    v.init_event();
    CHECK(s.cs.selector == 0xF000);
    CHECK(s.cs.base == 0xFFFF0000);
    CHECK(s.rip == 0xFFF0);
    CHECK(s.cr0 == 0x60000010);
    CHECK(s.cr3 == 0);
    CHECK(s.cr4 == 0);
    CHECK(s.efer == 1u << 12);
    CHECK(s.rflags == 2);
    CHECK(s.rsp == 0);
    CHECK(v.gprs()[2] == 0x00A00F11);
    CHECK(v.gprs()[3] == 0);
    CHECK(s.star == 0x0023001000000000ull);
    CHECK(s.lstar == 0xFFFFFFFF81A00000ull);
    CHECK(s.g_pat == 0x0407050600070106ull);
    CHECK(v.vmcb().control.event_inj == 0);
    CHECK(v.ready_for_interrupt_injection() == false); // RFLAGS.IF = 0 after INIT
    CHECK(v.vmcb().control.tlb_ctl == tlb_control::FLUSH_ASID);

    // SIPI with vector 0x9A: CS = 0x9A00, base 0x9A000, IP = 0; the VMCB passes VMRUN's checks.
    v.deliver_sipi(0x9A);
    CHECK(s.cs.selector == 0x9A00);
    CHECK(s.cs.base == 0x9A000);
    CHECK(s.cs.limit == 0xFFFF);
    CHECK(s.rip == 0);
    CHECK(s.cr0 == 0x60000010);
    CHECK(vmrun_consistency_check(v.vmcb(), sev_host(g.h), *g.h.mc).has_value());
}

TEST_CASE("IN completes into RAX with x86 register-width rules", "[vmm][vcpu]")
{
    Guest g(false);
    auto made = Vcpu::create(g.vm, 0);
    REQUIRE(made.has_value());
    Vcpu& v = **made;
    for (auto [size, expect] : { std::pair { 1, 0xFFFFFFFFFFFFFF5Aull }, { 2, 0xFFFFFFFFFFFF675Aull }, { 4, 0x89AB675Aull } }) {
        Vmcb vmcb = v.vmcb();
        vmcb.control.exit_code = exitcode::SVM_EXIT_IOIO;
        vmcb.control.exit_info_1 = (0x71ull << 16) | 1 | (size == 1 ? 1u << 4 : size == 2 ? 1u << 5 : 1u << 6);
        v.state().rax = ~0ull;
        auto e = v.handle_exit(vmcb);
        REQUIRE(e.has_value());
        v.state().rax = ~0ull;
        v.complete_io_in(0x89AB675A);
        CHECK(v.state().rax == expect);
    }
}

TEST_CASE("CPUID 8000_001F and the firmware agree on the SEV ASID ranges, SEV-ES and the C-bit", "[vmm]")
{
    for (CpuModel c : kAllCpuModels) {
        auto leaf = cpu::cpuid_query(c, 0x8000001F, 0);
        auto params = fw::FirmwareParams::for_model(c);
        INFO(cpu_model_name(c));
        CHECK(leaf.ecx == params.max_asid);
        CHECK(leaf.edx == params.min_sev_asid);
        CHECK((leaf.ebx & 0x3F) == params.cbit_position);
        CHECK(bool(leaf.eax & (1u << 3)) == params.es_supported);
    }
}
