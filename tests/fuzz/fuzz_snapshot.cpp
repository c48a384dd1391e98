// Fuzz harness `snapshot`: a snapshot stream as `sevemu -incoming` reads it — parse_snapshot()
// (base/state_stream.h), then Machine::load_snapshot() into a small machine built to receive one
// (Machine::create_incoming, 2 MiB of RAM, the size the seed snapshots were taken with).
//
// Input: the stream, whole. It goes in twice: as it is (the CRCs make almost every mutation a
// refusal at parse time, which is the first thing to check), and "resealed": its sections, read
// by their declared lengths with the CRCs ignored, rewritten by SnapshotWriter with correct CRCs,
// so that mutated payloads reach every part's loader. Properties checked, for both:
//   - parse_snapshot() refuses with one non-empty line, or accepts a stream that SnapshotWriter
//     rebuilds byte for byte from the parsed sections (so nothing outside the layout is accepted:
//     every CRC, the end record, nothing trailing);
//   - a refused load is one non-empty line, and a stream that parse_snapshot() refused is never
//     loaded;
//   - a loaded machine saves a stream that parses, and that stream loads into a fresh machine,
//     which saves the very same bytes (save and load are inverse on everything a load accepts).
#include "fuzz_check.h"

#include "base/state_stream.h"
#include "emulator/machine.h"

#include <algorithm>
#include <string>

using namespace sevemu;
using namespace sevemu::emulator;

namespace {

std::unique_ptr<Machine> incoming_machine()
{
    MachineConfig c;
    c.memory_size = 2ull << 20;
    c.serial.kind = SerialConfig::Kind::None;
    c.debug_exit = devices::DebugExitConfig { 0xf4, 0x04 }; // as the seeds were taken (tests/guests)
    auto m = Machine::create_incoming(c);
    FUZZ_CHECK(m.has_value(), "create_incoming: %s", m ? "" : m.error().message.c_str());
    return std::move(*m);
}

bool one_line(std::string const& s) { return !s.empty() && s.find('\n') == std::string::npos; }

// The section layout of base/state_stream.h, read leniently: what a correct writer would have
// written for these sections (empty when the input does not even get that far).
std::vector<uint8_t> reseal(std::span<uint8_t const> in)
{
    constexpr size_t kHeader = 24;
    if (in.size() < kHeader || !std::equal(in.begin(), in.begin() + 16, kSnapshotMagic))
        return {};
    auto le = [&](size_t at, int n) {
        uint64_t v = 0;
        for (int i = n - 1; i >= 0; --i)
            v = (v << 8) | in[at + size_t(i)];
        return v;
    };
    SnapshotWriter w;
    std::vector<std::string> names;
    size_t pos = kHeader;
    while (pos + 2 <= in.size() && in[pos] == 0x01) {
        size_t name_len = in[pos + 1];
        if (name_len == 0 || name_len > kMaxSectionName || pos + 2 + name_len + 12 > in.size())
            break;
        std::string name(in.begin() + long(pos + 2), in.begin() + long(pos + 2 + name_len));
        bool valid = std::all_of(name.begin(), name.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
        });
        if (!valid || std::find(names.begin(), names.end(), name) != names.end())
            break;
        size_t at = pos + 2 + name_len;
        auto version = uint32_t(le(at, 4));
        uint64_t len = std::min<uint64_t>(le(at + 4, 8), in.size() - (at + 12));
        w.add(name, version, in.subspan(at + 12, size_t(len)));
        names.push_back(name);
        pos = at + 12 + size_t(len) + 4;
    }
    return w.finish();
}

void check_stream(std::span<uint8_t const> stream);

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size)
{
    std::span<uint8_t const> stream(data, size);
    check_stream(stream);
    auto sealed = reseal(stream);
    if (!sealed.empty() && !(sealed.size() == size && std::equal(sealed.begin(), sealed.end(), data)))
        check_stream(sealed);
    return 0;
}

namespace {

void check_stream(std::span<uint8_t const> stream)
{
    uint8_t const* data = stream.data();
    size_t size = stream.size();
    auto parsed = parse_snapshot(stream);
    if (parsed) {
        SnapshotWriter w;
        for (auto const& s : *parsed)
            w.add(s.name, s.version, s.payload);
        auto rebuilt = w.finish();
        FUZZ_CHECK(rebuilt.size() == size && std::equal(rebuilt.begin(), rebuilt.end(), data),
            "an accepted stream is what SnapshotWriter writes for its sections");
    } else {
        FUZZ_CHECK(one_line(parsed.error().text()), "parse error is one line: '%s'", parsed.error().text().c_str());
    }

    auto machine = incoming_machine();
    auto loaded = machine->load_snapshot(stream);
    if (!loaded) {
        FUZZ_CHECK(one_line(loaded.error().message), "load error is one line: '%s'", loaded.error().message.c_str());
        return;
    }
    FUZZ_CHECK(parsed.has_value(), "a stream parse_snapshot refuses is never loaded");

    auto saved = machine->save_snapshot();
    FUZZ_CHECK(saved.has_value(), "a loaded machine saves: %s", saved ? "" : saved.error().message.c_str());
    FUZZ_CHECK(parse_snapshot(*saved).has_value(), "a saved stream parses");
    auto again = incoming_machine();
    auto reloaded = again->load_snapshot(*saved);
    FUZZ_CHECK(reloaded.has_value(), "a saved stream loads: %s", reloaded ? "" : reloaded.error().message.c_str());
    auto resaved = again->save_snapshot();
    FUZZ_CHECK(resaved.has_value() && *resaved == *saved, "save(load(save(x))) == save(x)");
}

} // namespace
