/* sevemu test guests — 64-bit interrupt/exception entry stubs for vectors 0-47 (irq.c).
 * Each stub pushes a dummy error code where the CPU pushes none (APM vol 2 §8.2, Table 8-1:
 * #DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP, #VC, #SX push one), then the vector; the common path
 * saves the caller-saved registers, calls isr_dispatch(frame) and returns with IRETQ. */
    .code64
    .text
.macro STUB n
    .align 16
isr_stub_\n:
    .if (\n == 8) || ((\n >= 10) && (\n <= 14)) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
    .else
    pushq $0
    .endif
    pushq $\n
    jmp isr_common
.endm

.altmacro
.set i, 0
.rept 48
    STUB %i
    .set i, i + 1
.endr

isr_common:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    movq %rsp, %rdi
    cld
    call isr_dispatch
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp
    iretq

.macro ADDR n
    .quad isr_stub_\n
.endm
    .section .rodata
    .align 8
    .globl isr_stub_table
isr_stub_table:
.set i, 0
.rept 48
    ADDR %i
    .set i, i + 1
.endr
    .section .note.GNU-stack, "", @progbits
