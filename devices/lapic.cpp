#include "devices/lapic.h"

#include "devices/state_check.h"

#include <algorithm>
#include <limits>
#include <string>

namespace sevemu::devices {

namespace {

// LVT indices: the register at kLvtTimer + 0x10 * index.
constexpr unsigned kLvtTimerIndex = 0, kLvtLint0Index = 3, kLvtLint1Index = 4, kLvtErrorIndex = 5;

// Writable bits of each LVT (APM vol 2 §16.4 Figure 16-9/16-10/16-11): vector 7:0, message type
// 10:8 (thermal, performance counter, LINT0/1), polarity 13 and trigger mode 15 (LINT0/1), mask
// 16, timer mode 18:17 (timer; bit 18 = TSC-deadline, SDM §11.5.1). Delivery status (12) and
// remote IRR (14) are read-only.
constexpr std::array<uint32_t, 6> kLvtWritable { 0x000700FF, 0x000107FF, 0x000107FF, 0x0001A7FF, 0x0001A7FF, 0x000100FF };
constexpr uint32_t kLvtRemoteIrr = 1u << 14, kLvtLevel = 1u << 15, kLvtActiveLow = 1u << 13;
// ICR low writable bits (APM §16.5 Figure 16-18): vector, message type, destination mode,
// level, trigger mode, destination shorthand. Bit 12 (delivery status) is read-only.
constexpr uint32_t kIcrLowWritable = 0x000CCFFF;

enum class Access { Ok, ReadOnly, WriteOnly, Absent };

bool in_bank(uint32_t offset, uint32_t bank) { return offset >= bank && offset < bank + 0x80; }

} // namespace

LocalApic::LocalApic(Config const& config, Clock clock)
    : m_config(config)
    , m_name("lapic" + std::to_string(config.cpu_index))
    , m_clock(std::move(clock))
{
    reset();
}

void LocalApic::power_on_registers()
{
    // The register state after RESET, or after the global enable is cleared and set again
    // (SDM §11.4.7.1): IRR/ISR/TMR/ICR/LDR/TPR zero, DFR all ones, SVR 0xFF (software
    // disabled), every LVT masked, the timer stopped. The ID is kept by the caller.
    Regs fresh;
    fresh.id = m_regs.id;
    fresh.nmi_pending = m_regs.nmi_pending;
    fresh.init_pending = m_regs.init_pending;
    fresh.wait_for_sipi = m_regs.wait_for_sipi;
    fresh.sipi_pending = m_regs.sipi_pending;
    fresh.sipi_vector = m_regs.sipi_vector;
    fresh.lint0_level = m_regs.lint0_level;
    fresh.lint1_level = m_regs.lint1_level;
    fresh.lvt.fill(kLvtMasked);
    m_regs = fresh;
}

void LocalApic::reset()
{
    m_base = kDefaultBase | kBaseEnable | (m_config.bsp ? kBaseBsp : 0);
    m_regs = {};
    m_regs.id = (m_config.apic_id & 0xFF) << 24;
    power_on_registers();
    // QEMU hw/intc/apic_common.c apic_reset_common: the BSP's LINT0 is ExtINT, unmasked — what
    // the BIOS would have programmed — so the 8259 reaches a guest that never sets up its APIC.
    if (m_config.bsp)
        m_regs.lvt[kLvtLint0Index] = 0x700;
    // Without a BIOS, the APs are already parked in wait-for-SIPI (SDM §9.4.1).
    m_regs.wait_for_sipi = !m_config.bsp;
}

uint32_t LocalApic::apic_id() const { return x2apic() ? m_config.apic_id : m_regs.id >> 24; }

int LocalApic::highest(std::array<uint32_t, 8> const& bits) const
{
    for (int i = 7; i >= 0; --i)
        if (bits[unsigned(i)])
            return i * 32 + 31 - __builtin_clz(bits[unsigned(i)]);
    return -1;
}

uint8_t LocalApic::compute_ppr() const
{
    // APM vol 2 §16.6.2 / SDM §11.8.3.1.
    int isrv = std::max(highest(m_regs.isr), 0);
    uint32_t tpr = m_regs.tpr & 0xFF;
    if ((tpr >> 4) >= (uint32_t(isrv) >> 4))
        return uint8_t(tpr);
    return uint8_t(isrv & 0xF0);
}

uint8_t LocalApic::compute_apr() const
{
    // APM vol 2 §16.6.1: TPR when it is at least the highest IRR class and above the highest ISR
    // class, else the highest of the three classes.
    uint32_t tpr = m_regs.tpr & 0xFF;
    uint32_t isrv = uint32_t(std::max(highest(m_regs.isr), 0)), irrv = uint32_t(std::max(highest(m_regs.irr), 0));
    if ((tpr >> 4) >= (irrv >> 4) && (tpr >> 4) > (isrv >> 4))
        return uint8_t(tpr);
    return uint8_t(std::max({ tpr & 0xF0, isrv & 0xF0, irrv & 0xF0 }));
}

bool LocalApic::extint_pending() const
{
    if (!m_pic || !m_pic->interrupt_pending())
        return false;
    uint32_t lvt0 = m_regs.lvt[kLvtLint0Index];
    bool lint0_extint = !(lvt0 & kLvtMasked) && ((lvt0 >> 8) & 7) == uint32_t(ApicDeliveryMode::ExtInt);
    return lint0_extint || m_regs.extint_requested;
}

bool LocalApic::interrupt_pending() const
{
    if (!enabled())
        return m_pic && m_pic->interrupt_pending(); // the APIC is out of the path: INTR is the 8259's
    if (extint_pending())
        return true;
    if (!software_enabled())
        return false;
    int v = highest(m_regs.irr);
    return v >= 0 && (uint32_t(v) >> 4) > (uint32_t(compute_ppr()) >> 4);
}

uint8_t LocalApic::acknowledge()
{
    if (!enabled())
        return m_pic ? m_pic->acknowledge() : uint8_t(m_regs.svr & 0xFF);
    if (extint_pending()) {
        m_regs.extint_requested = false;
        return m_pic->acknowledge(); // ExtINT: the 8259 drives the vector (APM §16.4.2)
    }
    int v = highest(m_regs.irr);
    if (software_enabled() && v >= 0 && (uint32_t(v) >> 4) > (uint32_t(compute_ppr()) >> 4)) {
        m_regs.irr[unsigned(v) / 32] &= ~(1u << (v % 32));
        m_regs.isr[unsigned(v) / 32] |= 1u << (v % 32);
        return uint8_t(v);
    }
    return uint8_t(m_regs.svr & 0xFF); // spurious: ISR untouched, no EOI expected (APM §16.6.5)
}

bool LocalApic::take_nmi()
{
    bool r = m_regs.nmi_pending;
    m_regs.nmi_pending = false;
    return r;
}

void LocalApic::accept_nmi()
{
    m_regs.nmi_pending = true;
    if (m_nmi_notify)
        m_nmi_notify();
}

bool LocalApic::take_init()
{
    bool r = m_regs.init_pending;
    m_regs.init_pending = false;
    return r;
}

std::optional<uint8_t> LocalApic::take_sipi()
{
    if (!m_regs.sipi_pending)
        return std::nullopt;
    m_regs.sipi_pending = false;
    return m_regs.sipi_vector;
}

void LocalApic::accept_fixed(uint8_t vector, bool level_triggered)
{
    // Vectors 0-15 are illegal (APM §16.4.6: receive illegal vector); the interrupt is dropped.
    if (vector < 16) {
        error(kEsrReceiveIllegalVector);
        return;
    }
    m_regs.irr[vector / 32] |= 1u << (vector % 32);
    if (level_triggered)
        m_regs.tmr[vector / 32] |= 1u << (vector % 32);
    else
        m_regs.tmr[vector / 32] &= ~(1u << (vector % 32));
}

void LocalApic::accept_init()
{
    // INIT resets the APIC except its ID and base MSR (SDM §11.4.7.3); the vCPU is reset by its
    // owner (take_init) and an AP then waits for a SIPI.
    power_on_registers();
    m_regs.init_pending = true;
    m_regs.sipi_pending = false;
    m_regs.wait_for_sipi = !m_config.bsp;
}

void LocalApic::accept_sipi(uint8_t vector)
{
    if (!m_regs.wait_for_sipi)
        return; // SDM §9.4.4.1: a SIPI to a processor not waiting for one is ignored
    m_regs.wait_for_sipi = false;
    m_regs.sipi_pending = true;
    m_regs.sipi_vector = vector;
}

void LocalApic::set_lint(unsigned pin, bool level)
{
    if (pin > 1)
        return;
    bool& stored = pin ? m_regs.lint1_level : m_regs.lint0_level;
    bool old = stored;
    stored = level;
    if (!enabled()) {
        if (pin == 1 && level && !old)
            accept_nmi(); // LINT1 is the NMI pin while the APIC is disabled
        return;
    }
    uint32_t& lvt = m_regs.lvt[kLvtLint0Index + pin];
    bool active_low = lvt & kLvtActiveLow;
    bool asserted = level != active_low, was = old != active_low;
    if (lvt & kLvtMasked)
        return;
    switch (ApicDeliveryMode((lvt >> 8) & 7)) {
    case ApicDeliveryMode::Fixed:
        if (pin == 0 && (lvt & kLvtLevel)) {
            // Level-triggered LINT0: one interrupt until EOI clears remote IRR.
            if (asserted && !(lvt & kLvtRemoteIrr)) {
                lvt |= kLvtRemoteIrr;
                accept_fixed(uint8_t(lvt), true);
            }
        } else if (asserted && !was) {
            accept_fixed(uint8_t(lvt), false);
        }
        break;
    case ApicDeliveryMode::Nmi:
        if (asserted && !was)
            accept_nmi();
        break;
    case ApicDeliveryMode::Init:
        if (asserted && !was)
            accept_init();
        break;
    default: break; // ExtINT is polled from the 8259; SMI is not modelled
    }
}

void LocalApic::error(uint32_t bits)
{
    m_regs.esr_pending |= bits;
    uint32_t lvt = m_regs.lvt[kLvtErrorIndex];
    if (lvt & kLvtMasked)
        return;
    uint8_t vector = uint8_t(lvt);
    if (vector < 16) {
        m_regs.esr_pending |= kEsrReceiveIllegalVector; // and no error interrupt for it
        return;
    }
    accept_fixed(vector, false);
}

void LocalApic::eoi()
{
    int v = highest(m_regs.isr);
    if (v < 0)
        return;
    m_regs.isr[unsigned(v) / 32] &= ~(1u << (v % 32));
    bool level = m_regs.tmr[unsigned(v) / 32] & (1u << (v % 32));
    uint32_t& lint0 = m_regs.lvt[kLvtLint0Index];
    if ((lint0 & kLvtRemoteIrr) && uint8_t(lint0) == v) {
        lint0 &= ~kLvtRemoteIrr;
        set_lint(0, m_regs.lint0_level); // a level LINT0 still asserted interrupts again
    }
    if (level && m_bus)
        m_bus->broadcast_eoi(uint8_t(v)); // APM §16.6.4: level-triggered EOIs reach the IOAPICs
}

void LocalApic::send_icr(uint32_t low, uint32_t high)
{
    ApicMessage m;
    m.vector = uint8_t(low);
    m.mode = ApicDeliveryMode((low >> 8) & 7);
    m.logical = low & (1u << 11);
    m.level_assert = low & (1u << 14);
    m.level_triggered = low & (1u << 15);
    m.shorthand = ApicShorthand((low >> 18) & 3);
    m.x2apic_format = x2apic();
    m.destination = x2apic() ? high : high >> 24;
    m.source = this;
    if ((m.mode == ApicDeliveryMode::Fixed || m.mode == ApicDeliveryMode::LowestPriority) && m.vector < 16) {
        error(kEsrSendIllegalVector); // APM §16.4.6; the IPI is not sent
        return;
    }
    unsigned accepted = m_bus ? m_bus->send(m) : 0;
    bool broadcast = m.destination == (m.x2apic_format ? 0xFFFFFFFFu : 0xFFu);
    if (accepted == 0 && m.shorthand == ApicShorthand::None && !broadcast)
        error(kEsrSendAccept); // nobody took it (APM §16.4.6 bit 2)
}

LocalApic::TimerMode LocalApic::timer_mode() const
{
    uint32_t mode = (m_regs.lvt[kLvtTimerIndex] >> 17) & 3;
    return mode == 1 ? TimerMode::Periodic : mode == 2 ? TimerMode::TscDeadline : TimerMode::OneShot;
}

unsigned LocalApic::divide_value() const
{
    // APM §16.4.1 Figure 16-13: bits 3, 1:0; 0b111 divides by 1, n by 2^(n+1).
    uint32_t d = ((m_regs.divide & 8) >> 1) | (m_regs.divide & 3);
    return d == 7 ? 1u : 2u << d;
}

void LocalApic::start_count(uint32_t count, int64_t now_ns)
{
    m_regs.initial_count = count;
    m_regs.count_base_ns = now_ns;
    m_regs.count_at_base = count;
    m_regs.timer_armed = count != 0;
    m_regs.next_expiry_ns = now_ns + int64_t(uint64_t(count) * divide_value());
}

uint32_t LocalApic::timer_current_count(int64_t now_ns) const
{
    if (timer_mode() == TimerMode::TscDeadline || m_regs.initial_count == 0 || m_regs.count_at_base == 0)
        return 0;
    uint64_t t = now_ns > m_regs.count_base_ns ? uint64_t(now_ns - m_regs.count_base_ns) / divide_value() : 0;
    if (t < m_regs.count_at_base)
        return uint32_t(m_regs.count_at_base - t);
    if (timer_mode() == TimerMode::Periodic)
        return uint32_t(m_regs.initial_count - (t - m_regs.count_at_base) % m_regs.initial_count);
    return 0;
}

int64_t LocalApic::tsc_to_ns(uint64_t tsc) const
{
    // The first nanosecond at which the TSC has reached `tsc`.
    unsigned __int128 ns = ((unsigned __int128)tsc * 1'000'000'000u + m_config.tsc_hz - 1) / m_config.tsc_hz;
    return ns > (unsigned __int128)std::numeric_limits<int64_t>::max() ? std::numeric_limits<int64_t>::max() : int64_t(ns);
}

void LocalApic::fire_lvt(unsigned index)
{
    uint32_t lvt = m_regs.lvt[index];
    if (lvt & kLvtMasked)
        return;
    accept_fixed(uint8_t(lvt), false);
}

void LocalApic::advance(int64_t now_ns)
{
    if (timer_mode() == TimerMode::TscDeadline) {
        if (m_regs.tsc_deadline && now_ns >= tsc_to_ns(m_regs.tsc_deadline)) {
            m_regs.tsc_deadline = 0; // SDM §11.5.4.1: the timer disarms itself
            fire_lvt(kLvtTimerIndex);
        }
        return;
    }
    if (!m_regs.timer_armed || now_ns < m_regs.next_expiry_ns)
        return;
    if (timer_mode() == TimerMode::Periodic) {
        // Reload from the initial count at each expiry; missed periods coalesce into one IRR bit.
        int64_t period = int64_t(uint64_t(m_regs.initial_count) * divide_value());
        int64_t missed = (now_ns - m_regs.next_expiry_ns) / period;
        m_regs.count_base_ns = m_regs.next_expiry_ns + missed * period;
        m_regs.count_at_base = m_regs.initial_count;
        m_regs.next_expiry_ns = m_regs.count_base_ns + period;
    } else {
        m_regs.timer_armed = false;
    }
    fire_lvt(kLvtTimerIndex);
}

std::optional<int64_t> LocalApic::next_deadline() const
{
    if (!enabled() || (m_regs.lvt[kLvtTimerIndex] & kLvtMasked))
        return std::nullopt;
    if (timer_mode() == TimerMode::TscDeadline)
        return m_regs.tsc_deadline ? std::optional<int64_t>(tsc_to_ns(m_regs.tsc_deadline)) : std::nullopt;
    return m_regs.timer_armed ? std::optional<int64_t>(m_regs.next_expiry_ns) : std::nullopt;
}

void LocalApic::write_lvt(unsigned index, uint32_t value)
{
    uint32_t& lvt = m_regs.lvt[index];
    if (index == kLvtTimerIndex && !m_config.tsc_deadline_supported)
        value &= ~(1u << 18);
    uint32_t v = (value & kLvtWritable[index]) | (lvt & kLvtRemoteIrr & ~kLvtWritable[index]);
    if (!software_enabled())
        v |= kLvtMasked; // SDM §11.4.7.2: the mask bits cannot be cleared while software disabled
    if (index == kLvtTimerIndex) {
        TimerMode before = timer_mode();
        lvt = v;
        // Switching into or out of TSC-deadline mode disarms the timer (SDM §11.5.4.1).
        if ((before == TimerMode::TscDeadline) != (timer_mode() == TimerMode::TscDeadline)) {
            m_regs.tsc_deadline = 0;
            m_regs.initial_count = 0;
            m_regs.count_at_base = 0;
            m_regs.timer_armed = false;
        }
        return;
    }
    lvt = v;
}

uint32_t LocalApic::reg(uint32_t offset) const
{
    switch (offset) {
    case kId: return x2apic() ? m_config.apic_id : m_regs.id;
    case kVer: return kVersion;
    case kTpr: return m_regs.tpr;
    case kApr: return compute_apr();
    case kPpr: return compute_ppr();
    case kLdr:
        // x2APIC: the logical ID is derived from the x2APIC ID (SDM §11.12.10.2): cluster in
        // 31:16, one bit of 16 in 15:0.
        return x2apic() ? ((m_config.apic_id >> 4) << 16) | (1u << (m_config.apic_id & 0xF)) : m_regs.ldr;
    case kDfr: return m_regs.dfr;
    case kSvr: return m_regs.svr;
    case kEsr: return m_regs.esr;
    case kIcrLow: return m_regs.icr_low; // delivery status always idle (see the header)
    case kIcrHigh: return m_regs.icr_high;
    case kTimerInitial: return m_regs.initial_count;
    case kTimerCurrent: return timer_current_count(m_clock());
    case kTimerDivide: return m_regs.divide;
    default: break;
    }
    if (in_bank(offset, kIsr))
        return m_regs.isr[(offset - kIsr) >> 4];
    if (in_bank(offset, kTmr))
        return m_regs.tmr[(offset - kTmr) >> 4];
    if (in_bank(offset, kIrr))
        return m_regs.irr[(offset - kIrr) >> 4];
    if (offset >= kLvtTimer && offset <= kLvtError)
        return m_regs.lvt[(offset - kLvtTimer) >> 4];
    return 0;
}

namespace {

// What a register offset is in the current mode (APM Table 16-2; SDM Table 11-6 for x2APIC:
// APR, RRD, DFR and ICR high do not exist there — KVM's kvm_lapic_readable_reg_mask agrees).
Access classify(uint32_t offset, bool x2)
{
    if (offset >= 0x400 || (offset & 0xF))
        return Access::Absent;
    if (in_bank(offset, LocalApic::kIsr) || in_bank(offset, LocalApic::kTmr) || in_bank(offset, LocalApic::kIrr))
        return Access::ReadOnly;
    if (offset >= LocalApic::kLvtTimer && offset <= LocalApic::kLvtError)
        return Access::Ok;
    switch (offset) {
    case LocalApic::kId:
    case LocalApic::kLdr: return x2 ? Access::ReadOnly : Access::Ok;
    case LocalApic::kVer:
    case LocalApic::kPpr:
    case LocalApic::kTimerCurrent: return Access::ReadOnly;
    case LocalApic::kApr:
    case LocalApic::kRrd: return x2 ? Access::Absent : Access::ReadOnly;
    case LocalApic::kDfr:
    case LocalApic::kIcrHigh: return x2 ? Access::Absent : Access::Ok;
    case LocalApic::kEoi: return x2 ? Access::WriteOnly : Access::Ok; // xAPIC reads 0
    case LocalApic::kSelfIpi: return x2 ? Access::WriteOnly : Access::Absent;
    case LocalApic::kTpr:
    case LocalApic::kSvr:
    case LocalApic::kEsr:
    case LocalApic::kIcrLow:
    case LocalApic::kTimerInitial:
    case LocalApic::kTimerDivide: return Access::Ok;
    default: return Access::Absent;
    }
}

} // namespace

bool LocalApic::write_reg(uint32_t offset, uint32_t value)
{
    switch (offset) {
    case kId: m_regs.id = value & 0xFF000000; return true; // xAPIC only (AMD: read/write)
    case kTpr: m_regs.tpr = value & 0xFF; return true;
    case kEoi: eoi(); return true;
    case kLdr: m_regs.ldr = value & 0xFF000000; return true;
    case kDfr: m_regs.dfr = value | 0x0FFFFFFF; return true;
    case kSvr:
        // Vector 7:0, APIC software enable 8, focus processor checking 9 (APM §16.4.7). Clearing
        // the enable masks every LVT (SDM §11.4.7.2).
        m_regs.svr = value & 0x3FF;
        if (!software_enabled())
            for (uint32_t& lvt : m_regs.lvt)
                lvt |= kLvtMasked;
        return true;
    case kEsr:
        m_regs.esr = m_regs.esr_pending; // APM §16.4.6: a write latches, then reads show it
        m_regs.esr_pending = 0;
        return true;
    case kIcrLow:
        m_regs.icr_low = value & kIcrLowWritable;
        send_icr(m_regs.icr_low, m_regs.icr_high);
        return true;
    case kIcrHigh: m_regs.icr_high = value & 0xFF000000; return true;
    case kTimerInitial:
        if (timer_mode() != TimerMode::TscDeadline) // ignored in TSC-deadline mode (SDM §11.5.4.1)
            start_count(value, m_clock());
        return true;
    case kTimerDivide: {
        // A new divisor applies from now on: the count reached so far continues at the new rate.
        int64_t t = m_clock();
        uint32_t current = timer_current_count(t);
        m_regs.divide = value & 0xB;
        if (m_regs.initial_count && timer_mode() != TimerMode::TscDeadline && current) {
            m_regs.count_base_ns = t;
            m_regs.count_at_base = current;
            if (m_regs.timer_armed || timer_mode() == TimerMode::Periodic) {
                m_regs.timer_armed = true;
                m_regs.next_expiry_ns = t + int64_t(uint64_t(current) * divide_value());
            }
        }
        return true;
    }
    case kSelfIpi: accept_fixed(uint8_t(value), false); return true;
    default: break;
    }
    if (offset >= kLvtTimer && offset <= kLvtError) {
        write_lvt((offset - kLvtTimer) >> 4, value);
        return true;
    }
    return false;
}

uint64_t LocalApic::read(uint64_t offset, unsigned size)
{
    uint64_t ones = size >= 8 ? ~0ull : (1ull << (8 * size)) - 1;
    if (!mmio_decoded() || offset >= kMmioLength)
        return ones;
    uint32_t reg_offset = uint32_t(offset & 0xFF0);
    unsigned byte = unsigned(offset & 0xF);
    Access a = classify(reg_offset, false);
    if (a == Access::Absent) {
        error(kEsrIllegalRegister);
        return 0;
    }
    uint32_t v = a == Access::WriteOnly ? 0 : reg(reg_offset);
    if (reg_offset == kEoi)
        v = 0;
    if (byte >= 4)
        return 0;
    return (uint64_t(v) >> (8 * byte)) & ones;
}

void LocalApic::write(uint64_t offset, unsigned size, uint64_t value)
{
    if (!mmio_decoded() || offset >= kMmioLength)
        return;
    uint32_t reg_offset = uint32_t(offset & 0xFF0);
    Access a = classify(reg_offset, false);
    if (a == Access::Absent) {
        error(kEsrIllegalRegister);
        return;
    }
    if ((offset & 0xF) || size < 4 || a == Access::ReadOnly)
        return; // narrow/unaligned writes and writes to read-only registers are dropped
    write_reg(reg_offset, uint32_t(value));
}

Result<void, ApicMsrError> LocalApic::write_apic_base(uint64_t value)
{
    // SDM §11.4.4 / §11.12.1: bits 7:0 and 9 are reserved, EXTD needs x2APIC support, the base
    // address is limited to MAXPHYADDR.
    uint64_t reserved = 0x2FFull | (m_config.x2apic_supported ? 0 : kBaseExtd);
    if (m_config.phys_addr_bits < 64)
        reserved |= ~0ull << m_config.phys_addr_bits;
    if (value & reserved)
        return Unexpected(ApicMsrError::GeneralProtection);
    bool en = value & kBaseEnable, extd = value & kBaseExtd;
    bool was_en = enabled(), was_extd = x2apic();
    if (!en && extd)
        return Unexpected(ApicMsrError::GeneralProtection); // invalid state
    if (was_en && was_extd && en && !extd)
        return Unexpected(ApicMsrError::GeneralProtection); // x2APIC -> xAPIC (Figure 11-27)
    if (!was_en && extd)
        return Unexpected(ApicMsrError::GeneralProtection); // disabled -> x2APIC
    // BSP (bit 8) is the machine's choice: a write does not change it.
    m_base = (value & ~kBaseBsp) | (m_config.bsp ? kBaseBsp : 0);
    if (was_en && !en) {
        // Disabled: every register returns to its power-on state, the xAPIC ID to the initial one.
        m_regs.id = (m_config.apic_id & 0xFF) << 24;
        power_on_registers();
    }
    if (!was_extd && extd)
        m_regs.icr_high = 0; // the x2APIC ICR destination is 32 bits of its own
    return {};
}

Result<uint64_t, ApicMsrError> LocalApic::read_msr(uint32_t msr)
{
    if (msr == kMsrApicBase)
        return m_base;
    if (msr == kMsrTscDeadline && !m_config.tsc_deadline_supported)
        return Unexpected(ApicMsrError::GeneralProtection);
    if (msr == kMsrTscDeadline)
        return (enabled() && timer_mode() == TimerMode::TscDeadline) ? m_regs.tsc_deadline : 0;
    if (msr < kMsrX2apicFirst || msr > kMsrX2apicLast || !enabled() || !x2apic())
        return Unexpected(ApicMsrError::GeneralProtection); // SDM §11.12.1.2: x2APIC MSRs #GP outside x2APIC mode
    uint32_t offset = (msr - kMsrX2apicFirst) << 4;
    Access a = classify(offset, true);
    if (a == Access::Absent || a == Access::WriteOnly)
        return Unexpected(ApicMsrError::GeneralProtection);
    if (offset == kIcrLow)
        return (uint64_t(m_regs.icr_high) << 32) | m_regs.icr_low;
    return uint64_t(reg(offset));
}

Result<void, ApicMsrError> LocalApic::write_msr(uint32_t msr, uint64_t value)
{
    if (msr == kMsrApicBase)
        return write_apic_base(value);
    if (msr == kMsrTscDeadline && !m_config.tsc_deadline_supported)
        return Unexpected(ApicMsrError::GeneralProtection);
    if (msr == kMsrTscDeadline) {
        // Ignored outside TSC-deadline mode; 0 disarms (SDM §11.5.4.1).
        if (enabled() && timer_mode() == TimerMode::TscDeadline)
            m_regs.tsc_deadline = value;
        return {};
    }
    if (msr < kMsrX2apicFirst || msr > kMsrX2apicLast || !enabled() || !x2apic())
        return Unexpected(ApicMsrError::GeneralProtection);
    uint32_t offset = (msr - kMsrX2apicFirst) << 4;
    Access a = classify(offset, true);
    if (a == Access::Absent || a == Access::ReadOnly)
        return Unexpected(ApicMsrError::GeneralProtection);
    if (offset == kIcrLow) {
        // One 64-bit write sends the IPI: destination in 63:32 (SDM §11.12.9). Reserved bits #GP.
        if (value & 0x00000000FFF33000ull)
            return Unexpected(ApicMsrError::GeneralProtection);
        m_regs.icr_low = uint32_t(value) & kIcrLowWritable;
        m_regs.icr_high = uint32_t(value >> 32);
        send_icr(m_regs.icr_low, m_regs.icr_high);
        return {};
    }
    // Bits 63:32 are reserved in every other x2APIC register; EOI and ESR take only 0 and SELF
    // IPI only a vector (SDM §11.12.1.2, §11.12.5.1, §11.12.11).
    if (value >> 32)
        return Unexpected(ApicMsrError::GeneralProtection);
    if ((offset == kEoi || offset == kEsr) && value != 0)
        return Unexpected(ApicMsrError::GeneralProtection);
    if (offset == kSelfIpi && (value & ~0xFFull))
        return Unexpected(ApicMsrError::GeneralProtection);
    write_reg(offset, uint32_t(value));
    return {};
}

bool LocalApic::matches_destination(ApicMessage const& m) const
{
    if (!enabled())
        return false; // a globally disabled APIC takes no messages
    switch (m.shorthand) {
    case ApicShorthand::Self: return m.source == this;
    case ApicShorthand::AllIncludingSelf: return true;
    case ApicShorthand::AllExcludingSelf: return m.source != this;
    case ApicShorthand::None: break;
    }
    uint32_t broadcast = m.x2apic_format ? 0xFFFFFFFFu : 0xFFu;
    if (m.destination == broadcast)
        return true;
    if (!m.logical)
        return apic_id() == m.destination;
    if (x2apic()) {
        // x2APIC logical: cluster ID (31:16) equal, and a common bit in 15:0 (SDM §11.12.10.2).
        if (!m.x2apic_format)
            return false;
        uint32_t ldr = reg(kLdr);
        return (m.destination >> 16) == (ldr >> 16) && (m.destination & ldr & 0xFFFF) != 0;
    }
    uint32_t ldr = m_regs.ldr >> 24, dest = m.destination & 0xFF;
    switch (m_regs.dfr >> 28) {
    case 0xF: return (ldr & dest) != 0; // flat model
    case 0x0: return (ldr >> 4) == (dest >> 4) && (ldr & dest & 0xF) != 0; // cluster model
    default: return false;
    }
}

void LocalApic::save(StateWriter& w) const
{
    Regs const& r = m_regs;
    w.u64(m_base);
    w.u32(r.id);
    w.u32(r.tpr);
    w.u32(r.ldr);
    w.u32(r.dfr);
    w.u32(r.svr);
    for (auto const* bank : { &r.isr, &r.tmr, &r.irr })
        for (uint32_t v : *bank)
            w.u32(v);
    w.u32(r.esr);
    w.u32(r.esr_pending);
    w.u32(r.icr_low);
    w.u32(r.icr_high);
    for (uint32_t v : r.lvt)
        w.u32(v);
    w.u32(r.initial_count);
    w.u32(r.divide);
    w.i64(r.count_base_ns);
    w.u32(r.count_at_base);
    w.boolean(r.timer_armed);
    w.i64(r.next_expiry_ns);
    w.u64(r.tsc_deadline);
    w.boolean(r.nmi_pending);
    w.boolean(r.init_pending);
    w.boolean(r.wait_for_sipi);
    w.boolean(r.sipi_pending);
    w.u8(r.sipi_vector);
    w.boolean(r.extint_requested);
    w.boolean(r.lint0_level);
    w.boolean(r.lint1_level);
}

void LocalApic::load(StateReader& rd)
{
    Regs r;
    uint64_t base = rd.u64();
    r.id = rd.u32();
    r.tpr = rd.u32();
    r.ldr = rd.u32();
    r.dfr = rd.u32();
    r.svr = rd.u32();
    for (auto* bank : { &r.isr, &r.tmr, &r.irr })
        for (uint32_t& v : *bank)
            v = rd.u32();
    r.esr = rd.u32();
    r.esr_pending = rd.u32();
    r.icr_low = rd.u32();
    r.icr_high = rd.u32();
    for (uint32_t& v : r.lvt)
        v = rd.u32();
    r.initial_count = rd.u32();
    r.divide = rd.u32();
    r.count_base_ns = rd.i64();
    r.count_at_base = rd.u32();
    r.timer_armed = rd.boolean();
    r.next_expiry_ns = rd.i64();
    r.tsc_deadline = rd.u64();
    r.nmi_pending = rd.boolean();
    r.init_pending = rd.boolean();
    r.wait_for_sipi = rd.boolean();
    r.sipi_pending = rd.boolean();
    r.sipi_vector = rd.u8();
    r.extint_requested = rd.boolean();
    r.lint0_level = rd.boolean();
    r.lint1_level = rd.boolean();
    if (!read_to_end(rd))
        return;

    uint64_t reserved = 0x2FFull | (m_config.x2apic_supported ? 0 : kBaseExtd);
    if (m_config.phys_addr_bits < 64)
        reserved |= ~0ull << m_config.phys_addr_bits;
    if (base & reserved)
        return rd.fail("APIC base MSR has reserved bits set");
    if ((base & kBaseExtd) && !(base & kBaseEnable))
        return rd.fail("APIC base MSR: x2APIC without the global enable");
    if (bool(base & kBaseBsp) != m_config.bsp)
        return rd.fail("APIC base MSR: BSP flag differs from this vCPU's");
    if (r.id & 0x00FFFFFF)
        return rd.fail("ID register has bits below 24 set");
    if (r.tpr > 0xFF || (r.ldr & 0x00FFFFFF) || (r.dfr & 0x0FFFFFFF) != 0x0FFFFFFF || r.svr > 0x3FF)
        return rd.fail("TPR, LDR, DFR or SVR has reserved bits set");
    if (!m_config.tsc_deadline_supported && (r.lvt[kLvtTimerIndex] & (1u << 18)))
        return rd.fail("LVT timer in TSC-deadline mode without TSC-deadline support");
    for (unsigned i = 0; i < 6; ++i)
        if (r.lvt[i] & ~(kLvtWritable[i] | (i == kLvtLint0Index || i == kLvtLint1Index ? kLvtRemoteIrr : 0)))
            return rd.fail("LVT " + std::to_string(i) + " has reserved bits set");
    if (r.icr_low & ~kIcrLowWritable)
        return rd.fail("ICR has reserved bits set");
    if (r.divide & ~0xBu)
        return rd.fail("divide configuration has reserved bits set");
    if (r.count_at_base > r.initial_count || (r.timer_armed && r.initial_count == 0))
        return rd.fail("timer count state is inconsistent");
    if (r.wait_for_sipi && r.sipi_pending)
        return rd.fail("SIPI pending while still waiting for one");
    if (m_config.bsp && r.wait_for_sipi)
        return rd.fail("the BSP waits for a SIPI");
    m_base = base;
    m_regs = r;
}

} // namespace sevemu::devices
