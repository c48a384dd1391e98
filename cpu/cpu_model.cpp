// sevemu — CPUID as the EPYC models answer it. Per-model values: base/epyc_model.h.
#include "cpu/cpu_model.h"

#include <array>
#include <cstring>

namespace sevemu::cpu {

namespace {

// What the interpreter implements — and therefore all that CPUID may advertise.
namespace f1edx {
constexpr uint32_t DE = 1u << 2, PSE = 1u << 3, TSC = 1u << 4, MSR = 1u << 5, PAE = 1u << 6,
                   CX8 = 1u << 8, APIC = 1u << 9, SEP = 1u << 11, MTRR = 1u << 12, PGE = 1u << 13,
                   CMOV = 1u << 15, PAT = 1u << 16, PSE36 = 1u << 17, CLFSH = 1u << 19, FXSR = 1u << 24,
                   SSE = 1u << 25, SSE2 = 1u << 26;
}
constexpr uint32_t kLeaf1Edx = (1u << 0) /* FPU */ | f1edx::DE | f1edx::PSE | f1edx::TSC | f1edx::MSR | f1edx::PAE | f1edx::CX8
    | f1edx::SEP | f1edx::MTRR | f1edx::PGE | f1edx::CMOV | f1edx::PAT | f1edx::PSE36 | f1edx::CLFSH
    | f1edx::FXSR | f1edx::SSE | f1edx::SSE2;
// SSE3 without MONITOR/MWAIT (bit 3 clear); no PCLMULQDQ (1) or AES (25).
constexpr uint32_t kLeaf1Ecx = (1u << 0) /* SSE3 */ | (1u << 9) /* SSSE3 */ | (1u << 19) /* SSE4.1 */ | (1u << 20) /* SSE4.2 */
    | (1u << 26) /* XSAVE */ | (1u << 13) /* CX16 */ | (1u << 17) /* PCID */ | (1u << 22) /* MOVBE */ | (1u << 23) /* POPCNT */;
constexpr uint32_t kLeaf7Ebx = (1u << 0) /* FSGSBASE */ | (1u << 3) /* BMI1 */ | (1u << 7) /* SMEP */
    | (1u << 8) /* BMI2 */ | (1u << 20) /* SMAP */;
constexpr uint32_t kExt1Ecx = (1u << 0) /* LahfSahf */ | (1u << 2) /* SVM */ | (1u << 5) /* ABM (LZCNT) */
    | (1u << 8) /* PREFETCHW */;
// CPUID 8000_000A (APM vol 3 Appendix E.4.9): SVM revision 1, the ASID count, and the SVM
// features the interpreter implements: nested paging (EDX[0]) and NRIP save (EDX[3]).
constexpr uint32_t kSvmRevision = 1, kSvmAsids = 32768, kSvmFeatures = (1u << 0) | (1u << 3);
constexpr uint32_t kExt1Edx = (kLeaf1Edx & 0x0183F3FF) | (1u << 11) /* SYSCALL */ | (1u << 20) /* NX */
    | (1u << 26) /* Page1GB */ | (1u << 27) /* RDTSCP */ | (1u << 29) /* LM */;

uint32_t signature(CpuModelInfo const& m)
{
    uint32_t base_family = m.family > 0xF ? 0xF : m.family;
    uint32_t ext_family = m.family > 0xF ? m.family - 0xF : 0;
    return (ext_family << 20) | ((m.model >> 4) << 16) | (base_family << 8) | ((m.model & 0xF) << 4) | m.stepping;
}

uint32_t str4(char const* s)
{
    uint32_t v;
    std::memcpy(&v, s, 4);
    return v;
}

} // namespace

CpuidResult cpuid_query(CpuModel model, uint32_t leaf, uint32_t subleaf, bool osxsave, bool apic_enabled)
{
    auto const& m = cpu_model_info(model);
    CpuidResult r;
    switch (leaf) {
    case 0:
        r.eax = 0xD;
        r.ebx = str4("Auth");
        r.edx = str4("enti");
        r.ecx = str4("cAMD");
        break;
    case 1:
        r.eax = signature(m);
        r.ebx = (8u << 8) | (1u << 16); // CLFLUSH line 8 qwords, 1 logical processor, APIC ID 0
        r.ecx = kLeaf1Ecx | (osxsave ? 1u << 27 : 0); // OSXSAVE mirrors CR4.OSXSAVE
        r.edx = kLeaf1Edx | (apic_enabled ? f1edx::APIC : 0);
        break;
    case 0xD: // XSAVE: x87 and SSE only, both in the legacy region (576 = 512 + 64-byte header)
        if (subleaf == 0) {
            r.eax = 3;   // XCR0 bits that may be set
            r.ebx = 576; // size for the components enabled in XCR0 (always inside the legacy region)
            r.ecx = 576; // size for all supported components
        } else if (subleaf == 1) {
            r.eax = 1;   // XSAVEOPT; no XSAVEC, XGETBV with ECX=1, XSAVES
        }
        break;
    case 7:
        if (subleaf == 0)
            r.ebx = kLeaf7Ebx;
        break;
    case 0x80000000:
        r.eax = 0x8000001F;
        r.ebx = str4("Auth");
        r.edx = str4("enti");
        r.ecx = str4("cAMD");
        break;
    case 0x80000001:
        r.eax = signature(m);
        r.ecx = kExt1Ecx;
        r.edx = kExt1Edx | (apic_enabled ? f1edx::APIC : 0);
        break;
    case 0x80000002:
    case 0x80000003:
    case 0x80000004: {
        char buf[48] {};
        std::memcpy(buf, m.brand.data(), std::min<size_t>(m.brand.size(), 47));
        char const* p = buf + (leaf - 0x80000002) * 16;
        r.eax = str4(p);
        r.ebx = str4(p + 4);
        r.ecx = str4(p + 8);
        r.edx = str4(p + 12);
        break;
    }
    case 0x80000005: // L1: 32 KiB 8-way D and I, 64-byte lines (Zen)
        r.eax = 0xFF40FF40;
        r.ebx = 0xFF40FF40;
        r.ecx = 0x20080140;
        r.edx = 0x20080140;
        break;
    case 0x80000006: // L2 512 KiB 8-way, L3 reported by topology leaves (not modelled)
        r.ecx = 0x02006140;
        break;
    case 0x80000007:
        r.edx = 1u << 8; // invariant TSC
        break;
    case 0x80000008:
        r.eax = m.phys_addr_bits | (uint32_t(m.lin_addr_bits) << 8);
        break;
    case 0x8000000A:
        r.eax = kSvmRevision;
        r.ebx = kSvmAsids;
        r.edx = kSvmFeatures;
        break;
    case 0x8000001F:
        // §1.1: EAX features, EBX C-bit/reduction/VMPLs, ECX guests, EDX min SEV-only ASID.
        r.eax = m.mem_encrypt_features;
        r.ebx = m.c_bit | (uint32_t(m.phys_addr_reduction) << 6) | (uint32_t(m.num_vmpl) << 12);
        r.ecx = m.num_encrypted_guests;
        r.edx = m.min_sev_asid;
        break;
    default:
        break; // reserved/unimplemented leaves read as zero (AMD returns 0 beyond the max leaf)
    }
    return r;
}

} // namespace sevemu::cpu
