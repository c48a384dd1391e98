/* sevemu test guests — what the SEV guest's core (sev.c) needs from its platform: the bare
 * guest (sev_bare.c with sev_entry.S) or the native known-answer build (sev_native.c). */
#ifndef SEVEMU_GUEST_SEV_H
#define SEVEMU_GUEST_SEV_H

#include <stdint.h>

/* Guest-physical addresses of the protocol (described in sev.c). */
#define SEV_SECRET_GPA 0x800000ull  /* private: the owner's secret (LAUNCH_SECRET) */
#define SEV_SHARED_GPA 0x900000ull  /* mapped with C=0: plaintext for the hypervisor */
#define SEV_PRIVATE_GPA 0x901000ull /* mapped with C=1: ciphertext for the hypervisor */
/* SEV-ES guest only: the GHCB, mapped with C=0 (sev_es.c) and reported shared (sev_entry.S):
 * in conventional memory below the Multiboot information, outside every image (link.ld). */
#define SEV_ES_GHCB_GPA 0x8000ull
#define SEV_PAGE_SIZE 4096u

/* Linux include/uapi/linux/kvm_para.h (the number) and arch/x86/include/uapi/asm/kvm_para.h
 * (the attributes: bits 1:0 page size, bit 4 encryption status, 0 = decrypted/shared). */
#define KVM_HC_MAP_GPA_RANGE 12
#define KVM_MAP_GPA_RANGE_PAGE_SZ_4K 0
#define KVM_MAP_GPA_RANGE_DECRYPTED (0 << 4)

struct sev_info {
    int active;           /* SEV_STATUS (MSR C001_0131) bit 0 */
    uint64_t status;      /* SEV_STATUS, when active */
    unsigned cbit;        /* CPUID Fn8000_001F EBX[5:0], when active */
};

void sev_platform_info(struct sev_info* info);
/* The pointer through which the core reaches a guest-physical page of the protocol. */
void* sev_gpa(uint64_t gpa);
/* KVM_HC_MAP_GPA_RANGE (gpa, number of 4 KiB pages, attributes); returns RAX. */
long sev_map_gpa_range(uint64_t gpa, uint64_t npages, uint64_t attrs);
/* Checks the page tables the entry built; prints what is wrong and returns non-zero. */
int sev_check_page_tables(void);

#endif
