// The guest-facing live-migration ABI of the hypervisor layer, from VMCB images alone:
// MSR_KVM_MIGRATION_CONTROL (0x4b564d08) behind KVM_FEATURE_MIGRATION_CONTROL (CPUID 0x40000001
// EAX[17]), KVM_HC_MAP_GPA_RANGE's in-kernel checks (Linux arch/x86/kvm/x86.c
// kvm_emulate_hypercall), and the VM's shared-regions list with the semantics of the SEV
// live-migration series' KVM_GET_SHARED_PAGES_LIST / KVM_SET_SHARED_PAGES_LIST.
#include "emulator/vmm/vcpu.h"
#include "tests/emulator/vmm/vmm_harness.h"

#include <cerrno>

using namespace sevemu;
using namespace sevemu::test;
using namespace sevemu::vmm;
using namespace sevemu::cpu::svm;

namespace {

constexpr uint32_t kGp = evtinj::VALID | evtinj::VALID_ERR | (3u << evtinj::TYPE_SHIFT) | 13;

struct Guest {
    Host h;
    Vm vm { *h.sev, KVM_X86_DEFAULT_VM };
    Guest()
    {
        REQUIRE(op(vm, KVM_SEV_INIT, Hva(0)) == 0);
        auto r = h.host->alloc_pages(16);
        REQUIRE(r.has_value());
        kvm_userspace_memory_region region { 0, 0, 0, 16 * kPageSize, direct_map(*r).value };
        REQUIRE(vm.set_user_memory_region(region) == 0);
    }
};

// RDMSR / WRMSR of MSR_KVM_MIGRATION_CONTROL through the exit handler; returns the event
// injected (0 = none) and leaves RDX:RAX as the guest sees them.
uint64_t msr_access(Vcpu& v, Vmcb& vmcb, bool write, uint64_t value = 0)
{
    vmcb.control.exit_code = exitcode::SVM_EXIT_MSR;
    vmcb.control.exit_info_1 = write;
    vmcb.control.event_inj = 0;
    vmcb.control.next_rip = 0x1002;
    vmcb.save.rip = 0x1000;
    v.gprs()[1] = MSR_KVM_MIGRATION_CONTROL;
    vmcb.save.rax = write ? uint32_t(value) : 0x5555;
    v.gprs()[2] = write ? value >> 32 : 0x6666;
    REQUIRE_FALSE(v.handle_exit(vmcb).has_value());
    if (vmcb.control.event_inj)
        CHECK(vmcb.save.rip == 0x1000); // a faulting instruction does not retire
    else
        CHECK(vmcb.save.rip == 0x1002);
    return vmcb.control.event_inj;
}

} // namespace

TEST_CASE("MSR_KVM_MIGRATION_CONTROL: #GP without KVM_FEATURE_MIGRATION_CONTROL, else a VM-wide READY bit",
    "[vmm][migration-abi]")
{
    Guest g;
    auto made = Vcpu::create(g.vm, 0);
    REQUIRE(made.has_value());
    Vcpu& v = **made;
    Vmcb vmcb = v.vmcb();

    // The KVM leaf without bit 17 (what a plain guest's KVM leaf holds): both accesses fault.
    v.set_cpuid({ { 0x40000001, 0xFFFFFFFFu, 0x01007AFB, 0, 0, 0 } });
    CHECK(msr_access(v, vmcb, false) == kGp);
    CHECK(msr_access(v, vmcb, true, KVM_MIGRATION_READY) == kGp);
    CHECK(g.vm.migration_control() == 0);
    // No KVM leaf at all: the same.
    v.set_cpuid({});
    CHECK(msr_access(v, vmcb, true, KVM_MIGRATION_READY) == kGp);

    v.set_cpuid({ { 0x40000001, 0xFFFFFFFFu, 0x01007AFB | (1u << 17), 0, 0, 0 } });
    CHECK(msr_access(v, vmcb, false) == 0);
    CHECK(vmcb.save.rax == 0);
    CHECK(v.gprs()[2] == 0);
    // Any bit but KVM_MIGRATION_READY is reserved.
    for (uint64_t bad : { 2ull, 3ull, 1ull << 32, 0x8000000000000001ull }) {
        CHECK(msr_access(v, vmcb, true, bad) == kGp);
        CHECK(g.vm.migration_control() == 0);
    }
    CHECK(msr_access(v, vmcb, true, KVM_MIGRATION_READY) == 0);
    CHECK(g.vm.migration_control() == KVM_MIGRATION_READY);
    CHECK(msr_access(v, vmcb, false) == 0);
    CHECK(vmcb.save.rax == 1);
    CHECK(v.gprs()[2] == 0);

    // Another vCPU of the VM reads the same value, and can clear it.
    auto other = Vcpu::create(g.vm, 1);
    REQUIRE(other.has_value());
    (*other)->set_cpuid({ { 0x40000001, 0xFFFFFFFFu, 1u << 17, 0, 0, 0 } });
    Vmcb vmcb1 = (*other)->vmcb();
    CHECK(msr_access(**other, vmcb1, false) == 0);
    CHECK(vmcb1.save.rax == 1);
    CHECK(msr_access(**other, vmcb1, true, 0) == 0);
    CHECK(g.vm.migration_control() == 0);
}

TEST_CASE("KVM_HC_MAP_GPA_RANGE: the kernel's checks answer -KVM_EINVAL without an exit", "[vmm][migration-abi]")
{
    Guest g;
    auto made = Vcpu::create(g.vm, 0);
    REQUIRE(made.has_value());
    Vcpu& v = **made;
    Vmcb vmcb = v.vmcb();
    auto call = [&](uint64_t gpa, uint64_t npages, uint64_t attrs) {
        vmcb.control.exit_code = exitcode::SVM_EXIT_VMMCALL;
        vmcb.control.next_rip = 0x2003;
        vmcb.save.rip = 0x2000;
        vmcb.save.rax = KVM_HC_MAP_GPA_RANGE;
        v.gprs()[3] = gpa;
        v.gprs()[1] = npages;
        v.gprs()[2] = attrs;
        auto e = v.handle_exit(vmcb);
        CHECK(vmcb.save.rip == 0x2003);
        return e;
    };
    constexpr uint64_t kEinval = uint64_t(-22);
    // Unaligned GPA, zero pages, a range whose last gfn wraps.
    CHECK_FALSE(call(0x1001, 1, 0).has_value());
    CHECK(vmcb.save.rax == kEinval);
    CHECK_FALSE(call(0x1000, 0, 0).has_value());
    CHECK(vmcb.save.rax == kEinval);
    CHECK_FALSE(call(0xFFFFFFFFFFFFF000ull, 0xFFF0000000000001ull, 0).has_value());
    CHECK(vmcb.save.rax == kEinval);
    CHECK_FALSE(call(0x1000, ~0ull, 0).has_value());
    CHECK(vmcb.save.rax == kEinval);
    // A good range reaches the VMM with its arguments (the attributes are the VMM's to check).
    auto e = call(0x3000, 2, 0x10);
    REQUIRE(e.has_value());
    auto hc = std::get<ExitHypercall>(*e);
    CHECK(hc.nr == KVM_HC_MAP_GPA_RANGE);
    CHECK(hc.args == std::array<uint64_t, 3> { 0x3000, 2, 0x10 });
}

TEST_CASE("the shared-regions list stays sorted and merged as pages turn shared and private", "[vmm][migration-abi]")
{
    Guest g;
    auto& vm = g.vm;
    auto regions = [&] {
        std::vector<std::pair<uint64_t, uint64_t>> out;
        for (auto const& r : vm.shared_regions())
            out.push_back({ r.gfn_start, r.npages });
        return out;
    };
    using P = std::vector<std::pair<uint64_t, uint64_t>>;
    CHECK(vm.shared_regions().empty());
    vm.map_gpa_range(10, 2, false);
    vm.map_gpa_range(20, 1, false);
    CHECK(regions() == P { { 10, 2 }, { 20, 1 } });
    vm.map_gpa_range(12, 3, false); // adjacent: merged
    CHECK(regions() == P { { 10, 5 }, { 20, 1 } });
    vm.map_gpa_range(5, 6, false); // overlapping: merged
    CHECK(regions() == P { { 5, 10 }, { 20, 1 } });
    vm.map_gpa_range(7, 2, true); // private again in the middle: split
    CHECK(regions() == P { { 5, 2 }, { 9, 6 }, { 20, 1 } });
    vm.map_gpa_range(0, 10, true); // private over the front
    CHECK(regions() == P { { 10, 5 }, { 20, 1 } });
    vm.map_gpa_range(15, 5, false); // fills the gap: one run
    CHECK(regions() == P { { 10, 11 } });
    CHECK_FALSE(vm.is_shared(9));
    CHECK(vm.is_shared(10));
    CHECK(vm.is_shared(20));
    CHECK_FALSE(vm.is_shared(21));
    vm.map_gpa_range(0, 100, true);
    CHECK(vm.shared_regions().empty());
}

TEST_CASE("KVM_GET_SHARED_PAGES_LIST and KVM_SET_SHARED_PAGES_LIST", "[vmm][migration-abi]")
{
    Guest g;
    auto& vm = g.vm;
    vm.map_gpa_range(0x900, 1, false);
    vm.map_gpa_range(0x100, 4, false);
    Hva pnents = g.h.user_buffer({}, 4);
    Hva buffer = g.h.user_buffer({}, kPageSize);
    auto nents = [&] { return g.h.read_struct<uint32_t>(pnents); };

    SECTION("GET: a zero size is -EINVAL, a short buffer -E2BIG with the count, else the sorted runs")
    {
        CHECK(vm.get_shared_pages_list({ pnents.value, buffer.value, 0 }) == -EINVAL);
        CHECK(vm.get_shared_pages_list({ pnents.value, buffer.value, 16 }) == -E2BIG);
        CHECK(nents() == 2);
        CHECK(vm.get_shared_pages_list({ pnents.value, buffer.value, 32 }) == 0);
        CHECK(nents() == 2);
        auto a = g.h.read_struct<kvm_shared_region>(buffer);
        auto b = g.h.read_struct<kvm_shared_region>(Hva(buffer.value + 16));
        CHECK((a.gfn_start == 0x100 && a.npages == 4));
        CHECK((b.gfn_start == 0x900 && b.npages == 1));
        CHECK(vm.get_shared_pages_list({ 0x1234, buffer.value, 32 }) == -EFAULT);
    }
    SECTION("SET replaces the list (sorted and merged); bad entries leave it unchanged")
    {
        kvm_shared_region in[3] = { { 0x50, 2 }, { 0x10, 1 }, { 0x52, 3 } };
        Hva src = g.h.user_buffer({ reinterpret_cast<uint8_t const*>(in), sizeof in });
        uint32_t n = 3;
        Hva count = g.h.user_struct(n);
        CHECK(vm.set_shared_pages_list({ count.value, src.value, 40 }) == -EINVAL); // size too small
        CHECK(vm.shared_regions().size() == 2);
        REQUIRE(vm.set_shared_pages_list({ count.value, src.value, sizeof in }) == 0);
        REQUIRE(vm.shared_regions().size() == 2);
        CHECK((vm.shared_regions()[0].gfn_start == 0x10 && vm.shared_regions()[0].npages == 1));
        CHECK((vm.shared_regions()[1].gfn_start == 0x50 && vm.shared_regions()[1].npages == 5));

        kvm_shared_region bad[2] = { { 0x70, 1 }, { 0x80, 0 } }; // an empty run
        Hva bad_src = g.h.user_buffer({ reinterpret_cast<uint8_t const*>(bad), sizeof bad });
        n = 2;
        Hva bad_count = g.h.user_struct(n);
        CHECK(vm.set_shared_pages_list({ bad_count.value, bad_src.value, sizeof bad }) == -EINVAL);
        kvm_shared_region wrap[1] = { { ~0ull - 1, 4 } };
        Hva wrap_src = g.h.user_buffer({ reinterpret_cast<uint8_t const*>(wrap), sizeof wrap });
        n = 1;
        Hva wrap_count = g.h.user_struct(n);
        CHECK(vm.set_shared_pages_list({ wrap_count.value, wrap_src.value, sizeof wrap }) == -EINVAL);
        CHECK(vm.set_shared_pages_list({ 0x1234, src.value, sizeof in }) == -EFAULT);
        CHECK(vm.shared_regions().size() == 2);
        CHECK(vm.shared_regions()[1].npages == 5);
        // An empty list clears it.
        n = 0;
        Hva zero = g.h.user_struct(n);
        CHECK(vm.set_shared_pages_list({ zero.value, src.value, 0 }) == 0);
        CHECK(vm.shared_regions().empty());
    }
}
