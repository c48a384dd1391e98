/* sevemu test guests — a 32-bit ELF Multiboot kernel that triple-faults once: it counts its boots
 * in CMOS NVRAM byte 0x48 (battery backed: a reset keeps it, on QEMU as on sevemu), prints
 * "reboot guest: boot N" on COM1, and on its first boot loads an IDT with limit 0 and executes
 * INT3: #GP (the vector lies beyond the limit), #DF, then shutdown (APM vol 2 §8.2.9). The
 * platform resets and the kernel boots again; the second boot leaves through isa-debug-exit at
 * 0xf4 with 0x21 (status 0x43). With -no-reboot the triple fault ends the run instead. */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS (1 << 1)
#define CMOS_BOOTS 0x48

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .text
    .code32
    .globl _start
_start:
    movl $stack_top, %esp
    /* boots = CMOS[0x48] + 1 (index with bit 7 set: NMI stays masked, as firmware leaves it) */
    movb $(0x80 | CMOS_BOOTS), %al
    outb %al, $0x70
    inb $0x71, %al
    incb %al
    movb %al, %bl
    movb $(0x80 | CMOS_BOOTS), %al
    outb %al, $0x70
    movb %bl, %al
    outb %al, $0x71
    movl $msg_boot, %esi
    call puts
    movb %bl, %al
    addb $'0', %al
    call putc
    movb $'\n', %al
    call putc
    cmpb $2, %bl
    jae 2f
    /* First boot: triple fault. */
    lidt idt_empty
    int3
1:  jmp 1b
2:  movw $0xF4, %dx
    movb $0x21, %al
    outb %al, %dx
3:  cli
    hlt
    jmp 3b

/* puts: ESI = NUL-terminated string; putc: AL. Polled COM1. */
puts:
    lodsb
    testb %al, %al
    jz 5f
    call putc
    jmp puts
5:  ret
putc:
    movb %al, %ah
    movw $0x3FD, %dx
4:  inb %dx, %al
    testb $0x20, %al
    jz 4b
    movb %ah, %al
    movw $0x3F8, %dx
    outb %al, %dx
    ret

    .section .rodata
msg_boot: .asciz "reboot guest: boot "
    .align 4
idt_empty:
    .word 0
    .long 0

    .bss
    .align 16
    .skip 4096
stack_top:
