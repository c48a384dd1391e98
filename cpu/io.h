// sevemu — what the CPU sees of the rest of the machine: port I/O, MMIO for system-physical
// addresses that are not DRAM, and the interrupt controller's INTR pin (APM vol 2 §8.1.3).
// The Machine implements it over its PIO/MMIO buses; tests implement it with a few lines.
// Calls happen synchronously from inside Cpu::run(); a device that wants the CPU to stop
// (isa-debug-exit, a breakpoint) calls Cpu::request_stop() and run() returns after the
// current instruction completes with StopReason::StopRequested.
#pragma once

#include "base/addr.h"

#include <cstdint>
#include <optional>
#include <span>

namespace sevemu::cpu {

class IoHandler {
public:
    virtual ~IoHandler() = default;

    // IN/OUT/INS/OUTS, size 1, 2 or 4. Unclaimed ports should read all-ones (open bus).
    virtual uint32_t port_in(uint16_t port, uint8_t size) = 0;
    virtual void port_out(uint16_t port, uint8_t size, uint32_t value) = 0;

    // Loads and stores to a system-physical address that MemoryController::is_dram() rejects.
    // size 1, 2, 4 or 8, naturally split by the CPU so that an access never crosses a page.
    virtual uint64_t mmio_read(Spa addr, uint8_t size) = 0;
    virtual void mmio_write(Spa addr, uint8_t size, uint64_t value) = 0;

    // Interrupt controller (PIC/APIC): INTR asserted? Sampled when RFLAGS.IF=1 and no
    // interrupt shadow; acknowledge_interrupt() is the INTA cycle and returns the vector.
    virtual bool interrupt_pending() { return false; }
    virtual uint8_t acknowledge_interrupt() { return 0; }

    // The local APIC's MSRs (cpu_model.h msr::is_apic_msr: TSC_DEADLINE 0x6E0, x2APIC
    // 0x800-0x8FF) and writes of APIC_BASE (0x1B), after the CPU's own checks (CPL 0, SVM MSR
    // intercepts, reserved APIC_BASE bits). The defaults mean "no local APIC": RDMSR/WRMSR of
    // 0x6E0 and 0x800-0x8FF #GP, and APIC_BASE is a plain register of the CPU.
    //   apic_msr_read:  the value, or nullopt for #GP(0) (no LAPIC, or a register that does not
    //                   exist or cannot be read in the current mode, APM vol 2 §16.11).
    //   apic_msr_write: nullopt = no LAPIC (the CPU alone handles it: #GP for 0x6E0/0x8xx,
    //                   APIC_BASE stored); true = done (APIC_BASE: the CPU stores it too, so
    //                   CPUID 1 EDX[9] and RDMSR 0x1B follow); false = #GP(0) (an illegal
    //                   x2APIC/xAPIC transition, a read-only register, reserved bits).
    // RDMSR 0x1B is always answered by the CPU from its copy (CpuState::msr.apic_base).
    virtual std::optional<uint64_t> apic_msr_read(uint32_t) { return std::nullopt; }
    virtual std::optional<bool> apic_msr_write(uint32_t, uint64_t) { return std::nullopt; }
};

// Where RDRAND and RDSEED take their bits. The default (none given to the Cpu) is the host
// kernel's CSPRNG, getrandom(2): real randomness, so a run that executes RDRAND (every SEV
// guest does, Linux sev_verify_cbit.S; and the kernel seeds its RNG with it) does not repeat
// exactly. A Machine that wants repeatable runs gives the CPU a seeded generator instead.
// fill() returns false when no entropy is available now: the instruction then reports CF=0
// and a zero destination, which software retries (APM vol 3 RDRAND/RDSEED).
class EntropySource {
public:
    virtual ~EntropySource() = default;
    virtual bool fill(std::span<uint8_t>) = 0;
};

} // namespace sevemu::cpu
