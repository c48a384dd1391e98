#include "devices/pci_host.h"

#include "devices/state_check.h"

namespace sevemu::devices {

namespace {
constexpr uint16_t kCommandWritable = 0x0006; // memory space, bus master
constexpr uint32_t kAddressWritable = 0x80FFFFFC;
uint64_t ones(unsigned size) { return size >= 8 ? ~0ull : (1ull << (8 * size)) - 1; }
} // namespace

PciHost::PciHost(ResetRequest reset_request)
    : m_reset_request(std::move(reset_request))
{
    reset();
}

void PciHost::reset()
{
    m_address = 0;
    m_command = 0;
    m_reset_control = 0;
}

uint8_t PciHost::bridge_byte(unsigned reg) const
{
    // The type 0 header (PCI 3.0 §6.1).
    switch (reg) {
    case 0x00: return uint8_t(kVendorId);
    case 0x01: return uint8_t(kVendorId >> 8);
    case 0x02: return uint8_t(kDeviceId);
    case 0x03: return uint8_t(kDeviceId >> 8);
    case 0x04: return uint8_t(m_command);
    case 0x05: return uint8_t(m_command >> 8);
    case 0x08: return 0x00; // revision
    case 0x09: return uint8_t(kClassCode);
    case 0x0A: return uint8_t(kClassCode >> 8);
    case 0x0B: return uint8_t(kClassCode >> 16);
    default: return 0; // status, BIST, header type 0, no BARs, no capabilities
    }
}

uint32_t PciHost::config_read(unsigned bus, unsigned device, unsigned function, unsigned reg, unsigned size) const
{
    if (bus != 0 || device != 0 || function != 0 || reg >= 256)
        return uint32_t(ones(size)); // master abort
    uint32_t v = 0;
    for (unsigned i = 0; i < size && reg + i < 256; ++i)
        v |= uint32_t(bridge_byte(reg + i)) << (8 * i);
    return v;
}

void PciHost::config_write(unsigned bus, unsigned device, unsigned function, unsigned reg, unsigned size, uint32_t value)
{
    if (bus != 0 || device != 0 || function != 0)
        return;
    for (unsigned i = 0; i < size; ++i) {
        unsigned at = reg + i;
        uint8_t b = uint8_t(value >> (8 * i));
        if (at == 0x04)
            m_command = uint16_t((m_command & 0xFF00) | (b & kCommandWritable));
        // 0x05: the command register's high byte has no writable bit here.
    }
}

uint64_t PciHost::Port::read(uint64_t offset, unsigned size)
{
    PciHost& h = m_host;
    if (!m_data) {
        if (offset == 0 && size == 4)
            return h.m_address;
        if (offset == 1 && size == 1)
            return h.m_reset_control;
        return ones(size);
    }
    if (!(h.m_address & 0x80000000u))
        return ones(size);
    unsigned reg = (h.m_address & 0xFC) + unsigned(offset);
    if (offset + size > 4)
        size = unsigned(4 - offset);
    return h.config_read((h.m_address >> 16) & 0xFF, (h.m_address >> 11) & 0x1F, (h.m_address >> 8) & 7, reg, size);
}

void PciHost::Port::write(uint64_t offset, unsigned size, uint64_t value)
{
    PciHost& h = m_host;
    if (!m_data) {
        if (offset == 0 && size == 4) {
            h.m_address = uint32_t(value) & kAddressWritable;
        } else if (offset == 1 && size == 1) {
            // ICH9 RST_CNT (QEMU hw/isa/lpc_ich9.c ich9_rst_cnt_write): RST_CPU resets the system.
            if (value & 0x04) {
                if (h.m_reset_request)
                    h.m_reset_request();
                return;
            }
            h.m_reset_control = uint8_t(value & 0x0A);
        }
        return;
    }
    if (!(h.m_address & 0x80000000u))
        return;
    unsigned reg = (h.m_address & 0xFC) + unsigned(offset);
    if (offset + size > 4)
        size = unsigned(4 - offset);
    h.config_write((h.m_address >> 16) & 0xFF, (h.m_address >> 11) & 0x1F, (h.m_address >> 8) & 7, reg, size, uint32_t(value));
}

void PciHost::save(StateWriter& w) const
{
    w.u32(m_address);
    w.u16(m_command);
    w.u8(m_reset_control);
}

void PciHost::load(StateReader& r)
{
    uint32_t address = r.u32();
    uint16_t command = r.u16();
    uint8_t reset_control = r.u8();
    if (!read_to_end(r))
        return;
    if (address & ~kAddressWritable)
        return r.fail("CONFIG_ADDRESS has reserved bits set");
    if (command & ~kCommandWritable)
        return r.fail("host bridge command register has read-only bits set");
    if (reset_control & ~0x0Au)
        return r.fail("reset control register has bits other than SYS_RST/FULL_RST set");
    m_address = address;
    m_command = command;
    m_reset_control = reset_control;
}

} // namespace sevemu::devices
