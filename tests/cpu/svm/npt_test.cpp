// Nested paging (APM vol 2 §15.25): 4 KiB / 2 MiB / 1 GiB pages, A/D bits, user-only
// permission rule, NX, reserved bits, the C-bit, and the exact #NPF EXITINFO1/EXITINFO2.
#include "svm_harness.h"

using namespace svmtest;

namespace {

constexpr uint64_t P = 1, RW = 2, US = 4, A = 1u << 5, D = 1u << 6, PS = 1u << 7, NX = 1ull << 63;
constexpr uint64_t C = 1ull << 51;
constexpr uint64_t PML4 = 0x100000, PDPT = 0x101000, PD = 0x102000, PT = 0x103000, PT2 = 0x104000, PML4_ENC = 0x105000;

struct Npt : Machine {
    NptContext ctx { PML4, true, false, 51, 43 };
    Npt()
    {
        for (uint64_t t : { PML4, PDPT, PD, PT })
            zero_page(t);
        put64(PML4 + 0 * 8, PDPT | P | RW | US);
        put64(PDPT + 0 * 8, PD | P | RW | US);
        put64(PDPT + 1 * 8, 0x40000000 | PS | P | RW | US);    // 1 GiB at GPA 1 GiB
        put64(PD + 0 * 8, PT | P | RW | US);
        put64(PD + 1 * 8, 0x400000 | PS | P | RW | US);        // 2 MiB at GPA 2 MiB
        put64(PD + 2 * 8, 0x600000 | PS | P | RW | US | (1u << 13)); // reserved bit in a 2 MiB PDE
        put64(PT + 0 * 8, 0x200000 | P | RW | US);
        put64(PT + 1 * 8, 0x201000 | P | US);                  // read-only
        put64(PT + 2 * 8, 0x202000 | P | RW);                  // supervisor
        put64(PT + 3 * 8, 0x203000 | P | RW | US | NX);        // no-execute
        put64(PT + 4 * 8, 0x204000 | P | RW | US | (1ull << 45)); // above the 43-bit usable width
        put64(PT + 6 * 8, 0x206000 | P | RW | US | C);         // nested C-bit
    }
    Result<NptTranslation, NestedPageFault> walk(uint64_t gpa, NptAccess a = {}) { return npt_walk(*mc, ctx, Gpa(gpa), a); }
    uint64_t fault(uint64_t gpa, NptAccess a = {})
    {
        auto r = walk(gpa, a);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().exit_info_2 == gpa);
        return r.error().exit_info_1;
    }
};

constexpr NptAccess kRead {}, kWrite { true, false, false, false }, kFetch { false, true, false, false };

} // namespace

TEST_CASE("NPT: 4 KiB, 2 MiB and 1 GiB pages", "[svm][npt]")
{
    Npt n;
    auto t = n.walk(0x123);
    REQUIRE(t.has_value());
    CHECK(t->spa == Spa(0x200123));
    CHECK(t->page_size == 4096);
    CHECK_FALSE(t->c_bit);
    t = n.walk(0x212345);
    REQUIRE(t.has_value());
    CHECK(t->spa == Spa(0x412345));
    CHECK(t->page_size == (2u << 20));
    t = n.walk(0x7FFFFFFF);
    REQUIRE(t.has_value());
    CHECK(t->spa == Spa(0x7FFFFFFF));
    CHECK(t->page_size == (1ull << 30));
}

TEST_CASE("NPT: A on every level, D on the leaf for writes", "[svm][npt]")
{
    Npt n;
    REQUIRE(n.walk(0x10).has_value());
    CHECK(n.get64(PML4) & A);
    CHECK(n.get64(PDPT) & A);
    CHECK(n.get64(PD) & A);
    CHECK(n.get64(PT) & A);
    CHECK_FALSE(n.get64(PT) & D);
    REQUIRE(n.walk(0x10, kWrite).has_value());
    CHECK(n.get64(PT) & D);
    CHECK_FALSE(n.get64(PD) & D);
    REQUIRE(n.walk(0x200000, kWrite).has_value());
    CHECK(n.get64(PD + 8) & D); // 2 MiB leaf
}

TEST_CASE("NPT faults: exact EXITINFO1 (APM vol 2 §15.25.6, Linux PFERR_*)", "[svm][npt]")
{
    Npt n;
    constexpr uint64_t FINAL = 1ull << 32, PAGE = 1ull << 33, ENC = 1ull << 34;
    SECTION("not present")
    {
        CHECK(n.fault(0x5000) == (FINAL | 0x4));
        CHECK(n.fault(0x5678, kWrite) == (FINAL | 0x6));
        CHECK(n.fault(0x80000000) == (FINAL | 0x4)); // PDPT[2] empty
    }
    SECTION("write to a read-only page")
    {
        REQUIRE(n.walk(0x1000).has_value());
        CHECK(n.fault(0x1000, kWrite) == (FINAL | 0x7));
    }
    SECTION("supervisor page: every nested access is a user access")
    {
        CHECK(n.fault(0x2000) == (FINAL | 0x5));
        CHECK(n.fault(0x2000, kWrite) == (FINAL | 0x7));
    }
    SECTION("NX")
    {
        REQUIRE(n.walk(0x3000).has_value());
        CHECK(n.fault(0x3000, kFetch) == (FINAL | 0x15));
        REQUIRE(n.walk(0x0, kFetch).has_value());
    }
    SECTION("reserved bits")
    {
        CHECK(n.fault(0x4000) == (FINAL | 0xD));      // address bit above the usable width
        CHECK(n.fault(0x400000) == (FINAL | 0xD));    // 2 MiB PDE bit 13
        n.put64(PDPT + 3 * 8, 0x40000000 | (1u << 20) | PS | P | RW | US); // 1 GiB PDPE bit 20
        CHECK(n.fault(0xC0000000) == (FINAL | 0xD));
        n.put64(PML4 + 8, PDPT | PS | P | RW | US); // PML4E bit 7
        CHECK(n.fault(1ull << 39) == (FINAL | 0xD));
        n.ctx.nxe = false; // NX is reserved without EFER.NXE, and I/D is not reported
        CHECK(n.fault(0x3000, kFetch) == (FINAL | 0xD));
        CHECK(n.fault(0x5000, kFetch) == (FINAL | 0x4));
    }
    SECTION("C-bit is a reserved address bit while SME is off")
    {
        n.ctx.phys_bits = 48;
        CHECK(n.fault(0x6000) == (FINAL | 0xD));
    }
    SECTION("guest page-table walk and encrypted access are reported")
    {
        CHECK(n.fault(0x5000, NptAccess { false, false, true, false }) == (PAGE | 0x4));
        CHECK(n.fault(0x5000, NptAccess { true, false, true, true }) == (PAGE | ENC | 0x6));
        CHECK(n.fault(0x1000, NptAccess { true, false, false, true }) == (FINAL | ENC | 0x7));
    }
    SECTION("GPA beyond the 4-level range")
    {
        CHECK(n.fault(1ull << 48) == (FINAL | 0x4));
    }
}

TEST_CASE("NPT: the C-bit is stripped, reported, and selects the key of the next table", "[svm][npt][sev]")
{
    Npt n;
    n.ctx.sme = true;
    auto t = n.walk(0x6010);
    REQUIRE(t.has_value());
    CHECK(t->spa == Spa(0x206010));
    CHECK(t->c_bit);

    // A page table encrypted with the host key, reached through a PDE with C=1.
    n.zero_page(PT2, KeyId::host());
    n.put(PT2 + 0, 0x207000 | P | RW | US, 8, KeyId::host());
    n.put64(PD + 3 * 8, PT2 | P | RW | US | C);
    t = n.walk(0x600000 + 0x45);
    REQUIRE(t.has_value());
    CHECK(t->spa == Spa(0x207045));
    CHECK_FALSE(t->c_bit);
    CHECK(n.get(PT2, 8, KeyId::host()) & A); // A written back with the same key

    // N_CR3 with the C-bit: the PML4 itself is encrypted.
    n.zero_page(PML4_ENC, KeyId::host());
    n.put(PML4_ENC, PDPT | P | RW | US, 8, KeyId::host());
    n.ctx.n_cr3 = PML4_ENC | C;
    t = n.walk(0x123);
    REQUIRE(t.has_value());
    CHECK(t->spa == Spa(0x200123));
    // The same table read without the key is ciphertext, not this mapping.
    n.ctx.n_cr3 = PML4_ENC;
    auto r = n.walk(0x123);
    CHECK((!r.has_value() || r->spa != Spa(0x200123)));
}
