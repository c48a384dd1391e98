// sevemu — system resources (APM vol 2 ch 3): the control registers and EFER (§3.1), RFLAGS
// (§3.1.6), the MSRs (§3.2, appendix A), the debug registers (§13.1), XCR0 (XSETBV, vol 3), and the
// TLB/cache control that goes with them (INVLPG, WBINVD/INVD, CLFLUSH); plus the instructions that
// read and write them: MOV CRn/DRn, LMSW/SMSW/CLTS, RDMSR/WRMSR, CPUID, RDTSC(P), RDPMC,
// XGETBV/XSETBV, CLAC/STAC, PUSHF/POPF.
#include "cpu/exec_sys.h"

#include <sys/random.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace sevemu::cpu {

using namespace rflags;
using namespace sys;

void Core::update_mode()
{
    bool pe = cr0 & cr0::PE;
    mode64 = (efer & efer::LMA) && seg[CS].long_mode() && pe;
    mode = mode64 ? 2 : (pe && !(flags & VM) && seg[CS].big()) ? 1 : 0;
    cpl = !pe ? 0 : (flags & VM) ? 3 : seg[SS].dpl();
    bank = cpl == 3 ? 1 : 0;
    for (unsigned s = 0; s < 6; ++s)
        update_seg_cache(s);
    brk = true;
}

void Core::update_paging()
{
    using mmu::PagingMode;
    pctx.mode = !(cr0 & cr0::PG) ? PagingMode::None
        : (efer & efer::LMA)     ? PagingMode::Long4
        : (cr4 & cr4::PAE)       ? PagingMode::Pae
                                 : PagingMode::Legacy32;
    pctx.cr3 = cr3;
    pctx.wp = cr0 & cr0::WP;
    pctx.nxe = efer & efer::NXE;
    pctx.pse = cr4 & cr4::PSE;
    pctx.smep = cr4 & cr4::SMEP;
    pctx.smap = cr4 & cr4::SMAP;
    pctx.pge = cr4 & cr4::PGE;
    pctx.sme = msr.syscfg & syscfg::MemEncryptionModEn;
    pctx.c_bit = info.c_bit;
    pctx.phys_bits = uint8_t(info.phys_addr_bits - (pctx.sme ? info.phys_addr_reduction : 0));
    pctx.resolver = nullptr;
    if (guest && guest->np) {
        // A guest under nested paging: its tables are in guest-physical memory, and its C-bit is
        // the SEV guest's own (the guest has no SYSCFG; SEV makes the bit meaningful, §15.34.5).
        pctx.resolver = guest_tables.get();
        pctx.sme = guest->sev;
        pctx.phys_bits = uint8_t(info.phys_addr_bits - (guest->sev ? info.phys_addr_reduction : 0));
    }
    flush_tlb(true);
}

void Core::flush_tlb(bool include_global)
{
    if (keep_tlb) {
        // A world switch reloads CR3/CR4/EFER without flushing the tagged TLB.
    } else if (include_global)
        tlb->flush_all();
    else
        tlb->flush_non_global();
    flush_jump_cache();
    brk = true;
}

// ---------------------------------------------------------------- control registers

void Core::set_cr0(uint64_t v)
{
    // APM vol 2 §3.1.1: reserved bits 63:32 MBZ; PG without PE and NW without CD are #GP.
    if (v >> 32) raise(GP, 0);
    if ((v & cr0::PG) && !(v & cr0::PE)) raise(GP, 0);
    if ((v & cr0::NW) && !(v & cr0::CD)) raise(GP, 0);
    v |= cr0::ET;
    bool pg_on = (v & cr0::PG) && !(cr0 & cr0::PG);
    bool pg_off = !(v & cr0::PG) && (cr0 & cr0::PG);
    if (pg_on && (efer & efer::LME)) {
        // Activating long mode (§14.6.1): requires CR4.PAE; CS.L must not be set.
        if (!(cr4 & cr4::PAE)) raise(GP, 0);
        efer |= efer::LMA;
    }
    if (pg_off && (cr4 & cr4::PCIDE)) raise(GP, 0); // paging off needs PCIDE off first
    if (pg_off && (efer & efer::LMA)) {
        if (mode64) raise(GP, 0); // leaving long mode is only possible from compatibility mode
        efer &= ~efer::LMA;
    }
    cr0 = v;
    update_mode();
    update_paging();
}

void Core::set_cr3(uint64_t v)
{
    // With CR4.PCIDE (APM vol 2 §5.5.1), CR3[11:0] is the PCID and bit 63 of the source asks not
    // to invalidate that PCID's entries; it is never stored. The TLB holds one PCID's entries at
    // a time, so a CR3 write always drops the non-global ones (more than required, which the
    // architecture allows).
    if (cr4 & cr4::PCIDE)
        v &= ~(1ull << 63);
    if ((efer & efer::LMA) && (v >> 52)) raise(GP, 0);
    cr3 = (efer & efer::LMA) ? v : uint32_t(v);
    pctx.cr3 = cr3;
    flush_tlb(false);
}

void Core::set_cr4(uint64_t v)
{
    // VME and PVI (virtual interrupt flags, APM vol 2 §16.3-16.4) are not implemented and not
    // advertised (CPUID 1 EDX[1] = 0): setting them is #GP(0) (QUIRKS.md).
    constexpr uint64_t kValid = cr4::TSD | cr4::DE | cr4::PSE | cr4::PAE | cr4::MCE
        | cr4::PGE | cr4::PCE | cr4::OSFXSR | cr4::OSXMMEXCPT | cr4::FSGSBASE | cr4::OSXSAVE | cr4::SMEP
        | cr4::SMAP | cr4::PCIDE;
    if (v & ~kValid) raise(GP, 0);
    if ((efer & efer::LMA) && !(v & cr4::PAE)) raise(GP, 0);
    // PCIDE can be set only in long mode with CR3[11:0] = 0 (APM vol 2 §3.1.3, MOV CRn).
    if ((v & cr4::PCIDE) && !(cr4 & cr4::PCIDE) && (!(efer & efer::LMA) || (cr3 & 0xFFF))) raise(GP, 0);
    cr4 = v;
    update_paging();
}

void Core::set_efer(uint64_t v)
{
    constexpr uint64_t kValid = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME;
    if (v & ~kValid) raise(GP, 0);
    // VM_CR.SVMDIS (bit 4) forbids enabling SVM (APM vol 2 §15.30.1).
    if ((v & efer::SVME) && !(efer & efer::SVME) && (msr.vm_cr & (1u << 4))) raise(GP, 0);
    if (((v ^ efer) & efer::LME) && (cr0 & cr0::PG)) raise(GP, 0);
    efer = (v & ~efer::LMA) | (efer & efer::LMA);
    update_mode();
    update_paging();
}

uint64_t Core::writable_flags_mask() const
{
    uint64_t m = CF | PF | AF | ZF | SF | TF | DF | OF | NT | AC | ID | RF;
    if (cpl == 0 || !(cr0 & cr0::PE)) m |= IOPL | IF;
    else if (cpl <= ((flags >> 12) & 3)) m |= IF;
    return m;
}

void Core::set_rflags(uint64_t v, uint64_t m)
{
    materialize();
    uint64_t old = flags;
    flags = ((flags & ~m) | (v & m) | 2) & 0x3F7FD7;
    if ((old ^ flags) & (IF | VM | TF))
        brk = true;
}

// ---------------------------------------------------------------- MSRs

CpuidResult Core::cpuid(uint32_t leaf, uint32_t subleaf) const
{
    CpuidContext ctx = cpuid_ctx;
    ctx.osxsave = cr4 & cr4::OSXSAVE;
    ctx.apic_enabled = msr.apic_base & (1u << 11);
    return cpuid_query(model, leaf, subleaf, ctx);
}

bool Core::random_u64(uint64_t& out)
{
    std::array<uint8_t, 8> b {};
    bool ok;
    if (entropy) {
        ok = entropy->fill(b);
    } else {
        // The kernel's CSPRNG, never blocking: EAGAIN before the host pool is initialised
        // becomes CF=0, which the guest retries (as hardware does when its DRBG is drained).
        ssize_t n;
        do
            n = getrandom(b.data(), b.size(), GRND_NONBLOCK);
        while (n < 0 && errno == EINTR);
        ok = n == ssize_t(b.size());
    }
    if (!ok)
        return false;
    std::memcpy(&out, b.data(), 8);
    return true;
}

bool Core::rdmsr(uint32_t idx, uint64_t& v)
{
    if (SEVEMU_UNLIKELY(msr::is_apic_msr(idx))) {
        auto r = dev().apic_msr_read(idx);
        if (!r)
            return false;
        v = *r;
        return true;
    }
    switch (idx) {
    case msr::TSC: v = read_tsc(); return true;
    case msr::APIC_BASE: v = msr.apic_base; return true;
    case msr::MTRRCAP: v = 0x508; return true; // 8 variable ranges, fixed ranges, WC
    case msr::SYSENTER_CS: v = msr.sysenter_cs; return true;
    case msr::SYSENTER_ESP: v = msr.sysenter_esp; return true;
    case msr::SYSENTER_EIP: v = msr.sysenter_eip; return true;
    case msr::MCG_CAP: case msr::MCG_STATUS: v = 0; return true;
    case msr::PAT: v = msr.pat; return true;
    case msr::MTRR_DEF_TYPE: v = msr.mtrr_def_type; return true;
    case msr::EFER: v = efer; return true;
    case msr::STAR: v = msr.star; return true;
    case msr::LSTAR: v = msr.lstar; return true;
    case msr::CSTAR: v = msr.cstar; return true;
    case msr::SFMASK: v = msr.sfmask; return true;
    case msr::FS_BASE: v = seg[FS].base; return true;
    case msr::GS_BASE: v = seg[GS].base; return true;
    case msr::KERNEL_GS_BASE: v = msr.kernel_gs_base; return true;
    case msr::TSC_AUX: v = msr.tsc_aux; return true;
    case msr::SYSCFG: v = msr.syscfg; return true;
    case msr::HWCR: v = msr.hwcr; return true;
    case msr::VM_CR: v = msr.vm_cr; return true;
    case msr::VM_HSAVE_PA: v = msr.vm_hsave_pa; return true;
    case msr::SEV_STATUS: v = msr.sev_status; return true;
    case msr::SEV_ES_GHCB: v = ghcb_msr; return true;
    // NB_CFG: reads 0 and writes are dropped, as KVM serves it (arch/x86/kvm/x86.c,
    // kvm_get_msr_common/kvm_set_msr_common MSR_AMD64_NB_CFG); Linux reads it in init_amd.
    case msr::NB_CFG: v = 0; return true;
    default: break;
    }
    if (idx >= 0x200 && idx < 0x210) { v = msr.mtrr_var[idx - 0x200]; return true; }
    static constexpr uint32_t kFix[11] = { 0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F };
    for (int k = 0; k < 11; ++k)
        if (kFix[k] == idx) { v = msr.mtrr_fix[k]; return true; }
    return false;
}

bool Core::wrmsr(uint32_t idx, uint64_t v)
{
    uint64_t phys_mask = (1ull << info.phys_addr_bits) - 1;
    if (SEVEMU_UNLIKELY(msr::is_apic_msr(idx)))
        return dev().apic_msr_write(idx, v).value_or(false);
    switch (idx) {
    case msr::TSC: tsc_offset = int64_t(v - icount); return true;
    case msr::APIC_BASE: {
        // BSC (8), EXTD (10, x2APIC mode: only when x2APIC is advertised), AE (11) and the
        // base address below the physical-address width; the rest is reserved (APM vol 2
        // §16.3.1, §16.11.1). The LAPIC, if any, may refuse a transition (x2APIC -> xAPIC).
        uint64_t ok_bits = 0x900ull | (cpuid_ctx.x2apic ? 0x400ull : 0);
        if (v & ~(phys_mask & ~0xFFFull) & ~ok_bits) return false;
        if (auto r = dev().apic_msr_write(idx, v); r && !*r) return false;
        msr.apic_base = v;
        return true;
    }
    case msr::SYSENTER_CS: msr.sysenter_cs = v & 0xFFFF; return true;
    case msr::SYSENTER_ESP: msr.sysenter_esp = v; return true;
    case msr::SYSENTER_EIP: msr.sysenter_eip = v; return true;
    case msr::MCG_STATUS: return v == 0;
    case msr::PAT:
        for (int k = 0; k < 8; ++k) {
            unsigned t = (v >> (8 * k)) & 0xFF;
            if (t == 2 || t == 3 || t > 7) return false;
        }
        msr.pat = v;
        return true;
    case msr::MTRR_DEF_TYPE:
        if (v & ~0xCFFull) return false;
        msr.mtrr_def_type = v;
        return true;
    case msr::EFER: set_efer(v); return true;
    case msr::STAR: msr.star = v; return true;
    case msr::LSTAR: if (!canonical(v)) return false; msr.lstar = v; return true;
    case msr::CSTAR: if (!canonical(v)) return false; msr.cstar = v; return true;
    case msr::SFMASK: msr.sfmask = uint32_t(v); return true;
    case msr::FS_BASE: if (!canonical(v)) return false; seg[FS].base = v; update_seg_cache(FS); return true;
    case msr::GS_BASE: if (!canonical(v)) return false; seg[GS].base = v; update_seg_cache(GS); return true;
    case msr::KERNEL_GS_BASE: if (!canonical(v)) return false; msr.kernel_gs_base = v; return true;
    case msr::TSC_AUX: if (v >> 32) return false; msr.tsc_aux = v; return true;
    case msr::SYSCFG: {
        // Writable: MtrrFixDramEn/ModEn, MtrrVarDramEn, Tom2ForceMemTypeWB, MemEncryptionModEn, SNPEn, VMPLEn.
        constexpr uint64_t kW = 0x3FC0000ull;
        if (v & ~kW) return false;
        msr.syscfg = v;
        update_paging();
        return true;
    }
    case msr::HWCR:
        msr.hwcr = v | (msr.hwcr & 1); // SmmLock (bit 0) stays set once set
        return true;
    case msr::VM_CR:
        if (v & ~0x1Full) return false;
        if (msr.vm_cr & (1u << 3)) // LOCK: LOCK and SVMDIS are read-only
            v = (v & ~0x18ull) | (msr.vm_cr & 0x18);
        msr.vm_cr = v;
        return true;
    case msr::NB_CFG: return true;
    case msr::VM_HSAVE_PA:
        if ((v & 0xFFF) || (v & ~phys_mask)) return false;
        msr.vm_hsave_pa = v;
        return true;
    case msr::SEV_ES_GHCB: ghcb_msr = v; return true;
    default: break;
    }
    if (idx >= 0x200 && idx < 0x210) { msr.mtrr_var[idx - 0x200] = v; return true; }
    static constexpr uint32_t kFix[11] = { 0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F };
    for (int k = 0; k < 11; ++k)
        if (kFix[k] == idx) { msr.mtrr_fix[k] = v; return true; }
    return false;
}

// ---------------------------------------------------------------- instruction handlers

namespace {

template <int S, int M> void pushf(Core& c, Insn const&)
{
    if ((c.flags & VM) && ((c.flags >> 12) & 3) < 3) c.raise(GP, 0);
    c.push<S>(c.get_rflags() & ~(VM | RF));
}
template <int S, int M> void popf(Core& c, Insn const&)
{
    if ((c.flags & VM) && ((c.flags >> 12) & 3) < 3) c.raise(GP, 0);
    uint64_t v = c.pop<S>();
    uint64_t m = c.writable_flags_mask() & ~RF;
    if (S == 2) m &= 0xFFFF;
    c.set_rflags(v, m);
    end(c);
}
template <int S, int M> void clflush(Core& c, Insn const& i);
template <int S, int M> void fence_or_clflush(Core& c, Insn const& i)
{
    if constexpr (M) clflush<S, M>(c, i); // CLFLUSH m8; the register form is SFENCE
}
template <int S, int M> void fwait(Core& c, Insn const&)
{
    if ((c.cr0 & (cr0::MP | cr0::TS)) == (cr0::MP | cr0::TS)) c.raise(NM);
}
template <int S, int M> void smsw(Core& c, Insn const& i)
{
    if constexpr (M) c.wr<uint16_t>(c.lin(i, 2, true), uint16_t(c.cr0)); else c.setr<S>(i.rm, c.cr0);
}
template <int S, int M> void lmsw(Core& c, Insn const& i)
{
    need_cpl0(c);
    uint16_t v = M ? c.rd<uint16_t>(c.lin(i, 2, false)) : c.getr<2>(i.rm);
    uint64_t n = (c.cr0 & ~0xEull) | (v & 0xF) | (c.cr0 & 1); // PE cannot be cleared by LMSW
    c.set_cr0(n);
}
template <int S, int M> void invlpg(Core& c, Insn const& i)
{
    need_cpl0(c);
    uint64_t a = c.mode64 ? c.ea(i) + c.seg_base[i.seg] : uint32_t(c.ea(i) + c.seg_base[i.seg]);
    if (c.intercepted(svm::Intercept::INVLPG)) c.intercept(svm::Intercept::INVLPG, a); // decode assist: the address
    c.tlb->flush_page(a);
    c.flush_jump_cache();
    end(c);
}
template <int S, int M> void rdtscp(Core& c, Insn const& i)
{
    IcountNow now(c, i); // the TSC as of this instruction
    if ((c.cr4 & cr4::TSD) && c.cpl != 0) c.raise(GP, 0);
    if (c.intercepted(svm::Intercept::RDTSCP)) c.intercept(svm::Intercept::RDTSCP);
    uint64_t t = c.read_tsc();
    c.r[RAX] = uint32_t(t);
    c.r[RDX] = t >> 32;
    c.r[RCX] = uint32_t(c.msr.tsc_aux);
}
// XGETBV/XSETBV (APM vol 3; Intel SDM vol 2): XCR0 is the only XCR; it holds x87 (bit 0, always
// set) and SSE (bit 1). AVX and everything above are unsupported, so setting them is #GP(0).
template <int S, int M> void xgetbv(Core& c, Insn const&)
{
    if (!(c.cr4 & cr4::OSXSAVE)) c.raise(UD);
    if (uint32_t(c.r[RCX]) != 0) c.raise(GP, 0);
    c.r[RAX] = uint32_t(c.xcr0);
    c.r[RDX] = uint32_t(c.xcr0 >> 32);
}
template <int S, int M> void xsetbv(Core& c, Insn const&)
{
    if (!(c.cr4 & cr4::OSXSAVE)) c.raise(UD);
    if (c.cpl != 0) c.raise(GP, 0);
    if (c.intercepted(svm::Intercept::XSETBV)) c.intercept(svm::Intercept::XSETBV);
    if (uint32_t(c.r[RCX]) != 0) c.raise(GP, 0);
    uint64_t v = (c.r[RDX] << 32) | uint32_t(c.r[RAX]);
    if (!(v & 1) || (v & ~3ull)) c.raise(GP, 0);
    c.xcr0 = v;
}
template <int SET, int S, int M> void clac_stac(Core& c, Insn const&)
{
    need_cpl0(c); // SMAP is advertised, so CLAC/STAC are never #UD
    if (SET) c.flags |= AC; else c.flags &= ~AC;
}

// ---- control/debug registers, MSRs, CPUID, TSC
template <int TO_CR, int S, int M> void mov_cr(Core& c, Insn const& i)
{
    need_cpl0(c);
    unsigned n = i.reg / 8;
    unsigned g = i.rm / 8;
    // CRn intercepts (§15.9), with the decode assist in EXITINFO1 (bit 63, the GPR).
    if (SEVEMU_UNLIKELY(c.guest.has_value()) && (TO_CR ? c.guest->intercepts_cr_write(n) : c.guest->intercepts_cr_read(n)))
        c.intercept(svm::Intercept((TO_CR ? 16 : 0) + n), svm::mov_cr_exit_info_1(g));
    if (TO_CR) {
        uint64_t v = c.mode64 ? c.r[g] : uint32_t(c.r[g]);
        switch (n) {
        case 0: c.set_cr0(v); break;
        case 2: c.cr2 = v; break;
        case 3: c.set_cr3(v); break;
        case 4: c.set_cr4(v); break;
        case 8: if (v >> 4) c.raise(GP, 0); c.cr8 = v; break;
        default: c.raise(UD);
        }
        end(c);
    } else {
        uint64_t v;
        switch (n) {
        case 0: v = c.cr0; break;
        case 2: v = c.cr2; break;
        case 3: v = c.cr3; break;
        case 4: v = c.cr4; break;
        case 8: v = c.cr8; break;
        default: c.raise(UD);
        }
        c.r[g] = c.mode64 ? v : uint32_t(v);
    }
}
template <int TO_DR, int S, int M> void mov_dr(Core& c, Insn const& i)
{
    need_cpl0(c);
    unsigned n = i.reg / 8;
    unsigned g = i.rm / 8;
    if (SEVEMU_UNLIKELY(c.guest.has_value()) && (TO_DR ? c.guest->intercepts_dr_write(n) : c.guest->intercepts_dr_read(n)))
        c.intercept(svm::Intercept((TO_DR ? 48 : 32) + n), svm::mov_cr_exit_info_1(g));
    if (n >= 8) c.raise(UD);
    if (n == 4 || n == 5) {
        if (c.cr4 & cr4::DE) c.raise(UD);
        n += 2;
    }
    if (TO_DR) {
        uint64_t v = c.mode64 ? c.r[g] : uint32_t(c.r[g]);
        if (n >= 6 && (v >> 32)) c.raise(GP, 0);
        if (n < 4) c.dr[n] = v;
        else if (n == 6) c.dr6 = (v & 0xE00F) | 0xFFFF0FF0;
        else c.dr7 = (v & 0xFFFF2BFF) | 0x400;
    } else {
        c.r[g] = n < 4 ? c.dr[n] : n == 6 ? c.dr6 : c.dr7;
        if (!c.mode64) c.r[g] = uint32_t(c.r[g]);
    }
}
// MSR_PROT and the MSRPM (§15.11): EXITINFO1 = 0 for RDMSR, 1 for WRMSR.
// True when the #VMEXIT was taken (Core::intercept_return): the handler returns at once.
inline bool msr_intercept(Core& c, bool write)
{
    if (SEVEMU_UNLIKELY(c.guest.has_value()) && c.guest->msr_intercepted(c.mc, uint32_t(c.r[RCX]), write)) {
        c.intercept_return(svm::Intercept::MSR_PROT, svm::msr_exit_info_1(write));
        return true;
    }
    return false;
}
template <int S, int M> void rdmsr_op(Core& c, Insn const& i)
{
    IcountNow now(c, i); // the TSC as of this instruction
    need_cpl0(c);
    if (msr_intercept(c, false)) return;
    uint64_t v;
    if (!c.rdmsr(uint32_t(c.r[RCX]), v)) c.raise(GP, 0);
    c.r[RAX] = uint32_t(v);
    c.r[RDX] = v >> 32;
}
template <int S, int M> void wrmsr_op(Core& c, Insn const& i)
{
    IcountNow now(c, i); // the TSC as of this instruction
    need_cpl0(c);
    if (msr_intercept(c, true)) return;
    uint64_t v = (c.r[RDX] << 32) | uint32_t(c.r[RAX]);
    if (!c.wrmsr(uint32_t(c.r[RCX]), v)) c.raise(GP, 0);
    end(c);
}
template <int S, int M> void cpuid_op(Core& c, Insn const&)
{
    if (c.intercepted(svm::Intercept::CPUID)) return c.intercept_return(svm::Intercept::CPUID);
    CpuidResult r = c.cpuid(uint32_t(c.r[RAX]), uint32_t(c.r[RCX]));
    c.r[RAX] = r.eax;
    c.r[RBX] = r.ebx;
    c.r[RCX] = r.ecx;
    c.r[RDX] = r.edx;
}
template <int S, int M> void rdtsc(Core& c, Insn const& i)
{
    IcountNow now(c, i); // the TSC as of this instruction
    if ((c.cr4 & cr4::TSD) && c.cpl != 0) c.raise(GP, 0);
    if (c.intercepted(svm::Intercept::RDTSC)) c.intercept(svm::Intercept::RDTSC);
    uint64_t t = c.read_tsc();
    c.r[RAX] = uint32_t(t);
    c.r[RDX] = t >> 32;
}
template <int S, int M> void rdpmc(Core& c, Insn const&)
{
    if (!(c.cr4 & cr4::PCE) && c.cpl != 0) c.raise(GP, 0);
    if (c.intercepted(svm::Intercept::RDPMC)) c.intercept(svm::Intercept::RDPMC);
    if (uint32_t(c.r[RCX]) > 5) c.raise(GP, 0);
    c.r[RAX] = c.r[RDX] = 0; // counters not modelled: read as 0 (QUIRKS.md)
}
template <int S, int M> void clts(Core& c, Insn const&) { need_cpl0(c); c.cr0 &= ~cr0::TS; }
template <int INVD, int S, int M> void wbinvd(Core& c, Insn const&)
{
    need_cpl0(c);
    if (c.intercepted(INVD ? svm::Intercept::INVD : svm::Intercept::WBINVD))
        c.intercept(INVD ? svm::Intercept::INVD : svm::Intercept::WBINVD);
    // INVD would drop dirty lines; the memory controller writes them back instead (QUIRKS.md).
    c.mc.wbinvd();
    end(c);
}
template <int S, int M> void clflush(Core& c, Insn const& i)
{
    uint64_t a = c.lin(i, 1, false);
    // Without mapping the page: Linux flushes a range line by line (clflush_cache_range), and a
    // mapping would decrypt the page into the plaintext cache again before each line's flush.
    auto x = c.translate(a, false, false, false, false);
    if (c.mc.is_dram(Spa(x.spa))) c.mc.clflush(Spa(x.spa));
    end(c);
}

// RDRAND (0F C7 /6) and RDSEED (0F C7 /7), register forms (APM vol 3 "RDRAND", "RDSEED"):
// 16-, 32- or 64-bit random data; CF=1 when valid, else CF=0 and the destination 0; OF, SF,
// ZF, AF, PF cleared. Both come from the same source (the host's CSPRNG is seeded from
// hardware entropy, which is what RDSEED promises; a seeded EntropySource is deterministic and
// says so). F3 0F C7 /7 is RDPID; F2/F3 on RDRAND and F2 on RDSEED are #UD (Intel SDM vol 2
// RDRAND/RDSEED exceptions; the AMD APM lists no prefixed forms).
template <int SEED, int S, int M> void rdrand(Core& c, Insn const& i)
{
    if (i.pfx & (kPfxRep | kPfxRepne)) c.raise(UD);
    uint64_t v = 0;
    bool ok = c.random_u64(v);
    if (!ok) v = 0;
    c.setr<S>(i.rm, U<S>(v));
    c.materialize();
    c.flags = (c.flags & ~(CF | PF | AF | ZF | SF | OF)) | (ok ? CF : 0);
}
// RDPID (F3 0F C7 /7, register form; APM vol 3 "RDPID"): TSC_AUX into a 64-bit register in
// 64-bit mode (REX.W and 66 ignored), a 32-bit one otherwise. Not interceptable (APM vol 2
// §15.9 lists no RDPID intercept; the VMCB holds the guest's TSC_AUX).
template <int S, int M> void rdpid(Core& c, Insn const& i)
{
    if (c.mode64) c.setr<8>(i.rm, c.msr.tsc_aux); else c.setr<4>(i.rm, uint32_t(c.msr.tsc_aux));
}
template <int S, int M> void rdseed_or_rdpid(Core& c, Insn const& i)
{
    if (i.pfx & kPfxRep) rdpid<S, M>(c, i);
    else rdrand<1, S, M>(c, i);
}

} // namespace

void register_control_ops(OpTables& t)
{
    auto& p = t.map[kMapPrimary];
    auto& x = t.map[kMap0F];
    auto& r01 = t.map[kMap0F01Reg];
    set_op(p[0x9B], "fwait", 0, Imm::None, SEVEMU_H(fwait));
    set_op(p[0x9C], "pushf", kDef64, Imm::None, SEVEMU_H(pushf));
    set_op(p[0x9D], "popf", kDef64, Imm::None, SEVEMU_H(popf));
    set_op(t.grp[14][4], "smsw", 0, Imm::None, SEVEMU_H(smsw));
    set_op(t.grp[14][6], "lmsw", kEnd, Imm::None, SEVEMU_H(lmsw));
    set_op(t.grp[14][7], "invlpg", kMemOnly, Imm::None, SEVEMU_H(invlpg));
    for (int m = 0; m < 256; ++m) {
        unsigned reg = (m >> 3) & 7;
        if ((m >> 6) != 3) continue;
        if (reg == 4) set_op(r01[m], "smsw", 0, Imm::None, SEVEMU_H(smsw));
        if (reg == 6) set_op(r01[m], "lmsw", kEnd, Imm::None, SEVEMU_H(lmsw));
    }
    set_op(r01[0xF9], "rdtscp", 0, Imm::None, SEVEMU_H(rdtscp));
    set_op(r01[0xCA], "clac", 0, Imm::None, SEVEMU_HA(clac_stac, 0));
    set_op(r01[0xCB], "stac", 0, Imm::None, SEVEMU_HA(clac_stac, 1));
    set_op(r01[0xD0], "xgetbv", 0, Imm::None, SEVEMU_H(xgetbv));
    set_op(r01[0xD1], "xsetbv", 0, Imm::None, SEVEMU_H(xsetbv));
    set_op(x[0x06], "clts", 0, Imm::None, SEVEMU_H(clts));
    set_op(x[0x08], "invd", 0, Imm::None, SEVEMU_HA(wbinvd, 1));
    set_op(x[0x09], "wbinvd", 0, Imm::None, SEVEMU_HA(wbinvd, 0));
    set_op(x[0x20], "mov cr", kModrm | kForce64, Imm::None, SEVEMU_HA(mov_cr, 0));
    set_op(x[0x22], "mov cr", kModrm | kForce64 | kEnd, Imm::None, SEVEMU_HA(mov_cr, 1));
    set_op(x[0x21], "mov dr", kModrm | kForce64, Imm::None, SEVEMU_HA(mov_dr, 0));
    set_op(x[0x23], "mov dr", kModrm | kForce64, Imm::None, SEVEMU_HA(mov_dr, 1));
    set_op(x[0x30], "wrmsr", kEnd, Imm::None, SEVEMU_H(wrmsr_op));
    set_op(x[0x31], "rdtsc", 0, Imm::None, SEVEMU_H(rdtsc));
    set_op(x[0x32], "rdmsr", 0, Imm::None, SEVEMU_H(rdmsr_op));
    set_op(x[0x33], "rdpmc", 0, Imm::None, SEVEMU_H(rdpmc));
    set_op(x[0xA2], "cpuid", 0, Imm::None, SEVEMU_H(cpuid_op));
    // 0F C7 group 9 (exec_int.cpp registers /1 CMPXCHG8B/16B): /6 RDRAND, /7 RDSEED or RDPID.
    set_op(t.grp[11][6], "rdrand", kRegOnly, Imm::None, SEVEMU_HA(rdrand, 0));
    set_op(t.grp[11][7], "rdseed/rdpid", kRegOnly, Imm::None, SEVEMU_H(rdseed_or_rdpid));
    // 0F AE group 15: SFENCE and CLFLUSH (F3 0F AE, the FS/GS-base group, is exec_segments.cpp's)
    x[0xAE] = { "grp15", 0, Imm::None, 15 };
    // /5 and /6 (LFENCE/XRSTOR, MFENCE/XSAVEOPT) are registered by exec_sse.cpp with XSAVE.
    set_op(t.grp[15][7], "sfence/clflush", 0, Imm::None, SEVEMU_H(fence_or_clflush));
}

} // namespace sevemu::cpu
