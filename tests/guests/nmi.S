/* sevemu test guests — NMI delivery (APM vol 2 §8.2.3, §16.5): a 32-bit ELF Multiboot kernel
 * that enables its local APIC and sends itself an NMI IPI (ICR: delivery mode NMI, physical
 * destination = its own APIC ID) with RFLAGS.IF = 0. The handler (IDT vector 2) counts; on the
 * first NMI it sends a second one and spins: the second must stay pending until the handler's
 * IRET, then be taken at once. Prints the counts on COM1 and leaves through isa-debug-exit at
 * 0xf4 (0x10: pass; 0x11: an unexpected exception). Known answer: nmi.expected (QEMU TCG). */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS (1 << 1)
#define APIC 0xFEE00000
#define APIC_ID (APIC + 0x20)
#define APIC_SVR (APIC + 0xF0)
#define APIC_ICR_LO (APIC + 0x300)
#define APIC_ICR_HI (APIC + 0x310)
#define ICR_NMI 0x4400 /* delivery mode 100b (NMI), level assert, physical, no shorthand */

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .text
    .code32
    .globl _start
_start:
    cli
    movl $stack_top, %esp
    /* IDT: 32 interrupt gates (CS 0x08, the Multiboot hand-off's), vector 2 the NMI handler. */
    xorl %ecx, %ecx
1:  movl $fault, %eax
    cmpl $2, %ecx
    jne 2f
    movl $nmi_handler, %eax
2:  movw %ax, idt(,%ecx,8)
    movw $0x08, idt+2(,%ecx,8)
    movw $0x8E00, idt+4(,%ecx,8)
    shrl $16, %eax
    movw %ax, idt+6(,%ecx,8)
    incl %ecx
    cmpl $32, %ecx
    jb 1b
    lidt idt_desc
    /* Software-enable the APIC (SVR bit 8, spurious vector 0xFF). */
    movl $0x1FF, APIC_SVR
    /* NMI to ourselves, interrupts disabled. */
    movl APIC_ID, %eax
    andl $0xFF000000, %eax
    movl %eax, APIC_ICR_HI
    movl $ICR_NMI, APIC_ICR_LO
    movl $1000, %ecx
3:  loop 3b
    movl $msg_after, %esi
    movl nmi_count, %eax
    call put_line
    movl $msg_inside, %esi
    movl count_inside, %eax
    call put_line
    movw $0xF4, %dx
    movb $0x10, %al
    outb %al, %dx
4:  hlt
    jmp 4b

nmi_handler:
    pushl %eax
    pushl %ecx
    incl nmi_count
    cmpl $1, nmi_count
    jne 5f
    /* The first NMI: send the second and give it every chance to arrive. */
    movl $ICR_NMI, APIC_ICR_LO
    movl $1000, %ecx
6:  loop 6b
    movl nmi_count, %eax
    movl %eax, count_inside
5:  popl %ecx
    popl %eax
    iret

fault:
    movl $msg_fault, %esi
    call puts
    movw $0xF4, %dx
    movb $0x11, %al
    outb %al, %dx
7:  hlt
    jmp 7b

/* put_line: ESI = label, EAX = a count 0-9. */
put_line:
    pushl %eax
    call puts
    popl %eax
    addb $'0', %al
    call putc
    movb $'\n', %al
    call putc
    ret
puts:
    lodsb
    testb %al, %al
    jz 9f
    call putc
    jmp puts
9:  ret
putc:
    movb %al, %ah
    movw $0x3FD, %dx
8:  inb %dx, %al
    testb $0x20, %al
    jz 8b
    movb %ah, %al
    movw $0x3F8, %dx
    outb %al, %dx
    ret

    .section .rodata
msg_after: .asciz "nmi guest: NMIs taken after two IPIs and one IRET: "
msg_inside: .asciz "nmi guest: NMIs taken inside the first handler, after the second IPI: "
msg_fault: .asciz "nmi guest: unexpected exception\n"
    .align 4
idt_desc:
    .word 32 * 8 - 1
    .long idt

    .data
    .align 4
nmi_count: .long 0
count_inside: .long 0

    .bss
    .align 8
idt: .skip 32 * 8
    .align 16
    .skip 4096
stack_top:
