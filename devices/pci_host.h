// sevemu — the PCI host bridge: configuration mechanism #1 and the reset control register.
//
// PCI Local Bus Specification 3.0 §3.2.2.3.2 (configuration mechanism #1): CONFIG_ADDRESS is
// the dword at 0xCF8 — enable bit 31, bus 23:16, device 15:11, function 10:8, register 7:2
// (bits 30:24 and 1:0 read 0); CONFIG_DATA is 0xCFC-0xCFF, byte/word/dword accesses at
// register + (port - 0xCFC). Only dword accesses at 0xCF8 reach CONFIG_ADDRESS; narrower ones
// read all ones (so Linux's mechanism #2 probe, pci_check_type2, finds nothing) and are dropped,
// except the byte at 0xCF9.
//
// Bus 0 holds one function, the host bridge at 00:00.0: vendor 0x1022 (AMD), device 0x1480
// "Starship/Matisse Root Complex" (pci.ids, https://pci-ids.ucw.cz/read/PC/1022/1480 — the
// root complex of the EPYC Rome and Milan processors sevemu models), revision 0, class 0x060000
// (host bridge), header type 0, no BARs and no capabilities. The command register's memory and
// bus-master bits are writable; everything else reads as listed and ignores writes. Every other
// bus/device/function reads all ones (no device: a master abort), writes are dropped. With the
// enable bit clear, CONFIG_DATA reads all ones.
//
// Port 0xCF9 (a byte) is the chipset's reset control register (Intel ICH9 RST_CNT, QEMU
// hw/isa/lpc_ich9.c; PIIX3's RCR is the same port): writing it with bit 2 (RST_CPU) set asks
// for a system reset; bits 1 (SYS_RST) and 3 (FULL_RST) are kept. This is the ACPI reset
// register the FADT should name — SystemIO 0xCF9, 8 bits, value 0x0F, as QEMU's q35 FADT does
// (tests/data/acpi/q35/FACP) — see kResetRegisterPort/kResetValue.
//
// Snapshot section "pci-host", version 1: u32 CONFIG_ADDRESS, u16 host bridge command
// register, u8 reset control register.
#pragma once

#include "devices/bus.h"
#include "devices/device.h"

#include <cstdint>
#include <functional>
#include <string_view>

namespace sevemu::devices {

class PciHost final : public Device {
public:
    static constexpr uint32_t kStateVersion = 1;
    static constexpr uint64_t kAddressPort = 0xCF8, kDataPort = 0xCFC, kPortLength = 4;
    static constexpr uint64_t kResetRegisterPort = 0xCF9;
    static constexpr uint8_t kResetValue = 0x0F;
    static constexpr uint16_t kVendorId = 0x1022, kDeviceId = 0x1480;
    static constexpr uint32_t kClassCode = 0x060000;

    using ResetRequest = std::function<void()>;
    explicit PciHost(ResetRequest reset_request);

    // The machine maps address_port() at 0xCF8 and data_port() at 0xCFC, 4 ports each.
    BusDevice& address_port() { return m_address_port; }
    BusDevice& data_port() { return m_data_port; }

    // A configuration read/write of `size` bytes at `reg` of bus/device/function.
    uint32_t config_read(unsigned bus, unsigned device, unsigned function, unsigned reg, unsigned size) const;
    void config_write(unsigned bus, unsigned device, unsigned function, unsigned reg, unsigned size, uint32_t value);

    uint32_t config_address() const { return m_address; }

    std::string_view name() const override { return "pci-host"; }
    void reset() override;
    uint32_t state_version() const override { return kStateVersion; }
    void save(StateWriter&) const override;
    void load(StateReader&) override;

private:
    class Port final : public BusDevice {
    public:
        Port(PciHost& host, bool data) : m_host(host), m_data(data) {}
        std::string_view name() const override { return m_data ? "pci-data" : "pci-address"; }
        uint64_t read(uint64_t offset, unsigned size) override;
        void write(uint64_t offset, unsigned size, uint64_t value) override;

    private:
        PciHost& m_host;
        bool m_data;
    };
    uint8_t bridge_byte(unsigned reg) const;

    ResetRequest m_reset_request;
    uint32_t m_address {};
    uint16_t m_command {};
    uint8_t m_reset_control {};
    Port m_address_port { *this, false };
    Port m_data_port { *this, true };
};

} // namespace sevemu::devices
