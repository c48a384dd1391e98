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
#include "fuzz_reseal.h"

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

void check_stream(std::span<uint8_t const> stream);

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size)
{
    std::span<uint8_t const> stream(data, size);
    check_stream(stream);
    auto sealed = sevemu::fuzz::reseal(stream, false);
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
