// The memcrypt suite: the memory encryption engine beside OpenSSL's EVP AES-XTS, measured in the
// same run on the same buffers (INTERFACES.md §7, issue 2).
//
// Page cases: a 16 MiB buffer of 4 KiB pages, each its own XTS data unit with its own PFN tweak,
// the way the memory controller uses them (and, for the best path, a 256 KiB buffer that stays
// in L2, to show the cipher without the memory traffic). Every case of one group (reference and our paths) is
// timed in turn, round after round, and the best round counts, so a neighbour's load on the
// shared machine hits all of them alike rather than one.
//
// Line cases: one 64-byte line per call. OpenSSL has no "line j of a data unit" entry point, so
// the reference is EVP AES-XTS on a 64-byte data unit (IV set per call): the same four blocks of
// AES work and the same per-call setup a caller would pay.
//
// Memory-controller cases (ns per operation through MemoryController::read / page_pointer): a
// plaintext-cache hit, a miss (decrypt a page, evicting a clean one), and a key switch (the page
// cached under another key is written back if dirty, then decrypted under the new key). Misses
// and key switches also run on a controller with the Portable (OpenSSL EVP) engine as reference.
#include "bench.h"

#include "mmu/aes_xts.h"
#include "mmu/memory_controller.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <openssl/evp.h>
#include <random>
#include <string>

namespace sevemu::bench {
namespace {

using mmu::AesPath;
using mmu::XtsCipher;
using Clock = std::chrono::steady_clock;

constexpr size_t kPageBufferBytes = 16u << 20;
constexpr size_t kHotBufferBytes = 256u << 10;
constexpr size_t kLineBufferBytes = 4u << 20;
constexpr uint64_t kFirstPfn = 0x10'0000'0000ull; // page 2^36: tweaks well above 2^32
constexpr int kRounds = 9;
constexpr char const* kSuite = "memcrypt";

struct FreeDeleter {
    void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t[], FreeDeleter>;

Buffer make_buffer(size_t bytes, uint64_t seed)
{
    Buffer b(static_cast<uint8_t*>(std::aligned_alloc(4096, bytes)));
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < bytes; i += 8) {
        uint64_t v = rng();
        std::memcpy(b.get() + i, &v, 8);
    }
    return b;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// One warm-up pass of each, then kRounds rounds timing each case once; the best time per case.
std::vector<double> best_round_robin(std::vector<std::function<void()>> const& cases, int rounds = kRounds)
{
    for (auto const& c : cases)
        c();
    std::vector<double> best(cases.size(), 1e30);
    for (int r = 0; r < rounds; ++r) {
        for (size_t i = 0; i < cases.size(); ++i) {
            auto t0 = Clock::now();
            cases[i]();
            best[i] = std::min(best[i], seconds_since(t0));
        }
    }
    return best;
}

// OpenSSL EVP AES-XTS, key set once, IV (the PFN, 16 bytes little-endian) set per data unit.
class EvpXts {
public:
    EvpXts(std::vector<uint8_t> const& key, bool encrypt)
    {
        m_ctx = EVP_CIPHER_CTX_new();
        EVP_CipherInit_ex(m_ctx, key.size() == 32 ? EVP_aes_128_xts() : EVP_aes_256_xts(), nullptr, key.data(), nullptr,
            encrypt ? 1 : 0);
    }
    ~EvpXts() { EVP_CIPHER_CTX_free(m_ctx); }
    EvpXts(EvpXts const&) = delete;
    EvpXts& operator=(EvpXts const&) = delete;

    void run(uint8_t const* in, uint8_t* out, size_t len, uint64_t tweak) const
    {
        uint8_t iv[16] {};
        for (int i = 0; i < 8; ++i)
            iv[i] = uint8_t(tweak >> (8 * i));
        int n = 0;
        EVP_CipherInit_ex(m_ctx, nullptr, nullptr, nullptr, iv, -1);
        EVP_CipherUpdate(m_ctx, out, &n, in, int(len));
    }

private:
    EVP_CIPHER_CTX* m_ctx {};
};

std::vector<uint8_t> random_key(size_t len, uint64_t seed)
{
    std::mt19937_64 rng(seed);
    std::vector<uint8_t> k(len);
    for (auto& b : k)
        b = uint8_t(rng());
    return k;
}

double gbps(size_t bytes, double seconds) { return double(bytes) / seconds / 1e9; }

std::string key_name(size_t key_len) { return key_len == 32 ? "aes128-xts" : "aes256-xts"; }
std::string evp_name(size_t key_len) { return key_len == 32 ? "EVP_aes_128_xts" : "EVP_aes_256_xts"; }

std::vector<AesPath> supported_paths()
{
    std::vector<AesPath> v;
    for (AesPath p : { AesPath::Vaes, AesPath::AesNi, AesPath::Portable })
        if (mmu::aes_path_supported(p))
            v.push_back(p);
    return v;
}

// The page and line paths for one key size.
void cipher_cases(Report& report, size_t key_len)
{
    auto key = random_key(key_len, 0x5e5e + key_len);
    std::vector<AesPath> paths = supported_paths();
    AesPath best = mmu::best_aes_path();
    std::vector<std::unique_ptr<XtsCipher>> ciphers;
    for (AesPath p : paths)
        ciphers.push_back(std::move(*XtsCipher::create(key, p)));
    auto best_cipher = std::move(*XtsCipher::create(key, best));

    Buffer in = make_buffer(kPageBufferBytes, 1), out = make_buffer(kPageBufferBytes, 2);
    // The 16 MiB buffer (the acceptance case: memory traffic included), then a 256 KiB one that
    // stays in L2, where only the cipher counts (best path only).
    for (size_t bytes : { kPageBufferBytes, kHotBufferBytes }) {
        bool const hot = bytes == kHotBufferBytes;
        std::string const suffix = hot ? ", L2-resident 256 KiB" : "";
        size_t const pages = bytes / mmu::kXtsDataUnit;
        // The small buffer is encrypted 16 times per timed sample (4 MiB), far above the clock's
        // resolution.
        size_t const passes = hot ? 16 : 1;
        for (bool encrypt : { true, false }) {
            char const* dir = encrypt ? "encrypt" : "decrypt";
            EvpXts evp(key, encrypt);
            std::vector<std::function<void()>> cases;
            cases.push_back([&] {
                for (size_t n = 0; n < passes * pages; ++n) {
                    size_t i = n % pages;
                    evp.run(in.get() + i * 4096, out.get() + i * 4096, 4096, kFirstPfn + i);
                }
            });
            auto ours = [&](XtsCipher const& c) {
                return [&c, &in, &out, pages, passes, encrypt] {
                    for (size_t n = 0; n < passes * pages; ++n) {
                        size_t i = n % pages;
                        if (encrypt)
                            c.encrypt_page(in.get() + i * 4096, out.get() + i * 4096, kFirstPfn + i);
                        else
                            c.decrypt_page(in.get() + i * 4096, out.get() + i * 4096, kFirstPfn + i);
                    }
                };
            };
            cases.push_back(ours(*best_cipher));
            if (!hot)
                for (auto const& c : ciphers)
                    cases.push_back(ours(*c));
            auto t = best_round_robin(cases);
            std::string ref = "OpenSSL " + evp_name(key_len) + " 4 KiB" + suffix;
            double ref_v = gbps(passes * bytes, t[0]);
            report.add({ kSuite, "page " + key_name(key_len) + " " + dir + " best=" + std::string(mmu::aes_path_name(best)) + suffix,
                "GB/s", gbps(passes * bytes, t[1]), ref, ref_v });
            for (size_t i = 0; !hot && i < paths.size(); ++i)
                report.add({ kSuite, "page " + key_name(key_len) + " " + dir + " [" + std::string(mmu::aes_path_name(paths[i])) + "]",
                    "GB/s", gbps(passes * bytes, t[2 + i]), ref, ref_v });
        }
    }

    // Lines: line n of the buffer is line n % 64 of page n / 64.
    size_t const lines = kLineBufferBytes / mmu::kCacheLine;
    for (bool encrypt : { true, false }) {
        char const* dir = encrypt ? "encrypt" : "decrypt";
        EvpXts evp(key, encrypt);
        std::vector<std::function<void()>> cases;
        cases.push_back([&] {
            for (size_t n = 0; n < lines; ++n)
                evp.run(in.get() + n * 64, out.get() + n * 64, 64, kFirstPfn + n / 64);
        });
        auto ours = [&](XtsCipher const& c) {
            return [&c, &in, &out, lines, encrypt] {
                for (size_t n = 0; n < lines; ++n) {
                    if (encrypt)
                        c.encrypt_line(in.get() + n * 64, out.get() + n * 64, kFirstPfn + n / 64, unsigned(n % 64));
                    else
                        c.decrypt_line(in.get() + n * 64, out.get() + n * 64, kFirstPfn + n / 64, unsigned(n % 64));
                }
            };
        };
        cases.push_back(ours(*best_cipher));
        for (auto const& c : ciphers)
            cases.push_back(ours(*c));
        auto t = best_round_robin(cases, 5);
        std::string ref = "OpenSSL " + evp_name(key_len) + " 64 B unit";
        double ref_v = gbps(kLineBufferBytes, t[0]);
        report.add({ kSuite, "line " + key_name(key_len) + " " + dir + " best=" + std::string(mmu::aes_path_name(best)), "GB/s",
            gbps(kLineBufferBytes, t[1]), ref, ref_v });
        for (size_t i = 0; i < paths.size(); ++i)
            report.add({ kSuite, "line " + key_name(key_len) + " " + dir + " [" + std::string(mmu::aes_path_name(paths[i])) + "]",
                "GB/s", gbps(kLineBufferBytes, t[2 + i]), ref, ref_v });
    }
}

// --- Through the memory controller.

constexpr uint64_t kMcDram = 64ull << 20;  // 16384 pages
constexpr uint32_t kMcCachePages = 1024;   // 4 MiB of plaintext cache: a sweep of DRAM always misses
volatile uint64_t g_sink;

std::unique_ptr<mmu::MemoryController> make_controller(AesPath path)
{
    mmu::MemoryConfig cfg;
    cfg.dram_size = kMcDram;
    cfg.cache_pages = kMcCachePages;
    cfg.aes_path = path;
    auto mc = mmu::MemoryController::create(cfg);
    if (!mc)
        return nullptr;
    auto& m = **mc;
    if (!m.key_slot_port().program(1, random_key(32, 101)) || !m.key_slot_port().program(2, random_key(32, 202)))
        return nullptr;
    // DRAM holds random "ciphertext", written raw, so that no page is the shared zero page.
    Buffer fill = make_buffer(kMcDram, 3);
    if (!m.write(Spa(0), { fill.get(), kMcDram }, mmu::KeyId::none()))
        return nullptr;
    return std::move(*mc);
}

// Nanoseconds per op of `op(i)` for i in [0, n): the best of several rounds.
double ns_per_op(std::function<void(uint64_t)> const& op, uint64_t n, int rounds = 5)
{
    auto pass = [&] {
        for (uint64_t i = 0; i < n; ++i)
            op(i);
    };
    return best_round_robin({ pass }, rounds)[0] * 1e9 / double(n);
}

struct ControllerCosts {
    double hit_read {}, hit_pointer {}, miss {}, switch_clean {}, switch_dirty {};
};

bool controller_costs(AesPath path, ControllerCosts& out)
{
    auto mc = make_controller(path);
    if (!mc)
        return false;
    auto& m = *mc;
    auto const k1 = mmu::KeyId::slot(1), k2 = mmu::KeyId::slot(2);
    uint64_t const pages = kMcDram / 4096;
    uint8_t word[8];
    auto read8 = [&](uint64_t page, mmu::KeyId k) {
        if (!m.read(Spa::from_pfn(page) + 8 * (page % 512), word, k))
            std::abort();
        uint64_t v;
        std::memcpy(&v, word, 8);
        g_sink = g_sink + v;
    };
    // Hits: 512 pages that stay in the cache, visited in turn.
    for (uint64_t p = 0; p < 512; ++p)
        read8(p, k1);
    out.hit_read = ns_per_op([&](uint64_t i) { read8(i % 512, k1); }, 1 << 20);
    out.hit_pointer = ns_per_op(
        [&](uint64_t i) {
            auto p = m.page_pointer(Spa::from_pfn(i % 512), k1, mmu::Access::Read);
            if (!p)
                std::abort();
            g_sink = g_sink + (*p)[i % 4096];
        },
        1 << 20);
    // Misses: a sweep of all of DRAM through a cache a sixteenth its size; the evicted copies
    // are clean, so this is one page decryption plus the cache bookkeeping.
    out.miss = ns_per_op([&](uint64_t i) { read8(i % pages, k1); }, pages);
    // Key switch: the same page read alternately under two keys (clean copy dropped, decrypt),
    // then written alternately (dirty copy encrypted back to DRAM, then decrypt).
    out.switch_clean = ns_per_op([&](uint64_t i) { read8(7, i & 1 ? k2 : k1); }, 1 << 14);
    out.switch_dirty = ns_per_op(
        [&](uint64_t i) {
            if (!m.write(Spa::from_pfn(9) + 64, { word, 8 }, i & 1 ? k2 : k1))
                std::abort();
        },
        1 << 14);
    return true;
}

} // namespace

int suite_memcrypt(Report& report)
{
    cipher_cases(report, 32);
    cipher_cases(report, 64);

    AesPath best = mmu::best_aes_path();
    ControllerCosts ours, evp;
    if (!controller_costs(best, ours) || !controller_costs(AesPath::Portable, evp)) {
        std::fprintf(stderr, "sevemu-bench: memcrypt: cannot create a memory controller\n");
        return 1;
    }
    std::string const tag = " (aes128-xts, " + std::string(mmu::aes_path_name(best)) + ")";
    std::string const ref = "same, Portable engine (EVP)";
    report.add({ kSuite, "mc cache hit, read 8 B" + tag, "ns/op", ours.hit_read, "", 0, false });
    report.add({ kSuite, "mc cache hit, page_pointer" + tag, "ns/op", ours.hit_pointer, "", 0, false });
    report.add({ kSuite, "mc cache miss, read 8 B" + tag, "ns/op", ours.miss, ref, evp.miss, false });
    report.add({ kSuite, "mc key switch, clean" + tag, "ns/op", ours.switch_clean, ref, evp.switch_clean, false });
    report.add({ kSuite, "mc key switch, dirty" + tag, "ns/op", ours.switch_dirty, ref, evp.switch_dirty, false });
    return 0;
}

} // namespace sevemu::bench
