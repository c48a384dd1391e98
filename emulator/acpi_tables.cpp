#include "emulator/acpi_tables.h"
#include "devices/acpi_pm.h"

#include <cstring>
#include <fmt/format.h>
#include <string_view>

namespace sevemu::emulator {

static_assert(kS5SlpTyp == devices::AcpiPm::kS5SlpTyp, "the DSDT's \\_S5 must be what the ACPI PM device powers off on");

namespace {

Unexpected<LoadError> fail(std::string msg) { return Unexpected<LoadError>(LoadError { std::move(msg) }); }

struct Writer {
    std::vector<uint8_t>& b;
    void u8(size_t off, uint8_t v) { b[off] = v; }
    void u16(size_t off, uint16_t v) { for (int i = 0; i < 2; ++i) b[off + i] = uint8_t(v >> (8 * i)); }
    void u32(size_t off, uint32_t v) { for (int i = 0; i < 4; ++i) b[off + i] = uint8_t(v >> (8 * i)); }
    void u64(size_t off, uint64_t v) { for (int i = 0; i < 8; ++i) b[off + i] = uint8_t(v >> (8 * i)); }
    void str(size_t off, std::string_view s) { std::memcpy(b.data() + off, s.data(), s.size()); }
    // Generic Address Structure (ACPI 6.4 §5.2.3.2): space ID, bit width, bit offset, access
    // size, 64-bit address. Space 1 = System I/O.
    void gas_io(size_t off, uint8_t bit_width, uint8_t access_size, uint64_t port)
    {
        u8(off, 1);
        u8(off + 1, bit_width);
        u8(off + 2, 0);
        u8(off + 3, access_size);
        u64(off + 4, port);
    }
};

constexpr std::string_view kOemId = "SEVEMU";       // 6 bytes
constexpr std::string_view kOemTableId = "SEVEMUPC"; // 8 bytes
constexpr std::string_view kCreatorId = "SEVE";      // 4 bytes

// The common description header (ACPI 6.4 §5.2.6, Table 5.4): signature, length, revision,
// checksum (filled by finish_table), OEM ID, OEM table ID, OEM revision, creator ID/revision.
void table_header(Writer& w, size_t off, std::string_view sig, uint32_t length, uint8_t revision)
{
    w.str(off, sig);
    w.u32(off + 4, length);
    w.u8(off + 8, revision);
    w.str(off + 10, kOemId);
    w.str(off + 16, kOemTableId);
    w.u32(off + 24, 1);
    w.str(off + 28, kCreatorId);
    w.u32(off + 32, 1);
}

void finish_table(std::vector<uint8_t>& b, size_t off, uint32_t length)
{
    b[off + 9] = 0;
    b[off + 9] = uint8_t(-acpi_checksum(b.data() + off, length));
}

} // namespace

uint8_t acpi_checksum(uint8_t const* data, size_t length)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < length; ++i)
        sum = uint8_t(sum + data[i]);
    return sum;
}

std::vector<uint8_t> dsdt_s5_aml(uint8_t slp_typ)
{
    // Name(\_S5, Package(){slp_typ, slp_typ, 0, 0}), AML as ACPI 6.4 §20.2 encodes it:
    //   0x08            NameOp                       (§20.2.5.1 DefName := NameOp NameString DataRefObject)
    //   0x5C            RootChar '\'                 (§20.2.2 NameString := RootChar NamePath)
    //   '_' 'S' '5' '_' NameSeg, 4 chars, '_'-padded (§20.2.2 NameSeg)
    //   0x12            PackageOp                    (§20.2.5.4 DefPackage := PackageOp PkgLength
    //                                                  NumElements PackageElementList)
    //   n               PkgLength, one byte (< 64)   (§20.2.4: bits 7-6 = 0 → length in bits 5-0;
    //                                                  it counts itself, NumElements and the list)
    //   0x04            NumElements                  (ByteData)
    //   elements        each ComputationalData:      (§20.2.3) 0 → ZeroOp 0x00, 1 → OneOp 0x01,
    //                                                  else BytePrefix 0x0A followed by the byte
    auto integer = [](uint8_t v) -> std::vector<uint8_t> {
        if (v == 0)
            return { 0x00 };
        if (v == 1)
            return { 0x01 };
        return { 0x0A, v };
    };
    std::vector<uint8_t> elems;
    for (uint8_t v : { slp_typ, slp_typ, uint8_t(0), uint8_t(0) }) {
        auto e = integer(v);
        elems.insert(elems.end(), e.begin(), e.end());
    }
    std::vector<uint8_t> aml { 0x08, 0x5C, '_', 'S', '5', '_', 0x12 };
    aml.push_back(uint8_t(1 + 1 + elems.size())); // PkgLength + NumElements + elements (< 64)
    aml.push_back(0x04);
    aml.insert(aml.end(), elems.begin(), elems.end());
    return aml;
}

Result<AcpiTables, LoadError> build_acpi_tables(uint64_t base, AcpiConfig const& cfg)
{
    if (base & 0xFFF)
        return fail(fmt::format("ACPI tables: base {:#x} is not page aligned", base));
    if (base + kAcpiRegionSize > 0x1'0000'0000ull)
        return fail(fmt::format("ACPI tables: base {:#x} is not below 4 GiB (the FADT holds 32-bit table addresses)", base));
    if (cfg.cpu_count == 0)
        return fail("ACPI tables: the MADT needs at least one vCPU");
    if (cfg.cpu_count > 255)
        return fail(fmt::format("ACPI tables: {} vCPUs need x2APIC MADT entries (APIC IDs above 254), which sevemu does not write",
            cfg.cpu_count));
    if (cfg.s5_slp_typ > 7)
        return fail(fmt::format("ACPI tables: SLP_TYP {} does not fit PM1_CNT bits 12:10", cfg.s5_slp_typ));

    AcpiTables t;
    t.base = base;
    t.bytes.assign(kAcpiRegionSize, 0);
    t.rsdp = base + kAcpiRsdpOffset;
    t.xsdt = base + kAcpiXsdtOffset;
    t.facs = base + kAcpiFacsOffset;
    t.fadt = base + kAcpiFadtOffset;
    t.dsdt = base + kAcpiDsdtOffset;
    t.madt = base + kAcpiMadtOffset;
    auto& b = t.bytes;
    Writer w { b };

    // DSDT (ACPI 6.4 §5.2.11.1): header, revision 2 (64-bit AML integers), then the AML.
    auto aml = dsdt_s5_aml(cfg.s5_slp_typ);
    uint32_t dsdt_len = uint32_t(36 + aml.size());
    table_header(w, kAcpiDsdtOffset, "DSDT", dsdt_len, 2);
    std::memcpy(b.data() + kAcpiDsdtOffset + 36, aml.data(), aml.size());
    finish_table(b, kAcpiDsdtOffset, dsdt_len);

    // FACS (ACPI 6.4 §5.2.10, Table 5.14): 64 bytes, 64-byte aligned, no checksum. Hardware
    // signature 0, waking vectors 0, global lock 0, flags 0, version 2.
    w.str(kAcpiFacsOffset, "FACS");
    w.u32(kAcpiFacsOffset + 4, 64);
    w.u8(kAcpiFacsOffset + 32, 2);

    // FADT (ACPI 6.4 §5.2.9, Table 5.9), revision 6, minor version 0, 276 bytes.
    size_t f = kAcpiFadtOffset;
    table_header(w, f, "FACP", kFadtLength, 6);
    w.u32(f + 36, uint32_t(t.facs));  // FIRMWARE_CTRL
    w.u32(f + 40, uint32_t(t.dsdt));  // DSDT
    w.u8(f + 45, 0);                  // Preferred_PM_Profile: unspecified
    w.u16(f + 46, kAcpiSciIrq);       // SCI_INT: never 0 (linux-boot.md §3.1: IRQ 0 is the timer)
    w.u32(f + 48, 0);                 // SMI_CMD 0: no SMM, the system is always in ACPI mode
    w.u32(f + 56, kAcpiPm1aEvt);      // PM1a_EVT_BLK
    w.u32(f + 64, kAcpiPm1aCnt);      // PM1a_CNT_BLK
    w.u32(f + 76, kAcpiPmTmr);        // PM_TMR_BLK
    w.u8(f + 88, 4);                  // PM1_EVT_LEN: status + enable, 2 bytes each
    w.u8(f + 89, 2);                  // PM1_CNT_LEN
    w.u8(f + 91, 4);                  // PM_TMR_LEN
    w.u16(f + 96, 0x0FFF);            // P_LVL2_LAT > 100: C2 unsupported (QEMU hw/i386/acpi-build.c)
    w.u16(f + 98, 0x0FFF);            // P_LVL3_LAT > 1000: C3 unsupported
    // IAPC_BOOT_ARCH (§5.2.9.3): bit 0 LEGACY_DEVICES, bit 1 8042; bit 5 (no CMOS RTC) clear.
    w.u16(f + 109, cfg.legacy_devices ? 0x0003 : 0x0000);
    // Flags (§5.2.9, Table 5.10): WBINVD (0), PROC_C1 (2), SLP_BUTTON (5: no sleep button; the
    // power button is the fixed-feature one of PM1), FIX_RTC (6: no RTC wake status in PM1),
    // RESET_REG_SUP (10). TMR_VAL_EXT (8) stays clear: the PM timer is 24 bits wide.
    w.u32(f + 112, (1u << 0) | (1u << 2) | (1u << 5) | (1u << 6) | (1u << 10));
    w.gas_io(f + 116, 8, 1, kAcpiResetPort); // RESET_REG: one byte at 0xCF9
    w.u8(f + 128, kAcpiResetValue);          // RESET_VALUE
    w.u8(f + 131, 0);                        // FADT Minor Version
    w.u64(f + 132, t.facs);                  // X_FIRMWARE_CTRL
    w.u64(f + 140, t.dsdt);                  // X_DSDT
    // The extended blocks agree with the 32-bit ones (ACPICA tbfadt.c warns on a mismatch and
    // checks that bit widths are 8 × the *_LEN fields). Access size 0 (legacy), as QEMU.
    w.gas_io(f + 148, 32, 0, kAcpiPm1aEvt);  // X_PM1a_EVT_BLK
    w.gas_io(f + 172, 16, 0, kAcpiPm1aCnt);  // X_PM1a_CNT_BLK
    w.gas_io(f + 208, 32, 0, kAcpiPmTmr);    // X_PM_TMR_BLK
    // SLEEP_CONTROL_REG, SLEEP_STATUS_REG (244, 256): zero — not a hardware-reduced platform.
    // Hypervisor Vendor Identity (268): zero.
    finish_table(b, f, kFadtLength);

    // MADT (ACPI 6.4 §5.2.12), revision 1 as QEMU's (hw/i386/acpi-common.c acpi_build_madt).
    size_t m = kAcpiMadtOffset;
    size_t at = m + 44;
    w.u32(m + 36, kLapicAddress); // Local Interrupt Controller Address
    w.u32(m + 40, 1);             // Flags: PCAT_COMPAT (dual 8259s present)
    for (unsigned cpu = 0; cpu < cfg.cpu_count; ++cpu) {
        // Processor Local APIC (§5.2.12.2): type 0, length 8, UID, APIC ID, flags (bit 0 enabled).
        w.u8(at, 0);
        w.u8(at + 1, 8);
        w.u8(at + 2, uint8_t(cpu));
        w.u8(at + 3, uint8_t(cpu));
        w.u32(at + 4, 1);
        at += 8;
    }
    if (cfg.ioapic) {
        // I/O APIC (§5.2.12.3): type 1, length 12, ID, reserved, address, GSI base.
        w.u8(at, 1);
        w.u8(at + 1, 12);
        w.u8(at + 2, kIoApicId);
        w.u32(at + 4, kIoApicAddress);
        w.u32(at + 8, 0);
        at += 12;
        // Interrupt Source Overrides (§5.2.12.5): type 2, length 10, bus 0 (ISA), source IRQ,
        // GSI, MPS INTI flags (bits 1:0 polarity, 3:2 trigger). IRQ0 → GSI2 conforming; the
        // SCI active high (01), level (11) = 0x000D, as QEMU's acpi_build_madt.
        struct Iso { uint8_t irq; uint32_t gsi; uint16_t flags; };
        for (Iso iso : { Iso { 0, 2, 0x0000 }, Iso { uint8_t(kAcpiSciIrq), kAcpiSciIrq, 0x000D } }) {
            w.u8(at, 2);
            w.u8(at + 1, 10);
            w.u8(at + 2, 0);
            w.u8(at + 3, iso.irq);
            w.u32(at + 4, iso.gsi);
            w.u16(at + 8, iso.flags);
            at += 10;
        }
    }
    // Local APIC NMI (§5.2.12.7): type 4, length 6, UID 0xFF (all processors), flags 0
    // (conforming), LINT1 — the NMI pin, as QEMU.
    w.u8(at, 4);
    w.u8(at + 1, 6);
    w.u8(at + 2, 0xFF);
    w.u16(at + 3, 0);
    w.u8(at + 5, 1);
    at += 6;
    t.madt_length = uint32_t(at - m);
    table_header(w, m, "APIC", t.madt_length, 1);
    finish_table(b, m, t.madt_length);

    // XSDT (§5.2.8): header, revision 1, then 64-bit pointers: FADT, MADT.
    uint32_t xsdt_len = 36 + 8 * 2;
    table_header(w, kAcpiXsdtOffset, "XSDT", xsdt_len, 1);
    w.u64(kAcpiXsdtOffset + 36, t.fadt);
    w.u64(kAcpiXsdtOffset + 44, t.madt);
    finish_table(b, kAcpiXsdtOffset, xsdt_len);

    // RSDP (§5.2.5.3, Table 5.3), revision 2: "RSD PTR ", checksum of bytes 0-19, OEM ID,
    // revision, RsdtAddress 0 (no RSDT: revision 2 points at the XSDT), length 36, XsdtAddress,
    // extended checksum of all 36 bytes, 3 reserved bytes.
    size_t r = kAcpiRsdpOffset;
    w.str(r, "RSD PTR ");
    w.str(r + 9, kOemId);
    w.u8(r + 15, 2);
    w.u32(r + 16, 0);
    w.u32(r + 20, 36);
    w.u64(r + 24, t.xsdt);
    b[r + 8] = uint8_t(-acpi_checksum(b.data() + r, 20));
    b[r + 32] = uint8_t(-acpi_checksum(b.data() + r, 36));
    return t;
}

} // namespace sevemu::emulator
