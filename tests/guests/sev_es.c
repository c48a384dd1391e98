/* sevemu test guests — the SEV-ES side of the SEV guest (guest-sev-es.elf = sev_entry.S built with
 * SEV_ES_GUEST, sev.c, sev_bare.c, this file): the #VC handler of long mode and the GHCB it talks
 * through. With SEV-ES the guest's registers are encrypted, so every instruction the hypervisor
 * intercepts (CPUID, IN/OUT, RDMSR/WRMSR, VMMCALL) raises #VC (vector 29, error code = the SVM
 * exit code, APM vol 2 §15.35.5) inside the guest, which copies into the shared GHCB page exactly
 * the registers the hypervisor needs, marks them valid, and asks with VMGEXIT (a non-automatic
 * exit, "NAE event": GHCB spec 56421 §4). The facts (layout, exit codes, IOIO exit-information
 * bits, MSR-protocol values, the fields the hypervisor requires) are those of Linux's
 * arch/x86/include/asm/svm.h (struct ghcb), arch/x86/include/asm/sev-common.h,
 * arch/x86/kernel/sev-shared.c (vc_handle_cpuid, vc_ioio_exitinfo, vc_handle_ioio) and KVM's
 * sev_es_validate_vmgexit (arch/x86/kvm/svm/sev.c).
 *
 * Running without SEV-ES (SEV_STATUS bit 1 clear) nothing here is used: no #VC ever comes, and
 * sev_es_report() says "sev-es: not active". */
#include "guest.h"
#include "sev.h"

/* What sev_entry.S's vc64 pushed: the GPRs (r15 first), then the CPU's #VC frame. */
struct sev_es_vc_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t error_code, rip, cs, rflags, rsp, ss;
};

extern uint64_t sev_status;      /* sev_entry.S: SEV_STATUS as read in 32-bit mode */
extern uint32_t sev_cbit;        /* CPUID Fn8000_001F EBX[5:0] */
extern uint32_t vc32_count;      /* CPUIDs the 32-bit #VC handler served */
extern uint32_t mb_info;         /* the Multiboot information structure's address */

#define MSR_SEV_ES_GHCB 0xC0010130u
#define SEV_STATUS_SEV (1ull << 0)
#define SEV_STATUS_ES (1ull << 1)

/* GHCB MSR protocol (GHCBInfo = bits 11:0). */
#define GHCB_MSR_SEV_INFO_RESP 0x001
#define GHCB_MSR_SEV_INFO_REQ 0x002
#define GHCB_MSR_TERM_REQ 0x100
/* Termination reasons, set 0 (GHCB spec §4.1.13; Linux sev-common.h). */
#define TERM_GENERAL 0
#define TERM_PROTOCOL_UNSUPPORTED 1
/* The versions Linux speaks (GHCB_PROTOCOL_MIN/MAX); SEV-ES needs version 1 at least. */
#define GHCB_PROTOCOL_MIN 1
#define GHCB_PROTOCOL_MAX 2

/* The GHCB's save area: fields at their VMSA offsets, valid bitmap bit = offset / 8. */
#define GHCB_CPL 0x0CB
#define GHCB_RAX 0x1F8
#define GHCB_RCX 0x308
#define GHCB_RDX 0x310
#define GHCB_RBX 0x318
#define GHCB_RSI 0x330
#define GHCB_SW_EXITCODE 0x390
#define GHCB_SW_EXITINFO1 0x398
#define GHCB_SW_EXITINFO2 0x3A0
#define GHCB_XCR0 0x3E8
#define GHCB_VALID_BITMAP 0x3F0
#define GHCB_PROTOCOL_VERSION 0xFFA
#define GHCB_USAGE 0xFFC

/* SVM exit codes that reach the #VC handler (APM vol 2 Appendix C). */
#define SVM_EXIT_CPUID 0x72
#define SVM_EXIT_IOIO 0x7B
#define SVM_EXIT_MSR 0x7C
#define SVM_EXIT_VMMCALL 0x81

/* IOIO exit information (APM vol 2 §15.10.2, Figure 15-2). */
#define IOIO_TYPE_IN (1u << 0)
#define IOIO_DATA_8 (1u << 4)
#define IOIO_DATA_16 (1u << 5)
#define IOIO_DATA_32 (1u << 6)
#define IOIO_ADDR_64 (1u << 9)

static volatile uint8_t* const ghcb = (volatile uint8_t*)(uintptr_t)SEV_ES_GHCB_GPA; /* identity map */
static uint16_t ghcb_version;
static unsigned hv_min, hv_max, hv_cbit;
static unsigned vc_cpuid, vc_ioio, vc_msr, vc_vmmcall;

static inline void vmgexit(void) { __asm__ volatile(".byte 0xf3, 0x0f, 0x01, 0xd9" : : : "memory"); /* rep vmmcall */ }

/* MSR protocol 0x100: the hypervisor ends the guest; it never comes back here. */
static void __attribute__((noreturn)) terminate(unsigned reason)
{
    wrmsr(MSR_SEV_ES_GHCB, GHCB_MSR_TERM_REQ | (0ull << 12) | ((uint64_t)reason << 16));
    for (;;) {
        vmgexit();
        __asm__ volatile("hlt");
    }
}

static void ghcb_set(unsigned off, uint64_t v)
{
    *(volatile uint64_t*)(ghcb + off) = v;
    ghcb[GHCB_VALID_BITMAP + off / 64] |= (uint8_t)(1u << ((off / 8) % 8));
}

static int ghcb_valid(unsigned off) { return (ghcb[GHCB_VALID_BITMAP + off / 64] >> ((off / 8) % 8)) & 1; }
static uint64_t ghcb_get(unsigned off) { return *(volatile uint64_t*)(ghcb + off); }

/* Linux's vc_ghcb_invalidate: nothing is valid until the guest says so for this request. */
static void ghcb_invalidate(void)
{
    *(volatile uint64_t*)(ghcb + GHCB_SW_EXITCODE) = 0;
    for (unsigned i = 0; i < 16; ++i)
        ghcb[GHCB_VALID_BITMAP + i] = 0;
}

/* One NAE event: the exit code and information, the GHCB's GPA in the GHCB MSR, VMGEXIT; the
 * hypervisor answers in SW_EXITINFO1[31:0]: 0 = done (anything else: an exception to inject or
 * an error, which this guest does not recover from). */
static void ghcb_call(uint64_t exit_code, uint64_t info1, uint64_t info2)
{
    ghcb_set(GHCB_SW_EXITCODE, exit_code);
    ghcb_set(GHCB_SW_EXITINFO1, info1);
    ghcb_set(GHCB_SW_EXITINFO2, info2);
    *(volatile uint16_t*)(ghcb + GHCB_PROTOCOL_VERSION) = ghcb_version;
    *(volatile uint32_t*)(ghcb + GHCB_USAGE) = 0; /* the standard format */
    wrmsr(MSR_SEV_ES_GHCB, SEV_ES_GHCB_GPA);
    vmgexit();
    if ((uint32_t)ghcb_get(GHCB_SW_EXITINFO1) != 0)
        terminate(TERM_GENERAL);
}

/* Register results must come back marked valid (Linux refuses them otherwise: ES_VMM_ERROR). */
static uint64_t ghcb_result(unsigned off)
{
    if (!ghcb_valid(off))
        terminate(TERM_GENERAL);
    return ghcb_get(off);
}

void sev_es_init(void)
{
    if (!(sev_status & SEV_STATUS_ES))
        return;
    /* SEV information (MSR protocol 0x002 -> 0x001): [63:48] the hypervisor's highest GHCB
     * protocol version, [47:32] its lowest, [31:24] the C-bit. Linux's
     * sev_es_negotiate_protocol takes min(its max, ours) if the ranges meet. */
    wrmsr(MSR_SEV_ES_GHCB, GHCB_MSR_SEV_INFO_REQ);
    vmgexit();
    uint64_t v = rdmsr(MSR_SEV_ES_GHCB);
    if ((v & 0xFFF) != GHCB_MSR_SEV_INFO_RESP)
        terminate(TERM_PROTOCOL_UNSUPPORTED);
    hv_max = (unsigned)(v >> 48);
    hv_min = (unsigned)(v >> 32) & 0xFFFF;
    hv_cbit = (unsigned)(v >> 24) & 0xFF;
    if (hv_max < GHCB_PROTOCOL_MIN || hv_min > GHCB_PROTOCOL_MAX)
        terminate(TERM_PROTOCOL_UNSUPPORTED);
    ghcb_version = (uint16_t)(hv_max < GHCB_PROTOCOL_MAX ? hv_max : GHCB_PROTOCOL_MAX);
    /* The GHCB page is mapped C=0 (sev_entry.S): what is written here is plaintext in DRAM. */
    for (unsigned i = 0; i < SEV_PAGE_SIZE; ++i)
        ghcb[i] = 0;
    wrmsr(MSR_SEV_ES_GHCB, SEV_ES_GHCB_GPA);
}

/* Port I/O: the forms the runtime uses (IN/OUT with imm8 or DX, 8/16/32-bit; no string I/O),
 * decoded from the instruction as Linux's vc_ioio_exitinfo does. Returns the length, 0 if not one. */
static unsigned decode_ioio(struct sev_es_vc_frame* f, uint32_t* info, unsigned* size)
{
    const uint8_t* ip = (const uint8_t*)(uintptr_t)f->rip;
    unsigned len = 0, opsize16 = 0;
    if (ip[0] == 0x66) {
        opsize16 = 1;
        ++len;
    }
    uint8_t op = ip[len++];
    uint16_t port;
    switch (op) {
    case 0xE4: case 0xE5: case 0xE6: case 0xE7:
        port = ip[len++];
        break;
    case 0xEC: case 0xED: case 0xEE: case 0xEF:
        port = (uint16_t)f->rdx;
        break;
    default:
        return 0;
    }
    *size = (op & 1) ? (opsize16 ? 2 : 4) : 1;
    *info = (uint32_t)port << 16 | (*size == 1 ? IOIO_DATA_8 : *size == 2 ? IOIO_DATA_16 : IOIO_DATA_32) | IOIO_ADDR_64;
    if (!(op & 2)) /* E4/E5/EC/ED are IN */
        *info |= IOIO_TYPE_IN;
    return len;
}

static void handle_ioio(struct sev_es_vc_frame* f)
{
    uint32_t info;
    unsigned size;
    unsigned len = decode_ioio(f, &info, &size);
    if (!len)
        terminate(TERM_GENERAL);
    uint64_t mask = size == 4 ? 0xFFFFFFFFull : size == 2 ? 0xFFFFull : 0xFFull;
    ghcb_invalidate();
    if (!(info & IOIO_TYPE_IN))
        ghcb_set(GHCB_RAX, f->rax & mask);
    ghcb_call(SVM_EXIT_IOIO, info, 0);
    if (info & IOIO_TYPE_IN) {
        uint64_t v = ghcb_result(GHCB_RAX) & mask;
        /* A 32-bit IN zero-extends into RAX; 8 and 16 bits leave the rest of RAX alone. */
        f->rax = size == 4 ? v : (f->rax & ~mask) | v;
    }
    f->rip += len;
    ++vc_ioio;
}

static void handle_cpuid(struct sev_es_vc_frame* f)
{
    ghcb_invalidate();
    ghcb_set(GHCB_RAX, (uint32_t)f->rax);
    ghcb_set(GHCB_RCX, (uint32_t)f->rcx);
    /* XCR0 (needed for leaf 0xD): 1, x87 only, as Linux sends without CR4.OSXSAVE. */
    ghcb_set(GHCB_XCR0, 1);
    ghcb_call(SVM_EXIT_CPUID, 0, 0);
    f->rax = (uint32_t)ghcb_result(GHCB_RAX);
    f->rbx = (uint32_t)ghcb_result(GHCB_RBX);
    f->rcx = (uint32_t)ghcb_result(GHCB_RCX);
    f->rdx = (uint32_t)ghcb_result(GHCB_RDX);
    f->rip += 2;
    ++vc_cpuid;
}

static void handle_msr(struct sev_es_vc_frame* f)
{
    const uint8_t* ip = (const uint8_t*)(uintptr_t)f->rip;
    if (ip[0] != 0x0F || (ip[1] != 0x30 && ip[1] != 0x32))
        terminate(TERM_GENERAL);
    int write = ip[1] == 0x30;
    ghcb_invalidate();
    ghcb_set(GHCB_RCX, (uint32_t)f->rcx);
    if (write) {
        ghcb_set(GHCB_RAX, (uint32_t)f->rax);
        ghcb_set(GHCB_RDX, (uint32_t)f->rdx);
    }
    ghcb_call(SVM_EXIT_MSR, write, 0);
    if (!write) {
        f->rax = (uint32_t)ghcb_result(GHCB_RAX);
        f->rdx = (uint32_t)ghcb_result(GHCB_RDX);
    }
    f->rip += 2;
    ++vc_msr;
}

/* A KVM hypercall: the number in RAX, arguments in RBX, RCX, RDX, RSI (Linux's
 * kvm_sev_es_hcall_prepare), the CPL (KVM requires it), the result in RAX. */
static void handle_vmmcall(struct sev_es_vc_frame* f)
{
    ghcb_invalidate();
    ghcb_set(GHCB_RAX, f->rax);
    ghcb_set(GHCB_RBX, f->rbx);
    ghcb_set(GHCB_RCX, f->rcx);
    ghcb_set(GHCB_RDX, f->rdx);
    ghcb_set(GHCB_RSI, f->rsi);
    ghcb[GHCB_CPL] = (uint8_t)(f->cs & 3);
    ghcb[GHCB_VALID_BITMAP + GHCB_CPL / 64] |= (uint8_t)(1u << ((GHCB_CPL / 8) % 8));
    ghcb_call(SVM_EXIT_VMMCALL, 0, 0);
    f->rax = ghcb_result(GHCB_RAX);
    f->rip += 3;
    ++vc_vmmcall;
}

void sev_es_vc_handler(struct sev_es_vc_frame* f)
{
    switch (f->error_code) {
    case SVM_EXIT_CPUID:
        handle_cpuid(f);
        return;
    case SVM_EXIT_IOIO:
        handle_ioio(f);
        return;
    case SVM_EXIT_MSR:
        handle_msr(f);
        return;
    case SVM_EXIT_VMMCALL:
        handle_vmmcall(f);
        return;
    default:
        terminate(TERM_GENERAL);
    }
}

/* The Multiboot command line (information structure +16, valid with flags bit 2) holds `word`. */
static int cmdline_has(const char* word)
{
    const uint32_t* mbi = (const uint32_t*)(uintptr_t)mb_info;
    if (!mbi || !(mbi[0] & (1u << 2)))
        return 0;
    const char* line = (const char*)(uintptr_t)mbi[4];
    size_t n = strlen(word);
    for (; *line; ++line)
        if (strncmp(line, word, n) == 0)
            return 1;
    return 0;
}

/* After guest_main(): what SEV-ES looked like from inside. Returns the guest's status. With
 * "sev-es-terminate" on its command line the guest instead asks the hypervisor to end it
 * (MSR protocol 0x100, reason set 0, code 0), which is how a test sees that path end to end. */
int sev_es_report(int rc)
{
    if ((sev_status & (SEV_STATUS_SEV | SEV_STATUS_ES)) != (SEV_STATUS_SEV | SEV_STATUS_ES)) {
        guest_printf("sev-es: not active\n");
        return rc;
    }
    /* The counts first: printing is port I/O, itself #VC. */
    unsigned cpuid32 = vc32_count, cpuid = vc_cpuid, msr = vc_msr, vmmcall = vc_vmmcall, ioio = vc_ioio;
    guest_printf("sev-es: active, GHCB protocol %u (hypervisor %u..%u, C-bit %u), GHCB page 0x%llx\n", ghcb_version,
        hv_min, hv_max, hv_cbit, (unsigned long long)SEV_ES_GHCB_GPA);
    guest_printf("sev-es: #VC served: %u CPUID by the GHCB MSR protocol, %u CPUID, %u MSR, %u VMMCALL, %s port I/O "
                 "through the GHCB\n",
        cpuid32, cpuid, msr, vmmcall, ioio ? "and all" : "no");
    if (hv_cbit != sev_cbit) {
        guest_printf("sev-es: the hypervisor's C-bit %u differs from CPUID's %u\n", hv_cbit, sev_cbit);
        rc = 1;
    }
    if (cmdline_has("sev-es-terminate")) {
        guest_printf("sev-es: asking the hypervisor to terminate this guest\n");
        terminate(TERM_GENERAL);
    }
    return rc;
}
