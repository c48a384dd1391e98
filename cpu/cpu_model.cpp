// sevemu — CPUID as the EPYC models answer it. Per-model values: base/epyc_model.h.
#include "cpu/cpu_model.h"

#include <algorithm>
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
constexpr uint32_t kHtt = 1u << 28; // 1 EDX: EBX[23:16] (logical processor count) is valid
// SSE3 without MONITOR/MWAIT (bit 3 clear); no PCLMULQDQ (1) or AES (25). RDRAND (30) is
// mandatory for SEV guests (Linux sev_verify_cbit.S) and implemented on the host's entropy
// (exec_control.cpp). x2APIC (21) and TSC-deadline (24) are not set: the CPU has no local APIC
// of its own; the Machine's LAPIC plugs in through IoHandler::apic_msr_* and sets them with
// Cpu::set_apic_caps once it implements them. MONITOR (3), AVX (28), F16C (29), FMA (12),
// AES (25), PCLMULQDQ (1): not implemented.
constexpr uint32_t kLeaf1Ecx = (1u << 0) /* SSE3 */ | (1u << 9) /* SSSE3 */ | (1u << 19) /* SSE4.1 */ | (1u << 20) /* SSE4.2 */
    | (1u << 26) /* XSAVE */ | (1u << 13) /* CX16 */ | (1u << 17) /* PCID */ | (1u << 22) /* MOVBE */ | (1u << 23) /* POPCNT */
    | (1u << 30) /* RDRAND */;
constexpr uint32_t kX2apic = 1u << 21, kTscDeadline = 1u << 24, kHypervisor = 1u << 31;
// Leaf 7.0 EBX: ERMS (9) is a performance hint for REP MOVSB/STOSB, which exist in full; RDSEED
// (18) is implemented beside RDRAND. CLFLUSHOPT/CLWB (23/24), INVPCID (10), AVX2 (5), ADX (19),
// SHA (29): not implemented.
constexpr uint32_t kLeaf7Ebx = (1u << 0) /* FSGSBASE */ | (1u << 3) /* BMI1 */ | (1u << 7) /* SMEP */
    | (1u << 8) /* BMI2 */ | (1u << 9) /* ERMS */ | (1u << 18) /* RDSEED */ | (1u << 20) /* SMAP */;
// Leaf 7.0 ECX: RDPID (22) reads TSC_AUX (implemented). UMIP (2), PKU (3), LA57 (16): not.
constexpr uint32_t kLeaf7Ecx = 1u << 22; // RDPID
// 8000_0001 ECX: CmpLegacy (1) is set with more than one vCPU, as QEMU does (cpu_x86_cpuid:
// the logical processors of leaf 1 are cores, not SMT threads). No TOPOEXT (22): leaf
// 8000_001E stays zero, and Linux takes the topology from leaves 1, 0xB and 8000_0008.
constexpr uint32_t kCmpLegacy = 1u << 1;
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

// Bits needed to number n things (0 for n <= 1): the APIC ID field widths of leaf 0xB and
// 8000_0008 ECX[15:12].
uint32_t id_bits(uint32_t n)
{
    uint32_t b = 0;
    while ((1u << b) < n && b < 31)
        ++b;
    return b;
}

} // namespace

CpuidResult cpuid_query(CpuModel model, uint32_t leaf, uint32_t subleaf, CpuidContext const& ctx)
{
    auto const& m = cpu_model_info(model);
    bool const guest = ctx.view == CpuidView::Guest;
    uint32_t const n = ctx.vcpu_count ? ctx.vcpu_count : 1;
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
        // CLFLUSH line 8 qwords; the logical processor count (valid with HTT) and the initial
        // APIC ID, which the MADT and the LAPIC ID register must repeat (Linux 6.1 apic.c
        // "Boot APIC ID in local APIC unexpected"). QEMU sets HTT only for more than one.
        r.ebx = (8u << 8) | (std::min<uint32_t>(n, 255) << 16) | ((ctx.apic_id & 0xFF) << 24);
        r.ecx = kLeaf1Ecx | (ctx.osxsave ? 1u << 27 : 0) | (guest ? kHypervisor : 0)
            | (ctx.x2apic ? kX2apic : 0) | (ctx.tsc_deadline ? kTscDeadline : 0);
        r.edx = kLeaf1Edx | (ctx.apic_enabled ? f1edx::APIC : 0) | (n > 1 ? kHtt : 0);
        break;
    case 0xB: // Extended topology (AMD PPR Fn0000_000B; Intel SDM vol 2A CPUID): one thread per core,
              // n cores in the package; EDX is the 32-bit (x2)APIC ID at every level.
        r.edx = ctx.apic_id;
        r.ecx = subleaf & 0xFF;
        if (subleaf == 0) {
            r.eax = 0;          // no SMT: the core level starts at bit 0
            r.ebx = 1;
            r.ecx |= 1u << 8;   // level type 1: SMT
        } else if (subleaf == 1) {
            r.eax = id_bits(n); // APIC ID bits of the package-local part
            r.ebx = n;
            r.ecx |= 2u << 8;   // level type 2: core
        }
        break;
    case 0xD: // XSAVE: x87 and SSE only, both in the legacy region (576 = 512 + 64-byte header)
        if (subleaf == 0) {
            r.eax = 3;   // XCR0 bits that may be set
            r.ebx = 576; // size for the components enabled in XCR0 (always inside the legacy region)
            r.ecx = 576; // size for all supported components
        } else if (subleaf == 1) {
            r.eax = 1;   // XSAVEOPT; no XSAVEC, XGETBV with ECX=1, XSAVES (so no IA32_XSS)
        }
        break;
    case 7:
        if (subleaf == 0) {
            r.ebx = kLeaf7Ebx;
            r.ecx = kLeaf7Ecx;
        }
        break;
    case kKvmCpuidSignature: // reserved for hypervisors: zero on the bare part
        if (guest) {
            r.eax = kKvmCpuidFeatures;
            r.ebx = str4("KVMK");
            r.ecx = str4("VMKV");
            r.edx = str4("M\0\0\0");
        }
        break;
    case kKvmCpuidFeatures:
        if (guest)
            r.eax = kKvmFeatures; // EDX (hints) 0: no KVM_HINTS_REALTIME
        break;
    case 0x80000000:
        r.eax = 0x8000001F;
        r.ebx = str4("Auth");
        r.edx = str4("enti");
        r.ecx = str4("cAMD");
        break;
    case 0x80000001:
        r.eax = signature(m);
        r.ecx = kExt1Ecx | (n > 1 ? kCmpLegacy : 0);
        r.edx = kExt1Edx | (ctx.apic_enabled ? f1edx::APIC : 0);
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
        // Invariant TSC (APM vol 3 E.4.6): the TSC counts the machine's one virtual clock at a
        // constant rate whatever the guest does. Nothing else (no power management features).
        r.edx = 1u << 8;
        break;
    case 0x80000008:
        // EAX address sizes; EBX no speculation-control features (no IBPB/IBRS/STIBP/SSBD MSRs);
        // ECX: NC = cores - 1 and ApicIdCoreIdSize (APM vol 3 E.4.7), as QEMU fills them.
        r.eax = m.phys_addr_bits | (uint32_t(m.lin_addr_bits) << 8);
        r.ecx = (std::min<uint32_t>(n, 256) - 1) | (n > 1 ? id_bits(n) << 12 : 0);
        break;
    case 0x8000000A:
        r.eax = kSvmRevision;
        r.ebx = kSvmAsids;
        r.edx = kSvmFeatures;
        break;
    case 0x8000001F:
        // §1.1: EAX features, EBX C-bit/reduction/VMPLs, ECX guests, EDX min SEV-only ASID.
        // A plain VM sees none of it (KVM reports the leaf only to SEV guests; QEMU's
        // cpu_x86_cpuid zeroes it without a sev-guest object), and then reads SEV_STATUS = 0.
        if (guest)
            break;
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
