// sevemu — the ACPI tables sevemu writes into guest RAM before the guest starts, for the Linux
// loaders (emulator/linux_boot.h): RSDP (revision 2) → XSDT → FADT (revision 6) → FACS, DSDT;
// XSDT → MADT. ACPI 6.4 §5.2 (the tables), §20 (AML). Layout in the region (all offsets from
// its base, which the loader puts at the top of RAM below 4 GiB, in an E820 type-3 region):
//
//   +0x000 RSDP (36 bytes)        +0x040 XSDT (36 + 8·2)     +0x0C0 FACS (64, 64-byte aligned)
//   +0x100 FADT (276)             +0x240 DSDT (36 + AML)     +0x300 MADT (44 + entries)
//
// Why this way: for an SEV guest every table must be private, measured memory that Linux maps
// encrypted — E820 type 3 does (arch/x86/mm/ioremap.c __ioremap_check_encrypted), type 2 and
// holes do not, so tables there read as ciphertext (shared/spec/linux-boot.md §3.1). The RSDP
// lies in the same region and the loader hands its address over directly (boot_params
// acpi_rsdp_addr, PVH rsdp_paddr), so the guest never scans 0xE0000–0xFFFFF.
//
// The FADT describes devices/acpi_pm.h (PM1a event block at kBase, control block at
// kBase + kPm1Control, the 24-bit PM timer at kBase + kPmTimer), SCI_INT 9, SMI_CMD 0 (already
// in ACPI mode), the reset register at port 0xCF9 (value 6) and an i8042/legacy-devices boot
// architecture. The DSDT defines only \_S5, whose SLP_TYP is the value devices/acpi_pm.h powers
// off on (0, as QEMU's DSDT; kS5SlpTyp below).
#pragma once

#include "base/result.h"
#include "emulator/multiboot.h" // LoadError

#include <cstdint>
#include <vector>

namespace sevemu::emulator {

// The size of the region the tables occupy (whole pages; the loader reports it as E820 type 3).
inline constexpr uint64_t kAcpiRegionSize = 0x10000;

// SLP_TYP of \_S5: devices/acpi_pm.h powers off on PM1_CNT SLP_EN with SLP_TYP 0 (QEMU's PIIX4 PM
// does too: hw/acpi/core.c acpi_pm1_cnt_write treats sus_typ 0 as soft-off, and QEMU's DSDT
// says \_S5 = {0, 0, 0, 0}, hw/i386/acpi-build.c). acpi_tables.cpp checks at compile time
// that it is devices::AcpiPm::kS5SlpTyp.
inline constexpr uint8_t kS5SlpTyp = 0;

// The I/O ports the FADT names (devices/acpi_pm.h AcpiPm::kBase and its register offsets; the
// reset register is the chipset's 0xCF9 as in QEMU hw/i386/acpi-build.c for Q35, value 6 = a
// hard reset: SYS_RST|RST_CPU, Intel ICH9 datasheet "Reset Control Register").
inline constexpr uint16_t kAcpiPmBase = 0x600;
inline constexpr uint16_t kAcpiPm1aEvt = kAcpiPmBase + 0x00, kAcpiPm1aCnt = kAcpiPmBase + 0x04,
                          kAcpiPmTmr = kAcpiPmBase + 0x08;
inline constexpr uint16_t kAcpiResetPort = 0xCF9;
inline constexpr uint8_t kAcpiResetValue = 0x06;
inline constexpr uint16_t kAcpiSciIrq = 9;

// Interrupt controller addresses (Intel 82093AA IOAPIC datasheet; SDM vol 3 §10.4.1).
inline constexpr uint32_t kLapicAddress = 0xFEE0'0000;
inline constexpr uint32_t kIoApicAddress = 0xFEC0'0000;
inline constexpr uint8_t kIoApicId = 0; // QEMU hw/i386/acpi-common.c ACPI_BUILD_IOAPIC_ID

struct AcpiConfig {
    unsigned cpu_count { 1 }; // MADT: one enabled LAPIC per vCPU, APIC IDs and UIDs 0..N-1
    // true: symmetric I/O — the MADT lists the IOAPIC (ID 0, 0xFEC00000, GSI base 0) with the
    // overrides IRQ0 → GSI2 (conforming) and IRQ9 (SCI) → GSI9 (active high, level), as QEMU's
    // acpi_build_madt. false: no IOAPIC, so Linux runs in virtual-wire mode (8259 through LVT0).
    bool ioapic { true };
    // FADT IAPC_BOOT_ARCH: LEGACY_DEVICES (bit 0) and 8042 (bit 1) when the machine has the
    // i8042 and ISA legacy devices (ACPI 6.4 §5.2.9.3).
    bool legacy_devices { true };
    uint8_t s5_slp_typ { kS5SlpTyp };
};

// Where each table is (guest-physical), and the bytes to write at `base`.
struct AcpiTables {
    uint64_t base {};
    uint64_t rsdp {}, xsdt {}, facs {}, fadt {}, dsdt {}, madt {};
    uint32_t madt_length {};
    std::vector<uint8_t> bytes; // kAcpiRegionSize bytes, written at base
};

// Offsets in the region (see the layout above).
inline constexpr uint64_t kAcpiRsdpOffset = 0x000, kAcpiXsdtOffset = 0x040, kAcpiFacsOffset = 0x0C0,
                          kAcpiFadtOffset = 0x100, kAcpiDsdtOffset = 0x240, kAcpiMadtOffset = 0x300;
inline constexpr uint32_t kFadtLength = 276; // ACPI 6.4 Table 5.9, revision 6 (ends with the hypervisor ID)

// The DSDT's AML body (after the 36-byte header): Name(\_S5, Package(){t, t, 0, 0}).
std::vector<uint8_t> dsdt_s5_aml(uint8_t slp_typ);

// Builds the tables for a region at `base` (page aligned, below 4 GiB: the FADT's 32-bit
// FIRMWARE_CTRL and DSDT fields must hold the addresses). Errors: bad base, no vCPU, more vCPUs
// than xAPIC IDs (type 0 entries hold 8-bit IDs; x2APIC entries are not written), SLP_TYP > 7.
Result<AcpiTables, LoadError> build_acpi_tables(uint64_t base, AcpiConfig const&);

// The ACPI checksum rule (ACPI 6.4 §5.2.5.3 and §5.2.6): the bytes sum to 0 mod 256.
uint8_t acpi_checksum(uint8_t const* data, size_t length);

} // namespace sevemu::emulator
