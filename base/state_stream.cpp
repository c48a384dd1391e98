// sevemu — the snapshot stream (layout and rules in base/state_stream.h).
#include "base/state_stream.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cstring>
#include <immintrin.h>
#include <string>
#include <zlib.h>

namespace sevemu {

namespace {

constexpr size_t kMagicSize = sizeof(kSnapshotMagic) - 1; // 16, without the NUL
static_assert(kMagicSize == 16);
constexpr uint8_t kSectionTag = 0x01, kEndTag = 0xFF;
constexpr size_t kHeaderSize = kMagicSize + 4 + 4;
constexpr size_t kEndSize = 1 + 4 + 4;

uint32_t crc32(std::span<uint8_t const> b) { return snapshot_crc32(b); }

// CRC-32/ISO-HDLC by carry-less multiplication (PCLMULQDQ), where the CPU has it: four 128-bit
// lanes folded 64 bytes at a time, then folded into one, reduced to 64 and 32 bits and finished by
// Barrett reduction — the method of Intel's "Fast CRC Computation for Generic Polynomials Using
// PCLMULQDQ Instruction" (Gopal et al., 2009), in the bit-reflected domain. The constants are the
// paper's for this polynomial (x^n mod P for the fold distances, P' and u' for Barrett), the same
// that Linux arch/x86/crypto/crc32-pclmul_asm.S lists. Several times faster than zlib's braided
// tables (Debian's zlib 1.2.13 has no PCLMUL path), which a live migration feels: both ends run
// every byte of the stream through this. Takes and gives the raw register (see crc_update);
// `n` is at least 64 and a multiple of 16.
#define SEVEMU_CLMUL __attribute__((target("pclmul,sse4.1")))
SEVEMU_CLMUL inline __m128i load128(uint8_t const* q) { return _mm_loadu_si128(reinterpret_cast<__m128i const*>(q)); }
// lane * x^k: its low half times one constant, its high half times the other, plus the next lane.
SEVEMU_CLMUL inline __m128i fold(__m128i lane, __m128i k, __m128i next)
{
    return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(lane, k, 0x00), _mm_clmulepi64_si128(lane, k, 0x11)), next);
}

SEVEMU_CLMUL uint32_t crc_fold_clmul(uint32_t reg, uint8_t const* p, size_t n)
{
    __m128i const fold4 = _mm_set_epi64x(0x1c6e41596, 0x154442bd4); // x^(512+32), x^(512-32) mod P
    __m128i const fold1 = _mm_set_epi64x(0x0ccaa009e, 0x1751997d0); // x^(128+32), x^(128-32) mod P
    __m128i const fold32 = _mm_set_epi64x(0, 0x163cd6124);          // x^64 mod P
    __m128i const barrett = _mm_set_epi64x(0x1f7011641, 0x1db710641); // u', P'
    __m128i const low32 = _mm_setr_epi32(-1, 0, -1, 0);
    __m128i lane[4];
    for (int i = 0; i < 4; ++i)
        lane[i] = load128(p + 16 * i);
    lane[0] = _mm_xor_si128(lane[0], _mm_cvtsi32_si128(int(reg)));
    p += 64;
    n -= 64;
    for (; n >= 64; p += 64, n -= 64)
        for (int i = 0; i < 4; ++i)
            lane[i] = fold(lane[i], fold4, load128(p + 16 * i));
    __m128i x = lane[0];
    for (int i = 1; i < 4; ++i)
        x = fold(x, fold1, lane[i]);
    for (; n >= 16; p += 16, n -= 16)
        x = fold(x, fold1, load128(p));
    // 128 -> 64 bits, 64 -> 32 bits.
    x = _mm_xor_si128(_mm_srli_si128(x, 8), _mm_clmulepi64_si128(x, fold1, 0x10));
    x = _mm_xor_si128(_mm_srli_si128(x, 4), _mm_clmulepi64_si128(_mm_and_si128(x, low32), fold32, 0x00));
    // Barrett: the quotient by P from u', its product with P' cancels all but the remainder.
    __m128i q = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(x, low32), barrett, 0x10), low32);
    x = _mm_xor_si128(x, _mm_clmulepi64_si128(q, barrett, 0x00));
    return uint32_t(_mm_extract_epi32(x, 1));
}

bool have_clmul()
{
    static bool const yes = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
    return yes;
}

// CRC-32/ISO-HDLC: the folding above for the bulk, zlib (crc32_z, crc32_combine) for the rest.
// crc_update() keeps the raw register (initial value 0xFFFFFFFF, no final XOR), crc_final()
// applies the final XOR; zlib's functions take and give finished CRCs, hence the XORs. Checked
// against boost::crc_32_type in tests/base/state_stream_test.cpp.
uint32_t crc_update(uint32_t reg, std::span<uint8_t const> b)
{
    if (b.size() >= 64 && have_clmul()) {
        size_t bulk = b.size() & ~size_t(15);
        reg = crc_fold_clmul(reg, b.data(), bulk);
        b = b.subspan(bulk);
    }
    if (b.empty()) // zlib answers a null buffer with its initial value, whatever the CRC so far
        return reg;
    return uint32_t(::crc32_z(reg ^ 0xFFFFFFFFu, b.data(), b.size())) ^ 0xFFFFFFFFu;
}
uint32_t crc_final(uint32_t reg) { return reg ^ 0xFFFFFFFFu; }

// crc32(A || B) from crc32(A), crc32(B) and |B|.
uint32_t crc_combine(uint32_t crc1, uint32_t crc2, uint64_t len2)
{
    return uint32_t(::crc32_combine64(crc1, crc2, z_off64_t(len2)));
}

bool repeatable(uint32_t stream_version, std::string_view name)
{
    return stream_version >= 2 && name == kRamPagesSection;
}

void put_le(std::vector<uint8_t>& out, uint64_t v, unsigned n)
{
    for (unsigned k = 0; k < n; ++k)
        out.push_back(uint8_t(v >> (8 * k)));
}

uint64_t get_le(uint8_t const* p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned k = 0; k < n; ++k)
        v |= uint64_t(p[k]) << (8 * k);
    return v;
}

std::string num(uint64_t v) { return std::to_string(v); }

std::string hex(uint64_t v, unsigned digits = 0)
{
    static char const kDigits[] = "0123456789abcdef";
    std::string out;
    do {
        out.insert(out.begin(), kDigits[v & 15]);
        v >>= 4;
    } while (v);
    while (out.size() < digits)
        out.insert(out.begin(), '0');
    return "0x" + out;
}

bool valid_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

bool valid_name(std::string_view n)
{
    return !n.empty() && n.size() <= kMaxSectionName && std::all_of(n.begin(), n.end(), valid_name_char);
}

// A name as it may appear in a message: printable, whatever the stream held.
std::string printable(std::span<uint8_t const> b)
{
    std::string s;
    for (uint8_t c : b)
        s += (c >= 0x20 && c < 0x7F && c != '\'') ? std::string(1, char(c)) : "\\x" + hex(c, 2).substr(2);
    return s;
}

} // namespace

// CRC-32/ISO-HDLC (reflected 0x04C11DB7, init and xorout 0xFFFFFFFF), what zlib's crc32()
// computes (Greg Cook's CRC catalogue, "CRC-32/ISO-HDLC", check 0xCBF43926).
uint32_t snapshot_crc32(std::span<uint8_t const> b) { return crc_final(crc_update(0xFFFFFFFFu, b)); }

std::string StateError::text() const
{
    if (section.empty())
        return "snapshot: " + message;
    return "snapshot section '" + section + "': " + message;
}

// ---------------------------------------------------------------- StateWriter

void StateWriter::u16(uint16_t v) { put_le(m_bytes, v, 2); }
void StateWriter::u32(uint32_t v) { put_le(m_bytes, v, 4); }
void StateWriter::u64(uint64_t v) { put_le(m_bytes, v, 8); }

void StateWriter::bytes(std::span<uint8_t const> b)
{
    u64(b.size());
    raw(b);
}

void StateWriter::raw(std::span<uint8_t const> b) { m_bytes.insert(m_bytes.end(), b.begin(), b.end()); }

// ---------------------------------------------------------------- StateReader

bool StateReader::need(size_t n)
{
    if (!ok())
        return false;
    if (remaining() < n) {
        fail("truncated payload (" + num(n) + " bytes wanted at offset " + num(m_pos) + ", " + num(remaining()) + " left)");
        return false;
    }
    return true;
}

uint8_t StateReader::u8()
{
    if (!need(1)) return 0;
    return m_data[m_pos++];
}

uint16_t StateReader::u16()
{
    if (!need(2)) return 0;
    auto v = uint16_t(get_le(m_data.data() + m_pos, 2));
    m_pos += 2;
    return v;
}

uint32_t StateReader::u32()
{
    if (!need(4)) return 0;
    auto v = uint32_t(get_le(m_data.data() + m_pos, 4));
    m_pos += 4;
    return v;
}

uint64_t StateReader::u64()
{
    if (!need(8)) return 0;
    auto v = get_le(m_data.data() + m_pos, 8);
    m_pos += 8;
    return v;
}

bool StateReader::boolean()
{
    size_t at = m_pos;
    uint8_t v = u8();
    if (v > 1) {
        fail("boolean at offset " + num(at) + " is " + hex(v, 2) + ", not 0 or 1");
        return false;
    }
    return v == 1;
}

std::vector<uint8_t> StateReader::bytes(uint64_t max_length)
{
    size_t at = m_pos;
    uint64_t n = u64();
    if (!ok())
        return {};
    // Both checks before any allocation: a corrupted length must not make us reserve it.
    if (n > max_length) {
        fail("byte string at offset " + num(at) + " is " + num(n) + " bytes long, more than the " + num(max_length) + " allowed");
        return {};
    }
    if (n > remaining()) {
        fail("truncated payload (byte string of " + num(n) + " bytes at offset " + num(at) + ", " + num(remaining()) + " left)");
        return {};
    }
    auto s = m_data.subspan(m_pos, size_t(n));
    m_pos += size_t(n);
    return { s.begin(), s.end() };
}

std::span<uint8_t const> StateReader::raw(size_t length)
{
    if (!need(length)) return {};
    auto s = m_data.subspan(m_pos, length);
    m_pos += length;
    return s;
}

void StateReader::fail(std::string message)
{
    if (m_error.empty())
        m_error = message.empty() ? std::string("invalid") : std::move(message);
}

Result<void, StateError> StateReader::finish() const
{
    if (!ok())
        return make_unexpected(StateError { m_section, m_error });
    if (remaining() != 0)
        return make_unexpected(StateError { m_section, num(remaining()) + " trailing bytes after the payload's last field" });
    return {};
}

// ---------------------------------------------------------------- SnapshotWriter

SnapshotWriter::SnapshotWriter(uint32_t stream_version)
    : m_version(stream_version)
{
    assert(stream_version == kSnapshotStreamVersionV1 || stream_version == kSnapshotStreamVersion);
    m_bytes.reserve(4096);
    for (size_t k = 0; k < kMagicSize; ++k)
        m_bytes.push_back(uint8_t(kSnapshotMagic[k]));
    put_le(m_bytes, stream_version, 4);
    put_le(m_bytes, 0, 4); // flags
    m_crc = crc32(m_bytes);
}

// Writes a record's tag, name, version and payload length; returns where the record starts.
size_t SnapshotWriter::begin_record(std::string_view name, uint32_t version, uint64_t payload_size)
{
    assert(valid_name(name));
    assert(repeatable(m_version, name) || std::find(m_names.begin(), m_names.end(), name) == m_names.end());
    if (!repeatable(m_version, name))
        m_names.emplace_back(name);
    size_t start = m_bytes.size();
    m_bytes.push_back(kSectionTag);
    m_bytes.push_back(uint8_t(name.size()));
    m_bytes.insert(m_bytes.end(), name.begin(), name.end());
    put_le(m_bytes, version, 4);
    put_le(m_bytes, payload_size, 8);
    return start;
}

void SnapshotWriter::add(std::string_view name, uint32_t version, std::span<uint8_t const> payload)
{
    size_t start = begin_record(name, version, payload.size());
    m_bytes.insert(m_bytes.end(), payload.begin(), payload.end());
    uint32_t section_crc = crc32(std::span(m_bytes).subspan(start));
    put_le(m_bytes, section_crc, 4);
    ++m_sections;
    // The stream CRC goes on over the whole record without a second pass over the payload.
    uint64_t record = m_bytes.size() - start;
    uint32_t record_crc = crc_combine(section_crc, crc32(std::span(m_bytes).last(4)), 4);
    m_crc = crc_combine(m_crc, record_crc, record);
}

SnapshotWriter::Gathered SnapshotWriter::add_gathered(std::string_view name, uint32_t version, std::span<uint8_t const> payload)
{
    size_t start = begin_record(name, version, payload.size());
    auto head = std::span(m_bytes).subspan(start);
    uint32_t section_crc = crc_combine(crc32(head), crc32(payload), payload.size());
    Gathered g;
    std::vector<uint8_t> tail;
    put_le(tail, section_crc, 4);
    std::copy(tail.begin(), tail.end(), g.tail.begin());
    ++m_sections;
    uint64_t record = head.size() + payload.size() + 4;
    uint32_t record_crc = crc_combine(section_crc, crc32(g.tail), 4);
    m_crc = crc_combine(m_crc, record_crc, record);
    g.head = take();
    return g;
}

std::vector<uint8_t> SnapshotWriter::take()
{
    std::vector<uint8_t> out;
    out.swap(m_bytes);
    return out;
}

std::vector<uint8_t> SnapshotWriter::finish()
{
    size_t start = m_bytes.size();
    m_bytes.push_back(kEndTag);
    put_le(m_bytes, m_sections, 4);
    put_le(m_bytes, crc_combine(m_crc, crc32(std::span(m_bytes).subspan(start)), 5), 4);
    m_sections = 0;
    m_names.clear();
    return std::move(m_bytes);
}

// ---------------------------------------------------------------- parse_snapshot

Result<std::vector<SnapshotSection>, StateError> parse_snapshot(std::span<uint8_t const> s)
{
    auto err = [](std::string section, std::string message) {
        return make_unexpected(StateError { std::move(section), std::move(message) });
    };
    // A prefix of the magic is a truncated stream; anything else is not a snapshot at all.
    size_t magic_part = std::min(s.size(), kMagicSize);
    if (!std::equal(s.begin(), s.begin() + magic_part, kSnapshotMagic))
        return err("", "not a sevemu snapshot (bad magic)");
    if (s.size() < kHeaderSize)
        return err("", "truncated header");
    auto version = uint32_t(get_le(s.data() + kMagicSize, 4));
    if (version != kSnapshotStreamVersionV1 && version != kSnapshotStreamVersion)
        return err("", "unsupported stream version " + num(version) + " (this build reads versions 1 and 2)");
    auto flags = uint32_t(get_le(s.data() + kMagicSize + 4, 4));
    if (flags != 0)
        return err("", "unsupported stream flags " + hex(flags));

    std::vector<SnapshotSection> out;
    size_t pos = kHeaderSize;
    for (;;) {
        // Where a message that cannot name its own section says it was.
        auto where = [&] {
            return out.empty() ? std::string("after the header") : "after section '" + out.back().name + "'";
        };
        if (pos >= s.size())
            return err("", "truncated: no end record (" + where() + ")");
        uint8_t tag = s[pos];
        if (tag == kEndTag)
            break;
        if (tag != kSectionTag)
            return err("", "bad record tag " + hex(tag, 2) + " at offset " + num(pos) + " (" + where() + ")");
        if (s.size() - pos < 2)
            return err("", "truncated section header at offset " + num(pos) + " (" + where() + ")");
        size_t name_len = s[pos + 1];
        if (name_len == 0 || name_len > kMaxSectionName)
            return err("", "bad section name length " + num(name_len) + " at offset " + num(pos) + " (" + where() + ")");
        if (s.size() - pos - 2 < name_len)
            return err("", "truncated section header at offset " + num(pos) + " (" + where() + ")");
        auto name_bytes = s.subspan(pos + 2, name_len);
        std::string name(name_bytes.begin(), name_bytes.end());
        if (!valid_name(name))
            return err("", "bad section name '" + printable(name_bytes) + "' at offset " + num(pos) + " (" + where() + ")");
        size_t after_name = pos + 2 + name_len;
        if (s.size() - after_name < 4 + 8)
            return err(name, "truncated");
        auto sec_version = uint32_t(get_le(s.data() + after_name, 4));
        uint64_t len = get_le(s.data() + after_name + 4, 8);
        size_t payload_at = after_name + 12;
        if (len > s.size() - payload_at || s.size() - payload_at - len < 4)
            return err(name, "truncated");
        size_t crc_at = payload_at + size_t(len);
        auto stored = uint32_t(get_le(s.data() + crc_at, 4));
        if (crc32(s.subspan(pos, crc_at - pos)) != stored)
            return err(name, "CRC mismatch");
        // The name after the CRC check: a corrupted name is a CRC mismatch, not a duplicate.
        if (!repeatable(version, name) && std::any_of(out.begin(), out.end(), [&](auto const& x) { return x.name == name; }))
            return err(name, "duplicate section");
        out.push_back({ std::move(name), sec_version, s.subspan(payload_at, size_t(len)) });
        pos = crc_at + 4;
    }
    if (s.size() - pos < kEndSize)
        return err("", "truncated end record");
    auto count = uint32_t(get_le(s.data() + pos + 1, 4));
    auto stored = uint32_t(get_le(s.data() + pos + 5, 4));
    if (crc32(s.subspan(0, pos + 5)) != stored)
        return err("", "stream CRC mismatch");
    if (count != out.size())
        return err("", "end record counts " + num(count) + " sections, the stream holds " + num(out.size()));
    if (s.size() != pos + kEndSize)
        return err("", num(s.size() - pos - kEndSize) + " bytes after the end record");
    return out;
}

// ---------------------------------------------------------------- SnapshotStreamReader

Result<void, StateError> SnapshotStreamReader::get(std::span<uint8_t> b, std::string const& section)
{
    if (auto r = m_read(b); !r) {
        std::string where = m_last.empty() ? std::string("after the header") : "after section '" + m_last + "'";
        if (m_bytes == 0)
            where = "before the header";
        return make_unexpected(StateError { section, "the stream ended early, " + where + ": " + r.error() });
    }
    m_section_state = crc_update(m_section_state, b);
    m_section_bytes += b.size();
    m_bytes += b.size();
    return {};
}

Result<uint32_t, StateError> SnapshotStreamReader::read_header()
{
    std::array<uint8_t, kHeaderSize> h {};
    m_section_state = 0xFFFFFFFFu;
    m_section_bytes = 0;
    TRY(get(h, ""));
    m_crc = crc_final(m_section_state);
    if (!std::equal(h.begin(), h.begin() + kMagicSize, kSnapshotMagic))
        return make_unexpected(StateError { "", "not a sevemu snapshot (bad magic)" });
    m_version = uint32_t(get_le(h.data() + kMagicSize, 4));
    if (m_version != kSnapshotStreamVersionV1 && m_version != kSnapshotStreamVersion)
        return make_unexpected(StateError { "", "unsupported stream version " + num(m_version) + " (this build reads versions 1 and 2)" });
    auto flags = uint32_t(get_le(h.data() + kMagicSize + 4, 4));
    if (flags != 0)
        return make_unexpected(StateError { "", "unsupported stream flags " + hex(flags) });
    return m_version;
}

Result<std::optional<OwnedSection>, StateError> SnapshotStreamReader::next(uint64_t max_payload)
{
    m_section_state = 0xFFFFFFFFu; // a section's CRC starts at its tag
    m_section_bytes = 0;
    uint8_t tag = 0;
    TRY(get(std::span(&tag, 1), ""));
    if (tag == kEndTag) {
        std::array<uint8_t, 8> e {};
        TRY(get(std::span(e).first(4), ""));
        uint32_t before = crc_combine(m_crc, crc_final(m_section_state), m_section_bytes);
        TRY(get(std::span(e).last(4), ""));
        auto count = uint32_t(get_le(e.data(), 4));
        auto stored = uint32_t(get_le(e.data() + 4, 4));
        if (before != stored)
            return make_unexpected(StateError { "", "stream CRC mismatch" });
        if (count != m_names.size())
            return make_unexpected(StateError { "", "end record counts " + num(count) + " sections, the stream held " + num(m_names.size()) });
        return std::optional<OwnedSection> {};
    }
    if (tag != kSectionTag)
        return make_unexpected(StateError { "", "bad record tag " + hex(tag, 2) + " at offset " + num(m_bytes - 1) });
    uint8_t name_len = 0;
    TRY(get(std::span(&name_len, 1), ""));
    if (name_len == 0 || name_len > kMaxSectionName)
        return make_unexpected(StateError { "", "bad section name length " + num(name_len) + " at offset " + num(m_bytes - 2) });
    std::vector<uint8_t> name_bytes(name_len);
    TRY(get(name_bytes, ""));
    std::string name(name_bytes.begin(), name_bytes.end());
    if (!valid_name(name))
        return make_unexpected(StateError { "", "bad section name '" + printable(name_bytes) + "'" });
    std::array<uint8_t, 12> vl {};
    TRY(get(vl, name));
    OwnedSection sec;
    sec.version = uint32_t(get_le(vl.data(), 4));
    uint64_t len = get_le(vl.data() + 4, 8);
    if (len > max_payload)
        return make_unexpected(StateError { name, "payload of " + num(len) + " bytes, more than the " + num(max_payload) + " allowed" });
    sec.payload.resize(size_t(len));
    TRY(get(sec.payload, name));
    uint32_t section_crc = crc_final(m_section_state); // tag to payload end
    std::array<uint8_t, 4> c {};
    TRY(get(c, name));
    if (uint32_t(get_le(c.data(), 4)) != section_crc)
        return make_unexpected(StateError { name, "CRC mismatch" });
    m_crc = crc_combine(m_crc, crc_final(m_section_state), m_section_bytes);
    if (!repeatable(m_version, name) && std::find(m_names.begin(), m_names.end(), name) != m_names.end())
        return make_unexpected(StateError { name, "duplicate section" });
    m_names.push_back(name);
    m_last = name;
    sec.name = std::move(name);
    return std::optional<OwnedSection>(std::move(sec));
}

} // namespace sevemu
