// What the device tests share for snapshot sections: a device's saved payload, the verdict of
// loading a payload, and the rule that every proper prefix (and a byte too many) is refused
// with the device unchanged.
#pragma once

#include "devices/device.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace sevemu::devices::state_test {

using Bytes = std::vector<uint8_t>;

inline Bytes save_of(Device const& d)
{
    StateWriter w;
    d.save(w);
    return w.take();
}

// Loads `payload` as the device's section; the verdict is StateReader::finish()'s.
inline std::string load_error(Device& d, Bytes const& payload)
{
    StateReader r(d.name(), payload);
    d.load(r);
    auto f = r.finish();
    return f ? std::string() : f.error().message;
}

// Every proper prefix of `payload`, and the payload with a byte too many, is refused and leaves
// the device's state (as its own save() shows it) unchanged.
inline void require_truncations_refused(Device& d, Bytes const& payload)
{
    Bytes before = save_of(d);
    for (size_t n = 0; n < payload.size(); ++n) {
        Bytes cut(payload.begin(), payload.begin() + long(n));
        INFO(d.name() << ": payload cut to " << n << " of " << payload.size() << " bytes");
        CHECK_FALSE(load_error(d, cut).empty());
        REQUIRE(save_of(d) == before);
    }
    Bytes longer = payload;
    longer.push_back(0);
    CHECK(load_error(d, longer).find("trailing") != std::string::npos);
    REQUIRE(save_of(d) == before);
}

} // namespace sevemu::devices::state_test
