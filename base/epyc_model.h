// sevemu — the AMD EPYC CPU models sevemu emulates, and every per-model fact, in one table.
//
// The CPU (CPUID), the AMD-SP firmware (API version, ASID ranges, C-bit, root-key size), the
// PSP's PCI function, the emulator and the tools all read a model's facts from here, so that what
// CPUID 8000_001F says and what the firmware enforces cannot drift apart (ARCHITECTURE.md rule 1:
// the firmware does not know the CPU, it is told — by the Machine, from this table). It lives in
// base/ because firmware/ must not depend on cpu/ (layering in the top-level meson.build).
//
// Sources, cited per column below:
//   [PPR]   AMD Processor Programming Reference for family 17h model 01h (Naples), 17h model 31h
//           (Rome), 19h model 01h (Milan), 19h model 11h (Genoa): CPUID Fn0000_0001,
//           Fn8000_0008, Fn8000_001F.
//   [APM]   AMD64 Architecture Programmer's Manual vol 3, Appendix E.4.17 (Fn8000_001F fields).
//   [ROOTS] the AMD root certificates themselves: AMD-ASPFW amd_cert.h and virtee/sev
//           src/certs/sev/ca/cert/v1.rs (ARK/ASK layout, modulus_size 2048 bits for Naples,
//           4096 for Rome and later), checked against AMD's published chains.
//   [FW]    AMD-ASPFW (the open SEV firmware), README "1.55.25"; Linux drivers/crypto/ccp/
//           sev-dev.c (the API version it logs at probe: "SEV API:0.17 build:48" etc.).
//   [KDS]   AMD Key Distribution Service product names (kdsintf.amd.com/vcek/v1/{Naples,...}),
//           as virtee/sev src/certs/sev/builtin/{naples,rome,milan,genoa}/ names them.
//   [QEMU]  QEMU v7.2.0 target/i386/cpu.c builtin_x86_defs: -cpu EPYC, EPYC-Rome, EPYC-Milan;
//           EPYC-Genoa is QEMU 9.1's name.
//   [LXSP]  Linux drivers/crypto/ccp/sp-pci.c sp_pci_table: PCI device per PSP generation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace sevemu {

// In generation order (comparisons such as "Milan or later" rely on it).
enum class CpuModel : uint8_t { Naples, Rome, Milan, Genoa };

struct CpuModelInfo {
    std::string_view name;         // [QEMU] -cpu name, case-sensitive
    std::string_view brand;        // CPUID 8000_0002..4 (QEMU's model_id for the named model)
    std::string_view amd_product;  // [KDS] product name of the AMD root keys (ARK/ASK)
    uint8_t family, model, stepping; // [PPR] CPUID Fn0000_0001 EAX, decoded
    uint8_t phys_addr_bits;        // [PPR] 8000_0008 EAX[7:0]
    uint8_t lin_addr_bits;         // [PPR] 8000_0008 EAX[15:8]
    uint8_t c_bit;                 // [APM] 8000_001F EBX[5:0]
    uint8_t phys_addr_reduction;   // [APM] 8000_001F EBX[11:6]
    uint8_t num_vmpl;              // [APM] 8000_001F EBX[15:12]
    uint32_t mem_encrypt_features; // [APM] 8000_001F EAX
    uint32_t num_encrypted_guests; // [APM] 8000_001F ECX (= the firmware's highest ASID)
    uint32_t min_sev_asid;         // [APM] 8000_001F EDX: ASIDs below it are for SEV-ES guests
    uint8_t api_major, api_minor, build; // [FW] SEV firmware API version and build
    uint16_t amd_root_bits;        // [ROOTS] RSA size of the ARK/ASK
    uint16_t psp_pci_device;       // [LXSP] the AMD-SP's PCI device ID (vendor 1022)
};

// Bits of CPUID 8000_001F EAX ([APM] E.4.17).
namespace mem_encrypt {
inline constexpr uint32_t SME = 1u << 0, SEV = 1u << 1, PageFlushMsr = 1u << 2, SEV_ES = 1u << 3, SEV_SNP = 1u << 4,
                          VMPL = 1u << 5, HwEnfCacheCoh = 1u << 10, Host64Bit = 1u << 11;
}

namespace detail {

// Milan host EAX as read on an EPYC 7713P ([PPR] Fn8000_001F, [APM] E.4.17): SME, SEV, PageFlushMsr, SEV-ES, SNP,
// VMPL, SecureTsc, HwEnfCacheCoh, 64BitHost, RestrictedInjection, AlternateInjection, DebugSwap,
// PreventHostIbs, VTE, VmsaRegProt.
inline constexpr uint32_t kMilanMemEnc = 0x0101FD3F;

// 8000_001F EDX (min_sev_asid) is a BIOS setting on real parts (Milan hosts have been seen with
// 0x80, others with 1); sevemu fixes it at 100 wherever SEV-ES exists, which leaves ASIDs of
// both kinds, and at 1 on Naples, which has no SEV-ES (every ASID is an SEV ASID).
//
// Firmware API versions ([FW], Linux sev-dev.c probe log): Naples' last public SEV firmware
// reports 0.17 build 48; Rome 0.24 build 14; Milan 1.51 build 3; Genoa 1.55 build 25.
// Genoa: 52 physical bits, 57 linear bits, reduction 6, 1006 guests ([PPR] Fn8000_0008,
// Fn8000_001F); its EAX feature word is taken as Milan's (QUIRKS.md).
inline constexpr std::array<CpuModelInfo, 4> kCpuModels { {
    { .name = "EPYC", .brand = "AMD EPYC Processor", .amd_product = "Naples",
        .family = 0x17, .model = 0x01, .stepping = 2, .phys_addr_bits = 48, .lin_addr_bits = 48,
        .c_bit = 47, .phys_addr_reduction = 5, .num_vmpl = 0, .mem_encrypt_features = 0x00000007,
        .num_encrypted_guests = 15, .min_sev_asid = 1,
        .api_major = 0, .api_minor = 17, .build = 48, .amd_root_bits = 2048, .psp_pci_device = 0x1456 },
    { .name = "EPYC-Rome", .brand = "AMD EPYC-Rome Processor", .amd_product = "Rome",
        .family = 0x17, .model = 0x31, .stepping = 0, .phys_addr_bits = 48, .lin_addr_bits = 48,
        .c_bit = 47, .phys_addr_reduction = 5, .num_vmpl = 0, .mem_encrypt_features = 0x0000000F,
        .num_encrypted_guests = 509, .min_sev_asid = 100,
        .api_major = 0, .api_minor = 24, .build = 14, .amd_root_bits = 4096, .psp_pci_device = 0x1486 },
    { .name = "EPYC-Milan", .brand = "AMD EPYC-Milan Processor", .amd_product = "Milan",
        .family = 0x19, .model = 0x01, .stepping = 1, .phys_addr_bits = 48, .lin_addr_bits = 48,
        .c_bit = 51, .phys_addr_reduction = 5, .num_vmpl = 4, .mem_encrypt_features = kMilanMemEnc,
        .num_encrypted_guests = 509, .min_sev_asid = 100,
        .api_major = 1, .api_minor = 51, .build = 3, .amd_root_bits = 4096, .psp_pci_device = 0x1486 },
    { .name = "EPYC-Genoa", .brand = "AMD EPYC-Genoa Processor", .amd_product = "Genoa",
        .family = 0x19, .model = 0x11, .stepping = 1, .phys_addr_bits = 52, .lin_addr_bits = 57,
        .c_bit = 51, .phys_addr_reduction = 6, .num_vmpl = 4, .mem_encrypt_features = kMilanMemEnc,
        .num_encrypted_guests = 1006, .min_sev_asid = 100,
        .api_major = 1, .api_minor = 55, .build = 25, .amd_root_bits = 4096, .psp_pci_device = 0x14CA },
} };

// The facts that must agree with one another, checked for every row at compile time.
constexpr bool consistent(CpuModelInfo const& m)
{
    bool es = m.mem_encrypt_features & mem_encrypt::SEV_ES;
    bool snp = m.mem_encrypt_features & mem_encrypt::SEV_SNP;
    return (m.mem_encrypt_features & mem_encrypt::SEV)
        // ASID ranges: SEV-ES ASIDs are 1..min_sev_asid-1, SEV ASIDs min_sev_asid..max; a part
        // without SEV-ES has none of the first kind, one with it has at least one of each.
        && m.min_sev_asid >= 1 && m.min_sev_asid <= m.num_encrypted_guests && (es == (m.min_sev_asid > 1))
        // The C-bit lies above the addresses usable with SME on ([APM] vol 2 §7.10.1).
        && m.c_bit >= m.phys_addr_bits - m.phys_addr_reduction && m.c_bit < 64
        // SEV-SNP firmware speaks API 1.x (SNP ABI 56860 §2); VMPLs exist only with SNP.
        && (!snp || m.api_major >= 1) && (snp || m.num_vmpl == 0)
        && (m.amd_root_bits == 2048 || m.amd_root_bits == 4096) && !m.name.empty() && !m.amd_product.empty();
}

constexpr bool all_consistent()
{
    for (auto const& m : kCpuModels)
        if (!consistent(m))
            return false;
    return true;
}
static_assert(all_consistent(), "a CPU model's facts contradict one another");
static_assert(kCpuModels.size() == size_t(CpuModel::Genoa) + 1, "one row per CpuModel, in enum order");

} // namespace detail

inline constexpr std::array<CpuModel, 4> kAllCpuModels { CpuModel::Naples, CpuModel::Rome, CpuModel::Milan,
    CpuModel::Genoa };

constexpr CpuModelInfo const& cpu_model_info(CpuModel m) { return detail::kCpuModels[size_t(m)]; }
constexpr std::string_view cpu_model_name(CpuModel m) { return cpu_model_info(m).name; }

// By QEMU's -cpu name ("EPYC", "EPYC-Rome", "EPYC-Milan", "EPYC-Genoa"), case-sensitive.
constexpr std::optional<CpuModel> cpu_model_from_name(std::string_view n)
{
    for (CpuModel m : kAllCpuModels)
        if (cpu_model_info(m).name == n)
            return m;
    return std::nullopt;
}

// Names are distinct, so a name finds its own row back.
static_assert([] {
    for (CpuModel m : kAllCpuModels)
        if (cpu_model_from_name(cpu_model_name(m)) != m)
            return false;
    return true;
}());

constexpr bool cpu_model_has_sev_es(CpuModel m) { return cpu_model_info(m).mem_encrypt_features & mem_encrypt::SEV_ES; }
constexpr bool cpu_model_has_sev_snp(CpuModel m) { return cpu_model_info(m).mem_encrypt_features & mem_encrypt::SEV_SNP; }

} // namespace sevemu
