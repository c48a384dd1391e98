// sevemu — what the CPU sees of the rest of the machine: port I/O, MMIO for system-physical
// addresses that are not DRAM, and the interrupt controller's INTR pin (APM vol 2 §8.1.3).
// The Machine implements it over its PIO/MMIO buses; tests implement it with a few lines.
// Calls happen synchronously from inside Cpu::run(); a device that wants the CPU to stop
// (isa-debug-exit, a breakpoint) calls Cpu::request_stop() and run() returns after the
// current instruction completes with StopReason::StopRequested.
#pragma once

#include "base/addr.h"

#include <cstdint>

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
};

} // namespace sevemu::cpu
