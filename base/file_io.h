// sevemu — files at the boundary: the one place that reads a user's (or the platform
// directory's) file and the one place that writes one.
//
// Reading: only a regular file is read where a file is meant (a directory, a FIFO, a socket or
// a device such as /dev/zero is refused before a byte is read, so nothing blocks or streams
// forever), and never more than a limit chosen for what the file is (file_limits below). The
// limit is checked against the size fstat(2) reports and again while reading, so a file that
// grows while it is read cannot exhaust memory either. Errors name the file and the reason:
// "PATH: is a directory", "PATH: not a regular file (a FIFO)", "PATH: larger than the 256 MiB
// limit"; the caller puts the option in front ("-kernel PATH: is a directory").
//
// Writing: outputs appear atomically or not at all. A file is written as DIR/.NAME.tmp.PID,
// fsync'd, renamed over NAME, and DIR is fsync'd; a set of files (a command with several
// outputs) is staged completely before the first rename, and a failed rename puts back what the
// ones already renamed replaced (or removes them where nothing was there). A process killed half-way leaves only .NAME.tmp.PID, which
// remove_stale_temp_files() cleans up.
#pragma once

#include "base/encoding.h"
#include "base/result.h"

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace sevemu {

struct FileError {
    enum class Kind : uint8_t {
        NotFound,   // no such file (or a path component missing)
        NotRegular, // a directory, FIFO, socket or device where a file is meant
        TooLarge,   // over the limit for this kind of file
        Io,         // open/read/write/rename failed otherwise (permissions, disk full, ...)
    } kind;
    std::string message; // "PATH: reason", one line
};

// Size limits per kind of file, each fitting what the file is (and leaving room for slack such
// as trailing newlines or a larger key size), none large enough to hurt the host.
namespace file_limits {
// A Multiboot kernel is loaded below 4 GiB into guest RAM; Linux bzImages are ~10-20 MiB.
inline constexpr uint64_t kKernel = 256ull << 20;
// A Multiboot module / initrd: distribution initramfs images reach a few hundred MiB.
inline constexpr uint64_t kModule = 1ull << 30;
// An SEV certificate is exactly 0x824 bytes (firmware/sev_cert.h kSevCertSize).
inline constexpr uint64_t kSevCert = 0x824;
// An AMD ARK/ASK certificate: 0x40 header + exponent + modulus + signature, 0x640 bytes for
// RSA-4096 (firmware/amd_cert.h kAmdCertSize4K); 4 KiB leaves room for a larger key.
inline constexpr uint64_t kAmdCert = 4096;
// A blob Linux's SEV ioctls pass through (SEV_FW_BLOB_MAX_SIZE in include/uapi/linux/psp-sev.h).
inline constexpr uint64_t kFirmwareBlob = 0x4000;
// Base64 text of an SEV blob (dh-cert-file: 0x824 bytes -> 2788 characters; session-file:
// 0x80 bytes), with line breaks: 64 KiB is far above both.
inline constexpr uint64_t kBase64Blob = 64ull << 10;
// A TEK/TIK key file: 16 raw bytes (sevctl session).
inline constexpr uint64_t kKey128 = 16;
// A launch secret (sevemu-owner secret build): 1 MiB is more than any secret table OVMF reserves.
inline constexpr uint64_t kSecret = 1ull << 20;
// The SEV NV area (SPI flash or INIT_EX file): 32 KiB (firmware/persistent.h).
inline constexpr uint64_t kNvState = 32ull << 10;
// PEM private keys (RSA-4096 is ~3.3 KiB) and the chip identity text.
inline constexpr uint64_t kPem = 64ull << 10;
inline constexpr uint64_t kSmallText = 4096;
} // namespace file_limits

// "256 MiB", "2084 bytes": how a limit reads in an error message.
std::string size_limit_text(uint64_t bytes);

// Reads the whole regular file at `path`, refusing anything that is not a regular file and
// anything over `max_size` bytes.
Result<Bytes, FileError> read_regular_file(std::filesystem::path const& path, uint64_t max_size);

// Writes `data` to `path` atomically (see above); `mode` is the new file's permission bits
// (secrets 0600, public certificates 0644). An existing `path` that is not a regular file
// (a directory, /dev/null, a FIFO) is refused, never replaced.
Result<void, FileError> write_file_atomic(std::filesystem::path const& path, std::span<const uint8_t> data,
    unsigned mode = 0600);

struct OutputFile {
    std::filesystem::path path;
    Bytes data;
    unsigned mode { 0600 };
};
// Writes every file or none: all are staged (written and synced as temporary files) first; if
// one fails nothing is renamed; if a rename fails, the files already renamed are undone (the
// earlier files, kept as hard links until the end, are put back).
Result<void, FileError> write_files_atomic(std::vector<OutputFile> const& files);

// The temporary name write_file_atomic uses for `path` in process `pid`: DIR/.NAME.tmp.PID.
std::filesystem::path temp_path_for(std::filesystem::path const& path, long pid);

// Removes DIR/.NAME.tmp.PID files whose process no longer exists (killed during a write);
// returns how many were removed. Call it with the directory's lock held.
size_t remove_stale_temp_files(std::filesystem::path const& dir);

} // namespace sevemu
