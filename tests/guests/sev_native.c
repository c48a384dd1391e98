/* sevemu test guests — the SEV guest's platform in the native known-answer build: what a machine
 * without SEV yields. CPUID and SEV_STATUS are not read here (the MSR needs ring 0, and the host
 * is not an SEV guest): SEV is not active, there are no guest page tables to check, and the
 * protocol's pages are zeroed buffers, so the core reports "secret: none" as on a plain machine.
 * SEV_GUEST_SECRET_PAGE=FILE fills the secret page from FILE (at most 4096 bytes) instead, which
 * lets a test check the secret parsing and hashing against an independent SHA-256. */
#include "guest.h"
#include "sev.h"

#include <stdio.h>
#include <stdlib.h>

static uint8_t secret_page[SEV_PAGE_SIZE], shared_page[SEV_PAGE_SIZE], private_page[SEV_PAGE_SIZE];

void sev_platform_info(struct sev_info* info)
{
    info->active = 0;
    info->status = 0;
    info->cbit = 0;
    const char* file = getenv("SEV_GUEST_SECRET_PAGE");
    if (file) {
        FILE* f = fopen(file, "rb");
        if (!f) {
            perror(file);
            exit(2);
        }
        size_t n = fread(secret_page, 1, sizeof secret_page, f);
        (void)n;
        fclose(f);
    }
}

void* sev_gpa(uint64_t gpa)
{
    switch (gpa) {
    case SEV_SECRET_GPA: return secret_page;
    case SEV_SHARED_GPA: return shared_page;
    case SEV_PRIVATE_GPA: return private_page;
    }
    fprintf(stderr, "sev_gpa: unexpected GPA 0x%llx\n", (unsigned long long)gpa);
    abort();
}

long sev_map_gpa_range(uint64_t gpa, uint64_t npages, uint64_t attrs)
{
    (void)gpa, (void)npages, (void)attrs;
    fprintf(stderr, "sev_map_gpa_range: called without SEV\n");
    abort();
}

int sev_check_page_tables(void) { return 0; }
