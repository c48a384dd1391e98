// Key selection (APM vol 2 Tables 15-30/15-31), row by row.
#include "svm_harness.h"

using namespace svmtest;

namespace {

constexpr uint32_t kAsid = 42;

KeySelect sev_guest(AccessType a, bool guest_c, bool nested_c)
{
    KeySelect k;
    k.mem_encryption_mod_en = true;
    k.guest_mode = true;
    k.sev = true;
    k.guest_c_honoured = true;
    k.access = a;
    k.guest_c = guest_c;
    k.nested_c = nested_c;
    k.asid = kAsid;
    return k;
}

} // namespace

TEST_CASE("Key selection: row 'SYSCFG.MemEncryptionModEn = 0' -> none for everything", "[svm][keysel]")
{
    for (bool gm : { false, true })
        for (bool c : { false, true })
            for (auto a : { AccessType::InstructionFetch, AccessType::GuestPageTableWalk, AccessType::Data, AccessType::NestedPageTableWalk }) {
                KeySelect k = sev_guest(a, c, c);
                k.mem_encryption_mod_en = false;
                k.guest_mode = gm;
                CHECK(select_key(k) == KeyId::none());
            }
}

TEST_CASE("Key selection: row 'host' -> host key iff the host PTE C-bit", "[svm][keysel]")
{
    KeySelect k;
    k.mem_encryption_mod_en = true;
    k.guest_mode = false;
    k.guest_c = true;
    CHECK(select_key(k) == KeyId::host());
    k.guest_c = false;
    CHECK(select_key(k) == KeyId::none());
    k.nested_c = true; // no nested tables for the host
    CHECK(select_key(k) == KeyId::none());
}

TEST_CASE("Key selection: row 'guest, SEV inactive' -> nested C-bit only", "[svm][keysel]")
{
    KeySelect k = sev_guest(AccessType::Data, true, false);
    k.sev = false;
    CHECK(select_key(k) == KeyId::none()); // the guest's C-bit means nothing without SEV
    k.nested_c = true;
    CHECK(select_key(k) == KeyId::host());
    k.access = AccessType::InstructionFetch;
    CHECK(select_key(k) == KeyId::host());
}

TEST_CASE("Key selection: rows 'SEV instruction fetch' and 'SEV guest page-table walk' -> guest key always", "[svm][keysel]")
{
    for (bool gc : { false, true })
        for (bool nc : { false, true }) {
            CHECK(select_key(sev_guest(AccessType::InstructionFetch, gc, nc)) == KeyId::slot(kAsid));
            CHECK(select_key(sev_guest(AccessType::GuestPageTableWalk, gc, nc)) == KeyId::slot(kAsid));
        }
}

TEST_CASE("Key selection: row 'nested page-table walk' -> host key iff nested/nCR3 C-bit", "[svm][keysel]")
{
    CHECK(select_key(sev_guest(AccessType::NestedPageTableWalk, true, false)) == KeyId::none());
    CHECK(select_key(sev_guest(AccessType::NestedPageTableWalk, true, true)) == KeyId::host());
    CHECK(select_key(sev_guest(AccessType::NestedPageTableWalk, false, true)) == KeyId::host());
}

TEST_CASE("Key selection: SEV data rows (guest C wins)", "[svm][keysel]")
{
    CHECK(select_key(sev_guest(AccessType::Data, true, false)) == KeyId::slot(kAsid));
    CHECK(select_key(sev_guest(AccessType::Data, true, true)) == KeyId::slot(kAsid));
    CHECK(select_key(sev_guest(AccessType::Data, false, true)) == KeyId::host());
    CHECK(select_key(sev_guest(AccessType::Data, false, false)) == KeyId::none());
}

TEST_CASE("Key selection: guest C honoured only in long mode / PAE; VTE forces private", "[svm][keysel]")
{
    KeySelect k = sev_guest(AccessType::Data, false, false);
    k.guest_c_honoured = false; // real mode, 32-bit paging, paging off
    CHECK(select_key(k) == KeyId::slot(kAsid));
    k = sev_guest(AccessType::Data, false, true);
    k.vte = true;
    CHECK(select_key(k) == KeyId::slot(kAsid));
    k.sev_es = true; // VTE applies to SEV without ES only
    CHECK(select_key(k) == KeyId::host());
    k = sev_guest(AccessType::Data, false, false);
    k.sev_es = true; // an SEV-ES guest can share pages (GHCB)
    CHECK(select_key(k) == KeyId::none());
}
