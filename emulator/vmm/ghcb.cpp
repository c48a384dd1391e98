// The initial VMSA of an SEV-ES vCPU, as Linux arch/x86/kvm/svm/sev.c sev_es_sync_vmsa() builds it.
#include "emulator/vmm/ghcb.h"

#include <cstring>

namespace sevemu::vmm {

using namespace cpu::svm;

Vmsa sev_es_sync_vmsa(VmcbSaveArea const& save, GuestGprs const& gprs, VmsaSyncExtras const& extras)
{
    Vmsa v {};
    // "Copy the traditional VMSA as it has been built so far ... to be the initial SEV-ES state":
    // the first 0x2E8 bytes have the vmcb_save_area layout (asserted in vmcb.h), which carries
    // RAX, RSP and RIP too (KVM copies them from vcpu->arch.regs, which hold the same values).
    static_assert(sizeof(VmcbSaveArea) <= sizeof(Vmsa));
    std::memcpy(&v, &save, sizeof save);
    // The other GPRs (index = x86 register number).
    v.rcx = gprs[1];
    v.rdx = gprs[2];
    v.rbx = gprs[3];
    v.rbp = gprs[5];
    v.rsi = gprs[6];
    v.rdi = gprs[7];
    v.r8 = gprs[8];
    v.r9 = gprs[9];
    v.r10 = gprs[10];
    v.r11 = gprs[11];
    v.r12 = gprs[12];
    v.r13 = gprs[13];
    v.r14 = gprs[14];
    v.r15 = gprs[15];
    // "Sync some non-GPR registers before encrypting".
    v.xcr0 = extras.xcr0;
    v.pkru = extras.pkru;
    v.xss = extras.xss;
    v.dr6 = save.dr6;
    v.sev_features = extras.sev_features;
    if (extras.fpu_state) {
        // The FPU of a vCPU as KVM creates it (fpstate_init: FCW 0x37F, MXCSR 0x1F80 =
        // MXCSR_DEFAULT, abridged tag word 0 = all empty, every register zero).
        v.x87_fcw = 0x37F;
        v.mxcsr = 0x1F80;
    }
    return v;
}

} // namespace sevemu::vmm
