/* Bench guest "exits": a loop of N instructions that leave the guest, for `sevemu-bench sev`'s
 * round-trip rows. The Multiboot command line says what and how many: "op=cpuid n=N" or
 * "op=ghcb-msr n=N". The loop sits between a line "loop begin" and a line "loop end" on COM1;
 * sevemu-bench timestamps those lines as the bytes arrive (in-process serial callback), so the
 * launch and the printing are outside what is measured.
 *
 *  - op=cpuid: CPUID leaf 0, N times. A plain guest on sevemu has no hypervisor under it (the
 *    interpreter answers CPUID itself); an SEV guest's CPUID is intercepted (#VMEXIT, the
 *    hypervisor answers from its CPUID table, VMRUN back; APM vol 2 §15.9); an SEV-ES guest's
 *    raises #VC, whose handler (sev_es.c) fills the GHCB and leaves by VMGEXIT, the hypervisor
 *    answers in the GHCB and VMRUNs back, the handler copies the result and IRETs
 *    (APM vol 2 §15.35.5, GHCB spec 56421 §4.1.1).
 *  - op=ghcb-msr (SEV-ES only): the GHCB MSR protocol's SEV information request (0x002, answered
 *    with 0x001; GHCB spec 56421 §2.3.1), N times: WRMSR of the GHCB MSR (not intercepted),
 *    VMGEXIT (an automatic exit: the whole state saved to the encrypted VMSA), the hypervisor
 *    answers at once in the MSR, VMRUN (the VMSA decrypted and loaded), RDMSR. No #VC: the cost
 *    of the state swap itself.
 *
 * The checksum is the same on every platform for the same command line: N, and CPUID leaf 0's
 * vendor string (each iteration's answer must equal the first). Any error is a line on COM1 and
 * status 1. */
#include "guest.h"
#include "sev.h" /* SEV_ES_GHCB_GPA: where sev_es.c's GHCB is */

extern uint32_t mb_info;                        /* entry.S / sev_entry.S */
extern uint64_t sev_status __attribute__((weak)); /* sev_entry.S only: SEV_STATUS */

#define MSR_SEV_ES_GHCB 0xC0010130u
#define SEV_STATUS_ES (1ull << 1)
#define GHCB_MSR_SEV_INFO_REQ 0x002u
#define GHCB_MSR_SEV_INFO_RESP 0x001u

static const char* cmdline(void)
{
    const uint32_t* mbi = (const uint32_t*)(uintptr_t)mb_info;
    if (!mbi || !(mbi[0] & (1u << 2)))
        return "";
    return (const char*)(uintptr_t)mbi[4];
}

/* The value of "key=" in the command line (up to the next space), or 0. */
static const char* option(const char* key, size_t* len)
{
    size_t k = strlen(key);
    const char* s = cmdline();
    for (const char* p = s; *p; ++p) {
        if ((p == s || p[-1] == ' ') && strncmp(p, key, k) == 0 && p[k] == '=') {
            const char* v = p + k + 1;
            *len = 0;
            while (v[*len] && v[*len] != ' ')
                ++*len;
            return v;
        }
    }
    return 0;
}

static int option_is(const char* key, const char* want)
{
    size_t len;
    const char* v = option(key, &len);
    return v && len == strlen(want) && strncmp(v, want, len) == 0;
}

static inline void cpuid0(uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(0), "c"(0));
}

int guest_main(void)
{
    size_t len;
    const char* nv = option("n", &len);
    uint64_t n = 0;
    for (size_t i = 0; nv && i < len; ++i) {
        if (nv[i] < '0' || nv[i] > '9' || n > 100000000000ull) {
            guest_printf("bench exits: bad n= on the command line\n");
            return 1;
        }
        n = n * 10 + (uint64_t)(nv[i] - '0');
    }
    if (!nv || !len) {
        guest_printf("bench exits: no n= on the command line\n");
        return 1;
    }
    uint32_t first[4], r[4];
    cpuid0(first);
    uint64_t bad = 0;
    if (option_is("op", "cpuid")) {
        guest_printf("loop begin\n");
        for (uint64_t i = 0; i < n; ++i) {
            cpuid0(r);
            bad |= (r[0] ^ first[0]) | (r[1] ^ first[1]) | (r[2] ^ first[2]) | (r[3] ^ first[3]);
        }
        guest_printf("loop end\n");
    } else if (option_is("op", "ghcb-msr")) {
        if (!&sev_status || !(sev_status & SEV_STATUS_ES)) {
            guest_printf("bench exits: op=ghcb-msr needs an SEV-ES guest\n");
            return 1;
        }
        uint64_t answer = 0;
        guest_printf("loop begin\n");
        for (uint64_t i = 0; i < n; ++i) {
            wrmsr(MSR_SEV_ES_GHCB, GHCB_MSR_SEV_INFO_REQ);
            __asm__ volatile(".byte 0xf3, 0x0f, 0x01, 0xd9" : : : "memory"); /* VMGEXIT (rep vmmcall) */
            uint64_t v = rdmsr(MSR_SEV_ES_GHCB);
            if (i == 0)
                answer = v;
            bad |= ((v & 0xFFF) ^ GHCB_MSR_SEV_INFO_RESP) | (v ^ answer);
        }
        /* Back to the GHCB's address, which sev_es.c's #VC handler also writes before each
         * request of its own. */
        wrmsr(MSR_SEV_ES_GHCB, SEV_ES_GHCB_GPA);
        guest_printf("loop end\n");
    } else {
        guest_printf("bench exits: op=cpuid or op=ghcb-msr on the command line\n");
        return 1;
    }
    if (bad) {
        guest_printf("bench exits: an answer differed from the first\n");
        return 1;
    }
    guest_printf("bench exits: %llu iterations\n", (unsigned long long)n);
    guest_printf("checksum %016llx\n", (unsigned long long)(n ^ ((uint64_t)first[1] << 32 | first[3])));
    return 0;
}
