/* sevemu test guests — the SEV-aware guest. Run as an SEV guest it shows that it runs encrypted,
 * that it received the owner's secret, and that it can share a page with the hypervisor; run as a
 * plain guest it says SEV is not active. One line each on COM1, in this order:
 *
 *   sha256("abc") = <hex>                     self-check (FIPS 180-2 Appendix B.1)
 *   sev: active, SEV_STATUS=0x<hex>, C-bit <n>   |   sev: not active
 *   secret: <N> bytes, sha256 <hex>           |   secret: none
 *   private page 0x901000: <message>
 *   shared page 0x900000: <message> (hypercall <rax>)     ("(hypercall ...)" only with SEV)
 *   sev guest: done
 *
 * The secret page (GPA 0x800000, private) holds the 8-byte magic "SEVEMUS1", a little-endian
 * uint32 length N <= 4080, a reserved uint32 and N bytes. The page tables (sev_entry.S) map
 * everything private when SEV is active, except the shared page at 0x900000.
 */
#include "guest.h"
#include "sev.h"
#include "sha256.h"

#define SECRET_MAGIC "SEVEMUS1"
#define SECRET_HEADER 16u
#define SECRET_MAX (SEV_PAGE_SIZE - SECRET_HEADER) /* 4080 */

static const char kPrivateMessage[] = "sevemu private page: the hypervisor sees only ciphertext here";
static const char kSharedMessage[] = "sevemu shared page: hello, hypervisor";
/* Its presence makes sev_entry.S map SEV_SHARED_GPA with C=0 (the other SEV guests keep it private). */
const char sev_shares_page[1] = { 1 };

static void hex(const uint8_t* p, size_t n, char* out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; ++i) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = 0;
}

static int check_digest(const uint8_t d[32], const char* want)
{
    char got[65];
    hex(d, 32, got);
    return strcmp(got, want) == 0;
}

/* FIPS 180-2 Appendix B.1 and B.2; B.2 is also fed in odd pieces to exercise the buffering. */
static int sha256_self_check(char abc_hex[65])
{
    static const char two_block[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    static const char want_abc[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    static const char want_two[] = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
    uint8_t d[32];
    sha256("abc", 3, d);
    hex(d, 32, abc_hex);
    int ok = strcmp(abc_hex, want_abc) == 0;
    sha256(two_block, sizeof two_block - 1, d);
    ok &= check_digest(d, want_two);
    struct sha256_ctx c;
    sha256_init(&c);
    for (size_t i = 0, step = 1; i < sizeof two_block - 1; i += step, step += 2)
        sha256_update(&c, two_block + i, step < sizeof two_block - 1 - i ? step : sizeof two_block - 1 - i);
    sha256_final(&c, d);
    ok &= check_digest(d, want_two);
    return ok;
}

/* Writes a NUL-padded message over a whole page, then reads it back from memory. */
static const char* write_page(uint64_t gpa, const char* message, size_t len)
{
    char* page = sev_gpa(gpa);
    memset(page, 0, SEV_PAGE_SIZE);
    memcpy(page, message, len);
    __asm__ volatile("" : : : "memory"); /* the read below comes from memory, not registers */
    return page;
}

int guest_main(void)
{
    int rc = 0;
    char digest_hex[65];
    uint8_t digest[32];

    if (!sha256_self_check(digest_hex)) {
        guest_printf("sha256 self-check: FAIL\n");
        rc = 1;
    }
    guest_printf("sha256(\"abc\") = %s\n", digest_hex);

    struct sev_info info;
    sev_platform_info(&info);
    if (info.active)
        guest_printf("sev: active, SEV_STATUS=0x%llx, C-bit %u\n", (unsigned long long)info.status, info.cbit);
    else
        guest_printf("sev: not active\n");
    if (sev_check_page_tables() != 0)
        rc = 1;

    /* The secret, as the guest owner injected it (LAUNCH_SECRET) into the private page. */
    const uint8_t* secret = sev_gpa(SEV_SECRET_GPA);
    uint32_t len = (uint32_t)secret[8] | (uint32_t)secret[9] << 8 | (uint32_t)secret[10] << 16 | (uint32_t)secret[11] << 24;
    if (memcmp(secret, SECRET_MAGIC, 8) == 0 && len <= SECRET_MAX) {
        sha256(secret + SECRET_HEADER, len, digest);
        hex(digest, 32, digest_hex);
        guest_printf("secret: %u bytes, sha256 %s\n", len, digest_hex);
    } else {
        guest_printf("secret: none\n");
    }

    /* A private page: with SEV the hypervisor sees only its ciphertext. */
    guest_printf("private page 0x%llx: %s\n", SEV_PRIVATE_GPA,
        write_page(SEV_PRIVATE_GPA, kPrivateMessage, sizeof kPrivateMessage - 1));

    /* The shared page: sev_entry.S mapped it with C=0 before we got here, so this write lands
     * in DRAM as plaintext. Then tell the hypervisor, as Linux's set_memory_decrypted() does. */
    const char* shared = write_page(SEV_SHARED_GPA, kSharedMessage, sizeof kSharedMessage - 1);
    if (info.active) {
        long r = sev_map_gpa_range(SEV_SHARED_GPA, 1, KVM_MAP_GPA_RANGE_PAGE_SZ_4K | KVM_MAP_GPA_RANGE_DECRYPTED);
        guest_printf("shared page 0x%llx: %s (hypercall %ld)\n", SEV_SHARED_GPA, shared, r);
    } else {
        guest_printf("shared page 0x%llx: %s\n", SEV_SHARED_GPA, shared);
    }

    guest_printf("sev guest: done\n");
    return rc;
}
