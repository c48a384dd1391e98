// sevemu — x86 page walks: 32-bit (with PSE), PAE and 4-level long-mode paging, with A/D-bit
// updates, NX, SMEP/SMAP, U/S and R/W rules and exact #PF error codes (APM vol 2 §5.3-5.6,
// §8.4.2). Memory encryption (APM vol 2 §7.10.1): the C-bit of each entry (position from CPUID
// 8000_001F EBX[5:0]) is stripped from the physical address and selects the key for the next
// access — the next table level, or the final data page. C=1 means the host key (slot 0) when
// SYSCFG.MemEncryptionModEn=1; otherwise C is an ordinary (reserved-above-MAXPHYADDR) bit.
#pragma once

#include "base/addr.h"
#include "base/result.h"
#include "mmu/memory_controller.h"

#include <cstdint>

namespace sevemu::mmu {

enum class PagingMode : uint8_t { None, Legacy32, Pae, Long4 };

struct PageFault;
struct TableRef {
    Spa spa;                     // where the table entry is in system-physical memory
    KeyId key { KeyId::none() }; // the key it is read and written with
};
// A guest's page walk under nested paging (APM vol 2 §15.25.4): the table addresses in CR3 and
// in each entry are guest-physical; the resolver translates each one (the CPU does a nested walk)
// and picks its key (SEV: a guest page-table walk is always private, §15.34.5). A failed nested
// walk comes back as a PageFault with `nested` set, which the CPU turns into #VMEXIT(NPF).
class TableResolver {
public:
    virtual ~TableResolver() = default;
    // gpa: the entry's guest-physical address; c: the C-bit of CR3 or of the parent entry;
    // write: the access is the A/D-bit update.
    virtual Result<TableRef, PageFault> table(uint64_t gpa, bool c, bool write) = 0;
};

// Everything a walk depends on, captured from CR0/CR3/CR4/EFER/RFLAGS by the CPU.
struct PagingContext {
    PagingMode mode { PagingMode::None };
    uint64_t cr3 {};
    bool wp {}, nxe {}, pse {}, smep {}, smap {}, pge {};
    bool sme {};              // SYSCFG.MemEncryptionModEn
    uint8_t c_bit { 51 };     // C-bit position
    uint8_t phys_bits { 48 }; // usable physical-address width (reduced when sme)
    TableResolver* resolver {}; // nested paging: table addresses are guest-physical
};

struct AccessKind {
    bool write {}, user {}, fetch {};
    bool implicit_supervisor {}; // descriptor-table/TSS accesses: supervisor even at CPL 3
    bool smap_override {};       // RFLAGS.AC=1 at CPL<3 (or implicit access)
};

// #PF error code bits (APM vol 2 §8.4.2).
namespace pf {
inline constexpr uint32_t P = 1, W = 2, U = 4, RSV = 8, ID = 16;
}

struct Translation {
    Spa page;            // 4 KiB frame holding the address (C-bit stripped)
    bool encrypted {};   // final C-bit (meaningful when ctx.sme)
    bool writable {};    // effective for this access's privilege
    bool user {};        // U/S=1 at every level
    bool executable {};  // no NX at any level
    bool global {};
    bool dirty {};       // D is now set (writes may go to it without another walk)
    uint64_t page_size { kPageSize };
};

struct PageFault {
    uint32_t error_code {};
    // Set when a table access failed its nested walk: the fault belongs to the hypervisor
    // (#VMEXIT(NPF) with these EXITINFO1/EXITINFO2), not to the guest.
    bool nested {};
    uint64_t nested_info1 {}, nested_info2 {};
};

// Walks the tables for linear address `lin`, checks the access, updates A (and D for writes)
// and returns the translation or the #PF error code. Table entries are read through the
// memory controller with the key their parent's C-bit selects; an entry in non-DRAM space
// reads as 0 (not present).
Result<Translation, PageFault> walk(MemoryController&, PagingContext const&, uint64_t lin, AccessKind);

inline KeyId key_for(PagingContext const& ctx, bool c)
{
    return (ctx.sme && c) ? KeyId::host() : KeyId::none();
}

} // namespace sevemu::mmu
