// sevemu — one x86-64 logical processor (an AMD EPYC core), interpreted.
//
// The Machine constructs it over the memory controller (the only door to DRAM), a CPU model and
// an IoHandler (ports, MMIO, INTR), puts it in a start state (reset(), or
// setup_multiboot_entry(), or set_state()), and calls run(n) in a loop:
//
//     cpu::Cpu cpu(mc, CpuModel::Milan, io);
//     cpu.setup_multiboot_entry(entry, info_pa);
//     for (;;) {
//         auto r = cpu.run(10'000'000);
//         if (r.reason == cpu::StopReason::Halted) { /* advance timers; wait for IRQ */ }
//         else if (r.reason != cpu::StopReason::InstructionLimit) break;
//     }
//
// Guest-caused conditions never crash the emulator: they become exceptions delivered to the
// guest, and an unrecoverable one (triple fault) stops run() with StopReason::Shutdown.
// Design (speed): instructions are decoded once into per-block arrays of small handler calls,
// cached per physical code page and mode; a direct-mapped TLB maps linear pages straight to
// memory-controller page pointers; arithmetic flags are computed lazily.
#pragma once

#include "cpu/cpu_model.h"
#include "cpu/io.h"
#include "cpu/state.h"
#include "base/addr.h"
#include "base/result.h"

#include <array>

#include <cstdint>
#include <memory>
#include <string>

namespace sevemu::mmu {
class MemoryController;
}

namespace sevemu::cpu {

struct Core; // the interpreter's internals (cpu/core.h)

enum class StopReason : uint8_t {
    InstructionLimit, // the budget is used up: retired instructions + delivered events (an
                      // exception or interrupt delivery counts 1, so a guest that faults
                      // endlessly inside its handlers still returns)
    Halted,           // HLT and no interrupt can wake it now (IF=0, or nothing pending)
    Shutdown,         // triple fault (APM vol 2 §8.2.9) — the platform would reset
    StopRequested,    // request_stop() was called (by an IoHandler, typically)
    VmExit,           // a #VMEXIT ended the guest started by host_vmrun() (only host_vmrun
                      // sees this; run() outside it never returns it)
};
std::string_view stop_reason_name(StopReason);

struct RunResult {
    StopReason reason;
    uint64_t instructions; // retired in this call
};

struct CpuStats {
    uint64_t instructions {}, blocks_decoded {}, code_invalidations {}, tlb_misses {}, exceptions {};
};

class Cpu {
public:
    Cpu(mmu::MemoryController&, CpuModel, IoHandler&);
    ~Cpu();
    Cpu(Cpu const&) = delete;
    Cpu& operator=(Cpu const&) = delete;

    // Architectural power-on reset (APM vol 2 §14.1.3, Table 14-1): real mode, CS:IP=F000:FFF0
    // with CS base FFFF0000, EDX = family/model/stepping, CR0=60000010, DR6/DR7 defaults.
    void reset();
    // The Multiboot v1 hand-off as QEMU's multiboot option ROM leaves it: 32-bit protected mode,
    // paging off, CS = 0x08 flat 4 GiB execute/read, DS/ES/FS/GS/SS = 0x10 flat read/write,
    // CR0 = PE|ET, EFLAGS = 0x2 (IF=0), EAX = 0x2BADB002, EBX = info, EIP = entry.
    void setup_multiboot_entry(uint32_t entry, uint32_t multiboot_info);

    RunResult run(uint64_t max_instructions);

    // SVM from the host's side, for the built-in (C++) hypervisor: what `VMRUN rAX` does in a
    // 64-bit host at CPL 0 with EFER.SVME=1 and VM_HSAVE_PA = host_save_area, with the guest's
    // GPRs other than RAX/RSP loaded before and saved after (KVM's __svm_vcpu_run). Runs the
    // guest until #VMEXIT, whose information is then in the VMCB. After max_instructions, or
    // when request_stop() was called, the host takes a physical interrupt: #VMEXIT(INTR) if the
    // VMCB intercepts INTR, otherwise the guest keeps running (as on hardware, where an
    // unintercepted host interrupt goes to the guest's IDT; sevemu then simply continues).
    // The error is a message when VMRUN itself faulted (#UD/#GP: a VMCB outside DRAM, say);
    // a failed consistency check is a normal #VMEXIT(VMEXIT_INVALID).
    struct HostVmrunResult {
        uint64_t instructions;         // guest instructions retired
    };
    Result<HostVmrunResult, std::string> host_vmrun(Spa vmcb, Spa host_save_area, std::array<uint64_t, 16>& gprs,
        uint64_t max_instructions);
    bool in_guest_mode() const;
    // run() returns StopRequested after the instruction in progress (port I/O and MMIO end a
    // block, so a device's request takes effect at once). Thread-safe (an atomic flag); a
    // request made while run() is not executing makes the next run() return at once.
    void request_stop();
    // The NMI input (APM vol 2 §8.2.3; the LAPIC's LINT1 in NMI mode or an NMI message): one
    // NMI is latched and taken as vector 2 at the next instruction boundary whatever RFLAGS.IF,
    // unless NMIs are blocked — from an NMI's delivery until the next IRET — or GIF is clear.
    // A second NMI while one is latched is the same NMI. Machine thread only (not atomic).
    // With an SVM guest running (plain VMRUN), it is the host's NMI: #VMEXIT(NMI) when
    // intercepted. An SEV guest gets its NMIs by injection (EVENTINJ), not through this pin.
    void inject_nmi();
    // An NMI is latched and not blocked: it would be taken now (a halted CPU wakes up for it).
    bool nmi_deliverable() const;

    // All the architectural state (flags materialised), run state and SVM guest mode included.
    CpuState state() const;
    // Loads all of it: registers, x87, run state, the instruction count (CpuStats::instructions
    // and the TSC's base), SVM guest mode; flushes the TLBs of every ASID and the decoded-mode
    // caches and recomputes the paging context (the guest's, nested, in guest mode). The decoded
    // code is keyed by physical memory, not by state: whoever rewrites memory behind the CPU (a
    // snapshot restoring DRAM) calls flush_code_cache() too.
    void set_state(CpuState const&);
    // state() for a snapshot, or why the state cannot be carried now (inside host_vmrun(); a
    // CPL loaded from a VMCB that the segment registers do not give).
    Result<CpuState, std::string> snapshot_state() const;
    uint64_t rip() const;
    uint64_t gpr(Gpr) const;
    void set_gpr(Gpr, uint64_t);
    bool halted() const;
    // The TSC as RDTSC reads it now, and a write of it (WRMSR 0x10's effect, without a flush):
    // the Machine keeps every vCPU's TSC on its one clock (emulator/clock.h).
    uint64_t tsc() const;
    void set_tsc(uint64_t);

    // Writes that bypass this CPU (DMA, firmware, the loader via MemoryController::write)
    // are not seen by the decoded-code cache: whoever writes guest code behind the CPU's back
    // calls this for the range (the memory controller's invalidation listener covers key
    // changes and plaintext-cache evictions, not plain writes).
    void invalidate_code(Spa addr, uint64_t len);
    void flush_code_cache();
    // Joins `other`'s group of cores sharing guest memory (the vCPUs of one machine): a write by
    // any of them to a page another decoded code from invalidates that code (cross-modifying
    // code, APM vol 2 §7.6.1 / SDM vol 3 §8.1.3). Single-threaded use only, as the machine runs.
    void share_code_with(Cpu& other);

    CpuModel model() const;
    CpuStats const& stats() const;

    // ---- The machine around this vCPU (configuration, not CpuState: set before reset/run)
    // This vCPU's initial APIC ID and the machine's vCPU count. CPUID 1 EBX[31:24] and 0xB EDX
    // give the APIC ID, 1 EBX[23:16]/EDX[28] HTT, 0xB and 8000_0008 ECX the count; APIC_BASE
    // bit 8 (BSP) is set only for APIC ID 0 (changed now and at every reset; a loaded
    // CpuState keeps its own). The Machine's MADT and LAPIC ID registers must use the same
    // IDs. Default: APIC ID 0 of 1 vCPU.
    void set_topology(uint32_t apic_id, uint32_t vcpu_count);
    uint32_t apic_id() const;
    uint32_t vcpu_count() const;
    // Which CPUID the software on this CPU sees (cpu_model.h CpuidView). Default Guest: a
    // plain VM on KVM (hypervisor bit, KVM leaves, leaf 8000_001F zero).
    void set_cpuid_view(CpuidView);
    // Set once the Machine's LAPIC (behind IoHandler::apic_msr_*) implements x2APIC mode or the
    // TSC-deadline timer: CPUID 1 ECX[21]/[24] then say so, and APIC_BASE.EXTD becomes writable.
    void set_apic_caps(bool x2apic, bool tsc_deadline);
    // RDRAND/RDSEED's source (io.h EntropySource); null (the default) = getrandom(2). Not
    // owned; must outlive the Cpu or be reset to null first.
    void set_entropy_source(EntropySource*);
    // CPUID as the CPUID instruction answers it now (view, topology, CR4.OSXSAVE, APIC_BASE.EN).
    CpuidResult cpuid(uint32_t leaf, uint32_t subleaf) const;

    // For traces: disassemble one instruction at a linear address with the current mode
    // (empty string if it cannot be fetched).
    std::string disassemble(uint64_t linear_address) const;

private:
    std::unique_ptr<Core> m_core;
};

} // namespace sevemu::cpu
