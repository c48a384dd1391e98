// sevemu — nested page walk (APM vol 2 §15.25.5-15.25.6; long-mode format §5.3.5, protection §5.6).
#include "cpu/svm/npt.h"

namespace sevemu::cpu::svm {

namespace {

constexpr uint64_t P = 1, RW = 2, US = 4, A = 1u << 5, D = 1u << 6, PS = 1u << 7;
constexpr uint64_t NX = 1ull << 63;

uint64_t read_entry(mmu::MemoryController& mc, Spa at, mmu::KeyId key)
{
    uint8_t b[8] {};
    if (!mc.read(at, std::span<uint8_t>(b, 8), key))
        return 0; // outside DRAM: not present (as mmu/paging.cpp, QUIRKS.md)
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; ++i)
        v |= uint64_t(b[i]) << (8 * i);
    return v;
}

void write_entry(mmu::MemoryController& mc, Spa at, mmu::KeyId key, uint64_t v)
{
    uint8_t b[8];
    for (unsigned i = 0; i < 8; ++i)
        b[i] = uint8_t(v >> (8 * i));
    (void)mc.write(at, std::span<uint8_t const>(b, 8), key);
}

} // namespace

Result<NptTranslation, NestedPageFault> npt_walk(mmu::MemoryController& mc, NptContext const& ctx, Gpa gpa, NptAccess acc)
{
    // APM vol 2 §15.25.6: EXITINFO1 carries the #PF-style code of the nested fault, U always set
    // (all nested accesses are user accesses, §15.25.5), plus whether the fault hit the final GPA
    // or a guest page-table access, and whether the access was encrypted.
    uint64_t code = npf::U | (acc.write ? npf::W : 0) | (acc.fetch && ctx.nxe ? npf::ID : 0) |
                    (acc.guest_page_walk ? npf::GUEST_PAGE : npf::GUEST_FINAL) | (acc.encrypted ? npf::ENC : 0);
    auto fault = [&](uint64_t extra) { return make_unexpected(NestedPageFault { code | extra, gpa.value }); };

    // A GPA the 4-level table cannot map (bits 63:48 set) has no translation: not present.
    if (gpa.value >> 48)
        return fault(0);

    // Address field and reserved bits (§5.3.5, §7.10): bits between the usable width and 51
    // are reserved except the C-bit when memory encryption is on; bit 63 unless EFER.NXE.
    uint64_t c_mask = ctx.sme ? (1ull << ctx.c_bit) : 0;
    uint64_t addr_mask = ((1ull << ctx.phys_bits) - 1) & ~kPageMask;
    uint64_t high_rsvd = (((1ull << 52) - 1) & ~((1ull << ctx.phys_bits) - 1)) & ~c_mask;
    uint64_t nx_rsvd = ctx.nxe ? 0 : NX;

    // N_CR3: the PML4 base, its C-bit selects the key of the PML4 read (APM vol 2 Tables 15-30/15-31,
    // the nested page-table walk). A hypervisor that set reserved N_CR3 bits gets them ignored
    // above the address field (they cannot reach past DRAM: the address is masked).
    bool c = ctx.sme && (ctx.n_cr3 & c_mask);
    Spa table(ctx.n_cr3 & addr_mask);
    bool writable = true, executable = true;

    for (int level = 4; level >= 1; --level) {
        unsigned shift = 12 + 9 * (level - 1);
        Spa at = table + ((gpa.value >> shift) & 0x1FF) * 8;
        mmu::KeyId key = (ctx.sme && c) ? mmu::KeyId::host() : mmu::KeyId::none();
        uint64_t e = read_entry(mc, at, key);
        if (!(e & P))
            return fault(0);
        bool leaf = level == 1 || ((level == 2 || level == 3) && (e & PS));
        uint64_t rsvd = high_rsvd | nx_rsvd;
        if (level == 4)
            rsvd |= PS; // PML4E bit 7 MBZ
        if (leaf && level == 3)
            rsvd |= 0x3FFFE000ull; // 1 GiB page: address bits 29:13 MBZ
        if (leaf && level == 2)
            rsvd |= 0x1FE000ull; // 2 MiB page: address bits 20:13 MBZ
        if (e & rsvd)
            return fault(npf::P | npf::RSVD);

        // Every nested access is a user access: U/S=0 anywhere faults (§15.25.5).
        if (!(e & US))
            return fault(npf::P);
        writable = writable && (e & RW);
        executable = executable && !(ctx.nxe && (e & NX));

        c = ctx.sme && (e & c_mask);
        if (!leaf) {
            if (!(e & A))
                write_entry(mc, at, key, e | A);
            table = Spa(e & addr_mask);
            continue;
        }

        // Permissions on the final translation (§5.6 for user accesses; CR0.WP does not matter).
        if (acc.write && !writable)
            return fault(npf::P);
        if (acc.fetch && !executable)
            return fault(npf::P);
        uint64_t upd = e | A | (acc.write ? D : 0);
        if (upd != e)
            write_entry(mc, at, key, upd);
        uint64_t page_size = 1ull << shift;
        uint64_t frame = e & addr_mask & ~(page_size - 1);
        NptTranslation t;
        t.spa = Spa(frame | (gpa.value & (page_size - 1)));
        t.c_bit = c;
        t.page_size = page_size;
        t.writable = writable;
        t.executable = executable;
        return t;
    }
    return fault(0); // unreachable: level 1 is always a leaf
}

} // namespace sevemu::cpu::svm
