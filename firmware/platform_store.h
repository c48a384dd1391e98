// sevemu — the emulated chip's persistent identity: the platform directory (--platform DIR,
// INTERFACES.md §3). What a real part keeps in fuses and SPI flash, sevemu keeps in files:
//
//   DIR/lock                flock(2) target: every read-modify-write of DIR holds it, so two
//                           processes (sevemu, sevemu-host) never see or leave a torn state
//   DIR/chip.id             the fused chip-unique key (CUK) from which the CEK, the GET_ID value
//                           and the NV keys derive (text: "cuk HEX"); created on first use
//   DIR/nv.bin              the SPI flash's 32 KiB SEV NV area (persistent.h format)
//   DIR/roots/MODEL/        sevemu's emulated AMD roots for one CPU generation, generated once
//                           (RSA-4096 takes seconds): ark.pem ask.pem (private keys), ark.cert
//                           ask.cert (AMD format, RSASSA-PSS) and cek.cert (this chip's CEK signed
//                           by the ASK). They are TEST roots with sevemu's own key IDs: they are
//                           not AMD's and no AMD-rooted verifier accepts them.
//
// Every file is written atomically (temporary file, fsync, rename, fsync of the directory;
// base/file_io.h), and temporary files a killed writer left behind are removed at open().
#pragma once

#include "base/encoding.h"
#include "base/file_io.h"
#include "base/result.h"
#include "firmware/amd_cert.h"
#include "firmware/persistent.h"
#include "firmware/sev_api.h"
#include "firmware/sev_cert.h"

#include <filesystem>
#include <memory>
#include <string>

namespace sevemu::firmware {

struct StoreError {
    enum class Kind : uint8_t { Io, Corrupt, Crypto } kind;
    std::string message; // one line naming the file and what is wrong
};

// The AMD-side chain for this chip: ARK -> ASK -> CEK.
struct AmdChain {
    AmdCert ark;
    AmdCert ask;
    SevCert cek;
};

class PlatformStore {
public:
    // Creates DIR (and the chip identity) on first use.
    static Result<std::unique_ptr<PlatformStore>, StoreError> open(std::filesystem::path const& dir);
    // $SEVEMU_PLATFORM, else $XDG_DATA_HOME/sevemu/platform, else ~/.local/share/sevemu/platform.
    static std::filesystem::path default_dir();

    std::filesystem::path const& dir() const { return m_dir; }
    ChipUniqueKey const& cuk() const { return m_cuk; }

    // The SPI NV area: the erased image (all 0xFF) when it was never written.
    Result<Bytes, StoreError> read_nv() const;
    Result<void, StoreError> write_nv(std::span<const uint8_t> image) const;
    Result<void, StoreError> erase_nv() const;

    // ARK, ASK and the ASK-signed CEK for `model`, generated and saved on first use.
    Result<AmdChain, StoreError> amd_chain(CpuModel model, uint8_t api_major, uint8_t api_minor) const;

    // sevemu's test key IDs ("sevemu-test-ARK" + model digit), never one of AMD's.
    static AmdKeyId test_key_id(CpuModel, AmdKeyUsage);

    ~PlatformStore();

private:
    explicit PlatformStore(std::filesystem::path dir) : m_dir(std::move(dir)) {}
    std::filesystem::path m_dir;
    ChipUniqueKey m_cuk {};
};

// base/file_io.h's bounded read of a regular file, with the store's error type (writes use
// base/file_io.h's write_file_atomic directly).
Result<Bytes, StoreError> read_file(std::filesystem::path const& path, uint64_t max_size = file_limits::kNvState);

} // namespace sevemu::firmware
