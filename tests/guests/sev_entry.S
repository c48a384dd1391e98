/* sevemu test guests — Multiboot v1 entry of the SEV-aware guest (sev.c).
 *
 * The same a.out-kludge header and 32-bit -> long mode path as entry.S (see there), with two
 * differences that matter for SEV:
 *
 *  1. SEV is detected in 32-bit protected mode, before paging, as Linux does it
 *     (arch/x86/mm/mem_encrypt_identity.c sme_enable(), arch/x86/boot/compressed/mem_encrypt.S
 *     get_sev_encryption_bit): CPUID Fn8000_0000 EAX >= 0x8000001F, then CPUID Fn8000_001F
 *     EAX[1] (SEV supported), and only then RDMSR SEV_STATUS (MSR C001_0131): bit 0 = SEV is
 *     active for this guest. The C-bit position is CPUID Fn8000_001F EBX[5:0]
 *     (APM vol 2 §15.34.1 and §7.10.1, vol 3 CPUID Fn8000_001F).
 *  2. The identity map of 0..1 GiB carries the C-bit in every entry when SEV is active
 *     (APM vol 2 §15.34.5: in long mode a guest marks a page private with the C-bit of its
 *     page-table entry), except the 4 KiB page at 0x900000, the page shared with the hypervisor
 *     in a guest that defines sev_shares_page (sev.c; the others are private throughout):
 *     the 2 MiB region 0x800000-0x9FFFFF is mapped through a page table of 4 KiB entries so that
 *     this one page can have C=0. Without SEV there is no C-bit anywhere, same structure.
 *
 * Until paging is on, every data access of an SEV guest is private (APM vol 2 §15.34.5), so the
 * page tables written here are encrypted; page-table walks and instruction fetches of an SEV
 * guest are always private whatever the C-bit says, so CR3 needs no C-bit (Linux's
 * arch/x86/boot/compressed/head_64.S loads a 32-bit CR3 the same way).
 *
 * The guest is built -mgeneral-regs-only, so SSE is left off (unlike entry.S).
 */
#include "boot32.inc"

#define MSR_SEV_STATUS 0xC0010131
#define MSR_EFER 0xC0000080
#define SHARED_PAGE 0x900000
#define SPLIT_REGION 0x800000 /* the 2 MiB region mapped with 4 KiB pages */

    multiboot_header_and_start

    /* --- SEV detection. %esi:%edi becomes the 64-bit C-bit mask (low:high), 0 without SEV. */
    xorl %esi, %esi
    xorl %edi, %edi
    movl $0x80000000, %eax
    cpuid
    cmpl $0x8000001F, %eax
    jb no_sev
    movl $0x8000001F, %eax
    cpuid
    btl $1, %eax                                    /* Fn8000_001F EAX[1]: SEV */
    jnc no_sev
    andl $0x3F, %ebx                                /* EBX[5:0]: C-bit position */
    movl %ebx, sev_cbit
    movl $MSR_SEV_STATUS, %ecx                      /* only now: the MSR exists */
    rdmsr
    movl %eax, sev_status
    movl %edx, sev_status + 4
    btl $0, %eax                                    /* SEV_STATUS[0]: SEV enabled */
    jnc no_sev
    movl $1, sev_active
    movl sev_cbit, %ecx                             /* mask = 1 << cbit, as two dwords */
    movl $1, %esi
    shll %cl, %esi                                  /* shll uses cl mod 32 */
    testb $32, %cl
    jz 2f
    movl %esi, %edi                                 /* cbit >= 32 (47 or 51 on EPYC) */
    xorl %esi, %esi
2:  movl %esi, sev_cbit_mask
    movl %edi, sev_cbit_mask + 4
no_sev:

    /* --- Identity map 0..1 GiB: PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] = i * 2 MiB (PS|RW|P),
     * except PD[4] -> PT, whose 512 4 KiB entries map 0x800000-0x9FFFFF (RW|P). Every entry
     * gets the C-bit mask %esi:%edi, except the PTE of the shared page. */
    movl $pdpt + 0x3, %eax
    orl %esi, %eax
    movl %eax, pml4
    movl %edi, pml4 + 4
    movl $pd + 0x3, %eax
    orl %esi, %eax
    movl %eax, pdpt
    movl %edi, pdpt + 4
    xorl %ecx, %ecx
3:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    orl %esi, %eax
    movl %eax, pd(, %ecx, 8)
    movl %edi, pd + 4(, %ecx, 8)
    incl %ecx
    cmpl $512, %ecx
    jne 3b
    movl $pt + 0x3, %eax                            /* PD[4]: the split 2 MiB region */
    orl %esi, %eax
    movl %eax, pd + 8 * (SPLIT_REGION >> 21)
    xorl %ecx, %ecx
4:  movl %ecx, %eax
    shll $12, %eax
    addl $(SPLIT_REGION + 0x3), %eax
    orl %esi, %eax
    movl %eax, pt(, %ecx, 8)
    movl %edi, pt + 4(, %ecx, 8)
    incl %ecx
    cmpl $512, %ecx
    jne 4b
    /* The shared page: C=0, so that its contents are plaintext in DRAM; only in a guest that
     * shares it (sev.c defines sev_shares_page; the weak reference is 0 in every other guest).
     * A guest that does not tell the hypervisor (KVM_HC_MAP_GPA_RANGE) must not have a shared
     * page: its data there (bench-memory-sev's array spans 0x900000) would be plaintext in DRAM,
     * which SEND_UPDATE_DATA reads as a private page through the guest's key, and the target's
     * DRAM would then hold other bytes for it (the wrong checksum of tests/integration/migrate_sev.py). */
    .weak sev_shares_page
    movl $sev_shares_page, %eax
    testl %eax, %eax
    jz 7f
    movl $(SHARED_PAGE + 0x3), pt + 8 * ((SHARED_PAGE - SPLIT_REGION) >> 12)
    movl $0, pt + 4 + 8 * ((SHARED_PAGE - SPLIT_REGION) >> 12)
7:

    /* --- SSE where CPUID has FXSR and SSE2 (Fn0000_0001 EDX[24], EDX[26]), as entry.S does:
     * CR4.OSFXSR/OSXMMEXCPT here, CR0.MP with EM clear below. */
    movl $1, %eax
    cpuid
    movl %cr4, %eax
    andl $((1 << 24) | (1 << 26)), %edx
    cmpl $((1 << 24) | (1 << 26)), %edx
    jne 6f
    orl $((1 << 9) | (1 << 10)), %eax               /* OSFXSR, OSXMMEXCPT */
6:
    /* --- Long mode (APM vol 2 §14.6.1): CR4.PAE, CR3, EFER.LME, CR0.PG. */
    orl $(1 << 5), %eax                             /* PAE */
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $(1 << 8), %eax                             /* LME */
    wrmsr
    movl %cr0, %eax
    andl $~(1 << 2), %eax                           /* EM off: SSE usable */
    orl $((1 << 31) | (1 << 1) | 1), %eax           /* PG, MP, PE */
    movl %eax, %cr0
    ljmp $0x18, $long_mode

    .code64
long_mode:
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movabsq $stack_top, %rsp
    xorl %ebp, %ebp

    /* --- Ready to migrate, as Linux's kvm_init_platform() (arch/x86/kernel/kvm.c) says it: an
     * SEV guest of a KVM host offering KVM_FEATURE_MIGRATION_CONTROL (CPUID 0x40000001 EAX[17])
     * writes KVM_MIGRATION_READY (bit 0) to MSR_KVM_MIGRATION_CONTROL (0x4b564d08). This guest's
     * only shared page is reported by the core when it shares it (KVM_HC_MAP_GPA_RANGE). */
    cmpl $0, sev_active(%rip)
    je 8f
    movl $0x40000000, %eax
    cpuid
    cmpl $0x4b4d564b, %ebx                          /* "KVMK" of "KVMKVMKVM" */
    jne 8f
    cmpl $0x40000001, %eax
    jb 8f
    movl $0x40000001, %eax
    cpuid
    btl $17, %eax
    jnc 8f
    movl $0x4b564d08, %ecx
    movl $1, %eax
    xorl %edx, %edx
    wrmsr
8:
    call guest_main
    movl %eax, %edi
    call guest_exit
5:  cli
    hlt
    jmp 5b

    boot_gdt

    .section .data
    .align 8
    .globl mb_magic, mb_info, sev_active, sev_cbit, sev_status, sev_cbit_mask
mb_magic: .long 0
mb_info:  .long 0
sev_active: .long 0         /* 1 when SEV_STATUS[0] was set */
sev_cbit: .long 0           /* CPUID Fn8000_001F EBX[5:0], when SEV is supported */
sev_status: .quad 0         /* SEV_STATUS as read, when SEV is supported */
sev_cbit_mask: .quad 0      /* 1 << sev_cbit when SEV is active, else 0 */

    .section .bss
    .align 4096
pml4: .skip 4096
pdpt: .skip 4096
pd:   .skip 4096
pt:   .skip 4096
stack: .skip 65536
stack_top:
    .section .note.GNU-stack, "", @progbits
