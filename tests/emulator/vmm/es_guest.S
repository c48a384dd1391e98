/* sevemu — SEV-ES test guest for tests/emulator/vmm/sev_es_test.cpp: 64-bit code loaded at GPA
 * 0x1000 (flat binary), identity-mapped, run by the hypervisor layer on the interpreter. It talks
 * to the hypervisor only as an SEV-ES guest can: the GHCB MSR protocol (C001_0130 + VMGEXIT) and
 * the GHCB page at GPA 0x3000, mapped shared (C-bit clear) — GHCB specification 56421 §2.3,
 * Linux arch/x86/include/asm/svm.h struct ghcb, arch/x86/kernel/sev-shared.c.
 *
 * Memory: 0x1000-0x2FFF this code (private), 0x3000 GHCB (shared), 0x4000 a scratch page
 * (shared), 0x5000 results (private: the test reads them with the guest's key), 0x7000 stack.
 * Entry points are at fixed offsets (the test sets RIP = 0x1000 + offset). Results are stored as
 * 64-bit words at 0x5000 + 8 * n.
 */
        .intel_syntax noprefix
        .code64
        .text

        .set GHCB, 0x3000
        .set SCRATCH, 0x4000
        .set OUT, 0x5000
        .set GHCB_MSR, 0xC0010130
        /* GHCB save-area offsets (= VMSA offsets) and their valid-bitmap bits (offset / 8). */
        .set G_CPL, 0x0CB
        .set G_RAX, 0x1F8
        .set G_RCX, 0x308
        .set G_RDX, 0x310
        .set G_RBX, 0x318
        .set G_EXIT_CODE, 0x390
        .set G_INFO1, 0x398
        .set G_INFO2, 0x3A0
        .set G_SCRATCH, 0x3A8
        .set G_BITMAP, 0x3F0
        .set G_SHARED, 0x800
        .set G_USAGE, 0xFFC

/* Set GHCB field `off` to `val` (a register or immediate) and mark it valid. */
.macro SETF off, val
        mov qword ptr [GHCB + \off], \val
        bts qword ptr [GHCB + G_BITMAP + ((\off / 8) / 64) * 8], ((\off / 8) % 64)
.endm
/* A NAE request: clear the bitmap, exit code/info1/info2, VMGEXIT with the GHCB's GPA in the MSR. */
.macro NAE code, info1, info2
        call clear_ghcb
        mov rax, \code
        SETF G_EXIT_CODE, rax
        mov rax, \info1
        SETF G_INFO1, rax
        mov rax, \info2
        SETF G_INFO2, rax
.endm
.macro STORE n, reg
        mov qword ptr [OUT + 8 * \n], \reg
.endm
.macro GHCB_EXIT
        call ghcb_call
.endm

/* ---------------------------------------------------------------- offset 0x000: MSR protocol */
        .org 0x000
msr_protocol:
        mov ecx, GHCB_MSR
        /* SEV information request (0x002) */
        mov eax, 0x002
        xor edx, edx
        wrmsr
        .byte 0xF3, 0x0F, 0x01, 0xD9 /* VMGEXIT (REP VMMCALL) */
        rdmsr
        shl rdx, 32
        or rax, rdx
        STORE 0, rax
        /* CPUID request (0x004): function 0x8000001F, register EBX (1) */
        mov eax, (1 << 30) | 0x004
        mov edx, 0x8000001F
        wrmsr
        .byte 0xF3, 0x0F, 0x01, 0xD9 /* VMGEXIT (REP VMMCALL) */
        rdmsr
        shl rdx, 32
        or rax, rdx
        STORE 1, rax
        /* CPUID request: function 0, register ECX (2) */
        mov eax, (2 << 30) | 0x004
        xor edx, edx
        wrmsr
        .byte 0xF3, 0x0F, 0x01, 0xD9 /* VMGEXIT (REP VMMCALL) */
        rdmsr
        shl rdx, 32
        or rax, rdx
        STORE 2, rax
        /* hypervisor features request (0x080) */
        mov eax, 0x080
        xor edx, edx
        wrmsr
        .byte 0xF3, 0x0F, 0x01, 0xD9 /* VMGEXIT (REP VMMCALL) */
        rdmsr
        shl rdx, 32
        or rax, rdx
        STORE 3, rax
        /* SEV_STATUS, the guest's own view */
        mov ecx, 0xC0010131
        rdmsr
        STORE 4, rax
        /* interrupts on: the hypervisor learns IF only from VMCB int_state (APM vol 2 §15.35.6) */
        sti
        /* termination request (0x100): reason set 1, reason code 0x23 */
        mov ecx, GHCB_MSR
        mov eax, (0x23 << 16) | (1 << 12) | 0x100
        xor edx, edx
        wrmsr
        .byte 0xF3, 0x0F, 0x01, 0xD9 /* VMGEXIT (REP VMMCALL) */
        hlt

/* ---------------------------------------------------------------- offset 0x200: AP reset hold */
        .org 0x200
ap_reset_hold:
        mov rsp, 0x7FF0
        /* NAE AP_HLT_LOOP until released (SW_EXITINFO2 != 0), counting the rounds */
        xor r12, r12
1:      inc r12
        NAE 0x80000004, 0, 0
        GHCB_EXIT
        mov rax, qword ptr [GHCB + G_INFO2]
        test rax, rax
        jz 1b
        STORE 0, r12
        /* the MSR-protocol hold (0x006) next: released when GHCBData != 0 */
        xor r13, r13
        mov ecx, GHCB_MSR
2:      inc r13
        mov eax, 0x006
        xor edx, edx
        wrmsr
        .byte 0xF3, 0x0F, 0x01, 0xD9 /* VMGEXIT (REP VMMCALL) */
        rdmsr
        mov r14, rax
        shr r14, 12
        or r14, rdx
        jz 2b
        STORE 1, r13
        STORE 2, rax
        hlt

/* ---------------------------------------------------------------- offset 0x400: NAE events */
        .org 0x400
nae_events:
        mov rsp, 0x7FF0
        /* IOIO OUT dx=0x80, 32-bit, value 0xC0FFEE11: EXITINFO1 = port << 16 | SZ32 (bit 6) */
        NAE 0x7B, (0x80 << 16) | (1 << 6), 0
        mov eax, 0xC0FFEE11
        SETF G_RAX, rax
        GHCB_EXIT
        mov rax, qword ptr [GHCB + G_INFO1]
        STORE 0, rax
        /* IOIO IN al from 0x82 (TYPE=1, SZ8 bit 4) */
        NAE 0x7B, (0x82 << 16) | (1 << 4) | 1, 0
        GHCB_EXIT
        mov rax, qword ptr [GHCB + G_RAX]
        STORE 1, rax
        /* CPUID 0x8000001F through the GHCB */
        NAE 0x72, 0, 0
        mov eax, 0x8000001F
        SETF G_RAX, rax
        xor eax, eax
        SETF G_RCX, rax
        GHCB_EXIT
        mov rax, qword ptr [GHCB + G_RAX]
        STORE 2, rax
        mov rax, qword ptr [GHCB + G_RBX]
        STORE 3, rax
        /* RDMSR of IA32_APIC_BASE (0x1B) */
        NAE 0x7C, 0, 0
        mov eax, 0x1B
        SETF G_RCX, rax
        GHCB_EXIT
        mov rax, qword ptr [GHCB + G_RAX]
        STORE 4, rax
        mov rax, qword ptr [GHCB + G_RDX]
        STORE 5, rax
        /* RDMSR of an MSR nobody emulates (0xC0011234): #GP comes back in the GHCB */
        NAE 0x7C, 0, 0
        mov eax, 0xC0011234
        SETF G_RCX, rax
        GHCB_EXIT
        mov rax, qword ptr [GHCB + G_INFO1]
        STORE 6, rax
        mov rax, qword ptr [GHCB + G_INFO2]
        STORE 7, rax
        /* MMIO write of 8 bytes to GPA 0xFEB00010 from the GHCB shared buffer */
        mov rax, 0x1122334455667788
        mov qword ptr [GHCB + G_SHARED], rax
        NAE 0x80000002, 0xFEB00010, 8
        mov rax, GHCB + G_SHARED
        SETF G_SCRATCH, rax
        GHCB_EXIT
        mov rax, qword ptr [GHCB + G_INFO1]
        STORE 8, rax
        /* MMIO read of 4 bytes from GPA 0xFEB00020 into the scratch page outside the GHCB */
        mov qword ptr [SCRATCH], 0
        NAE 0x80000001, 0xFEB00020, 4
        mov rax, SCRATCH
        SETF G_SCRATCH, rax
        GHCB_EXIT
        mov rax, qword ptr [SCRATCH]
        STORE 9, rax
        /* string OUT (OUTSB, REP): 3 bytes "abc" to port 0xE9 from the shared buffer */
        mov dword ptr [GHCB + G_SHARED + 0x100], 0x00636261
        NAE 0x7B, (0xE9 << 16) | (1 << 4) | (1 << 2) | (1 << 3), 3
        mov rax, GHCB + G_SHARED + 0x100
        SETF G_SCRATCH, rax
        GHCB_EXIT
        /* string IN (INSW, REP): 2 words from port 0x60 into the scratch page */
        mov qword ptr [SCRATCH + 0x10], 0
        NAE 0x7B, (0x60 << 16) | (1 << 5) | (1 << 2) | (1 << 3) | 1, 2
        mov rax, SCRATCH + 0x10
        SETF G_SCRATCH, rax
        GHCB_EXIT
        mov rax, qword ptr [SCRATCH + 0x10]
        STORE 10, rax
        /* VMMCALL KVM_HC_MAP_GPA_RANGE(0x4000, 1, attrs 0) at CPL 0 */
        NAE 0x81, 0, 0
        mov eax, 12
        SETF G_RAX, rax
        mov eax, 0x4000
        SETF G_RBX, rax
        mov eax, 1
        SETF G_RCX, rax
        xor eax, eax
        SETF G_RDX, rax
        mov byte ptr [GHCB + G_CPL], 0
        bts qword ptr [GHCB + G_BITMAP], (G_CPL / 8)
        GHCB_EXIT
        mov rax, qword ptr [GHCB + G_RAX]
        STORE 11, rax
        /* AP jump table: set 0x9000, then get */
        NAE 0x80000005, 0, 0x9000
        GHCB_EXIT
        NAE 0x80000005, 1, 0
        GHCB_EXIT
        mov rax, qword ptr [GHCB + G_INFO2]
        STORE 12, rax
        /* which result fields came back valid (the bitmap's first two words) */
        mov rax, qword ptr [GHCB + G_BITMAP]
        STORE 13, rax
        mov rax, qword ptr [GHCB + G_BITMAP + 8]
        STORE 14, rax
        hlt

/* ---------------------------------------------------------------- offset 0xC00: bad requests */
        .org 0xC00
bad_requests:
        mov rsp, 0x7FF0
        xor r15, r15
        /* 0: IOIO OUT without RAX marked valid -> MISSING_INPUT */
        NAE 0x7B, (0x80 << 16) | (1 << 6), 0
        mov qword ptr [GHCB + G_RAX], 0x1234      /* present, but not marked valid */
        GHCB_EXIT
        call store_reply
        /* 1: an exit code KVM does not serve (0x8000_0010, SNP page state change) -> INVALID_EVENT */
        NAE 0x80000010, 0, 0
        GHCB_EXIT
        call store_reply
        /* 2: MMIO read with a scratch area across the end of the shared buffer -> INVALID_SCRATCH_AREA */
        NAE 0x80000001, 0xFEB00000, 0x20
        mov rax, GHCB + 0xFE0
        SETF G_SCRATCH, rax
        GHCB_EXIT
        call store_reply
        /* 3: MMIO read of 17 pages outside the GHCB -> INVALID_SCRATCH_AREA (KVM's 16-page limit) */
        NAE 0x80000001, 0xFEB00000, 0x11000
        mov rax, SCRATCH
        SETF G_SCRATCH, rax
        GHCB_EXIT
        call store_reply
        /* 4: MMIO read without SW_SCRATCH valid -> MISSING_INPUT */
        NAE 0x80000001, 0xFEB00000, 4
        GHCB_EXIT
        call store_reply
        /* 5: GHCB usage 1 (Hyper-V's hypercall page format) -> INVALID_USAGE */
        NAE 0x7B, (0x80 << 16) | (1 << 6), 0
        mov dword ptr [GHCB + G_USAGE], 1
        GHCB_EXIT
        mov dword ptr [GHCB + G_USAGE], 0
        call store_reply
        /* 6: SW_EXITINFO1 not marked valid -> MISSING_INPUT */
        call clear_ghcb
        mov rax, 0x72
        SETF G_EXIT_CODE, rax
        GHCB_EXIT
        call store_reply
        /* 7: AP jump table request 7 -> INVALID_INPUT */
        NAE 0x80000005, 7, 0
        GHCB_EXIT
        call store_reply
        /* 8: scratch area with a zero GPA -> INVALID_SCRATCH_AREA */
        NAE 0x80000002, 0xFEB00000, 4
        xor eax, eax
        SETF G_SCRATCH, rax
        GHCB_EXIT
        call store_reply
        /* 9: the scratch area beginning inside the GHCB but before its shared buffer */
        NAE 0x80000002, 0xFEB00000, 4
        mov rax, GHCB + 0x100
        SETF G_SCRATCH, rax
        GHCB_EXIT
        call store_reply
        /* the termination NAE event: reason set 0, code 1 (EXITINFO1 [3:0] set, [11:4] code) */
        NAE 0x8000FFFE, (1 << 4), 0
        GHCB_EXIT
        hlt

/* ---------------------------------------------------------------- offset 0x1200: #VC */
/* Instructions the hypervisor intercepts become #VC in the guest (APM vol 2 §15.35.5); a small
 * handler serves them through the GHCB as Linux's vc_handle_mmio / vc_handle_cpuid /
 * vc_handle_dr7_write do: an MMIO load (a page outside every memory slot: the first access is an
 * automatic #NPF, after which the hypervisor's reserved-bit mapping makes the next one #VC
 * 0x400), CPUID (#VC 0x72) and a DR7 write (#VC 0x37). */
        .org 0x1200
vc_events:
        mov rsp, 0x7FF0
        mov r15, 4
        /* IDT at 0x6000: vector 29 (#VC) -> vc_handler, a 64-bit interrupt gate */
        lea rax, [rip + vc_handler]       /* its runtime address (the code runs at 0x1000) */
        mov word ptr [0x6000 + 29 * 16], ax
        mov word ptr [0x6000 + 29 * 16 + 2], 0x08
        mov word ptr [0x6000 + 29 * 16 + 4], 0x8E00
        shr rax, 16
        mov word ptr [0x6000 + 29 * 16 + 6], ax
        shr rax, 16
        mov dword ptr [0x6000 + 29 * 16 + 8], eax
        mov dword ptr [0x6000 + 29 * 16 + 12], 0
        mov word ptr [0x6F00], 0xFFF
        mov qword ptr [0x6F02], 0x6000
        lidt [0x6F00]
        /* MMIO load from GPA 0x1F0040 (7 bytes: 8B 04 25 40 00 1F 00) */
        mov eax, dword ptr [0x1F0040]
        STORE 2, rax
        /* CPUID 8000_001F (2 bytes) */
        mov eax, 0x8000001F
        cpuid
        STORE 3, rbx
        /* DR7 write (3 bytes) */
        xor eax, eax
        mov dr7, rax
        STORE 1, r15
        hlt

vc_handler:
        push rcx                        /* [rsp + 8] */
        push rdx                        /* [rsp], error code at [rsp + 16], RIP at [rsp + 24] */
        mov r8, rax
        mov r9, qword ptr [rsp + 8]
        mov rcx, qword ptr [rsp + 16]
        mov qword ptr [OUT + r15 * 8], rcx
        inc r15
        cmp rcx, 0x400
        je vc_mmio
        cmp rcx, 0x72
        je vc_cpuid
        cmp rcx, 0x37
        je vc_dr7
        hlt                             /* not expected */
vc_mmio:
        NAE 0x80000001, 0x1F0040, 4
        mov rax, GHCB + G_SHARED
        SETF G_SCRATCH, rax
        GHCB_EXIT
        mov eax, dword ptr [GHCB + G_SHARED]
        add qword ptr [rsp + 24], 7
        jmp vc_done
vc_cpuid:
        NAE 0x72, 0, 0
        SETF G_RAX, r8
        SETF G_RCX, r9
        GHCB_EXIT
        mov rax, qword ptr [GHCB + G_RCX]
        mov qword ptr [rsp + 8], rax
        mov rax, qword ptr [GHCB + G_RDX]
        mov qword ptr [rsp], rax
        mov rbx, qword ptr [GHCB + G_RBX]
        mov rax, qword ptr [GHCB + G_RAX]
        add qword ptr [rsp + 24], 2
        jmp vc_done
vc_dr7:
        NAE 0x37, 0, 0
        SETF G_RAX, r8
        GHCB_EXIT
        mov rax, r8
        add qword ptr [rsp + 24], 3
vc_done:
        pop rdx
        pop rcx
        add rsp, 8                      /* the error code */
        iretq

/* ---------------------------------------------------------------- subroutines */
        .org 0x1C00
/* store_reply: SW_EXITINFO1 and SW_EXITINFO2 at OUT + 16 * r15, then r15 += 1 */
store_reply:
        mov rax, qword ptr [GHCB + G_INFO1]
        mov rdx, r15
        shl rdx, 4
        mov qword ptr [OUT + rdx], rax
        mov rax, qword ptr [GHCB + G_INFO2]
        mov qword ptr [OUT + rdx + 8], rax
        inc r15
        ret
/* clear_ghcb: the valid bitmap and SW_EXITCODE (Linux's vc_ghcb_invalidate) */
clear_ghcb:
        mov qword ptr [GHCB + G_BITMAP], 0
        mov qword ptr [GHCB + G_BITMAP + 8], 0
        mov qword ptr [GHCB + G_EXIT_CODE], 0
        ret
/* ghcb_call: the GHCB's GPA in the GHCB MSR, then VMGEXIT (sev_es_ghcb_hv_call) */
ghcb_call:
        push rcx
        push rdx
        push rax
        mov ecx, GHCB_MSR
        mov eax, GHCB
        xor edx, edx
        wrmsr
        .byte 0xF3, 0x0F, 0x01, 0xD9 /* VMGEXIT (REP VMMCALL) */
        pop rax
        pop rdx
        pop rcx
        ret

/* ---------------------------------------------------------------- offset 0x1F00: the GDT */
        .org 0x1F00
gdt:    .quad 0
        .quad 0x00AF9A000000FFFF        /* 0x08: 64-bit code, DPL 0 */
        .quad 0x00CF92000000FFFF        /* 0x10: data */
        .org 0x2000
