// sevemu — a check every device's load() makes before it assigns anything.
#pragma once

#include "base/state_stream.h"

#include <string>

namespace sevemu::devices {

// True when the section was read without error and to its end. A payload longer than its
// layout is refused here, before the device changes, rather than only by StateReader::finish()
// after the load (devices/device.h: a refused section leaves the device as it was).
inline bool read_to_end(StateReader& r)
{
    if (r.ok() && r.remaining() != 0)
        r.fail(std::to_string(r.remaining()) + " trailing bytes after the payload's last field");
    return r.ok();
}

} // namespace sevemu::devices
