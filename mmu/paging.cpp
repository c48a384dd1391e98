// sevemu — page walks (APM vol 2 §5.3 legacy, §5.3.3-5.3.4 PAE, §5.3.5 long mode; protection
// §5.6; SMEP/SMAP §5.6.4-5; error code §8.4.2; memory encryption §7.10.1).
#include "mmu/paging.h"

namespace sevemu::mmu {

namespace {

constexpr uint64_t P = 1, RW = 2, US = 4, A = 1u << 5, D = 1u << 6, PS = 1u << 7, G = 1u << 8;
constexpr uint64_t NX = 1ull << 63;

struct Level {
    Spa addr {};    // where the entry lives
    KeyId key { KeyId::none() }; // the key the entry is read with
    uint64_t value {}; // as read
    unsigned size {}; // 4 or 8
    uint64_t gpa {};  // the entry's address as the tables name it (guest-physical under NPT)
    bool parent_c {}; // the C-bit that selected its key
};

uint64_t read_entry(MemoryController& mc, Spa at, KeyId key, unsigned size)
{
    uint8_t b[8] {};
    if (!mc.read(at, std::span<uint8_t>(b, size), key))
        return 0; // not DRAM: reads as not present (QUIRKS.md)
    uint64_t v = 0;
    for (unsigned i = 0; i < size; ++i)
        v |= uint64_t(b[i]) << (8 * i);
    return v;
}

void write_entry(MemoryController& mc, Level const& l, uint64_t v)
{
    uint8_t b[8];
    for (unsigned i = 0; i < 8; ++i)
        b[i] = uint8_t(v >> (8 * i));
    (void)mc.write(l.addr, std::span<uint8_t const>(b, l.size), l.key);
}

} // namespace

Result<Translation, PageFault> walk(MemoryController& mc, PagingContext const& ctx, uint64_t lin, AccessKind acc)
{
    bool user = acc.user && !acc.implicit_supervisor;
    uint32_t err = (acc.write ? pf::W : 0) | (user ? pf::U : 0) | (acc.fetch && (ctx.nxe || ctx.smep) ? pf::ID : 0);
    auto fault = [&](uint32_t extra) { return make_unexpected(PageFault { err | extra }); };
    // Where a table entry is: the address itself with the key its parent's C-bit selects, or
    // (nested paging) what the resolver says.
    auto locate = [&](uint64_t addr, bool c) -> Result<TableRef, PageFault> {
        if (ctx.resolver)
            return ctx.resolver->table(addr, c, false);
        return TableRef { Spa(addr), key_for(ctx, c) };
    };

    if (ctx.mode == PagingMode::None) {
        Translation t;
        t.page = Spa(lin & ~kPageMask);
        t.writable = t.user = t.executable = true;
        t.dirty = true;
        return t;
    }

    // Physical-address field and the bits that must be zero (§5.3.5 "reserved bits";
    // APM vol 2 §7.10, Linux amd.c early_detect_mem_encrypt: bits between the reduced width and 51 are
    // reserved, except C).
    uint64_t c_mask = ctx.sme ? (1ull << ctx.c_bit) : 0;
    uint64_t addr_mask = ((1ull << ctx.phys_bits) - 1) & ~kPageMask;
    uint64_t high_rsvd = (((1ull << 52) - 1) & ~((1ull << ctx.phys_bits) - 1)) & ~c_mask;
    uint64_t nx_rsvd = ctx.nxe ? 0 : NX;

    Level levels[4];
    unsigned nlev = 0;
    uint64_t entry = 0;
    uint64_t page_size = kPageSize;
    bool all_user = true, all_write = true, any_nx = false;
    Spa frame;
    bool c = false;

    if (ctx.mode == PagingMode::Legacy32) {
        auto pde_at = locate((ctx.cr3 & 0xFFFFF000u) + ((lin >> 22) & 0x3FF) * 4, false);
        if (!pde_at)
            return make_unexpected(pde_at.error());
        uint64_t pde = read_entry(mc, pde_at->spa, pde_at->key, 4);
        if (!(pde & P))
            return fault(0);
        levels[nlev++] = { pde_at->spa, pde_at->key, pde, 4, (ctx.cr3 & 0xFFFFF000u) + ((lin >> 22) & 0x3FF) * 4, false };
        all_user &= bool(pde & US);
        all_write &= bool(pde & RW);
        if ((pde & PS) && ctx.pse) {
            // 4 MiB page, PSE-40 (AMD): bits 20:13 are physical bits 39:32; bit 21 reserved.
            if (pde & (1u << 21))
                return fault(pf::P | pf::RSV);
            page_size = 4u << 20;
            uint64_t base = (pde & 0xFFC00000u) | ((pde >> 13) & 0xFF) << 32;
            frame = Spa(base + (lin & 0x3FF000));
            entry = pde;
        } else {
            uint64_t pte_gpa = (pde & 0xFFFFF000u) + ((lin >> 12) & 0x3FF) * 4;
            auto pte_at = locate(pte_gpa, false);
            if (!pte_at)
                return make_unexpected(pte_at.error());
            uint64_t pte = read_entry(mc, pte_at->spa, pte_at->key, 4);
            if (!(pte & P))
                return fault(0);
            levels[nlev++] = { pte_at->spa, pte_at->key, pte, 4, pte_gpa, false };
            all_user &= bool(pte & US);
            all_write &= bool(pte & RW);
            frame = Spa(pte & 0xFFFFF000u);
            entry = pte;
        }
    } else {
        bool parent_c = ctx.cr3 & c_mask;
        uint64_t table;
        int top;
        if (ctx.mode == PagingMode::Pae) {
            // PDPTE (§5.3.3): bits 1-2 and 5-8 reserved, no NX.
            auto pdpte_at = locate((ctx.cr3 & 0xFFFFFFE0u) + ((lin >> 30) & 3) * 8, parent_c);
            if (!pdpte_at)
                return make_unexpected(pdpte_at.error());
            uint64_t pdpte = read_entry(mc, pdpte_at->spa, pdpte_at->key, 8);
            if (!(pdpte & P))
                return fault(0);
            if (pdpte & (0x1E6 | high_rsvd | NX))
                return fault(pf::P | pf::RSV);
            parent_c = pdpte & c_mask;
            table = pdpte & addr_mask;
            top = 1;
        } else {
            table = ctx.cr3 & addr_mask;
            top = 3;
        }
        for (int lvl = top; lvl >= 0; --lvl) {
            unsigned shift = 12 + 9 * lvl;
            uint64_t at_gpa = table + ((lin >> shift) & 0x1FF) * 8;
            auto at = locate(at_gpa, parent_c);
            if (!at)
                return make_unexpected(at.error());
            uint64_t e = read_entry(mc, at->spa, at->key, 8);
            if (!(e & P))
                return fault(0);
            uint64_t rsvd = high_rsvd | nx_rsvd;
            bool leaf = lvl == 0 || ((e & PS) && (lvl == 1 || lvl == 2));
            if (lvl == 3 && (e & PS))
                rsvd |= PS; // PML4E.PS must be zero
            if (leaf && lvl > 0)
                rsvd |= ((1ull << shift) - 1) & ~0x1FFFull; // large-frame low address bits (PAT at 12)
            if (e & rsvd)
                return fault(pf::P | pf::RSV);
            levels[nlev++] = { at->spa, at->key, e, 8, at_gpa, parent_c };
            all_user &= bool(e & US);
            all_write &= bool(e & RW);
            any_nx |= bool(e & NX) && ctx.nxe;
            parent_c = e & c_mask;
            if (leaf) {
                page_size = 1ull << shift;
                uint64_t base = e & addr_mask & ~(page_size - 1);
                frame = Spa(base + (lin & (page_size - 1) & ~kPageMask));
                entry = e;
                c = ctx.sme && (e & c_mask);
                break;
            }
            table = e & addr_mask;
        }
    }

    // Protection (§5.6).
    if (user) {
        if (!all_user)
            return fault(pf::P);
        if (acc.write && !all_write)
            return fault(pf::P);
    } else {
        if (acc.write && !all_write && ctx.wp)
            return fault(pf::P);
        if (all_user && acc.fetch && ctx.smep)
            return fault(pf::P);
        if (all_user && !acc.fetch && ctx.smap && (!acc.smap_override || acc.implicit_supervisor))
            return fault(pf::P);
    }
    if (acc.fetch && any_nx)
        return fault(pf::P);

    // Accessed on every level, Dirty on the leaf for a write.
    for (unsigned i = 0; i < nlev; ++i) {
        uint64_t v = levels[i].value | A;
        if (i == nlev - 1 && acc.write)
            v |= D;
        if (v != levels[i].value) {
            if (ctx.resolver) {
                // Under nested paging the A/D update is a write to guest memory (§15.25.4).
                auto w = ctx.resolver->table(levels[i].gpa, levels[i].parent_c, true);
                if (!w)
                    return make_unexpected(w.error());
            }
            write_entry(mc, levels[i], v);
        }
    }

    Translation t;
    t.page = frame;
    t.encrypted = c;
    t.user = all_user;
    t.writable = user ? all_write : (all_write || !ctx.wp);
    t.executable = !any_nx;
    t.global = ctx.pge && (entry & G);
    t.dirty = acc.write || (entry & D);
    t.page_size = page_size;
    return t;
}

} // namespace sevemu::mmu
