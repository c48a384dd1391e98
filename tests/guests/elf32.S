/* sevemu test guests — a 32-bit ELF Multiboot kernel without the a.out kludge: the loader must
 * use the ELF32 program headers (QEMU's load_elf, at p_paddr). Checks the §3.2 entry state
 * (EAX magic, EBX info, CS/DS flat 32-bit, paging off, IF=0), prints over COM1 what it found,
 * and exits through isa-debug-exit at 0xf4. */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS (1 << 1)

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
    pushl %ebx
    pushl %eax
    movl $msg_hello, %esi
    call puts
    popl %eax
    movl $msg_magic_ok, %esi
    cmpl $0x2BADB002, %eax
    je 1f
    movl $msg_magic_bad, %esi
1:  call puts
    /* Paging off, protected mode on. */
    movl %cr0, %eax
    movl $msg_cr0_ok, %esi
    andl $0x80000001, %eax
    cmpl $1, %eax
    je 2f
    movl $msg_cr0_bad, %esi
2:  call puts
    /* Interrupts off. */
    pushfl
    popl %eax
    movl $msg_if_ok, %esi
    testl $0x200, %eax
    jz 3f
    movl $msg_if_bad, %esi
3:  call puts
    /* Data segments usable as flat 4 GiB: read the info structure through them. */
    popl %ebx
    movl $msg_flags_ok, %esi
    testl $0x41, (%ebx)          /* MEM and MMAP present */
    jnz 4f
    movl $msg_flags_bad, %esi
4:  call puts
    movl $msg_bss, %esi
    call puts
    movl $msg_bss_ok, %esi
    cmpl $0, bss_word
    je 5f
    movl $msg_bss_bad, %esi
5:  call puts
    movw $0xF4, %dx
    movb $0x10, %al
    outb %al, %dx
6:  cli
    hlt
    jmp 6b

/* puts: ESI = NUL-terminated string, polled COM1. */
puts:
    movw $0x3FD, %dx
7:  inb %dx, %al
    testb $0x20, %al
    jz 7b
    lodsb
    testb %al, %al
    jz 8f
    movw $0x3F8, %dx
    outb %al, %dx
    jmp puts
8:  ret

    .section .rodata
msg_hello:     .asciz "elf32: Multiboot ELF32 kernel entered\n"
msg_magic_ok:  .asciz "eax: 0x2BADB002\n"
msg_magic_bad: .asciz "eax: wrong magic\n"
msg_cr0_ok:    .asciz "cr0: PE on, PG off\n"
msg_cr0_bad:   .asciz "cr0: unexpected\n"
msg_if_ok:     .asciz "eflags: IF clear\n"
msg_if_bad:    .asciz "eflags: IF set\n"
msg_flags_ok:  .asciz "mbi: memory info present\n"
msg_flags_bad: .asciz "mbi: memory info missing\n"
msg_bss:       .asciz "bss: "
msg_bss_ok:    .asciz "zeroed\nelf32: PASS\n"
msg_bss_bad:   .asciz "dirty\nelf32: FAIL\n"

    .bss
    .align 16
bss_word: .skip 4
    .skip 4096
stack_top:
    .section .note.GNU-stack, "", @progbits
