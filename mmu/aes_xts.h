// sevemu — the memory encryption engine's cipher: AES-XTS over one 4 KiB page (the data unit)
// with the 128-bit little-endian tweak PFN (ARCHITECTURE.md "Memory encryption, precisely").
// A 64-byte line path encrypts one cache line of a page with the same tweak sequence, so a line
// written alone matches the same bytes of the whole page encrypted at once.
//
// Code paths: Portable (OpenSSL EVP, the reference), AesNi (AES-NI + SSE), Vaes (VAES on
// 512-bit vectors with AVX-512). best_path() picks by CPUID at run time.
#pragma once

#include "base/result.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

namespace sevemu::mmu {

enum class AesPath : uint8_t { Portable, AesNi, Vaes };
enum class XtsKeySize : uint8_t { Aes128, Aes256 };

std::string_view aes_path_name(AesPath);
bool aes_path_supported(AesPath);
AesPath best_aes_path();

inline constexpr size_t kXtsDataUnit = 4096;
inline constexpr size_t kCacheLine = 64;

enum class XtsError : uint8_t { BadKeyLength, PathUnsupported, IdenticalHalves };

// Expanded key schedules for one key slot. Immutable once built. The AesNi and Vaes paths may
// be used from many threads; the Portable path reuses OpenSSL contexts and may not.
class XtsCipher {
public:
    // key = K1 || K2: 32 bytes for AES-128-XTS, 64 bytes for AES-256-XTS.
    static Result<std::unique_ptr<XtsCipher>, XtsError> create(std::span<const uint8_t> key, AesPath path);
    ~XtsCipher();
    XtsCipher(XtsCipher const&) = delete;
    XtsCipher& operator=(XtsCipher const&) = delete;

    AesPath path() const { return m_path; }
    XtsKeySize key_size() const { return m_key_size; }

    // Whole page (4096 bytes); in and out may be the same buffer.
    void encrypt_page(uint8_t const* in, uint8_t* out, uint64_t pfn) const;
    void decrypt_page(uint8_t const* in, uint8_t* out, uint64_t pfn) const;
    // One 64-byte line at byte offset line_index * 64 of page pfn.
    void encrypt_line(uint8_t const* in, uint8_t* out, uint64_t pfn, unsigned line_index) const;
    void decrypt_line(uint8_t const* in, uint8_t* out, uint64_t pfn, unsigned line_index) const;

    struct Impl;

private:
    XtsCipher() = default;
    AesPath m_path {};
    XtsKeySize m_key_size {};
    std::unique_ptr<Impl> m_impl;
};

} // namespace sevemu::mmu
