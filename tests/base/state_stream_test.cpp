// The snapshot stream (base/state_stream.h): the byte layout as the header writes it down, built
// here by hand from that text; the CRC against the catalogue's check value; and refusal of every
// truncation and every single-bit corruption.
#include "base/state_stream.h"

#include <boost/crc.hpp>
#include <catch2/catch.hpp>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

using namespace sevemu;

namespace {

using Bytes = std::vector<uint8_t>;

void le(Bytes& b, uint64_t v, unsigned n)
{
    for (unsigned k = 0; k < n; ++k)
        b.push_back(uint8_t(v >> (8 * k)));
}

Bytes str(std::string_view s) { return Bytes(s.begin(), s.end()); }

struct RawSection {
    std::string name;
    uint32_t version {};
    Bytes payload;
};

// The stream as the header comment describes it, byte by byte, without SnapshotWriter.
Bytes hand_stream(std::vector<RawSection> const& sections, uint32_t version = 1, uint32_t flags = 0,
    std::optional<uint32_t> count = std::nullopt)
{
    Bytes b = str("SEVEMU-SNAPSHOT\n");
    le(b, version, 4);
    le(b, flags, 4);
    for (auto const& s : sections) {
        size_t start = b.size();
        b.push_back(0x01);
        b.push_back(uint8_t(s.name.size()));
        b.insert(b.end(), s.name.begin(), s.name.end());
        le(b, s.version, 4);
        le(b, s.payload.size(), 8);
        b.insert(b.end(), s.payload.begin(), s.payload.end());
        le(b, snapshot_crc32(std::span(b).subspan(start)), 4);
    }
    b.push_back(0xFF);
    le(b, count.value_or(uint32_t(sections.size())), 4);
    le(b, snapshot_crc32(b), 4);
    return b;
}

std::vector<RawSection> sample_sections()
{
    Bytes big(300);
    for (size_t k = 0; k < big.size(); ++k)
        big[k] = uint8_t(k * 7 + 3);
    return { { "cpu0", 1, { 1, 2, 3, 4, 5, 6, 7, 8, 9 } }, { "pit", 3, {} }, { "ram.low-1", 0x01020304, big } };
}

// Where each section lies in the hand-built stream: [start, end), and where its name ends.
struct Span {
    std::string name;
    size_t start, name_end, end;
};
std::vector<Span> spans(std::vector<RawSection> const& sections)
{
    std::vector<Span> out;
    size_t pos = 24;
    for (auto const& s : sections) {
        size_t name_end = pos + 2 + s.name.size();
        size_t end = name_end + 4 + 8 + s.payload.size() + 4;
        out.push_back({ s.name, pos, name_end, end });
        pos = end;
    }
    return out;
}

std::string parse_error(std::span<uint8_t const> s)
{
    auto r = parse_snapshot(s);
    if (r)
        return {};
    return r.error().text();
}

} // namespace

TEST_CASE("CRC-32 is CRC-32/ISO-HDLC: the catalogue's check value", "[base][snapshot]")
{
    // Greg Cook's CRC catalogue (reveng.sourceforge.io/crc-catalogue), CRC-32/ISO-HDLC: check =
    // 0xCBF43926 over "123456789"; zlib's crc32() gives the same.
    auto s = str("123456789");
    CHECK(snapshot_crc32(s) == 0xCBF43926u);
    CHECK(snapshot_crc32({}) == 0u); // zlib: crc32(0, "", 0) == 0
    // zlib crc32 of "The quick brown fox jumps over the lazy dog" (python3 -c 'import zlib;
    // print(hex(zlib.crc32(b"The quick brown fox jumps over the lazy dog")))').
    CHECK(snapshot_crc32(str("The quick brown fox jumps over the lazy dog")) == 0x414FA339u);
}

TEST_CASE("CRC-32 of every length and alignment equals Boost's (the folded bulk and zlib's tail)", "[base][snapshot]")
{
    // The bulk of a buffer of 64 bytes or more goes through carry-less multiplication where the
    // CPU has it: every length around the fold sizes, at every offset in a 16-byte line.
    std::vector<uint8_t> data(4096 + 64 + 16);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (auto& b : data) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b = uint8_t(x);
    }
    auto boost_crc = [](std::span<uint8_t const> b) {
        boost::crc_32_type c;
        c.process_bytes(b.data(), b.size());
        return c.checksum();
    };
    for (size_t off = 0; off < 16; ++off)
        for (size_t len : { 0, 1, 15, 16, 17, 63, 64, 65, 79, 80, 127, 128, 129, 191, 192, 255, 256, 1000, 4095, 4096, 4096 + 63 }) {
            auto b = std::span<uint8_t const>(data).subspan(off, len);
            INFO("offset " << off << " length " << len);
            CHECK(snapshot_crc32(b) == boost_crc(b));
        }
    // All ones and all zeros, 1 MiB.
    std::vector<uint8_t> ones(1 << 20, 0xFF), zeros(1 << 20, 0);
    CHECK(snapshot_crc32(ones) == boost_crc(ones));
    CHECK(snapshot_crc32(zeros) == boost_crc(zeros));
}

TEST_CASE("StateWriter and StateReader round-trip every type, little-endian", "[base][snapshot]")
{
    StateWriter w;
    w.u8(0xA5);
    w.u16(0x1234);
    w.u32(0x11223344);
    w.u64(0x0102030405060708ull);
    w.i64(-2);
    w.boolean(true);
    w.boolean(false);
    Bytes blob { 9, 8, 7 };
    w.bytes(blob);
    w.bytes({});
    w.raw(blob);
    Bytes expect { 0xA5, 0x34, 0x12, 0x44, 0x33, 0x22, 0x11, 8, 7, 6, 5, 4, 3, 2, 1 };
    le(expect, uint64_t(-2), 8);
    expect.push_back(1);
    expect.push_back(0);
    le(expect, 3, 8);
    expect.insert(expect.end(), { 9, 8, 7 });
    le(expect, 0, 8);
    expect.insert(expect.end(), { 9, 8, 7 });
    CHECK(w.data() == expect);

    Bytes payload = w.take();
    StateReader r("dev", payload);
    CHECK(r.u8() == 0xA5);
    CHECK(r.u16() == 0x1234);
    CHECK(r.u32() == 0x11223344);
    CHECK(r.u64() == 0x0102030405060708ull);
    CHECK(r.i64() == -2);
    CHECK(r.boolean() == true);
    CHECK(r.boolean() == false);
    CHECK(r.bytes(3) == blob);
    CHECK(r.bytes(0).empty());
    auto raw = r.raw(3);
    CHECK(Bytes(raw.begin(), raw.end()) == blob);
    CHECK(r.remaining() == 0);
    CHECK(r.ok());
    CHECK(r.finish().has_value());
    CHECK(r.section() == "dev");
}

TEST_CASE("StateReader: the first error sticks, finish() reports it or trailing bytes", "[base][snapshot]")
{
    SECTION("a truncated read fails; every later read returns zero")
    {
        Bytes p { 1, 2, 3 };
        StateReader r("pit", p);
        CHECK(r.u32() == 0);
        CHECK_FALSE(r.ok());
        CHECK(r.u8() == 0); // a byte is there, but the section is already bad
        CHECK(r.u16() == 0);
        CHECK(r.raw(1).empty());
        r.fail("later message");
        auto f = r.finish();
        REQUIRE_FALSE(f.has_value());
        CHECK(f.error().section == "pit");
        CHECK(f.error().text().rfind("snapshot section 'pit': truncated payload", 0) == 0);
        CHECK(f.error().text().find('\n') == std::string::npos);
    }
    SECTION("fail(): the first message wins")
    {
        Bytes p { 1 };
        StateReader r("uart", p);
        r.fail("bad divisor");
        r.fail("second");
        CHECK(r.u8() == 0);
        CHECK(r.finish().error().text() == "snapshot section 'uart': bad divisor");
    }
    SECTION("trailing bytes")
    {
        Bytes p { 1, 2, 3 };
        StateReader r("pic", p);
        CHECK(r.u16() == 0x0201);
        CHECK(r.ok());
        auto f = r.finish();
        REQUIRE_FALSE(f.has_value());
        CHECK(f.error().text() == "snapshot section 'pic': 1 trailing bytes after the payload's last field");
    }
    SECTION("a boolean is 0 or 1")
    {
        Bytes p { 0, 1, 2 };
        StateReader r("cpu0", p);
        CHECK_FALSE(r.boolean());
        CHECK(r.boolean());
        CHECK_FALSE(r.boolean());
        CHECK_FALSE(r.ok());
        CHECK(r.finish().error().message == "boolean at offset 2 is 0x02, not 0 or 1");
    }
    SECTION("bytes(max) refuses a length over max or over what is left, without allocating it")
    {
        // Lengths of 2^62: allocating them would throw std::bad_alloc, not return an error.
        Bytes p;
        le(p, 1ull << 62, 8);
        p.push_back(0);
        StateReader r("ram", p);
        CHECK(r.bytes(1u << 20).empty());
        CHECK(r.finish().error().message == "byte string at offset 0 is 4611686018427387904 bytes long, more than the 1048576 allowed");
        StateReader r2("ram", p);
        CHECK(r2.bytes(std::numeric_limits<uint64_t>::max()).empty());
        CHECK(r2.finish().error().message.rfind("truncated payload (byte string of 4611686018427387904 bytes", 0) == 0);
        // Exactly max is fine.
        Bytes q;
        le(q, 2, 8);
        q.insert(q.end(), { 5, 6 });
        StateReader r3("ram", q);
        CHECK(r3.bytes(2) == Bytes { 5, 6 });
        CHECK(r3.finish().has_value());
    }
}

TEST_CASE("SnapshotWriter writes the layout of the header, byte for byte", "[base][snapshot]")
{
    auto sections = sample_sections();
    SnapshotWriter w;
    for (auto const& s : sections)
        w.add(s.name, s.version, s.payload);
    auto expect = hand_stream(sections);
    CHECK(w.size() == expect.size() - 9); // the end record is written by finish()
    auto got = w.finish();
    CHECK(got == expect);

    auto parsed = parse_snapshot(got);
    REQUIRE(parsed.has_value());
    REQUIRE(parsed->size() == sections.size());
    for (size_t k = 0; k < sections.size(); ++k) {
        CHECK((*parsed)[k].name == sections[k].name);
        CHECK((*parsed)[k].version == sections[k].version);
        CHECK(Bytes((*parsed)[k].payload.begin(), (*parsed)[k].payload.end()) == sections[k].payload);
    }
    // No sections at all is a valid (empty) stream.
    auto empty = SnapshotWriter().finish();
    CHECK(empty.size() == 24 + 9);
    auto pe = parse_snapshot(empty);
    REQUIRE(pe.has_value());
    CHECK(pe->empty());
}

TEST_CASE("parse_snapshot refuses a stream truncated at every offset", "[base][snapshot]")
{
    auto sections = sample_sections();
    auto s = hand_stream(sections);
    REQUIRE(parse_snapshot(s).has_value());
    auto where = spans(sections);
    for (size_t len = 0; len < s.size(); ++len) {
        INFO("length " << len);
        auto e = parse_error(std::span(s).first(len));
        REQUIRE_FALSE(e.empty());
        CHECK(e.find('\n') == std::string::npos);
        // A cut after a section's name names the section.
        for (auto const& w : where)
            if (len >= w.name_end && len < w.end)
                CHECK(e == "snapshot section '" + w.name + "': truncated");
        if (len < 24)
            CHECK(e == "snapshot: truncated header");
    }
    CHECK(parse_error(std::span(s).first(where.back().end)) == "snapshot: truncated: no end record (after section 'ram.low-1')");
    CHECK(parse_error(std::span(s).first(s.size() - 1)) == "snapshot: truncated end record");
}

TEST_CASE("parse_snapshot refuses every single-bit corruption, naming the section it hit", "[base][snapshot]")
{
    auto sections = sample_sections();
    auto s = hand_stream(sections);
    auto where = spans(sections);
    size_t refused = 0, named = 0;
    for (size_t off = 0; off < s.size(); ++off) {
        for (unsigned bit = 0; bit < 8; ++bit) {
            auto c = s;
            c[off] ^= uint8_t(1u << bit);
            INFO("offset " << off << " bit " << bit);
            auto e = parse_error(c);
            REQUIRE_FALSE(e.empty());
            CHECK(e.find('\n') == std::string::npos);
            ++refused;
            // From the version field to the CRC's end the name is intact: the message names it.
            for (auto const& w : where)
                if (off >= w.name_end && off < w.end) {
                    CHECK(e.rfind("snapshot section '" + w.name + "': ", 0) == 0);
                    ++named;
                }
        }
    }
    CHECK(refused == s.size() * 8);
    CHECK(named > 300 * 8);
}

TEST_CASE("parse_snapshot: header, names, duplicates, end record", "[base][snapshot]")
{
    auto sections = sample_sections();
    SECTION("magic")
    {
        auto s = hand_stream(sections);
        s[0] = 'X';
        CHECK(parse_error(s) == "snapshot: not a sevemu snapshot (bad magic)");
        CHECK(parse_error({}) == "snapshot: truncated header");
        CHECK(parse_error(str("QEVM")) == "snapshot: not a sevemu snapshot (bad magic)");
    }
    SECTION("unknown stream version, non-zero flags")
    {
        CHECK(parse_error(hand_stream(sections, 3)) == "snapshot: unsupported stream version 3 (this build reads versions 1 and 2)");
        CHECK(parse_error(hand_stream(sections, 0)) == "snapshot: unsupported stream version 0 (this build reads versions 1 and 2)");
        CHECK(parse_error(hand_stream(sections, 1, 1)) == "snapshot: unsupported stream flags 0x1");
        CHECK(parse_error(hand_stream(sections, 1, 0x80000000u)) == "snapshot: unsupported stream flags 0x80000000");
    }
    SECTION("duplicate section names")
    {
        sections.push_back({ "pit", 3, { 1 } });
        CHECK(parse_error(hand_stream(sections)) == "snapshot section 'pit': duplicate section");
    }
    SECTION("bad names")
    {
        for (std::string bad : std::vector<std::string> { "CPU0", "cpu 0", "cpu/0", "cpu_0", std::string(65, 'a'), std::string("a\0b", 3) }) {
            INFO(bad);
            auto e = parse_error(hand_stream({ { bad, 1, { 1 } } }));
            CHECK(e.rfind("snapshot: bad section name", 0) == 0);
            CHECK(e.find('\n') == std::string::npos);
        }
        CHECK(parse_error(hand_stream({ { "", 1, { 1 } } })) == "snapshot: bad section name length 0 at offset 24 (after the header)");
        // The longest name allowed, and every allowed character.
        CHECK(parse_error(hand_stream({ { std::string(64, 'z'), 1, {} }, { "az09-.", 1, {} } })).empty());
    }
    SECTION("bad record tag")
    {
        auto s = hand_stream(sections);
        auto where = spans(sections);
        s[where[1].start] = 0x02;
        CHECK(parse_error(s) == "snapshot: bad record tag 0x02 at offset " + std::to_string(where[1].start) + " (after section 'cpu0')");
    }
    SECTION("end record: count, CRC, trailing bytes")
    {
        CHECK(parse_error(hand_stream(sections, 1, 0, 2)) == "snapshot: end record counts 2 sections, the stream holds 3");
        auto s = hand_stream(sections);
        s.back() ^= 1;
        CHECK(parse_error(s) == "snapshot: stream CRC mismatch");
        auto t = hand_stream(sections);
        t.push_back(0);
        CHECK(parse_error(t) == "snapshot: 1 bytes after the end record");
        t.insert(t.end(), { 1, 2, 3 });
        CHECK(parse_error(t) == "snapshot: 4 bytes after the end record");
    }
    SECTION("a section whose CRC does not match")
    {
        auto s = hand_stream(sections);
        auto where = spans(sections);
        s[where[0].end - 5] ^= 0x10; // the last payload byte of cpu0
        CHECK(parse_error(s) == "snapshot section 'cpu0': CRC mismatch");
    }
}

// --- Stream version 2 (live migration): repeated "ram-pages", a writer that hands its bytes out
// piece by piece, and the reader that checks a stream as it arrives.

TEST_CASE("snapshot CRC: the sliced CRC-32 equals Boost's bytewise one on every length and alignment", "[base][snapshot]")
{
    Bytes data(4096 + 64);
    uint32_t x = 12345;
    for (auto& b : data) {
        x = x * 1103515245u + 12345u;
        b = uint8_t(x >> 16);
    }
    for (size_t off : { 0, 1, 3, 7 })
        for (size_t len : { 0, 1, 7, 8, 9, 63, 64, 1000, 4096 }) {
            boost::crc_32_type ref;
            ref.process_bytes(data.data() + off, len);
            CHECK(snapshot_crc32(std::span(data).subspan(off, len)) == ref.checksum());
        }
}

TEST_CASE("stream version 2: ram-pages repeats, other names do not; version 1 repeats nothing", "[base][snapshot]")
{
    std::vector<RawSection> v2 { { "machine", 2, { 1 } }, { "ram-pages", 1, { 2 } }, { "ram-pages", 1, { 3 } } };
    auto parsed = parse_snapshot(hand_stream(v2, 2));
    REQUIRE(parsed);
    REQUIRE(parsed->size() == 3);
    CHECK(parsed->at(2).payload[0] == 3);
    CHECK(parse_error(hand_stream(v2, 1)) == "snapshot section 'ram-pages': duplicate section");
    v2.push_back({ "machine", 2, { 4 } });
    CHECK(parse_error(hand_stream(v2, 2)) == "snapshot section 'machine': duplicate section");
}

namespace {

// The writer's pieces (take()) joined, then the end record: byte for byte the hand-built stream.
Bytes written_v2(std::vector<RawSection> const& sections)
{
    SnapshotWriter w(2);
    Bytes out;
    for (auto const& s : sections) {
        w.add(s.name, s.version, s.payload);
        auto piece = w.take();
        out.insert(out.end(), piece.begin(), piece.end());
    }
    auto end = w.finish();
    out.insert(out.end(), end.begin(), end.end());
    return out;
}

// Reads `stream` through SnapshotStreamReader, a few bytes at a time as a socket gives them.
std::string read_all(Bytes const& stream, std::vector<OwnedSection>* sections = nullptr)
{
    size_t pos = 0;
    SnapshotStreamReader r([&](std::span<uint8_t> out) -> Result<void, std::string> {
        if (stream.size() - pos < out.size())
            return make_unexpected(std::string("connection closed"));
        std::memcpy(out.data(), stream.data() + pos, out.size());
        pos += out.size();
        return {};
    });
    if (auto h = r.read_header(); !h)
        return h.error().text();
    for (;;) {
        auto sec = r.next(1 << 20);
        if (!sec)
            return sec.error().text();
        if (!*sec)
            break;
        if (sections)
            sections->push_back(std::move(**sec));
    }
    return pos == stream.size() ? "ok" : "bytes after the end record";
}

} // namespace

TEST_CASE("stream version 2: the writer's pieces make the documented stream, which the incremental reader accepts", "[base][snapshot]")
{
    auto sections = sample_sections();
    sections.push_back({ "ram-pages", 1, { 9, 9 } });
    sections.push_back({ "ram-pages", 1, Bytes(5000, 0x5A) });
    auto stream = written_v2(sections);
    CHECK(stream == hand_stream(sections, 2));
    std::vector<OwnedSection> got;
    CHECK(read_all(stream, &got) == "ok");
    REQUIRE(got.size() == sections.size());
    for (size_t i = 0; i < got.size(); ++i) {
        CHECK(got[i].name == sections[i].name);
        CHECK(got[i].version == sections[i].version);
        CHECK(got[i].payload == sections[i].payload);
    }
}

TEST_CASE("stream version 2: the incremental reader refuses every truncation and every flipped bit", "[base][snapshot]")
{
    auto sections = sample_sections();
    sections.push_back({ "ram-pages", 1, Bytes(100, 0x11) });
    auto stream = written_v2(sections);
    for (size_t n = 0; n < stream.size(); ++n) {
        Bytes cut(stream.begin(), stream.begin() + n);
        auto e = read_all(cut);
        INFO(n << ": " << e);
        CHECK(e.find("the stream ended early") != std::string::npos);
    }
    size_t refused = 0;
    for (size_t off = 0; off < stream.size(); ++off)
        for (int bit = 0; bit < 8; ++bit) {
            Bytes bad = stream;
            bad[off] ^= uint8_t(1 << bit);
            refused += read_all(bad) != "ok";
        }
    CHECK(refused == stream.size() * 8);
}

TEST_CASE("stream version 2: sections added gathered (payload left in the caller's buffer) make the same documented stream", "[base][snapshot]")
{
    auto sections = sample_sections();
    sections.push_back({ "ram-pages", 1, { 9, 9 } });
    sections.push_back({ "ram-pages", 1, Bytes(5000, 0x5A) });
    sections.push_back({ "ram-pages", 1, {} });
    // Every other section gathered, so a gathered head also carries what add() left pending.
    SnapshotWriter w(2);
    Bytes out;
    for (size_t i = 0; i < sections.size(); ++i) {
        auto const& s = sections[i];
        if (i % 2 == 0) {
            w.add(s.name, s.version, s.payload);
            continue;
        }
        auto g = w.add_gathered(s.name, s.version, s.payload);
        out.insert(out.end(), g.head.begin(), g.head.end());
        out.insert(out.end(), s.payload.begin(), s.payload.end());
        out.insert(out.end(), g.tail.begin(), g.tail.end());
    }
    auto rest = w.take();
    out.insert(out.end(), rest.begin(), rest.end());
    auto end = w.finish();
    out.insert(out.end(), end.begin(), end.end());
    CHECK(out == hand_stream(sections, 2));
    CHECK(read_all(out) == "ok");
}
