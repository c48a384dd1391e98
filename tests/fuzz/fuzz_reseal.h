// The section layout of base/state_stream.h read leniently (CRCs ignored, lengths clamped) and
// written again as a correct writer would have written those sections, so that a harness also
// reaches what lies behind the stream's own checks; empty when the input does not get that far.
// `versions`: the input's stream version is kept (1 or 2; anything else: empty) and a version-2
// stream keeps repeated "ram-pages", as SnapshotWriter allows (fuzz_migration); without it every
// stream is written as version 1 with no name twice (fuzz_snapshot).
#pragma once

#include "base/state_stream.h"

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace sevemu::fuzz {

inline std::vector<uint8_t> reseal(std::span<uint8_t const> in, bool versions)
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
    uint32_t stream_version = kSnapshotStreamVersionV1;
    if (versions) {
        stream_version = uint32_t(le(16, 4));
        if (stream_version != kSnapshotStreamVersion && stream_version != kSnapshotStreamVersionV1)
            return {};
    }
    SnapshotWriter w(stream_version);
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
        bool repeatable = stream_version == kSnapshotStreamVersion && name == kRamPagesSection;
        if (!valid || (!repeatable && std::find(names.begin(), names.end(), name) != names.end()))
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

} // namespace sevemu::fuzz
