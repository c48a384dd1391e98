// Test harness for cpu/svm: DRAM through a real memory controller, raw little-endian pokes at
// the spec's offsets, and a VMCB built byte by byte (never through cpu/svm's own structs, so
// that the struct layout is checked independently).
#pragma once

#include "cpu/svm/svm.h"
#include "mmu/memory_controller.h"

#include <catch2/catch.hpp>
#include <memory>
#include <vector>

namespace svmtest {

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::svm;
using mmu::KeyId;

// VMCB offsets typed in from Linux arch/x86/include/asm/svm.h (struct vmcb_control_area, vmcb_save_area).
namespace off {
inline constexpr uint64_t INTERCEPT_CR = 0x000, INTERCEPT_DR = 0x004, INTERCEPT_EXC = 0x008,
    INTERCEPT_W3 = 0x00C, INTERCEPT_W4 = 0x010, INTERCEPT_W5 = 0x014, PAUSE_THRESH = 0x03C,
    PAUSE_COUNT = 0x03E, IOPM_BASE = 0x040, MSRPM_BASE = 0x048, TSC_OFFSET = 0x050, ASID = 0x058,
    TLB_CONTROL = 0x05C, INT_CTL = 0x060, INT_VECTOR = 0x064, INT_STATE = 0x068, EXITCODE = 0x070,
    EXITINFO1 = 0x078, EXITINFO2 = 0x080, EXITINTINFO = 0x088, EXITINTINFO_ERR = 0x08C,
    NESTED_CTL = 0x090, AVIC_BAR = 0x098, GHCB_GPA = 0x0A0, EVENTINJ = 0x0A8, EVENTINJ_ERR = 0x0AC,
    N_CR3 = 0x0B0, VIRT_EXT = 0x0B8, CLEAN = 0x0C0, NRIP = 0x0C8, INSN_LEN = 0x0D0, INSN_BYTES = 0x0D1,
    AVIC_BACKING = 0x0E0, AVIC_LOGICAL = 0x0F0, AVIC_PHYSICAL = 0x0F8, VMSA_PA = 0x108,
    BUS_LOCK = 0x120, ALLOWED_SEV_FEATURES = 0x138, GUEST_SEV_FEATURES = 0x140;
// save area, absolute in the VMCB (0x400 + the vmcb_save_area offset)
inline constexpr uint64_t ES = 0x400, CS = 0x410, SS = 0x420, DS = 0x430, FS = 0x440, GS = 0x450,
    GDTR = 0x460, LDTR = 0x470, IDTR = 0x480, TR = 0x490, VMPL = 0x4CA, CPL = 0x4CB, EFER = 0x4D0,
    CR4 = 0x548, CR3 = 0x550, CR0 = 0x558, DR7 = 0x560, DR6 = 0x568, RFLAGS = 0x570, RIP = 0x578,
    RSP = 0x5D8, RAX = 0x5F8, STAR = 0x600, LSTAR = 0x608, CSTAR = 0x610, SFMASK = 0x618,
    KERNEL_GS_BASE = 0x620, SYSENTER_CS = 0x628, SYSENTER_ESP = 0x630, SYSENTER_EIP = 0x638, CR2 = 0x640,
    G_PAT = 0x668, DBGCTL = 0x670, SPEC_CTRL = 0x6E0;
}
// Segment field offsets inside a 16-byte VMCB segment.
inline constexpr uint64_t kSegSel = 0, kSegAttr = 2, kSegLimit = 4, kSegBase = 8;

inline constexpr uint64_t kVmcbPa = 0x10000, kHsavePa = 0x11000, kIopmPa = 0x20000, kMsrpmPa = 0x24000,
                          kVmsaPa = 0x30000, kVmcb2Pa = 0x12000;

struct Machine {
    std::unique_ptr<mmu::MemoryController> mc;
    explicit Machine(uint64_t dram = 64ull << 20)
    {
        mmu::MemoryConfig cfg;
        cfg.dram_size = dram;
        cfg.cache_pages = 64;
        auto r = mmu::MemoryController::create(cfg);
        REQUIRE(r.has_value());
        mc = std::move(*r);
    }
    void put(uint64_t pa, uint64_t v, unsigned n, KeyId k = KeyId::none())
    {
        uint8_t b[8];
        for (unsigned i = 0; i < n; ++i)
            b[i] = uint8_t(v >> (8 * i));
        REQUIRE(mc->write(Spa(pa), std::span<uint8_t const>(b, n), k).has_value());
    }
    uint64_t get(uint64_t pa, unsigned n, KeyId k = KeyId::none())
    {
        uint8_t b[8] {};
        REQUIRE(mc->read(Spa(pa), std::span<uint8_t>(b, n), k).has_value());
        uint64_t v = 0;
        for (unsigned i = 0; i < n; ++i)
            v |= uint64_t(b[i]) << (8 * i);
        return v;
    }
    void put8(uint64_t pa, uint64_t v) { put(pa, v, 1); }
    void put16(uint64_t pa, uint64_t v) { put(pa, v, 2); }
    void put32(uint64_t pa, uint64_t v) { put(pa, v, 4); }
    void put64(uint64_t pa, uint64_t v) { put(pa, v, 8); }
    uint64_t get32(uint64_t pa) { return get(pa, 4); }
    uint64_t get64(uint64_t pa) { return get(pa, 8); }
    void zero_page(uint64_t pa, KeyId k = KeyId::none())
    {
        std::vector<uint8_t> z(4096, 0);
        REQUIRE(mc->write(Spa(pa), z, k).has_value());
    }
    void activate(uint32_t asid)
    {
        std::vector<uint8_t> key(32);
        for (unsigned i = 0; i < 32; ++i)
            key[i] = uint8_t(asid * 7 + i);
        REQUIRE(mc->key_slot_port().program(asid, key).has_value());
    }
    void seg(uint64_t at, uint16_t sel, uint16_t attr, uint32_t limit, uint64_t base)
    {
        put16(at + kSegSel, sel);
        put16(at + kSegAttr, attr);
        put32(at + kSegLimit, limit);
        put64(at + kSegBase, base);
    }

    // A VMCB that passes every check: a 64-bit guest, VMRUN/HLT/IOIO/MSR/CPUID intercepted, ASID 1.
    void good_vmcb(uint64_t vmcb = kVmcbPa)
    {
        zero_page(vmcb);
        zero_page(kIopmPa);
        zero_page(kIopmPa + 0x1000);
        zero_page(kIopmPa + 0x2000);
        zero_page(kMsrpmPa);
        zero_page(kMsrpmPa + 0x1000);
        put32(vmcb + off::INTERCEPT_W3, (1u << 18) | (1u << 24) | (1u << 27) | (1u << 28)); // CPUID HLT IOIO MSR
        put32(vmcb + off::INTERCEPT_W4, 1u << 0);                                           // VMRUN
        put64(vmcb + off::IOPM_BASE, kIopmPa);
        put64(vmcb + off::MSRPM_BASE, kMsrpmPa);
        put32(vmcb + off::ASID, 1);
        seg(vmcb + off::CS, 0x08, 0x029B, 0xFFFFFFFF, 0); // P S code L, DPL 0
        seg(vmcb + off::SS, 0x10, 0x0093, 0xFFFFFFFF, 0);
        seg(vmcb + off::DS, 0x10, 0x0093, 0xFFFFFFFF, 0);
        seg(vmcb + off::ES, 0x10, 0x0093, 0xFFFFFFFF, 0);
        seg(vmcb + off::GDTR, 0, 0, 0x27, 0x5000);
        seg(vmcb + off::IDTR, 0, 0, 0xFFF, 0x6000);
        put64(vmcb + off::EFER, efer::SVME | efer::LME | efer::LMA | efer::NXE);
        put64(vmcb + off::CR0, cr0::PE | cr0::PG | cr0::ET | cr0::NE);
        put64(vmcb + off::CR3, 0x7000);
        put64(vmcb + off::CR4, cr4::PAE);
        put64(vmcb + off::DR6, 0xFFFF0FF0);
        put64(vmcb + off::DR7, 0x400);
        put64(vmcb + off::RFLAGS, 0x202);
        put64(vmcb + off::RIP, 0x401000);
        put64(vmcb + off::RSP, 0x8000);
        put64(vmcb + off::RAX, 0xAAAA);
        put64(vmcb + off::CR2, 0x1234);
        put64(vmcb + off::G_PAT, 0x0007040600070406ull);
    }

    // good_vmcb() turned into an SEV-ES guest's (ASID `asid`, already activated) with a VMSA at
    // kVmsaPa, written with the guest's key at Linux's sev_es_save_area offsets: a 64-bit guest,
    // every other byte zero.
    void sev_es_vmcb(uint32_t asid)
    {
        put64(kVmcbPa + off::NESTED_CTL, nested_ctl::NP_ENABLE | nested_ctl::SEV_ENABLE | nested_ctl::SEV_ES_ENABLE);
        put64(kVmcbPa + off::VIRT_EXT, virt_ext::LBR_CTL_ENABLE);
        put64(kVmcbPa + off::VMSA_PA, kVmsaPa);
        put32(kVmcbPa + off::ASID, asid);
        KeyId gk = KeyId::slot(asid);
        zero_page(kVmsaPa, gk);
        put(kVmsaPa + 0x010 + 2, 0x029B, 2, gk); // CS.attrib
        put(kVmsaPa + 0x0D0, efer::SVME | efer::LME | efer::LMA, 8, gk);
        put(kVmsaPa + 0x148, cr4::PAE, 8, gk);
        put(kVmsaPa + 0x158, cr0::PE | cr0::PG, 8, gk);
        put(kVmsaPa + 0x168, 0xFFFF0FF0, 8, gk); // DR6
        put(kVmsaPa + 0x160, 0x400, 8, gk);      // DR7
        put(kVmsaPa + 0x170, 2, 8, gk);          // RFLAGS
    }

    Vmcb vmcb(uint64_t at = kVmcbPa)
    {
        auto v = read_vmcb(*mc, Spa(at));
        REQUIRE(v.has_value());
        return *v;
    }
};

// A 64-bit host at CPL 0 with SVM enabled, about to VMRUN the VMCB at kVmcbPa.
inline SvmCpuView host_cpu()
{
    SvmCpuView c;
    auto& r = c.regs;
    r.cr0 = cr0::PE | cr0::PG | cr0::ET | cr0::NE | cr0::WP;
    r.cr4 = cr4::PAE | cr4::OSFXSR;
    r.cr3 = 0x9000;
    r.efer = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME;
    r.seg[CS] = Segment { 0x10, 0x029B, 0xFFFFFFFF, 0 };
    r.seg[SS] = Segment { 0x18, 0x0093, 0xFFFFFFFF, 0 };
    r.seg[DS] = Segment { 0x18, 0x0093, 0xFFFFFFFF, 0 };
    r.seg[ES] = Segment { 0x18, 0x0093, 0xFFFFFFFF, 0 };
    r.gdtr = DescriptorTable { 0xA000, 0x3F };
    r.idtr = DescriptorTable { 0xB000, 0xFFF };
    r.gpr[RAX] = kVmcbPa;
    r.gpr[RSP] = 0xC000;
    r.gpr[RBX] = 0xB0B0;
    r.rip = 0xFFFF800000001000ull;
    r.rflags = 0x2;
    r.msr.vm_hsave_pa = kHsavePa;
    r.msr.pat = 0x0606060606060606ull;
    c.cpl = 0;
    c.gif = false; // KVM runs VMRUN with GIF cleared (CLGI)
    return c;
}

// An EPYC-Milan-like processor with SME/SEV on and SMM locked.
inline HostContext sev_host()
{
    HostContext h;
    h.syscfg = syscfg::MemEncryptionModEn;
    h.hwcr = 1; // SmmLock
    return h;
}

} // namespace svmtest
