// sevemu — the APIC bus: how interrupt messages travel between the local APICs (IPIs from the
// ICR), from the IOAPIC to the local APICs, and how a local APIC's EOI for a level-triggered
// vector reaches the IOAPICs (the EOI broadcast). On AMD processors this is the HyperTransport /
// Infinity Fabric interrupt message path (AMD APM vol 2 §16.5 "Interprocessor Interrupts",
// §16.6 "Local APIC Handling of Interrupts"); Intel SDM vol 3 §11.6 ("Issuing Interprocessor
// Interrupts") describes the same ICR fields and destination rules.
//
// Delivery is synchronous: ApicBus::send() has put the message into every destination's
// IRR (or pending INIT/SIPI/NMI) before it returns, which is why the ICR's delivery-status bit
// always reads idle (devices/lapic.h).
//
// ApicRouter is the bus for one machine: the local APICs of its vCPUs are attached in vCPU order
// (the machine attaches every LocalApic and every IoApic once, at wiring, and never detaches
// them while the machine runs); destinations are resolved by each LAPIC's own rules
// (LocalApic::matches_destination: physical APIC ID, flat/cluster logical in xAPIC mode, the
// x2APIC cluster-ID/bit logical form, broadcast), lowest-priority messages go to the matching
// LAPIC with the lowest arbitration priority (ties: the lowest APIC ID; focus-processor checking is
// not modelled), and EOI broadcasts reach every attached EoiListener.
//
// Wiring (what the Machine does once, at construction):
// - per vCPU i: LocalApic({.cpu_index = i, .apic_id = the ID CPUID 1 EBX[31:24] / 0xB and the
//   MADT give it, .bsp = i == 0, .x2apic_supported / .tsc_deadline_supported = what CPUID
//   advertises, .tsc_hz = the guest TSC's rate, .phys_addr_bits = MAXPHYADDR}, clock);
//   lapic.connect_bus(&router); lapic.connect_pic(&pic) (every vCPU: only an unmasked ExtINT
//   LINT0 or a disabled APIC consults it); router.attach(lapic), in vCPU order.
// - the IOAPIC: ioapic.connect_bus(&router); router.attach(ioapic) (EOI broadcasts); MMIO at
//   IoApic::kDefaultBase, IoApic::kMmioLength on the machine's MMIO bus.
// - interrupt lines: each ISA IRQ n goes to pic.set_irq(n) and to ioapic.set_irq(GSI), GSI = n
//   except IRQ 0 -> GSI 2 (the MADT's interrupt source override, as QEMU's); the SCI (IRQ 9) to
//   both. Sources raise their line true when asserting; the MADT declares them active high.
// - MMIO: vCPU i's accesses to [lapic.mmio_base(), + LocalApic::kMmioLength) go to its own
//   LocalApic (read/write with the offset) while lapic.mmio_decoded(), ahead of the shared MMIO
//   bus; otherwise the page is ordinary memory.
// - MSRs: RDMSR/WRMSR of any MSR for which LocalApic::handles_msr(msr) (0x1B, 0x6E0,
//   0x800-0x8FF) go to the vCPU's LocalApic::read_msr/write_msr; an ApicMsrError is #GP(0).
// - the vCPU: its InterruptController is its LocalApic; between slices the owner applies
//   take_nmi() (inject NMI), take_init() (INIT: the vCPU's INIT state; the BSP restarts at the
//   reset vector), take_sipi() (start in real mode at CS = vector << 8, IP = 0), and does not
//   run a vCPU while waiting_for_sipi().
// - time: after each slice, advance(now) on every LocalApic (and the PIT, the ACPI PM block);
//   the earliest next_deadline() bounds the next slice and a halted vCPU's sleep. A deadline at
//   or before now (a TSC deadline written in the past) means: advance at once.
#pragma once

#include <cstdint>
#include <vector>

namespace sevemu::devices {

class LocalApic;

// ICR / redirection-entry delivery modes (APM vol 2 §16.5 Figure 16-18 "Interrupt Command
// Register"; 82093AA data sheet §3.2.4 IOREDTBL bits 10:8). Values are the register encodings.
enum class ApicDeliveryMode : uint8_t {
    Fixed = 0,
    LowestPriority = 1,
    Smi = 2,
    RemoteRead = 3, // reserved on AMD; refused as an illegal message
    Nmi = 4,
    Init = 5,
    StartUp = 6,
    ExtInt = 7,
};

// ICR bits 19:18 (destination shorthand).
enum class ApicShorthand : uint8_t { None = 0, Self = 1, AllIncludingSelf = 2, AllExcludingSelf = 3 };

struct ApicMessage {
    uint8_t vector {};
    ApicDeliveryMode mode { ApicDeliveryMode::Fixed };
    bool logical {};           // destination mode (ICR bit 11, IOREDTBL bit 11)
    bool level_assert { true };// ICR bit 14; only INIT with level_assert = 0 (de-assert) uses it
    bool level_triggered {};   // trigger mode (ICR bit 15, IOREDTBL bit 15)
    ApicShorthand shorthand { ApicShorthand::None };
    // xAPIC messages (every IOAPIC message, and ICRs written in xAPIC mode) carry an 8-bit
    // destination, 0xFF broadcast; x2APIC ICRs a 32-bit one, 0xFFFFFFFF broadcast.
    uint32_t destination {};
    bool x2apic_format {};
    // The sender for the self/all-excluding-self shorthands; nullptr for the IOAPIC.
    LocalApic const* source {};
};

// Whoever needs to hear EOIs for level-triggered vectors (the IOAPIC; 82093AA §2.4: the EOI
// message clears Remote IRR of the matching redirection entries).
class EoiListener {
public:
    virtual ~EoiListener() = default;
    virtual void end_of_interrupt(uint8_t vector) = 0;
};

class ApicBus {
public:
    virtual ~ApicBus() = default;
    // Delivers `m`; returns how many local APICs accepted it (0 lets the sender report a send
    // accept error, APM vol 2 §16.4.6 ESR bit 2).
    virtual unsigned send(ApicMessage const& m) = 0;
    // A LAPIC's EOI of a vector whose TMR bit was set (APM vol 2 §16.6.4 "EOI": level-triggered
    // interrupts broadcast the EOI to the IOAPICs).
    virtual void broadcast_eoi(uint8_t vector) = 0;
};

class ApicRouter final : public ApicBus {
public:
    // Not owned; the machine keeps them alive as long as the router.
    void attach(LocalApic& lapic) { m_lapics.push_back(&lapic); }
    void attach(EoiListener& listener) { m_eoi_listeners.push_back(&listener); }

    unsigned send(ApicMessage const& m) override;
    void broadcast_eoi(uint8_t vector) override;

    std::vector<LocalApic*> const& lapics() const { return m_lapics; }

private:
    std::vector<LocalApic*> m_lapics;
    std::vector<EoiListener*> m_eoi_listeners;
};

} // namespace sevemu::devices
