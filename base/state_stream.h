// sevemu — the snapshot stream: how a machine's state is written down and read back (QMP
// `migrate` to file:/exec:, `sevemu -incoming`). The machine's parts each write one section;
// emulator/machine_state.cpp lists the sections a machine writes and their versions.
//
// Byte layout, stream versions 1 and 2 (every integer little-endian):
//
//   header   16 bytes  magic "SEVEMU-SNAPSHOT\n"
//             4 bytes  stream version (1 or 2)
//             4 bytes  flags (0; any other value is refused)
//   section   1 byte   tag 0x01
//             1 byte   name length N (1..64)
//             N bytes  name: lowercase ASCII letters, digits, '-', '.', no two sections alike
//                      (version 2: except "ram-pages", which may come any number of times)
//             4 bytes  section version (what the part that wrote it calls its layout)
//             8 bytes  payload length L
//             L bytes  payload (the part's own encoding, see StateWriter)
//             4 bytes  CRC-32 (ISO-HDLC, as zlib's crc32) of the bytes from the tag to the
//                      payload's end
//   end       1 byte   tag 0xFF
//             4 bytes  section count
//             4 bytes  CRC-32 of the whole stream before this field
//
// Version 2 (live migration, emulator/migration.cpp) differs from version 1 only in that rule:
// guest RAM can travel in many "ram-pages" sections (the pre-copy passes), written while the
// guest still runs, each checked by its own CRC before its pages are applied; the end record's
// stream CRC then covers all of them. A version-1 stream is a valid version-2 stream.
//
// parse_snapshot() checks all of it — magic, versions, every CRC, the end record, nothing after
// it — before any part sees a byte, so a truncated or corrupted stream is refused whole, with a
// message that names the section where it went wrong ("snapshot section 'cpu0': CRC mismatch").
//
// Inside a payload a part writes fixed-width little-endian integers, booleans as one byte 0/1,
// and byte strings as a u64 length then the bytes. A StateReader is bounds-checked and its error
// is sticky: after the first failure every read returns zero and finish() reports the failure, so
// a part can read its whole layout and check once; a part validates what it read (enum ranges,
// sizes) into a local copy and only then changes its state, so a refused section leaves it as it
// was.
#pragma once

#include "base/result.h"

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sevemu {

inline constexpr char kSnapshotMagic[] = "SEVEMU-SNAPSHOT\n";
inline constexpr uint32_t kSnapshotStreamVersion = 2;  // what this build writes for a live migration
inline constexpr uint32_t kSnapshotStreamVersionV1 = 1; // what save_snapshot() writes (no repeated sections)
inline constexpr char kRamPagesSection[] = "ram-pages"; // the section version 2 lets repeat
inline constexpr size_t kMaxSectionName = 64;

// One line for the user: "snapshot section 'pit': truncated payload".
struct StateError {
    std::string section; // empty when the stream's header or end record is at fault
    std::string message;
    std::string text() const;
};

// Writes one section's payload.
class StateWriter {
public:
    void u8(uint8_t v) { m_bytes.push_back(v); }
    void u16(uint16_t v);
    void u32(uint32_t v);
    void u64(uint64_t v);
    void i64(int64_t v) { u64(uint64_t(v)); }
    void boolean(bool v) { u8(v ? 1 : 0); }
    void bytes(std::span<uint8_t const> b); // u64 length, then the bytes
    void raw(std::span<uint8_t const> b);   // the bytes only (the reader knows the length)
    std::vector<uint8_t>& data() { return m_bytes; }
    std::vector<uint8_t> take() { return std::move(m_bytes); }

private:
    std::vector<uint8_t> m_bytes;
};

// Reads one section's payload; see the file comment for the sticky-error rule.
class StateReader {
public:
    StateReader(std::string_view section, std::span<uint8_t const> payload)
        : m_section(section)
        , m_data(payload)
    {
    }
    // The reader keeps a view: a temporary payload would be gone before the first read.
    StateReader(std::string_view, std::vector<uint8_t>&&) = delete;
    uint8_t u8();
    uint16_t u16();
    uint32_t u32();
    uint64_t u64();
    int64_t i64() { return int64_t(u64()); }
    bool boolean(); // a byte other than 0 or 1 is an error
    std::vector<uint8_t> bytes(uint64_t max_length);
    std::span<uint8_t const> raw(size_t length); // empty span after an error
    // Marks the section bad with a message (the first one wins).
    void fail(std::string message);
    bool ok() const { return m_error.empty(); }
    size_t remaining() const { return m_data.size() - m_pos; }
    std::string_view section() const { return m_section; }
    // The section's verdict: the first failure, or "trailing bytes" if the payload was not read
    // to its end.
    Result<void, StateError> finish() const;

private:
    bool need(size_t n);
    std::string m_section;
    std::span<uint8_t const> m_data;
    size_t m_pos { 0 };
    std::string m_error;
};

struct SnapshotSection {
    std::string name;
    uint32_t version {};
    std::span<uint8_t const> payload; // into the parsed stream's buffer
};

// Builds a stream: the header at construction, add() per section, finish() for the end record.
class SnapshotWriter {
public:
    explicit SnapshotWriter(uint32_t stream_version = kSnapshotStreamVersionV1);
    // name must follow the rules above (a programming error otherwise: asserted).
    void add(std::string_view name, uint32_t version, std::span<uint8_t const> payload);
    std::vector<uint8_t> finish();
    uint64_t size() const { return m_bytes.size(); }
    // A live stream goes out piece by piece: take() hands over what was written since the last
    // take() (header and whole sections), while the running CRC and the section count go on.
    std::vector<uint8_t> take();
    // A section whose payload the caller writes out itself, from its own buffer (a live stream's
    // RAM sections: the payload is not copied into the writer). The stream is `head`, then the
    // payload, then `tail`: `head` is what take() would hand over followed by the record's tag,
    // name, version and length; `tail` is the section CRC. The CRCs and the count go on as for add().
    struct Gathered {
        std::vector<uint8_t> head;
        std::array<uint8_t, 4> tail {};
    };
    Gathered add_gathered(std::string_view name, uint32_t version, std::span<uint8_t const> payload);

private:
    size_t begin_record(std::string_view name, uint32_t version, uint64_t payload_size);
    std::vector<uint8_t> m_bytes;
    uint32_t m_version;
    uint32_t m_sections { 0 };
    uint32_t m_crc {}; // CRC-32 of everything written so far
    std::vector<std::string> m_names; // for the no-two-alike assertion
};

// A section read off a live stream, owning its payload.
struct OwnedSection {
    std::string name;
    uint32_t version {};
    std::vector<uint8_t> payload;
};

// Reads a stream as it arrives (a socket): the header, then one record at a time, with the same
// checks as parse_snapshot() — each section's CRC before its payload is handed out, the end
// record's count and stream CRC before next() says the stream is complete. `read` fills its
// span exactly or returns why it could not (the connection closed); that message becomes the
// error's.
class SnapshotStreamReader {
public:
    using ReadFn = std::function<Result<void, std::string>(std::span<uint8_t>)>;
    explicit SnapshotStreamReader(ReadFn read) : m_read(std::move(read)) {}
    Result<uint32_t, StateError> read_header(); // the stream version
    // The next section, or nullopt once the end record has been read and checked. A payload
    // longer than max_payload is refused before anything is allocated.
    Result<std::optional<OwnedSection>, StateError> next(uint64_t max_payload);
    uint64_t bytes_read() const { return m_bytes; }

private:
    Result<void, StateError> get(std::span<uint8_t>, std::string const& section);
    ReadFn m_read;
    uint32_t m_version {};
    uint32_t m_crc {};                        // CRC-32 of the records read before the current one
    uint32_t m_section_state { 0xFFFFFFFFu }; // the current record's CRC register
    uint64_t m_section_bytes {};
    uint64_t m_bytes {};
    std::vector<std::string> m_names;
    std::string m_last; // the last section's name, for messages
};

// The stream's CRC-32 (ISO-HDLC: reflected polynomial 0x04C11DB7, initial value and final XOR
// 0xFFFFFFFF — zlib's crc32()), for tests and tools that build or inspect streams by hand.
uint32_t snapshot_crc32(std::span<uint8_t const>);

// Checks a whole stream (see above); the sections' payloads point into `stream`.
Result<std::vector<SnapshotSection>, StateError> parse_snapshot(std::span<uint8_t const> stream);

} // namespace sevemu
