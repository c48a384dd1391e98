/* sevemu test guests — the SEV guest's platform on the machine: what sev_entry.S found before
 * paging, identity-mapped pages, the KVM hypercall, and a check of the page tables it built. */
#include "guest.h"
#include "sev.h"

/* Written by sev_entry.S in 32-bit mode. */
extern uint32_t sev_active, sev_cbit;
extern uint64_t sev_status, sev_cbit_mask;

void sev_platform_info(struct sev_info* info)
{
    info->active = sev_active != 0;
    info->status = info->active ? sev_status : 0;
    info->cbit = info->active ? sev_cbit : 0;
}

void* sev_gpa(uint64_t gpa) { return (void*)(uintptr_t)gpa; /* identity map */ }

/* A KVM hypercall on AMD is VMMCALL (0F 01 D9) with the number in RAX and the arguments in RBX,
 * RCX, RDX; the result comes back in RAX (Linux arch/x86/include/asm/kvm_para.h,
 * kvm_sev_hypercall3). Without SEV-ES, VMMCALL is intercepted straight to the hypervisor. */
long sev_map_gpa_range(uint64_t gpa, uint64_t npages, uint64_t attrs)
{
    long r = KVM_HC_MAP_GPA_RANGE;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd9" /* vmmcall */
                     : "+a"(r)
                     : "b"(gpa), "c"(npages), "d"(attrs)
                     : "memory");
    return r;
}

/* Walks the tables from CR3 and compares each entry with what sev_entry.S promises: identity
 * map of 0..1 GiB, 2 MiB pages except 4 KiB pages for 0-0x1FFFFF and 0x800000-0x9FFFFF, RW|P,
 * the C-bit in every entry when SEV is active except the PTEs of the shared page (and of the
 * SEV-ES guest's GHCB), nothing else (the CPU's accessed and dirty bits aside). The tables are
 * private data like the rest of the image. */
static int check_entry(const char* level, uint64_t va, uint64_t got, uint64_t want)
{
    if ((got & ~0x60ull) == want) /* ignore A (bit 5) and D (bit 6) */
        return 0;
    guest_printf("page tables: %s for 0x%llx is 0x%llx, want 0x%llx\n", level, (unsigned long long)va,
        (unsigned long long)got, (unsigned long long)want);
    return 1;
}

/* The pages sev_entry.S maps with C=0: the shared page, and the SEV-ES guest's GHCB. */
static int is_shared(uint64_t page)
{
#ifdef SEV_ES_GUEST
    if (page == SEV_ES_GHCB_GPA)
        return 1;
#endif
    return page == SEV_SHARED_GPA;
}

int sev_check_page_tables(void)
{
    const uint64_t c = sev_cbit_mask;
    const uint64_t addr = 0x000FFFFFFFFFF000ull & ~c; /* the address bits of an entry */
    uint64_t cr3;
    __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
    const uint64_t* pml4 = (const uint64_t*)(uintptr_t)(cr3 & addr);
    int bad = check_entry("PML4E", 0, pml4[0] & (c | 0xFFF), c | 0x3);
    const uint64_t* pdpt = (const uint64_t*)(uintptr_t)(pml4[0] & addr);
    bad |= check_entry("PDPTE", 0, pdpt[0] & (c | 0xFFF), c | 0x3);
    for (int i = 1; i < 512; ++i) {
        bad |= check_entry("PML4E", (uint64_t)i << 39, pml4[i], 0);
        bad |= check_entry("PDPTE", (uint64_t)i << 30, pdpt[i], 0);
    }
    const uint64_t* pd = (const uint64_t*)(uintptr_t)(pdpt[0] & addr);
    for (uint64_t i = 0; i < 512; ++i) {
        uint64_t va = i << 21;
        /* The 2 MiB regions of the shared page and of the GHCB page are split. */
        if (va != (SEV_SHARED_GPA & ~0x1FFFFFull) && va != (SEV_ES_GHCB_GPA & ~0x1FFFFFull)) {
            bad |= check_entry("PDE", va, pd[i], va | c | 0x83);
            continue;
        }
        bad |= check_entry("PDE", va, pd[i] & (c | 0xFFF), c | 0x3);
        const uint64_t* pt = (const uint64_t*)(uintptr_t)(pd[i] & addr);
        for (uint64_t j = 0; j < 512; ++j) {
            uint64_t page = va + (j << 12);
            bad |= check_entry("PTE", page, pt[j], page | (is_shared(page) ? 0 : c) | 0x3);
        }
    }
    return bad;
}
