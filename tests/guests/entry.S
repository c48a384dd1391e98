/* sevemu test guests — Multiboot v1 entry: 32-bit protected mode to long mode, then C.
 *
 * The header uses the a.out kludge (Multiboot spec 0.6.96 §3.1.1, flags bit 16), so a loader
 * takes the load addresses from here and never needs to parse the ELF64 file around it (QEMU
 * refuses ELF64 Multiboot kernels without the kludge). On entry (spec §3.2): EAX = 0x2BADB002,
 * EBX = Multiboot info, 32-bit flat CS/DS, paging off, interrupts off; no stack promised.
 * We load our own GDT, build identity page tables for the first 1 GiB (2 MiB pages), enable
 * PAE + SSE when CPUID has it (CR4.PAE/OSFXSR/OSXMMEXCPT, CR0.MP, ~CR0.EM), set EFER.LME, enable paging and
 * far-jump into a 64-bit code segment (APM vol 2 §14.6.1 "Activating Long Mode").
 */
#include "boot32.inc"

    multiboot_header_and_start

    /* Identity map 0..1 GiB: PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] = i * 2 MiB, PS|RW|P. */
    movl $pdpt, %eax
    orl $0x3, %eax
    movl %eax, pml4
    movl $pd, %eax
    orl $0x3, %eax
    movl %eax, pdpt
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, pd(, %ecx, 8)
    movl $0, pd + 4(, %ecx, 8)
    incl %ecx
    cmpl $512, %ecx
    jne 2b

    /* SSE only where CPUID says FXSR and SSE2 exist (CPUID Fn0000_0001 EDX[24], EDX[26]); the
     * "-nosse" guest variants run without it. */
    movl $1, %eax
    cpuid
    movl %cr4, %eax
    orl $(1 << 5), %eax                             /* PAE */
    andl $((1 << 24) | (1 << 26)), %edx
    cmpl $((1 << 24) | (1 << 26)), %edx
    jne 3f
    orl $((1 << 9) | (1 << 10)), %eax               /* OSFXSR, OSXMMEXCPT */
3:  movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx                          /* EFER */
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
    call guest_main
    movl %eax, %edi
    call guest_exit
4:  cli
    hlt
    jmp 4b

    boot_gdt

    .section .data
    .align 4
    .globl mb_magic, mb_info
mb_magic: .long 0
mb_info:  .long 0

    .section .bss
    .align 4096
pml4: .skip 4096
pdpt: .skip 4096
pd:   .skip 4096
stack: .skip 65536
stack_top:
    .section .note.GNU-stack, "", @progbits
