#include "devices/apic_bus.h"

#include "devices/lapic.h"

namespace sevemu::devices {

namespace {

void deliver(LocalApic& lapic, ApicMessage const& m)
{
    switch (m.mode) {
    case ApicDeliveryMode::Fixed:
    case ApicDeliveryMode::LowestPriority: lapic.accept_fixed(m.vector, m.level_triggered); break;
    case ApicDeliveryMode::Nmi: lapic.accept_nmi(); break;
    case ApicDeliveryMode::Init:
        // INIT level de-assert (level 0, trigger level) only resynchronises arbitration IDs on
        // old APICs; it must not reset the target again (APM §16.5, Linux smpboot.c).
        if (!(m.level_triggered && !m.level_assert))
            lapic.accept_init();
        break;
    case ApicDeliveryMode::StartUp: lapic.accept_sipi(m.vector); break;
    case ApicDeliveryMode::ExtInt: lapic.accept_extint(); break;
    case ApicDeliveryMode::Smi:
    case ApicDeliveryMode::RemoteRead: break; // SMM is not modelled; remote read is reserved on AMD
    }
}

} // namespace

unsigned ApicRouter::send(ApicMessage const& m)
{
    if (m.mode == ApicDeliveryMode::LowestPriority) {
        // The matching APIC with the lowest arbitration priority; ties to the lowest APIC ID
        // (APM §16.5 "lowest priority"; focus-processor checking is not modelled).
        LocalApic* best = nullptr;
        for (LocalApic* l : m_lapics) {
            if (!l->matches_destination(m))
                continue;
            if (!best || l->arbitration_priority() < best->arbitration_priority()
                || (l->arbitration_priority() == best->arbitration_priority() && l->apic_id() < best->apic_id()))
                best = l;
        }
        if (!best)
            return 0;
        deliver(*best, m);
        return 1;
    }
    unsigned n = 0;
    for (LocalApic* l : m_lapics) {
        if (l->matches_destination(m)) {
            deliver(*l, m);
            ++n;
        }
    }
    return n;
}

void ApicRouter::broadcast_eoi(uint8_t vector)
{
    for (EoiListener* l : m_eoi_listeners)
        l->end_of_interrupt(vector);
}

} // namespace sevemu::devices
