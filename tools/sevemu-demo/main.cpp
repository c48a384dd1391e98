// sevemu-demo — the story `make demo` tells with what exists today: one page of a guest's
// memory, as the guest sees it and as the hypervisor sees it, under the memory controller's
// per-ASID AES-XTS keys.
#include "base/encoding.h"
#include "mmu/memory_controller.h"

#include <cstdio>
#include <cstring>
#include <openssl/rand.h>
#include <string>

using namespace sevemu;
using namespace sevemu::mmu;

static void show(char const* who, std::span<uint8_t const> bytes)
{
    std::string printable;
    for (size_t i = 0; i < 48 && i < bytes.size(); ++i)
        printable += (bytes[i] >= 0x20 && bytes[i] < 0x7f) ? char(bytes[i]) : '.';
    std::printf("  %-44s %s  |%s|\n", who, to_hex(bytes.first(24)).c_str(), printable.c_str());
}

static int fail(char const* what, MemError e)
{
    std::fprintf(stderr, "sevemu-demo: %s: %s\n", what, std::string(mem_error_name(e)).c_str());
    return 1;
}

namespace sevemu::demo {
int sev_story();
}

int main()
{
    std::printf("=== Part 1: the memory controller (per-ASID AES-XTS, as on an AMD EPYC with SEV) ===\n\n");
    MemoryConfig cfg;
    cfg.dram_size = 64ull << 20;
    auto mc_or = MemoryController::create(cfg);
    if (!mc_or)
        return fail("creating DRAM", mc_or.error());
    auto& mc = **mc_or;
    std::printf("1. DRAM of %llu MiB, %u key slots (slot 0 = host SME key, slot N = ASID N), AES path: %s\n",
        (unsigned long long)(mc.dram_size() >> 20), mc.key_slot_count(), std::string(aes_path_name(mc.aes_path())).c_str());

    // The AMD-SP would do this in ACTIVATE: generate the guest's VEK and load it into the
    // memory controller's key slot for its ASID. Here the demo plays the firmware.
    uint8_t vek1[32], vek2[32];
    RAND_bytes(vek1, 32);
    RAND_bytes(vek2, 32);
    if (auto r = mc.key_slot_port().program(1, vek1); !r)
        return fail("programming ASID 1", r.error());
    if (auto r = mc.key_slot_port().program(2, vek2); !r)
        return fail("programming ASID 2", r.error());
    std::printf("2. The firmware programs fresh random keys into the slots of ASID 1 and ASID 2.\n\n");

    Spa page(0x200000);
    char const text[] = "Guest secret: the launch key is 0xC0FFEE. Nobody else may read this!";
    std::vector<uint8_t> plain(kPageSize, 0);
    std::memcpy(plain.data(), text, sizeof text);
    if (auto r = mc.write(page, plain, KeyId::slot(1)); !r)
        return fail("guest write", r.error());
    std::printf("3. The guest of ASID 1 writes a page at SPA 0x%llx (C-bit set: its private key).\n\n",
        (unsigned long long)page.value);

    std::vector<uint8_t> view(kPageSize);
    std::printf("   What each party reads at SPA 0x%llx (first bytes, hex and text):\n", (unsigned long long)page.value);
    (void)mc.read(page, view, KeyId::slot(1));
    show("the guest (ASID 1 key):", view);
    bool guest_ok = view == plain;
    (void)mc.read(page, view, KeyId::none());
    show("the hypervisor, no key (what DRAM holds):", view);
    bool hv_cipher = view != plain;
    (void)mc.read(page, view, KeyId::host());
    show("the hypervisor, host SME key:", view);
    (void)mc.read(page, view, KeyId::slot(2));
    show("another guest (ASID 2 key):", view);
    bool other_cipher = view != plain;
    (void)mc.read(page, view, KeyId::slot(1));
    show("the guest again (ASID 1 key):", view);
    guest_ok = guest_ok && view == plain;

    std::printf("\n4. The same plaintext written by ASID 1 one page further gives different ciphertext,\n"
                "   because the XTS tweak is the physical frame number:\n");
    Spa next = page + kPageSize;
    (void)mc.write(next, plain, KeyId::slot(1));
    std::vector<uint8_t> c1(kPageSize), c2(kPageSize);
    (void)mc.read(page, c1, KeyId::none());
    (void)mc.read(next, c2, KeyId::none());
    show("DRAM at the first page:", c1);
    show("DRAM at the next page:", c2);

    std::printf("\n5. The hypervisor copies the ciphertext to another frame; the guest reads it there:\n");
    Spa moved(0x300000);
    (void)mc.write(moved, c1, KeyId::none());
    (void)mc.read(moved, view, KeyId::slot(1));
    show("the guest at the moved frame:", view);
    bool replay_fails = view != plain;

    std::printf("\nResult: guest sees its plaintext: %s; hypervisor sees ciphertext: %s; other ASID sees noise: %s;\n"
                "        moved ciphertext does not decrypt: %s\n",
        guest_ok ? "yes" : "NO", hv_cipher ? "yes" : "NO", other_cipher ? "yes" : "NO", replay_fails ? "yes" : "NO");
    if (!(guest_ok && hv_cipher && other_cipher && replay_fails))
        return 1;
    return sevemu::demo::sev_story();
}
