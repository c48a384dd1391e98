// sevemu — nested paging (NPT): guest-physical → system-physical through the table rooted at the
// VMCB's N_CR3 (APM vol 2 §15.25). The nested tables have the host's long-mode 4-level format
// (§15.25.3: the nested walk uses the paging mode the host had at VMRUN; sevemu's hosts are
// 64-bit, QUIRKS.md), every nested access is a user access (§15.25.5), and a failure is a
// #VMEXIT(NPF) with EXITINFO1 = the fault code (§15.25.6) and EXITINFO2 = the GPA.
//
// Memory encryption (APM vol 2 §7.10, §15.34.5-15.34.6, Tables 15-30/15-31): the C-bit in N_CR3 and in each
// nested entry is the host's C-bit: it is stripped from the next address and selects the key the
// next access uses (host key when SYSCFG.MemEncryptionModEn=1, else it is a reserved address bit).
// The final C-bit is reported so that select_key() (svm.h) can pick the data key.
#pragma once

#include "base/addr.h"
#include "base/result.h"
#include "mmu/memory_controller.h"

#include <cstdint>

namespace sevemu::cpu::svm {

// #NPF EXITINFO1 bits (APM vol 2 §15.25.6; Linux PFERR_*).
namespace npf {
inline constexpr uint64_t P = 1ull << 0, W = 1ull << 1, U = 1ull << 2, RSVD = 1ull << 3, ID = 1ull << 4,
                          PK = 1ull << 5, SS = 1ull << 6, RMP = 1ull << 31, GUEST_FINAL = 1ull << 32,
                          GUEST_PAGE = 1ull << 33, ENC = 1ull << 34, SIZEM = 1ull << 35, VMPL = 1ull << 36;
}

struct NptContext {
    uint64_t n_cr3 {};       // VMCB N_CR3: PML4 base; may carry the host C-bit
    bool nxe {};             // host EFER.NXE at VMRUN: without it bit 63 is reserved
    bool sme {};             // SYSCFG.MemEncryptionModEn
    uint8_t c_bit { 51 };    // CPUID 8000_001F EBX[5:0]
    uint8_t phys_bits { 43 };// usable host physical width (MAXPHYADDR minus the SME reduction)
};

struct NptAccess {
    bool write {};
    bool fetch {};
    bool guest_page_walk {}; // the access reads/writes a guest page-table entry (EXITINFO1[33])
    bool encrypted {};       // the guest access was private (guest C=1 or forced): EXITINFO1[34]
};

struct NptTranslation {
    Spa spa;                 // system-physical address of the GPA (C-bit stripped)
    bool c_bit {};           // final nested C-bit
    uint64_t page_size {};   // 4 KiB, 2 MiB or 1 GiB
    bool writable {}, executable {};
};

struct NestedPageFault {
    uint64_t exit_info_1 {}; // EXITINFO1 (npf:: bits)
    uint64_t exit_info_2 {}; // EXITINFO2: the faulting GPA
};

// Walks the nested tables for `gpa`, checks the access, sets A on every level and D on the leaf
// for a write, and returns the translation or the exact #NPF information. Table entries are read
// with the key their parent's C-bit (or N_CR3's) selects; an entry outside DRAM reads as 0.
Result<NptTranslation, NestedPageFault> npt_walk(mmu::MemoryController&, NptContext const&, Gpa, NptAccess);

} // namespace sevemu::cpu::svm
