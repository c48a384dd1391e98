#include "emulator/sev_launch.h"

#include "cpu/cpu_model.h"
#include "emulator/vmm/ghcb.h"
#include "mmu/memory_controller.h"

#include <algorithm>
#include <fmt/format.h>

namespace sevemu::emulator {

Result<LoadedLaunch, MachineError> load_kernel_launch(KernelLaunch const& launch)
{
    mmu::MemoryConfig cfg;
    cfg.dram_size = launch.memory_size;
    cfg.cache_pages = 16; // only raw (no key) accesses happen here
    auto mc = mmu::MemoryController::create(cfg);
    if (!mc)
        return make_unexpected(MachineError { fmt::format("cannot create {} MiB of scratch memory: {}",
            launch.memory_size >> 20, mmu::mem_error_name(mc.error())) });
    LoadedLaunch out;
    out.scratch = std::move(*mc);
    out.memory_map = pc_memory_map(*out.scratch);
    out.kernel = TRY(load_kernel_image(*out.scratch, out.memory_map, launch.kernel, launch.initrd, launch.append, launch.smp,
        launch.cbitpos));
    out.memory_map = out.kernel.memory_map;
    out.ranges = out.kernel.ranges;
    if (launch.sev_es) {
        // The AP page (sev_launch.h): the jump table zeroed, the stub at 0x10; measured with the
        // loader's pages, in ascending order. Both memory maps reserve it ([0x9FC00, 1 MiB) for
        // Linux, [0xF0000, 1 MiB) for Multiboot), so no guest uses it for anything else.
        MeasuredRange ap { kSevEsApPageGpa, kPageSize };
        for (auto const& r : out.ranges)
            if (r.gpa < ap.gpa + ap.size && ap.gpa < r.gpa + r.size)
                return make_unexpected(MachineError { fmt::format("-kernel {}: the image overlaps the SEV-ES AP page at "
                    "{:#x}, which sevemu needs for the APs' jump table (README)", launch.kernel, ap.gpa) });
        std::vector<uint8_t> page(kPageSize, 0);
        std::copy(std::begin(kSevEsApStub), std::end(kSevEsApStub), page.begin() + kSevEsApStubIp);
        if (!out.scratch->write(Spa(ap.gpa), page, mmu::KeyId::none()))
            return make_unexpected(MachineError { fmt::format("the SEV-ES AP page {:#x} is not guest RAM", ap.gpa) });
        out.ranges.insert(std::upper_bound(out.ranges.begin(), out.ranges.end(), ap,
                              [](MeasuredRange const& a, MeasuredRange const& b) { return a.gpa < b.gpa; }),
            ap);
        out.sev_es_vcpus.push_back(bsp_launch_registers(out.kernel.entry, launch.model));
        for (unsigned i = 1; i < launch.smp; ++i)
            out.sev_es_vcpus.push_back(sev_es_ap_launch_registers(launch.model));
    }
    return out;
}

VcpuLaunchRegisters power_on_registers(CpuModel model)
{
    using cpu::svm::VmcbSeg;
    namespace sa = cpu::svm::seg_attrib;
    VcpuLaunchRegisters r;
    auto& s = r.save;
    auto seg = [](uint16_t sel, uint64_t base, uint16_t attrib) { return VmcbSeg { sel, attrib, 0xFFFF, base }; };
    s.cs = seg(0xF000, 0xFFFF0000, sa::P | sa::S | 0xB);
    s.ds = s.es = s.fs = s.gs = s.ss = seg(0, 0, sa::P | sa::S | 0x3);
    s.gdtr = { 0, 0, 0xFFFF, 0 };
    s.idtr = { 0, 0, 0xFFFF, 0 };
    s.ldtr = seg(0, 0, sa::P | 0x2);
    s.tr = seg(0, 0, sa::P | 0x3);
    s.cr0 = 0x60000010; // CD | NW | ET
    s.efer = 1u << 12;  // SVME
    s.rflags = 2;
    s.rip = 0xFFF0;
    s.dr6 = 0xFFFF0FF0;
    s.dr7 = 0x400;
    s.g_pat = 0x0007040600070406ull;
    // KVM's kvm_vcpu_reset: RDX = CPUID 1 EAX from the vCPU's CPUID table.
    r.gprs[cpu::RDX] = cpu::cpuid_query(model, 1, 0).eax;
    return r;
}

void apply_entry_state(cpu::svm::VmcbSaveArea& s, std::array<uint64_t, 16>& gprs, BootEntryState const& entry)
{
    using cpu::svm::VmcbSeg;
    auto seg = [](cpu::Segment const& g) { return VmcbSeg { g.selector, g.attr, g.limit, g.base }; };
    s.es = seg(entry.seg[cpu::ES]);
    s.cs = seg(entry.seg[cpu::CS]);
    s.ss = seg(entry.seg[cpu::SS]);
    s.ds = seg(entry.seg[cpu::DS]);
    s.fs = seg(entry.seg[cpu::FS]);
    s.gs = seg(entry.seg[cpu::GS]);
    s.gdtr = VmcbSeg { 0, 0, entry.gdtr.limit, entry.gdtr.base };
    s.idtr = VmcbSeg { 0, 0, entry.idtr.limit, entry.idtr.base };
    s.cpl = uint8_t(entry.seg[cpu::CS].dpl());
    s.cr0 = entry.cr0;
    s.cr3 = entry.cr3;
    s.cr4 = entry.cr4;
    s.efer |= entry.efer; // SVME stays; LME|LMA from an entry in long mode (a vmlinux at startup_64)
    s.rflags = entry.rflags;
    s.rip = entry.rip;
    s.rsp = entry.gpr[cpu::RSP];
    s.rax = entry.gpr[cpu::RAX];
    gprs = entry.gpr;
    gprs[cpu::RAX] = gprs[cpu::RSP] = 0; // they live in the save area
}

VcpuLaunchRegisters bsp_launch_registers(BootEntryState const& entry, CpuModel model)
{
    VcpuLaunchRegisters r = power_on_registers(model);
    apply_entry_state(r.save, r.gprs, entry);
    return r;
}

VcpuLaunchRegisters sev_es_ap_launch_registers(CpuModel model)
{
    VcpuLaunchRegisters r = power_on_registers(model);
    r.save.cs.selector = uint16_t(kSevEsApPageGpa >> 4);
    r.save.cs.base = kSevEsApPageGpa;
    r.save.rip = kSevEsApStubIp;
    return r;
}

std::array<uint8_t, 4096> sev_es_launch_vmsa(VcpuLaunchRegisters const& r)
{
    // KVM_SEV_ES_INIT's VM: vmsa_features 0 and no FPU state in the VMSA (vmm::VmsaSyncExtras).
    return cpu::svm::vmsa_to_bytes(vmm::sev_es_sync_vmsa(r.save, r.gprs, vmm::VmsaSyncExtras {}));
}

Result<LaunchDigest, MachineError> kernel_launch_digest(KernelLaunch const& launch)
{
    auto loaded = TRY(load_kernel_launch(launch));
    LaunchDigest out;
    out.ranges = loaded.ranges;
    firmware::Sha256Stream ld;
    std::vector<uint8_t> page(kPageSize);
    for (auto const& range : out.ranges) {
        for (uint64_t off = 0; off < range.size; off += kPageSize) {
            if (!loaded.scratch->read(Spa(range.gpa + off), page, mmu::KeyId::none()))
                return make_unexpected(MachineError { fmt::format("measured page {:#x} is not guest RAM", range.gpa + off) });
            ld.update(page);
        }
    }
    for (auto const& v : loaded.sev_es_vcpus) {
        auto vmsa = sev_es_launch_vmsa(v);
        ld.update(vmsa);
        ++out.vmsas;
    }
    out.digest = ld.peek();
    return out;
}

} // namespace sevemu::emulator
