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
 *     page-table entry), except the pages it shares with the hypervisor: the 4 KiB page at
 *     0x900000 in a guest that defines sev_shares_page (sev.c; the others are private there),
 *     and the SEV-ES guest's GHCB page (0x8000). The 2 MiB regions 0-0x1FFFFF and
 *     0x800000-0x9FFFFF are mapped through page tables of 4 KiB entries so that these single
 *     pages can have C=0. Without SEV there is no C-bit anywhere, same structure.
 *     A shared page must lie outside the image (its bytes would be plaintext in DRAM, and the
 *     code or data there would be the hypervisor's to change): link.ld refuses an image that
 *     covers the GHCB page or, in a guest that shares it, the page at 0x900000. The GHCB page
 *     sits in conventional memory below the Multiboot information page (0x9000), which the
 *     Multiboot memory map gives the guest and which no image (linked at 1 MiB, link.ld) and no
 *     part of the loader's buffer (above the image, README "What a -kernel launch measures")
 *     reaches.
 *  3. Before it says it is ready to migrate (below, KVM_MIGRATION_READY), an SEV-ES guest tells
 *     the hypervisor that its GHCB page is shared (KVM_HC_MAP_GPA_RANGE, as Linux reports its
 *     decrypted memory in kvm_init_platform(), arch/x86/kernel/kvm.c), so that a live migration
 *     sends it in the clear; sev.c reports the page at 0x900000 itself when it shares it.
 *
 * Until paging is on, every data access of an SEV guest is private (APM vol 2 §15.34.5), so the
 * page tables written here are encrypted; page-table walks and instruction fetches of an SEV
 * guest are always private whatever the C-bit says, so CR3 needs no C-bit (Linux's
 * arch/x86/boot/compressed/head_64.S loads a 32-bit CR3 the same way).
 *
 * The guest is built -mgeneral-regs-only, so SSE is left off (unlike entry.S).
 *
 * Assembled with -DSEV_ES_GUEST it is the entry of the SEV-ES guest (guest-sev-es.elf), whose
 * register state is encrypted and whose intercepted instructions (CPUID, IN/OUT, RDMSR/WRMSR,
 * VMMCALL) raise #VC (vector 29) instead of exiting (APM vol 2 §15.35.5):
 *  - in 32-bit mode, before the first CPUID, an IDT whose #VC gate answers CPUID through the
 *    GHCB MSR protocol (GHCB spec 56421 §2.3.1: CPUID request 0x004 / response 0x005, one
 *    register per VMGEXIT), as Linux's startup32_vc_handler does
 *    (arch/x86/boot/compressed/head_64.S, sev_es_check_cpuid in mem_encrypt.S); any other #VC
 *    asks the hypervisor to terminate the guest (MSR protocol 0x100);
 *  - the GHCB page (SEV_ES_GHCB_PAGE, 0x8000) mapped with C=0 like the shared page;
 *  - in long mode, first thing, a 64-bit IDT whose #VC gate calls sev_es_vc_handler()
 *    (sev_es.c), which serves every #VC through the GHCB page, and sev_es_init() which
 *    negotiates the protocol and registers that page; after guest_main(), sev_es_report().
 * SEV_STATUS (C001_0131) is never intercepted (APM vol 2 §15.34.10), nor are EFER and the
 * control registers of an SEV-ES guest (KVM's sev_es_init_vmcb clears those intercepts; their
 * writes trap after the fact), so only CPUID needs the early handler.
 */
#include "boot32.inc"

#define MSR_SEV_STATUS 0xC0010131
#define MSR_EFER 0xC0000080
#define SHARED_PAGE 0x900000      /* sev.h SEV_SHARED_GPA */
#define SPLIT_REGION 0x800000     /* the 2 MiB region of the shared page, mapped with 4 KiB pages */
#define SPLIT_REGION_LOW 0x0      /* the 2 MiB region of the GHCB page, mapped with 4 KiB pages */
#define SEV_ES_GHCB_PAGE 0x8000   /* SEV-ES: the GHCB, shared (sev.h SEV_ES_GHCB_GPA) */
#define MSR_SEV_ES_GHCB 0xC0010130
#define VC_VECTOR 29
#define KVM_HC_MAP_GPA_RANGE 12   /* sev.h */
#define MSR_KVM_MIGRATION_CONTROL 0x4b564d08

#ifdef SEV_ES_GUEST
    /* For link.ld's check that no image covers the GHCB page. */
    .globl sev_es_ghcb_page
    .set sev_es_ghcb_page, SEV_ES_GHCB_PAGE
#endif

    multiboot_header_and_start

#ifdef SEV_ES_GUEST
    /* --- The 32-bit IDT: only the #VC gate (32-bit interrupt gate, selector 0x08). Built here
     * because a gate splits its handler's address in two 16-bit halves. */
    movl $vc32, %eax
    movw %ax, idt32 + 8 * VC_VECTOR
    movw $0x08, idt32 + 8 * VC_VECTOR + 2
    movw $0x8E00, idt32 + 8 * VC_VECTOR + 4
    shrl $16, %eax
    movw %ax, idt32 + 8 * VC_VECTOR + 6
    lidt idt32_desc
#endif

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

/* PD entry for the 2 MiB region at `base` -> page table `table`, whose 512 entries map it in
 * 4 KiB pages (RW|P), each with the C-bit mask %esi:%edi. Clobbers %eax, %ecx. */
.macro split_2m table, base
    movl $\table + 0x3, %eax
    orl %esi, %eax
    movl %eax, pd + 8 * (\base >> 21)
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $12, %eax
    addl $(\base + 0x3), %eax
    orl %esi, %eax
    movl %eax, \table(, %ecx, 8)
    movl %edi, \table + 4(, %ecx, 8)
    incl %ecx
    cmpl $512, %ecx
    jne 1b
.endm

    /* --- Identity map 0..1 GiB: PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] = i * 2 MiB (PS|RW|P),
     * except PD[0] -> PT_LOW and PD[4] -> PT, whose 512 4 KiB entries map 0-0x1FFFFF and
     * 0x800000-0x9FFFFF (RW|P). Every entry gets the C-bit mask %esi:%edi, except the PTEs of
     * the shared pages. */
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
    split_2m pt, SPLIT_REGION                       /* PD[4]: the split 2 MiB region */
    split_2m pt_low, SPLIT_REGION_LOW               /* PD[0]: the low 2 MiB */
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
#ifdef SEV_ES_GUEST
    /* The GHCB: C=0, the hypervisor reads and writes it (GHCB spec 56421 §2.2). */
    movl $(SEV_ES_GHCB_PAGE + 0x3), pt_low + 8 * ((SEV_ES_GHCB_PAGE - SPLIT_REGION_LOW) >> 12)
    movl $0, pt_low + 4 + 8 * ((SEV_ES_GHCB_PAGE - SPLIT_REGION_LOW) >> 12)
#endif

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
#ifdef SEV_ES_GUEST
    /* --- The 64-bit IDT: the #VC gate (64-bit interrupt gate, selector 0x18), then the GHCB. */
    movabsq $vc64, %rax
    movw %ax, idt64 + 16 * VC_VECTOR
    movw $0x18, idt64 + 16 * VC_VECTOR + 2
    movw $0x8E00, idt64 + 16 * VC_VECTOR + 4
    shrq $16, %rax
    movw %ax, idt64 + 16 * VC_VECTOR + 6
    shrq $16, %rax
    movl %eax, idt64 + 16 * VC_VECTOR + 8
    lidt idt64_desc
    call sev_es_init
#endif

    /* --- Ready to migrate, as Linux's kvm_init_platform() (arch/x86/kernel/kvm.c) says it: an
     * SEV guest of a KVM host offering KVM_FEATURE_MIGRATION_CONTROL (CPUID 0x40000001 EAX[17])
     * reports its decrypted memory with KVM_HC_MAP_GPA_RANGE (Linux: .bss..decrypted, through
     * early_set_mem_enc_dec_hypercall), then writes KVM_MIGRATION_READY (bit 0) to
     * MSR_KVM_MIGRATION_CONTROL (0x4b564d08). Here the SEV-ES guest's GHCB page is reported
     * (the page at 0x900000 is reported by sev.c when it shares it). The hypercall is VMMCALL
     * with RAX = 12, RBX = GPA, RCX = pages, RDX = attributes (4 KiB pages, decrypted: 0), the
     * result in RAX (Linux kvm_sev_hypercall3); an SEV-ES guest's VMMCALL raises #VC, whose
     * handler asks through the GHCB (NAE event 0x81, sev_es.c). If the hypervisor refuses, the
     * guest does not say it is ready: a migration would then send the GHCB page as a private
     * one and the target's guest would find other bytes there. */
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
#ifdef SEV_ES_GUEST
    movl $KVM_HC_MAP_GPA_RANGE, %eax
    movl $SEV_ES_GHCB_PAGE, %ebx
    movl $1, %ecx
    xorl %edx, %edx
    .byte 0x0f, 0x01, 0xd9                          /* VMMCALL */
    testq %rax, %rax
    jnz 8f
#endif
    movl $MSR_KVM_MIGRATION_CONTROL, %ecx
    movl $1, %eax
    xorl %edx, %edx
    wrmsr
8:
    call guest_main
#ifdef SEV_ES_GUEST
    movl %eax, %edi
    call sev_es_report                              /* guest_main's status, or 1 */
#endif
    movl %eax, %edi
    call guest_exit
5:  cli
    hlt
    jmp 5b

#ifdef SEV_ES_GUEST
    /* --- #VC in 32-bit mode (no GHCB yet): CPUID through the GHCB MSR protocol. The stack holds
     * the error code (the exit code: 0x72 for CPUID), EIP, CS, EFLAGS; EAX = leaf (the MSR
     * protocol has no subleaf: 0 is implied, enough for the leaves this entry reads). */
    .code32
vc32:
    cmpl $0x72, (%esp)
    jne vc32_terminate
    pushl %esi
    pushl %edi
    movl %eax, %esi                                 /* the leaf */
    xorl %edi, %edi                                 /* 0 EAX, 1 EBX, 2 ECX, 3 EDX */
1:  movl %edi, %eax
    shll $30, %eax
    orl $0x004, %eax                                /* CPUID request, register in [31:30] */
    movl %esi, %edx                                 /* the function in [63:32] */
    movl $MSR_SEV_ES_GHCB, %ecx
    wrmsr
    .byte 0xf3, 0x0f, 0x01, 0xd9                    /* VMGEXIT (rep vmmcall) */
    movl $MSR_SEV_ES_GHCB, %ecx
    rdmsr
    andl $0xFFF, %eax
    cmpl $0x005, %eax                               /* CPUID response */
    jne vc32_terminate
    movl %edx, vc32_cpuid(, %edi, 4)
    incl %edi
    cmpl $4, %edi
    jne 1b
    incl vc32_count
    movl vc32_cpuid, %eax
    movl vc32_cpuid + 4, %ebx
    movl vc32_cpuid + 8, %ecx
    movl vc32_cpuid + 12, %edx
    popl %edi
    popl %esi
    addl $4, %esp                                   /* the error code */
    addl $2, (%esp)                                 /* past CPUID (0F A2) */
    iret
    /* Anything else: the termination request (MSR protocol 0x100, reason set 0, code 0:
     * general), then stop here for good. */
vc32_terminate:
    movl $MSR_SEV_ES_GHCB, %ecx
    movl $0x100, %eax
    xorl %edx, %edx
    wrmsr
    .byte 0xf3, 0x0f, 0x01, 0xd9
2:  hlt
    jmp 2b

    /* --- #VC in long mode: the GPRs and the error code go to sev_es_vc_handler(struct
     * sev_es_vc_frame*) (sev_es.c), which may change them and RIP; then back past the error code. */
    .code64
vc64:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    movq %rsp, %rbx
    andq $-16, %rsp                                 /* the ABI's stack alignment for the call */
    call sev_es_vc_handler
    movq %rbx, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $8, %rsp
    iretq
#endif

    boot_gdt

#ifdef SEV_ES_GUEST
    .section .rodata
    .align 8
idt32_desc:
    .word 8 * 32 - 1
    .long idt32
    .align 8
idt64_desc:
    .word 16 * 32 - 1
    .quad idt64
#endif

    .section .data
    .align 8
    .globl mb_magic, mb_info, sev_active, sev_cbit, sev_status, sev_cbit_mask
mb_magic: .long 0
mb_info:  .long 0
sev_active: .long 0         /* 1 when SEV_STATUS[0] was set */
sev_cbit: .long 0           /* CPUID Fn8000_001F EBX[5:0], when SEV is supported */
sev_status: .quad 0         /* SEV_STATUS as read, when SEV is supported */
sev_cbit_mask: .quad 0      /* 1 << sev_cbit when SEV is active, else 0 */
#ifdef SEV_ES_GUEST
    .globl vc32_count
vc32_count: .long 0         /* CPUIDs served by the 32-bit #VC handler */
vc32_cpuid: .long 0, 0, 0, 0
#endif

    .section .bss
    .align 4096
pml4: .skip 4096
pdpt: .skip 4096
pd:   .skip 4096
pt:   .skip 4096
pt_low: .skip 4096
stack: .skip 65536
stack_top:
#ifdef SEV_ES_GUEST
    .align 16
idt32: .skip 8 * 32
idt64: .skip 16 * 32
#endif
    .section .note.GNU-stack, "", @progbits
