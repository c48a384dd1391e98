// sevemu — the local APIC of one vCPU, in xAPIC (MMIO) and x2APIC (MSR) modes.
//
// Sources: AMD APM vol 2 (24593) §16 "Advanced Programmable Interrupt Controller" — §16.3 the
// register map (Table 16-2), §16.3.1 APIC base MSR, §16.3.3 version register, §16.4 LVT and the
// timer (§16.4.1), ESR (§16.4.6), §16.5 ICR and IPIs, §16.6 TPR/APR/PPR, IRR/ISR/TMR and EOI,
// §16.11 x2APIC; Intel SDM vol 3 §11.4.3 (APIC base MSR), §11.5.4 (timer, TSC-deadline mode,
// IA32_TSC_DEADLINE = MSR 0x6E0), §11.12 (x2APIC: MSR = 0x800 + offset/16, Table 11-6, the
// #GP rules and Figure 11-27's mode transitions), which AMD's x2APIC follows.
//
// The model:
// - APIC base MSR 0x1B: BSP bit 8 (read-only: set for the vCPU the machine made the BSP),
//   x2APIC enable bit 10, global enable bit 11, base address bits 47:12 (the machine maps the
//   4 KiB MMIO page at mmio_base() for this vCPU only while mmio_decoded()). Legal transitions
//   (SDM Figure 11-27): disabled <-> xAPIC, xAPIC -> x2APIC, x2APIC -> disabled; EN=0 with
//   EXTD=1, x2APIC -> xAPIC and disabled -> x2APIC are #GP, as are reserved bits. Disabling
//   returns every register to its power-on value (SDM §11.4.3).
// - Version register 0x00050010: version 0x10 (AMD APM §16.3.3: integrated APIC), max LVT entry
//   5 (timer, thermal, performance counter, LINT0, LINT1, error — QEMU reports the same), no
//   extended APIC register space (bit 31 clear), no directed EOI (bit 24 clear).
// - Registers are 32 bits at 16-byte strides. In xAPIC mode only aligned 32-bit (or 64-bit,
//   low half) writes take effect (narrower ones are dropped, as QEMU's apic_mem_write does);
//   reads of any width return the bytes of the 32-bit register. An access to an offset that
//   is no register sets ESR bit 7 (illegal register address) and reads 0.
// - ESR: errors accumulate internally; a write (of any value) copies them to the readable
//   register and clears the accumulator (APM §16.4.6). Implemented errors: send accept (bit 2:
//   an IPI with a destination nobody accepted), send illegal vector (bit 5: a fixed or
//   lowest-priority IPI with a vector below 16), receive illegal vector (bit 6), illegal
//   register address (bit 7). A new error raises the error LVT when unmasked.
// - Delivery is synchronous (devices/apic_bus.h), so the ICR and LVT delivery-status bits
//   (bit 12) always read idle: an IPI has reached its targets before the ICR write returns.
// - Interrupts: fixed vectors land in IRR (TMR set for level-triggered ones); the vCPU sees
//   interrupt_pending() when the highest IRR vector's priority class is above PPR's and the
//   APIC is software enabled (SVR bit 8); acknowledge() moves it to ISR. PPR = TPR when
//   TPR[7:4] >= ISRV[7:4], else ISRV & 0xF0 (APM §16.6.2); APR per the P6 rule (APM §16.6.1).
//   EOI clears the highest ISR bit; a level vector's EOI goes to ApicBus::broadcast_eoi.
//   acknowledge() with nothing left to give returns the spurious vector (SVR[7:0]) without
//   touching ISR (APM §16.6.5).
// - LINT0 in ExtINT mode (unmasked) passes the 8259's INTR to the vCPU: the vector comes from
//   the InterruptController given to connect_pic() (the two INTA cycles), and it takes
//   precedence over IRR vectors. With the APIC globally disabled, the 8259 is the vCPU's
//   interrupt controller directly (the APIC is out of the path: INTR and NMI are plain pins).
//   At reset the BSP's LVT0 is ExtINT unmasked (0x700), as QEMU's apic_reset_common sets it in
//   place of the BIOS, so a guest that never touches its APIC keeps getting 8259 interrupts;
//   the APs' LVT0 are masked (QUIRKS.md).
// - LINT1 (NMI mode, as the MADT's LAPIC NMI entry says) and NMI messages make take_nmi() true
//   and call the NMI notification (connect_nmi_notify); the machine moves the NMI to its vCPU
//   (cpu::Cpu::inject_nmi, or EVENTINJ for an SEV guest), which holds further ones until IRET.
// - INIT (not the level de-assert form) resets the APIC's registers except the ID and base
//   MSR (SDM §11.4.7.3 / APM §16.4.5) and, on an AP, enters wait-for-SIPI; the vCPU owner
//   polls take_init() and resets the vCPU. A SIPI is taken only in wait-for-SIPI (further ones
//   are ignored, SDM §9.4.4.1); take_sipi() returns its vector (start at CS = vector << 8).
//   APs start in wait-for-SIPI (power-on without a BIOS: the MP initialization protocol has
//   already parked them, SDM §9.4.1).
//
// Timer (APM §16.4.1, SDM §11.5.4): one-shot, periodic and TSC-deadline modes. Its input clock
// is kTimerHz = 1 GHz divided by the divide configuration register (1..128): one count per
// nanosecond of the machine's clock at divide-by-1. That is KVM's and QEMU's choice
// (APIC_BUS_CYCLE_NS = 1 in QEMU hw/intc/apic_common.c / KVM lapic.h), it makes counts exact in
// integer nanoseconds, and Linux measures it (calibrate_APIC_clock) or does not need it (with
// TSC-deadline). The TSC-deadline MSR compares with the TSC, which ticks at tsc_hz (Config;
// the machine must derive the TSC and the ns clock from one timebase: TSC = ns * tsc_hz / 1e9).
// The machine calls advance(now) (at least at next_deadline()) to fire the timer into IRR;
// register reads of the current count read the clock directly, so they never depend on when
// advance() ran.
//
// Snapshot section "lapic<N>" (N = the vCPU index), version 1, every field little-endian:
//   u64 APIC base MSR, u32 ID (as the ID register shows it: xAPIC bits 31:24), u32 TPR,
//   u32 LDR, u32 DFR, u32 SVR, 8 x u32 ISR, 8 x u32 TMR, 8 x u32 IRR, u32 ESR (readable),
//   u32 ESR (accumulated), u32 ICR low, u32 ICR high, 6 x u32 LVT (timer, thermal, perf,
//   LINT0, LINT1, error), u32 initial count, u32 divide configuration, i64 count base time,
//   u32 count at base, bool timer armed, i64 next expiry, u64 TSC deadline,
//   bool NMI pending, bool INIT pending, bool wait-for-SIPI, bool SIPI pending, u8 SIPI vector,
//   bool ExtINT requested (by an IOAPIC ExtINT message), bool LINT0 level, bool LINT1 level.
#pragma once

#include "base/result.h"
#include "devices/apic_bus.h"
#include "devices/bus.h"
#include "devices/device.h"

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace sevemu::devices {

// An APIC MSR access the CPU must turn into #GP(0).
enum class ApicMsrError : uint8_t { GeneralProtection };

class LocalApic final : public BusDevice, public Device, public InterruptController {
public:
    static constexpr uint32_t kStateVersion = 1;
    static constexpr uint64_t kDefaultBase = 0xFEE00000, kMmioLength = 0x1000;
    static constexpr uint32_t kVersion = 0x00050010;
    static constexpr uint64_t kTimerHz = 1'000'000'000; // the timer's input clock (see above)
    static constexpr uint64_t kDefaultTscHz = 1'000'000'000;

    static constexpr uint32_t kMsrApicBase = 0x1B, kMsrTscDeadline = 0x6E0;
    static constexpr uint32_t kMsrX2apicFirst = 0x800, kMsrX2apicLast = 0x8FF;
    static constexpr uint64_t kBaseBsp = 1u << 8, kBaseExtd = 1u << 10, kBaseEnable = 1u << 11;

    // Register offsets (APM vol 2 Table 16-2).
    enum Reg : uint32_t {
        kId = 0x020, kVer = 0x030, kTpr = 0x080, kApr = 0x090, kPpr = 0x0A0, kEoi = 0x0B0,
        kRrd = 0x0C0, kLdr = 0x0D0, kDfr = 0x0E0, kSvr = 0x0F0, kIsr = 0x100, kTmr = 0x180,
        kIrr = 0x200, kEsr = 0x280, kIcrLow = 0x300, kIcrHigh = 0x310, kLvtTimer = 0x320,
        kLvtThermal = 0x330, kLvtPerf = 0x340, kLvtLint0 = 0x350, kLvtLint1 = 0x360,
        kLvtError = 0x370, kTimerInitial = 0x380, kTimerCurrent = 0x390, kTimerDivide = 0x3E0,
        kSelfIpi = 0x3F0, // x2APIC only
    };
    // ESR bits (APM §16.4.6).
    static constexpr uint32_t kEsrSendAccept = 1u << 2, kEsrSendIllegalVector = 1u << 5,
                              kEsrReceiveIllegalVector = 1u << 6, kEsrIllegalRegister = 1u << 7;
    // LVT bits.
    static constexpr uint32_t kLvtMasked = 1u << 16;
    enum class TimerMode : uint8_t { OneShot = 0, Periodic = 1, TscDeadline = 2 };

    using Clock = std::function<int64_t()>; // the machine's virtual nanoseconds

    struct Config {
        unsigned cpu_index {};        // names the device "lapic<N>"
        uint32_t apic_id {};          // the initial APIC ID (CPUID 1 EBX[31:24], the MADT)
        bool bsp {};
        bool x2apic_supported { true }; // CPUID 1 ECX[21]: whether EXTD may be set
        // CPUID 1 ECX[24]: whether LVT timer mode 10b and MSR 0x6E0 exist (without it, bit 18
        // of the timer LVT is reserved and MSR 0x6E0 is #GP).
        bool tsc_deadline_supported { true };
        uint64_t tsc_hz { kDefaultTscHz };
        uint8_t phys_addr_bits { 48 }; // APIC base bits above this are reserved
    };

    LocalApic(Config const&, Clock);

    // --- wiring (the machine, once) ---
    void connect_bus(ApicBus* bus) { m_bus = bus; }
    // The 8259 pair behind LINT0 (ExtINT) and the INTR pin when the APIC is disabled.
    void connect_pic(InterruptController* pic) { m_pic = pic; }
    // Called whenever an NMI becomes pending (an NMI message, LINT1): the vCPU's owner ends
    // the vCPU's time slice so that it takes the NMI (take_nmi) at once.
    void connect_nmi_notify(std::function<void()> notify) { m_nmi_notify = std::move(notify); }

    // --- the vCPU side ---
    // InterruptController (devices/device.h): maskable interrupts, polled with RFLAGS.IF set.
    bool interrupt_pending() const override;
    uint8_t acknowledge() override;
    // Non-maskable and start-up events the vCPU owner applies (each reads-and-clears).
    bool nmi_pending() const { return m_regs.nmi_pending; }
    bool take_nmi();
    bool take_init();
    std::optional<uint8_t> take_sipi();
    // True while an AP waits for its SIPI: the machine must not run that vCPU.
    bool waiting_for_sipi() const { return m_regs.wait_for_sipi; }

    // MSRs (the CPU's RDMSR/WRMSR call these for 0x1B, 0x6E0 and 0x800-0x8FF; an error is #GP(0)).
    static bool handles_msr(uint32_t msr)
    {
        return msr == kMsrApicBase || msr == kMsrTscDeadline || (msr >= kMsrX2apicFirst && msr <= kMsrX2apicLast);
    }
    Result<uint64_t, ApicMsrError> read_msr(uint32_t msr);
    Result<void, ApicMsrError> write_msr(uint32_t msr, uint64_t value);
    uint64_t apic_base_msr() const { return m_base; }

    // xAPIC MMIO (BusDevice): offsets within the 4 KiB page. The machine dispatches the page at
    // mmio_base() to this vCPU's LAPIC only while mmio_decoded() (xAPIC mode); otherwise the
    // address is ordinary memory. Called anyway, reads return all ones and writes are dropped.
    uint64_t read(uint64_t offset, unsigned size) override;
    void write(uint64_t offset, unsigned size, uint64_t value) override;
    uint64_t mmio_base() const { return m_base & 0x000FFFFFFFFFF000ull; }
    bool mmio_decoded() const { return enabled() && !x2apic(); }

    // --- time ---
    // Fires the timer (one-shot, periodic, TSC-deadline) for every expiry up to now_ns; several
    // periods missed in one call set IRR once (a vector is one bit).
    void advance(int64_t now_ns);
    // The next instant advance() would deliver a timer interrupt, if any (nothing while masked).
    std::optional<int64_t> next_deadline() const;

    // --- the receiving side (ApicRouter, the IOAPIC, the LINT pins) ---
    bool enabled() const { return m_base & kBaseEnable; }
    bool x2apic() const { return m_base & kBaseExtd; }
    uint32_t apic_id() const; // the current ID (x2APIC: 32 bits; xAPIC: ID register bits 31:24)
    bool matches_destination(ApicMessage const& m) const;
    uint8_t arbitration_priority() const { return compute_apr(); }
    void accept_fixed(uint8_t vector, bool level_triggered);
    void accept_nmi();
    void accept_init();
    void accept_sipi(uint8_t vector);
    void accept_extint() { m_regs.extint_requested = true; }
    // The LINT0/LINT1 pins (edge-sensitive modes act on a rising edge; level-triggered fixed
    // LINT0 sets remote IRR until EOI). LINT0 in ExtINT mode is the 8259's INTR, polled.
    void set_lint(unsigned pin, bool level);

    // --- register views for tests and traces ---
    uint32_t reg(uint32_t offset) const;
    uint32_t timer_current_count(int64_t now_ns) const;

    // Device.
    std::string_view name() const override { return m_name; }
    void reset() override;
    uint32_t state_version() const override { return kStateVersion; }
    void save(StateWriter&) const override;
    void load(StateReader&) override;

private:
    struct Regs {
        uint32_t id {}, tpr {}, ldr {}, dfr { 0xFFFFFFFF }, svr { 0xFF };
        std::array<uint32_t, 8> isr {}, tmr {}, irr {};
        uint32_t esr {}, esr_pending {}, icr_low {}, icr_high {};
        std::array<uint32_t, 6> lvt {};
        uint32_t initial_count {}, divide {};
        int64_t count_base_ns {};
        uint32_t count_at_base {};
        bool timer_armed {};
        int64_t next_expiry_ns {};
        uint64_t tsc_deadline {};
        bool nmi_pending {}, init_pending {}, wait_for_sipi {}, sipi_pending {};
        uint8_t sipi_vector {};
        bool extint_requested {}, lint0_level {}, lint1_level {};
    };

    void power_on_registers();
    bool software_enabled() const { return m_regs.svr & 0x100; }
    int highest(std::array<uint32_t, 8> const& bits) const;
    uint8_t compute_ppr() const;
    uint8_t compute_apr() const;
    bool extint_pending() const;
    void eoi();
    void error(uint32_t bits);
    void send_icr(uint32_t low, uint32_t high);
    uint32_t read_reg(uint32_t offset, bool& ok) const;
    // Writes a register; false for a read-only/absent one (xAPIC: ignored; x2APIC: #GP).
    bool write_reg(uint32_t offset, uint32_t value);
    void write_lvt(unsigned index, uint32_t value);
    TimerMode timer_mode() const;
    unsigned divide_value() const;
    int64_t now() const { return m_clock(); }
    void start_count(uint32_t count, int64_t now_ns);
    void fire_lvt(unsigned index);
    int64_t tsc_to_ns(uint64_t tsc) const;
    Result<void, ApicMsrError> write_apic_base(uint64_t value);

    Config m_config;
    std::string m_name;
    Clock m_clock;
    ApicBus* m_bus {};
    InterruptController* m_pic {};
    std::function<void()> m_nmi_notify;
    uint64_t m_base {};
    Regs m_regs;
};

} // namespace sevemu::devices
